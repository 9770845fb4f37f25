/**
 * A policy's schedule across a stop of `stowage start`, through the CLI (issue 13): a
 * rate(1 minute) policy with --verify-every 1 fires on its own, `stowage start` is stopped across
 * two of its slots and started again, and the missed slots run once on start, not once per slot;
 * every run's point is verified by the backup workflow's own Start checks, and the points
 * restore byte for byte.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

let root: string;
let stowage: StowageProcess;

interface Job {
  jobId: string;
  kind: string;
  status: string;
  policy?: string;
  recoveryPointId?: string;
  createdAt: string;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('a policy across a stop of stowage start', () => {
  beforeAll(async () => {
    root = tempDir('stowage-policy-restart-');
    process.env.STOWAGE_SCHEDULER_TICK_MS = '500';
    stowage = new StowageProcess(join(root, 'data'), ['--store', join(root, 'store')]);
    await stowage.start();
  });

  afterAll(async () => {
    await stowage?.stop();
    delete process.env.STOWAGE_SCHEDULER_TICK_MS;
    if (root) removeDir(root);
  });

  const jobs = () => stowage.cli('jobs').json as Job[];
  const backups = () => jobs().filter((j) => j.kind === 'BACKUP' && j.policy === 'minutely');
  const unsettled = () => {
    const all = jobs();
    const verified = new Set(all.filter((j) => j.kind === 'VERIFY').map((j) => j.recoveryPointId));
    // A backup that ended has not settled until its workflow started its verify: the backup job
    // ends before the workflow's `Start checks` state runs.
    return all.filter(
      (j) =>
        j.status === 'RUNNING' ||
        j.status === 'PENDING' ||
        (j.kind === 'BACKUP' && j.status === 'SUCCEEDED' && !verified.has(j.recoveryPointId)),
    );
  };
  const settled = async (what: string) => {
    try {
      await eventually(async () => (unsettled().length === 0 ? true : undefined), what, 90_000);
    } catch (e) {
      // Say which jobs did not end, and what the service logged, not only that something did not.
      const log = readFileSync(join(root, 'data', 'stowage-start.log'), 'utf8').slice(-6000);
      throw new Error(
        `${(e as Error).message}; not ended: ${JSON.stringify(unsettled())}\nservice log:\n${log}`,
      );
    }
  };

  it('runs the slots missed while it was down once on start, and verifies every run', async () => {
    const file = join(root, 'app.img');
    const data = randomBytes(2 * 1024 * 1024);
    writeFileSync(file, data);
    const created = stowage.cli(
      'policy',
      'create',
      'minutely',
      '--target',
      `path:${file}`,
      '--schedule',
      'rate(1 minute)',
      '--verify-every',
      '1',
    );
    expect(created.code, created.stderr).toBe(0);
    await eventually(
      async () => (backups().length > 0 ? true : undefined),
      'the first run',
      90_000,
    );
    await settled('the first run and its verify to end');

    await stowage.stop();
    const stoppedAt = Date.now();
    // Two slots pass while it is down.
    await new Promise((r) => setTimeout(r, 125_000));
    await stowage.start();
    await eventually(
      async () => (backups().length >= 2 ? true : undefined),
      'the missed slots to run on start',
      60_000,
    );
    const shown = stowage.cli('policy', 'show', 'minutely').json as { nextRunAt: string };
    // Long enough for a scheduler that ran each missed slot (a tick every 500 ms) to do so.
    await new Promise((r) => setTimeout(r, 3000));
    const onStart = backups().filter((j) => Date.parse(j.createdAt) > stoppedAt);
    if (Date.parse(shown.nextRunAt) > Date.now()) {
      expect(onStart).toHaveLength(1); // two slots missed, one run
    } else {
      expect(onStart.length).toBeLessThanOrEqual(2); // the rate's next slot came meanwhile
    }
    await settled('the run on start and its verify to end');
    const after = backups();
    const runs = (stowage.cli('policy', 'show', 'minutely').json as { runs: number }).runs;
    expect(runs).toBe(after.length);
    const firstOnStart = onStart.sort((a, b) => a.createdAt.localeCompare(b.createdAt))[0]!;

    // Every run's point was verified, started by the backup workflow itself.
    const verifies = jobs().filter((j) => j.kind === 'VERIFY');
    for (const b of after) {
      expect(b.status).toBe('SUCCEEDED');
      const v = verifies.find((j) => j.recoveryPointId === b.recoveryPointId);
      expect(v?.status, b.recoveryPointId).toBe('SUCCEEDED');
      const detail = stowage.cli('job', b.jobId).json as {
        checks?: { verify?: boolean; started?: Array<{ kind: string; jobId?: string }> };
      };
      expect(detail.checks).toMatchObject({ verify: true, started: [{ kind: 'VERIFY' }] });
    }
    const dest = join(root, 'restored.img');
    const restored = stowage.cli(
      'restore',
      firstOnStart.recoveryPointId!,
      '--name',
      dest,
      '--wait',
    );
    expect(restored.code, restored.stderr).toBe(0);
    expect(sha(readFileSync(dest))).toBe(sha(data));
    console.log(
      `policy restart figures: runs ${after.length}, runs on start ${onStart.length} after ~125 s down (2 slots missed), verifies ${verifies.length}`,
    );
    expect(stowage.cli('policy', 'delete', 'minutely').code).toBe(0);
  }, 420_000);
});
