/**
 * The LXD driver against the real lxd (local/engines/setup-lxd.sh starts it, preseeds a `dir`
 * pool and imports the stowage-test/busybox image). Streams go to an in-memory point, so this
 * exercises only the driver: what it reads from LXD, and whether what it imports back is the same
 * instance. Every instance this file creates has the run's prefix and is removed in afterAll.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Transform } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RestoreSource } from '../../agents/core/driver';
import { createLxdDriver } from '../../agents/drivers/lxd';
import { makeMemoryPoint, makeDriverContext as makeContext } from '../fixtures/memory-point';
import {
  FINGERPRINT,
  LXD_SOCKET,
  launchInstance,
  lxd,
  removeInstance,
  sh,
  type InstanceView,
} from '../fixtures/lxd';

const RUN = `st-${randomBytes(3).toString('hex')}`;
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

/** The point's streams, failing with `chunk store unreachable` after `pieces` pieces. */
function breakingSource(source: RestoreSource, pieces: number): RestoreSource {
  return {
    streams: source.streams,
    async openStream(name) {
      const inner = await source.openStream(name);
      let seen = 0;
      return inner.pipe(
        new Transform({
          transform(chunk, _encoding, callback) {
            seen += 1;
            if (seen > pieces) callback(new Error('chunk store unreachable'));
            else callback(null, chunk);
          },
        }),
      );
    },
  };
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

beforeAll(() => {
  execFileSync('bash', ['local/engines/setup-lxd.sh'], { stdio: 'inherit' });
}, 180_000);

afterAll(async () => {
  for (const name of await runInstances()) await removeInstance(name);
  for (const profile of await runProfiles()) {
    await lxd.run('DELETE', `/1.0/profiles/${profile}`).catch(() => undefined);
  }
}, 120_000);

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

  it('rejects a backup of a missing instance with TargetNotFound', async () => {
    const point = makeMemoryPoint();
    await expect(driver.backup(`${RUN}-missing`, point.sink, makeContext())).rejects.toMatchObject({
      name: 'TargetNotFound',
    });
    expect(await driver.exists(`${RUN}-missing`)).toBe(false);
    expect(point.stored).toEqual([]);
  });

  it('refuses with NameTaken to restore onto an existing instance name and creates nothing', async () => {
    const name = await launch('taken');
    const point = makeMemoryPoint();
    const outcome = await driver.backup(name, point.sink, makeContext());
    const before = await runInstances();

    await expect(
      driver.restore(outcome.metadata, point.source(), { name, inPlace: false }, makeContext()),
    ).rejects.toMatchObject({ name: 'NameTaken' });

    expect(await runInstances()).toEqual(before);
    expect(await statusOf(name)).toBe('Running');
  });

  it('leaves no LXD backup behind and the instance running when the sink fails midway', async () => {
    const name = await launch('sinkfail');
    await sh(name, 'head -c 2097152 /dev/urandom > /root/filler.bin');
    const point = makeMemoryPoint({
      onChunk: (_info, piece) => {
        if (piece === 3) throw new Error('the store went away');
      },
    });

    await expect(driver.backup(name, point.sink, makeContext())).rejects.toThrow(
      /the store went away/,
    );

    expect(await backupsOf(name)).toEqual([]);
    expect(await statusOf(name)).toBe('Running');
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
        breakingSource(point.source(), 5),
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

  it('stops a backup whose job is abandoned, leaving the instance running and no LXD backup', async () => {
    const name = await launch('abandon');
    await sh(name, 'head -c 2097152 /dev/urandom > /root/filler.bin');
    const abort = new AbortController();
    const point = makeMemoryPoint({
      onChunk: (_info, piece) => {
        if (piece === 2) abort.abort();
      },
    });

    await expect(
      driver.backup(name, point.sink, makeContext({ signal: abort.signal })),
    ).rejects.toMatchObject({ name: 'TransientError' });

    expect(await backupsOf(name)).toEqual([]);
    expect(await statusOf(name)).toBe('Running');
  });
});
