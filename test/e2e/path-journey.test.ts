/**
 * The data path through the product, as a user drives it: `stowage start --store DIR`, path:
 * targets backed up and restored through the CLI, incremental backups that store only what
 * changed, `stowage verify`, and a damaged repository that fails loudly instead of restoring
 * wrong bytes.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  createReadStream,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
  chmodSync,
  existsSync,
  rmSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const MiB = 1024 * 1024;
let root: string;
let storeDir: string;
let stowage: StowageProcess;

interface Point {
  recoveryPointId: string;
  bytesRead: number;
  bytesNew: number;
  bytesStored: number;
}

/** 48 MiB shaped like a disk image: random, zero and text-like regions. */
function diskImage(): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < 12; i++) {
    if (i % 3 === 0) parts.push(randomBytes(4 * MiB));
    else if (i % 3 === 1) parts.push(Buffer.alloc(4 * MiB));
    else {
      const line = `line ${i} of a log, value=${i * 31}\n`;
      parts.push(Buffer.from(line.repeat(Math.ceil((4 * MiB) / line.length))).subarray(0, 4 * MiB));
    }
  }
  return Buffer.concat(parts);
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function walk(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const full = join(dir, name);
    const st = statSync(full, { throwIfNoEntry: false }) ?? null;
    const l = require_lstat(full);
    const rel = full.slice(base.length);
    if (l.isSymbolicLink()) out.push(`${rel} link`);
    else if (l.isDirectory())
      out.push(`${rel}/ ${(l.mode & 0o7777).toString(8)}`, ...walk(full, base));
    else
      out.push(
        `${rel} ${(l.mode & 0o7777).toString(8)} ${st?.size} ${createHash('sha256').update(readFileSync(full)).digest('hex')}`,
      );
  }
  return out;
}
import { lstatSync as require_lstat } from 'node:fs';

function backup(target: string): Point {
  const run = stowage.cli('backup', target, '--wait');
  expect(run.code, run.stderr).toBe(0);
  const id = (run.json as { recoveryPointId: string }).recoveryPointId;
  const points = stowage.cli('points').json as Point[];
  return points.find((p) => p.recoveryPointId === id)!;
}

beforeAll(async () => {
  root = tempDir('stowage-path-e2e-');
  storeDir = join(root, 'repository');
  mkdirSync(join(root, 'src'));
  writeFileSync(join(root, 'src', 'disk.img'), diskImage());
  const tree = join(root, 'src', 'tree');
  mkdirSync(join(tree, 'nested', 'empty'), { recursive: true });
  writeFileSync(
    join(tree, 'secret.txt'),
    'STOWAGE-PLAINTEXT-MARKER-7f3a9c secret contents\n'.repeat(1000),
  );
  chmodSync(join(tree, 'secret.txt'), 0o600);
  writeFileSync(join(tree, 'nested', 'run.sh'), '#!/bin/sh\necho hi\n');
  chmodSync(join(tree, 'nested', 'run.sh'), 0o755);
  symlinkSync('secret.txt', join(tree, 'link'));
  stowage = new StowageProcess(join(root, 'data'), ['--store', storeDir]);
  await stowage.start();
});

afterAll(async () => {
  await stowage?.stop();
  if (root) removeDir(root);
});

