/**
 * Whole LXD servers (`lxd-server:AGENT`) against real daemons: the main one, and a FRESH second
 * daemon this file starts with local/engines/lxd-second.sh (its own LXD_DIR, socket, database
 * and `dir` storage) and removes in afterAll.
 *
 * On the main daemon the test makes a profile, a custom volume with files, a running instance
 * that uses both and a stopped one, a network and a project. The driver contract
 * (driver-suite.ts) backs the whole server up and restores the point onto the fresh daemon,
 * after a restore that breaks midway has left it as empty as it was: the pool, the profiles
 * (config equal), the network, the project, the image (same fingerprint and alias), the volume
 * (its files byte for byte on the pool's disk) and the instances (files inside compared by
 * sha256, running or stopped as before) come back (`serverContent`). The tests after it use that
 * backup and look at that restored daemon: a second restore clobbers nothing. Disaster recovery: an instance of the
 * second daemon loses its database record while its storage stays, and a restore with `recover`
 * brings it back through LXD's recover API, with the file written after the backup (so from its
 * storage, not from the point). Everything on the main daemon carries the run's prefix.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { renameSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLxdServerDriver } from '../../agents/drivers/lxd';
import { LxdClient } from '../../agents/drivers/lxd/client';
import type { LxdServerBackupMetadata } from '../../agents/drivers/lxd/server';
import { makeMemoryPoint, makeDriverContext } from '../fixtures/memory-point';
import {
  LXD_SOCKET,
  LXD_TEST_ALIAS,
  lxd,
  lxdInventory,
  namesAt,
  treeFingerprint,
  volumeDir,
} from '../fixtures/lxd';
import { describeDriverContract } from './driver-suite';

const RUN = `lsv-${randomBytes(3).toString('hex')}`;
const SECOND_DIR = `/var/lib/${RUN}-lxd`;
const SECOND_SOCKET = `${SECOND_DIR}/unix.socket`;
const second = new LxdClient({ socketPath: SECOND_SOCKET, project: 'default' });
const mainDriver = createLxdServerDriver({ socketPath: LXD_SOCKET, site: 'main-site' });
const secondDriver = createLxdServerDriver({ socketPath: SECOND_SOCKET, site: 'second-site' });

const PROFILE = `${RUN}-prof`;
const VOLUME = `${RUN}-data`;
const WEB = `${RUN}-web`;
const IDLE = `${RUN}-idle`;
/** A macvlan network is only a database record until an instance uses it: safe on any host. */
const NETWORK = `${RUN}n`;
const PROJECT = `${RUN}-p`;
const PROJECT_PROFILE_CONFIG = { 'user.in-project': RUN };
const PROFILE_CONFIG = { 'user.stowage-run': RUN, 'environment.GREETING': 'hello from the point' };

function script(action: 'start' | 'stop' | 'stop-keep-storage'): void {
  execFileSync('bash', ['local/engines/lxd-second.sh', action, SECOND_DIR], { stdio: 'ignore' });
}

