/**
 * The docker-compose driver against the real dockerd. No compose binary: the project is made the
 * way `docker compose up` leaves it, containers, volumes and a network carrying the
 * `com.docker.compose.*` labels, created directly through the Docker API.
 *
 * The project: `db` (private volume `dbdata` at /data) ← `api` ← `web` (depends_on labels), `api`
 * and `web` sharing volume `shared` at /shared, all three on network `backend` with their service
 * name as alias; and `agent` in db's network namespace (`network_mode: service:db`, which Compose
 * writes as `container:<db's id>`) with no depends_on label: only that orders it after db; it
 * bind-mounts a host directory at /conf. The driver contract (driver-suite.ts) runs last, on the
 * same project. Everything carries the run's prefix and is removed in afterAll (the shared helper
 * image `stowage/helper:1` stays, on purpose).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackupSink } from '../../agents/core/driver';
import { MemoryParentRegistry } from '../../agents/core/parents';
import { readManifest } from '../../agents/core/points';
import { runBackup, runRestore, type RunnerDeps } from '../../agents/core/runner';
import { createComposeDriver } from '../../agents/drivers/docker';
import { silentLogger } from '../../kernel/logger';
import type { RestoreTask } from '../../statemachines/contracts';
import {
  docker,
  engineInventory,
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
import { dirRepository, makeRun } from '../fixtures/runner';
import { describeDriverContract } from './driver-suite';

const RUN = `stowage-tc-${randomBytes(4).toString('hex')}`;
const PROJECT = RUN;
const driver = createComposeDriver();
/** In the order they are created (and must be restored). */
const SERVICES = ['db', 'agent', 'api', 'web'] as const;
type Service = (typeof SERVICES)[number];

/** The host directory `agent` bind-mounts at /conf (removed in afterAll). */
const CONF_DIR = mkdtempSync(join(tmpdir(), `${RUN}-conf-`));

const containerOf = (project: string, service: Service) => `${project}-${service}-1`;

const DEPENDS_ON: Record<Service, string | undefined> = {
  db: undefined,
  agent: undefined,
  api: 'db:service_started:false',
  web: 'api:service_started:false',
};
const MOUNTS: Record<Service, Array<[volume: string, target: string]>> = {
  db: [['dbdata', '/data']],
  agent: [],
  api: [['shared', '/shared']],
  web: [['shared', '/shared']],
};

/** What `docker compose up` would leave for the project described above. */
async function makeProject(project: string): Promise<void> {
  const labels = (extra: Record<string, string>) => ({
    'com.docker.compose.project': project,
    'io.stowage.test': RUN,
    ...extra,
  });
  const network = `${project}_backend`;
  await docker.createNetwork({
    Name: network,
    Labels: labels({ 'com.docker.compose.network': 'backend' }),
  });
  for (const volume of ['shared', 'dbdata']) {
    await docker.createVolume({
      Name: `${project}_${volume}`,
      Labels: labels({ 'com.docker.compose.volume': volume }),
    });
  }
  const dbId = { value: '' };
  for (const service of SERVICES) {
    const name = containerOf(project, service);
    const dependsOn = DEPENDS_ON[service];
    const ownNetwork = service !== 'agent';
    await docker.createContainer({
      name,
      Image: TEST_IMAGE,
      // sh as PID 1 ignores SIGTERM; this one exits on it, so a stop takes no 10 s timeout.
      Cmd: ['sh', '-c', 'trap "exit 0" TERM; sleep 100000 & wait'],
      Labels: labels({
        'com.docker.compose.service': service,
        'com.docker.compose.container-number': '1',
        'com.docker.compose.oneoff': 'False',
        'com.docker.compose.project.working_dir': '/srv/demo',
        'com.docker.compose.project.config_files': '/srv/demo/compose.yaml',
        ...(dependsOn ? { 'com.docker.compose.depends_on': dependsOn } : {}),
      }),
      ExposedPorts: service === 'web' ? { '80/tcp': {} } : undefined,
      HostConfig: {
        NetworkMode: ownNetwork ? network : `container:${dbId.value}`,
        Mounts: [
          ...MOUNTS[service].map(([volume, target]) => ({
            Type: 'volume' as const,
            Source: `${project}_${volume}`,
            Target: target,
          })),
          ...(service === 'agent'
            ? [{ Type: 'bind' as const, Source: CONF_DIR, Target: '/conf', ReadOnly: true }]
            : []),
        ],
        ...(service === 'web'
          ? {
              PortBindings: {
                '80/tcp': [
                  {
                    HostIp: '127.0.0.1',
                    HostPort: String(20000 + Math.floor(Math.random() * 20000)),
                  },
                ],
              },
            }
          : {}),
      },
      NetworkingConfig: ownNetwork
        ? { EndpointsConfig: { [network]: { Aliases: [name, service] } } }
        : undefined,
    });
    await docker.getContainer(name).start();
    if (service === 'db') dbId.value = (await docker.getContainer(name).inspect()).Id;
  }
}

