/**
 * LXD instances and custom volumes as tree streams, against the real LXD and its `dir` pool,
 * through the agent's runner and a directory store: the instance's directory (and its
 * snapshot's) is read in the pool's directory on the host (the point records `read: 'host'`),
 * an incremental after a few files changed reads exactly those bytes (recorded per stream; the
 * snapshot's stream reads nothing), and both points restore byte-identical (owners as LXD keeps
 * them on disk, shifted for an unprivileged container, modes, hard links, sparse files, mtimes)
 * into new instances whose idmap keys say the files are already shifted, so the restored
 * instance starts with the same ids on disk. The same for a custom volume with a snapshot. An
 * agent without host access backs up through LXD's export and restores a tree point through LXD's
 * import (the point's trees as LXD's own export), as an agent with host access does into a btrfs pool.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setAttributeSync } from '@napi-rs/xattr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryParentRegistry } from '../../agents/core/parents';
import { readManifest } from '../../agents/core/points';
import { runBackup, runRestore, type RunnerDeps } from '../../agents/core/runner';
import { createLxdDriver, createLxdVolumeDriver } from '../../agents/drivers/lxd';
import { Repository } from '../../agents/repo/repository';
import { silentLogger } from '../../kernel/logger';
import type { BackupResult, RestoreTask } from '../../statemachines/contracts';
import { LXD_SOCKET, launchInstance, lxd, removeInstance, sh } from '../fixtures/lxd';
import { describeTree, makeTree } from '../fixtures/tree';
import { dirRepository, makeRun } from '../fixtures/runner';

const RUN = `st-lt-${randomBytes(3).toString('hex')}`;
const INSTANCE = `${RUN}-c1`;
const VOLUME = `${RUN}-vol`;
const BTRFS_POOL = `${RUN}-bt`;
const POOL_DIR = '/var/lib/lxd/storage-pools/default';
const IDMAP = 'volatile.last_state.idmap';
/** A VFS_CAP_REVISION_2 capability, effective, permitting CAP_NET_RAW (bit 13). */
const CAP_NET_RAW_EP = Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

const instanceDir = (name: string) => join(POOL_DIR, 'containers', name);
const instanceSnapshotDir = (name: string, snap: string) =>
  join(POOL_DIR, 'containers-snapshots', name, snap);
const volumeDir = (name: string) => join(POOL_DIR, 'custom', `default_${name}`);
const volumeSnapshotDir = (name: string, snap: string) =>
  join(POOL_DIR, 'custom-snapshots', `default_${name}`, snap);

interface TreeStat {
  stream: string;
  bytesRead: number;
  filesRead: number;
  filesReused: number;
}

/** Shifts every owner under `dir` into the container's range, as LXD keeps an unprivileged one. */
async function shiftOwners(dir: string, base: number): Promise<void> {
  const walk = async (path: string) => {
    const st = await fs.lstat(path);
    await fs.lchown(path, base + (st.uid % 100_000), base + (st.gid % 100_000));
    if (st.isDirectory()) for (const n of await fs.readdir(path)) await walk(join(path, n));
  };
  await walk(dir);
}

async function config(name: string): Promise<Record<string, string>> {
  return (await lxd.get<{ config: Record<string, string> }>(`/1.0/instances/${name}`)).config;
}

