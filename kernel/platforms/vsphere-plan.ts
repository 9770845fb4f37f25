/**
 * A VM restore (agents/drivers/vsphere): a new VM with the recorded configuration and each disk
 * written from its stream, or in place, the VM powered off and its disks overwritten; powered on
 * afterwards as at backup time, or as `state` says. Options the vSphere spec may add (a folder,
 * a resource pool, a datastore, network maps, one disk attached to another VM) show as remaps.
 */
import {
  planBytes,
  ranAtBackup,
  runsNow,
  type PlanInput,
  type PlatformPlan,
  type PlanStep,
} from './restore-plan';

export function planVmRestore(input: PlanInput): PlatformPlan {
  const { name, inPlace, options, point } = input;
  const disks = point.streams.filter((s) => s.name.startsWith('disk/'));
  const vm = `VM ${name}`;
  const steps: PlanStep[] = [];
  if (inPlace && input.existing) {
    if (runsNow(input)) steps.push({ action: 'stop', what: vm, detail: 'powered off' });
    for (const d of disks) {
      steps.push({ action: 'replace', what: `${d.name} of ${vm}`, detail: planBytes(d.size) });
    }
  } else {
    steps.push({ action: 'create', what: vm, detail: 'with the recorded configuration' });
    for (const d of disks) {
      steps.push({ action: 'create', what: `${d.name} of ${vm}`, detail: planBytes(d.size) });
    }
  }
  for (const [option, value] of Object.entries(options)) {
    if (option === 'state') continue;
    steps.push({ action: 'remap', what: option, detail: JSON.stringify(value) });
  }
  const start = options.state === undefined ? ranAtBackup(input) : options.state === 'running';
  steps.push(
    start
      ? { action: 'start', what: vm, detail: 'powered on' }
      : { action: 'skip', what: `powering on ${vm}`, detail: 'it stays off' },
  );
  return { steps };
}
