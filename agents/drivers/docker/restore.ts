/**
 * Restore of a container under a new name, beside the original (which is never touched).
 *
 * Order: refuse early (name or any target volume taken, an unknown volume, port or network to
 * remap) → load the committed image → create each volume `<name>_<old volume>` (or the name
 * RestoreOptions.volumes gives it) and fill it through a helper → for a point made with
 * includeBinds, create `<name>_bind<index>` per captured bind mount and fill it (host
 * directories are never written: the copy mounts that volume where the host path was) → create
 * the container from the recorded config → connect extra networks → start it if it was running.
 * Everything created is recorded as it is created and removed if a later step fails, so a retry
 * starts clean. In-place restores are in restore-in-place.ts and reuse these steps.
 */
import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import { DriverError, NameTaken } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type {
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../core/driver';
import {
  parseMetadata,
  planCreate,
  publishedHostPorts,
  userNetworks,
  type DockerBackupMetadata,
  type InspectJson,
  type VolumeRecord,
} from './config';
import {
  checkAborted,
  consumeStream,
  imageExists,
  inspectByName,
  isValidName,
  removeImageRef,
  volumeExists,
  type Engine,
} from './engine';
import { statusOf, translate } from './errors';
import { HELPER_MOUNT, HELPER_MOUNT_PARENT, readProgress, withVolumeHelper } from './helper';
import { withGuardedTar } from '../../core/tar-guard';
import { hostDirOfVolume } from './host-tree';
import { TREE_KIND } from '../../core/tree/format';
import { checkPorts, newVolumeNames } from './remap';
import type { Hold, HoldTaker } from '../../core/holds';
import { SANDBOX_LABEL, isolate } from './sandbox';

/** Marks the volumes a restore creates, so it never adopts (or later deletes) a volume it did not make. */
export const RESTORE_LABEL = 'io.stowage.restore';

export interface Created {
  image?: string;
  volumes: string[];
  container?: Docker.Container;
  /**
   * The job's hold journal, when what is created must be journaled until the restore keeps it
   * (keepCreated) or removes it (removeCreated): a killed restore's sweep then removes it.
   */
  holds?: HoldTaker | undefined;
  /** The records of what was created: `volume:<name>`, `image`, `container`. */
  records?: Map<string, Hold>;
}

/** Records `key` of `created` before it is made, when `created` is journaled. */
export async function holdCreated(
  created: Pick<Created, 'holds' | 'records'>,
  key: string,
  kind: string,
  data: Record<string, unknown>,
): Promise<void> {
  if (!created.holds) return;
  created.records ??= new Map();
  created.records.set(key, await created.holds.take('docker', kind, data));
}

async function clearCreated(created: Pick<Created, 'records'>, key: string, ok: boolean) {
  const hold = created.records?.get(key);
  if (!hold) return;
  created.records!.delete(key);
  if (ok) await hold.clear();
  else hold.abandon();
}

/** What was created stays (the restore succeeded, or keeps it on purpose): its records go. */
export async function keepCreated(created: Pick<Created, 'records'>): Promise<void> {
  for (const hold of created.records?.values() ?? []) await hold.clear();
  created.records?.clear();
}

/** Hands the records of what was created to the sweep (a failure that left it on purpose). */
export function abandonCreated(created: Pick<Created, 'records'>): void {
  for (const hold of created.records?.values() ?? []) hold.abandon();
  created.records?.clear();
}

export async function loadImage(
  engine: Engine,
  meta: DockerBackupMetadata,
  source: RestoreSource,
  ctx: DriverContext,
  streamName = 'image',
): Promise<string> {
  const data = await source.openStream(streamName);
  const events = await consumeStream(data, ctx, `restore of image ${meta.image}`, async (s) => {
    try {
      const answer = await engine.docker.loadImage(s, { quiet: true });
      return await readProgress(answer, `loading image ${meta.image}`);
    } catch (err) {
      throw translate(err, `loading image ${meta.image}`, engine.socketPath);
    }
  });
  // `Loaded image: repo:tag` for tagged images, `Loaded image ID: sha256:...` otherwise.
  const loaded = events
    .map((e) => /^Loaded image(?: ID)?: (\S+)/.exec(String(e.stream ?? ''))?.[1])
    .filter((ref): ref is string => ref !== undefined);
  const ref = loaded.includes(meta.image) ? meta.image : (loaded[0] ?? meta.image);
  if (!(await imageExists(engine, ref))) {
    throw new DriverError(
      `dockerd loaded the image stream but ${ref} is not there (it said: ${loaded.join(', ') || 'nothing'}); ` +
        'the recovery point may be damaged: run a verify on it',
    );
  }
  return ref;
}

/**
 * Driver options of a `local` volume with `device` make it a view of storage outside Docker (a
 * host directory, an NFS export). Copying them would point the new volume at the original's
 * bytes, and the restore would overwrite them: such volumes come back as plain local volumes.
 */
export function safeDriverOptions(
  volume: VolumeRecord,
  ctx: DriverContext,
): Record<string, string> {
  if (volume.driver === 'local' && volume.options.device !== undefined) {
    ctx.log.warn(LogEvent.driverStep, {
      step: 'volume options dropped',
      volume: volume.name,
      reason: 'local volume with a device option would share the original storage',
    });
    return {};
  }
  return volume.options;
}

/**
 * Creates volume `name` labelled as this restore's and records it in `created`; NameTaken if a
 * volume of that name appeared meanwhile (creating an existing name answers with the existing one).
 */
export async function createRestoreVolume(
  engine: Engine,
  name: string,
  spec: { driver: string; options: Record<string, string>; labels: Record<string, string> },
  restoreId: string,
  created: Pick<Created, 'volumes' | 'holds' | 'records'>,
): Promise<void> {
  let labels: Record<string, string> | null | undefined;
  await holdCreated(created, `volume:${name}`, 'docker.volume', { name, restoreId });
  try {
    await engine.docker.createVolume({
      Name: name,
      Driver: spec.driver,
      DriverOpts: spec.options,
      Labels: { ...spec.labels, [RESTORE_LABEL]: restoreId },
    });
    // dockerode answers with a handle, not the volume: inspect it to see whose it is.
    labels = (await engine.docker.getVolume(name).inspect()).Labels;
  } catch (err) {
    throw translate(err, `creating volume ${name}`, engine.socketPath);
  }
  if (labels?.[RESTORE_LABEL] !== restoreId) {
    await clearCreated(created, `volume:${name}`, true); // not ours: nothing to release
    throw new NameTaken(
      `volume ${name} appeared while restoring (another restore to the same name?); ` +
        'restore under another --name',
    );
  }
  created.volumes.push(name);
}

/** Writes the recovery point's stream `streamName` (a volume-style tar) into volume `volume`. */
export async function fillVolume(
  engine: Engine,
  volume: string,
  streamName: string,
  target: string,
  source: RestoreSource,
  ctx: DriverContext,
): Promise<void> {
  const tree = source.streams.find((s) => s.name === streamName)?.kind === TREE_KIND;
  if (tree) {
    // A tree stream goes straight into the new (empty) volume's directory on the host; where
    // the agent cannot see it, as the tar dockerd's archive API takes.
    const hostDir = await hostDirOfVolume(engine, volume, ctx);
    if (hostDir && source.restoreTree) {
      await source.restoreTree(streamName, hostDir, ctx);
      return;
    }
    if (!source.treeAsTar) {
      throw new DriverError(`stream ${streamName} is a tree stream, which this source cannot read`);
    }
  }
  await withVolumeHelper(
    engine.docker,
    engine.helperImage,
    engine.socketPath,
    { volume, readOnly: false, target, log: ctx.log, holds: ctx.holds },
    async (helper) => {
      const data =
        tree && source.treeAsTar
          ? source.treeAsTar(streamName, HELPER_MOUNT.slice(HELPER_MOUNT_PARENT.length + 1))
          : await source.openStream(streamName);
      const what = `restore of volume ${volume}`;
      await consumeStream(data, ctx, what, async (s: Readable) => {
        try {
          // dockerd unpacks as it reads: the guard fails the stream before a hostile entry.
          await withGuardedTar(s, { what, root: basename(HELPER_MOUNT) }, (guarded) =>
            helper.putArchive(guarded, { path: HELPER_MOUNT_PARENT }),
          );
        } catch (err) {
          throw translate(err, `writing volume ${volume}`, engine.socketPath);
        }
      });
    },
  );
}

async function restoreVolume(
  engine: Engine,
  volume: VolumeRecord,
  newName: string,
  restoreId: string,
  target: string,
  source: RestoreSource,
  created: Created,
  ctx: DriverContext,
  sandbox?: string,
): Promise<void> {
  const spec = {
    driver: volume.driver,
    options: safeDriverOptions(volume, ctx),
    labels: sandbox === undefined ? volume.labels : { ...volume.labels, [SANDBOX_LABEL]: sandbox },
  };
  await createRestoreVolume(engine, newName, spec, restoreId, created);
  await fillVolume(engine, newName, `volume/${volume.name}`, target, source, ctx);
}

/** The name of the volume that receives captured bind mount `index` of a copy named `container`. */
export function bindVolumeName(container: string, index: number): string {
  return `${container}_bind${index}`;
}

/** Refuses names dockerd would refuse, before anything is created. */
export function checkName(name: string): void {
  if (!isValidName(name)) {
    throw new DriverError(
      `"${name}" is not a valid docker container name; use letters, digits, "_", "." and "-", ` +
        'starting with a letter or digit',
    );
  }
}

/** Fails early when the point lacks a stream the restore will need. */
export function checkStreams(source: RestoreSource, needed: readonly string[]): void {
  const present = new Set(source.streams.map((s) => s.name));
  for (const stream of needed) {
    if (!present.has(stream)) {
      throw new DriverError(
        `the recovery point has no stream ${stream}; it is incomplete: restore another recovery point`,
      );
    }
  }
}

/**
 * Fails early, with the fix, when a network the container will be attached to is missing: the
 * recorded ones, or `network` alone when the restore remaps it (RestoreOptions.network).
 */
export async function checkNetworks(
  engine: Engine,
  inspect: InspectJson,
  network?: string,
): Promise<void> {
  const names = network === undefined ? userNetworks(inspect) : [network];
  for (const name of names) {
    try {
      await engine.docker.getNetwork(name).inspect();
    } catch (err) {
      if (statusOf(err) !== 404)
        throw translate(err, `inspecting network ${name}`, engine.socketPath);
      const role =
        network === undefined
          ? 'which the container was attached to'
          : 'which the restore was asked to attach the container to';
      throw new DriverError(
        `network ${name}, ${role}, does not exist on this host; ` +
          `create it (docker network create ${name}) and run the restore again`,
      );
    }
  }
}

/** Network and port changes the restored container gets (RestoreOptions, checked). */
export interface ContainerRemap {
  network?: string;
  /** Normalised by checkPorts. */
  ports?: Readonly<Record<string, string>>;
  /** A restore test's sandbox (sandbox.ts): isolated, named by this label value. */
  sandbox?: { name: string; loadedImage?: string };
}

/**
 * Whether the original container still exists and holds any of the host ports `inspect` binds
 * for ports the restore does not remap (remapped ones were chosen by the caller).
 */
async function originalHoldsPorts(
  engine: Engine,
  inspect: InspectJson,
  remapped: Readonly<Record<string, string>> = {},
): Promise<boolean> {
  const kept = Object.entries(inspect.HostConfig?.PortBindings ?? {}).filter(
    ([port]) => !(port in remapped),
  );
  const wanted = publishedHostPorts({ PortBindings: Object.fromEntries(kept) });
  if (wanted.size === 0) return false;
  let original: InspectJson;
  try {
    original = (await engine.docker.getContainer(inspect.Id).inspect()) as unknown as InspectJson;
  } catch (err) {
    if (statusOf(err) === 404) return false;
    throw translate(err, `inspecting the original container ${inspect.Name}`, engine.socketPath);
  }
  const held = publishedHostPorts(original.HostConfig);
  return [...wanted].some((port) => held.has(port));
}

export async function createContainer(
  engine: Engine,
  meta: DockerBackupMetadata,
  name: string,
  image: string,
  volumes: ReadonlyMap<string, string>,
  created: Created,
  ctx: DriverContext,
  bindVolumes?: ReadonlyMap<string, string>,
  remap: ContainerRemap = {},
): Promise<Docker.Container> {
  const dropPortBindings = await originalHoldsPorts(engine, meta.container, remap.ports);
  if (dropPortBindings) {
    ctx.log.warn(LogEvent.driverStep, {
      step: 'port bindings dropped',
      reason: `the original container ${meta.name} still publishes the same host ports`,
    });
  }
  const plan = planCreate(meta.container, {
    image,
    volumes,
    dropPortBindings,
    bindVolumes,
    network: remap.network,
    ports: remap.ports,
  });
  if (remap.sandbox) {
    isolate(plan.body, remap.sandbox.name, remap.sandbox.loadedImage);
    plan.extraNetworks = [];
  }
  let container: Docker.Container;
  await holdCreated(created, 'container', 'docker.container', {
    name,
    notBefore: new Date(Date.now() - 2000).toISOString(),
  });
  try {
    container = await engine.docker.createContainer({
      name,
      ...plan.body,
    } as Docker.ContainerCreateOptions);
  } catch (err) {
    if (statusOf(err) === 409) {
      const message = `container ${name} appeared while restoring; restore under another --name`;
      throw new NameTaken(message, { cause: err });
    }
    throw translate(err, `creating container ${name}`, engine.socketPath);
  }
  created.container = container;
  for (const { network, aliases } of plan.extraNetworks) {
    try {
      await engine.docker.getNetwork(network).connect({
        Container: container.id,
        EndpointConfig: aliases.length > 0 ? { Aliases: aliases } : {},
      });
    } catch (err) {
      throw translate(err, `connecting ${name} to network ${network}`, engine.socketPath);
    }
  }
  return container;
}

export async function removeCreated(
  engine: Engine,
  created: Created,
  ctx: DriverContext,
): Promise<void> {
  const warn = (step: string, err: unknown) =>
    ctx.log.warn(LogEvent.driverStep, { step, error: translate(err, step, engine.socketPath) });
  if (created.container) {
    const id = created.container.id;
    const ok = await created.container.remove({ force: true, v: false }).then(
      () => true,
      (err: unknown) => (warn(`removing container ${id}`, err), false),
    );
    await clearCreated(created, 'container', ok);
  }
  for (const volume of created.volumes) {
    const ok = await engine.docker
      .getVolume(volume)
      .remove()
      .then(
        () => true,
        (err: unknown) => (warn(`removing volume ${volume}`, err), statusOf(err) === 404),
      );
    await clearCreated(created, `volume:${volume}`, ok);
  }
  if (created.image) {
    await clearCreated(created, 'image', await removeImageRef(engine, created.image, ctx));
  }
  // What was recorded but never made (a kill-free failure between record and create).
  await keepCreated(created);
}

/** Restores under a new name, beside the original. `options.inPlace` is not looked at here. */
export async function restoreContainer(
  engine: Engine,
  rawMetadata: Record<string, unknown>,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  const meta = parseMetadata(rawMetadata);
  const name = options.name;
  checkName(name);
  const target = `docker:${name}`;
  const what = `restore to ${target}`;
  const binds = meta.binds ?? [];

  // Refuse before creating anything.
  if (await inspectByName(engine, name)) {
    throw new NameTaken(
      `container ${name} already exists; restore under another name with --name, or remove it first`,
    );
  }
  const volumeNames = newVolumeNames(meta, name, options.volumes);
  const sandbox = options.sandbox === true;
  const remap: ContainerRemap = sandbox
    ? { network: 'none', sandbox: { name } }
    : { network: options.network, ports: checkPorts(meta.container, options.ports) };
  for (const [original, renamed] of volumeNames) {
    if (await volumeExists(engine, renamed)) {
      const fix =
        options.volumes?.[original] === undefined
          ? 'restore under another name with --name'
          : 'map it to another name';
      throw new NameTaken(
        `volume ${renamed} already exists (it would receive the restored copy of volume ${original}); ` +
          `${fix}, or remove that volume first`,
      );
    }
  }
  const bindVolumes = new Map(binds.map((b) => [b.destination, bindVolumeName(name, b.index)]));
  for (const bind of binds) {
    const volume = bindVolumeName(name, bind.index);
    if (await volumeExists(engine, volume)) {
      throw new NameTaken(
        `volume ${volume} already exists (it would receive the restored copy of bind mount ${bind.source}); ` +
          'restore under another name with --name, or remove that volume first',
      );
    }
  }
  await checkNetworks(engine, meta.container, remap.network);
  checkStreams(source, [
    'image',
    ...meta.volumes.map((v) => `volume/${v.name}`),
    ...binds.map((b) => `bind/${b.index}`),
  ]);

  const created: Created = { volumes: [], holds: ctx.holds };
  const restoreId = randomBytes(8).toString('hex');
  try {
    checkAborted(ctx, what);
    ctx.phase('loading image');
    const imageWasThere = await imageExists(engine, meta.image);
    if (!imageWasThere) await holdCreated(created, 'image', 'docker.image', { ref: meta.image });
    const image = await loadImage(engine, meta, source, ctx);
    if (!imageWasThere) created.image = image;
    if (remap.sandbox && !imageWasThere) remap.sandbox.loadedImage = image;

    for (const volume of meta.volumes) {
      checkAborted(ctx, what);
      ctx.phase(`volume ${volume.name}`);
      const renamed = volumeNames.get(volume.name) as string;
      await restoreVolume(
        engine,
        volume,
        renamed,
        restoreId,
        target,
        source,
        created,
        ctx,
        sandbox ? name : undefined,
      );
    }

    for (const bind of binds) {
      checkAborted(ctx, what);
      ctx.phase(`bind ${bind.source}`);
      const volume = bindVolumeName(name, bind.index);
      const spec = {
        driver: 'local',
        options: {},
        labels: (sandbox ? { [SANDBOX_LABEL]: name } : {}) as Record<string, string>,
      };
      await createRestoreVolume(engine, volume, spec, restoreId, created);
      await fillVolume(engine, volume, `bind/${bind.index}`, target, source, ctx);
      // The host directory is the original's live data: it is never overwritten.
      ctx.log.info(LogEvent.driverStep, {
        step: 'bind mount restored as a volume',
        source: bind.source,
        destination: bind.destination,
        volume,
        note: `the host directory ${bind.source} was left untouched; ${name} mounts volume ${volume} at ${bind.destination} instead`,
      });
    }

    checkAborted(ctx, what);
    ctx.phase('creating container');
    const container = await createContainer(
      engine,
      meta,
      name,
      image,
      volumeNames,
      created,
      ctx,
      bindVolumes,
      remap,
    );

    if (meta.wasRunning || sandbox) {
      checkAborted(ctx, what);
      ctx.phase('starting container');
      try {
        await container.start();
      } catch (err) {
        throw translate(err, `starting container ${name}`, engine.socketPath);
      }
    }
    await keepCreated(created);
    return { restoredTarget: target };
  } catch (err) {
    await removeCreated(engine, created, ctx);
    throw err;
  }
}
