/**
 * In-place restore of a Compose project against the real dockerd: the project of
 * fixtures/compose-project.ts is backed up, "updated" (a new image for web, changed data in both
 * volumes) and restored over itself. (A restore whose stream breaks midway, and one onto the
 * project without in place, are the driver contract's: docker-compose.test.ts.) Everything
 * carries the run's prefix and is removed in afterAll, with the temporary volumes
 * (`stowage-inplace-*`) a failed test may leave.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createComposeDriver } from '../../agents/drivers/docker';
import {
  containerOf,
  makeComposeProject,
  pingAliases,
  projectContainers,
  projectData,
  SERVICES,
  updateProject,
} from '../fixtures/compose-project';
import { docker, ensureTestImage, execIn, removeByPrefix, TEST_IMAGE } from '../fixtures/docker';
import { makeDriverContext as makeContext, makeMemoryPoint } from '../fixtures/memory-point';

const RUN = `stowage-ci-${randomBytes(4).toString('hex')}`;
const PROJECT = `${RUN}-shop`;
const driver = createComposeDriver();
let tempVolumesBefore: string[] = [];

async function tempVolumes(): Promise<string[]> {
  const { Volumes } = await docker.listVolumes({ filters: { name: ['stowage-inplace-'] } });
  return (Volumes ?? []).map((v) => v.Name).sort();
}

/** What an in-place restore may leave behind: set-aside containers, temporary volumes. */
async function leftovers(project: string) {
  const aside = await docker.listContainers({
    all: true,
    filters: { name: [`${project}-`] },
  });
  return {
    aside: aside.map((c) => c.Names[0] ?? c.Id).filter((n) => n.includes('-stowage-old-')),
    tempVolumes: (await tempVolumes()).filter((v) => !tempVolumesBefore.includes(v)),
  };
}

async function helpersFor(target: string): Promise<string[]> {
  const list = await docker.listContainers({
    all: true,
    filters: { label: [`io.stowage.helper.target=${target}`] },
  });
  return list.map((c) => c.Id);
}

async function imageExists(ref: string): Promise<boolean> {
  return docker
    .getImage(ref)
    .inspect()
    .then(
      () => true,
      () => false,
    );
}

/** The point's record of each container (name, committed image and its id). */
function recorded(metadata: Record<string, unknown>) {
  return metadata.containers as Array<{ name: string; image: string; imageId: string }>;
}

beforeAll(async () => {
  await ensureTestImage();
  tempVolumesBefore = await tempVolumes();
  await makeComposeProject(PROJECT);
}, 120_000);

afterAll(async () => {
  await removeByPrefix(RUN);
  for (const v of await tempVolumes()) {
    if (!tempVolumesBefore.includes(v)) {
      await docker
        .getVolume(v)
        .remove({ force: true })
        .catch(() => undefined);
    }
  }
}, 60_000);

