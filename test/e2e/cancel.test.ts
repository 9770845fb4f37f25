/**
 * `stowage cancel` (issue #11) as a user runs it: `stowage start` in its own process, the CLI
 * with --json, a real dockerd.
 *
 * 1. A stop-mode backup held by a 30 s pre-hook is cancelled with `cancel --wait`: the job ends
 *    CANCELLED within seconds (not after the hook), the hook's process is gone, the container
 *    runs, no point is listed, and nothing of Stowage's is left in dockerd.
 * 2. A stop-mode backup is cancelled while the container is stopped (its volume being read):
 *    the agent starts it again, and again no point and no leftovers.
 * 3. An in-place restore cancelled while it reads the point (before its point of no return)
 *    leaves the container as it was: same id, running, same bytes, nothing left over.
 * 4. Cancelling a job that ended is a 409 that says how it ended.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  docker,
  engineInventory,
  execIn,
  fingerprint,
  removeByPrefix,
  requireTestImage,
  runningState,
  TEST_IMAGE,
} from '../fixtures/docker';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw-cancel-${process.pid}`;
const HOOKED = `${RUN}-hooked`;
const BIG = `${RUN}-big`;
/** How long the agent may take to stop a task and release its holds after the cancel. */
const STOP_WITHIN_MS = 10_000;

let dataDir: string;
let stowageProcess: StowageProcess;
const stowage = (...args: string[]) => stowageProcess.cli(...args);

async function makeContainer(name: string, dataMiB: number): Promise<void> {
  await docker.createVolume({ Name: `${name}-data` });
  const c = await docker.createContainer({
    name,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    HostConfig: { Binds: [`${name}-data:/data`] },
  });
  await c.start();
  await execIn(name, [
    'sh',
    '-c',
    `dd if=/dev/urandom of=/data/random.bin bs=1048576 count=${dataMiB} 2>/dev/null`,
  ]);
}

type Job = {
  status: string;
  progress?: { phase: string; bytesDone?: number };
  items?: Array<{ status: string }>;
};
const jobOf = (jobId: string) => stowage('job', jobId).json as Job;

/** What a job left: the job, the points of its target, and whether the container runs. */
async function aftermath(jobId: string, container: string) {
  const points = (stowage('points', `docker:${container}`).json as unknown[] | undefined) ?? [];
  return { job: jobOf(jobId), points: points.length, state: await runningState(container) };
}

let before: Awaited<ReturnType<typeof engineInventory>>;

beforeAll(async () => {
  await requireTestImage();
  await removeByPrefix(RUN);
  dataDir = tempDir('stowage-cancel-');
  stowageProcess = new StowageProcess(dataDir);
  await makeContainer(HOOKED, 1);
  await makeContainer(BIG, 400);
  before = await engineInventory(RUN);
  await stowageProcess.start();
  await stowageProcess.waitForTargets([`docker:${HOOKED}`, `docker:${BIG}`]);
}, 180_000);

afterAll(async () => {
  await stowageProcess?.stop();
  await removeByPrefix(RUN);
  if (dataDir) removeDir(dataDir);
});

