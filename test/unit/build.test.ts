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

  it('prints the package version from the bundle', () => {
    const run = node(join(DIST, 'stowage.mjs'), '--version');

    expect(run.status).toBe(0);
    expect(run.stdout.trim()).toBe(
      (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version,
    );
  });

  it('loads no AWS SDK client, engine client or agent code until a command needs it', () => {
    // The entry's static imports are what every command pays for at start-up; the rest
    // (stowage start, stowage agent, SigV4 signing) sits behind dynamic import() in chunks.
    const staticImports = (file: string): string[] =>
      [...readFileSync(join(DIST, file), 'utf8').matchAll(/^import\s[^;]*?from\s*"([^"]+)"/gm)].map(
        (m) => m[1]!,
      );
    const seen = new Set<string>();
    const pending = ['stowage.mjs'];
    while (pending.length > 0) {
      const file = pending.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      for (const spec of staticImports(file)) {
        if (spec.startsWith('./')) pending.push(spec.slice(2));
        else seen.add(spec);
      }
    }

    const packages = [...seen].filter((s) => !s.endsWith('.mjs'));
    expect(packages.filter((p) => /^@aws-|^@smithy|dockerode|zod|esbuild/.test(p))).toEqual([]);
    expect(packages).toContain('commander');
  });

  it('lists the sources the bundle was built from, which cli/bin.mjs checks', () => {
    const { builtAt, inputs } = JSON.parse(readFileSync(join(DIST, 'sources.json'), 'utf8')) as {
      builtAt: number;
      inputs: string[];
    };

    expect(builtAt).toBeLessThanOrEqual(Date.now());
    expect(inputs).toEqual(expect.arrayContaining(['cli/main.ts', 'agents/worker/main.ts']));
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
