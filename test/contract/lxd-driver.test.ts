/**
 * The LXD driver against the real lxd (local/engines/setup-lxd.sh starts it, preseeds a `dir`
 * pool and imports the stowage-test/busybox image): the driver contract (driver-suite.ts) on a
 * running instance with a snapshot, then what only LXD instances have (profiles, pools, devices,
 * snapshots in the export, holds while LXD writes its backup). Streams go to an in-memory point,
 * so this exercises only the driver: what it reads from LXD, and whether what it imports back is
 * the same instance. Every instance this file creates has the run's prefix and is removed in
 * afterAll.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RestoreSource } from '../../agents/core/driver';
import { createLxdDriver } from '../../agents/drivers/lxd';
import {
  breakingSource,
  makeMemoryPoint,
  makeDriverContext as makeContext,
} from '../fixtures/memory-point';
import {
  FINGERPRINT,
  LXD_SOCKET,
  launchInstance,
  lxd,
  lxdInventory,
  namesAt,
  removeInstance,
  sh,
  treeFingerprint,
  type InstanceView,
} from '../fixtures/lxd';
import { describeDriverContract } from './driver-suite';

const RUN = `st-${randomBytes(3).toString('hex')}`;
const POOL2 = `${RUN}-pool2`;
const HOST_DIR = `/tmp/${RUN}-hostdir`;
const driver = createLxdDriver({ socketPath: LXD_SOCKET });

// --- lxd helpers -------------------------------------------------------------------------------

function launch(suffix: string, profiles = ['default']): Promise<string> {
  return launchInstance(`${RUN}-${suffix}`, profiles);
}

async function statusOf(name: string): Promise<string> {
  return (await lxd.get<InstanceView>(`/1.0/instances/${name}`)).status;
}

async function runInstances(): Promise<string[]> {
  const all = await lxd.get<InstanceView[]>('/1.0/instances?recursion=1');
  return all
    .map((i) => i.name)
    .filter((n) => n.startsWith(RUN))
    .sort();
}

async function runProfiles(): Promise<string[]> {
  const all = await lxd.get<string[]>('/1.0/profiles');
  return all
    .map((p) => decodeURIComponent(p.split('/').pop() ?? ''))
    .filter((n) => n.startsWith(RUN))
    .sort();
}

async function backupsOf(name: string): Promise<string[]> {
  return lxd.get<string[]>(`/1.0/instances/${name}/backups`);
}

// Every kind of entry an export/import round trip can get wrong.
const FIXTURE = String.raw`
set -e
mkdir -p /data/empty /data/sub/deeper
chmod 0700 /data/empty
printf 'hello\n' > /data/hello.txt && chmod 0640 /data/hello.txt && chown 1000:1000 /data/hello.txt
head -c 3145728 /dev/urandom > /data/sub/random.bin && chmod 4755 /data/sub/random.bin
printf 'x' > /data/sub/deeper/odd-owner && chown 1234:5678 /data/sub/deeper/odd-owner && chmod 0600 /data/sub/deeper/odd-owner
ln -s ../hello.txt /data/sub/link
ln -s /does/not/exist /data/dangling && chown -h 1000:1000 /data/dangling
printf 'unicode' > '/data/naïve ファイル ✓.txt'
echo 'changed by the test' > /etc/stowage-marker
`;

beforeAll(async () => {
  execFileSync('bash', ['local/engines/setup-lxd.sh'], { stdio: 'inherit' });
  await lxd.run('POST', '/1.0/storage-pools', { name: POOL2, driver: 'dir' });
  mkdirSync(HOST_DIR, { recursive: true });
  writeFileSync(`${HOST_DIR}/shared.txt`, 'from the host\n');
}, 180_000);

afterAll(async () => {
  for (const name of await runInstances()) await removeInstance(name);
  for (const profile of await runProfiles()) {
    await lxd.run('DELETE', `/1.0/profiles/${profile}`).catch(() => undefined);
  }
  await lxd.run('DELETE', `/1.0/storage-pools/${POOL2}`).catch(() => undefined);
  rmSync(HOST_DIR, { recursive: true, force: true });
}, 120_000);

/** Where a `dir` pool keeps an instance's root file system (or one of its snapshots'). */
function rootfs(pool: string, name: string, snapshot?: string): string {
  const root = `/var/lib/lxd/storage-pools/${pool}`;
  return snapshot
    ? `${root}/containers-snapshots/${name}/${snapshot}/rootfs`
    : `${root}/containers/${name}/rootfs`;
}

async function snapshotsOf(name: string): Promise<string[]> {
  return namesAt(`/1.0/instances/${name}/snapshots`);
}

