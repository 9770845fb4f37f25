/**
 * In-place restore of a Compose project: its containers, volumes and networks, under the same
 * names, brought back to a recovery point (undoing an update of images, file systems or data).
 * The single-container procedure (restore-in-place.ts) applied to the whole project, with its
 * pieces: every container is set aside the same way, every volume replaced the same way.
 *
 * 1. Read everything first, while the project keeps running untouched: create the recorded
 *    networks that are missing, load every container's committed image, and fill one fresh
 *    temporary volume (`stowage-inplace-<id>-<n>`) per recorded volume from the point. Every
 *    stream is read to its end here; an integrity error or a broken store fails now.
 * 2. Set the project aside, dependants first (reverse dependency order): stop each container
 *    that has a recorded name (remembering whether it ran) and rename it to
 *    `<name>-stowage-old-<id>`.
 *    A failure in 1 or 2 (or an abandoned job) undoes exactly that: the containers get their
 *    names back and those that ran are started, dependencies first; the networks, temporary
 *    volumes and images it created are removed. The project is then as it was, running if it ran.
 * 3. POINT OF NO RETURN: remove the set-aside containers (their writable layers go with them).
 *    Then for each recorded volume: remove it, create it again under the same name with its own
 *    driver, options and labels, and copy the temporary volume into it; create every container
 *    under its recorded name, with its compose labels, networks and aliases, in dependency order;
 *    start those that were running at backup time, dependencies first; remove the temporary
 *    volumes. These steps only move data dockerd already holds, so an abandoned job no longer
 *    stops them. If one fails anyway, the error says so and the temporary volumes are kept: they
 *    hold the restored data (and a retry, which finds containers missing, creates them anew).
 *
 * Containers of the project that the point does not hold (a service added, or scaled up, after
 * the backup) are left as they are, as `docker compose up` leaves orphans; a volume the restore
 * replaces must not be mounted by any of them, nor by any other container, and none of them may
 * share the network namespace of a container it replaces (both refused up front).
 * Existing networks are kept as they are. Bind-mounted host directories are never written: the
 * restored containers bind the same host paths.
 */