describe('lxd instances and custom volumes as tree streams', () => {
  let dir: string;
  let repo: Repository;
  let deps: RunnerDeps;
  let seq = 0;

  const backup = (target: string, on = deps): Promise<BackupResult> =>
    runBackup(
      on,
      {
        kind: 'BACKUP',
        jobId: `job-${++seq}`,
        itemIndex: 0,
        recoveryPointId: `rp-${String(seq).padStart(4, '0')}`,
        target,
        options: {},
      },
      makeRun(),
    );
  const restore = (
    point: string,
    source: string,
    target: string,
    on = deps,
    options: RestoreTask['options'] = {},
  ) => {
    const task: RestoreTask = {
      kind: 'RESTORE',
      jobId: `job-${++seq}`,
      recoveryPointId: point,
      source,
      target,
      inPlace: false,
      options,
    };
    return runRestore(on, task, makeRun());
  };
  const trees = async (point: string): Promise<TreeStat[]> =>
    (await readManifest(repo, point)).metadata.trees as TreeStat[];

  beforeAll(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'stowage-ltree-'));
    await launchInstance(INSTANCE);
    // Files made inside (owners shifted by LXD) and a tree of every kind made on the host.
    await sh(INSTANCE, 'mkdir -p /srv/app && echo hi > /srv/app/hello && chown -R 1000:1000 /srv');
    const data = join(instanceDir(INSTANCE), 'rootfs/data');
    await fs.mkdir(data);
    await makeTree(data, 0.5);
    await shiftOwners(data, 100_000);
    // A binary with a file capability (cap_net_raw+ep, as ping has in images) and a user xattr.
    const bin = join(data, 'pingish');
    await fs.writeFile(bin, randomBytes(1000), { mode: 0o755 });
    await fs.chown(bin, 100_000, 100_000);
    setAttributeSync(bin, 'security.capability', CAP_NET_RAW_EP);
    setAttributeSync(bin, 'user.origin', 'lxd-tree test');
    await lxd.run('POST', `/1.0/instances/${INSTANCE}/snapshots`, { name: 'snap0' });

    await lxd.run('POST', '/1.0/storage-pools/default/volumes/custom', {
      name: VOLUME,
      config: {},
    });
    await makeTree(volumeDir(VOLUME), 0.25);
    await lxd.run('POST', `/1.0/storage-pools/default/volumes/custom/${VOLUME}/snapshots`, {
      name: 'v0',
    });
    await fs.writeFile(join(volumeDir(VOLUME), 'after-snapshot'), randomBytes(5000));

    repo = await dirRepository(dir);
    deps = {
      agent: 'local',
      drivers: new Map([
        ['lxd', createLxdDriver({ socketPath: LXD_SOCKET })],
        ['lxd-volume', createLxdVolumeDriver({ socketPath: LXD_SOCKET })],
      ]),
      repository: async () => repo,
      log: silentLogger,
      parents: new MemoryParentRegistry(),
    };
  }, 120_000);

  afterAll(async () => {
    await repo?.close();
    const instances = await lxd.get<string[]>('/1.0/instances');
    for (const url of instances) {
      const name = decodeURIComponent(url.split('/').pop() ?? '');
      if (name.startsWith(RUN)) await removeInstance(name);
    }
    const volumes = await lxd.get<string[]>('/1.0/storage-pools/default/volumes/custom');
    for (const url of volumes) {
      const name = decodeURIComponent(url.split('/').pop() ?? '');
      if (!name.startsWith(RUN)) continue;
      const path = `/1.0/storage-pools/default/volumes/custom/${name}`;
      for (const snap of await lxd.get<string[]>(`${path}/snapshots`).catch(() => [])) {
        await lxd.run('DELETE', snap.replace(/\?.*$/, '')).catch(() => undefined);
      }
      await lxd.run('DELETE', path).catch(() => undefined);
    }
    await lxd.run('DELETE', `/1.0/storage-pools/${BTRFS_POOL}`).catch(() => undefined);
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  }, 120_000);

  it('reads an instance in its pool directory, then only the changed files, and restores both points identically', async () => {
    const source = join(instanceDir(INSTANCE), 'rootfs');
    const first = await backup(`lxd:${INSTANCE}`);
    const manifest = await readManifest(repo, first.recoveryPointId);
    expect(manifest.metadata.read).toBe('host');
    expect(first.streams.map((s) => `${s.name} ${s.kind}`)).toEqual([
      'snapshot/snap0 tree',
      'snapshot/snap0.index tree-index',
      'tree tree',
      'tree.index tree-index',
    ]);
    const want1 = await describeTree(source);
    const wantSnap = await describeTree(join(instanceSnapshotDir(INSTANCE, 'snap0'), 'rootfs'));
    expect(want1['srv/app/hello']).toMatchObject({ uid: 101_000, gid: 101_000 });
    expect(Object.keys((want1['data/pingish'] as { xattrs: object }).xattrs)).toEqual([
      'security.capability',
      'user.origin',
    ]);

    const changed = [randomBytes(200_000), randomBytes(1_500_000), randomBytes(33)];
    await fs.writeFile(join(source, 'data/a/f9'), changed[0]!);
    await fs.writeFile(join(source, 'data/a/b/f10'), changed[1]!);
    await sh(INSTANCE, `head -c 33 /dev/urandom > /srv/app/new && chown 1000:1000 /srv/app/new`);
    const second = await backup(`lxd:${INSTANCE}`);
    const read2 = await trees(second.recoveryPointId);
    expect(read2.find((t) => t.stream === 'snapshot/snap0')).toMatchObject({
      bytesRead: 0,
      filesRead: 0,
    });
    expect(read2.find((t) => t.stream === 'tree')).toMatchObject({
      bytesRead: changed.reduce((n, b) => n + b.length, 0),
      filesRead: 3,
    });
    expect(second.bytesRead).toBe(changed.reduce((n, b) => n + b.length, 0));
    const want2 = await describeTree(source);

    await restore(first.recoveryPointId, `lxd:${INSTANCE}`, `lxd:${RUN}-r1`);
    // It runs (as the original did), with the same ids on disk: LXD did not shift them again.
    expect((await lxd.get<{ status: string }>(`/1.0/instances/${RUN}-r1`)).status).toBe('Running');
    expect((await config(`${RUN}-r1`))[IDMAP]).toBe((await config(INSTANCE))[IDMAP]);
    expect(await describeTree(join(instanceDir(`${RUN}-r1`), 'rootfs'))).toEqual(want1);
    expect(await describeTree(join(instanceSnapshotDir(`${RUN}-r1`, 'snap0'), 'rootfs'))).toEqual(
      wantSnap,
    );
    expect(await sh(`${RUN}-r1`, 'stat -c "%u:%g" /srv/app/hello')).toBe('1000:1000\n');

    await restore(second.recoveryPointId, `lxd:${INSTANCE}`, `lxd:${RUN}-r2`);
    expect(await describeTree(join(instanceDir(`${RUN}-r2`), 'rootfs'))).toEqual(want2);
  }, 300_000);

  it('reads a custom volume and its snapshot in the pool directory and restores them identically', async () => {
    const first = await backup(`lxd-volume:default/${VOLUME}`);
    expect((await readManifest(repo, first.recoveryPointId)).metadata.read).toBe('host');
    const want = await describeTree(volumeDir(VOLUME));
    const wantSnap = await describeTree(volumeSnapshotDir(VOLUME, 'v0'));
    const changed = randomBytes(300_000);
    await fs.writeFile(join(volumeDir(VOLUME), 'a/f3'), changed);
    const second = await backup(`lxd-volume:default/${VOLUME}`);
    expect(second.bytesRead).toBe(changed.length);

    await restore(
      first.recoveryPointId,
      `lxd-volume:default/${VOLUME}`,
      `lxd-volume:default/${RUN}-v1`,
    );
    expect(await describeTree(volumeDir(`${RUN}-v1`))).toEqual(want);
    expect(await describeTree(volumeSnapshotDir(`${RUN}-v1`, 'v0'))).toEqual(wantSnap);

    // An agent without host access: through LXD's import of the trees as its own export.
    const apiDeps: RunnerDeps = {
      ...deps,
      drivers: new Map([
        ['lxd-volume', createLxdVolumeDriver({ socketPath: LXD_SOCKET, hostAccess: false })],
      ]),
    };
    await restore(
      first.recoveryPointId,
      `lxd-volume:default/${VOLUME}`,
      `lxd-volume:default/${RUN}-v2`,
      apiDeps,
    );
    const asTar = { seconds: true, dense: true };
    expect(await describeTree(volumeDir(`${RUN}-v2`), asTar)).toEqual(
      await describeTree(volumeDir(`${RUN}-v1`), asTar),
    );
    expect(await describeTree(volumeSnapshotDir(`${RUN}-v2`, 'v0'), asTar)).toEqual(
      await describeTree(volumeSnapshotDir(`${RUN}-v1`, 'v0'), asTar),
    );
  }, 300_000);

  it("backs up through the export without host access, and restores a tree point there through LXD's import", async () => {
    const apiDeps: RunnerDeps = {
      ...deps,
      drivers: new Map([['lxd', createLxdDriver({ socketPath: LXD_SOCKET, hostAccess: false })]]),
      parents: new MemoryParentRegistry(),
    };
    const viaApi = await backup(`lxd:${INSTANCE}`, apiDeps);
    expect(viaApi.streams.map((s) => s.kind)).toEqual(['lxd-backup-tar']);
    expect((await readManifest(repo, viaApi.recoveryPointId)).metadata.read).toBe('engine-api');

    const tree = (await backup(`lxd:${INSTANCE}`)).recoveryPointId;
    // A tar keeps mtimes to the second and writes a sparse file's holes as zeros.
    const asTar = { seconds: true, dense: true };
    const want = await describeTree(join(instanceDir(INSTANCE), 'rootfs'), asTar);
    const wantSnap = await describeTree(
      join(instanceSnapshotDir(INSTANCE, 'snap0'), 'rootfs'),
      asTar,
    );
    await restore(tree, `lxd:${INSTANCE}`, `lxd:${RUN}-imported`, apiDeps);
    const got = `${RUN}-imported`;
    expect((await lxd.get<{ status: string }>(`/1.0/instances/${got}`)).status).toBe('Running');
    // The same ids on disk as the original's, and LXD did not shift them again.
    expect((await config(got))[IDMAP]).toBe((await config(INSTANCE))[IDMAP]);
    // File capabilities and user xattrs included (PAX records LXD's unpack applies).
    expect(await describeTree(join(instanceDir(got), 'rootfs'), asTar)).toEqual(want);
    expect(await describeTree(join(instanceSnapshotDir(got, 'snap0'), 'rootfs'), asTar)).toEqual(
      wantSnap,
    );
    expect(await sh(got, 'stat -c "%u:%g" /srv/app/hello')).toBe('1000:1000\n');

    // Into a pool of another driver (btrfs, a loop file LXD makes), with host access: the same.
    await lxd.run('POST', '/1.0/storage-pools', {
      name: BTRFS_POOL,
      driver: 'btrfs',
      config: { size: '1GiB' },
    });
    const onBtrfs = `${RUN}-btrfs`;
    await restore(tree, `lxd:${INSTANCE}`, `lxd:${onBtrfs}`, deps, { pool: BTRFS_POOL });
    const btrfsDir = join('/var/lib/lxd/storage-pools', BTRFS_POOL);
    expect(await describeTree(join(btrfsDir, 'containers', onBtrfs, 'rootfs'), asTar)).toEqual(
      want,
    );
    expect(
      await describeTree(join(btrfsDir, 'containers-snapshots', onBtrfs, 'snap0', 'rootfs'), asTar),
    ).toEqual(wantSnap);
    expect((await lxd.get<{ status: string }>(`/1.0/instances/${onBtrfs}`)).status).toBe('Running');
  }, 300_000);
});
