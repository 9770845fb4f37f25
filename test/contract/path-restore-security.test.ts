/**
 * Issue 12's path findings against the real filesystem (as root, as an agent runs): an
 * unprivileged user's point restored in place over a root-owned file, an in-place restore
 * through a directory swapped for a symlink, a path component swapped after the checks, the
 * agent's --paths, and device nodes in a hostile tree archive.
 */
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DriverContext } from '../../agents/core/driver';
import { createPathDriver } from '../../agents/drivers/path';
import { anchorDirectory } from '../../agents/drivers/path/common';
import { silentLogger } from '../../kernel/logger';
import { makeMemoryPoint } from '../fixtures/memory-point';

const NOBODY = 65534;
const driver = createPathDriver();
let base: string;

function makeContext(): DriverContext {
  return { log: silentLogger, signal: new AbortController().signal, phase: () => undefined };
}

async function backup(path: string, d = driver) {
  const point = makeMemoryPoint();
  const outcome = await d.backup(path, point.sink, makeContext());
  return { metadata: outcome.metadata, source: point.source() };
}

/** Contents and owners of every entry below `root`, for "unchanged" checks. */
async function snapshotOf(root: string): Promise<Array<[string, number, string]>> {
  const out: Array<[string, number, string]> = [];
  for (const name of (await fs.readdir(root, { recursive: true })).sort()) {
    const abs = join(root, name);
    const st = await fs.lstat(abs);
    out.push([
      name,
      st.uid,
      st.isFile() ? await fs.readFile(abs, 'utf8') : st.isDirectory() ? 'dir' : 'other',
    ]);
  }
  return out;
}

beforeAll(async () => {
  base = await fs.mkdtemp(join(tmpdir(), 'stowage-path-sec-'));
  await fs.chmod(base, 0o755);
});

afterAll(async () => {
  if (base) await fs.rm(base, { recursive: true, force: true });
});

