/**
 * The docker-compose driver: a Compose project as one target (`docker-compose:<project>`): every
 * container labelled `com.docker.compose.project=<project>` (one-off `compose run` containers
 * excluded), each volume they mount (once, however many share it) and the networks the project
 * created. One recovery point holds it all.
 *
 * Backup: the networks' configuration (metadata only), then per container in dependency order
 * what a single-container backup does (backup.ts): stream `container/<key>/image` (and
 * `container/<key>/bind/<i>` with includeBinds), and `volume/<name>` the first time a volume is
 * met. `<key>` is the service name, or `<service>-<number>` for a scaled service.
 * Consistency covers the whole project: `stop` stops every container, last dependant first,
 * captures, and starts them again dependencies first; `pause` pauses them all; `live` commits
 * each with dockerd's commit pause. Whatever fails, the releases all run (in `finally` order).
 * Hooks run in the first container in dependency order (the one nothing else must start before:
 * a database, typically), not in every container: a hook is a project-level action, and running
 * it N times would dump a database N times. A project whose first container does not run fails
 * the hook as a single container would.
 *
 * Restore under a new project name creates the networks, volumes (filled from their streams) and
 * containers renamed (compose-config.ts), in dependency order, and starts those that ran; on
 * any failure it removes everything it created. In-place restore over the project is in
 * compose-in-place.ts.
 */
