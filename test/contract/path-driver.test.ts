/**
 * The path driver against the real filesystem, in a temporary directory per run. Streams go to
 * an in-memory sink, so this exercises only the driver: what it reads from disk, and whether
 * what it writes back is the same file, device image or tree, down to modes, owners, mtimes,
 * symlinks and hard links. Runs as root (owners are part of what is compared).
 *
 * Block devices: no loop device can be attached here, so the device code path (read to the
 * end, write over an existing device, refuse one too small) runs against a regular file
 * standing in for the device, through the same functions the driver calls for a real one.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DriverContext, RestoreSource, StreamInfo } from '../../agents/core/driver';
import { createPathDriver } from '../../agents/drivers/path';
import { backupBytes, restoreOntoDevice } from '../../agents/drivers/path/bytes';
import { Warnings, type PathBackupMetadata } from '../../agents/drivers/path/common';
import { createLogger } from '../../kernel/logger';
import {
  makeMemoryPoint as makeSharedMemoryPoint,
  type MemoryPoint,
} from '../fixtures/memory-point';
import { describeDriverContract } from './driver-suite';

const driver = createPathDriver();
let base: string;

// --- in-memory sink and source -----------------------------------------------------------------

/** `onChunk` runs for every piece the sink receives: where to interfere with a backup. */
function makeMemoryPoint(
  overrides: { onChunk?: (info: StreamInfo, index: number) => void } = {},
): MemoryPoint {
  const { onChunk } = overrides;
  return makeSharedMemoryPoint(onChunk ? { onChunk: (info, piece) => onChunk(info, piece) } : {});
}

function makeContext(
  overrides: Partial<DriverContext> = {},
): DriverContext & { phases: string[]; logLines: Array<Record<string, unknown>> } {
  const phases: string[] = [];
  const logLines: Array<Record<string, unknown>> = [];
  return {
    log: createLogger({
      service: 'test',
      level: 'debug',
      write: (line) => logLines.push(JSON.parse(line) as Record<string, unknown>),
    }),
    signal: new AbortController().signal,
    phase: (text) => phases.push(text),
    phases,
    logLines,
    ...overrides,
  };
}

/** A point made from a tar built by hand, for archives the driver itself would never write. */
async function makeTarPoint(build: (pack: ReturnType<typeof tar.pack>) => void): Promise<{
  metadata: Record<string, unknown>;
  source: RestoreSource;
}> {
  const pack = tar.pack();
  build(pack);
  pack.finalize();
  const point = makeMemoryPoint();
  const metadata: PathBackupMetadata = {
    format: 'stowage.path/1',
    path: '/srv/evil',
    type: 'directory',
    size: 0,
    mode: 0o755,
    uid: 0,
    gid: 0,
    mtime: new Date().toISOString(),
    entries: 0,
    skipped: 0,
  };
  await point.sink.writeStream(
    { name: 'tree', kind: 'tar' },
    Readable.from(pack, { objectMode: false }),
  );
  return { metadata: metadata as unknown as Record<string, unknown>, source: point.source() };
}

// --- filesystem helpers ------------------------------------------------------------------------

