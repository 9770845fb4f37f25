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

/**
 * A vApp restore (agents/drivers/vsphere/vapp.ts): the vApp made again (or, in place, its VMs
 * found by the ids in the point), every child VM with its disks (streams `vm/<i>/disk/<key>`),
 * the vApp's metadata applied, every remap shown; with vCloud Director (a point that holds its
 * record), what is put back there and what vCD's API does not let a restore put back.
 */
export function planVappRestore(input: PlanInput): PlatformPlan {
  const { name, inPlace, options, point } = input;
  const app = `vApp ${name}`;
  const byVm = new Map<string, Array<{ name: string; size: number }>>();
  for (const s of point.streams) {
    const m = /^vm\/([^/]+)\/disk\//.exec(s.name);
    if (m) byVm.set(m[1]!, [...(byVm.get(m[1]!) ?? []), s]);
  }
  const steps: PlanStep[] = [];
  const notes: string[] = [];
  const replacing = inPlace && input.existing !== undefined;
  if (replacing) {
    if (runsNow(input)) {
      steps.push({ action: 'stop', what: `the VMs of ${app}`, detail: 'each powered off' });
    }
  } else {
    steps.push({ action: 'create', what: app, detail: 'product info, properties, annotation' });
  }
  for (const [vm, disks] of byVm) {
    const what = `VM ${vm} of ${app}`;
    if (!replacing) {
      steps.push({ action: 'create', what, detail: 'with the recorded configuration' });
    }
    for (const d of disks) {
      steps.push({
        action: replacing ? 'replace' : 'create',
        what: `${d.name} of ${what}`,
        detail: planBytes(d.size),
      });
    }
  }
  steps.push({
    action: replacing ? 'replace' : 'create',
    what: `the metadata of ${app}`,
    detail: 'start order, custom attributes',
  });
  for (const [option, value] of Object.entries(options)) {
    if (option === 'state') continue;
    steps.push({ action: 'remap', what: option, detail: JSON.stringify(value) });
  }
  if (point.summary.vcd) {
    const vdc =
      typeof point.summary.vcdVdc === 'string' ? `VDC ${point.summary.vcdVdc}` : 'its VDC';
    if (!replacing) {
      steps.push({
        action: 'create',
        what: `${app} in vCloud Director`,
        detail: `imported into ${vdc} (importVmAsVApp, importVmIntoExistingVApp) unless vCD manages it`,
      });
    }
    steps.push({
      action: 'replace',
      what: `the vCloud Director metadata and lease of ${app}`,
      detail: 'as recorded',
    });
    steps.push({
      action: 'replace',
      what: `the metadata and quotas of ${vdc}, the metadata of its organisation`,
      detail: 'through the admin API, where they differ',
    });
    notes.push(
      "vCloud Director: the VDC's allocation model is not put back (vCD sets it only when a VDC is created); an organisation or VDC that is gone is not made again; a setting the vCD user may not change (not an administrator) is logged, and the restore goes on",
    );
  }
  const start = options.state === undefined ? ranAtBackup(input) : options.state === 'running';
  steps.push(
    start
      ? { action: 'start', what: app, detail: 'powered on' }
      : { action: 'skip', what: `powering on ${app}`, detail: 'it stays off' },
  );
  return { steps, ...(notes.length ? { notes } : {}) };
}