async function readLog(client: LxdClient, path: string): Promise<string> {
  const { stream } = await client.download(path);
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Runs a shell script inside a running instance of either daemon; resolves with stdout. */
async function shOn(client: LxdClient, name: string, text: string): Promise<string> {
  const op = await client.run('POST', `/1.0/instances/${name}/exec`, {
    command: ['sh', '-c', text],
    'record-output': true,
    interactive: false,
    'wait-for-websocket': false,
  });
  const meta = (op?.metadata ?? {}) as { output?: Record<string, string>; return?: number };
  const stdout = meta.output?.['1'] ? await readLog(client, meta.output['1']) : '';
  if (meta.return !== 0) throw new Error(`exec in ${name} exited ${meta.return}`);
  return stdout;
}

/** sha256, size and mode of every file under /root and /data, and the volume's marker. */
const FILES = String.raw`
for d in /root /data; do find "$d" -type f; done | sort | while IFS= read -r f; do
  echo "$f $(stat -c '%a %u:%g %s' "$f") $(sha256sum < "$f" | cut -d' ' -f1)"
done
`;

async function status(client: LxdClient, name: string): Promise<string | undefined> {
  const list = await client.get<Array<{ name: string; status: string }>>(
    '/1.0/instances?recursion=1',
  );
  return list.find((i) => i.name === name)?.status;
}

const names = (client: LxdClient, path: string) => namesAt(path, client);

/** What a daemon holds, as names: for "nothing was left behind" and "nothing was clobbered". */
async function inventory(client: LxdClient) {
  const profiles = await client.get<Array<{ name: string; config: object; devices: object }>>(
    '/1.0/profiles?recursion=1',
  );
  const pools = await names(client, '/1.0/storage-pools');
  const volumes: string[] = [];
  for (const pool of pools) {
    volumes.push(
      ...(await names(client, `/1.0/storage-pools/${pool}/volumes/custom`)).map(
        (v) => `${pool}/${v}`,
      ),
    );
  }
  return {
    pools,
    volumes,
    instances: await names(client, '/1.0/instances'),
    images: await names(client, '/1.0/images'),
    aliases: await names(client, '/1.0/images/aliases'),
    projects: await names(client, '/1.0/projects'),
    networks: await names(client, '/1.0/networks'),
    profiles: profiles.map((p) => ({ name: p.name, config: p.config, devices: p.devices })),
  };
}

/** Each site's daemon and its LXD_DIR. */
const SITES: Record<string, { client: LxdClient; dir: string }> = {
  'main-site': { client: lxd, dir: '/var/lib/lxd' },
  'second-site': { client: second, dir: SECOND_DIR },
};

/** What a server restore must bring back of what this file made, as one site's daemon has it. */
async function serverContent(site: string) {
  const { client, dir } = SITES[site]!;
  const config = async (path: string) =>
    (await client.get<{ config: Record<string, string> }>(path)).config;
  const network = await client.get<{ type: string; config: Record<string, string> }>(
    `/1.0/networks/${NETWORK}`,
  );
  return {
    poolDriver: (await client.get<{ driver: string }>('/1.0/storage-pools/default')).driver,
    profile: await config(`/1.0/profiles/${PROFILE}`),
    network: { type: network.type, parent: network.config.parent },
    projectProfiles: (await config(`/1.0/projects/${PROJECT}`))['features.profiles'],
    profileInProject: await config(`/1.0/profiles/${PROFILE}?project=${PROJECT}`),
    image: (await client.get<{ target: string }>(`/1.0/images/aliases/${LXD_TEST_ALIAS}`)).target,
    volume: treeFingerprint(`${dir}/storage-pools/default/custom/default_${VOLUME}`),
    webFiles: await shOn(client, WEB, FILES),
    greeting: (await shOn(client, WEB, 'cat /root/greeting')).trim(),
  };
}

/** The LXD backup files a daemon holds (none once a backup, failed or not, is over). */
function backupFiles(dir: string): string[] {
  try {
    return execFileSync('find', [`${dir}/backups`, '-mindepth', '1'], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .sort();
  } catch {
    return [];
  }
}

beforeAll(async () => {
  execFileSync('bash', ['local/engines/setup-lxd.sh'], { stdio: 'ignore' });
  script('start');
  await lxd.run('POST', '/1.0/profiles', {
    name: PROFILE,
    description: `stowage test ${RUN}`,
    config: PROFILE_CONFIG,
  });
  await lxd.run('POST', '/1.0/storage-pools/default/volumes/custom', { name: VOLUME });
  await lxd.run('POST', '/1.0/networks', {
    name: NETWORK,
    type: 'macvlan',
    description: `stowage test ${RUN}`,
    config: { parent: 'eth0' },
  });
  await lxd.run('POST', '/1.0/projects', {
    name: PROJECT,
    config: { 'features.profiles': 'true', 'features.images': 'false' },
  });
  await lxd.run('POST', `/1.0/profiles?project=${PROJECT}`, {
    name: PROFILE,
    config: PROJECT_PROFILE_CONFIG,
  });
  execFileSync('sh', [
    '-c',
    String.raw`set -e; cd "$1"; mkdir -p sub; head -c 1048576 /dev/urandom > sub/random.bin
printf 'volume of %s\n' "$2" > marker.txt; chown 1000:1000 marker.txt; ln -sfn sub/random.bin link`,
    'fixture',
    volumeDir('default', VOLUME),
    RUN,
  ]);
  await lxd.run('POST', '/1.0/instances', {
    name: WEB,
    profiles: ['default', PROFILE],
    source: { type: 'image', alias: LXD_TEST_ALIAS },
    devices: { data: { type: 'disk', pool: 'default', source: VOLUME, path: '/data' } },
  });
  await lxd.run('PUT', `/1.0/instances/${WEB}/state`, { action: 'start', timeout: -1 });
  await shOn(
    lxd,
    WEB,
    `mkdir -p /root/app && head -c 524288 /dev/urandom > /root/app/blob && echo "$GREETING" > /root/greeting && chmod 600 /root/greeting`,
  );
  await lxd.run('POST', '/1.0/instances', {
    name: IDLE,
    profiles: ['default'],
    source: { type: 'image', alias: LXD_TEST_ALIAS },
  });
}, 300_000);

afterAll(async () => {
  for (const name of [WEB, IDLE]) {
    await lxd
      .run('PUT', `/1.0/instances/${name}/state`, { action: 'stop', force: true, timeout: -1 })
      .catch(() => undefined);
    await lxd.run('DELETE', `/1.0/instances/${name}`).catch(() => undefined);
  }
  await lxd
    .run('DELETE', `/1.0/storage-pools/default/volumes/custom/${VOLUME}`)
    .catch(() => undefined);
  await lxd.run('DELETE', `/1.0/profiles/${PROFILE}`).catch(() => undefined);
  await lxd.run('DELETE', `/1.0/profiles/${PROFILE}?project=${PROJECT}`).catch(() => undefined);
  await lxd.run('DELETE', `/1.0/projects/${PROJECT}`).catch(() => undefined);
  await lxd.run('DELETE', `/1.0/networks/${NETWORK}`).catch(() => undefined);
  // Last, so a failing stop cannot keep the main daemon's objects behind.
  script('stop');
}, 180_000);

// First: the tests below look at the point it made and the daemon it restored onto.
const contract = describeDriverContract(
  'lxd-server',
  async () => ({
    driver: mainDriver,
    restoreDriver: secondDriver,
    target: 'main-site',
    missing: 'second-site',
    copyName: () => 'second-site',
    content: serverContent,
    state: async (site) => ({
      web: await status(SITES[site]!.client, WEB),
      idle: await status(SITES[site]!.client, IDLE),
    }),
    leftovers: async () => ({
      main: await lxdInventory(RUN),
      second: await inventory(second),
      secondBackups: backupFiles(SECOND_DIR),
    }),
  }),
  {
    // A server restore adds what is missing and clobbers nothing: no name to be taken.
    nameTaken: false,
    breakIn: () => `instance/default/${WEB}`,
    timeoutMs: 300_000,
  },
);

describe('lxd-server driver', () => {
  it('lists the server as one target named after the agent', async () => {
    const targets = await mainDriver.listTargets();
    expect(targets).toHaveLength(1);
    expect(targets[0]).toMatchObject({ target: 'lxd-server:main-site', state: 'online' });
    expect(await mainDriver.exists('main-site')).toBe(true);
    expect(await mainDriver.exists('other')).toBe(false);
  });

  it('backs up the whole server: definitions as metadata, one stream per image, volume, instance', () => {
    const { outcome, point } = contract.backup;
    const meta = outcome.metadata as unknown as LxdServerBackupMetadata;
    expect(meta.server).toBe('main-site');
    expect(meta.pools.find((p) => p.name === 'default')?.driver).toBe('dir');
    expect(meta.profiles.find((p) => p.name === PROFILE)?.config).toEqual(PROFILE_CONFIG);
    const image = meta.images.find((i) => i.aliases.some((a) => a.name === LXD_TEST_ALIAS));
    expect(image).toBeDefined();
    const streams = point.stored.map((s) => s.name);
    expect(streams).toContain(`image/default/${image!.fingerprint}`);
    expect(streams).toContain(`volume/default/default/${VOLUME}`);
    expect(streams).toContain(`instance/default/${WEB}`);
    expect(streams).toContain(`instance/default/${IDLE}`);
    // Images, then volumes, then instances: the order a restore needs them in.
    const at = (prefix: string) => streams.findIndex((s) => s.startsWith(prefix));
    expect(at('image/')).toBeLessThan(at('volume/'));
    expect(at('volume/')).toBeLessThan(at('instance/'));
  });

  it('restored onto the fresh daemon its own pool directory, the definitions, and an image it launches from', async () => {
    const pool = await second.get<{ driver: string; config: Record<string, string> }>(
      '/1.0/storage-pools/default',
    );
    // Its own directory, never the main daemon's.
    expect(pool.config.source).toBe(`${SECOND_DIR}/storage-pools/default`);
    const content = await serverContent('second-site');
    expect(content).toMatchObject({
      poolDriver: 'dir',
      profile: PROFILE_CONFIG,
      network: { type: 'macvlan', parent: 'eth0' },
      projectProfiles: 'true',
      profileInProject: PROJECT_PROFILE_CONFIG,
      greeting: 'hello from the point',
    });
    // The image works: the restored daemon launches a new instance from it.
    await second.run('POST', '/1.0/instances', {
      name: `${RUN}-new`,
      source: { type: 'image', alias: LXD_TEST_ALIAS },
    });
    await second.run('DELETE', `/1.0/instances/${RUN}-new`);
  }, 300_000);

  it('a second restore onto the same daemon clobbers nothing', async () => {
    await shOn(second, WEB, 'echo changed-after-restore > /root/mine');
    const before = await inventory(second);
    await secondDriver.restore(
      contract.backup.outcome.metadata,
      contract.backup.point.source(),
      { name: 'second-site', inPlace: true },
      makeDriverContext(),
    );
    expect(await inventory(second)).toEqual(before);
    expect((await shOn(second, WEB, 'cat /root/mine')).trim()).toBe('changed-after-restore');
    expect(await status(second, WEB)).toBe('Running');
  }, 300_000);

  it('refuses to restore onto another agent than the one it runs on', async () => {
    await expect(
      secondDriver.restore(
        contract.backup.outcome.metadata,
        contract.backup.point.source(),
        { name: 'main-site', inPlace: false },
        makeDriverContext(),
      ),
    ).rejects.toMatchObject({ name: 'ValidationError' });
  });

  it('recovers an instance whose database record is gone but whose storage is intact', async () => {
    const secondPoint = makeMemoryPoint();
    const backup = await secondDriver.backup('second-site', secondPoint.sink, makeDriverContext());
    // Written after the backup: only the instance's own storage has it.
    await shOn(second, WEB, 'echo written-after-the-backup > /root/after');
    const files = await shOn(second, WEB, FILES);
    await second.run('PUT', `/1.0/instances/${WEB}/state`, {
      action: 'stop',
      force: true,
      timeout: -1,
    });
    // Lose the record, keep the storage: move the instance's directory aside, delete, move back.
    const dir = `${SECOND_DIR}/storage-pools/default/containers/${WEB}`;
    renameSync(dir, `${dir}.aside`);
    await second.run('DELETE', `/1.0/instances/${WEB}`);
    renameSync(`${dir}.aside`, dir);
    expect(await status(second, WEB)).toBeUndefined();

    const ctx = makeDriverContext();
    await secondDriver.restore(
      backup.metadata,
      secondPoint.source(),
      { name: 'second-site', inPlace: true, recover: true },
      ctx,
    );
    expect(await status(second, WEB)).toBe('Running');
    expect((await shOn(second, WEB, 'cat /root/after')).trim()).toBe('written-after-the-backup');
    expect(await shOn(second, WEB, FILES)).toEqual(files);
    expect(ctx.phases.some((p) => p.startsWith('recovering'))).toBe(true);
  }, 300_000);

  it('after the whole database is lost: pools, instances and volumes come back from their storage', async () => {
    const point2 = makeMemoryPoint();
    const backup = await secondDriver.backup('second-site', point2.sink, makeDriverContext());
    await shOn(second, WEB, 'echo after-the-second-backup > /root/later');
    const files = await shOn(second, WEB, FILES);
    const volume = treeFingerprint(`${SECOND_DIR}/storage-pools/default/custom/default_${VOLUME}`);
    // The daemon loses its database; its storage pool directory stays.
    script('stop-keep-storage');
    script('start');
    expect(await names(second, '/1.0/storage-pools')).toEqual([]);
    expect(await names(second, '/1.0/instances')).toEqual([]);
    const ctx = makeDriverContext();
    await secondDriver.restore(
      backup.metadata,
      point2.source(),
      { name: 'second-site', inPlace: true, recover: true },
      ctx,
    );
    expect(await names(second, '/1.0/storage-pools')).toEqual(['default']);
    expect(await status(second, WEB)).toBe('Running');
    expect(await status(second, IDLE)).toBe('Stopped');
    expect((await shOn(second, WEB, 'cat /root/later')).trim()).toBe('after-the-second-backup');
    expect(await shOn(second, WEB, FILES)).toEqual(files);
    expect(treeFingerprint(`${SECOND_DIR}/storage-pools/default/custom/default_${VOLUME}`)).toEqual(
      volume,
    );
    const profile = await second.get<{ config: Record<string, string> }>(
      `/1.0/profiles/${PROFILE}`,
    );
    expect(profile.config).toEqual(PROFILE_CONFIG);
  }, 300_000);
});
