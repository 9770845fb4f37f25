/**
 * A whole LXD server through the product: `stowage start` (agent `local`, the main lxd) and a
 * second agent (`stowage agent --site RUN-second --lxd-socket ...`) on a FRESH second daemon
 * (local/engines/lxd-second.sh). The CLI lists both servers, backs up `lxd-server:local` and
 * restores it `--to lxd-server:RUN-second`: the test's instance comes back running there, with
 * the same files inside (sha256), its profile and its custom volume. Everything this file makes
 * on the main daemon carries the run's prefix; the second daemon is removed in afterAll.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LxdClient } from '../../agents/drivers/lxd/client';
import { LXD_TEST_ALIAS, lxd, removeInstance, sh } from '../fixtures/lxd';
import { removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `lse-${randomBytes(3).toString('hex')}`;
const SECOND_SITE = `${RUN}-second`;
const SECOND_DIR = `/var/lib/${RUN}-lxd`;
const second = new LxdClient({ socketPath: `${SECOND_DIR}/unix.socket`, project: 'default' });
const C1 = `${RUN}-c1`;
const PROFILE = `${RUN}-prof`;
const VOLUME = `${RUN}-vol`;
const FILES = String.raw`for d in /root /data; do find "$d" -type f; done | sort | while IFS= read -r f; do
  echo "$f $(stat -c '%a %u:%g %s' "$f") $(sha256sum < "$f" | cut -d' ' -f1)"; done`;

let root: string;
let stowage: StowageProcess;

function secondDaemon(action: 'start' | 'stop'): void {
  execFileSync('bash', ['local/engines/lxd-second.sh', action, SECOND_DIR], { stdio: 'ignore' });
}

/** Runs a script inside an instance of the second daemon; resolves with stdout. */
async function shSecond(name: string, text: string): Promise<string> {
  const op = await second.run('POST', `/1.0/instances/${name}/exec`, {
    command: ['sh', '-c', text],
    'record-output': true,
    interactive: false,
    'wait-for-websocket': false,
  });
  const meta = (op?.metadata ?? {}) as { output?: Record<string, string>; return?: number };
  if (meta.return !== 0) throw new Error(`exec in ${name} exited ${meta.return}`);
  const { stream } = await second.download(meta.output!['1']!);
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

beforeAll(async () => {
  execFileSync('bash', ['local/engines/setup-lxd.sh'], { stdio: 'ignore' });
  secondDaemon('start');
  root = tempDir('stowage-lxd-server-e2e-');
  await lxd.run('POST', '/1.0/profiles', {
    name: PROFILE,
    config: { 'environment.STOWAGE_RUN': RUN },
  });
  await lxd.run('POST', '/1.0/storage-pools/default/volumes/custom', { name: VOLUME });
  await lxd.run('POST', '/1.0/instances', {
    name: C1,
    profiles: ['default', PROFILE],
    source: { type: 'image', alias: LXD_TEST_ALIAS },
    devices: { data: { type: 'disk', pool: 'default', source: VOLUME, path: '/data' } },
  });
  await lxd.run('PUT', `/1.0/instances/${C1}/state`, { action: 'start', timeout: -1 });
  await sh(
    C1,
    'head -c 1048576 /dev/urandom > /root/r.bin && echo "$STOWAGE_RUN" > /data/run.txt && chown 1000:1000 /data/run.txt',
  );

  stowage = new StowageProcess(join(root, 'data'));
  await stowage.start();
  await stowage.startAgent(SECOND_SITE, '--lxd-socket', `${SECOND_DIR}/unix.socket`);
  await stowage.waitForTargets(['lxd-server:local', `lxd-server:${SECOND_SITE}`]);
}, 240_000);

afterAll(async () => {
  // Stops the second agent too.
  await stowage?.stop();
  await removeInstance(C1);
  await lxd
    .run('DELETE', `/1.0/storage-pools/default/volumes/custom/${VOLUME}`)
    .catch(() => undefined);
  await lxd.run('DELETE', `/1.0/profiles/${PROFILE}`).catch(() => undefined);
  if (root) removeDir(root);
  secondDaemon('stop');
}, 180_000);

it('backs up the whole server and restores it onto another agent’s fresh server', async () => {
  const files = await sh(C1, FILES);
  const backup = stowage.cli('backup', 'lxd-server:local', '--wait');
  expect(backup.code, backup.stderr).toBe(0);
  const pointId = (backup.json as { recoveryPointId: string }).recoveryPointId;

  const nowhere = stowage.cli('restore', pointId);
  expect(nowhere.code).toBe(2);
  expect(nowhere.json).toMatchObject({ error: 'ValidationError' });

  const restore = stowage.cli('restore', pointId, '--to', `lxd-server:${SECOND_SITE}`, '--wait');
  expect(restore.code, restore.stderr).toBe(0);

  const instance = await second.get<{ status: string; profiles: string[] }>(`/1.0/instances/${C1}`);
  expect(instance.status).toBe('Running');
  expect(instance.profiles).toEqual(['default', PROFILE]);
  expect(await shSecond(C1, FILES)).toBe(files);
  expect((await shSecond(C1, 'cat /data/run.txt')).trim()).toBe(RUN);
  expect(
    (await lxd.get<{ status: string }>(`/1.0/instances/${C1}`)).status,
    'the original keeps running',
  ).toBe('Running');
}, 600_000);
