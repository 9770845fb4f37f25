/**
 * Tree streams (agents/core/tree) through the agent's runner and the path driver, on the real
 * file system and a directory store: a tree with every kind of entry comes back identical
 * (modes, owners, times, symlinks, hard links, a sparse file, a FIFO); an incremental reads only
 * the files that changed (bytes read as the job reports them) and still restores identically;
 * `fullRead` reads everything; a file-level restore reads only that file's chunks.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { getAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryParentRegistry } from '../../agents/core/parents';
import { PointReader, readManifest } from '../../agents/core/points';
import { runBackup, runRestore, type RunnerDeps } from '../../agents/core/runner';
import { createPathDriver } from '../../agents/drivers/path';
import { Repository } from '../../agents/repo/repository';
import { describeTree, makeTree } from '../fixtures/tree';
import { silentLogger } from '../../kernel/logger';
import type { BackupResult, BackupTask, RestoreTask } from '../../statemachines/contracts';
import { dirRepository, makeRun } from '../fixtures/runner';

describe('tree streams through the runner and the path driver', () => {
  let dir: string;
  let repo: Repository;
  let deps: RunnerDeps;
  let src: string;
  let total: number;
  let seq = 0;

  const backup = async (options: BackupTask['options'] = {}): Promise<BackupResult> => {
    const task: BackupTask = {
      kind: 'BACKUP',
      jobId: `job-${++seq}`,
      itemIndex: 0,
      recoveryPointId: `rp-${String(seq).padStart(4, '0')}`,
      target: `path:${src}`,
      options,
    };
    return runBackup(deps, task, makeRun());
  };
  const restore = async (point: string, dest: string) => {
    const task: RestoreTask = {
      kind: 'RESTORE',
      jobId: `job-${++seq}`,
      recoveryPointId: point,
      source: `path:${src}`,
      target: `path:${dest}`,
      inPlace: false,
      options: {},
    };
    await runRestore(deps, task, makeRun());
  };

  beforeAll(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'stowage-tree-'));
    src = join(dir, 'src');
    await fs.mkdir(src);
    total = await makeTree(src);
    repo = await dirRepository(dir);
    deps = {
      agent: 'local',
      drivers: new Map([['path', createPathDriver()]]),
      repository: async () => repo,
      log: silentLogger,
      parents: new MemoryParentRegistry(),
    };
  });

  afterAll(async () => {
    await repo?.close();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('restores a tree with every kind of entry identically, and an incremental reads only what changed', async () => {
    const first = await backup();
    expect(first.bytesRead).toBe(total);
    expect(first.streams.map((s) => s.kind)).toEqual(['tree', 'tree-index']);
    const want1 = await describeTree(src);
    await restore(first.recoveryPointId, join(dir, 'r1'));
    expect(await describeTree(join(dir, 'r1'))).toEqual(want1);

    // A few files change: two rewritten, one added, one removed, one only touched.
    const changed = [randomBytes(100_000), randomBytes(1_234_567), randomBytes(10)];
    await fs.writeFile(join(src, 'a/f9'), changed[0]!);
    await fs.writeFile(join(src, 'a/b/f10'), changed[1]!);
    await fs.writeFile(join(src, 'a/b/c/new'), changed[2]!);
    await fs.rm(join(src, 'a/f11'));
    const touched = (await fs.stat(join(src, 'a/f13'))).size;
    await fs.utimes(join(src, 'a/f13'), new Date(), new Date());
    const second = await backup();
    expect(second.bytesRead).toBe(changed.reduce((n, b) => n + b.length, 0) + touched);
    const want2 = await describeTree(src);
    await restore(second.recoveryPointId, join(dir, 'r2'));
    expect(await describeTree(join(dir, 'r2'))).toEqual(want2);

    const manifest = await readManifest(repo, second.recoveryPointId);
    expect(manifest.metadata).toMatchObject({ filesReused: expect.any(Number), filesRead: 4 });

    const full = await backup({ fullRead: true });
    const size = Object.values(want2)
      .map((f) => f as { type: string; size?: number })
      .reduce((n, f) => n + (f.type === 'file' ? (f.size ?? 0) : 0), 0);
    expect(full.bytesRead).toBe(size - (want2['hard-f1'] as { size: number }).size);
  });

  it('restores single files reading only their chunks', async () => {
    const point = (await backup()).recoveryPointId;
    const manifest = await readManifest(repo, point);
    let read = 0;
    const reader = new PointReader(repo, manifest, (n) => (read += n));
    const dest = join(dir, 'files');
    await fs.mkdir(dest);
    const ctx = {
      log: silentLogger,
      signal: new AbortController().signal,
      phase: () => undefined,
    };
    const result = await reader.restoreTree('tree', dest, ctx, { paths: ['a/b/f10', 'empty'] });
    expect(result.files).toBe(1);
    expect(read).toBe(1_234_567);
    const got = await describeTree(dest);
    const want = await describeTree(src);
    expect(Object.keys(got).sort()).toEqual(['a', 'a/b', 'a/b/f10', 'empty', 'empty/link']);
    for (const key of Object.keys(got)) expect(got[key]).toEqual(want[key]);
  });

  /** A restore task of `point` with `options` (a listing, or files to a directory). */
  const restoreTask =
    (point: string) =>
    (options: RestoreTask['options']): RestoreTask => ({
      kind: 'RESTORE',
      jobId: `job-${++seq}`,
      recoveryPointId: point,
      source: `path:${src}`,
      target: `path:${src}`,
      inPlace: false,
      options,
    });

  it('lists a directory of a point and restores files to a directory through restore tasks', async () => {
    const task = restoreTask((await backup()).recoveryPointId);
    const listed = await runRestore(deps, task({ list: 'a/b' }), makeRun());
    expect(listed.listing?.entries.map((e) => `${e.type} ${e.path}`)).toEqual([
      'dir a/b/c',
      'file a/b/f0',
      'file a/b/f10',
      ...['f12', 'f14', 'f16', 'f18', 'f2', 'f20', 'f22', 'f24'].map((f) => `file a/b/${f}`),
      ...['f26', 'f28', 'f30', 'f32', 'f34', 'f36', 'f38', 'f4', 'f6', 'f8'].map(
        (f) => `file a/b/${f}`,
      ),
    ]);
    expect(listed.listing?.entries[0]).toMatchObject({ mode: 0o755 });
    const one = await runRestore(deps, task({ list: 'a/b/f10' }), makeRun());
    expect(one.listing?.entries).toEqual([
      expect.objectContaining({ path: 'a/b/f10', type: 'file', size: 1_234_567 }),
    ]);
    await expect(runRestore(deps, task({ list: 'nope' }), makeRun())).rejects.toThrow(
      'is not in the recovery point',
    );

    const dest = join(dir, 'picked');
    const run = makeRun();
    const restored = await runRestore(
      deps,
      task({ files: ['a/b/c/big.bin', 'sparse.img'], dest }),
      run,
    );
    expect(restored).toMatchObject({ restoredTarget: `path:${dest}`, files: 2 });
    // Only the two files' chunks: the sparse one's zero chunks are not fetched but count.
    expect(run.progress.total).toBe(3 * 1024 * 1024 + 64 * 1024 * 1024);
    const want = await describeTree(src);
    const got = await describeTree(dest);
    expect(Object.keys(got).sort()).toEqual(['a', 'a/b', 'a/b/c', 'a/b/c/big.bin', 'sparse.img']);
    for (const key of Object.keys(got)) expect(got[key]).toEqual(want[key]);
    // Nothing is overwritten.
    await expect(
      runRestore(deps, task({ files: ['sparse.img'], dest }), makeRun()),
    ).rejects.toThrow('EEXIST');
  });

  it('writes picked files only inside the trees the agent serves (--paths), symlinks resolved', async () => {
    const task = restoreTask((await backup()).recoveryPointId);
    const allowed = join(dir, 'served');
    const outside = join(dir, 'elsewhere');
    await fs.mkdir(allowed);
    await fs.mkdir(outside);
    // A link inside the served tree that leads out of it.
    await fs.symlink(outside, join(allowed, 'escape'));
    const served: RunnerDeps = { ...deps, paths: [allowed] };
    const pick = (dest: string) =>
      runRestore(served, task({ files: ['a/b/f10'], dest }), makeRun());
    await expect(pick(join(outside, 'x'))).rejects.toThrow('outside the paths this agent serves');
    await expect(pick(join(allowed, 'escape', 'x'))).rejects.toThrow(`which leads to ${outside}/x`);
    await expect(pick(`${allowed}/../elsewhere/y`)).rejects.toThrow('without . or .. parts');
    expect(await fs.readdir(outside)).toEqual([]);
    await expect(pick(join(allowed, 'ok'))).resolves.toMatchObject({ files: 1 });
    expect(await fs.readdir(join(allowed, 'ok', 'a', 'b'))).toEqual(['f10']);
  });
  it('gathers small files into shared chunks, takes them again when unchanged, and restores one alone', async () => {
    const root = join(dir, 'small');
    const files: string[] = [];
    for (let i = 0; i < 600; i++) {
      const d = join(root, `d${i % 7}`);
      await fs.mkdir(d, { recursive: true });
      const name = join(`d${i % 7}`, `s${i}`);
      await fs.writeFile(join(root, name), randomBytes(1 + ((i * 997) % 5000)));
      if (i % 50 === 0) await fs.writeFile(join(root, `d${i % 7}`, `empty${i}`), '');
      files.push(name);
    }
    const target = `path:${root}`;
    const small = (options: BackupTask['options'] = {}) =>
      runBackup(
        deps,
        {
          kind: 'BACKUP',
          jobId: `job-${++seq}`,
          itemIndex: 0,
          recoveryPointId: `rp-${String(seq).padStart(4, '0')}`,
          target,
          options,
        },
        makeRun(),
      );
    const restoreAll = async (point: string, dest: string) => {
      const task: RestoreTask = {
        kind: 'RESTORE',
        jobId: `job-${++seq}`,
        recoveryPointId: point,
        source: target,
        target: `path:${dest}`,
        inPlace: false,
        options: {},
      };
      await runRestore(deps, task, makeRun());
      return describeTree(dest);
    };
    const first = await small();
    const size = (await Promise.all(files.map((f) => fs.stat(join(root, f))))).reduce(
      (n, st) => n + st.size,
      0,
    );
    expect(first.bytesRead).toBe(size);
    // Far fewer chunks than files: they share chunks.
    const data = (await readManifest(repo, first.recoveryPointId)).streams[0]!;
    expect(data.chunks.length).toBeLessThan(10);
    expect(await restoreAll(first.recoveryPointId, join(dir, 'small-r1'))).toEqual(
      await describeTree(root),
    );

    // Nothing changed: every shared chunk is taken again, nothing is read.
    const same = await small();
    expect(same.bytesRead).toBe(0);

    // One small file rewritten: it and the files sharing its chunk are read, no more.
    const changed = join(root, files[300]!);
    await fs.writeFile(changed, randomBytes(777));
    const second = await small();
    expect(second.bytesRead).toBeGreaterThanOrEqual(777);
    expect(second.bytesRead).toBeLessThan(size / 2);
    expect(await restoreAll(second.recoveryPointId, join(dir, 'small-r2'))).toEqual(
      await describeTree(root),
    );

    // A file in the middle of a shared chunk, restored alone, reads only that chunk.
    const manifest = await readManifest(repo, second.recoveryPointId);
    let read = 0;
    const reader = new PointReader(repo, manifest, (n) => (read += n));
    const dest = join(dir, 'small-one');
    await fs.mkdir(dest);
    const pick = [files[301]!, files[450]!];
    const ctx = { log: silentLogger, signal: new AbortController().signal, phase: () => undefined };
    const result = await reader.restoreTree('tree', dest, ctx, { paths: pick });
    expect(result.files).toBe(2);
    expect(read).toBeLessThanOrEqual(2 * 1024 * 1024 + 64 * 1024);
    for (const f of pick) {
      expect(await fs.readFile(join(dest, f))).toEqual(await fs.readFile(join(root, f)));
    }
  });

  it('keeps extended attributes and POSIX ACLs (user.*, an access ACL and a default ACL)', async () => {
    const tree = join(dir, 'xattrs');
    await fs.mkdir(join(tree, 'shared'), { recursive: true });
    await fs.writeFile(join(tree, 'tagged'), 'x');
    setAttributeSync(join(tree, 'tagged'), 'user.origin', Buffer.from([0, 1, 2, 255]));
    setAttributeSync(join(tree, 'shared'), 'user.dir', 'yes');
    // setfacl comes with Debian's acl package (local/engines/setup.sh installs it).
    execFileSync('setfacl', ['-m', 'u:1234:rw,g:5678:r', join(tree, 'tagged')]);
    execFileSync('setfacl', ['-d', '-m', 'u:1234:rwx', join(tree, 'shared')]);
    const backupTree = () =>
      runBackup(
        deps,
        {
          kind: 'BACKUP',
          jobId: `job-${++seq}`,
          itemIndex: 0,
          recoveryPointId: `rp-${String(seq).padStart(4, '0')}`,
          target: `path:${tree}`,
          options: {},
        },
        makeRun(),
      );
    const restoreTo = (point: string, to: string) =>
      runRestore(
        deps,
        {
          kind: 'RESTORE',
          jobId: `job-${++seq}`,
          recoveryPointId: point,
          source: `path:${tree}`,
          target: `path:${to}`,
          inPlace: false,
          options: {},
        },
        makeRun(),
      );
    const point = await backupTree();
    const dest = join(dir, 'xattrs-restored');
    await restoreTo(point.recoveryPointId, dest);
    const want = await describeTree(tree);
    expect(Object.keys(want['tagged'] as object)).toContain('xattrs');
    expect(await describeTree(dest)).toEqual(want);
    // An incremental takes the unchanged file's xattrs from the last point without reading it.
    const again = await backupTree();
    expect(again.bytesRead).toBe(0);
    await restoreTo(again.recoveryPointId, join(dir, 'xattrs-again'));
    expect(await describeTree(join(dir, 'xattrs-again'))).toEqual(want);
    expect(getAttributeSync(join(dest, 'tagged'), 'user.origin')).toEqual(
      Buffer.from([0, 1, 2, 255]),
    );
    const acl = (path: string) =>
      execFileSync('getfacl', ['--omit-header', '--numeric', path], { encoding: 'utf8' });
    expect(acl(join(dest, 'tagged'))).toBe(acl(join(tree, 'tagged')));
    expect(acl(join(dest, 'tagged'))).toContain('user:1234:rw-');
    expect(acl(join(dest, 'shared'))).toContain('default:user:1234:rwx');
    expect(acl(join(dest, 'shared'))).toBe(acl(join(tree, 'shared')));

    // As the tar an engine's API takes (LXD's import unpacks it with GNU tar, dockerd with Go's
    // archive/tar): the same attributes, a binary value and the ACLs included, as PAX records.
    const reader = new PointReader(repo, await readManifest(repo, point.recoveryPointId), () => 0);
    const unpacked = join(dir, 'xattrs-tar');
    await fs.mkdir(unpacked);
    const tar = spawn(
      'tar',
      ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', '-', '-C', unpacked],
      { stdio: ['pipe', 'ignore', 'pipe'] },
    );
    let stderr = '';
    tar.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => tar.on('close', resolve));
    await pipeline(reader.treeAsTar('tree', 'vol'), tar.stdin);
    expect(await exited, stderr).toBe(0);
    expect(stderr).toBe('');
    const seconds = { seconds: true };
    expect(await describeTree(join(unpacked, 'vol'), seconds)).toEqual(
      await describeTree(tree, seconds),
    );
    expect(getAttributeSync(join(unpacked, 'vol/tagged'), 'user.origin')).toEqual(
      Buffer.from([0, 1, 2, 255]),
    );
    expect(acl(join(unpacked, 'vol/shared'))).toBe(acl(join(tree, 'shared')));
  });

  it('gives every kind of entry as a tar that GNU tar unpacks identically, long and non-ASCII names too', async () => {
    const tree = join(dir, 'tar-src');
    await fs.mkdir(tree);
    await makeTree(tree, 0.2);
    const deep = join(tree, 'd'.repeat(90), 'é'.repeat(40), 'x'.repeat(120));
    await fs.mkdir(deep, { recursive: true });
    await fs.writeFile(join(deep, 'ü-file'), randomBytes(3000));
    await fs.symlink('t'.repeat(150), join(tree, 'long-link'));
    const point = await runBackup(
      deps,
      {
        kind: 'BACKUP',
        jobId: `job-${++seq}`,
        itemIndex: 0,
        recoveryPointId: `rp-${String(seq).padStart(4, '0')}`,
        target: `path:${tree}`,
        options: {},
      },
      makeRun(),
    );
    const reader = new PointReader(repo, await readManifest(repo, point.recoveryPointId), () => 0);
    const unpacked = join(dir, 'tar-out');
    await fs.mkdir(unpacked);
    const tar = spawn('tar', ['--numeric-owner', '-xpf', '-', '-C', unpacked], {
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    let stderr = '';
    tar.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => tar.on('close', resolve));
    await pipeline(reader.treeAsTar('tree', 'vol'), tar.stdin);
    expect(await exited, stderr).toBe(0);
    // A tar keeps mtimes to the second and writes holes as zeros.
    const as = { seconds: true, dense: true };
    expect(await describeTree(join(unpacked, 'vol'), as)).toEqual(await describeTree(tree, as));
  });
});