describe('stowage cancel', () => {
  it('stops a stop-mode backup held by a 30 s pre-hook within seconds: CANCELLED, running, no point, nothing left', async () => {
    const started = stowage(
      'backup',
      `docker:${HOOKED}`,
      '--consistency',
      'stop',
      '--pre-hook',
      'sleep 30',
    );
    expect(started.code, started.stderr).toBe(0);
    const { jobId } = started.json as { jobId: string };
    await eventually(async () => {
      const ps = await execIn(HOOKED, ['ps']);
      return ps.includes('sleep 30') ? true : undefined;
    }, 'the pre-hook running');

    const t0 = Date.now();
    const cancel = stowage('cancel', jobId, '--wait');
    const elapsed = Date.now() - t0;

    expect(cancel.code, `${cancel.stdout} ${cancel.stderr}`).toBe(0);
    expect(cancel.json).toMatchObject({
      jobId,
      status: 'CANCELLED',
      cancelled: true,
      settled: true,
      tasksRunning: 0,
      tasksEnded: 1,
    });
    expect((cancel.json as { message: string }).message).toContain('no recovery point is made');
    expect(elapsed).toBeLessThan(STOP_WITHIN_MS);
    const after = await aftermath(jobId, HOOKED);
    expect(after.job.status).toBe('CANCELLED');
    expect(after.job.items?.map((i) => i.status)).toEqual(['CANCELLED']);
    expect(after.points).toBe(0);
    expect(after.state).toEqual({ Running: true, Paused: false });
    expect(await execIn(HOOKED, ['ps'])).not.toContain('sleep 30');
    expect(await engineInventory(RUN)).toEqual(before);
    process.stdout.write(
      `cancel figures: hooked backup settled ${elapsed} ms after cancel --wait\n`,
    );
  });

  it('starts a container the cancelled backup had stopped, and leaves no point and nothing in dockerd', async () => {
    const started = stowage('backup', `docker:${BIG}`, '--consistency', 'stop');
    expect(started.code, started.stderr).toBe(0);
    const { jobId } = started.json as { jobId: string };
    // The moment the agent has stopped the container, the API is asked directly (a CLI process
    // takes a second to start; the volume's read may not).
    await eventually(
      async () => ((await runningState(BIG)).Running ? undefined : true),
      'the container stopped by the backup',
      60_000,
    );
    const t0 = Date.now();
    const res = await fetch(`http://127.0.0.1:${stowageProcess.port}/jobs/${jobId}/cancellation`, {
      method: 'POST',
      headers: stowageProcess.apiHeaders(),
      body: '{}',
    });
    expect(res.status).toBe(202);
    expect(await res.json()).toMatchObject({ status: 'CANCELLED', cancelled: true });

    const settled = await eventually(
      async () => {
        const status = stowage('cancel', jobId);
        return status.code === 2 && (await runningState(BIG)).Running ? status : undefined;
      },
      'the container running again',
      STOP_WITHIN_MS + 10_000,
    );
    const elapsed = Date.now() - t0;
    // Cancelling it again: it has ended.
    expect(settled.json).toMatchObject({ error: 'ConflictError' });
    expect((settled.json as { message: string }).message).toContain('has ended (CANCELLED');
    const after = await aftermath(jobId, BIG);
    expect(after.job.status).toBe('CANCELLED');
    expect(after.points).toBe(0);
    expect(after.state).toEqual({ Running: true, Paused: false });
    await eventually(
      async () => {
        const now = await engineInventory(RUN);
        return JSON.stringify(now) === JSON.stringify(before) ? true : undefined;
      },
      'no helper, image or volume left',
      STOP_WITHIN_MS,
    );
    expect(elapsed).toBeLessThan(STOP_WITHIN_MS + 5_000);
    process.stdout.write(
      `cancel figures: stopped container running again ${elapsed} ms after the cancel\n`,
    );
  });

  it('leaves the target of an in-place restore cancelled before its point of no return as it was', async () => {
    const backup = stowage('backup', `docker:${BIG}`, '--wait');
    expect(backup.code, backup.stderr).toBe(0);
    const { recoveryPointId } = backup.json as { recoveryPointId: string };
    await execIn(BIG, ['sh', '-c', 'echo changed-after-the-backup > /data/marker']);
    const { Id: idBefore } = await docker.getContainer(BIG).inspect();
    const dataBefore = await fingerprint(BIG, '/data');
    const inventoryBefore = await engineInventory(RUN);

    const started = stowage('restore', recoveryPointId, '--in-place');
    expect(started.code, started.stderr).toBe(0);
    const { jobId } = started.json as { jobId: string };
    // Once it reads the point's bytes, well before it swaps anything.
    await eventually(
      async () => ((jobOf(jobId).progress?.bytesDone ?? 0) > 0 ? true : undefined),
      'the restore reading',
      60_000,
    );
    const cancel = stowage('cancel', jobId, '--wait');

    expect(cancel.code, `${cancel.stdout} ${cancel.stderr}`).toBe(0);
    expect(cancel.json).toMatchObject({ status: 'CANCELLED', cancelled: true, settled: true });
    expect((cancel.json as { message: string }).message).toContain(`is as it was before it`);
    const { Id: idAfter, State } = await docker.getContainer(BIG).inspect();
    expect(idAfter).toBe(idBefore);
    expect(State.Running).toBe(true);
    expect(await fingerprint(BIG, '/data')).toEqual(dataBefore);
    expect(await engineInventory(RUN)).toEqual(inventoryBefore);
  }, 240_000); // a 400 MiB backup, then the restore's read: over a minute on a loaded machine

  it('answers a clear 409 for a job that ended', async () => {
    const done = stowage('backup', `docker:${HOOKED}`, '--wait');
    expect(done.code, done.stderr).toBe(0);
    const { jobId } = done.json as { jobId: string };

    const cancel = stowage('cancel', jobId);

    expect(cancel.code).toBe(2);
    expect(cancel.json).toMatchObject({ error: 'ConflictError' });
    expect((cancel.json as { message: string }).message).toMatch(
      new RegExp(`job ${jobId} has ended \\(SUCCEEDED at .*\\): there is nothing to cancel`),
    );
    expect(jobOf(jobId).status).toBe('SUCCEEDED');
  });
});
