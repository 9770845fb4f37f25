/**
 * What a crash costs: `stowage start` is killed (SIGKILL) in the middle of a backup. On restart
 * the interrupted job is FAILED, no partial recovery point is listed, and the next backup of the
 * same target stores only what the killed one had not stored yet.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const MiB = 1024 * 1024;
const SIZE = 640 * MiB;
let root: string;
let file: string;
let stowage: StowageProcess;

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

beforeAll(async () => {
  root = tempDir('stowage-resume-');
  file = join(root, 'disk.img');
  // Incompressible and without repeats, so every stored byte is the file's own.
  const fd = openSync(file, 'w');
  for (let written = 0; written < SIZE; written += 8 * MiB) writeSync(fd, randomBytes(8 * MiB));
  closeSync(fd);
  stowage = new StowageProcess(join(root, 'data'), ['--store', join(root, 'repository')]);
  await stowage.start();
});

afterAll(async () => {
  await stowage?.stop();
  if (root) removeDir(root);
});

it('resumes after a crash mid-backup: the retry stores only what was not stored yet', async () => {
  const started = stowage.cli('backup', `path:${file}`);
  expect(started.code, started.stderr).toBe(0);
  const jobId = (started.json as { jobId: string }).jobId;

  // Kill it once a good part is stored, as a power cut would.
  const storedAtKill = await eventually(
    async () => {
      const job = stowage.cli('job', jobId).json as {
        status: string;
        progress?: { bytesStored?: number };
      };
      expect(job.status).not.toBe('SUCCEEDED');
      const stored = job.progress?.bytesStored ?? 0;
      return stored >= 64 * MiB ? stored : undefined;
    },
    'the backup to store 64 MiB',
    60_000,
  );
  await stowage.stop('SIGKILL');
  await stowage.start();

  expect(stowage.cli('job', jobId).json).toMatchObject({
    status: 'FAILED',
    error: { name: 'Interrupted' },
  });
  expect(stowage.cli('points', `path:${file}`).json).toEqual([]);

  const retry = stowage.cli('backup', `path:${file}`, '--wait');
  expect(retry.code, retry.stderr).toBe(0);
  const [point] = stowage.cli('points', `path:${file}`).json as Array<{
    recoveryPointId: string;
    bytesRead: number;
    bytesNew: number;
  }>;
  expect(point!.bytesRead).toBe(SIZE);
  // At most the unstored rest plus the chunks that were in flight when it died.
  expect(point!.bytesNew).toBeLessThanOrEqual(SIZE - storedAtKill + 48 * MiB);

  const dest = join(root, 'restored.img');
  const restore = stowage.cli('restore', point!.recoveryPointId, '--name', dest, '--wait');
  expect(restore.code, restore.stderr).toBe(0);
  expect(await sha256File(dest)).toBe(await sha256File(file));
});