import { randomBytes } from 'node:crypto';
import type Docker from 'dockerode';
import { DriverError, NameTaken, TargetNotFound } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type {
  BackupOptions,
  BackupOutcome,
  BackupSink,
  DiscoveredTarget,
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../core/driver';
import { capture, consistencyOf, describeVolumes, quiesce, type Captured } from './backup';
import {
  COMPOSE_METADATA_FORMAT,
  DEPENDS_ON_LABEL,
  NUMBER_LABEL,
  ONEOFF_LABEL,
  PROJECT_LABEL,
  SERVICE_LABEL,
  dependencyOrder,
  inspectForProject,
  isValidProjectName,
  networkModeParent,
  parseComposeMetadata,
  parseDependsOn,
  relabel,
  renameContainer,
  renameResource,
  type ComposeBackupMetadata,
  type ComposeContainerRecord,
  type DependsOn,
  type NetworkRecord,
} from './compose-config';
import { METADATA_FORMAT, userNetworks, type InspectJson, type VolumeRecord } from './config';
import {
  checkAborted,
  imageExists,
  inspectByName,
  removeImageRef,
  volumeExists,
  type Engine,
} from './engine';
import { statusOf, translate } from './errors';
import { HELPER_LABEL } from './helper';
import { runHooks, type HookRecord } from './hooks';
import {
  RESTORE_LABEL,
  bindVolumeName,
  checkStreams,
  createContainer,
  createRestoreVolume,
  fillVolume,
  loadImage,
  safeDriverOptions,
  type Created,
  removeCreated,
} from './restore';

export const COMPOSE_PLATFORM = 'docker-compose';

function projectNotFound(project: string): TargetNotFound {
  return new TargetNotFound(
    `no container belongs to Compose project ${project}; ` +
      '`stowage targets --platform docker-compose` lists what the agent sees',
  );
}

/** The project's containers (not one-off `compose run` ones, not our helpers), as listed. */
async function listMembers(engine: Engine, project?: string): Promise<Docker.ContainerInfo[]> {
  const label = project === undefined ? PROJECT_LABEL : `${PROJECT_LABEL}=${project}`;
  let list: Docker.ContainerInfo[];
  try {
    list = await engine.docker.listContainers({ all: true, filters: { label: [label] } });
  } catch (err) {
    throw translate(err, 'listing compose containers', engine.socketPath);
  }
  return list.filter(
    (c) => c.Labels?.[HELPER_LABEL] !== '1' && c.Labels?.[ONEOFF_LABEL] !== 'True',
  );
}

export async function listProjects(engine: Engine): Promise<DiscoveredTarget[]> {
  const byProject = new Map<string, Docker.ContainerInfo[]>();
  for (const c of await listMembers(engine)) {
    const project = c.Labels[PROJECT_LABEL] as string;
    byProject.set(project, [...(byProject.get(project) ?? []), c]);
  }
  return [...byProject]
    .map(([name, containers]) => {
      const running = containers.filter((c) => c.State === 'running').length;
      const state =
        running === containers.length ? 'running' : running === 0 ? 'stopped' : 'partial';
      const services = [...new Set(containers.map((c) => c.Labels[SERVICE_LABEL] ?? '?'))].sort();
      return {
        target: `${COMPOSE_PLATFORM}:${name}`,
        platform: COMPOSE_PLATFORM,
        name,
        state,
        details: { containers: String(containers.length), services: services.join(',') },
      };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}

export async function projectExists(engine: Engine, project: string): Promise<boolean> {
  if (!isValidProjectName(project)) return false;
  return (await listMembers(engine, project)).length > 0;
}

export interface Member {
  inspect: InspectJson;
  name: string;
  service: string;
  containerNumber: number;
  dependsOn: DependsOn[];
  /** dependsOn plus the member a `container:` network mode needs first (ordering only). */
  orderDeps: DependsOn[];
}

/** The project's containers as they are now, inspected, in dependency order. */
export async function inspectMembers(engine: Engine, project: string): Promise<Member[]> {
  const members: Member[] = [];
  for (const c of await listMembers(engine, project)) {
    let inspect: InspectJson;
    try {
      inspect = (await engine.docker.getContainer(c.Id).inspect()) as unknown as InspectJson;
    } catch (err) {
      if (statusOf(err) === 404) continue; // removed meanwhile
      throw translate(err, `inspecting container ${c.Id}`, engine.socketPath);
    }
    const labels = (inspect.Config?.Labels ?? {}) as Record<string, string>;
    members.push({
      inspect,
      name: inspect.Name.replace(/^\//, ''),
      service: labels[SERVICE_LABEL] ?? inspect.Name.replace(/^\//, ''),
      containerNumber: Number(labels[NUMBER_LABEL] ?? '1') || 1,
      dependsOn: parseDependsOn(labels[DEPENDS_ON_LABEL]),
      orderDeps: [],
    });
  }
  const byRef = new Map(members.flatMap((m) => [[m.inspect.Id, m] as const, [m.name, m] as const]));
  for (const m of members) {
    const parent = networkModeParent(m.inspect, byRef);
    const implied = parent
      ? [{ service: parent.service, condition: 'network_mode', restart: false }]
      : [];
    m.orderDeps = [...m.dependsOn, ...implied];
  }
  return dependencyOrder(members, (m) => m.orderDeps);
}

/** The networks the project created, as recorded for recreation. */
async function describeNetworks(engine: Engine, project: string): Promise<NetworkRecord[]> {
  let list: Docker.NetworkInspectInfo[];
  try {
    list = await engine.docker.listNetworks({
      filters: { label: [`${PROJECT_LABEL}=${project}`] },
    });
  } catch (err) {
    throw translate(err, `listing the networks of project ${project}`, engine.socketPath);
  }
  return list
    .map((n) => ({
      name: n.Name,
      driver: n.Driver || 'bridge',
      options: n.Options ?? {},
      labels: n.Labels ?? {},
      internal: n.Internal === true,
      attachable: n.Attachable === true,
      enableIPv6: n.EnableIPv6 === true,
      ipam: { driver: n.IPAM?.Driver || 'default', options: n.IPAM?.Options ?? {} },
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** `service` for a service with one container, `service-<number>` for a scaled one. */
function streamKeys(members: readonly Member[]): string[] {
  const count = new Map<string, number>();
  for (const m of members) count.set(m.service, (count.get(m.service) ?? 0) + 1);
  return members.map((m) =>
    (count.get(m.service) ?? 0) > 1 ? `${m.service}-${m.containerNumber}` : m.service,
  );
}

export async function backupProject(
  engine: Engine,
  project: string,
  sink: BackupSink,
  ctx: DriverContext,
  options: BackupOptions = {},
): Promise<BackupOutcome> {
  const target = `${COMPOSE_PLATFORM}:${project}`;
  const what = `backup of ${target}`;
  const consistency = consistencyOf(options);
  checkAborted(ctx, what);
  ctx.phase('inspecting project');
  if (!isValidProjectName(project)) throw projectNotFound(project);
  const members = await inspectMembers(engine, project);
  if (members.length === 0) throw projectNotFound(project);
  const networks = await describeNetworks(engine, project);
  const keys = streamKeys(members);
  const volumesOf: VolumeRecord[][] = [];
  for (const m of members) volumesOf.push(await describeVolumes(engine, m.inspect));
  // Each volume is read once, with the first container (in dependency order) that mounts it.
  const seen = new Set<string>();
  const readWith = volumesOf.map((records) => {
    const fresh = records.filter((v) => !seen.has(v.name));
    for (const v of fresh) seen.add(v.name);
    return fresh;
  });
  const volumes = readWith.flat();
  const states = members.map((m) => ({
    running: m.inspect.State?.Running === true,
    paused: m.inspect.State?.Paused === true,
  }));

  const hookHost = members[0] as Member;
  const hasHooks = (options.hooks?.pre?.length ?? 0) + (options.hooks?.post?.length ?? 0) > 0;
  const hooks: HookRecord[] = [];
  await runHooks(engine, hookHost.inspect, 'pre', options.hooks?.pre, hooks, ctx);

  const captured: Captured[] = [];
  let failure: unknown;
  // Acquired in reverse dependency order (dependants stop first), released in reverse of that.
  const releases: Array<() => Promise<void>> = [];
  try {
    for (const m of [...members].reverse()) {
      checkAborted(ctx, what);
      releases.push(await quiesce(engine, m.inspect, consistency, ctx));
    }
    for (const [i, m] of members.entries()) {
      const state = states[i] as { running: boolean; paused: boolean };
      captured.push(
        await capture(
          engine,
          m.inspect,
          readWith[i] ?? [],
          consistency === 'live' && state.running && !state.paused,
          options.includeBinds === true,
          sink,
          ctx,
          { streamPrefix: `container/${keys[i] as string}/`, target },
        ),
      );
    }
  } catch (err) {
    failure = err;
  } finally {
    // Every release runs, whatever failed before it. A container left down is what the operator
    // must hear about: the first such error wins over a capture error; the others are logged.
    let releaseFailed = false;
    for (const release of releases.reverse()) {
      try {
        await release();
      } catch (releaseErr) {
        if (releaseFailed) {
          ctx.log.error(LogEvent.driverStep, { step: 'release failed', error: releaseErr });
          continue;
        }
        if (failure !== undefined) {
          ctx.log.error(LogEvent.driverStep, { step: 'capture failed', error: failure });
        }
        failure = releaseErr;
        releaseFailed = true;
      }
    }
  }
  if (failure !== undefined) {
    try {
      await runHooks(engine, hookHost.inspect, 'post', options.hooks?.post, hooks, ctx);
    } catch (hookErr) {
      ctx.log.warn(LogEvent.driverStep, { step: 'post hook after failed capture', error: hookErr });
    }
    throw failure;
  }
  await runHooks(engine, hookHost.inspect, 'post', options.hooks?.post, hooks, ctx);

  const containers: ComposeContainerRecord[] = members.map((m, i) => {
    const c = captured[i] as Captured;
    const state = states[i] as { running: boolean };
    return {
      format: METADATA_FORMAT,
      name: m.name,
      container: m.inspect,
      image: c.image,
      imageId: c.imageId,
      originalImage: m.inspect.Config?.Image ?? '',
      volumes: volumesOf[i] ?? [],
      wasRunning: state.running,
      consistency,
      binds: c.binds,
      service: m.service,
      containerNumber: m.containerNumber,
      dependsOn: m.dependsOn,
      streamPrefix: `container/${keys[i] as string}/`,
    };
  });
  const metadata: ComposeBackupMetadata = {
    format: COMPOSE_METADATA_FORMAT,
    project,
    networks,
    containers,
    volumes,
    consistency,
    hooks,
    ...(hasHooks ? { hookContainer: hookHost.name } : {}),
    ...(options.label !== undefined ? { label: options.label } : {}),
  };
  const running = states.filter((s) => s.running).length;
  return {
    metadata: metadata as unknown as Record<string, unknown>,
    summary: {
      containers: members.length,
      services: [...new Set(members.map((m) => m.service))].join(','),
      volumes: volumes.length,
      networks: networks.length,
      state: running === members.length ? 'running' : running === 0 ? 'stopped' : 'partial',
      consistency,
      ...(hooks.length > 0 ? { hooks: hooks.length } : {}),
    },
  };
}

/** The network named exactly `name` exists (dockerd also resolves id prefixes: not those). */
export async function networkExists(engine: Engine, name: string): Promise<boolean> {
  try {
    const info = (await engine.docker.getNetwork(name).inspect()) as { Name?: string };
    return info.Name === name;
  } catch (err) {
    if (statusOf(err) === 404) return false;
    throw translate(err, `inspecting network ${name}`, engine.socketPath);
  }
}

/** What a restore has created so far, removed (last first) if it fails. */
export interface ProjectCreated {
  networks: string[];
  /** Shared with createRestoreVolume, which records each volume it makes here. */
  volumes: Created;
  containers: Docker.Container[];
  images: string[];
}

export async function removeProjectCreated(
  engine: Engine,
  created: ProjectCreated,
  ctx: DriverContext,
): Promise<void> {
  const warn = (step: string, err: unknown) =>
    ctx.log.warn(LogEvent.driverStep, { step, error: translate(err, step, engine.socketPath) });
  for (const container of created.containers.reverse()) {
    await container
      .remove({ force: true, v: false })
      .catch((err: unknown) => warn(`removing container ${container.id}`, err));
  }
  for (const network of created.networks) {
    await engine.docker
      .getNetwork(network)
      .remove()
      .catch((err: unknown) => warn(`removing network ${network}`, err));
  }
  for (const image of created.images) await removeImageRef(engine, image, ctx);
  // The volumes, and the journal records of all of it (kept there when journaled).
  await removeCreated(engine, created.volumes, ctx);
}

function taken(what: string, name: string, project: string): NameTaken {
  return new NameTaken(
    `${what} ${name} already exists (the restore of project ${project} would create it); ` +
      'restore under another project name with --name, or remove it first',
  );
}

export function checkProjectName(name: string): void {
  if (!isValidProjectName(name)) {
    throw new DriverError(
      `"${name}" is not a valid Compose project name; use lowercase letters, digits, "_" and "-", ` +
        'starting with a letter or digit',
    );
  }
}

/** Refuses the remaps and the single-volume restore, which apply to one container only. */
export function checkProjectOptions(options: RestoreOptions): void {
  const given = (['volumes', 'network', 'ports', 'volume', 'intoVolume'] as const).filter(
    (k) => options[k] !== undefined,
  );
  if (given.length > 0) {
    throw new DriverError(
      `${given.join(', ')} cannot apply to a Compose project restore (they remap one container); ` +
        'leave them out, or restore one of its containers from a docker: point',
    );
  }
}

/** What each recorded network, volume and container is called in the restored project. */
export interface ProjectNames {
  networkNames: Map<string, string>;
  volumeNames: Map<string, string>;
  /** In the order of meta.containers. */
  containerNames: string[];
  /** Recorded container id and name → restored container name, for `container:` network modes. */
  copies: Map<string, string>;
}

/**
 * Under a new project name, renamed (compose-config.ts); with `keep` (an in-place restore over
 * the recorded project), every name as recorded, project-owned or not.
 */
export function projectNames(
  meta: ComposeBackupMetadata,
  name: string,
  keep: boolean,
): ProjectNames {
  const old = meta.project;
  const resource = (n: string) => (keep ? n : renameResource(n, old, name));
  const containerNames = meta.containers.map((c) =>
    keep ? c.name : renameContainer(c.name, old, name),
  );
  return {
    networkNames: new Map(meta.networks.map((n) => [n.name, resource(n.name)])),
    volumeNames: new Map(meta.volumes.map((v) => [v.name, resource(v.name)])),
    containerNames,
    // A `container:` network mode names the original by id (or name): point it at the copy.
    copies: new Map(
      meta.containers.flatMap((c, i) => [
        [c.container.Id, containerNames[i] as string] as const,
        [c.name, containerNames[i] as string] as const,
      ]),
    ),
  };
}

/** Networks the project did not create (external ones) are joined as they are: they must exist. */
export async function checkExternalNetworks(
  engine: Engine,
  meta: ComposeBackupMetadata,
  networkNames: ReadonlyMap<string, string>,
): Promise<void> {
  for (const c of meta.containers) {
    for (const network of userNetworks(c.container)) {
      if (!networkNames.has(network) && !(await networkExists(engine, network))) {
        throw new DriverError(
          `network ${network}, which container ${c.name} was attached to and the project did not ` +
            `create, does not exist on this host; create it (docker network create ${network}) ` +
            'and run the restore again',
        );
      }
    }
  }
}

/** Creates the recorded `network` as `name` for `project`, recorded in `created`. */
export async function createProjectNetwork(
  engine: Engine,
  network: NetworkRecord,
  name: string,
  project: string,
  restoreId: string,
  created: ProjectCreated,
): Promise<void> {
  try {
    const made = await engine.docker.createNetwork({
      Name: name,
      CheckDuplicate: true,
      Driver: network.driver,
      Options: network.options,
      Labels: { ...relabel(network.labels, project), [RESTORE_LABEL]: restoreId },
      Internal: network.internal,
      Attachable: network.attachable,
      EnableIPv6: network.enableIPv6,
      IPAM: { Driver: network.ipam.driver, Options: network.ipam.options },
    });
    created.networks.push(made.id);
  } catch (err) {
    if (statusOf(err) === 409) throw taken('network', name, project);
    throw translate(err, `creating network ${name}`, engine.socketPath);
  }
}

export async function restoreProject(
  engine: Engine,
  rawMetadata: Record<string, unknown>,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  const meta = parseComposeMetadata(rawMetadata);
  const name = options.name;
  checkProjectName(name);
  checkProjectOptions(options);
  const target = `${COMPOSE_PLATFORM}:${name}`;
  const what = `restore to ${target}`;
  const old = meta.project;
  const { networkNames, volumeNames, containerNames, copies } = projectNames(meta, name, false);

  // Refuse before creating anything.
  if (await projectExists(engine, name)) {
    throw new NameTaken(
      `Compose project ${name} already exists; restore under another project name with --name, ` +
        'or replace it with --in-place',
    );
  }
  for (const n of containerNames) {
    if (await inspectByName(engine, n)) throw taken('container', n, name);
  }
  for (const v of volumeNames.values()) {
    if (await volumeExists(engine, v)) throw taken('volume', v, name);
  }
  for (const [i, c] of meta.containers.entries()) {
    for (const bind of c.binds ?? []) {
      const v = bindVolumeName(containerNames[i] as string, bind.index);
      if (await volumeExists(engine, v)) throw taken('volume', v, name);
    }
  }
  for (const n of networkNames.values()) {
    if (await networkExists(engine, n)) throw taken('network', n, name);
  }
  await checkExternalNetworks(engine, meta, networkNames);
  checkStreams(source, [
    ...meta.volumes.map((v) => `volume/${v.name}`),
    ...meta.containers.flatMap((c) => [
      `${c.streamPrefix}image`,
      ...(c.binds ?? []).map((b) => `${c.streamPrefix}bind/${b.index}`),
    ]),
  ]);

  const created: ProjectCreated = {
    networks: [],
    volumes: { volumes: [] },
    containers: [],
    images: [],
  };
  const restoreId = randomBytes(8).toString('hex');
  try {
    for (const network of meta.networks) {
      checkAborted(ctx, what);
      const renamed = networkNames.get(network.name) as string;
      ctx.phase(`network ${renamed}`);
      await createProjectNetwork(engine, network, renamed, name, restoreId, created);
    }

    for (const volume of meta.volumes) {
      checkAborted(ctx, what);
      const renamed = volumeNames.get(volume.name) as string;
      ctx.phase(`volume ${volume.name}`);
      const spec = {
        driver: volume.driver,
        options: safeDriverOptions(volume, ctx),
        labels: relabel(volume.labels, name),
      };
      await createRestoreVolume(engine, renamed, spec, restoreId, created.volumes);
      await fillVolume(engine, renamed, `volume/${volume.name}`, target, source, ctx);
    }

    for (const [i, c] of meta.containers.entries()) {
      const newName = containerNames[i] as string;
      checkAborted(ctx, what);
      ctx.phase(`image of ${c.service}`);
      const imageWasThere = await imageExists(engine, c.image);
      const image = await loadImage(engine, c, source, ctx, `${c.streamPrefix}image`);
      if (!imageWasThere) created.images.push(image);

      const bindVolumes = new Map<string, string>();
      for (const bind of c.binds ?? []) {
        checkAborted(ctx, what);
        const volume = bindVolumeName(newName, bind.index);
        const spec = { driver: 'local', options: {}, labels: {} };
        await createRestoreVolume(engine, volume, spec, restoreId, created.volumes);
        await fillVolume(
          engine,
          volume,
          `${c.streamPrefix}bind/${bind.index}`,
          target,
          source,
          ctx,
        );
        bindVolumes.set(bind.destination, volume);
      }

      ctx.phase(`creating ${newName}`);
      const record = {
        ...c,
        container: inspectForProject(c.container, c.service, name, networkNames, copies),
      };
      const one: Created = { volumes: [] };
      try {
        await createContainer(engine, record, newName, image, volumeNames, one, ctx, bindVolumes);
      } finally {
        if (one.container) created.containers.push(one.container);
      }
    }

    for (const [i, c] of meta.containers.entries()) {
      if (!c.wasRunning) continue;
      checkAborted(ctx, what);
      const container = created.containers[i] as Docker.Container;
      ctx.phase(`starting ${containerNames[i] as string}`);
      try {
        await container.start();
      } catch (err) {
        throw translate(
          err,
          `starting container ${containerNames[i] as string}`,
          engine.socketPath,
        );
      }
    }
    ctx.log.info(LogEvent.driverStep, {
      step: 'project restored',
      project: name,
      from: old,
      containers: containerNames,
    });
    return { restoredTarget: target };
  } catch (err) {
    await removeProjectCreated(engine, created, ctx);
    throw err;
  }
}