describeDriverContract(
  'lxd',
  async () => {
    const target = await launch('contract');
    await sh(target, FIXTURE);
    await lxd.run('POST', `/1.0/instances/${target}/snapshots`, { name: 'snap0' });
    await sh(target, 'echo after the snapshot > /data/hello.txt');
    return {
      driver,
      target,
      missing: `${RUN}-missing`,
      copyName: (label) => `${RUN}-c-${label}`,
      // Inside the instance (owners as it sees them), and each snapshot's files on the pool.
      content: async (name) => ({
        files: await sh(name, FINGERPRINT),
        snapshots: Object.fromEntries(
          (await snapshotsOf(name)).map((snap) => [
            snap,
            treeFingerprint(`${rootfs('default', name, snap)}/data`),
          ]),
        ),
      }),
      state: statusOf,
      leftovers: () => lxdInventory(RUN),
      change: async (name) => {
        await sh(name, 'echo v2 > /etc/stowage-marker && touch /data/new-in-v2');
      },
    };
  },
  { inPlace: true },
);

describe('lxd driver', () => {
  it('restores a running container under a new name byte for byte, leaving the original running', async () => {
    const original = await launch('src');
    await sh(original, FIXTURE);
    const targets = await driver.listTargets();
    expect(targets.find((t) => t.name === original)).toMatchObject({
      target: `lxd:${original}`,
      platform: 'lxd',
      state: 'running',
      details: { type: 'container', profiles: 'default' },
    });
    expect(await driver.exists(original)).toBe(true);

    const point = makeMemoryPoint();
    const ctx = makeContext();
    const outcome = await driver.backup(original, point.sink, ctx);

    expect(point.stored.map((s) => [s.name, s.kind])).toEqual([['export', 'lxd-backup-tar']]);
    expect(point.stored[0]?.size).toBeGreaterThan(3_000_000);
    expect(outcome.metadata).toMatchObject({
      name: original,
      status: 'Running',
      profiles: ['default'],
      rootPool: 'default',
      profileDefinitions: [{ name: 'default' }],
    });
    expect(ctx.phases).toContain('exporting instance');
    expect(await statusOf(original)).toBe('Running');
    expect(await backupsOf(original)).toEqual([]);

    const copy = `${RUN}-copy`;
    const result = await driver.restore(
      outcome.metadata,
      point.source(),
      { name: copy, inPlace: false },
      makeContext(),
    );

    expect(result).toEqual({ restoredTarget: `lxd:${copy}` });
    expect(await statusOf(copy)).toBe('Running');
    expect(await statusOf(original)).toBe('Running');
    const before = await sh(original, FINGERPRINT);
    const after = await sh(copy, FINGERPRINT);
    expect(after).toBe(before);
    expect(before).toContain('./naïve ファイル ✓.txt F 644 0:0 7');
    expect(before).toContain('./sub/link L 0:0 -> ../hello.txt');
    expect(before).toContain('./sub/deeper/odd-owner F 600 1234:5678 1');
    expect(before).toContain('./sub/random.bin F 4755 0:0 3145728');
    expect(before).toContain('./empty D 700 0:0');
  });

  it('restores in place over the original, bringing back what changed since the backup', async () => {
    const name = await launch('inplace');
    await sh(name, 'echo before > /root/state.txt');
    const point = makeMemoryPoint();
    const outcome = await driver.backup(name, point.sink, makeContext(), { consistency: 'stop' });
    expect(await statusOf(name)).toBe('Running');
    await sh(name, 'echo after > /root/state.txt && touch /root/new-file');

    const result = await driver.restore(
      outcome.metadata,
      point.source(),
      { name, inPlace: true },
      makeContext(),
    );

    expect(result).toEqual({ restoredTarget: `lxd:${name}` });
    expect(await statusOf(name)).toBe('Running');
    expect(await sh(name, 'cat /root/state.txt; ls /root')).toBe('before\nstate.txt\n');
    expect(await runInstances()).not.toContainEqual(expect.stringContaining(`${name}-stowage-`));
  });

  it('recreates a missing profile before the import, and removes it again when the import fails', async () => {
    const profile = `${RUN}-prof`;
    await lxd.request('POST', '/1.0/profiles', {
      body: { name: profile, description: 'test', config: { 'user.stowage': 'kept' }, devices: {} },
    });
    const name = await launch('withprof', ['default', profile]);
    const point = makeMemoryPoint();
    const outcome = await driver.backup(name, point.sink, makeContext());
    await removeInstance(name);
    await lxd.run('DELETE', `/1.0/profiles/${profile}`);
    const copy = `${RUN}-profcopy`;

    await expect(
      driver.restore(
        outcome.metadata,
        breakingSource(point.source(), () => true, new Error('chunk store unreachable'), 6),
        { name: copy, inPlace: false },
        makeContext(),
      ),
    ).rejects.toThrow(/chunk store unreachable/);
    expect(await runProfiles()).toEqual([]);
    expect(await runInstances()).not.toContain(copy);
    expect(await driver.exists(copy)).toBe(false);

    await driver.restore(
      outcome.metadata,
      point.source(),
      { name: copy, inPlace: false },
      makeContext(),
    );

    expect(await runProfiles()).toEqual([profile]);
    const restored = await lxd.get<InstanceView & { expanded_config: Record<string, string> }>(
      `/1.0/instances/${copy}`,
    );
    expect(restored.profiles).toEqual(['default', profile]);
    expect(restored.expanded_config['user.stowage']).toBe('kept');
    expect(restored.status).toBe('Running');
  });

  it('captures the instance with its snapshots by default and brings them back; without them on request', async () => {
    const name = await launch('snaps');
    await sh(
      name,
      'mkdir -p /data && echo one > /data/state.txt && head -c 1048576 /dev/urandom > /data/r.bin',
    );
    await lxd.run('POST', `/1.0/instances/${name}/snapshots`, {
      name: 'snap0',
      expires_at: '2099-01-01T00:00:00Z',
    });
    await sh(name, 'echo two > /data/state.txt');
    const point = makeMemoryPoint();

    const outcome = await driver.backup(name, point.sink, makeContext());

    expect(outcome.metadata).toMatchObject({
      instanceOnly: false,
      snapshots: ['snap0'],
      snapshotExpiry: { snap0: '2099-01-01T00:00:00Z' },
    });
    expect(outcome.summary).toMatchObject({ snapshots: 1 });
    const copy = `${RUN}-snapscopy`;
    await driver.restore(
      outcome.metadata,
      point.source(),
      { name: copy, inPlace: false },
      makeContext(),
    );
    expect(await snapshotsOf(copy)).toEqual(['snap0']);
    const restoredSnap = await lxd.get<{ expires_at: string }>(
      `/1.0/instances/${copy}/snapshots/snap0`,
    );
    expect(restoredSnap.expires_at).toBe('2099-01-01T00:00:00Z');
    expect(treeFingerprint(`${rootfs('default', copy, 'snap0')}/data`)).toBe(
      treeFingerprint(`${rootfs('default', name, 'snap0')}/data`),
    );
    expect(await sh(copy, 'cat /data/state.txt')).toBe('two\n');

    const alone = makeMemoryPoint();
    const aloneOutcome = await driver.backup(name, alone.sink, makeContext(), { snapshots: false });
    expect(aloneOutcome.metadata).toMatchObject({ instanceOnly: true, snapshots: [] });
    expect(alone.stored[0]!.size).toBeLessThan(point.stored[0]!.size);
    const aloneCopy = `${RUN}-alonecopy`;
    await driver.restore(
      aloneOutcome.metadata,
      alone.source(),
      { name: aloneCopy, inPlace: false },
      makeContext(),
    );
    expect(await snapshotsOf(aloneCopy)).toEqual([]);
    expect(await sh(aloneCopy, FINGERPRINT.replace('sha256sum /etc/stowage-marker', ''))).toBe(
      await sh(name, FINGERPRINT.replace('sha256sum /etc/stowage-marker', '')),
    );
  });

  it('falls back to the plain export when optimized storage is asked on a dir pool, and says so', async () => {
    const name = await launch('optim');
    const ctx = makeContext();

    const outcome = await driver.backup(name, makeMemoryPoint().sink, ctx, {
      optimizedStorage: true,
    });

    expect(outcome.metadata).toMatchObject({ optimizedStorage: false, rootPoolDriver: 'dir' });
    expect(ctx.phases).toContain('pool default (dir) has no optimized storage: plain export');
  });

  it('restores into another pool with device overrides, in the power state asked for', async () => {
    const profile = `${RUN}-devprof`;
    await lxd.request('POST', '/1.0/profiles', {
      body: {
        name: profile,
        description: '',
        config: {},
        devices: { hostdir: { type: 'disk', source: HOST_DIR, path: '/mnt/host' } },
      },
    });
    const name = await launch('devs', ['default', profile]);
    await sh(name, FIXTURE);
    expect(await sh(name, 'cat /mnt/host/shared.txt')).toBe('from the host\n');
    const point = makeMemoryPoint();
    const outcome = await driver.backup(name, point.sink, makeContext());
    const copy = `${RUN}-devcopy`;

    await driver.restore(
      outcome.metadata,
      point.source(),
      {
        name: copy,
        inPlace: false,
        pool: POOL2,
        devices: {
          hostdir: { type: 'none' },
          again: { type: 'disk', source: HOST_DIR, path: '/mnt/again', readonly: 'true' },
        },
        state: 'stopped',
      },
      makeContext(),
    );

    const restored = await lxd.get<
      InstanceView & { expanded_devices: Record<string, Record<string, string>> }
    >(`/1.0/instances/${copy}`);
    expect(restored.status).toBe('Stopped');
    expect(restored.expanded_devices.root).toMatchObject({ pool: POOL2, path: '/' });
    expect(restored.expanded_devices.hostdir).toEqual({ type: 'none' });
    expect(restored.expanded_devices.again).toMatchObject({ source: HOST_DIR, path: '/mnt/again' });
    expect(treeFingerprint(`${rootfs(POOL2, copy)}/data`)).toBe(
      treeFingerprint(`${rootfs('default', name)}/data`),
    );
    await lxd.run('PUT', `/1.0/instances/${copy}/state`, { action: 'start', timeout: -1 });
    // The masked device is not mounted: its mount point, part of the rootfs, is empty.
    expect(await sh(copy, 'cat /mnt/again/shared.txt; ls -A /mnt/host')).toBe('from the host\n');
    expect(await sh(copy, FINGERPRINT)).toBe(await sh(name, FINGERPRINT));

    // A stopped original comes back stopped unless running is asked for.
    await lxd.run('PUT', `/1.0/instances/${name}/state`, {
      action: 'stop',
      force: true,
      timeout: -1,
    });
    const stoppedPoint = makeMemoryPoint();
    const stopped = await driver.backup(name, stoppedPoint.sink, makeContext());
    for (const [suffix, state, expected] of [
      ['asbefore', undefined, 'Stopped'],
      ['running', 'running', 'Running'],
    ] as const) {
      const target = `${RUN}-${suffix}`;
      await driver.restore(
        stopped.metadata,
        stoppedPoint.source(),
        { name: target, inPlace: false, ...(state ? { state } : {}) },
        makeContext(),
      );
      expect(await statusOf(target)).toBe(expected);
    }
  });

  it('refuses an unknown pool (listing the pools) and an unknown device before reading anything', async () => {
    const name = await launch('refuse');
    const point = makeMemoryPoint();
    const outcome = await driver.backup(name, point.sink, makeContext());
    const before = await runInstances();
    let opened = 0;
    const counting: RestoreSource = {
      streams: point.source().streams,
      openStream: (stream) => {
        opened += 1;
        return point.source().openStream(stream);
      },
    };

    const unknownPool = driver.restore(
      outcome.metadata,
      counting,
      { name: `${RUN}-nopool`, inPlace: false, pool: `${RUN}-nosuchpool` },
      makeContext(),
    );
    await expect(unknownPool).rejects.toMatchObject({ name: 'ValidationError' });
    await expect(unknownPool).rejects.toThrow(
      new RegExp(`storage pool "${RUN}-nosuchpool" does not exist.*pools are: .*default`),
    );
    const unknownDevice = driver.restore(
      outcome.metadata,
      counting,
      { name: `${RUN}-nodev`, inPlace: false, devices: { eth9: { network: 'x' } } },
      makeContext(),
    );
    await expect(unknownDevice).rejects.toThrow(/device eth9 is not in the recovery point.*type=/);
    const rootPool = driver.restore(
      outcome.metadata,
      counting,
      { name: `${RUN}-rootpool`, inPlace: false, devices: { root: { pool: `${RUN}-nosuchpool` } } },
      makeContext(),
    );
    await expect(rootPool).rejects.toThrow(/does not exist on this LXD server/);

    expect(opened).toBe(0);
    expect(await runInstances()).toEqual(before);
  });

  it.each(['stop', 'pause'] as const)(
    'starts the instance again and leaves no LXD backup when a %s backup is abandoned while LXD writes it',
    async (consistency) => {
      const name = await launch(`held-${consistency}`);
      const abort = new AbortController();
      const ctx = makeContext({
        signal: abort.signal,
        phase: (text) => {
          if (text === 'creating LXD backup') abort.abort();
        },
      });

      await expect(
        driver.backup(name, makeMemoryPoint().sink, ctx, { consistency }),
      ).rejects.toMatchObject({ name: 'TransientError' });

      expect(await statusOf(name)).toBe('Running');
      expect(await backupsOf(name)).toEqual([]);
      expect(readdirSync('/var/lib/lxd/backups/instances')).not.toContainEqual(
        expect.stringContaining(name),
      );
    },
  );
});
