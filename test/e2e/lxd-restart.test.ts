/**
 * LXD restarted in the middle of a job (issue #11): the job fails with a clear error naming the
 * instance, no point is made, and the instance runs again afterwards.
 *
 * The shared LXD is restarted as its service manager would do it (SIGTERM to the daemon, whose
 * instances keep running; then a new `lxd --group root`, as local/engines/setup-lxd.sh starts it)
 * while a backup holds the instance stopped, or frozen, for LXD to write its backup: LXD's
 * operation dies with it, and the release (start, thaw) cannot reach LXD. The job ends FAILED
 * (not retried: a retry would take the held instance's state for its owner's), the hold stays in
 * the journal, and the agent's hold sweep (every second here: STOWAGE_HOLD_SWEEP_SECONDS) puts the
 * instance back and deletes LXD's half-written backup once LXD answers.
 *
 * Restarting the shared LXD takes it from every other run on the machine: the test refuses to
 * run unless it holds the engine lock (test/fixtures/engine-lock.ts), and LXD is started again
 * in afterAll whatever happened.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireEngineLock } from '../fixtures/engine-lock';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import {
  launchInstance,
  lxd,
  lxdInventory,
  removeInstance,
  restartLxd,
  sh,
  startLxd,
} from '../fixtures/lxd';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw-lxdrs-${randomBytes(3).toString('hex')}`;
/**
 * Enough data that LXD takes seconds to write the backup, so the restart lands while the
 * instance is held (the hold covers only LXD writing the backup, not the export).
 */
const DATA_MIB = 800;

let dataDir: string;
let stowageProcess: StowageProcess;
const stowage = (...args: string[]) => stowageProcess.cli(...args);

const status = (name: string) =>
  lxd.get<{ status: string }>(`/1.0/instances/${name}`).then(
    (i) => i.status,
    () => undefined,
  );

type Job = { status: string; error?: { name: string; message: string } };

beforeAll(async () => {
  requireEngineLock('test/e2e/lxd-restart.test.ts');
  startLxd();
  dataDir = tempDir('stowage-lxd-restart-');
  for (const mode of ['stop', 'pause']) {
    const name = `${RUN}-${mode}`;
    await launchInstance(name);
    await sh(name, `dd if=/dev/urandom of=/root/r.bin bs=1048576 count=${DATA_MIB} 2>/dev/null`);
  }
  stowageProcess = new StowageProcess(dataDir, [], { STOWAGE_HOLD_SWEEP_SECONDS: '1' });
  await stowageProcess.start();
  await stowageProcess.waitForTargets([`lxd:${RUN}-stop`, `lxd:${RUN}-pause`]);
}, 300_000);

afterAll(async () => {
  try {
    await stowageProcess?.stop();
  } finally {
    // Whatever happened above, the shared LXD answers again, with its pool and test image.
    startLxd();
    for (const mode of ['stop', 'pause']) await removeInstance(`${RUN}-${mode}`);
    if (dataDir) removeDir(dataDir);
  }
}, 180_000);

describe('LXD restarted in the middle of a backup that holds the instance', () => {
  for (const [mode, held] of [
    ['stop', 'Stopped'],
    ['pause', 'Frozen'],
  ] as const) {
    it(`--consistency ${mode}: the job FAILS naming the instance, no point, and the instance runs again`, async () => {
      const name = `${RUN}-${mode}`;
      const before = await lxdInventory(name);
      const started = stowage('backup', `lxd:${name}`, '--consistency', mode);
      expect(started.code, started.stderr).toBe(0);
      const { jobId } = started.json as { jobId: string };
      await eventually(
        async () => ((await status(name)) === held ? true : undefined),
        `the instance ${held.toLowerCase()} by the backup`,
        120_000,
      );

      const downMs = await restartLxd();

      const job = await eventually(
        async () => {
          const j = stowage('job', jobId).json as Job;
          return ['PENDING', 'RUNNING'].includes(j.status) ? undefined : j;
        },
        'the job to end',
        120_000,
      );
      expect(job.status).toBe('FAILED');
      expect(job.error?.name).toBe('DriverError');
      expect(job.error?.message).toContain(`instance ${name} was running before the backup`);
      const t0 = Date.now();
      await eventually(
        async () => ((await status(name)) === 'Running' ? true : undefined),
        'the instance running again',
        60_000,
      );
      const runningAfterMs = Date.now() - t0;
      // The backup LXD was writing when it went down is deleted too (its hold was journaled).
      await eventually(
        async () =>
          JSON.stringify(await lxdInventory(name)) === JSON.stringify(before) ? true : undefined,
        'nothing of the backup left in LXD',
        30_000,
      );
      const points = (stowage('points', `lxd:${name}`).json as unknown[] | undefined) ?? [];
      expect(points).toHaveLength(0);
      // The instance's own processes survived the restart and its data is whole.
      expect((await sh(name, 'ls -l /root/r.bin')).trim()).toContain(String(DATA_MIB * 1048576));
      process.stdout.write(
        `lxd restart figures: ${mode}: lxd down ${downMs} ms; job FAILED (${job.error?.message.slice(0, 240)}); instance running ${runningAfterMs} ms after the job ended\n`,
      );
    }, 300_000);
  }
});
