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
import { findBoundary } from '../../agents/repo/chunker';
import { SEAL_OVERHEAD } from '../../agents/repo/codec';
import { DEFAULT_CHUNKING } from '../../agents/repo/types';
import { removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const MiB = 1024 * 1024;
/** The incremental's changes: 8 edits of EDIT random bytes, and a random MiB at INSERT_AT. */
const EDIT = 64;
const INSERT_AT = 24 * MiB;
/**
 * The most of a compressible run a chunk may store uncompressed: the codec samples 8 KiB every
 * 128 KiB (agents/repo/codec.ts), so a shorter run can fall between samples.
 */
const UNPROBED = 136 * 1024;
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
    const before = readFileSync(path);
    const image = Buffer.from(before);
    const edits = Array.from({ length: 8 }, (_, i) => Math.floor((i + 0.5) * (image.length / 8)));
    for (const at of edits) randomBytes(EDIT).copy(image, at);
    const inserted = Buffer.concat([
      image.subarray(0, INSERT_AT),
      randomBytes(MiB),
      image.subarray(INSERT_AT),
    ]);
    writeFileSync(path, inserted);

    incremental = backup(`path:${path}`);
    expect(incremental.bytesRead).toBe(49 * MiB);
    // What the incremental has to store, from the bytes themselves: the chunks of the new image
    // (cut by the product's own chunker) that the first backup did not have. Those are the
    // chunks around the 8 edits and the insertion; everything else deduplicates.
    const old = new Set(chunksOf(before).map(([s, e]) => chunkId(before, s, e)));
    const fresh = new Map<string, [number, number]>();
    for (const [s, e] of chunksOf(inserted)) {
      const id = chunkId(inserted, s, e);
      if (!old.has(id)) fresh.set(id, [s, e]);
    }
    const newChunks = [...fresh.values()];
    expect(incremental.bytesNew).toBe(newChunks.reduce((n, [s, e]) => n + e - s, 0));
    // Each of the 9 changed places re-stores the chunk that holds it and, when it moved a cut
    // point, its neighbour: at most 2 chunks each.
    expect(newChunks.length).toBeLessThanOrEqual(2 * (edits.length + 1));

    // Stored (sealed, in packs): a new chunk's random bytes cannot shrink; the rest of it (text,
    // zeros) is compressed when any 8 KiB sample in every 128 KiB of it shrinks (codec.ts), so at
    // most 136 KiB of it may go uncompressed, and text of one repeated line shrinks far below an
    // eighth; plus the seal's frame per blob. Random bytes are where diskImage() put them, the
    // edits and the inserted MiB.
    const random = randomMask(inserted.length, edits);
    const incompressible = newChunks.reduce((n, [s, e]) => n + countOnes(random, s, e), 0);
    const atMost = newChunks.reduce((n, [s, e]) => {
      const r = countOnes(random, s, e);
      const rest = e - s - r;
      return n + r + Math.min(rest, UNPROBED) + rest / 8 + SEAL_OVERHEAD;
    }, 0);
    console.log(
      `path-journey incremental: ${newChunks.length} new chunks, ${incremental.bytesNew} bytes new, ${incremental.bytesStored} stored, bounds [${incompressible}, ${Math.ceil(atMost)}]`,
    );
    expect(incremental.bytesStored).toBeGreaterThanOrEqual(incompressible);
    expect(incremental.bytesStored).toBeLessThanOrEqual(atMost);
    // And that is a fraction of the first backup: only what changed.
    expect(incremental.bytesStored).toBeLessThan(full.bytesStored);
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

/** The chunks the repository cuts `buf` into (its default chunking), as [start, end). */
function chunksOf(buf: Buffer): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let pos = 0; pos < buf.length;) {
    const cut = findBoundary(buf, pos, buf.length, DEFAULT_CHUNKING);
    const end = cut < 0 ? buf.length : cut;
    out.push([pos, end]);
    pos = end;
  }
  return out;
}

function chunkId(buf: Buffer, start: number, end: number): string {
  return createHash('sha256').update(buf.subarray(start, end)).digest('hex');
}

/**
 * 1 where the incremental image holds random bytes: diskImage()'s random regions (every third
 * 4 MiB, from 0), the edits, and the MiB inserted at INSERT_AT (which moves what follows).
 */
function randomMask(length: number, edits: readonly number[]): Uint8Array {
  const mask = new Uint8Array(length);
  const moved = (at: number) => (at < INSERT_AT ? at : at + MiB);
  for (let region = 0; region < 12; region += 3) {
    const from = region * 4 * MiB;
    for (let at = from; at < from + 4 * MiB; at++) mask[moved(at)] = 1;
  }
  for (const at of edits) for (let i = 0; i < EDIT; i++) mask[moved(at + i)] = 1;
  mask.fill(1, INSERT_AT, INSERT_AT + MiB);
  return mask;
}

function countOnes(mask: Uint8Array, start: number, end: number): number {
  let n = 0;
  for (let i = start; i < end; i++) n += mask[i]!;
  return n;
}

/** Bytes of the first backup that repeat earlier chunks of the same image (the zero regions). */
function countDuplicateBytes(point: Point): number {
  return point.bytesRead - point.bytesNew;
}