describe('path targets through the data path, with the repository in a directory', () => {
  let full: Point;
  let incremental: Point;

  it('backs up a disk image: compressible and zero regions shrink, everything is new', () => {
    full = backup(`path:${join(root, 'src', 'disk.img')}`);
    expect(full.bytesRead).toBe(48 * MiB);
    expect(full.bytesNew).toBe(48 * MiB - countDuplicateBytes(full));
    // 16 MiB of random data cannot shrink; zeros and text nearly vanish.
    expect(full.bytesStored).toBeLessThan(20 * MiB);
    expect(full.bytesStored).toBeGreaterThan(16 * MiB);
  });

  it('stores only what changed on the second backup, even after an insertion in the middle', () => {
    const path = join(root, 'src', 'disk.img');
    const image = readFileSync(path);
    for (let i = 0; i < 8; i++)
      randomBytes(64).copy(image, Math.floor((i + 0.5) * (image.length / 8)));
    const inserted = Buffer.concat([
      image.subarray(0, 24 * MiB),
      randomBytes(MiB),
      image.subarray(24 * MiB),
    ]);
    writeFileSync(path, inserted);

    incremental = backup(`path:${path}`);
    expect(incremental.bytesRead).toBe(49 * MiB);
    // 1 MiB inserted + 8 small changes, each re-storing the chunk around it: about 1 MiB in
    // random or text regions, up to 4 MiB (maxSize) in zero runs, which then compress to nothing.
    expect(incremental.bytesNew).toBeLessThan(34 * MiB);
    expect(incremental.bytesStored).toBeLessThan(10 * MiB);
  });

  it('restores the incremental point byte for byte to a new path', async () => {
    const dest = join(root, 'restored.img');
    const run = stowage.cli('restore', incremental.recoveryPointId, '--name', dest, '--wait');
    expect(run.code, run.stderr).toBe(0);
    expect(await sha256File(dest)).toBe(await sha256File(join(root, 'src', 'disk.img')));
  });

  it('restores a directory tree with modes, symlinks and empty directories', () => {
    const tree = backup(`path:${join(root, 'src', 'tree')}`);
    const dest = join(root, 'tree-restored');
    const run = stowage.cli('restore', tree.recoveryPointId, '--name', dest, '--wait');
    expect(run.code, run.stderr).toBe(0);
    expect(walk(dest)).toEqual(walk(join(root, 'src', 'tree')));
  });

  it('lists a directory point with stowage ls and restores one file of it with --file --dest', () => {
    const tree = backup(`path:${join(root, 'src', 'tree')}`);
    const ls = stowage.cli('ls', tree.recoveryPointId, 'nested');
    expect(ls.code, ls.stderr).toBe(0);
    const listing = ls.json as { entries: Array<{ path: string; type: string; mode: number }> };
    expect(listing.entries.map((e) => `${e.type} ${e.path} ${e.mode.toString(8)}`)).toEqual([
      'dir nested/empty 755',
      'file nested/run.sh 755',
    ]);
    const dest = join(root, 'one-file');
    const run = stowage.cli(
      'restore',
      tree.recoveryPointId,
      '--file',
      'nested/run.sh',
      '--dest',
      dest,
      '--wait',
    );
    expect(run.code, run.stderr).toBe(0);
    const want = walk(join(root, 'src', 'tree')).filter(
      (line) => line.startsWith('/nested/ ') || line.startsWith('/nested/run.sh '),
    );
    expect(walk(dest)).toEqual(want);
  });

  it('refuses to restore over an existing path without --in-place, and leaves it untouched', () => {
    const dest = join(root, 'restored.img');
    const before = readFileSync(dest);
    const run = stowage.cli('restore', full.recoveryPointId, '--name', dest, '--wait');
    expect(run.code).toBe(1);
    expect(run.json).toMatchObject({ status: 'FAILED', error: { name: 'NameTaken' } });
    expect(readFileSync(dest).equals(before)).toBe(true);
  });

  it('keeps nothing readable in the store without the key, and the key file private', () => {
    const files: string[] = [];
    const collect = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        if (e.isDirectory()) collect(join(dir, e.name));
        else files.push(join(dir, e.name));
      }
    };
    collect(storeDir);
    expect(files.some((f) => f.includes('/data/'))).toBe(true);
    for (const f of files) {
      expect(readFileSync(f).includes('STOWAGE-PLAINTEXT-MARKER'), f).toBe(false);
      expect(readFileSync(f).includes('line 2 of a log'), f).toBe(false);
    }
    const keyFile = join(root, 'data', 'keys', 'repository.key');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
  });

  it('is not blocked by junk or a copied index under index/: verify succeeds and warns about both', () => {
    const indexDir = join(storeDir, 'index');
    const [index] = readdirSync(indexDir);
    const copy = 'cd'.repeat(32);
    writeFileSync(join(indexDir, 'junk'), 'written without the key');
    writeFileSync(join(indexDir, copy), readFileSync(join(indexDir, index!)));
    try {
      const verify = stowage.cli('verify', incremental.recoveryPointId, '--wait');

      expect(verify.code, verify.stderr).toBe(0);
      const warnings = (verify.json as { warnings?: string[] }).warnings ?? [];
      expect(warnings).toEqual([
        expect.stringContaining(`index/${copy}: it describes pack ${index!}`),
        expect.stringContaining('index/junk: it cannot be opened'),
      ]);
    } finally {
      rmSync(join(indexDir, 'junk'));
      rmSync(join(indexDir, copy));
    }
  });

  it('verifies a point, and fails verify and restore with the stream and offset when a pack is damaged', () => {
    const ok = stowage.cli('verify', incremental.recoveryPointId, '--wait');
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.json).toMatchObject({ status: 'SUCCEEDED', kind: 'VERIFY' });

    const packs: string[] = [];
    const dataDir = join(storeDir, 'data');
    for (const sub of readdirSync(dataDir))
      for (const p of readdirSync(join(dataDir, sub))) packs.push(join(dataDir, sub, p));
    for (const pack of packs) {
      const bytes = readFileSync(pack);
      bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
      writeFileSync(pack, bytes);
    }

    const bad = stowage.cli('verify', incremental.recoveryPointId, '--wait');
    expect(bad.code).toBe(1);
    const error = (bad.json as { error: { name: string; message: string } }).error;
    expect(error.name).toBe('IntegrityError');
    expect(error.message).toMatch(
      new RegExp(`recovery point ${incremental.recoveryPointId}, stream file, offset \\d+`),
    );

    const dest = join(root, 'from-damaged.img');
    const restore = stowage.cli('restore', incremental.recoveryPointId, '--name', dest, '--wait');
    expect(restore.code).toBe(1);
    expect((restore.json as { error: { name: string } }).error.name).toBe('IntegrityError');
    expect(existsSync(dest)).toBe(false);
  });
});

/** Bytes of the first backup that repeat earlier chunks of the same image (the zero regions). */
function countDuplicateBytes(point: Point): number {
  return point.bytesRead - point.bytesNew;
}
