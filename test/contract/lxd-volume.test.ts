/**
 * LXD custom storage volumes (`lxd-volume:POOL/NAME`) against the real lxd and its `dir` pool:
 * the driver backs a volume up through LXD's own volume backup and imports it back, and the
 * files of the restored volume and of its snapshots are compared byte for byte with the
 * originals on the pool's disk (test/fixtures/lxd.ts treeFingerprint). The driver contract
 * (driver-suite.ts) runs first, on a volume with a snapshot. Everything this file creates
 * (volumes, instances, a second pool) carries the run's prefix and is removed in afterAll.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLxdVolumeDriver } from '../../agents/drivers/lxd';
import { makeMemoryPoint, makeDriverContext as makeContext } from '../fixtures/memory-point';
import {
  LXD_SOCKET,
  launchInstance,
  lxd,
  lxdInventory,
  namesAt,
  removeInstance,
  sh,
  treeFingerprint,
  volumeDir,
} from '../fixtures/lxd';
import { describeDriverContract } from './driver-suite';

const RUN = `stv-${randomBytes(3).toString('hex')}`;
const POOL2 = `${RUN}-pool2`;
const driver = createLxdVolumeDriver({ socketPath: LXD_SOCKET });

const volumes = (pool: string) => `/1.0/storage-pools/${pool}/volumes/custom`;

async function createVolume(
  name: string,
  extra: Record<string, unknown> = {},
  pool = 'default',
): Promise<string> {
  await lxd.run('POST', volumes(pool), { name, ...extra });
  return name;
}

async function snapshot(volume: string, snap: string, pool = 'default'): Promise<void> {
  await lxd.run('POST', `${volumes(pool)}/${volume}/snapshots`, { name: snap });
}

async function snapshotNames(volume: string, pool = 'default'): Promise<string[]> {
  return namesAt(`${volumes(pool)}/${volume}/snapshots`);
}

async function runVolumes(pool = 'default'): Promise<string[]> {
  const list = await lxd.get<Array<{ name: string }>>(`${volumes(pool)}?recursion=1`);
  return list
    .map((v) => v.name)
    .filter((n) => n.startsWith(RUN) && !n.includes('/'))
    .sort();
}

async function backupsOf(volume: string, pool = 'default'): Promise<string[]> {
  return lxd.get<string[]>(`${volumes(pool)}/${volume}/backups`);
}

/** Every kind of entry a backup/import round trip can get wrong, written on the pool's disk. */
function writeFixture(dir: string, marker: string): void {
  execFileSync('sh', [
    '-c',
    String.raw`
set -e
cd "$1"
mkdir -p empty sub/deeper
chmod 0700 empty
printf '%s\n' "$2" > marker.txt
printf 'hello\n' > hello.txt && chmod 0640 hello.txt && chown 1000:1000 hello.txt
head -c 2097152 /dev/urandom > sub/random.bin && chmod 4755 sub/random.bin
printf 'x' > sub/deeper/odd-owner && chown 1234:5678 sub/deeper/odd-owner && chmod 0600 sub/deeper/odd-owner
ln -sfn ../hello.txt sub/link
ln -sf /does/not/exist dangling
printf 'unicode' > 'naïve ファイル ✓.txt'
`,
    'fixture',
    dir,
    marker,
  ]);
}

beforeAll(async () => {
  execFileSync('bash', ['local/engines/setup-lxd.sh'], { stdio: 'ignore' });
  await lxd.run('POST', '/1.0/storage-pools', { name: POOL2, driver: 'dir' });
}, 180_000);

afterAll(async () => {
  const instances = await lxd.get<Array<{ name: string }>>('/1.0/instances?recursion=1');
  for (const i of instances) if (i.name.startsWith(RUN)) await removeInstance(i.name);
  // Before the volumes: a profile that attaches a volume keeps it in use.
  await lxd.run('DELETE', `/1.0/profiles/${RUN}-volprof`).catch(() => undefined);
  for (const pool of ['default', POOL2]) {
    for (const v of await runVolumes(pool).catch(() => [])) {
      await lxd.run('DELETE', `${volumes(pool)}/${v}`).catch(() => undefined);
    }
  }
  await lxd.run('DELETE', `/1.0/storage-pools/${POOL2}`).catch(() => undefined);
}, 120_000);

