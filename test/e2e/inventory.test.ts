/**
 * The inventory follows the engines (issue #11): `stowage start` in its own process, the CLI with
 * --json, real dockerd and LXD. An engine change reaches the catalog through the engines' event
 * streams within a second or two, not at the next 30 s listing, so a custom volume deleted a
 * moment ago is restored under its own name right away (the API no longer finds the name taken,
 * and the agent checks it again itself), and a removed container is gone from `targets`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { docker, removeByPrefix, requireTestImage, TEST_IMAGE } from '../fixtures/docker';
import { lxd, volumeDir } from '../fixtures/lxd';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw-inv-${process.pid}`;
const VOL = `${RUN}-vol`;
const CONTAINER = `${RUN}-c`;
/** How soon an engine change must be in the catalog. */
const WITHIN_MS = 2_000;

let dataDir: string;
let stowageProcess: StowageProcess;
const stowage = (...args: string[]) => stowageProcess.cli(...args);

/** The targets the API lists now (a direct request: a CLI process takes a second to start). */
async function listed(): Promise<string[]> {
  const res = await fetch(`http://127.0.0.1:${stowageProcess.port}/targets`, {
    headers: stowageProcess.apiHeaders(),
  });
  return ((await res.json()) as Array<{ target: string }>).map((t) => t.target);
}

/** Milliseconds from now until `probe` holds, polling every 50 ms. */
async function msUntil(probe: () => Promise<boolean>, what: string): Promise<number> {
  const t0 = Date.now();
  await eventually(async () => ((await probe()) ? true : undefined), what, 10_000);
  return Date.now() - t0;
}

const removeVolume = () =>
  lxd.run('DELETE', `/1.0/storage-pools/default/volumes/custom/${VOL}`).catch(() => undefined);

beforeAll(async () => {
  await requireTestImage();
  execFileSync('bash', ['local/engines/setup-lxd.sh'], { stdio: 'ignore' });
  await removeByPrefix(RUN);
  await removeVolume();
  dataDir = tempDir('stowage-inventory-');
  stowageProcess = new StowageProcess(dataDir);
  await stowageProcess.start();
}, 180_000);

afterAll(async () => {
  await stowageProcess?.stop();
  await removeByPrefix(RUN);
  await removeVolume();
  if (dataDir) removeDir(dataDir);
});

describe('the inventory follows engine events', () => {
  it('restores a custom volume deleted a moment ago under its own name', async () => {
    await lxd.run('POST', '/1.0/storage-pools/default/volumes/custom', { name: VOL });
    writeFileSync(join(volumeDir('default', VOL), 'd.txt'), `data of ${RUN}\n`);
    const created = await msUntil(
      async () => (await listed()).includes(`lxd-volume:default/${VOL}`),
      'the new volume listed',
    );
    const backup = stowage('backup', `lxd-volume:default/${VOL}`, '--wait');
    expect(backup.code, backup.stderr).toBe(0);
    const { recoveryPointId } = backup.json as { recoveryPointId: string };

    await lxd.run('DELETE', `/1.0/storage-pools/default/volumes/custom/${VOL}`);
    const deleted = await msUntil(
      async () => !(await listed()).includes(`lxd-volume:default/${VOL}`),
      'the deleted volume gone from the inventory',
    );
    const restore = stowage('restore', recoveryPointId, '--wait');

    expect(restore.code, `${restore.stdout} ${restore.stderr}`).toBe(0);
    expect(readFileSync(join(volumeDir('default', VOL), 'd.txt'), 'utf8')).toBe(`data of ${RUN}\n`);
    expect(created).toBeLessThan(WITHIN_MS);
    expect(deleted).toBeLessThan(WITHIN_MS);
    process.stdout.write(
      `inventory figures: lxd volume created listed in ${created} ms, deleted gone in ${deleted} ms\n`,
    );
  });

  it('drops a removed container from the targets within seconds', async () => {
    const c = await docker.createContainer({ name: CONTAINER, Image: TEST_IMAGE, Cmd: ['true'] });
    const created = await msUntil(
      async () => (await listed()).includes(`docker:${CONTAINER}`),
      'the new container listed',
    );

    await c.remove({ force: true });
    const removed = await msUntil(
      async () => !(await listed()).includes(`docker:${CONTAINER}`),
      'the removed container gone',
    );

    expect(created).toBeLessThan(WITHIN_MS);
    expect(removed).toBeLessThan(WITHIN_MS);
    process.stdout.write(
      `inventory figures: docker container created listed in ${created} ms, removed gone in ${removed} ms\n`,
    );
  });
});