async function sha256Of(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

interface Item {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size?: number;
  sha256?: string;
  link?: string;
  /** The first path (in sorted order) of the same inode. */
  sameInodeAs?: string;
}

/** Everything a faithful copy preserves, entry by entry, in sorted order; `.` is the root. */
async function fingerprint(root: string): Promise<Item[]> {
  const items: Item[] = [];
  const inodes = new Map<number, string>();
  async function visit(abs: string, rel: string): Promise<void> {
    const st = await fs.lstat(abs);
    const item: Item = {
      name: rel,
      type: st.isDirectory()
        ? 'directory'
        : st.isSymbolicLink()
          ? 'symlink'
          : st.isFile()
            ? 'file'
            : st.isFIFO()
              ? 'fifo'
              : 'other',
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      mtime: Math.floor(st.mtimeMs / 1000),
    };
    if (st.isSymbolicLink()) item.link = await fs.readlink(abs);
    if (st.isFile()) {
      item.size = st.size;
      item.sha256 = await sha256Of(abs);
      const first = inodes.get(st.ino);
      if (first !== undefined) item.sameInodeAs = first;
      else if (st.nlink > 1) inodes.set(st.ino, rel);
    }
    items.push(item);
    if (st.isDirectory()) {
      const names = (await fs.readdir(abs, { encoding: 'buffer' })).sort(Buffer.compare);
      for (const n of names) {
        const name = n.toString('utf8');
        await visit(join(abs, name), rel === '.' ? name : `${rel}/${name}`);
      }
    }
  }
  await visit(root, '.');
  return items;
}

/** What a restore may leave beside its destination: nothing. */
async function leftovers(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((n) => n.includes('.stowage-'));
}

const LONG_NAME = `long-${'n'.repeat(145)}`; // 150 characters
const UNICODE_NAME = 'héllo wörld – 日本語.txt';

/** Sets every entry's mtime below `root` (children first) to distinct times in 2001. */
async function setTimes(root: string): Promise<void> {
  let n = 0;
  async function visit(abs: string): Promise<void> {
    const st = await fs.lstat(abs);
    if (st.isDirectory()) {
      for (const name of (await fs.readdir(abs)).sort()) await visit(join(abs, name));
    }
    if (abs.endsWith('future.txt')) return;
    const t = new Date(Date.UTC(2001, 0, 1) + n++ * 3_600_000);
    await fs.lutimes(abs, t, t);
  }
  await visit(root);
}

/** A tree with every kind of entry a tar round trip can get wrong. */
async function makeTree(root: string): Promise<void> {
  await fs.mkdir(root);
  const file = async (rel: string, content: string | Buffer, mode = 0o644) => {
    await fs.writeFile(join(root, rel), content);
    await fs.chmod(join(root, rel), mode);
  };
  await file('private.txt', 'secret\n', 0o600);
  await file('run.sh', '#!/bin/sh\necho hi\n', 0o755);
  await file('setuid-tool', 'pretend binary\n', 0o4755);
  await file('locked', 'nobody may read this\n', 0o000);
  await fs.mkdir(join(root, 'shared'));
  await fs.chmod(join(root, 'shared'), 0o1777);
  await file('shared/note.txt', 'anyone\n');
  await fs.mkdir(join(root, 'setgid-dir'));
  await fs.chmod(join(root, 'setgid-dir'), 0o2775);
  await fs.mkdir(join(root, 'app'));
  await file('app/data.txt', 'owned by the app\n', 0o640);
  await fs.chown(join(root, 'app/data.txt'), 1000, 1000);
  await fs.chown(join(root, 'app'), 1000, 1000);
  await fs.chmod(join(root, 'app'), 0o750);
  await fs.mkdir(join(root, 'readonly-dir'));
  await file('readonly-dir/inner.txt', 'inside a 0555 directory\n', 0o444);
  await fs.chmod(join(root, 'readonly-dir'), 0o555);
  await fs.mkdir(join(root, 'links'));
  await fs.symlink('../private.txt', join(root, 'links/relative'));
  await fs.symlink('/etc/hostname', join(root, 'links/absolute'));
  await fs.symlink('/does/not/exist', join(root, 'links/dangling'));
  await fs.lchown(join(root, 'links/dangling'), 1000, 1000);
  await fs.mkdir(join(root, 'hard'));
  await file('hard/first', 'one inode, two names\n', 0o640);
  await fs.link(join(root, 'hard/first'), join(root, 'hard/second'));
  await fs.mkdir(join(root, 'empty'));
  await fs.mkdir(join(root, 'nested/deeper/deepest'), { recursive: true });
  await file('nested/deeper/deepest/file.txt', 'nested\n', 0o444);
  await file(UNICODE_NAME, 'unicode\n');
  await file(LONG_NAME, 'a long name\n');
  // A path too long for ustar's name + prefix fields: PAX.
  const deep = join('x'.repeat(100), 'y'.repeat(100), 'z'.repeat(100));
  await fs.mkdir(join(root, deep), { recursive: true });
  await file(join(deep, 'file.txt'), 'deep\n');
  await file('big-ids.txt', 'ids past ustar\n');
  await fs.chown(join(root, 'big-ids.txt'), 3_000_000, 3_000_001);
  await file('future.txt', 'mtime past 2038\n');
  const future = new Date(Date.UTC(2040, 5, 1, 12));
  await fs.utimes(join(root, 'future.txt'), future, future);
  // 20 MiB with long zero runs: random, zeros, random, zeros.
  const big = await fs.open(join(root, 'big.bin'), 'w');
  await big.write(randomBytes(1 << 20));
  await big.write(Buffer.alloc(8 << 20));
  await big.write(randomBytes(2 << 20));
  await big.write(Buffer.alloc(9 << 20));
  await big.close();
  execFileSync('mkfifo', [join(root, 'pipe')]);
  await fs.chown(root, 1000, 1000);
  await fs.chmod(root, 0o750);
  await setTimes(root);
}

beforeAll(async () => {
  base = await fs.mkdtemp(join(tmpdir(), 'stowage-path-'));
});

afterAll(async () => {
  if (base) await fs.rm(base, { recursive: true, force: true });
});

/** The contract on a directory tree and on a single file, each in its own corner of `base`. */
for (const kind of ['directory', 'file'] as const) {
  describeDriverContract(
    `path, a ${kind}`,
    async () => {
      const target = join(base, `contract-${kind}`);
      if (kind === 'directory') {
        await fs.mkdir(target);
        await fs.writeFile(join(target, 'private.txt'), 'secret\n', { mode: 0o600 });
        await fs.mkdir(join(target, 'app'));
        await fs.writeFile(join(target, 'app/noise.bin'), randomBytes(3 << 20));
        await fs.chown(join(target, 'app'), 1000, 1000);
        await fs.symlink('../private.txt', join(target, 'app/link'));
        await fs.link(join(target, 'private.txt'), join(target, 'hard-link'));
        await setTimes(target);
      } else {
        await fs.writeFile(target, Buffer.concat([randomBytes(3 << 20), Buffer.alloc(1 << 20)]));
        await fs.chown(target, 1000, 1000);
        await fs.chmod(target, 0o2640);
        await setTimes(target);
      }
      return {
        driver,
        target,
        missing: join(base, `no-such-${kind}`),
        copyName: (label) => join(base, `contract-${kind}-${label}`),
        content: fingerprint,
        // Nothing runs: a path is only its bytes.
        state: async () => 'a path',
        // A failed restore or a temporary file would show up beside the target.
        leftovers: async () => (await fs.readdir(base)).sort(),
        change: async (name) => {
          const file = kind === 'directory' ? join(name, 'app/noise.bin') : name;
          await fs.writeFile(file, randomBytes(1 << 20));
        },
      };
    },
    {
      inPlace: true,
      hints: { nameTaken: 'choose another destination path, or use --in-place' },
    },
  );
}

describe('path driver', () => {
  it('restores a directory tree with modes, owners, mtimes, links and odd names, skipping the FIFO', async () => {
    // Arrange
    const source = join(base, 'tree');
    await makeTree(source);
    const before = await fingerprint(source);
    const point = makeMemoryPoint();
    const ctx = makeContext();
    const dest = join(base, 'tree-restored');

    // Act
    const outcome = await driver.backup(source, point.sink, ctx);
    const result = await driver.restore(
      JSON.parse(JSON.stringify(outcome.metadata)) as Record<string, unknown>,
      point.source(),
      { name: dest, inPlace: false },
      makeContext(),
    );

    // Assert: the backup
    expect(point.stored.map((s) => [s.name, s.kind])).toEqual([['tree', 'tar']]);
    const files = before.filter((i) => i.type === 'file' && !i.sameInodeAs);
    const fileBytes = files.reduce((sum, i) => sum + (i.size ?? 0), 0);
    expect(outcome.metadata).toMatchObject({
      format: 'stowage.path/1',
      path: source,
      type: 'directory',
      size: fileBytes,
      mode: 0o750,
      uid: 1000,
      gid: 1000,
      entries: before.length - 2, // not the root, not the FIFO
      skipped: 1,
      warnings: ['pipe: skipped (FIFO)'],
    });
    expect(outcome.summary).toEqual({ type: 'directory', size: fileBytes });
    expect(ctx.phases).toContain(`archiving ${source}`);
    expect(ctx.logLines).toContainEqual(
      expect.objectContaining({ level: 'warn', step: 'entry skipped', entry: 'pipe' }),
    );
    // Another tar reads it too: long, deep and unicode names come through PAX.
    const tarFile = join(base, 'tree.tar');
    await fs.writeFile(tarFile, point.bytes.get('tree')!);
    const listed = execFileSync('tar', ['-tf', tarFile], { encoding: 'utf8' }).split('\n');
    expect(listed).toEqual(
      expect.arrayContaining([UNICODE_NAME, LONG_NAME, 'empty/', 'hard/second', 'big.bin']),
    );
    expect(listed.some((n) => n.endsWith('z'.repeat(100) + '/file.txt'))).toBe(true);

    // Assert: the restored tree
    expect(result).toEqual({ restoredTarget: `path:${dest}` });
    expect(await fingerprint(dest)).toEqual(before.filter((i) => i.type !== 'fifo'));
    expect(await leftovers(base)).toEqual([]);
    // The original is untouched.
    expect(await fingerprint(source)).toEqual(before);
  }, 30_000);

  it('restores a single file byte for byte with its mode, owner and mtime', async () => {
    // Arrange
    const path = join(base, 'disk.img');
    await fs.writeFile(path, Buffer.concat([randomBytes(3 << 20), Buffer.alloc(1 << 20)]));
    await fs.chown(path, 1000, 1000);
    await fs.chmod(path, 0o2640);
    const mtime = new Date(Date.UTC(2019, 4, 4, 4, 4, 4));
    await fs.utimes(path, mtime, mtime);
    const point = makeMemoryPoint();
    const dest = join(base, 'disk-restored.img');

    // Act
    const outcome = await driver.backup(path, point.sink, makeContext());
    const result = await driver.restore(
      outcome.metadata,
      point.source(),
      { name: dest, inPlace: false },
      makeContext(),
    );

    // Assert
    expect(point.stored.map((s) => [s.name, s.kind, s.size])).toEqual([['file', 'file', 4 << 20]]);
    expect(outcome.metadata).toMatchObject({
      format: 'stowage.path/1',
      type: 'file',
      size: 4 << 20,
      mode: 0o2640,
      uid: 1000,
      gid: 1000,
      mtime: mtime.toISOString(),
    });
    expect(outcome.metadata.warnings).toBeUndefined();
    expect(outcome.summary).toEqual({ type: 'file', size: 4 << 20 });
    expect(result).toEqual({ restoredTarget: `path:${dest}` });
    const [a, b] = [await fingerprint(path), await fingerprint(dest)];
    expect(b).toEqual(a.map((i) => ({ ...i })));
    expect(await leftovers(base)).toEqual([]);
  });

  it('replaces a tree in place', async () => {
    // Arrange
    const dir = join(base, 'inplace');
    await fs.mkdir(dir);
    await fs.writeFile(join(dir, 'kept.txt'), 'version 1\n');
    await fs.writeFile(join(dir, 'removed-later.txt'), 'only in version 1\n');
    await fs.writeFile(join(dir, 'noise.bin'), randomBytes(2 << 20));
    await setTimes(dir);
    const v1 = await fingerprint(dir);
    const point = makeMemoryPoint();
    const outcome = await driver.backup(dir, point.sink, makeContext());
    await fs.writeFile(join(dir, 'kept.txt'), 'version 2\n');
    await fs.rm(join(dir, 'removed-later.txt'));
    await fs.mkdir(join(dir, 'added-later'));

    // Act
    const result = await driver.restore(
      outcome.metadata,
      point.source(),
      { name: dir, inPlace: true },
      makeContext(),
    );

    // Assert
    expect(result).toEqual({ restoredTarget: `path:${dir}` });
    expect(await fingerprint(dir)).toEqual(v1);
    expect(await leftovers(base)).toEqual([]);
  });

  it('replaces a file in place atomically', async () => {
    // Arrange
    const path = join(base, 'config.ini');
    await fs.writeFile(path, 'good=1\n');
    await fs.chmod(path, 0o600);
    const point = makeMemoryPoint();
    const outcome = await driver.backup(path, point.sink, makeContext());
    const before = await fingerprint(path);
    await fs.writeFile(path, 'broken=1\nand longer\n');
    await fs.chmod(path, 0o644);

    // Act
    await driver.restore(
      outcome.metadata,
      point.source(),
      { name: path, inPlace: true },
      makeContext(),
    );

    // Assert
    expect(await fingerprint(path)).toEqual(before);
    expect(await leftovers(base)).toEqual([]);
  });

  it('refuses archives whose entries escape the destination and writes nothing outside it', async () => {
    // Arrange
    const outside = join(base, 'outside');
    await fs.mkdir(outside);
    const attacks = {
      dotdot: await makeTarPoint((p) => {
        p.entry({ name: 'ok.txt' }, 'fine\n');
        p.entry({ name: '../escape' }, 'escaped\n');
      }),
      absolute: await makeTarPoint((p) => {
        p.entry({ name: `${outside}/absolute` }, 'escaped\n');
      }),
      symlinkThenFile: await makeTarPoint((p) => {
        p.entry({ name: 'link', type: 'symlink', linkname: outside });
        p.entry({ name: 'link/pwned' }, 'escaped\n');
      }),
      symlinkedDirThenFile: await makeTarPoint((p) => {
        p.entry({ name: 'sub/', type: 'directory' });
        p.entry({ name: 'sub/link', type: 'symlink', linkname: '../../outside' });
        p.entry({ name: 'sub/link/deeper/pwned' }, 'escaped\n');
      }),
      symlinkThenSameName: await makeTarPoint((p) => {
        p.entry({ name: 'target', type: 'symlink', linkname: `${outside}/overwritten` });
        p.entry({ name: 'target' }, 'escaped\n');
      }),
      hardLinkOutside: await makeTarPoint((p) => {
        p.entry({ name: 'passwd', type: 'link', linkname: '../../../etc/passwd' });
      }),
    };

    // Act + Assert
    for (const [attack, { metadata, source }] of Object.entries(attacks)) {
      const dest = join(base, `evil-${attack}`);
      await expect(
        driver.restore(metadata, source, { name: dest, inPlace: false }, makeContext()),
        attack,
      ).rejects.toMatchObject({
        name: 'DriverError',
        message: expect.stringContaining('refusing'),
      });
      expect(await driver.exists(dest), attack).toBe(false);
    }
    expect(await fs.readdir(outside)).toEqual([]);
    expect(await driver.exists(join(base, 'escape'))).toBe(false);
    expect(await leftovers(base)).toEqual([]);
  });

  it('refuses a truncated archive as damaged and leaves nothing at the destination', async () => {
    // Arrange
    const dir = join(base, 'to-truncate');
    await fs.mkdir(dir);
    await fs.writeFile(join(dir, 'data.bin'), randomBytes(1 << 20));
    const point = makeMemoryPoint();
    const outcome = await driver.backup(dir, point.sink, makeContext());
    point.bytes.set('tree', point.bytes.get('tree')!.subarray(0, 300_000));
    const dest = join(base, 'truncated-restored');

    // Act
    const attempt = driver.restore(
      outcome.metadata,
      point.source(),
      { name: dest, inPlace: false },
      makeContext(),
    );

    // Assert
    await expect(attempt).rejects.toMatchObject({
      name: 'DriverError',
      message: expect.stringContaining('not a well-formed tar'),
    });
    expect(await driver.exists(dest)).toBe(false);
    expect(await leftovers(base)).toEqual([]);
  });

  it('refuses relative names and names with .. segments with DriverError asking for an absolute path', async () => {
    for (const name of ['srv/images', './disk.img', `${base}/../etc`]) {
      await expect(
        driver.backup(name, makeMemoryPoint().sink, makeContext()),
      ).rejects.toMatchObject({
        name: 'DriverError',
        message: expect.stringContaining('absolute path'),
      });
    }
    const point = makeMemoryPoint();
    const file = join(base, 'for-relative.txt');
    await fs.writeFile(file, 'x');
    const outcome = await driver.backup(file, point.sink, makeContext());
    await expect(
      driver.restore(
        outcome.metadata,
        point.source(),
        { name: 'restored.txt', inPlace: false },
        makeContext(),
      ),
    ).rejects.toMatchObject({
      name: 'DriverError',
      message: expect.stringContaining('absolute path'),
    });
  });

  it('archives a file that shrinks while being read at its opening size, padded, with a warning', async () => {
    // Arrange
    const dir = join(base, 'shrinking');
    await fs.mkdir(dir);
    const size = 16 << 20;
    await fs.writeFile(join(dir, 'a-log.bin'), Buffer.alloc(size, 1));
    await fs.writeFile(join(dir, 'b-after.txt'), 'after\n');
    let truncated = false;
    const point = makeMemoryPoint({
      onChunk: () => {
        if (truncated) return;
        truncated = true;
        execFileSync('truncate', ['-s', '1M', join(dir, 'a-log.bin')]);
      },
    });

    // Act
    const outcome = await driver.backup(dir, point.sink, makeContext());

    // Assert: a well-formed tar, the file at its header size, the next entry intact.
    const entries: Array<{ name: string; size: number; ones: number }> = [];
    const extract = tar.extract();
    const reading = (async () => {
      for await (const entry of extract) {
        let ones = 0;
        let length = 0;
        for await (const chunk of entry) {
          const buffer = chunk as Buffer;
          length += buffer.length;
          for (const byte of buffer) if (byte === 1) ones++;
        }
        entries.push({ name: entry.header.name, size: length, ones });
      }
    })();
    extract.end(point.bytes.get('tree'));
    await reading;
    expect(entries.map((e) => [e.name, e.size])).toEqual([
      ['a-log.bin', size],
      ['b-after.txt', 6],
    ]);
    expect(entries[0]!.ones).toBeLessThan(size);
    expect(outcome.metadata.warnings).toEqual([
      expect.stringMatching(
        /^a-log\.bin: shrank from 16777216 to \d+ bytes while being read; padded/,
      ),
    ]);
  });

  it('backs up a block device to its end and writes it back over a device or out as an image file', async () => {
    // Arrange: a regular file standing in for /dev/vdb, read and written through the device code.
    const device = join(base, 'vdb');
    const content = Buffer.concat([randomBytes(1 << 20), Buffer.alloc(3 << 20), randomBytes(4096)]);
    await fs.writeFile(device, content);
    const point = makeMemoryPoint();
    const ctx = makeContext();
    const stored = await backupBytes(device, 'block-device', point.sink, ctx, new Warnings());
    const meta: PathBackupMetadata = {
      format: 'stowage.path/1',
      path: '/dev/vdb',
      type: 'block-device',
      size: stored.size,
      mode: 0o660,
      uid: 0,
      gid: 6,
      mtime: new Date(Date.UTC(2024, 0, 1)).toISOString(),
    };
    const bigger = join(base, 'vdc');
    await fs.writeFile(bigger, Buffer.alloc(content.length + 8192, 0xee));
    const smaller = join(base, 'vdd');
    await fs.writeFile(smaller, Buffer.alloc(content.length - 1));
    const image = join(base, 'vdb.img');

    // Act
    await restoreOntoDevice(meta, point.source(), bigger, await fs.stat(bigger), makeContext());
    const tooSmall = await restoreOntoDevice(
      meta,
      point.source(),
      smaller,
      await fs.stat(smaller),
      makeContext(),
    ).catch((err: unknown) => err);
    const asImage = await driver.restore(
      meta as unknown as Record<string, unknown>,
      point.source(),
      { name: image, inPlace: false },
      makeContext(),
    );

    // Assert
    expect(point.stored.map((s) => [s.name, s.kind, s.size])).toEqual([
      ['device', 'block-device', content.length],
    ]);
    const written = await fs.readFile(bigger);
    expect(written.subarray(0, content.length).equals(content)).toBe(true);
    // A device is overwritten, not truncated: what lies past the point's size stays.
    expect(written.subarray(content.length).equals(Buffer.alloc(8192, 0xee))).toBe(true);
    expect(tooSmall).toMatchObject({
      name: 'DriverError',
      message: expect.stringContaining('new file path to get an image'),
    });
    expect(asImage).toEqual({ restoredTarget: `path:${image}` });
    expect((await fs.readFile(image)).equals(content)).toBe(true);
    expect(((await fs.stat(image)).mode & 0o7777).toString(8)).toBe('660');
    expect(await leftovers(base)).toEqual([]);
  });

  it('lists only the configured roots, with their kind and size', async () => {
    // Arrange
    const file = join(base, 'listed.bin');
    await fs.writeFile(file, Buffer.alloc(1234));
    const missing = join(base, 'listed-missing');
    const configured = createPathDriver({ roots: [file, base, missing] });

    // Act
    const targets = await configured.listTargets();

    // Assert
    expect(await driver.listTargets()).toEqual([]);
    expect(targets).toEqual([
      {
        target: `path:${file}`,
        platform: 'path',
        name: file,
        state: 'file',
        details: { size: '1234' },
      },
      { target: `path:${base}`, platform: 'path', name: base, state: 'directory', details: {} },
      { target: `path:${missing}`, platform: 'path', name: missing, state: 'missing', details: {} },
    ]);
    expect(await configured.exists(file)).toBe(true);
    expect(await configured.exists(missing)).toBe(false);
    expect(() => createPathDriver({ roots: ['relative/root'] })).toThrow(/absolute path/);
  });
});