/** A volume's files and each of its snapshots' files, on the pool's disk; `name` is POOL/NAME. */
async function volumeContent(name: string) {
  const [pool, volume] = name.split('/') as [string, string];
  const snapshots: Record<string, string> = {};
  for (const snap of await snapshotNames(volume, pool)) {
    snapshots[snap] = treeFingerprint(volumeDir(pool, volume, snap));
  }
  return { files: treeFingerprint(volumeDir(pool, volume)), snapshots };
}

describeDriverContract(
  'lxd-volume',
  async () => {
    const volume = await createVolume(`${RUN}-contract`, { description: 'contract' });
    writeFixture(volumeDir('default', volume), 'first');
    await snapshot(volume, 'snap0');
    writeFixture(volumeDir('default', volume), 'now');
    return {
      driver,
      target: `default/${volume}`,
      missing: `default/${RUN}-missing`,
      copyName: (label) => `default/${RUN}-c-${label}`,
      content: volumeContent,
      // A volume does not run: what uses it is the instances' business (the in-place case below).
      state: async () => 'a volume',
      leftovers: () => lxdInventory(RUN),
      change: async (name) => writeFixture(volumeDir('default', name.split('/')[1]!), 'changed'),
    };
  },
  { inPlace: true },
);

describe('lxd-volume driver', () => {
  it('lists filesystem and block custom volumes of every pool as POOL/NAME targets', async () => {
    const fs = await createVolume(`${RUN}-listfs`, { description: 'listed' });
    await snapshot(fs, 's1');
    const block = await createVolume(`${RUN}-listblk`, {
      content_type: 'block',
      config: { size: '4MiB' },
    });
    const other = await createVolume(`${RUN}-listp2`, {}, POOL2);

    const targets = await driver.listTargets();

    expect(targets.find((t) => t.name === `default/${fs}`)).toEqual({
      target: `lxd-volume:default/${fs}`,
      platform: 'lxd-volume',
      name: `default/${fs}`,
      state: 'unused',
      details: { content: 'filesystem', pool: 'default', driver: 'dir', snapshots: '1' },
    });
    expect(targets.find((t) => t.name === `default/${block}`)?.details).toMatchObject({
      content: 'block',
      snapshots: '0',
    });
    expect(targets.some((t) => t.target === `lxd-volume:${POOL2}/${other}`)).toBe(true);
    expect(targets.some((t) => t.name.includes(`${fs}/s1`))).toBe(false);
    expect(await driver.exists(`default/${fs}`)).toBe(true);
    expect(await driver.exists(`default/${RUN}-missing`)).toBe(false);
  });

  it('restores a volume under a new name byte for byte, with its snapshots, and leaves no LXD backup', async () => {
    const name = await createVolume(`${RUN}-src`, {
      description: 'app data',
      config: { 'user.owner': 'stowage-test' },
    });
    writeFixture(volumeDir('default', name), 'first');
    await snapshot(name, 'snap0');
    writeFixture(volumeDir('default', name), 'second');
    await snapshot(name, 'snap1');
    writeFixture(volumeDir('default', name), 'now');
    const point = makeMemoryPoint();
    const ctx = makeContext();

    const outcome = await driver.backup(`default/${name}`, point.sink, ctx);

    expect(point.stored.map((s) => [s.name, s.kind])).toEqual([
      ['volume-export', 'lxd-volume-backup-tar'],
    ]);
    expect(outcome.metadata).toMatchObject({
      format: 'stowage-lxd-volume/1',
      pool: 'default',
      poolDriver: 'dir',
      name,
      description: 'app data',
      contentType: 'filesystem',
      config: { 'user.owner': 'stowage-test' },
      snapshots: [{ name: 'snap0' }, { name: 'snap1' }],
      volumeOnly: false,
    });
    expect(outcome.summary).toMatchObject({ pool: 'default', snapshots: 2 });
    expect(ctx.phases).toContain('exporting volume');
    expect(await backupsOf(name)).toEqual([]);

    const copy = `${RUN}-copy`;
    const result = await driver.restore(
      outcome.metadata,
      point.source(),
      { name: `default/${copy}`, inPlace: false },
      makeContext(),
    );

    expect(result).toEqual({ restoredTarget: `lxd-volume:default/${copy}` });
    expect(treeFingerprint(volumeDir('default', copy))).toBe(
      treeFingerprint(volumeDir('default', name)),
    );
    expect(readFileSync(`${volumeDir('default', copy)}/marker.txt`, 'utf8')).toBe('now\n');
    expect(await snapshotNames(copy)).toEqual(['snap0', 'snap1']);
    for (const snap of ['snap0', 'snap1']) {
      expect(treeFingerprint(volumeDir('default', copy, snap))).toBe(
        treeFingerprint(volumeDir('default', name, snap)),
      );
    }
    expect(readFileSync(`${volumeDir('default', copy, 'snap0')}/marker.txt`, 'utf8')).toBe(
      'first\n',
    );
    const restored = await lxd.get<{ description: string; config: Record<string, string> }>(
      `${volumes('default')}/${copy}`,
    );
    expect(restored.description).toBe('app data');
    expect(restored.config['user.owner']).toBe('stowage-test');
  });

  it('backs up the volume alone when snapshots are not wanted', async () => {
    const name = await createVolume(`${RUN}-only`);
    writeFixture(volumeDir('default', name), 'only');
    await snapshot(name, 'old');
    const point = makeMemoryPoint();

    const outcome = await driver.backup(`default/${name}`, point.sink, makeContext(), {
      snapshots: false,
    });
    expect(outcome.metadata).toMatchObject({ volumeOnly: true, snapshots: [] });
    const copy = `${RUN}-onlycopy`;
    await driver.restore(
      outcome.metadata,
      point.source(),
      { name: `default/${copy}`, inPlace: false },
      makeContext(),
    );

    expect(await snapshotNames(copy)).toEqual([]);
    expect(treeFingerprint(volumeDir('default', copy))).toBe(
      treeFingerprint(volumeDir('default', name)),
    );
  });

  it('restores into another pool, and refuses an unknown pool with the list of pools', async () => {
    const name = await createVolume(`${RUN}-mover`);
    writeFixture(volumeDir('default', name), 'moving');
    await snapshot(name, 'snap0');
    const point = makeMemoryPoint();
    const outcome = await driver.backup(`default/${name}`, point.sink, makeContext());

    await driver.restore(
      outcome.metadata,
      point.source(),
      { name: `${POOL2}/${name}`, inPlace: false, pool: POOL2 },
      makeContext(),
    );
    expect(treeFingerprint(volumeDir(POOL2, name))).toBe(
      treeFingerprint(volumeDir('default', name)),
    );
    expect(await snapshotNames(name, POOL2)).toEqual(['snap0']);

    const refused = driver.restore(
      outcome.metadata,
      point.source(),
      { name: `${RUN}-nopool/${name}`, inPlace: false },
      makeContext(),
    );
    await expect(refused).rejects.toMatchObject({ name: 'ValidationError' });
    await expect(refused).rejects.toThrow(
      new RegExp(`storage pool "${RUN}-nopool" does not exist.*pools are: .*default`),
    );
  });

  it('round-trips a block volume byte for byte', async () => {
    const name = await createVolume(`${RUN}-blk`, {
      content_type: 'block',
      config: { size: '8MiB' },
    });
    const image = `${volumeDir('default', name)}/root.img`;
    const bytes = randomBytes(3 * 1024 * 1024);
    const fd = readFileSync(image);
    bytes.copy(fd, 1024 * 1024);
    writeFileSync(image, fd);
    const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
    const point = makeMemoryPoint();
    const outcome = await driver.backup(`default/${name}`, point.sink, makeContext());
    expect(outcome.metadata).toMatchObject({ contentType: 'block', config: { size: '8MiB' } });

    const copy = `${RUN}-blkcopy`;
    await driver.restore(
      outcome.metadata,
      point.source(),
      { name: `default/${copy}`, inPlace: false },
      makeContext(),
    );

    expect(sha(`${volumeDir('default', copy)}/root.img`)).toBe(sha(image));
  });

  it('restores in place under a running instance that uses the volume, which runs again after', async () => {
    const name = await createVolume(`${RUN}-inplace`);
    const user = await launchInstance(`${RUN}-user`);
    await lxd.run('PATCH', `/1.0/instances/${user}`, {
      devices: { data: { type: 'disk', pool: 'default', source: name, path: '/data' } },
    });
    await sh(
      user,
      'echo before > /data/state.txt && mkdir -p /data/dir && echo kept > /data/dir/f',
    );
    await snapshot(name, 'snap0');
    const point = makeMemoryPoint();
    const outcome = await driver.backup(`default/${name}`, point.sink, makeContext());
    const backedUp = treeFingerprint(volumeDir('default', name));
    await sh(user, 'echo after > /data/state.txt && touch /data/new-file');
    await lxd.run('DELETE', `${volumes('default')}/${name}/snapshots/snap0`);
    await snapshot(name, 'later');

    const result = await driver.restore(
      outcome.metadata,
      point.source(),
      { name: `default/${name}`, inPlace: true },
      makeContext(),
    );

    expect(result).toEqual({ restoredTarget: `lxd-volume:default/${name}` });
    const instance = await lxd.get<{
      status: string;
      devices: Record<string, Record<string, string>>;
    }>(`/1.0/instances/${user}`);
    expect(instance.status).toBe('Running');
    expect(instance.devices.data?.source).toBe(name);
    expect(await sh(user, 'cat /data/state.txt; ls /data')).toBe('before\ndir\nstate.txt\n');
    expect(treeFingerprint(volumeDir('default', name))).toBe(backedUp);
    expect(await snapshotNames(name)).toEqual(['snap0']);
    expect(await runVolumes()).not.toContainEqual(expect.stringContaining(`${name}-stowage-`));
  });

  it('refuses in place a volume a profile attaches, leaving volume, profile and instance as they were', async () => {
    const name = await createVolume(`${RUN}-viaprof`);
    const profile = `${RUN}-volprof`;
    await lxd.request('POST', '/1.0/profiles', {
      body: {
        name: profile,
        description: '',
        config: {},
        devices: { shared: { type: 'disk', pool: 'default', source: name, path: '/shared' } },
      },
    });
    const user = await launchInstance(`${RUN}-profuser`, ['default', profile]);
    await sh(user, 'echo before > /shared/state.txt');
    const point = makeMemoryPoint();
    const outcome = await driver.backup(`default/${name}`, point.sink, makeContext());
    await sh(user, 'echo after > /shared/state.txt');
    const listed = await runVolumes();

    const refused = driver.restore(
      outcome.metadata,
      point.source(),
      { name: `default/${name}`, inPlace: true },
      makeContext(),
    );

    await expect(refused).rejects.toMatchObject({ name: 'ValidationError' });
    await expect(refused).rejects.toThrow(
      new RegExp(`attached through profile ${profile}.*Restore it under another name`),
    );
    const prof = await lxd.get<{ devices: Record<string, Record<string, string>> }>(
      `/1.0/profiles/${profile}`,
    );
    expect(prof.devices.shared?.source).toBe(name);
    expect(await runVolumes()).toEqual(listed);
    expect(await lxd.get<{ status: string }>(`/1.0/instances/${user}`)).toMatchObject({
      status: 'Running',
    });
    expect(await sh(user, 'cat /shared/state.txt')).toBe('after\n');
  });

  it('refuses a volume name without its pool with a ValidationError', async () => {
    await expect(
      driver.backup('no-slash', makeMemoryPoint().sink, makeContext()),
    ).rejects.toMatchObject({ name: 'ValidationError' });
  });
});
