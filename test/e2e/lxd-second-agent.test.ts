/**
 * The secondary backup server: a point taken by one agent is restored through another agent, on
 * another site, into another LXD. Here both agents talk to this machine's LXD, the second one
 * confined to an LXD project of its own (`stowage agent --site S --lxd-project P`), so what it
 * sees and creates cannot collide with the first one's; it reads the point from the shared
 * repository. Files inside the restored instance and volume are compared with the originals.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LxdClient } from '../../agents/drivers/lxd/client';
import {
  FINGERPRINT,
  LXD_SOCKET,
  launchInstance,
  lxd,
  removeInstance,
  sh,
  treeFingerprint,
} from '../fixtures/lxd';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw2-${randomBytes(3).toString('hex')}`;
const PROJECT = RUN;
const SITE2 = `${RUN}-site2`;
const C1 = `${RUN}-c1`;
const C2 = `${RUN}-c2`;
const VOL = `${RUN}-vol`;
const second = new LxdClient({ socketPath: LXD_SOCKET, project: PROJECT });
let root: string;
let stowage: StowageProcess;

function targetsOf(agent: string): string[] {
  const agents = stowage.cli('agents').json as Array<{
    agent: string;
    targets: Array<{ target: string }>;
  }>;
  return agents?.find((a) => a.agent === agent)?.targets.map((t) => t.target) ?? [];
}

beforeAll(async () => {
  execFileSync('bash', ['local/engines/setup-lxd.sh'], { stdio: 'ignore' });
  // Profiles and images come from the default project (as a server's own would); instances and
  // volumes are the project's own.
  await lxd.request('POST', '/1.0/projects', {
    body: {
      name: PROJECT,
      config: { 'features.images': 'false', 'features.profiles': 'false' },
    },
  });
  root = tempDir('stowage-lxd-second-');
  await launchInstance(C1);
  await sh(
    C1,
    'mkdir -p /data/sub && echo hi > /data/a.txt && chown 1000:1000 /data/a.txt && ln -s a.txt /data/link && echo marker > /etc/stowage-marker && head -c 1048576 /dev/urandom > /data/sub/r.bin',
  );
  await lxd.run('POST', '/1.0/storage-pools/default/volumes/custom', { name: VOL });
  execFileSync('sh', [
    '-c',
    `cd /var/lib/lxd/storage-pools/default/custom/default_${VOL} && echo data > d.txt && head -c 524288 /dev/urandom > r.bin`,
  ]);
  await lxd.run('POST', `/1.0/storage-pools/default/volumes/custom/${VOL}/snapshots`, {
    name: 's0',
  });
  stowage = new StowageProcess(join(root, 'data'));
  await stowage.start();
  await stowage.startAgent(SITE2, '--lxd-project', PROJECT);
  await eventually(async () => {
    const agents = stowage.cli('agents').json as Array<{ agent: string }>;
    const local = targetsOf('local');
    return agents?.some((a) => a.agent === SITE2) &&
      local.includes(`lxd:${C1}`) &&
      local.includes(`lxd-volume:default/${VOL}`)
      ? true
      : undefined;
  }, 'both agents and the targets in the inventory');
}, 180_000);

afterAll(async () => {
  await stowage?.stop();
  await removeInstance(C1);
  const instances = await second
    .get<Array<{ name: string }>>('/1.0/instances?recursion=1')
    .catch(() => []);
  for (const i of instances) {
    await second
      .run('PUT', `/1.0/instances/${i.name}/state`, { action: 'stop', force: true, timeout: -1 })
      .catch(() => undefined);
    await second.run('DELETE', `/1.0/instances/${i.name}`).catch(() => undefined);
  }
  await second
    .run('DELETE', `/1.0/storage-pools/default/volumes/custom/${VOL}`)
    .catch(() => undefined);
  await lxd
    .run('DELETE', `/1.0/storage-pools/default/volumes/custom/${VOL}`)
    .catch(() => undefined);
  await lxd.run('DELETE', `/1.0/projects/${PROJECT}`).catch(() => undefined);
  if (root) removeDir(root);
}, 120_000);

it('restores an instance and a custom volume through a second agent on another site', async () => {
  // The second site sees nothing of the first one's.
  expect(targetsOf(SITE2)).not.toContain(`lxd:${C1}`);

  const backup = stowage.cli('backup', `lxd:${C1}`, '--wait');
  expect(backup.code, backup.stderr).toBe(0);
  const pointId = (backup.json as { recoveryPointId: string }).recoveryPointId;
  const points = stowage.cli('points', `lxd:${C1}`).json as Array<{ agent: string }>;
  expect(points[0]?.agent).toBe('local');

  const restore = stowage.cli('restore', pointId, '--to', `lxd:${C2}@${SITE2}`, '--wait');
  expect(restore.code, restore.stderr).toBe(0);
  expect(restore.json).toMatchObject({ status: 'SUCCEEDED', target: `lxd:${C2}` });
  const job = stowage.cli('job', (restore.json as { jobId: string }).jobId).json as {
    agent: string;
  };
  expect(job.agent).toBe(SITE2);

  const restored = await second.get<{ status: string }>(`/1.0/instances/${C2}`);
  expect(restored.status).toBe('Running');
  expect(await sh(C2, FINGERPRINT, second)).toBe(await sh(C1, FINGERPRINT));
  await expect(lxd.get(`/1.0/instances/${C2}`)).rejects.toMatchObject({ status: 404 });

  const again = stowage.cli('restore', pointId, '--to', `lxd:${C2}@${SITE2}`);
  expect(again.code).toBe(2);
  expect(again.json).toMatchObject({ error: 'NameTaken' });

  const volBackup = stowage.cli('backup', `lxd-volume:default/${VOL}`, '--wait');
  expect(volBackup.code, volBackup.stderr).toBe(0);
  const volPoint = (volBackup.json as { recoveryPointId: string }).recoveryPointId;
  const volRestore = stowage.cli(
    'restore',
    volPoint,
    '--to',
    `lxd-volume:default/${VOL}@${SITE2}`,
    '--wait',
  );
  expect(volRestore.code, volRestore.stderr).toBe(0);
  const pool = '/var/lib/lxd/storage-pools/default';
  expect(treeFingerprint(`${pool}/custom/${PROJECT}_${VOL}`)).toBe(
    treeFingerprint(`${pool}/custom/default_${VOL}`),
  );
  expect(treeFingerprint(`${pool}/custom-snapshots/${PROJECT}_${VOL}/s0`)).toBe(
    treeFingerprint(`${pool}/custom-snapshots/default_${VOL}/s0`),
  );
  // Four LXD jobs (two exports, two imports) run here one after another: a minute on a busy
  // two-core machine is not enough.
}, 240_000);
