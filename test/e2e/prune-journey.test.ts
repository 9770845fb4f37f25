/**
 * Retention and garbage collection through the product: `stowage start --store DIR` with a short
 * repository lease, path targets backed up through the CLI, `stowage points delete`, `stowage
 * prune --dry-run` and `stowage prune` run by the prune workflow on the real local Step Functions
 * engine, the store measured before and after, and every point that is left restored and
 * compared byte for byte.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const MiB = 1024 * 1024;
let root: string;
let storeDir: string;
let stowage: StowageProcess;

interface Listed {
  recoveryPointId: string;
  target: string;
  retention?: { keep: boolean; reasons: string[] };
}

interface PruneJob {
  status: string;
  prune: {
    dryRun: boolean;
    points: Array<{ recoveryPointId: string; reasons: string[] }>;
    pointsDeleted: number;
    packsFound: number;
    bytesFound: number;
    packsDeleted: number;
    bytesFreed: number;
  };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Bytes under the store's data/ (the packs). */
function packBytes(): number {
  let n = 0;
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const full = join(dir, e.name);
      if (e.isDirectory()) walk(full);
      else n += statSync(full).size;
    }
  };
  walk(join(storeDir, 'data'));
  return n;
}

export function backupPath(path: string): string {
  const run = stowage.cli('backup', `path:${path}`, '--wait');
  expect(run.code, run.stderr).toBe(0);
  return (run.json as { recoveryPointId: string }).recoveryPointId;
}

export function restoreAndCompare(point: string, expected: Buffer, name: string): void {
  const dest = join(root, name);
  const run = stowage.cli('restore', point, '--name', dest, '--wait');
  expect(run.code, run.stderr).toBe(0);
  expect(sha(readFileSync(dest))).toBe(sha(expected));
}

