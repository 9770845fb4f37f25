/**
 * The docker driver against the real dockerd (local/engines/setup.sh starts it and builds the
 * stowage-test/busybox image): the driver contract (driver-suite.ts) on a running container with
 * two volumes, in each consistency mode, then what only Docker has (container config, anonymous
 * volumes, volume and network clashes, the event watch). Streams go to an in-memory sink, so this
 * exercises only the driver: what it reads from dockerd, and whether what it writes back is the
 * same container. Every container, volume and image this file creates has the run's prefix and is
 * removed in afterAll; the shared helper image `stowage/helper:1` is left in place on purpose.
 */
import { randomBytes } from 'node:crypto';
import Docker from 'dockerode';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDockerDriver } from '../../agents/drivers/docker';
import {
  docker,
  engineInventory,
  execIn,
  fingerprint,
  runningState,
  TEST_IMAGE,
  ensureTestImage,
  removeByPrefix,
} from '../fixtures/docker';
import { makeMemoryPoint, makeDriverContext as makeContext } from '../fixtures/memory-point';
import { describeDriverContract } from './driver-suite';

const RUN = `stowage-t-${randomBytes(4).toString('hex')}`;
const driver = createDockerDriver();

// --- dockerd helpers ---------------------------------------------------------------------------

async function makeContainer(
  suffix: string,
  volumes: string[],
  extra: Partial<Docker.ContainerCreateOptions> = {},
  hostConfig: Docker.HostConfig = {},
): Promise<string> {
  const name = `${RUN}-${suffix}`;
  for (const v of volumes) {
    await docker.createVolume({ Name: `${name}-${v}`, Labels: { 'io.stowage.test': RUN } });
  }
  const [first, ...rest] = volumes;
  await docker.createContainer({
    name,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    Labels: { 'io.stowage.test': RUN },
    ...extra,
    HostConfig: {
      // One volume as a bind string, the others as Mounts: both forms must be remapped.
      Binds: first ? [`${name}-${first}:/${first}`] : [],
      Mounts: rest.map((v) => ({
        Type: 'volume' as const,
        Source: `${name}-${v}`,
        Target: `/${v}`,
      })),
      ...hostConfig,
    },
  });
  await docker.getContainer(name).start();
  return name;
}

/** One file's bytes and mode, read from a (possibly stopped) container through the archive API. */
async function readFileOf(
  container: string,
  path: string,
): Promise<{ mode: number; text: string }> {
  const archive = await docker.getContainer(container).getArchive({ path });
  const extract = tar.extract();
  const result = new Promise<{ mode: number; text: string }>((resolve, reject) => {
    extract.on('entry', (header, body, next) => {
      const chunks: Buffer[] = [];
      body.on('data', (c) => chunks.push(c as Buffer));
      body.on('end', () => {
        resolve({ mode: (header.mode ?? 0) & 0o7777, text: Buffer.concat(chunks).toString() });
        next();
      });
    });
    extract.on('error', reject);
  });
  archive.pipe(extract);
  return result;
}

async function inspect(name: string) {
  return docker.getContainer(name).inspect();
}

async function runVolumes(): Promise<string[]> {
  const { Volumes } = await docker.listVolumes({ filters: { name: [RUN] } });
  return (Volumes ?? []).map((v) => v.Name).sort();
}

async function imagesOf(repo: string): Promise<string[]> {
  const list = await docker.listImages({ filters: { reference: [`${repo}:*`] } });
  return list.flatMap((i) => i.RepoTags ?? []);
}

// Builds the two volumes' contents; every kind of entry a tar round trip can get wrong.
const FIXTURE = String.raw`
set -e
cd /data
mkdir -p nested/deeper/deepest empty app-dir
echo secret > private.txt && chmod 0600 private.txt
printf '#!/bin/sh\necho hi\n' > run.sh && chmod 0755 run.sh
echo owned > owned-by-app.txt && chown 1000:1000 owned-by-app.txt
chown 1000:1000 app-dir && chmod 0750 app-dir
echo nested > nested/deeper/deepest/file.txt && chmod 0444 nested/deeper/deepest/file.txt
ln -s nested/deeper/deepest/file.txt link-to-file
ln -s /does/not/exist dangling-link && chown -h 1000:1000 dangling-link
echo unicode > 'héllo wörld – 日本語.txt'
head -c 1048576 /dev/urandom > big.bin
dd if=/dev/zero bs=1048576 count=8 2>/dev/null >> big.bin
head -c 2097152 /dev/urandom >> big.bin
dd if=/dev/zero bs=1048576 count=9 2>/dev/null >> big.bin
cd /cache
chown 1000:1000 . && chmod 0775 .
echo cache > c.txt && chmod 0640 c.txt && chown 1000:0 c.txt
mkdir sub && ln -s ../c.txt sub/link
echo 'changed by the test' > /etc/stowage-marker
`;

