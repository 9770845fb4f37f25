/**
 * Restore options of the docker driver against the real dockerd: volumes under other names, another
 * network, other host ports, and one volume alone into a volume of its own. One container is
 * backed up once (beforeAll) and every test restores that point. Everything this file creates has
 * the run's prefix and is removed in afterAll.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RestoreOptions } from '../../agents/core/driver';
import { createDockerDriver } from '../../agents/drivers/docker';
import {
  docker,
  execIn,
  fingerprint,
  TEST_IMAGE,
  ensureTestImage,
  removeByPrefix,
} from '../fixtures/docker';
import {
  makeMemoryPoint,
  type MemoryPoint,
  makeDriverContext as makeContext,
} from '../fixtures/memory-point';

const RUN = `stowage-rm-${randomBytes(4).toString('hex')}`;
const ORIGINAL = `${RUN}-app`;
const [DATA, LOGS] = [`${ORIGINAL}-data`, `${ORIGINAL}-logs`];
const NET = `${RUN}-net`;
const driver = createDockerDriver();

const FIXTURE = String.raw`
set -e
cd /data
mkdir -p nested/deeper && echo nested > nested/deeper/file.txt && chmod 0444 nested/deeper/file.txt
echo secret > private.txt && chmod 0600 private.txt && chown 1000:1000 private.txt
ln -s nested/deeper/file.txt link
head -c 1048576 /dev/urandom > random.bin
echo log line > /logs/app.log
`;

function hostPort(): string {
  return String(20000 + Math.floor(Math.random() * 20000));
}

let point: MemoryPoint;
let metadata: Record<string, unknown>;
let dataPrint: Record<string, string>;
const originalPorts = { web: hostPort(), admin: hostPort() };

function restore(options: Partial<RestoreOptions> & { name: string }, ctx = makeContext()) {
  return driver.restore(
    JSON.parse(JSON.stringify(metadata)) as Record<string, unknown>,
    point.source(),
    { inPlace: false, ...options },
    ctx,
  );
}

/** A running container that mounts `volume` at /v, to fingerprint it (or to be its user). */
async function mountVolume(suffix: string, volume: string, start = true): Promise<string> {
  const name = `${RUN}-${suffix}`;
  await docker.createContainer({
    name,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    HostConfig: { Binds: [`${volume}:/v`] },
  });
  if (start) await docker.getContainer(name).start();
  return name;
}

async function volumePrint(volume: string): Promise<Record<string, string>> {
  const name = await mountVolume(`print-${randomBytes(3).toString('hex')}`, volume);
  try {
    return await fingerprint(name, '/v');
  } finally {
    await docker.getContainer(name).remove({ force: true, v: false });
  }
}

async function runVolumes(): Promise<string[]> {
  const { Volumes } = await docker.listVolumes({ filters: { name: [RUN] } });
  return (Volumes ?? []).map((v) => v.Name).sort();
}

async function images(): Promise<string[]> {
  const list = await docker.listImages({ filters: { reference: [`stowage/${ORIGINAL}:*`] } });
  return list.flatMap((i) => i.RepoTags ?? []);
}

beforeAll(async () => {
  await ensureTestImage();
  await docker.createNetwork({ Name: NET });
  for (const v of [DATA, LOGS]) await docker.createVolume({ Name: v });
  await docker.createContainer({
    name: ORIGINAL,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    ExposedPorts: { '80/tcp': {}, '81/tcp': {} },
    // sleep as PID 1 ignores SIGTERM: without this the in-place restore's stop waits 10 s.
    StopSignal: 'SIGKILL',
    NetworkingConfig: { EndpointsConfig: { [NET]: { Aliases: ['app-alias'] } } },
    HostConfig: {
      Binds: [`${DATA}:/data`, `${LOGS}:/logs`],
      NetworkMode: NET,
      PortBindings: {
        '80/tcp': [{ HostIp: '127.0.0.1', HostPort: originalPorts.web }],
        '81/tcp': [{ HostIp: '127.0.0.1', HostPort: originalPorts.admin }],
      },
    },
  });
  await docker.getContainer(ORIGINAL).start();
  await execIn(ORIGINAL, ['sh', '-c', FIXTURE]);
  dataPrint = await fingerprint(ORIGINAL, '/data');
  point = makeMemoryPoint();
  metadata = (await driver.backup(ORIGINAL, point.sink, makeContext())).metadata;
}, 60_000);

