/**
 * Protect an update of a Compose project and roll it back, as a user does: `stowage start --store
 * DIR` in its own process, the CLI as separate commands with --json, a real dockerd. The project
 * (fixtures/compose-project.ts) gets a new image for one service and changed data; a rollback
 * from a damaged repository fails and leaves it running as it is; the real rollback brings back
 * the old image state and byte-identical data under the same names.
 */
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  containerOf,
  makeComposeProject,
  pingAliases,
  projectContainers,
  projectData,
  SERVICES,
  updateProject,
} from '../fixtures/compose-project';
import { docker, execIn, removeByPrefix, requireTestImage } from '../fixtures/docker';
import { removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw-ce2e-${process.pid}`;
const PROJECT = `${RUN}-shop`;
const TARGET = `docker-compose:${PROJECT}`;

let root: string;
let stowageProcess: StowageProcess;
const stowage = (...args: string[]) => stowageProcess.cli(...args);

/** Every file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

beforeAll(async () => {
  await requireTestImage();
  await removeByPrefix(RUN);
  root = tempDir('stowage-compose-e2e-');
  stowageProcess = new StowageProcess(join(root, 'data'), ['--store', join(root, 'repository')]);
  await makeComposeProject(PROJECT);
  await stowageProcess.start();
  await stowageProcess.waitForTargets([TARGET]);
}, 120_000);

afterAll(async () => {
  await stowageProcess?.stop();
  await removeByPrefix(RUN);
  if (root) removeDir(root);
}, 60_000);

describe('a Compose project through protect-update and rollback', () => {
  let pointId = '';
  let before: Awaited<ReturnType<typeof projectData>>;
  let updated: Awaited<ReturnType<typeof projectContainers>>;
  let updatedData: Awaited<ReturnType<typeof projectData>>;

  it('makes a pre-update recovery point of the whole project and leaves it running', async () => {
    const protect = stowage('protect-update', TARGET, '--wait');
    expect(protect.code, protect.stderr).toBe(0);
    pointId = (protect.json as { recoveryPointId: string }).recoveryPointId;

    const points = stowage('points', TARGET).json as Array<{
      recoveryPointId: string;
      label?: string;
      status: string;
    }>;
    expect(points.find((p) => p.recoveryPointId === pointId)).toMatchObject({
      label: 'pre-update',
      status: 'COMPLETED',
    });
    const now = await projectContainers(PROJECT);
    for (const service of SERVICES) expect(now[service].running).toBe(true);
    before = await projectData(PROJECT);
  });

  it('refuses a restore onto the existing project without --in-place, naming the fix', () => {
    const refused = stowage('restore', pointId, '--name', PROJECT, '--wait');
    expect(refused.code).toBe(2);
    expect(refused.json).toMatchObject({ error: 'NameTaken' });
    expect((refused.json as { message: string }).message).toContain('--in-place');
  });

  it('fails a rollback whose recovery point cannot be read, leaving the updated project running as it was', async () => {
    const v2 = await updateProject(PROJECT);
    await stowageProcess.waitForTargets([TARGET], `${TARGET} listed after the update`);
    updated = await projectContainers(PROJECT);
    updatedData = await projectData(PROJECT);
    expect(updated.web.image).toBe(v2);
    expect(updatedData).not.toEqual(before);

    // Damage every pack of the repository: one flipped byte in the middle of each.
    const packs = filesUnder(join(root, 'repository', 'data'));
    expect(packs.length).toBeGreaterThan(0);
    const originals = new Map(packs.map((p) => [p, readFileSync(p)]));
    for (const [path, bytes] of originals) {
      const damaged = Buffer.from(bytes);
      const at = Math.floor(damaged.length / 2);
      damaged[at] = (damaged[at] as number) ^ 0xff;
      writeFileSync(path, damaged);
    }
    try {
      const rollback = stowage('rollback', TARGET, '--wait');
      expect(rollback.code, rollback.stdout).toBe(1);
      expect(rollback.json).toMatchObject({
        status: 'FAILED',
        kind: 'RESTORE',
        target: TARGET,
        error: { name: 'IntegrityError' },
      });
    } finally {
      for (const [path, bytes] of originals) writeFileSync(path, bytes);
    }

    expect(await projectContainers(PROJECT)).toEqual(updated);
    expect(await execIn(containerOf(PROJECT, 'web'), ['cat', '/etc/release'])).toBe('v2\n');
    expect(await projectData(PROJECT)).toEqual(updatedData);
    const aside = await docker.listContainers({ all: true, filters: { name: ['-stowage-old-'] } });
    expect(aside.map((c) => c.Names[0])).toEqual([]);
  });

  it('rolls the update back: the old image state and byte-identical data under the same names, running, reaching each other by alias', async () => {
    const rollback = stowage('rollback', TARGET, '--wait');
    expect(rollback.code, rollback.stderr).toBe(0);
    expect(rollback.json).toMatchObject({ status: 'SUCCEEDED', kind: 'RESTORE', target: TARGET });

    const now = await projectContainers(PROJECT);
    for (const service of SERVICES) {
      expect(now[service].running).toBe(true);
      expect(now[service].id).not.toBe(updated[service].id);
    }
    expect(now.web.image).not.toBe(updated.web.image);
    expect(await execIn(containerOf(PROJECT, 'web'), ['cat', '/etc/release'])).toBe('v1\n');
    await expect(execIn(containerOf(PROJECT, 'web'), ['ls', '/etc/new-in-v2'])).rejects.toThrow();
    expect(await projectData(PROJECT)).toEqual(before);
    await pingAliases(PROJECT);
    await stowageProcess.waitForTargets([TARGET], `${TARGET} listed after the rollback`);
  });

  it('restores the point over the project again with restore --in-place', async () => {
    await execIn(containerOf(PROJECT, 'db'), ['sh', '-c', 'echo again > /data/owned.txt']);
    const previous = await projectContainers(PROJECT);

    const restore = stowage('restore', pointId, '--in-place', '--wait');
    expect(restore.code, restore.stderr).toBe(0);
    expect(restore.json).toMatchObject({ status: 'SUCCEEDED', kind: 'RESTORE', target: TARGET });

    const now = await projectContainers(PROJECT);
    for (const service of SERVICES) {
      expect(now[service].running).toBe(true);
      expect(now[service].id).not.toBe(previous[service].id);
      expect(now[service].image).toBe(previous[service].image);
    }
    expect(await projectData(PROJECT)).toEqual(before);
    await pingAliases(PROJECT);
  });

  it('refuses a rollback of a project that has no pre-update point', () => {
    const none = stowage('rollback', `docker-compose:${RUN}-none`);
    expect(none.code).toBe(2);
    expect(none.json).toMatchObject({ error: 'PointNotFound' });
    expect((none.json as { message: string }).message).toContain('stowage protect-update');
  });
});
