/**
 * `stowage cancel` of an in-place restore of a vSphere VM (issue #11), against VMware's simulator
 * (test/fixtures/vcsim.ts starts one for this file): `stowage start --no-agent` and a standalone
 * `stowage agent` with the vSphere flags (its own process, so the test can hold it still).
 *
 * The driver stages every disk beside the VM first, powers it off, and only then, at its point
 * of no return, copies the staged disks over the VM's (agents/drivers/vsphere/restore.ts).
 * 1. Cancelled while it stages (the agent held by SIGSTOP while the cancel lands, since vcsim
 *    stages faster than a CLI process starts): the job is CANCELLED, the VM's disks hold the bytes they held
 *    before the restore, the VM is powered on as it was, and no staged copy is left.
 * 2. Cancelled just past its point of no return (the agent held by SIGSTOP while `stowage cancel
 *    --wait` asks): nothing is cancelled, the restore finishes, the CLI's answer says so, and
 *    the disks hold the point's bytes.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';
import {
  createTestVm,
  diskBytes,
  expectedBytes,
  flatOf,
  localFile,
  startVcsim,
  vmState,
  type TestDisk,
  type Vcsim,
} from '../fixtures/vcsim';

const MiB = 1024 * 1024;
const VM = 'cancel-vm';
const PATH = `DC0/vm/${VM}`;
/** Large enough that staging takes seconds: the cancel lands while the point is read. */
const DISKS: TestDisk[] = [
  { capacity: 256 * MiB, bytes: randomBytes(256 * MiB) },
  { capacity: 128 * MiB, bytes: randomBytes(128 * MiB) },
];

let sim: Vcsim;
let root: string;
let stowageProcess: StowageProcess;
let agent: ChildProcess;
let diskFiles: string[];
const stowage = (...args: string[]) => stowageProcess.cli(...args);

type Job = { status: string; pointOfNoReturnAt?: string; cancelRequestedAt?: string };
type JobWithProgress = Job & { progress?: { bytesDone?: number } };

async function fetchJob(jobId: string): Promise<JobWithProgress> {
  const res = await fetch(`http://127.0.0.1:${stowageProcess.port}/jobs/${jobId}`, {
    headers: stowageProcess.apiHeaders(),
  });
  return (await res.json()) as JobWithProgress;
}

/** Each disk's bytes as the VM has them now. */
const disks = () => DISKS.map((d, i) => diskBytes(sim, diskFiles[i]!, d.capacity));

/** Overwrites every disk with new random bytes (what an in-place restore puts back). */
async function overwriteDisks(): Promise<void> {
  for (const f of diskFiles) {
    rmSync(localFile(sim, flatOf(f)));
    const path = flatOf(f).replace('[LocalDS_0] ', '');
    await sim.files.put('DC0', { datastore: 'LocalDS_0', path }, randomBytes(MiB), MiB);
  }
}

/** The restore's staged copies (`stowage-restore-*`) anywhere on the datastore. */
function stagedFiles(): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (e.name.includes('stowage-restore-')) found.push(join(dir, e.name));
    }
  };
  walk(sim.datastoreDir);
  return found;
}

beforeAll(async () => {
  sim = await startVcsim();
  root = tempDir('stowage-vsphere-cancel-');
  stowageProcess = new StowageProcess(join(root, 'data'), [
    '--no-agent',
    '--store',
    join(root, 'store'),
  ]);
  await stowageProcess.start();
  const vm = await createTestVm(sim, VM, DISKS);
  diskFiles = vm.diskFiles;
  await sim.vim.runTask('PowerOnVM_Task', vm.ref, {}, 'test power on');
  agent = await stowageProcess.startAgent(
    'local',
    '--vsphere-url',
    sim.url,
    '--vsphere-user',
    sim.user,
    '--vsphere-password-file',
    sim.passwordFile,
    '--lxd-socket',
    join(root, 'no-lxd.socket'),
  );
  await stowageProcess.waitForTargets([`vsphere:${PATH}`]);
}, 240_000);

afterAll(async () => {
  if (agent && agent.exitCode === null) agent.kill('SIGCONT');
  await stowageProcess?.stop();
  await sim?.stop();
  if (root) removeDir(root);
}, 120_000);

describe('stowage cancel of an in-place vSphere restore', () => {
  let pointId: string;

  it('leaves the VM as it was when cancelled while the disks are staged', async () => {
    const backup = stowage('backup', `vsphere:${PATH}`, '--wait');
    expect(backup.code, backup.stderr).toBe(0);
    pointId = (backup.json as { recoveryPointId: string }).recoveryPointId;
    await overwriteDisks();
    const before = disks();
    expect((await vmState(sim, PATH))?.power).toBe('poweredOn');

    const started = stowage('restore', pointId, '--in-place', '--state', 'running');
    expect(started.code, started.stderr).toBe(0);
    const { jobId } = started.json as { jobId: string };
    await eventually(
      async () => ((await fetchJob(jobId)).progress?.bytesDone ?? 0) > 0 || undefined,
      'the restore staging the disks',
      120_000,
    );
    // Held still while it stages (vcsim stages 384 MiB in a few seconds, faster than a CLI process starts and asks), so the
    // cancel lands before its point of no return.
    const cancel = await stowageProcess.cancelWhileHeld(
      agent,
      jobId,
      (job) => job.status === 'CANCELLED',
      async () => expect((await fetchJob(jobId)).pointOfNoReturnAt).toBeUndefined(),
    );

    expect(cancel.code, `${cancel.stdout} ${cancel.stderr}`).toBe(0);
    expect(cancel.json).toMatchObject({ status: 'CANCELLED', cancelled: true, settled: true });
    expect((cancel.json as { message: string }).message).toContain('is as it was before it');
    expect((await fetchJob(jobId)).pointOfNoReturnAt).toBeUndefined();
    disks().forEach((d, i) => expect(d.equals(before[i]!)).toBe(true));
    expect(await vmState(sim, PATH)).toMatchObject({ power: 'poweredOn', snapshots: 0 });
    await eventually(
      async () => (stagedFiles().length === 0 ? true : undefined),
      'no staged copy left',
      30_000,
    );
  }, 300_000);

  it('finishes an in-place restore cancelled past its point of no return, and the answer says so', async () => {
    expect(pointId).toBeDefined();
    const started = stowage('restore', pointId, '--in-place', '--state', 'running');
    expect(started.code, started.stderr).toBe(0);
    const { jobId } = started.json as { jobId: string };
    await eventually(
      async () => (await fetchJob(jobId)).pointOfNoReturnAt || undefined,
      'the restore past its point of no return',
      180_000,
    );
    const cancel = await stowageProcess.cancelWhileHeld(
      agent,
      jobId,
      (job) => job.cancelRequestedAt !== undefined,
    );

    expect(cancel.code).not.toBe(0);
    expect(cancel.json).toMatchObject({
      jobId,
      status: 'SUCCEEDED',
      cancelled: false,
      settled: true,
    });
    expect((cancel.json as { message: string }).message).toMatch(
      /was past its point of no return when the cancel came: it finished SUCCEEDED/,
    );
    disks().forEach((d, i) => expect(d.equals(expectedBytes(DISKS[i]!))).toBe(true));
    expect(await vmState(sim, PATH)).toMatchObject({ power: 'poweredOn', snapshots: 0 });
    expect(stagedFiles()).toEqual([]);
  }, 300_000);
});