import { randomBytes } from 'node:crypto';
import type Docker from 'dockerode';
import { DriverError, isStowageError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type {
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../core/driver';
import {
  COMPOSE_PLATFORM,
  checkExternalNetworks,
  checkProjectName,
  checkProjectOptions,
  createProjectNetwork,
  inspectMembers,
  networkExists,
  projectNames,
  removeProjectCreated,
  type ProjectCreated,
} from './compose';
import {
  inspectForProject,
  networkModeParent,
  parseComposeMetadata,
  relabel,
} from './compose-config';
import type { InspectJson, VolumeRecord } from './config';
import { checkAborted, imageExists, inspectByName, type Engine } from './engine';
import { translate } from './errors';
import {
  checkVolumeUsers,
  copyVolume,
  putBackAll,
  readIntoTemporaryVolumes,
  recreateVolume,
  removeTemporaryVolumes,
  setAside,
  type SetAside,
} from './restore-in-place';
import {
  checkStreams,
  holdCreated,
  keepCreated,
  createContainer,
  loadImage,
  safeDriverOptions,
  type Created,
} from './restore';

const nameOf = (inspect: InspectJson) => inspect.Name.replace(/^\//, '');

/**
 * The containers the restore replaces: the project's members that have a recorded name, in
 * their current dependency order, then any other container holding a recorded name. Also the
 * members it leaves alone.
 */
async function findReplaced(
  engine: Engine,
  project: string,
  recordedNames: readonly string[],
): Promise<{ replaced: InspectJson[]; orphans: string[] }> {
  const members = await inspectMembers(engine, project);
  const recorded = new Set(recordedNames);
  const replaced = members.filter((m) => recorded.has(m.name)).map((m) => m.inspect);
  const memberNames = new Set(members.map((m) => m.name));
  for (const name of recordedNames) {
    if (memberNames.has(name)) continue;
    const other = await inspectByName(engine, name);
    if (other) replaced.push(other);
  }
  const orphans = members.filter((m) => !recorded.has(m.name));
  // One sharing the network namespace of a replaced container would lose it at the switch.
  const byRef = new Map(replaced.flatMap((r) => [[r.Id, r] as const, [nameOf(r), r] as const]));
  for (const orphan of orphans) {
    const parent = networkModeParent(orphan.inspect, byRef);
    if (parent) {
      throw new DriverError(
        `container ${orphan.name}, which the recovery point does not hold, shares the network ` +
          `namespace of ${nameOf(parent)}, which an in-place restore replaces: remove ${orphan.name} ` +
          'first, or restore under a new project name with --name',
      );
    }
  }
  return { replaced, orphans: orphans.map((m) => m.name) };
}

export async function restoreProjectInPlace(
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
  const what = `in-place restore of ${target}`;
  // Over the recorded project every name stays as recorded; over another project (restore --to
  // with --in-place) the names are that project's, as for a restore under a new name.
  const keep = name === meta.project;
  const names = projectNames(meta, name, keep);
  const targets: VolumeRecord[] = meta.volumes.map((v) => {
    const renamed = names.volumeNames.get(v.name) as string;
    return keep
      ? v
      : {
          ...v,
          name: renamed,
          options: safeDriverOptions(v, ctx),
          labels: relabel(v.labels, name),
        };
  });

  // Refuse before touching anything.
  const { replaced, orphans } = await findReplaced(engine, name, names.containerNames);
  await checkExternalNetworks(engine, meta, names.networkNames);
  checkStreams(source, [
    ...meta.volumes.map((v) => `volume/${v.name}`),
    ...meta.containers.map((c) => `${c.streamPrefix}image`),
  ]);
  await checkVolumeUsers(engine, targets, new Set(replaced.map((c) => c.Id)));
  if (orphans.length > 0) {
    ctx.log.warn(LogEvent.driverStep, {
      step: 'containers the point does not hold left as they are',
      project: name,
      containers: orphans,
    });
  }
  const binds = meta.containers.filter((c) => (c.binds ?? []).length > 0);
  if (binds.length > 0) {
    ctx.log.info(LogEvent.driverStep, {
      step: 'bind data not restored in place',
      reason:
        'host directories are never overwritten; restore under a new project name to get that data back as volumes',
      containers: binds.map((c) => c.name),
    });
  }

  const id = randomBytes(6).toString('hex');
  const created: ProjectCreated = {
    networks: [],
    volumes: { volumes: [], holds: ctx.holds },
    containers: [],
    images: [],
  };
  const images: string[] = [];
  const temps = new Map<string, string>();

  // 1. Read everything while the project runs untouched.
  try {
    for (const network of meta.networks) {
      const renamed = names.networkNames.get(network.name) as string;
      if (await networkExists(engine, renamed)) continue;
      checkAborted(ctx, what);
      ctx.phase(`network ${renamed}`);
      await createProjectNetwork(engine, network, renamed, name, id, created);
    }
    for (const c of meta.containers) {
      checkAborted(ctx, what);
      ctx.phase(`image of ${c.service}`);
      const imageWasThere = await imageExists(engine, c.image);
      if (!imageWasThere) {
        await holdCreated(created.volumes, `image:${c.image}`, 'docker.image', { ref: c.image });
      }
      const image = await loadImage(engine, c, source, ctx, `${c.streamPrefix}image`);
      if (!imageWasThere) created.images.push(image);
      images.push(image);
    }
    await readIntoTemporaryVolumes(
      engine,
      meta.volumes,
      id,
      target,
      source,
      ctx,
      what,
      created.volumes,
      temps,
    );
  } catch (err) {
    await removeProjectCreated(engine, created, ctx);
    throw err;
  }

  // 2. Set the project aside, dependants first (undoable).
  const asides: SetAside[] = [];
  try {
    ctx.phase('stopping project');
    for (const existing of [...replaced].reverse()) {
      asides.push(await setAside(engine, existing, nameOf(existing), id, ctx.holds));
      checkAborted(ctx, what);
    }
    // A cancel before this leaves the project as it was (the worker checks the job).
    await ctx.pointOfNoReturn?.();
  } catch (err) {
    const failure = await putBackAll(asides, err).catch((e: unknown) => e);
    await removeProjectCreated(engine, created, ctx);
    throw failure;
  }

  // 3. Point of no return. The journal's records end here: what follows only moves data
  // dockerd holds, and on failure the temporary volumes and images are kept for the operator.
  await keepCreated(created.volumes);
  for (const aside of asides) await aside.hold?.clear();
  ctx.log.info(LogEvent.driverStep, {
    step: 'in-place point of no return',
    project: name,
    old: asides.map((a) => a.old),
  });
  try {
    ctx.phase('replacing containers');
    for (const aside of asides) {
      try {
        await engine.docker.getContainer(aside.id).remove({ force: true, v: false });
      } catch (err) {
        throw translate(err, `removing the old container ${aside.old}`, engine.socketPath);
      }
    }
    for (const [n, volume] of meta.volumes.entries()) {
      const into = targets[n] as VolumeRecord;
      ctx.phase(`volume ${into.name}`);
      await recreateVolume(engine, into);
      await copyVolume(engine, temps.get(volume.name) as string, into.name, target, ctx);
    }
    const containers: Docker.Container[] = [];
    for (const [i, c] of meta.containers.entries()) {
      const containerName = names.containerNames[i] as string;
      ctx.phase(`creating ${containerName}`);
      const record = {
        ...c,
        container: inspectForProject(
          c.container,
          c.service,
          name,
          names.networkNames,
          names.copies,
        ),
      };
      const one: Created = { volumes: [] };
      containers.push(
        await createContainer(
          engine,
          record,
          containerName,
          images[i] as string,
          names.volumeNames,
          one,
          ctx,
        ),
      );
    }
    for (const [i, c] of meta.containers.entries()) {
      if (!c.wasRunning) continue;
      const containerName = names.containerNames[i] as string;
      ctx.phase(`starting ${containerName}`);
      try {
        await (containers[i] as Docker.Container).start();
      } catch (err) {
        throw translate(err, `starting container ${containerName}`, engine.socketPath);
      }
    }
  } catch (err) {
    const e = isStowageError(err) ? err : translate(err, what, engine.socketPath);
    throw new DriverError(
      `${what} failed after its point of no return (the old containers were removed): ${e.message}; ` +
        `the restored data is kept in volumes ${[...temps.values()].join(', ') || '(none)'} and images ` +
        `${images.join(', ')}: restore the point in place again (missing containers are created anew)`,
      { cause: err },
    );
  }
  await removeTemporaryVolumes(engine, temps, ctx);
  ctx.log.info(LogEvent.driverStep, {
    step: 'project restored in place',
    project: name,
    containers: names.containerNames,
  });
  return { restoredTarget: target };
}
