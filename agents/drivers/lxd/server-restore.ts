/**
 * Restore of a whole LXD server point onto this agent's LXD (`--to lxd-server:AGENT`, or
 * `--in-place` onto the server it was taken of). It rebuilds in the order things depend on each
 * other: projects, storage pools, networks, profiles, images, then custom volumes, then
 * instances (imported stopped), and last starts the instances that ran at backup time.
 *
 * It never clobbers: whatever the server already has (same project, pool, network, profile,
 * image fingerprint or alias, volume, instance name) is left as it is and skipped, and the job's
 * log lists what was created and what was skipped. The one exception is a profile that exists
 * but is empty (no config, no devices: a fresh daemon's `default`), which is filled in from the
 * point, since nothing could be lost by it. So onto an empty daemon everything comes back, and
 * onto one in use only what it lacks.
 *
 * With `recover` (disaster recovery after the database was lost and the storage was not), LXD's
 * recover API (recover.ts) first brings back every instance and custom volume whose storage is
 * still in the server's pools, with its current data, after the projects, networks and profiles
 * they need are back; on the server the point was taken of, a pool it no longer knows is offered
 * to the scan with the point's definition of it (never on another server: the recorded source
 * may be the storage of the original, still running, daemon). Only what is still missing after that is restored from the point's streams.
 *
 * On failure, what this restore created is removed again, newest first (recovered instances and
 * volumes are kept: they were the server's own); the server is as it was before.
 */
