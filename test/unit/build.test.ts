import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { build, DIST } from '../../cli/build';
import { mixedData, MiB } from '../fixtures/data';

const dir = mkdtempSync(join(tmpdir(), 'stowage-build-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const node = (...args: string[]) => spawnSync(process.execPath, args, { encoding: 'utf8' });

describe('npm run build', () => {
  beforeAll(async () => {
    await build();
  }, 60_000);

  it('makes a stowage command that runs without a TypeScript loader', () => {
    const run = node(join(DIST, 'stowage.mjs'), '--help');

    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('Usage: stowage');
  });

  it('runs the data path, backup then restore, from the bundle', () => {
    const file = join(dir, 'disk.img');
    const data = mixedData(12 * MiB, 12);
    writeFileSync(file, data);
    const common = ['--repo', join(dir, 'repo'), '--key', join(dir, 'key')];
    const step = join(DIST, 'bench-step.mjs');

    const backup = node(step, 'backup', ...common, '--file', file, '--record', join(dir, 'rec'));
    const restore = node(
      step,
      'restore',
      ...common,
      '--record',
      join(dir, 'rec'),
      '--out',
      join(dir, 'out'),
    );

    expect(backup.status, backup.stderr).toBe(0);
    expect(restore.status, restore.stderr).toBe(0);
    expect(readFileSync(join(dir, 'out')).equals(data)).toBe(true);
  });
});
