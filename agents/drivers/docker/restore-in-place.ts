/**
 * In-place restore: the container `name` and its volumes, under the same names, brought back to
 * a recovery point (undoing an update of its image, its file system or its data).
 *
 * Docker cannot rename a volume nor empty one without running a program inside a container
 * (which the image may not have), and it refuses to remove a volume a container still uses. So:
 *
 * 1. Read everything first, while the original keeps running untouched: load the image and fill
 *    one fresh temporary volume (`stowage-inplace-<id>-<n>`) per recorded volume from the point.
 *    Every stream is read to its end here; an integrity error or a broken store fails now.
 * 2. Set the original aside: stop it (remembering whether it ran) and rename it to
 *    `<name>-stowage-old-<id>`.
 *    A failure in 1 or 2 (or an abandoned job) undoes exactly that: temporary volumes and the
 *    loaded image are removed, the original gets its name back and is started if it ran. The
 *    original container and its volumes are then as they were.
 * 3. POINT OF NO RETURN: remove the renamed old container (its writable layer goes with it).
 *    Then for each recorded volume: remove the original volume, create it again under the same
 *    name with its own driver, options and labels, and copy the temporary volume into it; create
 *    the container under `name` from the recorded configuration, start it if it was running at
 *    backup time, and remove the temporary volumes. These steps only move data dockerd already
 *    holds, so an abandoned job no longer stops them. If one fails anyway, the error says so and
 *    the temporary volumes are kept: they hold the restored data (and a retry, finding no
 *    container `name`, restores as new).
 *
 * Refused up front: a recorded volume that another container also mounts (removing it would pull
 * it from under that container). A point with no container of that name is restored as new.
 * Bind-mounted host directories are never written: the new container binds the same host paths.
 *
 * RestoreOptions.volumes, .network and .ports apply as to a restore under a new name, except
 * that a remapped volume that exists is replaced (as the recorded ones are) rather than refused.
 *
 * The pieces (checkVolumeUsers, setAside / putBackAll, recreateVolume, copyVolume) also make the
 * in-place restore of a whole Compose project (compose-in-place.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { DriverError, isStowageError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type {
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../core/driver';
import { parseMetadata, type InspectJson, type VolumeRecord } from './config';
import {
  checkAborted,
  imageExists,
  inspectByName,
  volumeExists,
  type Engine,
  STOP_GRACE_S,
} from './engine';
import { statusOf, translate } from './errors';
import { HELPER_MOUNT, HELPER_MOUNT_PARENT, withVolumeHelper } from './helper';
import {
  checkName,
  checkNetworks,
  checkStreams,
  createContainer,
  createRestoreVolume,
  fillVolume,
  loadImage,
  removeCreated,
  restoreContainer,
  safeDriverOptions,
  type ContainerRemap,
  type Created,
} from './restore';
import { checkPorts, restoredVolumeNames } from './remap';
import type { Hold, HoldTaker } from '../../core/holds';
import type { DockerBackupMetadata } from './config';
import { abandonCreated, holdCreated, keepCreated } from './restore';

/** The name the original container is kept under while the restore may still be undone. */
export function asideName(name: string, id: string): string {
  return `${name}-stowage-old-${id}`;
}

/**
 * Refuses when a container other than those the restore replaces (`replacing`: container ids)
 * mounts one of the volumes the restore would replace.
 */