beforeAll(async () => {
  await ensureTestImage();
}, 120_000);

afterAll(() => removeByPrefix(RUN), 60_000);

/** The files of /etc a restore brings back (dockerd writes hostname, hosts, resolv.conf). */
const ETC = `cd /etc && find . -type f ! -name hostname ! -name hosts ! -name resolv.conf -exec sha256sum {} + | sort`;

describeDriverContract(
  'docker',
  async () => {
    // `sleep` as PID 1 ignores SIGTERM; this one exits on it, so a stop takes no timeout.
    const target = await makeContainer('contract', ['data', 'cache'], {
      Cmd: ['sh', '-c', 'trap "exit 0" TERM; sleep 100000 & wait'],
    });
    await execIn(target, [
      'sh',
      '-c',
      [
        'set -e',
        'mkdir -p /data/sub && echo one > /data/sub/one.txt && chmod 0600 /data/sub/one.txt',
        'head -c 3000000 /dev/urandom > /data/noise.bin && ln -s sub/one.txt /data/link',
        'echo cache > /cache/c.txt && chown 1000:1000 /cache/c.txt',
        'echo v1 > /etc/stowage-marker',
      ].join('\n'),
    ]);
    return {
      driver,
      target,
      missing: `${RUN}-missing`,
      copyName: (label) => `${RUN}-contract-${label}`,
      content: async (name) => ({
        data: await fingerprint(name, '/data'),
        cache: await fingerprint(name, '/cache'),
        etc: await execIn(name, ['sh', '-c', ETC]),
      }),
      state: runningState,
      leftovers: () => engineInventory(RUN),
      change: async (name) => {
        await execIn(name, [
          'sh',
          '-c',
          'echo v2 > /etc/stowage-marker && touch /etc/new-in-v2 && echo changed > /data/sub/one.txt',
        ]);
      },
    };
  },
  {
    holds: [
      { label: 'live', options: { consistency: 'live' }, during: { Running: true, Paused: false } },
      {
        label: 'pause',
        options: { consistency: 'pause' },
        during: { Running: true, Paused: true },
      },
      { label: 'stop', options: { consistency: 'stop' }, during: { Running: false } },
    ],
    inPlace: true,
    hints: { targetNotFound: 'stowage targets --platform docker' },
  },
);