describe('docker-compose driver: in-place restore', () => {
  it('brings back the old images and byte-identical volume data under the same container names, running, reaching each other by alias', async () => {
    // Arrange
    const point = makeMemoryPoint();
    const outcome = await driver.backup(PROJECT, point.sink, makeContext(), {
      consistency: 'stop',
    });
    const before = await projectData(PROJECT);
    const networkId = (await docker.getNetwork(`${PROJECT}_backend`).inspect()).Id;
    const v2 = await updateProject(PROJECT);
    const updated = await projectContainers(PROJECT);
    expect(updated.web.image).toBe(v2);
    expect(await projectData(PROJECT)).not.toEqual(before);
    const ctx = makeContext();

    // Act
    const result = await driver.restore(
      JSON.parse(JSON.stringify(outcome.metadata)) as Record<string, unknown>,
      point.source(),
      { name: PROJECT, inPlace: true },
      ctx,
    );

    // Assert: same names, new containers from the point's images, running, dependencies first
    expect(result).toEqual({ restoredTarget: `docker-compose:${PROJECT}` });
    const now = await projectContainers(PROJECT);
    const records = recorded(outcome.metadata);
    expect(records.map((r) => r.name)).toEqual(SERVICES.map((s) => containerOf(PROJECT, s)));
    for (const [i, service] of SERVICES.entries()) {
      expect(now[service].running).toBe(true);
      expect(now[service].id).not.toBe(updated[service].id);
      expect(now[service].image).toBe(records[i]?.imageId);
    }
    const started = await Promise.all(
      SERVICES.map(async (s) =>
        Date.parse((await docker.getContainer(containerOf(PROJECT, s)).inspect()).State.StartedAt),
      ),
    );
    expect([...started].sort((a, b) => a - b)).toEqual(started);
    // Nothing was stopped before every image and volume of the point was on the host.
    expect(ctx.phases.indexOf('stopping project')).toBeGreaterThan(
      Math.max(ctx.phases.indexOf('image of web'), ctx.phases.indexOf(`volume ${PROJECT}_shared`)),
    );

    // Assert: the old file system of web, the old data of both volumes, byte for byte
    expect(await execIn(containerOf(PROJECT, 'web'), ['cat', '/etc/release'])).toBe('v1\n');
    await expect(execIn(containerOf(PROJECT, 'web'), ['ls', '/etc/new-in-v2'])).rejects.toThrow();
    expect(await projectData(PROJECT)).toEqual(before);

    // Assert: compose labels, the same volumes and network, the aliases answering
    for (const service of SERVICES) {
      const c = await docker.getContainer(containerOf(PROJECT, service)).inspect();
      expect(c.Config.Labels).toMatchObject({
        'com.docker.compose.project': PROJECT,
        'com.docker.compose.service': service,
        'com.docker.compose.container-number': '1',
      });
      expect(c.Mounts.filter((m) => m.Type === 'volume').map((m) => m.Name)).toEqual([
        service === 'db' ? `${PROJECT}_dbdata` : `${PROJECT}_shared`,
      ]);
      expect(Object.keys(c.NetworkSettings.Networks)).toEqual([`${PROJECT}_backend`]);
    }
    expect((await docker.getNetwork(`${PROJECT}_backend`).inspect()).Id).toBe(networkId);
    const dbAddress = (await docker.getContainer(containerOf(PROJECT, 'db')).inspect())
      .NetworkSettings.Networks[`${PROJECT}_backend`]?.IPAddress;
    const pings = await pingAliases(PROJECT);
    expect(pings[2]).toContain(`(${dbAddress})`);
    await execIn(containerOf(PROJECT, 'api'), ['sh', '-c', 'echo from-api > /shared/written']);
    expect(await execIn(containerOf(PROJECT, 'web'), ['cat', '/shared/written'])).toBe(
      'from-api\n',
    );
    expect(await leftovers(PROJECT)).toEqual({ aside: [], tempVolumes: [] });
    expect(await helpersFor(`docker-compose:${PROJECT}`)).toEqual([]);
  }, 120_000);

  it('refuses, touching nothing, when a container the point does not hold mounts a volume it would replace', async () => {
    // Arrange
    const point = makeMemoryPoint();
    const outcome = await driver.backup(PROJECT, point.sink, makeContext());
    const intruder = `${PROJECT}-reporter-1`;
    await docker.createContainer({
      name: intruder,
      Image: TEST_IMAGE,
      Cmd: ['true'],
      Labels: {
        'com.docker.compose.project': PROJECT,
        'com.docker.compose.service': 'reporter',
      },
      HostConfig: { Mounts: [{ Type: 'volume', Source: `${PROJECT}_shared`, Target: '/in' }] },
    });
    const before = await projectContainers(PROJECT);

    // Act
    const attempt = driver.restore(
      outcome.metadata,
      point.source(),
      { name: PROJECT, inPlace: true },
      makeContext(),
    );

    // Assert
    try {
      await expect(attempt).rejects.toMatchObject({
        name: 'DriverError',
        message: expect.stringContaining(`volume ${PROJECT}_shared is also mounted by ${intruder}`),
      });
      expect(await projectContainers(PROJECT)).toEqual(before);
      for (const { image } of recorded(outcome.metadata)) {
        expect(await imageExists(image)).toBe(false);
      }
    } finally {
      await docker.getContainer(intruder).remove({ force: true });
    }
  }, 60_000);

  it('puts the project back, running, when the job is abandoned while its containers are being set aside', async () => {
    // Arrange
    const point = makeMemoryPoint();
    const outcome = await driver.backup(PROJECT, point.sink, makeContext());
    await updateProject(PROJECT);
    const updated = {
      containers: await projectContainers(PROJECT),
      data: await projectData(PROJECT),
    };
    const startedAt = async (s: 'db' | 'web') =>
      (await docker.getContainer(containerOf(PROJECT, s)).inspect()).State.StartedAt;
    const startedBefore = { db: await startedAt('db'), web: await startedAt('web') };
    const abandon = new AbortController();
    const ctx = makeContext({ signal: abandon.signal });
    ctx.phase = (text) => {
      ctx.phases.push(text);
      if (text === 'stopping project') abandon.abort();
    };

    // Act
    const attempt = driver.restore(
      outcome.metadata,
      point.source(),
      { name: PROJECT, inPlace: true },
      ctx,
    );

    // Assert
    await expect(attempt).rejects.toMatchObject({ name: 'TransientError' });
    expect(await projectContainers(PROJECT)).toEqual(updated.containers);
    // web (the last dependant, set aside first) was stopped and started again; db never was.
    expect(await startedAt('web')).not.toBe(startedBefore.web);
    expect(await startedAt('db')).toBe(startedBefore.db);
    expect(await projectData(PROJECT)).toEqual(updated.data);
    expect(await execIn(containerOf(PROJECT, 'web'), ['cat', '/etc/release'])).toBe('v2\n');
    expect(await leftovers(PROJECT)).toEqual({ aside: [], tempVolumes: [] });
    for (const { image } of recorded(outcome.metadata))
      expect(await imageExists(image)).toBe(false);
    await pingAliases(PROJECT);
  }, 120_000);

  it('refuses, touching nothing, when a container the point does not hold shares the network namespace of one it would replace', async () => {
    // Arrange
    const point = makeMemoryPoint();
    const outcome = await driver.backup(PROJECT, point.sink, makeContext());
    const sidecar = `${PROJECT}-sidecar-1`;
    const db = await docker.getContainer(containerOf(PROJECT, 'db')).inspect();
    await docker.createContainer({
      name: sidecar,
      Image: TEST_IMAGE,
      Cmd: ['true'],
      Labels: { 'com.docker.compose.project': PROJECT, 'com.docker.compose.service': 'sidecar' },
      HostConfig: { NetworkMode: `container:${db.Id}` },
    });
    const before = await projectContainers(PROJECT);

    // Act
    const attempt = await driver
      .restore(outcome.metadata, point.source(), { name: PROJECT, inPlace: true }, makeContext())
      .catch((err: unknown) => err);

    // Assert
    try {
      expect(attempt).toMatchObject({
        name: 'DriverError',
        message: expect.stringContaining(
          `${sidecar}, which the recovery point does not hold, shares the network namespace of ${containerOf(PROJECT, 'db')}`,
        ),
      });
      expect(await projectContainers(PROJECT)).toEqual(before);
    } finally {
      await docker.getContainer(sidecar).remove({ force: true });
    }
  }, 60_000);

  it('refuses an in-place restore with a remap it cannot apply, touching nothing', async () => {
    // Arrange
    const point = makeMemoryPoint();
    const outcome = await driver.backup(PROJECT, point.sink, makeContext());
    const before = await projectContainers(PROJECT);

    // Act
    const withRemap = await driver
      .restore(
        outcome.metadata,
        point.source(),
        { name: PROJECT, inPlace: true, network: 'elsewhere' },
        makeContext(),
      )
      .catch((err: unknown) => err);

    // Assert
    expect(withRemap).toMatchObject({
      name: 'DriverError',
      message: expect.stringContaining('network cannot apply to a Compose project restore'),
    });
    expect(await projectContainers(PROJECT)).toEqual(before);
  }, 60_000);

  it('recreates the network and containers of a project taken down, over the volumes it left', async () => {
    // Arrange
    const project = `${RUN}-down`;
    await makeComposeProject(project);
    const point = makeMemoryPoint();
    const outcome = await driver.backup(project, point.sink, makeContext());
    const before = await projectData(project);
    await updateProject(project);
    // `docker compose down`: containers and network go, volumes stay (with the updated data).
    for (const service of [...SERVICES].reverse()) {
      await docker.getContainer(containerOf(project, service)).remove({ force: true });
    }
    await docker.getNetwork(`${project}_backend`).remove();

    // Act
    await driver.restore(
      outcome.metadata,
      point.source(),
      { name: project, inPlace: true },
      makeContext(),
    );

    // Assert
    expect(await driver.exists(project)).toBe(true);
    const now = await projectContainers(project);
    for (const service of SERVICES) expect(now[service].running).toBe(true);
    expect(await projectData(project)).toEqual(before);
    const network = await docker.getNetwork(`${project}_backend`).inspect();
    expect(network.Labels).toMatchObject({
      'com.docker.compose.project': project,
      'com.docker.compose.network': 'backend',
    });
    await pingAliases(project);
    expect(await leftovers(project)).toEqual({ aside: [], tempVolumes: [] });
  }, 120_000);
});
