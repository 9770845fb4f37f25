/**
 * Local snapshots of LXD instances (the driver's SnapshotOps) against the real lxd: names from
 * patterns, expiry set, changed and honoured, delete, restore-to-snapshot compared byte for byte
 * inside the instance, the schedule as LXD stores it, and the errors for what cannot be done.
 * Every instance this file creates has the run's prefix and is removed in afterAll.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLxdDriver } from '../../agents/drivers/lxd';
import type { SnapshotOps } from '../../agents/core/driver';
import { makeDriverContext as makeContext } from '../fixtures/memory-point';
import { LXD_SOCKET, launchInstance, lxd, removeInstance, sh } from '../fixtures/lxd';

const RUN = `sn-${randomBytes(3).toString('hex')}`;
const driver = createLxdDriver({ socketPath: LXD_SOCKET });
const ops = driver.snapshots as SnapshotOps;

interface RawSnapshot {
  name: string;
  expires_at: string;
  stateful: boolean;
}

async function lxdSnapshots(name: string): Promise<RawSnapshot[]> {
  return lxd.get<RawSnapshot[]>(`/1.0/instances/${name}/snapshots?recursion=1`);
}

async function statusOf(name: string): Promise<string> {
  return (await lxd.get<{ status: string }>(`/1.0/instances/${name}`)).status;
}

const HASHES = 'sha256sum /data/file.bin /etc/stowage-marker';

beforeAll(() => {
  execFileSync('bash', ['local/engines/setup-lxd.sh'], { stdio: 'inherit' });
}, 180_000);

afterAll(async () => {
  const all = await lxd.get<Array<{ name: string }>>('/1.0/instances?recursion=1');
  for (const { name } of all.filter((i) => i.name.startsWith(RUN))) await removeInstance(name);
}, 120_000);

describe('lxd snapshots', () => {
  it('creates snapshots from a pattern with an expiry, lists them, changes the expiry and deletes', async () => {
    const name = await launchInstance(`${RUN}-a`);
    const ctx = makeContext();
    const in7d = new Date(Date.now() + 7 * 86_400_000);

    const first = await ops.create(
      name,
      { pattern: 'daily-%d', expiresAt: in7d, stateful: false },
      ctx,
    );
    const second = await ops.create(
      name,
      { pattern: 'daily-%d', expiresAt: null, stateful: false },
      ctx,
    );
    const fixed = await ops.create(name, { pattern: 'before-upgrade', stateful: false }, ctx);

    expect([first.name, second.name, fixed.name]).toEqual(['daily-0', 'daily-1', 'before-upgrade']);
    expect(first).toMatchObject({ stateful: false, expiresAt: in7d.toISOString() });
    expect(second.expiresAt).toBeNull();
    const raw = await lxdSnapshots(name);
    expect(raw.find((s) => s.name === 'daily-0')?.expires_at).toMatch(/^\d{4}-/);
    expect(Date.parse(raw.find((s) => s.name === 'daily-0')!.expires_at)).toBe(in7d.getTime());

    const listed = await ops.list(name);
    expect(listed.map((s) => s.name)).toEqual(['daily-0', 'daily-1', 'before-upgrade']);
    const target = (await driver.listTargets()).find((t) => t.name === name);
    expect(target?.snapshots?.map((s) => s.name)).toEqual(['daily-0', 'daily-1', 'before-upgrade']);
    expect(target?.details?.snapshots).toBe('3');

    await expect(
      ops.create(name, { pattern: 'before-upgrade', stateful: false }, ctx),
    ).rejects.toMatchObject({ name: 'NameTaken', message: expect.stringContaining('%d') });

    const in2h = new Date(Date.now() + 2 * 3_600_000);
    expect(await ops.setExpiry(name, 'daily-1', in2h, ctx)).toMatchObject({
      name: 'daily-1',
      expiresAt: in2h.toISOString(),
    });
    expect(
      Date.parse((await lxdSnapshots(name)).find((s) => s.name === 'daily-1')!.expires_at),
    ).toBe(in2h.getTime());
    expect((await ops.setExpiry(name, 'daily-0', null, ctx)).expiresAt).toBeNull();
    expect((await lxdSnapshots(name)).find((s) => s.name === 'daily-0')?.expires_at).toMatch(
      /^0001-01-01/,
    );

    await ops.delete(name, 'daily-0', ctx);
    expect((await lxdSnapshots(name)).map((s) => s.name).sort()).toEqual([
      'before-upgrade',
      'daily-1',
    ]);
    // The next number stays above the highest still in use, as LXD counts.
    expect((await ops.create(name, { pattern: 'daily-%d', stateful: false }, ctx)).name).toBe(
      'daily-2',
    );
  });

  it('restores a running instance to a snapshot byte for byte and leaves it running; a stopped one stays stopped', async () => {
    const name = await launchInstance(`${RUN}-r`);
    const ctx = makeContext();
    await sh(
      name,
      'mkdir -p /data && head -c 2097152 /dev/urandom > /data/file.bin && echo before > /etc/stowage-marker',
    );
    const before = await sh(name, HASHES);
    await ops.create(name, { pattern: 'good', stateful: false }, ctx);

    await sh(
      name,
      'head -c 1048576 /dev/urandom | dd of=/data/file.bin bs=4096 seek=10 conv=notrunc 2>/dev/null && echo after > /etc/stowage-marker && touch /data/new-file',
    );
    expect(await sh(name, HASHES)).not.toBe(before);

    const restored = await ops.restore(name, 'good', ctx);
    expect(restored.name).toBe('good');
    expect(await statusOf(name)).toBe('Running');
    expect(await sh(name, HASHES)).toBe(before);
    expect(await sh(name, 'ls /data')).toBe('file.bin\n');

    await lxd.run('PUT', `/1.0/instances/${name}/state`, {
      action: 'stop',
      force: true,
      timeout: -1,
    });
    await ops.restore(name, 'good', ctx);
    expect(await statusOf(name)).toBe('Stopped');
  });

  it('honours a short expiry: the snapshot is gone once it expired, from the listing and from LXD', async () => {
    const name = await launchInstance(`${RUN}-e`);
    const ctx = makeContext();
    const soon = new Date(Date.now() + 3000);
    await ops.create(name, { pattern: 'brief', expiresAt: soon, stateful: false }, ctx);
    await ops.create(name, { pattern: 'lasting', expiresAt: null, stateful: false }, ctx);
    expect((await ops.list(name)).map((s) => s.name)).toEqual(['brief', 'lasting']);

    await new Promise((r) => setTimeout(r, Math.max(0, soon.getTime() - Date.now()) + 500));

    // The inventory pass deletes it (LXD's own pruning runs only about once a minute).
    const target = (await driver.listTargets()).find((t) => t.name === name);
    expect(target?.snapshots?.map((s) => s.name)).toEqual(['lasting']);
    expect((await lxdSnapshots(name)).map((s) => s.name)).toEqual(['lasting']);
    await expect(ops.restore(name, 'brief', ctx)).rejects.toMatchObject({
      name: 'SnapshotNotFound',
    });
  });

  it('sets, shows and removes the schedule LXD runs by itself', async () => {
    const name = await launchInstance(`${RUN}-s`);
    const ctx = makeContext();
    const set = await ops.schedule(
      name,
      { every: '@daily', expiry: '12h', pattern: 'auto-%d', stopped: false },
      ctx,
    );
    expect(set).toEqual({ every: '@daily', expiry: '12h', pattern: 'auto-%d', stopped: false });
    const config = (await lxd.get<{ config: Record<string, string> }>(`/1.0/instances/${name}`))
      .config;
    expect(config).toMatchObject({
      'snapshots.schedule': '@daily',
      'snapshots.expiry': '12H',
      'snapshots.pattern': 'auto-%d',
      'snapshots.schedule.stopped': 'false',
    });
    const target = (await driver.listTargets()).find((t) => t.name === name);
    expect(target?.snapshotSchedule).toEqual(set);

    expect(await ops.schedule(name, { every: '0 3 * * *', expiry: '2w' }, ctx)).toEqual({
      every: '0 3 * * *',
      expiry: '2w',
    });
    expect(await ops.schedule(name, null, ctx)).toBeNull();
    const after = (await lxd.get<{ config: Record<string, string> }>(`/1.0/instances/${name}`))
      .config;
    expect(Object.keys(after).filter((k) => k.startsWith('snapshots.'))).toEqual([]);
  });

  it('names the unknown snapshot and the unknown instance', async () => {
    const name = await launchInstance(`${RUN}-u`);
    const ctx = makeContext();
    await expect(ops.restore(name, 'nope', ctx)).rejects.toMatchObject({
      name: 'SnapshotNotFound',
      message: expect.stringContaining(`lxd:${name}/nope`),
    });
    await expect(ops.delete(name, 'nope', ctx)).rejects.toMatchObject({ name: 'SnapshotNotFound' });
    await expect(ops.setExpiry(name, 'nope', null, ctx)).rejects.toMatchObject({
      name: 'SnapshotNotFound',
    });
    const ghost = `${RUN}-ghost`;
    await expect(ops.create(ghost, { pattern: 's%d', stateful: false }, ctx)).rejects.toMatchObject(
      {
        name: 'TargetNotFound',
        message: expect.stringContaining(`lxd:${ghost}`),
      },
    );
    await expect(ops.list(ghost)).rejects.toMatchObject({ name: 'TargetNotFound' });
    await expect(ops.schedule(ghost, null, ctx)).rejects.toMatchObject({ name: 'TargetNotFound' });
  });

  it('takes a stateful snapshot only where CRIU works; elsewhere refuses before anything changes', async () => {
    const name = await launchInstance(`${RUN}-st`);
    const ctx = makeContext();
    const criuWorks = spawnSync('criu', ['check']).status === 0;
    const attempt = ops.create(name, { pattern: 'live', stateful: true }, ctx);
    if (criuWorks) {
      expect((await attempt).stateful).toBe(true);
    } else {
      await expect(attempt).rejects.toMatchObject({
        name: 'Unsupported',
        message: expect.stringMatching(/CRIU .*nothing was changed/),
      });
      expect(await lxdSnapshots(name)).toEqual([]);
    }
    expect(await statusOf(name)).toBe('Running');
    const held = await lxdSnapshots(name);

    await lxd.run('PUT', `/1.0/instances/${name}/state`, {
      action: 'stop',
      force: true,
      timeout: -1,
    });
    await expect(ops.create(name, { pattern: 'live', stateful: true }, ctx)).rejects.toMatchObject({
      name: 'Unsupported',
      message: expect.stringContaining('needs it running'),
    });
    expect(await lxdSnapshots(name)).toEqual(held);
  });
});