describe('prune journey (path targets, directory store)', () => {
  beforeAll(async () => {
    root = tempDir('stowage-prune-');
    storeDir = join(root, 'store');
    process.env.STOWAGE_LEASE_SECONDS = '2';
    process.env.STOWAGE_SCHEDULER_TICK_MS = '500';
    stowage = new StowageProcess(join(root, 'data'), ['--store', storeDir]);
    await stowage.start();
  });

  afterAll(async () => {
    await stowage?.stop();
    delete process.env.STOWAGE_LEASE_SECONDS;
    delete process.env.STOWAGE_SCHEDULER_TICK_MS;
    if (root) removeDir(root);
  });

  it('deletes a point and the chunks only it held, and keeps the others whole', async () => {
    const file = join(root, 'disk.img');
    const versions = [randomBytes(6 * MiB), randomBytes(6 * MiB), randomBytes(6 * MiB)];
    const points: string[] = [];
    for (const v of versions) {
      writeFileSync(file, v);
      points.push(backupPath(file));
    }
    const before = packBytes();

    // No policy protects the target: retention keeps everything, and says why.
    const listed = stowage.cli('points', `path:${file}`).json as Listed[];
    expect(listed).toHaveLength(3);
    for (const p of listed) {
      expect(p.retention).toEqual({
        keep: true,
        reasons: [`no policy protects path:${file}: kept until deleted`],
      });
    }
    const dry = stowage.cli('prune', '--dry-run', '--wait');
    expect(dry.code, dry.stderr).toBe(0);
    const dryJob = stowage.cli('job', (dry.json as { jobId: string }).jobId).json as PruneJob;
    expect(dryJob.prune).toMatchObject({ dryRun: true, pointsDeleted: 0, packsFound: 0 });

    const deleted = stowage.cli('points', 'delete', points[1]!, '--wait');
    expect(deleted.code, deleted.stderr).toBe(0);
    const job = stowage.cli('job', (deleted.json as { jobId: string }).jobId).json as PruneJob;
    expect(job.status).toBe('SUCCEEDED');
    expect(job.prune.pointsDeleted).toBe(1);
    expect(job.prune.packsDeleted).toBeGreaterThan(0);
    expect(job.prune.bytesFreed).toBeGreaterThan(5 * MiB);
    expect(packBytes()).toBeLessThan(before - 5 * MiB);

    const left = (stowage.cli('points', `path:${file}`).json as Listed[]).map(
      (p) => p.recoveryPointId,
    );
    expect(left.sort()).toEqual([points[0]!, points[2]!].sort());
    restoreAndCompare(points[0]!, versions[0]!, 'v0');
    restoreAndCompare(points[2]!, versions[2]!, 'v2');

    const gone = stowage.cli('restore', points[1]!, '--name', join(root, 'v1'), '--wait');
    expect(gone.code).toBe(2);
    const again = stowage.cli('points', 'delete', points[1]!);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/does not exist/);
  });

  it('a rate(1 minute) policy with --keep-last 2 backs up on its own; prune keeps two, the store shrinks, they restore whole', async () => {
    const file = join(root, 'app.img');
    const content = () => randomBytes(4 * MiB);
    let current = content();
    writeFileSync(file, current);
    const versions = new Map<string, Buffer>();
    const created = stowage.cli(
      'policy',
      'create',
      'every-minute',
      '--target',
      `path:${file}`,
      '--schedule',
      'rate(1 minute)',
      '--keep-last',
      '2',
    );
    expect(created.code, created.stderr).toBe(0);
    const bad = stowage.cli(
      'policy',
      'create',
      'bad',
      '--target',
      `path:${file}`,
      '--schedule',
      'cron(0 3 * * * *)',
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/exactly one of day-of-month and day-of-week must be \?/);

    // The scheduler fires it one interval after it was made, with nobody asking.
    const first = await eventually(
      async () => {
        const listed = stowage.cli('points', `path:${file}`).json as Listed[];
        return listed.length > 0 ? listed[0]! : undefined;
      },
      'the first scheduled point',
      90_000,
    );
    versions.set(first.recoveryPointId, current);
    const policies = stowage.cli('policy', 'list').json as Array<{
      name: string;
      runs: number;
      flag?: string;
    }>;
    expect(policies).toEqual([expect.objectContaining({ name: 'every-minute', runs: 1 })]);
    // Its job must end before the file changes under it.
    await eventually(
      async () => {
        const jobs = stowage.cli('jobs').json as Array<{ kind: string; status: string }>;
        return jobs.every((j) => j.status !== 'RUNNING' && j.status !== 'PENDING')
          ? true
          : undefined;
      },
      'the scheduled backup to end',
      60_000,
    );

    for (let i = 0; i < 2; i++) {
      current = content();
      writeFileSync(file, current);
      const run = stowage.cli('policy', 'run', 'every-minute', '--wait');
      expect(run.code, run.stderr).toBe(0);
      const jobId = (run.json as { jobs: Array<{ jobId: string }> }).jobs[0]!.jobId;
      const job = stowage.cli('job', jobId).json as { recoveryPointId: string };
      versions.set(job.recoveryPointId, current);
    }
    const three = stowage.cli('points', `path:${file}`).json as Listed[];
    expect(three).toHaveLength(3);
    // Newest first: the oldest is the one retention lets go.
    expect(three[2]!.retention).toEqual({
      keep: false,
      reasons: ['expired: no retention rule keeps it; the next prune deletes it'],
    });
    expect(three[0]!.retention?.reasons).toEqual(['policy every-minute: last 1/2']);

    const before = packBytes();
    const pruned = stowage.cli('prune', '--wait');
    expect(pruned.code, pruned.stderr).toBe(0);
    const job = stowage.cli('job', (pruned.json as { jobId: string }).jobId).json as PruneJob;
    expect(job.prune.points.map((p) => p.recoveryPointId)).toEqual([three[2]!.recoveryPointId]);
    expect(job.prune.bytesFreed).toBeGreaterThan(3 * MiB);
    expect(packBytes()).toBeLessThan(before - 3 * MiB);

    const kept = stowage.cli('points', `path:${file}`).json as Listed[];
    expect(kept.map((p) => p.recoveryPointId)).toEqual([
      three[0]!.recoveryPointId,
      three[1]!.recoveryPointId,
    ]);
    for (const p of kept)
      restoreAndCompare(
        p.recoveryPointId,
        versions.get(p.recoveryPointId)!,
        `k-${p.recoveryPointId}`,
      );

    expect(stowage.cli('policy', 'delete', 'every-minute').code).toBe(0);
    expect(stowage.cli('policy', 'list').json).toEqual([]);
  }, 240_000);
});
