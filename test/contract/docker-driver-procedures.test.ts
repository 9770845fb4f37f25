/**
 * The docker driver's whole backup-and-rollback procedure against the real dockerd: consistency
 * modes (live, pause, stop), hooks run inside the container, bind-mounted host directories, and
 * in-place restore over the same container and volume names. (What a failing backup or restore
 * leaves, in every mode, is the driver contract's: docker-driver.test.ts.) Every container, volume, image and
 * host directory this file creates carries the run's prefix and is removed in afterAll.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackupOptions, BackupSink, DriverContext } from '../../agents/core/driver';
import { createDockerDriver } from '../../agents/drivers/docker';
import { createLogger } from '../../kernel/logger';
import {
  docker,
  execIn,
  fingerprint,
  TEST_IMAGE,
  ensureTestImage,
  removeByPrefix,
} from '../fixtures/docker';
import { makeMemoryPoint, type MemoryPoint } from '../fixtures/memory-point';

const RUN = `stowage-p-${randomBytes(4).toString('hex')}`;
const driver = createDockerDriver();
const hostDirs: string[] = [];

function makeContext(
  overrides: Partial<DriverContext> = {},
): DriverContext & { logs: Array<Record<string, unknown>> } {
  const logs: Array<Record<string, unknown>> = [];
  const log = createLogger({
    service: 'test',
    level: 'debug',
    write: (line) => logs.push(JSON.parse(line) as Record<string, unknown>),
  });
  return { log, signal: new AbortController().signal, phase: () => undefined, logs, ...overrides };
}

/**
 * A running container with one volume `/data` holding a few files and a marker in /etc.
 * StopTimeout 1: `sleep` as PID 1 ignores SIGTERM, and stop mode should not wait 10 s for it.
 */
async function makeContainer(suffix: string, hostConfig: Docker.HostConfig = {}): Promise<string> {
  const name = `${RUN}-${suffix}`;
  await docker.createVolume({ Name: `${name}-data`, Labels: { 'io.stowage.test': RUN } });
  await docker.createContainer({
    name,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    StopTimeout: 1,
    Labels: { 'io.stowage.test': RUN },
    HostConfig: { Binds: [`${name}-data:/data`], ...hostConfig },
  } as Docker.ContainerCreateOptions);
  await docker.getContainer(name).start();
  await execIn(name, [
    'sh',
    '-c',
    [
      'set -e',
      'mkdir -p /data/sub && echo one > /data/sub/one.txt && chmod 0600 /data/sub/one.txt',
      'head -c 3000000 /dev/urandom > /data/noise.bin',
      'ln -s sub/one.txt /data/link',
      'echo v1 > /etc/stowage-marker',
    ].join('\n'),
  ]);
  return name;
}

async function state(name: string) {
  return (await docker.getContainer(name).inspect()).State;
}

/** A sink that records the container's state as each stream begins. */
function observingSink(
  point: MemoryPoint,
  name: string,
): BackupSink & {
  states: Array<{ stream: string; Running: boolean; Paused: boolean; Status: string }>;
} {
  const states: Array<{ stream: string; Running: boolean; Paused: boolean; Status: string }> = [];
  return {
    states,
    async writeStream(info, data) {
      const s = await state(name);
      states.push({ stream: info.name, Running: s.Running, Paused: s.Paused, Status: s.Status });
      return point.sink.writeStream(info, data);
    },
  };
}

async function restoreCopy(
  outcome: { metadata: Record<string, unknown> },
  point: MemoryPoint,
  copy: string,
  ctx = makeContext(),
) {
  return driver.restore(
    JSON.parse(JSON.stringify(outcome.metadata)) as Record<string, unknown>,
    point.source(),
    { name: copy, inPlace: false },
    ctx,
  );
}

async function imagesOf(repo: string): Promise<string[]> {
  const list = await docker.listImages({ filters: { reference: [`${repo}:*`] } });
  return list.flatMap((i) => i.RepoTags ?? []);
}