import { DriverError, ValidationError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type {
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../core/driver';
import { checkAborted } from '../../core/driver-streams';
import { translate } from './errors';
import { importImage, removeImage } from './image';
import { changeState, getInstance, metadataOf, removeInstance, type Engine } from './instance';
import { recoverLost, scanForRecovery, type RecoverPool } from './recover';
import { restoreInstance } from './restore';
import {
  SERVER_METADATA_FORMAT,
  engineFor,
  getOrNone,
  networkPath,
  portablePoolConfig,
  profilePath,
  projectPath,
  type LxdProfileDefinition,
  type LxdServerBackupMetadata,
} from './server';
import { getPool, getVolume, listPools, poolPath, removeVolume, volumePath } from './volume';
import { restoreVolume } from './volume-restore';

function parseMetadata(metadata: Record<string, unknown>): LxdServerBackupMetadata {
  return metadataOf<LxdServerBackupMetadata>(metadata, SERVER_METADATA_FORMAT, 'server');
}

/** The one stream a sub-restore reads, under the name the instance or volume code expects. */
function subSource(source: RestoreSource, stream: string, as: string): RestoreSource {
  const stored = source.streams.find((s) => s.name === stream);
  if (!stored) throw new DriverError(`the recovery point has no ${stream} stream`);
  return {
    streams: [{ ...stored, name: as }],
    openStream: () => source.openStream(stream),
  };
}

interface Undo {
  what: string;
  run: () => Promise<unknown>;
}

export async function restoreServer(
  engine: Engine,
  server: string,
  rawMetadata: Record<string, unknown>,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  const metadata = parseMetadata(rawMetadata);
  if (options.name !== server) {
    throw new ValidationError(
      `this agent's LXD server is lxd-server:${server}, not lxd-server:${options.name}; restore with --to lxd-server:${options.name} so the agent ${options.name} runs it`,
    );
  }
  for (const unsupported of [
    'volumes',
    'network',
    'ports',
    'volume',
    'intoVolume',
    'pool',
    'devices',
    'state',
  ] as const) {
    if (options[unsupported] !== undefined) {
      throw new ValidationError(
        `a whole-server restore cannot honour ${unsupported}; restore that instance or volume alone from a point of its own`,
      );
    }
  }
  const target = `lxd-server:${server}`;
  const created: string[] = [];
  const skipped: string[] = [];
  const undo: Undo[] = [];
  const step = async (what: string, exists: boolean, create: () => Promise<Undo | undefined>) => {
    checkAborted(ctx, `restore of ${target}`);
    if (exists) {
      skipped.push(what);
      return;
    }
    ctx.phase(`creating ${what}`);
    const undone = await create();
    if (undone) undo.push(undone);
    created.push(what);
  };

  try {
    for (const project of metadata.projects) {
      const path = projectPath(project.name);
      const exists = (await getOrNone(engine, path, `project ${project.name}`)) !== undefined;
      await step(`project ${project.name}`, exists, async () => {
        await call(engine, 'POST', '/1.0/projects', project, `creating project ${project.name}`);
        return { what: `project ${project.name}`, run: () => engine.client.run('DELETE', path) };
      });
    }

    // Pools: what recover will bring back with its record is left to it. Only on the server the
    // point was taken of: elsewhere the recorded source may be another live daemon's storage.
    const deferred: RecoverPool[] = [];
    const sameServer = metadata.server === server;
    for (const pool of metadata.pools) {
      const exists = (await getPool(engine, pool.name)) !== undefined;
      if (!exists && options.recover && sameServer) {
        const definition = {
          name: pool.name,
          driver: pool.driver,
          description: pool.description,
          config: pool.config,
        };
        const scan = await scanForRecovery(engine, [definition]).catch(() => undefined);
        if (scan && scan.found.length > 0) {
          deferred.push(definition);
          continue;
        }
      }
      await step(`storage pool ${pool.name}`, exists, async () => {
        const body = {
          name: pool.name,
          driver: pool.driver,
          description: pool.description,
          config: portablePoolConfig(pool),
        };
        await call(engine, 'POST', '/1.0/storage-pools', body, `creating pool ${pool.name}`);
        return {
          what: `storage pool ${pool.name}`,
          run: () => engine.client.run('DELETE', poolPath(pool.name)),
        };
      });
    }

    for (const network of metadata.networks) {
      const at = engineFor(engine, network.project);
      const what = `network ${network.project}/${network.name}`;
      const exists = (await getOrNone(at, networkPath(network.name), what)) !== undefined;
      await step(what, exists, async () => {
        const body = {
          name: network.name,
          type: network.type,
          description: network.description,
          config: network.config,
        };
        await call(at, 'POST', '/1.0/networks', body, `creating ${what}`);
        return { what, run: () => at.client.run('DELETE', networkPath(network.name)) };
      });
    }

    for (const profile of metadata.profiles) await restoreProfile(engine, profile, step);

    const recovered = new Set<string>();
    if (options.recover) {
      ctx.phase('recovering lost instances and volumes (LXD recover)');
      const pools: RecoverPool[] = [
        ...(await listPools(engine)).map((p) => ({ name: p.name })),
        ...deferred,
      ];
      for (const v of await recoverLost(engine, pools)) {
        const what = `${v.type === 'volume' ? 'custom volume' : 'instance'} ${v.project}/${v.type === 'volume' ? `${v.pool}/` : ''}${v.name}`;
        recovered.add(what);
        ctx.log.info(LogEvent.driverStep, { step: 'recovered', what });
        if (v.type === 'volume') await restoreIdmap(engine, metadata, v);
      }
    }

    for (const image of metadata.images) {
      checkAborted(ctx, `restore of ${target}`);
      const at = engineFor(engine, image.project);
      const what = `image ${image.project}/${image.fingerprint.slice(0, 12)}`;
      const { imported, aliases } = await importImage(at, image, source, ctx);
      if (imported) {
        created.push(what);
        undo.push({ what, run: () => removeImage(at, image.fingerprint) });
      } else {
        skipped.push(what);
      }
      for (const alias of aliases) {
        created.push(`image alias ${alias}`);
        undo.push({
          what: `image alias ${alias}`,
          run: () => at.client.run('DELETE', `/1.0/images/aliases/${encodeURIComponent(alias)}`),
        });
      }
    }

    for (const { project, stream, metadata: volume } of metadata.volumes) {
      const at = engineFor(engine, project);
      const what = `custom volume ${project}/${volume.pool}/${volume.name}`;
      const exists = (await getVolume(at, volume.pool, volume.name)) !== undefined;
      await step(what, exists, async () => {
        await restoreVolume(
          at,
          volume as unknown as Record<string, unknown>,
          subSource(source, stream, 'volume-export'),
          { name: `${volume.pool}/${volume.name}`, inPlace: false },
          ctx,
        );
        return { what, run: () => removeVolume(at, volume.pool, volume.name) };
      });
    }

    const restored: Array<{ at: Engine; name: string; ran: boolean }> = [];
    for (const { project, stream, metadata: instance } of metadata.instances) {
      const at = engineFor(engine, project);
      const what = `instance ${project}/${instance.name}`;
      const ran = instance.status === 'Running' || instance.status === 'Frozen';
      const current = await getInstance(at, instance.name);
      if (current && recovered.has(what)) {
        restored.push({ at, name: instance.name, ran });
        continue;
      }
      await step(what, current !== undefined, async () => {
        await restoreInstance(
          at,
          instance as unknown as Record<string, unknown>,
          subSource(source, stream, 'export'),
          { name: instance.name, inPlace: false, state: 'stopped' },
          ctx,
        );
        restored.push({ at, name: instance.name, ran });
        return { what, run: () => removeInstance(at, instance.name) };
      });
    }

    for (const { at, name, ran } of restored) {
      if (!ran) continue;
      const now = await getInstance(at, name);
      if (now && now.status !== 'Running') {
        ctx.phase(`starting instance ${at.project}/${name}`);
        await changeState(at, name, 'start');
      }
    }

    ctx.log.info(LogEvent.driverStep, {
      step: 'server restored',
      target,
      created,
      skipped,
      recovered: [...recovered],
    });
    ctx.phase(
      `done: ${created.length} created, ${recovered.size} recovered, ${skipped.length} already there`,
    );
    return { restoredTarget: target };
  } catch (err) {
    for (const { what, run } of undo.reverse()) {
      await run().catch((undoErr: unknown) =>
        ctx.log.warn(LogEvent.driverStep, {
          step: 'remove what the failed server restore created',
          what,
          error: translate(undoErr, `removing ${what}`, engine.socketPath),
        }),
      );
    }
    throw err;
  }
}

/**
 * LXD's recover brings a custom volume back without the `volatile.idmap.*` keys that say how its
 * files are shifted on disk for the containers that use it; without them the next container
 * start shifts them again (every owner off by the idmap's base). Sets them back from the point
 * before any instance starts, when the point has them and the recovered volume does not.
 */
async function restoreIdmap(
  engine: Engine,
  metadata: LxdServerBackupMetadata,
  found: { project: string; pool: string; name: string },
): Promise<void> {
  const recorded = metadata.volumes.find(
    (v) =>
      v.project === found.project &&
      v.metadata.pool === found.pool &&
      v.metadata.name === found.name,
  )?.metadata.config;
  if (!recorded) return;
  const at = engineFor(engine, found.project);
  const current = await getVolume(at, found.pool, found.name);
  if (!current) return;
  const missing = Object.fromEntries(
    Object.entries(recorded).filter(
      ([key]) => key.startsWith('volatile.idmap.') && current.config[key] === undefined,
    ),
  );
  if (Object.keys(missing).length === 0) return;
  await call(
    at,
    'PATCH',
    volumePath(found.pool, found.name),
    { config: missing },
    `setting the idmap of the recovered custom volume ${found.pool}/${found.name}`,
  );
}

/** Creates a profile the server lacks, or fills in one that exists but is empty. */
async function restoreProfile(
  engine: Engine,
  profile: LxdProfileDefinition,
  step: (what: string, exists: boolean, create: () => Promise<Undo | undefined>) => Promise<void>,
): Promise<void> {
  const at = engineFor(engine, profile.project);
  const what = `profile ${profile.project}/${profile.name}`;
  const path = profilePath(profile.name);
  const current = await getOrNone<LxdProfileDefinition>(at, path, what);
  const body = {
    description: profile.description,
    config: profile.config,
    devices: profile.devices,
  };
  const empty = (p: { config?: object | null; devices?: object | null }) =>
    Object.keys(p.config ?? {}).length === 0 && Object.keys(p.devices ?? {}).length === 0;
  if (current && empty(current) && !empty(profile)) {
    await step(`${what} (was empty)`, false, async () => {
      await call(at, 'PUT', path, body, `filling in ${what}`);
      const before = { description: current.description, config: {}, devices: {} };
      return { what, run: () => at.client.run('PUT', path, before) };
    });
    return;
  }
  await step(what, current !== undefined, async () => {
    await call(at, 'POST', '/1.0/profiles', { name: profile.name, ...body }, `creating ${what}`);
    return { what, run: () => at.client.run('DELETE', path) };
  });
}

/** One LXD call that may answer async, translated. */
async function call(
  engine: Engine,
  method: string,
  path: string,
  body: unknown,
  action: string,
): Promise<void> {
  try {
    await engine.client.run(method, path, body);
  } catch (err) {
    throw translate(err, action, engine.socketPath);
  }
}