describe('docker driver', () => {
  it('restores a running container with its volumes and root fs changes under a new name, leaving the original untouched', async () => {
    // Arrange
    const [net, net2] = [`${RUN}-net`, `${RUN}-net2`];
    await docker.createNetwork({ Name: net });
    await docker.createNetwork({ Name: net2 });
    const hostPort = String(20000 + Math.floor(Math.random() * 20000));
    const original = await makeContainer(
      'web',
      ['data', 'cache'],
      {
        Env: ['APP_MODE=test', 'GREETING=héllo'],
        WorkingDir: '/data',
        Labels: { 'io.stowage.test': RUN, app: 'demo' },
        ExposedPorts: { '80/tcp': {} },
        NetworkingConfig: { EndpointsConfig: { [net]: { Aliases: ['web-alias'] } } },
      },
      {
        NetworkMode: net,
        PortBindings: { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: hostPort }] },
      },
    );
    await docker.getNetwork(net2).connect({
      Container: original,
      EndpointConfig: { Aliases: ['web-alias-2'] },
    });
    await execIn(original, ['sh', '-c', FIXTURE]);
    const before = {
      data: await fingerprint(original, '/data'),
      cache: await fingerprint(original, '/cache'),
    };
    expect(before.data.stat).toContain('./big.bin 644 0 0 regular file 20971520');
    expect(before.data.stat).toContain('héllo wörld');
    const point = makeMemoryPoint();
    const ctx = makeContext();

    // Act
    const outcome = await driver.backup(original, point.sink, ctx);
    const temporaryImagesAfterBackup = await imagesOf(`stowage/${original}`);
    const restored = `${RUN}-restored`;
    const result = await driver.restore(
      JSON.parse(JSON.stringify(outcome.metadata)) as Record<string, unknown>,
      point.source(),
      { name: restored, inPlace: false },
      makeContext(),
    );

    // Assert: the backup
    expect(point.stored.map((s) => [s.name, s.kind])).toEqual([
      ['image', 'docker-image-tar'],
      [`volume/${original}-cache`, 'volume-tar'],
      [`volume/${original}-data`, 'volume-tar'],
    ]);
    expect(ctx.phases).toEqual(
      expect.arrayContaining([
        'committing image',
        'saving image',
        `volume ${original}-data`,
        `volume ${original}-cache`,
      ]),
    );
    expect(outcome.summary).toEqual({
      image: TEST_IMAGE,
      volumes: 2,
      state: 'running',
      consistency: 'live',
    });
    expect(outcome.metadata).toMatchObject({ originalImage: TEST_IMAGE, wasRunning: true });
    expect(temporaryImagesAfterBackup).toEqual([]);

    // Assert: the restored container
    expect(result).toEqual({ restoredTarget: `docker:${restored}` });
    const [a, b] = [await inspect(original), await inspect(restored)];
    expect(b.State.Running).toBe(true);
    expect(b.Config.Env).toEqual(a.Config.Env);
    expect(b.Config.Cmd).toEqual(a.Config.Cmd);
    expect(b.Config.Labels).toEqual(a.Config.Labels);
    expect(b.Config.WorkingDir).toBe('/data');
    expect(b.Config.ExposedPorts).toEqual(a.Config.ExposedPorts);
    // The original still holds the host port: the copy must start without it.
    expect(Object.keys(b.HostConfig.PortBindings ?? {})).toEqual([]);
    expect(b.HostConfig.NetworkMode).toBe(net);
    const aliases = (i: typeof a, n: string) => i.NetworkSettings.Networks[n]?.Aliases ?? [];
    expect(aliases(b, net)).toContain('web-alias');
    expect(aliases(b, net)).not.toContain(a.Id.slice(0, 12));
    expect(aliases(b, net2)).toContain('web-alias-2');
    const volumesOf = (i: typeof a) =>
      i.Mounts.filter((m) => m.Type === 'volume')
        .map((m) => `${m.Name} ${m.Destination}`)
        .sort();
    expect(volumesOf(b)).toEqual([
      `${restored}_${original}-cache /cache`,
      `${restored}_${original}-data /data`,
    ]);
    expect(await fingerprint(restored, '/data')).toEqual(before.data);
    expect(await fingerprint(restored, '/cache')).toEqual(before.cache);
    expect(await execIn(restored, ['cat', '/etc/stowage-marker'])).toBe('changed by the test\n');

    // Assert: the original
    expect(a.State.Running).toBe(true);
    expect(a.State.Paused).toBe(false);
    expect(volumesOf(a)).toEqual([`${original}-cache /cache`, `${original}-data /data`]);
    expect(await fingerprint(original, '/data')).toEqual(before.data);
    expect(await fingerprint(original, '/cache')).toEqual(before.cache);
    expect((await driver.listTargets()).map((t) => t.target)).toEqual(
      expect.arrayContaining([`docker:${original}`, `docker:${restored}`]),
    );
  }, 60_000);

  it('restores a stopped container with an anonymous volume and leaves the copy stopped', async () => {
    // Arrange
    const name = `${RUN}-stopped`;
    await docker.createContainer({
      name,
      Image: TEST_IMAGE,
      Cmd: ['sh', '-c', 'echo anonymous > /anon/file && chmod 0600 /anon/file'],
      Volumes: { '/anon': {} },
    });
    await docker.getContainer(name).start();
    await docker.getContainer(name).wait();
    const point = makeMemoryPoint();
    const restored = `${RUN}-stopped-copy`;

    // Act
    const outcome = await driver.backup(name, point.sink, makeContext());
    await driver.restore(
      outcome.metadata,
      point.source(),
      { name: restored, inPlace: false },
      makeContext(),
    );

    // Assert
    expect(outcome.summary).toMatchObject({ volumes: 1, state: 'exited' });
    const copy = await inspect(restored);
    expect(copy.State.Status).toBe('created');
    const anonymous = (await inspect(name)).Mounts.find((m) => m.Destination === '/anon');
    expect(copy.Mounts.find((m) => m.Destination === '/anon')?.Name).toBe(
      `${restored}_${anonymous?.Name}`,
    );
    expect(await readFileOf(restored, '/anon/file')).toEqual({ mode: 0o600, text: 'anonymous\n' });
  }, 30_000);

  it('refuses with NameTaken, naming the volume, when a volume the restore would create exists', async () => {
    // Arrange
    const name = await makeContainer('voltaken', ['data']);
    const point = makeMemoryPoint();
    const outcome = await driver.backup(name, point.sink, makeContext());
    const restored = `${RUN}-voltaken-copy`;
    await docker.createVolume({ Name: `${restored}_${name}-data` });
    const volumesBefore = await runVolumes();

    // Act
    const attempt = driver.restore(
      outcome.metadata,
      point.source(),
      { name: restored, inPlace: false },
      makeContext(),
    );

    // Assert
    await expect(attempt).rejects.toMatchObject({
      name: 'NameTaken',
      message: expect.stringContaining(`${restored}_${name}-data`),
    });
    expect(await runVolumes()).toEqual(volumesBefore);
    expect(await driver.exists(restored)).toBe(false);
  }, 30_000);

  it('refuses with DriverError naming the network when a network the container used is gone', async () => {
    // Arrange
    const net = `${RUN}-gone-net`;
    await docker.createNetwork({ Name: net });
    const name = await makeContainer('netgone', ['data'], {}, { NetworkMode: net });
    const point = makeMemoryPoint();
    const outcome = await driver.backup(name, point.sink, makeContext());
    await docker.getContainer(name).remove({ force: true });
    await docker.getNetwork(net).remove();
    const volumesBefore = await runVolumes();

    // Act
    const attempt = driver.restore(
      outcome.metadata,
      point.source(),
      { name, inPlace: false },
      makeContext(),
    );

    // Assert
    await expect(attempt).rejects.toMatchObject({
      name: 'DriverError',
      message: expect.stringContaining(`docker network create ${net}`),
    });
    expect(await runVolumes()).toEqual(volumesBefore);
    expect(await driver.exists(name)).toBe(false);
  }, 30_000);

  it('reports an unreachable dockerd as a TransientError that says how to start it', async () => {
    const offline = createDockerDriver({ socketPath: `/tmp/${RUN}-no-such.sock` });
    await expect(offline.listTargets()).rejects.toMatchObject({
      name: 'TransientError',
      message: expect.stringContaining('local/engines/setup.sh'),
    });
  });

  it('lists containers as docker targets with their image and volumes, skipping helper containers', async () => {
    // Arrange
    const name = await makeContainer('listed', ['data']);
    const helperLike = `${RUN}-helperlike`;
    await docker.createContainer({
      name: helperLike,
      Image: TEST_IMAGE,
      Labels: { 'io.stowage.helper': '1' },
    });
    const labelled = `${RUN}-labelled`;
    const labels = { app: 'shop', 'com.example.tier': 'web=front' };
    await docker.createContainer({ name: labelled, Image: TEST_IMAGE, Labels: labels });
    const { Id } = await inspect(name);

    // Act
    const targets = await driver.listTargets();

    // Assert
    expect(targets.find((t) => t.name === name)).toMatchObject({
      target: `docker:${name}`,
      platform: 'docker',
      state: 'running',
      details: { image: TEST_IMAGE, volumes: `${name}-data` },
    });
    expect(targets.some((t) => t.name === helperLike)).toBe(false);
    // Labels travel with the inventory: backups by label selector match them.
    expect(targets.find((t) => t.name === labelled)?.labels).toEqual(labels);
    expect(await driver.exists(name)).toBe(true);
    expect(await driver.exists(`${RUN}-missing`)).toBe(false);
    // dockerd also resolves id prefixes; a target is a name.
    expect(await driver.exists(Id.slice(0, 12))).toBe(false);
  });

  it('calls watch back after a burst of container events and stops after unsubscribe', async () => {
    let calls = 0;
    const unsubscribe = driver.watch!(() => calls++);
    await new Promise((r) => setTimeout(r, 300));
    const name = `${RUN}-watched`;
    await docker.createContainer({ name, Image: TEST_IMAGE, Cmd: ['true'] });
    await docker.getContainer(name).remove();
    await new Promise((r) => setTimeout(r, 600));
    // Exactly one for our burst when the engine is otherwise idle; others may share dockerd.
    expect(calls).toBeGreaterThanOrEqual(1);
    unsubscribe();
    const atUnsubscribe = calls;
    await docker.createContainer({ name, Image: TEST_IMAGE, Cmd: ['true'] });
    await docker.getContainer(name).remove();
    await new Promise((r) => setTimeout(r, 400));
    expect(calls).toBe(atUnsubscribe);
  }, 10_000);
});