async function leftoversOf(name: string) {
  const containers = await docker.listContainers({
    all: true,
    filters: { name: [`${name}-stowage-old-`] },
  });
  const { Volumes } = await docker.listVolumes({ filters: { name: ['stowage-inplace-'] } });
  const ours = (Volumes ?? []).filter((v) => v.Labels?.['io.stowage.restore'] !== undefined);
  return { containers: containers.map((c) => c.Names[0]), tempVolumes: ours.map((v) => v.Name) };
}

beforeAll(async () => {
  await ensureTestImage();
}, 120_000);

afterAll(async () => {
  await removeByPrefix(RUN);
  for (const dir of hostDirs) rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('docker driver: consistency modes', () => {
  it.each([
    ['live', { Running: true, Paused: false }],
    ['pause', { Running: true, Paused: true }],
    ['stop', { Running: false, Paused: false }],
  ] as const)(
    'round-trips a container in %s mode, holding it %o during capture and running after',
    async (mode, during) => {
      // Arrange
      const name = await makeContainer(`mode-${mode}`);
      const before = await fingerprint(name, '/data');
      const point = makeMemoryPoint();
      const sink = observingSink(point, name);

      // Act
      const outcome = await driver.backup(name, sink, makeContext(), { consistency: mode });
      const after = await state(name);
      const copy = `${name}-copy`;
      await restoreCopy(outcome, point, copy);

      // Assert
      expect(sink.states.map((s) => s.stream)).toEqual(['image', `volume/${name}-data`]);
      for (const s of sink.states) expect(s).toMatchObject(during);
      expect(after).toMatchObject({ Running: true, Paused: false });
      expect(outcome.metadata).toMatchObject({ consistency: mode, wasRunning: true, binds: [] });
      expect(outcome.summary).toMatchObject({ consistency: mode, state: 'running' });
      expect((await state(copy)).Running).toBe(true);
      expect(await fingerprint(copy, '/data')).toEqual(before);
      expect(await execIn(copy, ['cat', '/etc/stowage-marker'])).toBe('v1\n');
    },
    30_000,
  );
});

describe('docker driver: hooks', () => {
  it('puts what a pre hook dumps into a volume in the backup, runs the post hook after restart, and logs both', async () => {
    // Arrange
    const name = await makeContainer('hook-dump');
    const ctx = makeContext();
    const point = makeMemoryPoint();
    const options: BackupOptions = {
      consistency: 'stop',
      hooks: {
        pre: [
          { command: ['sh', '-c', 'echo "dump $$" > /data/dump.sql; echo dumped; echo warn >&2'] },
        ],
        post: [{ command: ['sh', '-c', 'mv /data/dump.sql /data/dump.done'] }],
      },
    };

    // Act
    const outcome = await driver.backup(name, point.sink, ctx, options);
    const copy = `${name}-copy`;
    await restoreCopy(outcome, point, copy);

    // Assert
    const dumped = await execIn(name, ['cat', '/data/dump.done']);
    expect(dumped).toMatch(/^dump \d+\n$/);
    expect(await execIn(copy, ['cat', '/data/dump.sql'])).toBe(dumped);
    expect(outcome.metadata.hooks).toEqual([
      expect.objectContaining({
        phase: 'pre',
        exitCode: 0,
        outputTail: expect.stringContaining('dumped'),
      }),
      expect.objectContaining({
        phase: 'post',
        exitCode: 0,
        command: options.hooks?.post?.[0]?.command,
      }),
    ]);
    const hookLogs = ctx.logs.filter((l) => l.event === 'driver.hook');
    expect(hookLogs.map((l) => [l.phase, l.exitCode])).toEqual([
      ['pre', 0],
      ['post', 0],
    ]);
    expect(hookLogs[0]?.output).toEqual(expect.stringContaining('warn'));
    expect(await state(name)).toMatchObject({ Running: true, Paused: false });
  }, 30_000);

  it('fails the backup with a DriverError naming a failing pre hook, its exit code and output, leaving the container running', async () => {
    // Arrange
    const name = await makeContainer('hook-fail');
    const point = makeMemoryPoint();
    const command = ['sh', '-c', 'echo "cannot lock tables" >&2; exit 3'];

    // Act
    const attempt = driver.backup(name, point.sink, makeContext(), {
      consistency: 'pause',
      hooks: { pre: [{ command }] },
    });

    // Assert
    await expect(attempt).rejects.toMatchObject({
      name: 'DriverError',
      message: expect.stringMatching(/pre hook `sh -c .*exit 3`.*code 3.*cannot lock tables/s),
    });
    expect(point.stored).toEqual([]);
    expect(await state(name)).toMatchObject({ Running: true, Paused: false });
  }, 30_000);

  it('goes on past a failing hook with onError continue and records its exit code', async () => {
    // Arrange
    const name = await makeContainer('hook-continue');
    const point = makeMemoryPoint();

    // Act
    const outcome = await driver.backup(name, point.sink, makeContext(), {
      consistency: 'stop',
      hooks: { pre: [{ command: ['sh', '-c', 'exit 7'], onError: 'continue' }] },
    });

    // Assert
    expect(outcome.metadata.hooks).toEqual([
      expect.objectContaining({ phase: 'pre', exitCode: 7 }),
    ]);
    expect(point.stored.map((s) => s.name)).toEqual(['image', `volume/${name}-data`]);
    expect(await state(name)).toMatchObject({ Running: true, Paused: false });
  }, 30_000);

  it('fails a hook that outlives its timeout and kills it', async () => {
    // Arrange
    const name = await makeContainer('hook-timeout');
    const started = Date.now();

    // Act
    const attempt = driver.backup(name, makeMemoryPoint().sink, makeContext(), {
      consistency: 'stop',
      hooks: { pre: [{ command: ['sleep', '37'], timeoutSeconds: 1 }] },
    });

    // Assert
    await expect(attempt).rejects.toMatchObject({
      name: 'DriverError',
      message: expect.stringContaining('timed out after 1 s'),
    });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await state(name)).toMatchObject({ Running: true, Paused: false });
    expect(await execIn(name, ['ps'])).not.toContain('sleep 37');
  }, 30_000);

  it('refuses a pre hook in a container that is not running with a clear DriverError', async () => {
    // Arrange
    const name = await makeContainer('hook-stopped');
    await docker.getContainer(name).stop({ t: 0 });

    // Act
    const attempt = driver.backup(name, makeMemoryPoint().sink, makeContext(), {
      hooks: { pre: [{ command: ['true'] }] },
    });

    // Assert
    await expect(attempt).rejects.toMatchObject({
      name: 'DriverError',
      message: expect.stringContaining('is not running'),
    });
  }, 30_000);
});

describe('docker driver: bind mounts', () => {
  it('captures a bind-mounted host directory and restores it as a new volume without touching the host directory', async () => {
    // Arrange
    const dir = mkdtempSync(join(tmpdir(), `${RUN}-bind-`));
    hostDirs.push(dir);
    writeFileSync(join(dir, 'config.ini'), 'mode=production\n');
    // A bound file is a reference, not data: only the directory is captured.
    const name = await makeContainer('binds', {
      Binds: [`${RUN}-binds-data:/data`, `${dir}:/srv/conf`, `${dir}/config.ini:/etc/app.ini:ro`],
    });
    const before = await fingerprint(name, '/srv/conf');
    const point = makeMemoryPoint();

    // Act
    const outcome = await driver.backup(name, point.sink, makeContext(), { includeBinds: true });
    writeFileSync(join(dir, 'after-backup.txt'), 'added later\n');
    const copy = `${name}-copy`;
    const ctx = makeContext();
    await restoreCopy(outcome, point, copy, ctx);

    // Assert
    expect(point.stored.map((s) => [s.name, s.kind])).toEqual([
      ['image', 'docker-image-tar'],
      [`volume/${name}-data`, 'volume-tar'],
      ['bind/0', 'bind-tar'],
    ]);
    // Read through dockerd's archive API (a bind-tar stream), and the point says so.
    expect(outcome.metadata.binds).toEqual([
      { index: 0, source: dir, destination: '/srv/conf', readOnly: false, read: 'engine-api' },
    ]);
    const mounts = (await docker.getContainer(copy).inspect()).Mounts;
    expect(mounts.find((m) => m.Destination === '/srv/conf')).toMatchObject({
      Type: 'volume',
      Name: `${copy}_bind0`,
    });
    expect(mounts.find((m) => m.Destination === '/etc/app.ini')).toMatchObject({
      Type: 'bind',
      Source: join(dir, 'config.ini'),
    });
    expect(await fingerprint(copy, '/srv/conf')).toEqual(before);
    expect(readdirSync(dir).sort()).toEqual(['after-backup.txt', 'config.ini']);
    expect(readFileSync(join(dir, 'config.ini'), 'utf8')).toBe('mode=production\n');
    expect(ctx.logs.some((l) => l.step === 'bind mount restored as a volume')).toBe(true);
  }, 30_000);
});

describe('docker driver: in-place restore', () => {
  /** The "update": a changed file in /etc, a new one, and changed volume data. */
  async function update(name: string) {
    await execIn(name, [
      'sh',
      '-c',
      'echo v2 > /etc/stowage-marker && touch /etc/new-in-v2 && echo changed > /data/sub/one.txt && echo new > /data/new.txt',
    ]);
  }

  it('brings back the file system and the volume data under the same container and volume names, running', async () => {
    // Arrange
    const name = await makeContainer('inplace');
    const before = await fingerprint(name, '/data');
    const point = makeMemoryPoint();
    const outcome = await driver.backup(name, point.sink, makeContext());
    await update(name);
    const oldId = (await docker.getContainer(name).inspect()).Id;

    // Act
    const result = await driver.restore(
      outcome.metadata,
      point.source(),
      { name, inPlace: true },
      makeContext(),
    );

    // Assert
    expect(result).toEqual({ restoredTarget: `docker:${name}` });
    const now = await docker.getContainer(name).inspect();
    expect(now.Id).not.toBe(oldId);
    expect(now.State).toMatchObject({ Running: true, Paused: false });
    expect(
      now.Mounts.filter((m) => m.Type === 'volume').map((m) => [m.Name, m.Destination]),
    ).toEqual([[`${name}-data`, '/data']]);
    expect(await execIn(name, ['cat', '/etc/stowage-marker'])).toBe('v1\n');
    await expect(execIn(name, ['ls', '/etc/new-in-v2'])).rejects.toThrow();
    expect(await fingerprint(name, '/data')).toEqual(before);
    expect(await leftoversOf(name)).toEqual({ containers: [], tempVolumes: [] });
  }, 30_000);

  it('restores as new when no container has the name', async () => {
    // Arrange
    const name = await makeContainer('inplace-gone');
    const before = await fingerprint(name, '/data');
    const point = makeMemoryPoint();
    const outcome = await driver.backup(name, point.sink, makeContext());
    await docker.getContainer(name).remove({ force: true });

    // Act
    await driver.restore(outcome.metadata, point.source(), { name, inPlace: true }, makeContext());

    // Assert
    const now = await docker.getContainer(name).inspect();
    expect(now.State.Running).toBe(true);
    expect(now.Mounts.find((m) => m.Destination === '/data')?.Name).toBe(`${name}_${name}-data`);
    expect(await fingerprint(name, '/data')).toEqual(before);
  }, 30_000);

  it('refuses before touching anything when another container mounts one of the volumes', async () => {
    // Arrange
    const name = await makeContainer('inplace-shared');
    const point = makeMemoryPoint();
    const outcome = await driver.backup(name, point.sink, makeContext());
    const other = `${RUN}-inplace-sharer`;
    await docker.createContainer({
      name: other,
      Image: TEST_IMAGE,
      Cmd: ['true'],
      HostConfig: { Binds: [`${name}-data:/shared`] },
    });
    const { Id } = await docker.getContainer(name).inspect();

    // Act
    const attempt = driver.restore(
      outcome.metadata,
      point.source(),
      { name, inPlace: true },
      makeContext(),
    );

    // Assert
    await expect(attempt).rejects.toMatchObject({
      name: 'DriverError',
      message: expect.stringContaining(`also mounted by ${other}`),
    });
    const now = await docker.getContainer(name).inspect();
    expect(now.Id).toBe(Id);
    expect(now.State.Running).toBe(true);
    expect(await imagesOf(`stowage/${name}`)).toEqual([]);
  }, 30_000);
});