describe('path restores and who may write where', () => {
  it("never restores an unprivileged user's point in place over a root-owned file", async () => {
    // Arrange: a user's own file, backed up; a root-owned secret beside it.
    const home = join(base, 'home-nobody');
    await fs.mkdir(home);
    await fs.chown(home, NOBODY, NOBODY);
    const mine = join(home, 'mine.txt');
    await fs.writeFile(mine, 'attacker bytes\n');
    await fs.chown(mine, NOBODY, NOBODY);
    const secret = join(base, 'root-secret');
    await fs.writeFile(secret, 'root only\n', { mode: 0o600 });
    const { metadata, source } = await backup(mine);

    // Act: the request issue 12 reproduced, `to` a root-owned file with in-place.
    const attempt = driver.restore(
      metadata,
      source,
      { name: secret, inPlace: true },
      makeContext(),
    );

    // Assert
    await expect(attempt).rejects.toMatchObject({
      name: 'DriverError',
      message: expect.stringContaining('an in-place restore goes back to'),
    });
    expect(await fs.readFile(secret, 'utf8')).toBe('root only\n');
    const st = await fs.stat(secret);
    expect([st.uid, st.mode & 0o777]).toEqual([0, 0o600]);
  });

  it('refuses an in-place restore through a directory that was replaced by a symlink to a root-owned one', async () => {
    // Arrange: a user's directory, backed up, then swapped for a symlink to root's directory.
    const rootDir = join(base, 'root-dir');
    await fs.mkdir(rootDir);
    await fs.writeFile(join(rootDir, 'config'), 'root config\n');
    const userDir = join(base, 'user-dir');
    await fs.mkdir(userDir);
    await fs.writeFile(join(userDir, 'config'), 'user config\n');
    await fs.chown(join(userDir, 'config'), NOBODY, NOBODY);
    await fs.chown(userDir, NOBODY, NOBODY);
    const dirPoint = await backup(userDir);
    const parent = join(base, 'user-parent');
    await fs.mkdir(join(parent, 'sub'), { recursive: true });
    await fs.writeFile(join(parent, 'sub', 'config'), 'user file\n');
    const filePoint = await backup(join(parent, 'sub', 'config'));
    const before = await snapshotOf(rootDir);
    await fs.rm(userDir, { recursive: true });
    await fs.symlink(rootDir, userDir);
    await fs.rm(join(parent, 'sub'), { recursive: true });
    await fs.symlink(rootDir, join(parent, 'sub'));

    // Act + Assert: the directory itself, and a file under a swapped parent.
    for (const [point, name] of [
      [dirPoint, userDir],
      [filePoint, join(parent, 'sub', 'config')],
    ] as const) {
      await expect(
        driver.restore(point.metadata, point.source, { name, inPlace: true }, makeContext()),
      ).rejects.toMatchObject({
        name: 'DriverError',
        message: expect.stringContaining(`now leads to ${rootDir}`),
      });
    }
    expect(await snapshotOf(rootDir)).toEqual(before);
  });

  it('writes through a held directory into the directory it opened after its path was swapped for a symlink', async () => {
    // Arrange
    const dir = join(base, 'held');
    const elsewhere = join(base, 'elsewhere');
    await fs.mkdir(dir);
    await fs.mkdir(elsewhere);
    const anchor = await anchorDirectory(dir);
    try {
      // Act: the path is swapped after the checks, before the write.
      await fs.rename(dir, `${dir}-moved`);
      await fs.symlink(elsewhere, dir);
      await fs.writeFile(anchor.at('written'), 'bytes\n');
    } finally {
      await anchor.close();
    }

    // Assert
    expect(await fs.readdir(elsewhere)).toEqual([]);
    expect(await fs.readFile(join(`${dir}-moved`, 'written'), 'utf8')).toBe('bytes\n');
    await expect(anchorDirectory(dir)).rejects.toMatchObject({ name: 'DriverError' });
  });

  it('backs up and restores only inside the trees of --paths, symlinks resolved', async () => {
    // Arrange
    const served = join(base, 'served');
    const outside = join(base, 'not-served');
    await fs.mkdir(served);
    await fs.mkdir(outside);
    await fs.writeFile(join(served, 'in.txt'), 'inside\n');
    await fs.writeFile(join(outside, 'out.txt'), 'outside\n');
    await fs.symlink(outside, join(served, 'link-out'));
    const limited = createPathDriver({ allowed: [served] });
    const inside = await backup(join(served, 'in.txt'), limited);

    // Act + Assert: backups
    for (const path of [
      join(outside, 'out.txt'),
      join(served, 'link-out', 'out.txt'),
      served + '-x',
    ]) {
      await expect(
        limited.backup(path, makeMemoryPoint().sink, makeContext()),
        path,
      ).rejects.toMatchObject({
        message: expect.stringMatching(/outside the paths this agent serves|does not exist/),
      });
    }
    await expect(
      limited.backup(join(served, 'link-out', 'out.txt'), makeMemoryPoint().sink, makeContext()),
    ).rejects.toThrow(
      `leads to ${join(outside, 'out.txt')}) is outside the paths this agent serves (${served})`,
    );

    // Act + Assert: restores
    for (const name of [join(outside, 'copy.txt'), join(served, 'link-out', 'copy.txt')]) {
      await expect(
        limited.restore(inside.metadata, inside.source, { name, inPlace: false }, makeContext()),
        name,
      ).rejects.toThrow(/outside the paths this agent serves/);
    }
    expect(await fs.readdir(outside)).toEqual(['out.txt']);
    await limited.restore(
      inside.metadata,
      inside.source,
      { name: join(served, 'copy.txt'), inPlace: false },
      makeContext(),
    );
    expect(await fs.readFile(join(served, 'copy.txt'), 'utf8')).toBe('inside\n');
  });

  it('skips device nodes and FIFOs of a hostile tree archive and creates none', async () => {
    // Arrange
    const pack = tar.pack();
    pack.entry({ name: 'ok.txt' }, 'fine\n');
    pack.entry({ name: 'disk', type: 'block-device', devmajor: 8, devminor: 0 });
    pack.entry({ name: 'mem', type: 'character-device', devmajor: 1, devminor: 1 });
    pack.entry({ name: 'fifo', type: 'fifo' });
    pack.finalize();
    const point = makeMemoryPoint();
    await point.sink.writeStream({ name: 'tree', kind: 'tar' }, Readable.from(pack));
    const metadata = {
      format: 'stowage.path/1',
      path: '/srv/hostile',
      type: 'directory',
      size: 0,
      mode: 0o755,
      uid: 0,
      gid: 0,
      mtime: new Date().toISOString(),
    };
    const dest = join(base, 'hostile-devices');

    // Act
    await driver.restore(metadata, point.source(), { name: dest, inPlace: false }, makeContext());

    // Assert
    expect(await fs.readdir(dest)).toEqual(['ok.txt']);
  });
});
