/**
 * Docker volumes as tree streams, against the real dockerd, through the agent's runner and a
 * directory store: the volume is read on the host (the point records `read: 'host'`), an
 * incremental after a few files changed reads only those files (bytes read as the job reports
 * them: the container's image, its writable layer unchanged, is taken from the first point, and
 * committed again once a file in it changed), and the points restore byte-identical into new volumes,
 * straight into their directories on the host; an agent without host access restores the same
 * point through dockerd's archive API (extended attributes included), and backs up through it.
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
import { createDockerDriver } from '../../agents/drivers/docker';
import { Repository } from '../../agents/repo/repository';
import { silentLogger } from '../../kernel/logger';
import type { BackupResult, RestoreTask } from '../../statemachines/contracts';
import { docker, ensureTestImage, execIn, removeByPrefix, TEST_IMAGE } from '../fixtures/docker';
import { describeTree, makeTree } from '../fixtures/tree';
import { dirRepository, makeRun } from '../fixtures/runner';

const RUN = `stowage-tt-${randomBytes(4).toString('hex')}`;
const CONTAINER = `${RUN}-app`;
/** A VFS_CAP_REVISION_2 capability, effective, permitting CAP_NET_RAW (bit 13). */
const CAP_NET_RAW_EP = Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const VOLUME = `${RUN}-data`;

async function mountpoint(volume: string): Promise<string> {
  return ((await docker.getVolume(volume).inspect()) as { Mountpoint: string }).Mountpoint;
}