export async function checkVolumeUsers(
  engine: Engine,
  volumes: readonly VolumeRecord[],
  replacing: ReadonlySet<string>,
): Promise<void> {
  for (const volume of volumes) {
    let users: Array<{ Id: string; Names?: string[] }>;
    try {
      users = await engine.docker.listContainers({
        all: true,
        filters: { volume: [volume.name] },
      });
    } catch (err) {
      throw translate(err, `listing the users of volume ${volume.name}`, engine.socketPath);
    }
    const others = users.filter((c) => !replacing.has(c.Id));
    if (others.length > 0) {
      const names = others.map((c) => (c.Names?.[0] ?? c.Id).replace(/^\//, '')).join(', ');
      throw new DriverError(
        `volume ${volume.name} is also mounted by ${names}; an in-place restore would replace it ` +
          'under them: stop and remove those containers first, or restore under a new name with --name',
      );
    }
  }
}

/** A container the restore has stopped and renamed, and may still put back. */
export interface SetAside {
  /** Its id (the same while aside). */
  id: string;
  /** Its own name, which the restored container takes. */
  name: string;
  /** The name it has while aside. */
  old: string;
  /** Whether it was running before the restore stopped it. */
  ran: boolean;
  /** Its journal record (`docker.aside`), cleared when it is put back or removed. */
  hold?: Hold | undefined;
  /**
   * Undoes the setting aside: its own name back, started if it ran. Idempotent. Throws a
   * DriverError that says which state it is left in and what to do by hand.
   */
  putBack(): Promise<void>;
}

/**
 * Stops the container (if it runs) and renames it to asideName(name, id), so its name is free
 * while it can still be put back. A failure midway puts back what was done and throws.
 */
export async function setAside(
  engine: Engine,
  existing: InspectJson,
  name: string,
  id: string,
  holds?: HoldTaker,
): Promise<SetAside> {
  const container = engine.docker.getContainer(existing.Id);
  const old = asideName(name, id);
  let stopped = false;
  let renamed = false;
  const wasRunning = existing.State?.Running === true;
  // Recorded before it is touched: a sweep renames it back and starts it if it ran.
  const hold = holds
    ? await holds.take('docker', 'docker.aside', {
        container: existing.Id,
        name,
        old,
        ran: wasRunning,
        stopGraceS: STOP_GRACE_S,
      })
    : undefined;
  const putBack = async () => {
    try {
      if (renamed) {
        await container.rename({ name });
        renamed = false;
      }
      if (stopped) {
        await container.start();
        stopped = false;
      }
      await hold?.clear();
    } catch (err) {
      hold?.abandon();
      throw new DriverError(
        `putting the original back failed (${translate(err, `putting ${name} back`, engine.socketPath).message}): ` +
          `it is container ${renamed ? old : name}${stopped ? ', stopped' : ''}: rename it to ${name} and start it by hand`,
        { cause: err },
      );
    }
  };
  let ran = false;
  try {
    const now = (await container.inspect()) as unknown as InspectJson;
    ran = now.State?.Running === true;
    if (ran) {
      await container.stop({ t: STOP_GRACE_S }).catch((err: unknown) => {
        if (statusOf(err) !== 304) throw err;
      });
      stopped = true;
    }
    await container.rename({ name: old });
    renamed = true;
  } catch (err) {
    const failure = isStowageError(err)
      ? err
      : translate(err, `setting ${name} aside`, engine.socketPath);
    await putBackAll([{ id: existing.Id, name, old, ran, putBack }], failure);
  }
  return { id: existing.Id, name, old, ran, putBack, hold };
}

/**
 * Puts every set-aside container back, the last set aside first (dependencies before their
 * dependants), then throws `failure`; or, when a put-back fails, a DriverError that adds what
 * was left and how to fix it by hand.
 */
export async function putBackAll(asides: readonly SetAside[], failure: unknown): Promise<never> {
  const problems: string[] = [];
  for (const aside of [...asides].reverse()) {
    try {
      await aside.putBack();
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  if (problems.length === 0) throw failure;
  throw new DriverError(`${(failure as Error).message}; then ${problems.join('; ')}`, {
    cause: failure,
  });
}

/** Copies one volume's whole content into another through two helpers (archive GET → PUT). */
export async function copyVolume(
  engine: Engine,
  from: string,
  to: string,
  target: string,
  ctx: DriverContext,
): Promise<void> {
  const opts = (volume: string, readOnly: boolean) => ({
    volume,
    readOnly,
    target,
    log: ctx.log,
    holds: ctx.holds,
  });
  await withVolumeHelper(
    engine.docker,
    engine.helperImage,
    engine.socketPath,
    opts(from, true),
    (reader) =>
      withVolumeHelper(
        engine.docker,
        engine.helperImage,
        engine.socketPath,
        opts(to, false),
        async (writer) => {
          try {
            const archive = (await reader.getArchive({ path: HELPER_MOUNT })) as Readable;
            try {
              await writer.putArchive(archive, { path: HELPER_MOUNT_PARENT });
            } finally {
              archive.destroy();
            }
          } catch (err) {
            throw translate(err, `copying volume ${from} into ${to}`, engine.socketPath);
          }
        },
      ),
  );
}

/**
 * Step 1 of an in-place restore: reads each volume's stream into a new temporary volume
 * (`stowage-inplace-<id>-<n>`, recorded in `created` so a failure removes it), while the original
 * runs untouched. `temps` maps each original volume name to its temporary volume.
 */
export async function readIntoTemporaryVolumes(
  engine: Engine,
  volumes: readonly VolumeRecord[],
  id: string,
  target: string,
  source: RestoreSource,
  ctx: DriverContext,
  what: string,
  created: Pick<Created, 'volumes' | 'holds' | 'records'>,
  temps: Map<string, string>,
): Promise<void> {
  for (const [n, volume] of volumes.entries()) {
    checkAborted(ctx, what);
    ctx.phase(`volume ${volume.name}`);
    const temp = `stowage-inplace-${id}-${n}`;
    const spec = { driver: 'local', options: {}, labels: {} };
    await createRestoreVolume(engine, temp, spec, id, created);
    await fillVolume(engine, temp, `volume/${volume.name}`, target, source, ctx);
    temps.set(volume.name, temp);
  }
}

/** The last step: the temporary volumes go; one that will not is logged, not fatal. */
export async function removeTemporaryVolumes(
  engine: Engine,
  temps: ReadonlyMap<string, string>,
  ctx: DriverContext,
): Promise<void> {
  for (const temp of temps.values()) {
    await engine.docker
      .getVolume(temp)
      .remove()
      .catch((err: unknown) =>
        ctx.log.warn(LogEvent.driverStep, {
          step: 'remove temporary volume',
          error: translate(err, `removing volume ${temp}`, engine.socketPath),
        }),
      );
  }
}

/** Removes volume `name` (if present) and creates it again, empty, with the same settings. */
export async function recreateVolume(engine: Engine, record: VolumeRecord): Promise<void> {
  const handle = engine.docker.getVolume(record.name);
  let spec = { driver: record.driver, options: record.options, labels: record.labels };
  try {
    const current = (await handle.inspect()) as {
      Driver?: string;
      Options?: Record<string, string> | null;
      Labels?: Record<string, string> | null;
    };
    // The volume as it is now is the authority on how it is made.
    spec = {
      driver: current.Driver ?? record.driver,
      options: current.Options ?? {},
      labels: current.Labels ?? {},
    };
    await handle.remove();
  } catch (err) {
    if (statusOf(err) !== 404)
      throw translate(err, `removing volume ${record.name}`, engine.socketPath);
  }
  try {
    await engine.docker.createVolume({
      Name: record.name,
      Driver: spec.driver,
      DriverOpts: spec.options,
      Labels: spec.labels,
    });
  } catch (err) {
    throw translate(err, `creating volume ${record.name}`, engine.socketPath);
  }
}

export async function restoreInPlace(
  engine: Engine,
  rawMetadata: Record<string, unknown>,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  const meta = parseMetadata(rawMetadata);
  const name = options.name;
  checkName(name);
  const existing = await inspectByName(engine, name);
  if (!existing) {
    ctx.log.info(LogEvent.driverStep, {
      step: 'in-place restore as new',
      reason: `no container ${name} exists`,
    });
    return restoreContainer(engine, rawMetadata, source, { ...options, inPlace: false }, ctx);
  }
  const target = `docker:${name}`;
  const what = `in-place restore of ${target}`;
  // With RestoreOptions.volumes a volume comes back under its new name (replaced if it exists);
  // the original volume is then left as it is.
  const targetNames = restoredVolumeNames(meta, options.volumes, (v) => v);
  const targets = meta.volumes.map((v) => {
    const renamed = targetNames.get(v.name) as string;
    return renamed === v.name ? v : { ...v, name: renamed, options: safeDriverOptions(v, ctx) };
  });
  const remap: ContainerRemap = {
    network: options.network,
    ports: checkPorts(meta.container, options.ports),
  };
  await checkNetworks(engine, meta.container, remap.network);
  checkStreams(source, ['image', ...meta.volumes.map((v) => `volume/${v.name}`)]);
  await checkVolumeUsers(engine, targets, new Set([existing.Id]));
  if ((meta.binds ?? []).length > 0) {
    ctx.log.info(LogEvent.driverStep, {
      step: 'bind data not restored in place',
      reason:
        'host directories are never overwritten; restore under a new name to get that data back as volumes',
      binds: meta.binds,
    });
  }

  const id = randomBytes(6).toString('hex');
  const created: Created = { volumes: [], holds: ctx.holds };
  const temps = new Map<string, string>();

  // 1. Read everything while the original runs untouched.
  let image: string;
  try {
    checkAborted(ctx, what);
    ctx.phase('loading image');
    const imageWasThere = await imageExists(engine, meta.image);
    if (!imageWasThere) await holdCreated(created, 'image', 'docker.image', { ref: meta.image });
    image = await loadImage(engine, meta, source, ctx);
    if (!imageWasThere) created.image = image;
    await readIntoTemporaryVolumes(
      engine,
      meta.volumes,
      id,
      target,
      source,
      ctx,
      what,
      created,
      temps,
    );
  } catch (err) {
    await removeCreated(engine, created, ctx);
    throw err;
  }

  // 2. Set the original aside (undoable).
  let aside: SetAside;
  try {
    ctx.phase('stopping container');
    aside = await setAside(engine, existing, name, id, ctx.holds);
    try {
      checkAborted(ctx, what);
      // The job is checked once more (the worker marks it past its point of no return, or
      // throws if it ended): a cancel before this leaves the container as it was.
      await ctx.pointOfNoReturn?.();
    } catch (err) {
      await putBackAll([aside], err);
    }
  } catch (err) {
    await removeCreated(engine, created, ctx);
    throw err;
  }
  const old = aside.old;

  // 3. Point of no return. From here the journal holds the whole swap: a sweep after a kill
  // (or after a failure here) finishes it from the temporary volumes.
  const plan: SwapPlan = {
    name,
    oldId: aside.id,
    image,
    meta,
    targets,
    targetNames: [...targetNames],
    temps: [...temps],
    remap,
  };
  const swap = ctx.holds ? await ctx.holds.take('docker', 'docker.swap', { ...plan }) : undefined;
  // The loaded image is the restored container's now; the aside record is the swap's.
  await created.records?.get('image')?.clear();
  created.records?.delete('image');
  await aside.hold?.clear();
  ctx.log.info(LogEvent.driverStep, { step: 'in-place point of no return', container: name, old });
  try {
    await finishSwap(engine, plan, ctx);
  } catch (err) {
    // The temporary volumes hold the restored data: their records and the swap's go to the
    // sweep, which finishes the swap before anything older is released.
    swap?.abandon();
    abandonCreated(created);
    const e = isStowageError(err) ? err : translate(err, what, engine.socketPath);
    throw new DriverError(
      `${what} failed after its point of no return (the old container was removed): ${e.message}; ` +
        `the restored data is kept in volumes ${[...temps.values()].join(', ') || '(none)'} and image ${image}: ` +
        'restore the point again (a restore with no container of that name creates it anew)',
      { cause: err },
    );
  }
  await keepCreated(created); // finishSwap removed the temporary volumes
  await swap?.clear();
  return { restoredTarget: target };
}

/** What an in-place restore past its point of no return still has to do (journaled as `docker.swap`). */
export interface SwapPlan {
  name: string;
  /** The set-aside original, to remove. */
  oldId: string;
  image: string;
  meta: DockerBackupMetadata;
  /** The volumes to replace, in the order of meta.volumes. */
  targets: VolumeRecord[];
  /** Point volume name → the name it is restored under. */
  targetNames: Array<[string, string]>;
  /** Point volume name → the temporary volume holding its restored data. */
  temps: Array<[string, string]>;
  remap: ContainerRemap;
}

/**
 * Step 3 of an in-place restore, also run by a sweep after the agent was killed in it, so each
 * step checks what is already done: the old container is removed (if still there); while no
 * container `name` exists, each volume is replaced by a copy of its temporary volume (one whose
 * temporary volume is gone was done); the container is created unless it exists, started if
 * it ran at backup time; the temporary volumes are removed.
 */
export async function finishSwap(
  engine: Engine,
  plan: SwapPlan,
  ctx: DriverContext,
): Promise<void> {
  const target = `docker:${plan.name}`;
  const temps = new Map(plan.temps);
  ctx.phase('replacing container');
  try {
    await engine.docker.getContainer(plan.oldId).remove({ force: true, v: false });
  } catch (err) {
    if (statusOf(err) !== 404) {
      throw translate(err, `removing the old container ${plan.oldId}`, engine.socketPath);
    }
  }
  let restored = await inspectByName(engine, plan.name);
  if (!restored) {
    for (const [n, volume] of plan.meta.volumes.entries()) {
      const into = plan.targets[n] as VolumeRecord;
      const temp = temps.get(volume.name) as string;
      if (!(await volumeExists(engine, temp))) continue;
      ctx.phase(`volume ${into.name}`);
      await recreateVolume(engine, into);
      await copyVolume(engine, temp, into.name, target, ctx);
    }
    ctx.phase('creating container');
    await createContainer(
      engine,
      plan.meta,
      plan.name,
      plan.image,
      new Map(plan.targetNames),
      { volumes: [] },
      ctx,
      undefined,
      plan.remap,
    );
    restored = await inspectByName(engine, plan.name);
  }
  if (plan.meta.wasRunning && restored && restored.State?.Running !== true) {
    ctx.phase('starting container');
    try {
      await engine.docker.getContainer(restored.Id).start();
    } catch (err) {
      if (statusOf(err) !== 304) {
        throw translate(err, `starting container ${plan.name}`, engine.socketPath);
      }
    }
  }
  await removeTemporaryVolumes(engine, temps, ctx);
}
