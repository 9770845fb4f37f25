/**
 * `stowage cancel` of an in-place restore of an LXD instance (issue #11), as a user runs it:
 * `stowage start --no-agent` and a standalone `stowage agent` (its own process, so the test can
 * hold it still with SIGSTOP at a chosen moment), the CLI with --json, the real LXD.
 *
 * 1. Cancelled while it restores the point under a temporary name (before its point of no
 *    return; the agent held still by SIGSTOP while the cancel is asked): the job is CANCELLED, the instance is the same instance (same volatile.uuid),
 *    running, with the same bytes, and no temporary instance or LXD backup is left.
 * 2. Cancelled just past its point of no return (the agent marked the job and is held still
 *    by SIGSTOP while `stowage cancel --wait` asks): nothing is cancelled, the restore finishes,
 *    and the CLI's answer says so; the instance holds the point's bytes and runs.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { launchInstance, lxd, lxdInventory, removeInstance, sh, startLxd } from '../fixtures/lxd';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw-lxdcn-${randomBytes(3).toString('hex')}`;
const NAME = `${RUN}-c1`;
/** Enough that filling the instance takes a while: the agent is held still in the middle. */
const DATA_MIB = 1024;
const FINGERPRINT = 'sha256sum /root/r.bin /root/marker';

let dataDir: string;
let stowageProcess: StowageProcess;
let agent: ChildProcess;
const stowage = (...args: string[]) => stowageProcess.cli(...args);

type Job = {
  status: string;
  pointOfNoReturnAt?: string;
  progress?: { phase: string; bytesDone?: number };
};
const jobOf = (jobId: string) => stowage('job', jobId).json as Job;

/** The job read straight from the API (a CLI process takes a second to start). */
async function fetchJob(jobId: string): Promise<Job> {
  const res = await fetch(`http://127.0.0.1:${stowageProcess.port}/jobs/${jobId}`, {
    headers: stowageProcess.apiHeaders(),
  });
  return (await res.json()) as Job;
}

const instance = (name: string) =>
  lxd.get<{ status: string; config: Record<string, string> }>(`/1.0/instances/${name}`);

beforeAll(async () => {
  startLxd();
  dataDir = tempDir('stowage-lxd-cancel-');
  await launchInstance(NAME);
  await sh(
    NAME,
    `dd if=/dev/urandom of=/root/r.bin bs=1048576 count=${DATA_MIB} 2>/dev/null && echo at-backup > /root/marker`,
  );
  stowageProcess = new StowageProcess(dataDir, ['--no-agent']);
  await stowageProcess.start();
  agent = await stowageProcess.startAgent('local');
  await stowageProcess.waitForTargets([`lxd:${NAME}`]);
}, 300_000);

afterAll(async () => {
  if (agent && agent.exitCode === null) agent.kill('SIGCONT');
  await stowageProcess?.stop();
  await removeInstance(NAME);
  for (const name of Object.keys((await lxdInventory(RUN)).instances)) await removeInstance(name);
  if (dataDir) removeDir(dataDir);
}, 180_000);

describe('stowage cancel of an in-place LXD restore', () => {
  let pointId: string;
  let atBackup: string;

  it('leaves the instance as it was when cancelled before its point of no return', async () => {
    const backup = stowage('backup', `lxd:${NAME}`, '--no-snapshots', '--wait');
    expect(backup.code, backup.stderr).toBe(0);
    pointId = (backup.json as { recoveryPointId: string }).recoveryPointId;
    atBackup = await sh(NAME, FINGERPRINT);
    await sh(NAME, 'echo changed-after-the-backup > /root/marker');
    const before = await instance(NAME);
    const bytesBefore = await sh(NAME, FINGERPRINT);
    const inventoryBefore = await lxdInventory(RUN);

    const started = stowage('restore', pointId, '--in-place');
    expect(started.code, started.stderr).toBe(0);
    const { jobId } = started.json as { jobId: string };
    await eventually(
      async () => ((await fetchJob(jobId)).progress?.bytesDone ?? 0) > 0 || undefined,
      'the restore reading the point',
      120_000,
    );
    // Held still while it fills the new instance (a tree restore writes the pool's directory at
    // disk speed, so an unheld one can reach its swap before a CLI process has started).
    const cancel = await stowageProcess.cancelWhileHeld(
      agent,
      jobId,
      (job) => job.cancelRequestedAt !== undefined,
      async () => expect((await fetchJob(jobId)).pointOfNoReturnAt).toBeUndefined(),
    );

    expect(cancel.code, `${cancel.stdout} ${cancel.stderr}`).toBe(0);
    expect(cancel.json).toMatchObject({ status: 'CANCELLED', cancelled: true, settled: true });
    expect((cancel.json as { message: string }).message).toContain('is as it was before it');
    expect(jobOf(jobId).pointOfNoReturnAt).toBeUndefined();
    const after = await instance(NAME);
    expect(after.config['volatile.uuid']).toBe(before.config['volatile.uuid']);
    expect(after.status).toBe('Running');
    expect(await sh(NAME, FINGERPRINT)).toBe(bytesBefore);
    // No temporary import, backup or profile of the restore is left.
    await eventually(
      async () =>
        JSON.stringify(await lxdInventory(RUN)) === JSON.stringify(inventoryBefore) || undefined,
      'nothing of the restore left in LXD',
      30_000,
    );
  }, 300_000);

  it('finishes an in-place restore cancelled past its point of no return, and the answer says so', async () => {
    expect(pointId).toBeDefined();
    const changed = await sh(NAME, FINGERPRINT);

    const started = stowage('restore', pointId, '--in-place');
    expect(started.code, started.stderr).toBe(0);
    const { jobId } = started.json as { jobId: string };
    await eventually(
      async () => (await fetchJob(jobId)).pointOfNoReturnAt || undefined,
      'the restore past its point of no return',
      180_000,
    );
    // Held still, so the cancel finds the restore running past its point of no return.
    const cancel = await stowageProcess.cancelWhileHeld(
      agent,
      jobId,
      (job) => job.cancelRequestedAt !== undefined,
    );

    // Nothing was cancelled (exit non-zero), and the answer says the restore finished.
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
    const after = await instance(NAME);
    expect(after.status).toBe('Running');
    expect(await sh(NAME, FINGERPRINT)).toBe(atBackup);
    expect(await sh(NAME, FINGERPRINT)).not.toBe(changed);
    expect(Object.keys((await lxdInventory(RUN)).instances)).toEqual([NAME]);
  }, 300_000);
});