describe('docker volumes as tree streams', () => {
  let dir: string;
  let repo: Repository;
  let deps: RunnerDeps;
  let seq = 0;

  const backup = (): Promise<BackupResult> =>
    runBackup(
      deps,
      {
        kind: 'BACKUP',
        jobId: `job-${++seq}`,
        itemIndex: 0,
        recoveryPointId: `rp-${String(seq).padStart(4, '0')}`,
        target: `docker:${CONTAINER}`,
        options: {},
      },
      makeRun(),
    );
  const restore = (point: string, name: string, on = deps) => {
    const task: RestoreTask = {
      kind: 'RESTORE',
      jobId: `job-${++seq}`,
      recoveryPointId: point,
      source: `docker:${CONTAINER}`,
      target: `docker:${name}`,
      inPlace: false,
      options: {},
    };
    return runRestore(on, task, makeRun());
  };
  const volumeBytesRead = (result: BackupResult) =>
    result.bytesRead - result.streams.find((s) => s.name === 'image')!.size;

  beforeAll(async () => {
    await ensureTestImage();
    dir = await fs.mkdtemp(join(tmpdir(), 'stowage-dtree-'));
    await docker.createVolume({ Name: VOLUME, Labels: { 'io.stowage.test': RUN } });
    await makeTree(await mountpoint(VOLUME), 0.5);
    // A binary with a file capability (as ping has) and a user xattr with a binary value: both
    // restores keep them, the one through dockerd's archive API as PAX records.
    const bin = join(await mountpoint(VOLUME), 'a/pingish');
    await fs.writeFile(bin, randomBytes(1000), { mode: 0o755 });
    setAttributeSync(bin, 'security.capability', CAP_NET_RAW_EP);
    setAttributeSync(bin, 'user.origin', Buffer.from([0, 1, 2, 255]));
    await docker.createContainer({
      name: CONTAINER,
      Image: TEST_IMAGE,
      Cmd: ['sleep', '100000'],
      Labels: { 'io.stowage.test': RUN },
      HostConfig: { Binds: [`${VOLUME}:/data`] },
    });
    await docker.getContainer(CONTAINER).start();
    repo = await dirRepository(dir);
    deps = {
      agent: 'local',
      drivers: new Map([['docker', createDockerDriver()]]),
      repository: async () => repo,
      log: silentLogger,
      parents: new MemoryParentRegistry(),
    };
  }, 120_000);

  afterAll(async () => {
    await repo?.close();
    await removeByPrefix(RUN);
    const volumes = (await docker.listVolumes()).Volumes ?? [];
    for (const v of volumes.filter((v) => v.Name.startsWith(RUN))) {
      await docker
        .getVolume(v.Name)
        .remove()
        .catch(() => undefined);
    }
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  }, 120_000);

  it('reads the volume on the host, then only the files that changed, and restores both points identically', async () => {
    const source = await mountpoint(VOLUME);
    const first = await backup();
    const manifest = await readManifest(repo, first.recoveryPointId);
    expect(manifest.metadata.volumes).toEqual([expect.objectContaining({ read: 'host' })]);
    expect(first.streams.map((s) => `${s.name} ${s.kind}`)).toEqual([
      'image docker-image-tar',
      `volume/${VOLUME} tree`,
      `volume/${VOLUME}.index tree-index`,
    ]);
    const want1 = await describeTree(source);

    const changed = [randomBytes(200_000), randomBytes(1_500_000), randomBytes(33)];
    await fs.writeFile(join(source, 'a/f9'), changed[0]!);
    await fs.writeFile(join(source, 'a/b/f10'), changed[1]!);
    await fs.writeFile(join(source, 'new-file'), changed[2]!);
    await fs.rm(join(source, 'a/f11'));
    const second = await backup();
    // The container's writable layer is as it was: its image stream is the first point's, not
    // committed and read again, so the bytes read are the changed files' alone.
    const manifest2 = await readManifest(repo, second.recoveryPointId);
    const imageOf = (m: typeof manifest) => m.streams.find((s) => s.name === 'image')!;
    expect(imageOf(manifest).source).toMatch(/"layer":"[0-9a-f]{64}"/);
    expect(imageOf(manifest2)).toEqual(imageOf(manifest));
    expect(manifest2.metadata).toMatchObject({
      image: manifest.metadata.image,
      imageId: manifest.metadata.imageId,
      imageFrom: first.recoveryPointId,
    });
    expect(second.bytesRead).toBe(changed.reduce((n, b) => n + b.length, 0));
    expect(second.summary.imageFrom).toBe(first.recoveryPointId);
    expect(first.summary.imageFrom).toBeUndefined();
    expect(volumeBytesRead(first)).toBeGreaterThan(60 * 1024 * 1024);
    const want2 = await describeTree(source);

    // A file written in the container's own filesystem: the next point commits it.
    const marker = randomBytes(16).toString('hex');
    await execIn(CONTAINER, ['sh', '-c', `echo ${marker} > /srv-marker`]);
    const third = await backup();
    const manifest3 = await readManifest(repo, third.recoveryPointId);
    expect(manifest3.metadata.imageFrom).toBeUndefined();
    expect(manifest3.metadata.imageId).not.toBe(manifest.metadata.imageId);
    expect(imageOf(manifest3).source).not.toBe(imageOf(manifest).source);
    expect(third.bytesRead).toBe(imageOf(manifest3).size);

    await restore(first.recoveryPointId, `${RUN}-r1`);
    expect(await describeTree(await mountpoint(`${RUN}-r1_${VOLUME}`))).toEqual(want1);
    await restore(second.recoveryPointId, `${RUN}-r2`);
    expect(await describeTree(await mountpoint(`${RUN}-r2_${VOLUME}`))).toEqual(want2);
    await expect(execIn(`${RUN}-r2`, ['ls', '/srv-marker'])).rejects.toThrow(/exited 1/);
    await restore(third.recoveryPointId, `${RUN}-r3`);
    expect(await execIn(`${RUN}-r3`, ['cat', '/srv-marker'])).toBe(`${marker}\n`);
  }, 240_000);

  it('restores a tree point through the engine API where the agent has no host access, and backs up through it', async () => {
    const apiDeps: RunnerDeps = {
      ...deps,
      drivers: new Map([['docker', createDockerDriver({ hostAccess: false })]]),
      parents: new MemoryParentRegistry(),
    };
    const source = await mountpoint(VOLUME);
    const point = (await backup()).recoveryPointId;
    await restore(point, `${RUN}-api`, apiDeps);
    // A tar keeps mtimes to the second, and dockerd's untar writes a sparse file's holes.
    const want = await describeTree(source, { seconds: true, dense: true });
    expect(Object.keys((want['a/pingish'] as { xattrs: object }).xattrs)).toEqual([
      'security.capability',
      'user.origin',
    ]);
    expect(
      await describeTree(await mountpoint(`${RUN}-api_${VOLUME}`), { seconds: true, dense: true }),
    ).toEqual(want);

    const viaApi = await runBackup(
      apiDeps,
      {
        kind: 'BACKUP',
        jobId: `job-${++seq}`,
        itemIndex: 0,
        recoveryPointId: `rp-${String(++seq).padStart(4, '0')}`,
        target: `docker:${CONTAINER}`,
        options: {},
      },
      makeRun(),
    );
    expect(viaApi.streams.map((s) => s.kind)).toEqual(['docker-image-tar', 'volume-tar']);
    const manifest = await readManifest(repo, viaApi.recoveryPointId);
    expect(manifest.metadata.volumes).toEqual([expect.objectContaining({ read: 'engine-api' })]);
  }, 240_000);

  it('restores single files into a new volume on the host, reading only their chunks', async () => {
    const point = (await backup()).recoveryPointId;
    const into = `${RUN}-files`;
    const run = makeRun();
    const task: RestoreTask = {
      kind: 'RESTORE',
      jobId: `job-${++seq}`,
      recoveryPointId: point,
      source: `docker:${CONTAINER}`,
      target: `docker:${CONTAINER}`,
      inPlace: false,
      options: { files: ['a/b/c/big.bin'], intoVolume: into },
    };
    await runRestore(deps, task, run);
    expect(run.progress.total).toBe(3 * 1024 * 1024);
    const got = await describeTree(await mountpoint(into));
    const want = await describeTree(await mountpoint(VOLUME));
    expect(got['a/b/c/big.bin']).toEqual(want['a/b/c/big.bin']);
    expect(Object.keys(got).sort()).toEqual(['a', 'a/b', 'a/b/c', 'a/b/c/big.bin']);
  }, 120_000);
});