afterAll(() => removeByPrefix(RUN), 60_000);

describe('docker driver restore options', () => {
  it('restores the volumes under the names given and attaches the copy to the given network only', async () => {
    // Arrange
    const net2 = `${RUN}-net2`;
    await docker.createNetwork({ Name: net2 });
    const name = `${RUN}-renamed`;
    const renamed = `${RUN}-new-data`;

    // Act
    const result = await restore({ name, volumes: { [DATA]: renamed }, network: net2 });

    // Assert
    expect(result).toEqual({ restoredTarget: `docker:${name}` });
    expect(await runVolumes()).toEqual(expect.arrayContaining([renamed, `${name}_${LOGS}`]));
    expect(await runVolumes()).not.toContain(`${name}_${DATA}`);
    const info = await docker.getContainer(name).inspect();
    expect(info.State.Running).toBe(true);
    expect(info.Mounts.find((m) => m.Destination === '/data')?.Name).toBe(renamed);
    expect(await fingerprint(name, '/data')).toEqual(dataPrint);
    expect(info.HostConfig.NetworkMode).toBe(net2);
    expect(Object.keys(info.NetworkSettings.Networks)).toEqual([net2]);
    expect(info.NetworkSettings.Networks[net2]?.Aliases).toContain('app-alias');
    expect(info.NetworkSettings.Networks[net2]?.Aliases).not.toContain(
      (metadata.container as { Id: string }).Id.slice(0, 12),
    );
  });

  it('refuses a volume name that is taken, creating nothing', async () => {
    // Arrange
    const taken = `${RUN}-taken`;
    await docker.createVolume({ Name: taken });
    const name = `${RUN}-clash`;

    // Act
    const attempt = restore({ name, volumes: { [LOGS]: taken } });

    // Assert
    await expect(attempt).rejects.toMatchObject({
      name: 'NameTaken',
      message: expect.stringContaining(taken),
    });
    expect(await runVolumes()).not.toContain(`${name}_${DATA}`);
    await expect(docker.getContainer(name).inspect()).rejects.toMatchObject({ statusCode: 404 });
  });

  it('publishes a remapped port on its new host port and drops the unremapped ones the original holds', async () => {
    // Arrange
    const name = `${RUN}-ports`;
    const newPort = hostPort();

    // Act
    await restore({ name, ports: { '80/tcp': newPort } });

    // Assert
    const info = await docker.getContainer(name).inspect();
    expect(info.HostConfig.PortBindings).toEqual({
      '80/tcp': [{ HostIp: '127.0.0.1', HostPort: newPort }],
    });
    expect(info.NetworkSettings.Ports['80/tcp']).toEqual(
      expect.arrayContaining([expect.objectContaining({ HostPort: newPort })]),
    );
    const original = await docker.getContainer(ORIGINAL).inspect();
    expect(original.NetworkSettings.Ports['80/tcp']?.[0]?.HostPort).toBe(originalPorts.web);
  });

  it('drops a port mapped to "" and publishes the other on its new host port', async () => {
    // Arrange
    const name = `${RUN}-noport`;
    const newPort = hostPort();

    // Act
    await restore({ name, ports: { '80': '', '81/tcp': newPort } });

    // Assert
    const info = await docker.getContainer(name).inspect();
    expect(info.HostConfig.PortBindings).toEqual({
      '81/tcp': [{ HostIp: '127.0.0.1', HostPort: newPort }],
    });
    expect(info.NetworkSettings.Ports['80/tcp'] ?? null).toBeNull();
  });

  it.each([
    ['an unknown volume to rename', { volumes: { nope: 'x' } }, [DATA, LOGS]],
    ['an unknown container port', { ports: { '9999/tcp': '1' } }, ['80/tcp', '81/tcp']],
    ['a network that does not exist', { network: `${RUN}-missing` }, ['docker network create']],
    ['an unknown volume to restore alone', { volume: 'nope' }, [DATA, LOGS]],
  ])(
    'refuses %s, naming the valid choices, before creating anything',
    async (_what, options, named) => {
      // Arrange
      const name = `${RUN}-refused`;
      const before = await runVolumes();

      // Act
      const attempt = restore({ name, ...options });

      // Assert
      const error = await attempt.then(
        () => undefined,
        (err: unknown) => err as Error,
      );
      expect(error?.name).toBe('DriverError');
      for (const text of named) expect(error?.message).toContain(text);
      expect(await runVolumes()).toEqual(before);
      await expect(docker.getContainer(name).inspect()).rejects.toMatchObject({ statusCode: 404 });
    },
  );

  it('restores one volume alone into a new volume, without loading the image or creating a container', async () => {
    // Arrange
    const ctx = makeContext();
    const imagesBefore = await images();

    // Act
    const result = await restore({ name: ORIGINAL, volume: DATA }, ctx);

    // Assert
    expect(result).toEqual({ restoredTarget: `docker:${ORIGINAL}` });
    expect(await runVolumes()).toContain(`${DATA}-restored`);
    expect(await volumePrint(`${DATA}-restored`)).toEqual(dataPrint);
    expect(ctx.phases.join('\n')).toContain(DATA);
    expect(ctx.phases).not.toContain('loading image');
    expect(await images()).toEqual(imagesBefore);
    const helpers = await docker.listContainers({
      all: true,
      filters: { label: [`io.stowage.helper.target=docker:${ORIGINAL}`] },
    });
    expect(helpers).toEqual([]);
    expect(await runVolumes()).not.toEqual(
      expect.arrayContaining([expect.stringMatching(/^stowage-volume-/)]),
    );
  });

  it('replaces the contents of an existing volume in place, even with a stopped container using it, and refuses without in place', async () => {
    // Arrange
    const into = `${RUN}-existing`;
    await docker.createVolume({ Name: into });
    const user = await mountVolume('stopped-user', into);
    await execIn(user, ['sh', '-c', 'echo stale > /v/stale.txt && mkdir -p /v/old/dir']);
    await docker.getContainer(user).stop({ t: 0 });

    // Act
    const refused = restore({ name: ORIGINAL, volume: DATA, intoVolume: into });
    await expect(refused).rejects.toMatchObject({ name: 'NameTaken' });
    await restore({ name: ORIGINAL, volume: DATA, intoVolume: into, inPlace: true });

    // Assert
    expect(await volumePrint(into)).toEqual(dataPrint);
    expect((await docker.getContainer(user).inspect()).State.Running).toBe(false);
  });

  it('refuses to restore into a volume a running container uses, leaving its data alone', async () => {
    // Arrange
    const into = `${RUN}-busy`;
    await docker.createVolume({ Name: into });
    const user = await mountVolume('running-user', into);
    await execIn(user, ['sh', '-c', 'echo live > /v/live.txt']);

    // Act
    const attempt = restore({ name: ORIGINAL, volume: LOGS, intoVolume: into, inPlace: true });

    // Assert
    await expect(attempt).rejects.toMatchObject({
      name: 'DriverError',
      message: expect.stringContaining(user),
    });
    expect(await execIn(user, ['cat', '/v/live.txt'])).toBe('live\n');
    expect((await docker.getContainer(user).inspect()).State.Running).toBe(true);
  });
  it('applies volume names and ports to an in-place restore, leaving the original volume that was renamed', async () => {
    // Arrange
    const logs2 = `${RUN}-logs2`;
    const newPort = hostPort();
    await execIn(ORIGINAL, ['sh', '-c', 'rm -rf /data/* && echo changed > /logs/app.log']);

    // Act
    await restore({
      name: ORIGINAL,
      inPlace: true,
      volumes: { [LOGS]: logs2 },
      ports: { '80/tcp': newPort },
    });

    // Assert: the old container is gone, so its unremapped host port is free to keep.
    const info = await docker.getContainer(ORIGINAL).inspect();
    expect(info.State.Running).toBe(true);
    expect(await fingerprint(ORIGINAL, '/data')).toEqual(dataPrint);
    expect(info.Mounts.find((m) => m.Destination === '/logs')?.Name).toBe(logs2);
    expect(await execIn(ORIGINAL, ['cat', '/logs/app.log'])).toBe('log line\n');
    expect(info.HostConfig.PortBindings).toEqual({
      '80/tcp': [{ HostIp: '127.0.0.1', HostPort: newPort }],
      '81/tcp': [{ HostIp: '127.0.0.1', HostPort: originalPorts.admin }],
    });
    expect((await volumePrint(LOGS)).sha256).toContain(
      (await execIn(ORIGINAL, ['sh', '-c', 'echo changed | sha256sum'])).split(' ')[0],
    );
  });
});