// Every kind of entry a tar round trip can get wrong, in both volumes.
const FILL = String.raw`
set -e
cd "$1"
mkdir -p nested/deeper app-dir
echo secret > private.txt && chmod 0600 private.txt
echo owned > owned.txt && chown 1000:1000 owned.txt
chown 1000:1000 app-dir && chmod 0750 app-dir
echo nested > nested/deeper/file.txt && chmod 0444 nested/deeper/file.txt
ln -s nested/deeper/file.txt link
head -c 524288 /dev/urandom > noise.bin
`;

async function fill(container: string, dir: string): Promise<void> {
  await execIn(container, ['sh', '-c', FILL, 'fill', dir]);
}

async function fingerprints(project: string) {
  return {
    db: await fingerprint(containerOf(project, 'db'), '/data'),
    api: await fingerprint(containerOf(project, 'api'), '/shared'),
    web: await fingerprint(containerOf(project, 'web'), '/shared'),
  };
}

async function states(project: string) {
  const out: Record<string, { Running: boolean; Paused: boolean }> = {};
  for (const service of SERVICES) {
    const { State } = await docker.getContainer(containerOf(project, service)).inspect();
    out[service] = { Running: State.Running, Paused: State.Paused };
  }
  return out;
}

/** A sink that records every container's state as each stream begins: what capture held. */
function observingSink(point: MemoryPoint, project: string) {
  const seen: Array<{ stream: string; states: Awaited<ReturnType<typeof states>> }> = [];
  const sink: BackupSink = {
    async writeStream(info, data) {
      seen.push({ stream: info.name, states: await states(project) });
      return point.sink.writeStream(info, data);
    },
  };
  return { sink, seen };
}

/** Milliseconds of each container's last start and stop, in SERVICES order. */
async function times(project: string) {
  const all = await Promise.all(
    SERVICES.map(async (s) => (await docker.getContainer(containerOf(project, s)).inspect()).State),
  );
  return {
    started: all.map((st) => Date.parse(st.StartedAt)),
    finished: all.map((st) => Date.parse(st.FinishedAt)),
  };
}

const ascending = (xs: number[]) => xs.every((x, i) => i === 0 || (xs[i - 1] as number) < x);

const ALL_RUNNING = {
  db: { Running: true, Paused: false },
  agent: { Running: true, Paused: false },
  api: { Running: true, Paused: false },
  web: { Running: true, Paused: false },
};

beforeAll(async () => {
  await ensureTestImage();
  writeFileSync(join(CONF_DIR, 'agent.ini'), 'mode=production\n');
  await makeProject(PROJECT);
  await fill(containerOf(PROJECT, 'db'), '/data');
  await fill(containerOf(PROJECT, 'api'), '/shared');
}, 120_000);

afterAll(async () => {
  await removeByPrefix(RUN);
  rmSync(CONF_DIR, { recursive: true, force: true });
}, 60_000);

