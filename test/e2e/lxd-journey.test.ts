/**
 * An LXD instance through the product: `stowage start` finds the local LXD, the CLI backs an
 * instance up and restores it under a new name, and the files inside compare equal.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { FINGERPRINT, launchInstance, lxd, removeInstance, sh } from '../fixtures/lxd';
import { removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw-e2e-${randomBytes(3).toString('hex')}`;
const C1 = `${RUN}-c1`;
const C2 = `${RUN}-c2`;
const C3 = `${RUN}-c3`;
let root: string;
let stowage: StowageProcess;

beforeAll(async () => {
  execFileSync('bash', ['local/engines/setup-lxd.sh'], { stdio: 'ignore' });
  root = tempDir('stowage-lxd-e2e-');
  await launchInstance(C1);
  await sh(
    C1,
    'mkdir -p /data/empty && echo hi > /data/a.txt && chown 1000:1000 /data/a.txt && ln -s a.txt /data/link && echo marker > /etc/stowage-marker && head -c 1048576 /dev/urandom > /data/r.bin',
  );
  stowage = new StowageProcess(join(root, 'data'));
  await stowage.start();
  await stowage.waitForTargets([`lxd:${C1}`]);
}, 180_000);

afterAll(async () => {
  await stowage?.stop();
  for (const name of [C1, C2, C3]) await removeInstance(name);
  if (root) removeDir(root);
}, 120_000);

it('backs up an instance and restores it under a new name, running, with the same files', async () => {
  const backup = stowage.cli('backup', `lxd:${C1}`, '--wait');
  expect(backup.code, backup.stderr).toBe(0);
  const pointId = (backup.json as { recoveryPointId: string }).recoveryPointId;

  const restore = stowage.cli('restore', pointId, '--name', C2, '--wait');
  expect(restore.code, restore.stderr).toBe(0);

  const status = (name: string) =>
    lxd.get<{ status: string }>(`/1.0/instances/${name}`).then((i) => i.status);
  expect(await status(C2)).toBe('Running');
  expect(await status(C1)).toBe('Running');
  expect(await sh(C2, FINGERPRINT)).toBe(await sh(C1, FINGERPRINT));

  const taken = stowage.cli('restore', pointId, '--name', C1);
  expect(taken.code).toBe(2);
  expect(taken.json).toMatchObject({ error: 'NameTaken' });
});

it('takes restore options from the command line: device overrides, power state, and a clear error for an unknown pool', async () => {
  const backup = stowage.cli('backup', `lxd:${C1}`, '--no-snapshots', '--wait');
  expect(backup.code, backup.stderr).toBe(0);
  const pointId = (backup.json as { recoveryPointId: string }).recoveryPointId;

  const badPool = stowage.cli(
    'restore',
    pointId,
    '--name',
    C3,
    '--pool',
    `${RUN}-nopool`,
    '--wait',
  );
  expect(badPool.code).toBe(1);
  expect(badPool.json).toMatchObject({
    status: 'FAILED',
    error: { name: 'ValidationError', message: expect.stringMatching(/pools are: .*default/) },
  });

  const restore = stowage.cli(
    'restore',
    pointId,
    '--name',
    C3,
    '--state',
    'stopped',
    '--device',
    'extra,type=disk,source=/tmp',
    '--device',
    'extra,path=/mnt/extra',
    '--wait',
  );
  expect(restore.code, restore.stderr).toBe(0);
  const restored = await lxd.get<{
    status: string;
    devices: Record<string, Record<string, string>>;
  }>(`/1.0/instances/${C3}`);
  expect(restored.status).toBe('Stopped');
  expect(restored.devices.extra).toEqual({ type: 'disk', source: '/tmp', path: '/mnt/extra' });

  const refused = stowage.cli('restore', pointId, '--name', `${C3}x`, '--device', 'extra');
  expect(refused.code).toBe(2);
  expect(refused.stderr).toMatch(/--device takes NAME,KEY=VALUE/);
});