describe('docker-compose driver', () => {
  it('lists the project as one running target with its containers and services', async () => {
    const targets = await driver.listTargets();

    expect(targets.find((t) => t.name === PROJECT)).toEqual({
      target: `docker-compose:${PROJECT}`,
      platform: 'docker-compose',
      name: PROJECT,
      state: 'running',
      details: { containers: '4', services: 'agent,api,db,web' },
    });
    expect(await driver.exists(PROJECT)).toBe(true);
    expect(await driver.exists(`${RUN}-missing`)).toBe(false);
  });

  it('backs up the project stopped and restores it under a new name: running, same data, one shared volume, reachable by alias', async () => {
    // Arrange
    const point = makeMemoryPoint();
    const observed = observingSink(point, PROJECT);
    const ctx = makeContext();
    const timesBefore = await times(PROJECT);
    const copy = `${RUN}-copy`;

    // Act
    const outcome = await driver.backup(PROJECT, observed.sink, ctx, {
      consistency: 'stop',
      includeBinds: true,
      hooks: { pre: [{ command: ['sh', '-c', 'echo dumped > /data/dump.sql'] }] },
    });
    const before = await fingerprints(PROJECT);
    const result = await driver.restore(
      JSON.parse(JSON.stringify(outcome.metadata)) as Record<string, unknown>,
      point.source(),
      { name: copy, inPlace: false },
      makeContext(),
    );

    // Assert: the backup
    expect(point.stored.map((s) => [s.name, s.kind])).toEqual([
      ['container/db/image', 'docker-image-tar'],
      [`volume/${PROJECT}_dbdata`, 'volume-tar'],
      ['container/agent/image', 'docker-image-tar'],
      ['container/agent/bind/0', 'bind-tar'],
      ['container/api/image', 'docker-image-tar'],
      [`volume/${PROJECT}_shared`, 'volume-tar'],
      ['container/web/image', 'docker-image-tar'],
    ]);
    expect(outcome.summary).toEqual({
      containers: 4,
      services: 'db,agent,api,web',
      volumes: 2,
      networks: 1,
      state: 'running',
      consistency: 'stop',
      hooks: 1,
    });
    expect(outcome.metadata).toMatchObject({
      format: 'stowage.docker-compose/1',
      project: PROJECT,
      hookContainer: containerOf(PROJECT, 'db'),
      networks: [{ name: `${PROJECT}_backend`, driver: 'bridge' }],
      containers: [
        { service: 'db', dependsOn: [], wasRunning: true },
        { service: 'agent', dependsOn: [] },
        { service: 'api', dependsOn: [{ service: 'db', condition: 'service_started' }] },
        { service: 'web', dependsOn: [{ service: 'api', restart: false }] },
      ],
    });
    expect(before.db.stat).toContain('./dump.sql');

    // Assert: the original was held stopped for the whole capture, stopped dependants first,
    // started dependencies first, and runs now
    const stopped = { Running: false, Paused: false };
    for (const { states: during } of observed.seen) {
      expect(during).toEqual({ db: stopped, agent: stopped, api: stopped, web: stopped });
    }
    expect(await states(PROJECT)).toEqual(ALL_RUNNING);
    const timesAfter = await times(PROJECT);
    timesAfter.started.forEach((at, i) =>
      expect(at).toBeGreaterThan(timesBefore.started[i] as number),
    );
    expect(ascending(timesAfter.started)).toBe(true);
    expect(ascending([...timesAfter.finished].reverse())).toBe(true);

    // Assert: the copy
    expect(result).toEqual({ restoredTarget: `docker-compose:${copy}` });
    expect(await states(copy)).toEqual(ALL_RUNNING);
    expect(await fingerprints(copy)).toEqual(before);
    expect(await fingerprints(PROJECT)).toEqual(before);
    const inspected = Object.fromEntries(
      await Promise.all(
        SERVICES.map(
          async (s) => [s, await docker.getContainer(containerOf(copy, s)).inspect()] as const,
        ),
      ),
    );
    const volumesOf = (s: Service) =>
      inspected[s]?.Mounts.filter((m) => m.Type === 'volume').map((m) => m.Name);
    expect(volumesOf('db')).toEqual([`${copy}_dbdata`]);
    expect(volumesOf('api')).toEqual([`${copy}_shared`]);
    expect(volumesOf('web')).toEqual([`${copy}_shared`]);
    await execIn(containerOf(copy, 'api'), ['sh', '-c', 'echo from-api > /shared/written']);
    expect(await execIn(containerOf(copy, 'web'), ['cat', '/shared/written'])).toBe('from-api\n');
    for (const s of ['db', 'api', 'web'] as const) {
      expect(inspected[s]?.Config.Labels).toMatchObject({
        'com.docker.compose.project': copy,
        'com.docker.compose.service': s,
        'com.docker.compose.project.working_dir': '/srv/demo',
      });
      expect(Object.keys(inspected[s]?.NetworkSettings.Networks ?? {})).toEqual([
        `${copy}_backend`,
      ]);
      expect(inspected[s]?.NetworkSettings.Networks[`${copy}_backend`]?.Aliases).toContain(s);
    }
    expect(inspected.agent?.Config.Labels).toMatchObject({ 'com.docker.compose.project': copy });
    // The captured bind comes back as a volume of its own; the host directory is not written.
    expect(
      inspected.agent?.Mounts.filter((m) => m.Destination === '/conf').map((m) => m.Name),
    ).toEqual([`${containerOf(copy, 'agent')}_bind0`]);
    expect(await execIn(containerOf(copy, 'agent'), ['cat', '/conf/agent.ini'])).toBe(
      'mode=production\n',
    );
    expect(readdirSync(CONF_DIR)).toEqual(['agent.ini']);
    expect([`container:${containerOf(copy, 'db')}`, `container:${inspected.db?.Id}`]).toContain(
      inspected.agent?.HostConfig.NetworkMode,
    );
    // The original still publishes web's host port: the copy starts without it.
    expect(Object.keys(inspected.web?.HostConfig.PortBindings ?? {})).toEqual([]);
    const apiAddress = inspected.api?.NetworkSettings.Networks[`${copy}_backend`]?.IPAddress;
    const pinged = await execIn(containerOf(copy, 'web'), ['ping', '-c', '1', '-W', '2', 'api']);
    expect(pinged).toContain(`(${apiAddress})`);
    await execIn(containerOf(copy, 'api'), ['ping', '-c', '1', '-W', '2', 'db']);
    expect(await driver.exists(copy)).toBe(true);
    const restoredNetwork = await docker.getNetwork(`${copy}_backend`).inspect();
    expect(restoredNetwork.Labels).toMatchObject({
      'com.docker.compose.project': copy,
      'com.docker.compose.network': 'backend',
    });
  }, 60_000);

  it('holds every container paused through a pause backup, and refuses with NameTaken a restore that would create an existing network, and a one-volume restore, creating nothing', async () => {
    // Arrange
    const point = makeMemoryPoint();
    const observed = observingSink(point, PROJECT);
    const outcome = await driver.backup(PROJECT, observed.sink, makeContext(), {
      consistency: 'pause',
    });
    const paused = { Running: true, Paused: true };
    expect(observed.seen).toHaveLength(6);
    for (const { states: during } of observed.seen) {
      expect(during).toEqual({ db: paused, agent: paused, api: paused, web: paused });
    }
    const squatted = `${RUN}-squat`;
    await docker.createNetwork({ Name: `${squatted}_backend` });
    const before = await engineInventory(RUN);

    // Act
    const ontoNetwork = driver.restore(
      outcome.metadata,
      point.source(),
      { name: squatted, inPlace: false },
      makeContext(),
    );

    // Assert
    await expect(ontoNetwork).rejects.toMatchObject({
      name: 'NameTaken',
      message: expect.stringContaining(`network ${squatted}_backend`),
    });
    expect(await engineInventory(RUN)).toEqual(before);
    expect(await states(PROJECT)).toEqual(ALL_RUNNING);
    await expect(
      driver.restore(
        outcome.metadata,
        point.source(),
        { name: `${RUN}-one-volume`, inPlace: false, volume: `${PROJECT}_shared` },
        makeContext(),
      ),
    ).rejects.toMatchObject({
      name: 'DriverError',
      message: expect.stringContaining('volume cannot apply to a Compose project restore'),
    });
  }, 30_000);

  it('lists a project with a stopped container as partial and restores that container stopped', async () => {
    // Arrange
    const web = containerOf(PROJECT, 'web');
    await docker.getContainer(web).stop({ t: 1 });
    const copy = `${RUN}-partial`;
    try {
      const point = makeMemoryPoint();

      // Act
      const listed = (await driver.listTargets()).find((t) => t.name === PROJECT);
      const outcome = await driver.backup(PROJECT, point.sink, makeContext());
      await driver.restore(
        outcome.metadata,
        point.source(),
        { name: copy, inPlace: false },
        makeContext(),
      );

      // Assert
      expect(listed?.state).toBe('partial');
      expect(outcome.summary).toMatchObject({ state: 'partial', consistency: 'live' });
      expect(await states(copy)).toEqual({
        ...ALL_RUNNING,
        web: { Running: false, Paused: false },
      });
      expect((await docker.getContainer(containerOf(copy, 'web')).inspect()).State.Status).toBe(
        'created',
      );
    } finally {
      await docker.getContainer(web).start();
    }
  }, 30_000);

  it("takes each container's image from the last point while its writable layer is unchanged, and commits the one that changed", async () => {
    const dir = mkdtempSync(join(tmpdir(), `${RUN}-repo-`));
    const repo = await dirRepository(dir);
    const deps: RunnerDeps = {
      agent: 'local',
      drivers: new Map([['docker-compose', driver]]),
      repository: async () => repo,
      log: silentLogger,
      parents: new MemoryParentRegistry(),
    };
    let seq = 0;
    const backup = async () => {
      const id = `rp-${RUN}-${++seq}`;
      await runBackup(
        deps,
        {
          kind: 'BACKUP',
          jobId: `job-${seq}`,
          itemIndex: 0,
          recoveryPointId: id,
          target: `docker-compose:${PROJECT}`,
          options: {},
        },
        makeRun(),
      );
      const manifest = await readManifest(repo, id);
      const images = Object.fromEntries(
        manifest.streams
          .filter((st) => st.kind === 'docker-image-tar')
          .map((st) => [st.name.split('/')[1], st]),
      );
      return { id, images };
    };
    try {
      const first = await backup();
      expect(Object.keys(first.images)).toEqual(['db', 'agent', 'api', 'web']);
      const second = await backup();
      expect(second.images).toEqual(first.images);

      const marker = randomBytes(8).toString('hex');
      await execIn(containerOf(PROJECT, 'web'), ['sh', '-c', `echo ${marker} > /web-marker`]);
      const third = await backup();
      for (const service of ['db', 'agent', 'api']) {
        expect(third.images[service], service).toEqual(first.images[service]);
      }
      expect(third.images.web!.source).not.toBe(first.images.web!.source);

      const copy = `${RUN}-img`;
      const task: RestoreTask = {
        kind: 'RESTORE',
        jobId: `job-${++seq}`,
        recoveryPointId: third.id,
        source: `docker-compose:${PROJECT}`,
        target: `docker-compose:${copy}`,
        inPlace: false,
        options: {},
      };
      await runRestore(deps, task, makeRun());
      expect(await states(copy)).toEqual(ALL_RUNNING);
      expect(await execIn(containerOf(copy, 'web'), ['cat', '/web-marker'])).toBe(`${marker}\n`);
      await expect(execIn(containerOf(copy, 'api'), ['ls', '/web-marker'])).rejects.toThrow();
    } finally {
      await repo.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});

// Last: its in-place case leaves the project's data changed.
describeDriverContract(
  'docker-compose',
  async () => ({
    driver,
    target: PROJECT,
    missing: `${RUN}-missing`,
    copyName: (label) => `${RUN}-c-${label}`,
    content: fingerprints,
    state: states,
    leftovers: () => engineInventory(RUN),
    change: async (project) => {
      await execIn(containerOf(project, 'db'), ['sh', '-c', 'echo changed > /data/owned.txt']);
      await execIn(containerOf(project, 'api'), ['sh', '-c', 'rm -rf /shared/nested']);
    },
  }),
  {
    holds: [
      {
        label: 'stop',
        options: { consistency: 'stop' },
        during: Object.fromEntries(SERVICES.map((s) => [s, { Running: false, Paused: false }])),
      },
    ],
    inPlace: true,
    hints: {
      targetNotFound: 'stowage targets --platform docker-compose',
      nameTaken: 'or replace it with --in-place',
    },
  },
);
