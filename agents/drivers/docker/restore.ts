/**
 * Restore of a container under a new name, beside the original (which is never touched).
 *
 * Order: refuse early (name or any target volume taken) → load the committed image → create each
 * volume `<name>_<old volume>` and fill it through a helper → create the container from the
 * recorded config → connect extra networks → start it if it was running. Everything created is
 * recorded as it is created and removed if a later step fails, so a retry starts clean.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import { DriverError, NameTaken } from '../../../functions/shared/errors';
import { LogEvent } from '../../../functions/shared/logger';
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
  restoredVolumeName,
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
import { HELPER_MOUNT_PARENT, readProgress, withVolumeHelper } from './helper';

/** Marks the volumes a restore creates, so it never adopts (or later deletes) a volume it did not make. */
export const RESTORE_LABEL = 'io.stowage.restore';

interface Created {
  image?: string;
  volumes: string[];
  container?: Docker.Container;
}

async function loadImage(
  engine: Engine,
  meta: DockerBackupMetadata,
  source: RestoreSource,
  ctx: DriverContext,
): Promise<string> {
  const data = await source.openStream('image');
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
function safeDriverOptions(volume: VolumeRecord, ctx: DriverContext): Record<string, string> {
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

async function restoreVolume(
  engine: Engine,
  volume: VolumeRecord,
  newName: string,
  restoreId: string,
  target: string,
  source: RestoreSource,
  created: Created,
  ctx: DriverContext,
): Promise<void> {
  let labels: Record<string, string> | null | undefined;
  try {
    await engine.docker.createVolume({
      Name: newName,
      Driver: volume.driver,
      DriverOpts: safeDriverOptions(volume, ctx),
      Labels: { ...volume.labels, [RESTORE_LABEL]: restoreId },
    });
    // dockerode answers with a handle, not the volume: inspect it to see whose it is.
    labels = (await engine.docker.getVolume(newName).inspect()).Labels;
  } catch (err) {
    throw translate(err, `creating volume ${newName}`, engine.socketPath);
  }
  // Creating a volume whose name exists answers with the existing one instead of failing.
  if (labels?.[RESTORE_LABEL] !== restoreId) {
    throw new NameTaken(
      `volume ${newName} appeared while restoring (another restore to the same name?); ` +
        'restore under another --name',
    );
  }
  created.volumes.push(newName);
  await withVolumeHelper(
    engine.docker,
    engine.helperImage,
    engine.socketPath,
    { volume: newName, readOnly: false, target, log: ctx.log },
    async (helper) => {
      const data = await source.openStream(`volume/${volume.name}`);
      await consumeStream(data, ctx, `restore of volume ${newName}`, async (s: Readable) => {
        try {
          await helper.putArchive(s, { path: HELPER_MOUNT_PARENT });
        } catch (err) {
          throw translate(err, `writing volume ${newName}`, engine.socketPath);
        }
      });
    },
  );
}

/** Fails early, with the fix, when a network the container was attached to is gone. */
async function checkNetworks(engine: Engine, inspect: InspectJson): Promise<void> {
  const names = userNetworks(inspect);
  for (const network of names) {
    try {
      await engine.docker.getNetwork(network).inspect();
    } catch (err) {
      if (statusOf(err) !== 404)
        throw translate(err, `inspecting network ${network}`, engine.socketPath);
      throw new DriverError(
        `network ${network}, which the container was attached to, does not exist on this host; ` +
          `create it (docker network create ${network}) and run the restore again`,
      );
    }
  }
}

/** Whether the original container still exists and holds any of the host ports `inspect` binds. */
async function originalHoldsPorts(engine: Engine, inspect: InspectJson): Promise<boolean> {
  const wanted = publishedHostPorts(inspect.HostConfig);
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

async function createContainer(
  engine: Engine,
  meta: DockerBackupMetadata,
  name: string,
  image: string,
  volumes: ReadonlyMap<string, string>,
  created: Created,
  ctx: DriverContext,
): Promise<Docker.Container> {
  const dropPortBindings = await originalHoldsPorts(engine, meta.container);
  if (dropPortBindings) {
    ctx.log.warn(LogEvent.driverStep, {
      step: 'port bindings dropped',
      reason: `the original container ${meta.name} still publishes the same host ports`,
    });
  }
  const plan = planCreate(meta.container, { image, volumes, dropPortBindings });
  let container: Docker.Container;
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

async function removeCreated(engine: Engine, created: Created, ctx: DriverContext): Promise<void> {
  const warn = (step: string, err: unknown) =>
    ctx.log.warn(LogEvent.driverStep, { step, error: translate(err, step, engine.socketPath) });
  if (created.container) {
    const id = created.container.id;
    await created.container
      .remove({ force: true, v: false })
      .catch((err: unknown) => warn(`removing container ${id}`, err));
  }
  for (const volume of created.volumes) {
    await engine.docker
      .getVolume(volume)
      .remove()
      .catch((err: unknown) => warn(`removing volume ${volume}`, err));
  }
  if (created.image) await removeImageRef(engine, created.image, ctx);
}

export async function restoreContainer(
  engine: Engine,
  rawMetadata: Record<string, unknown>,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  if (options.inPlace) {
    throw new DriverError(
      'in-place restore of docker containers is not supported yet; restore under a new name with --name',
    );
  }
  const meta = parseMetadata(rawMetadata);
  const name = options.name;
  if (!isValidName(name)) {
    throw new DriverError(
      `"${name}" is not a valid docker container name; use letters, digits, "_", "." and "-", ` +
        'starting with a letter or digit',
    );
  }
  const target = `docker:${name}`;
  const what = `restore to ${target}`;

  // Refuse before creating anything.
  if (await inspectByName(engine, name)) {
    throw new NameTaken(
      `container ${name} already exists; restore under another name with --name, or remove it first`,
    );
  }
  const volumeNames = new Map(meta.volumes.map((v) => [v.name, restoredVolumeName(name, v.name)]));
  for (const [original, renamed] of volumeNames) {
    if (await volumeExists(engine, renamed)) {
      throw new NameTaken(
        `volume ${renamed} already exists (it would receive the restored copy of volume ${original}); ` +
          'restore under another name with --name, or remove that volume first',
      );
    }
  }
  await checkNetworks(engine, meta.container);
  const present = new Set(source.streams.map((s) => s.name));
  for (const stream of ['image', ...meta.volumes.map((v) => `volume/${v.name}`)]) {
    if (!present.has(stream)) {
      throw new DriverError(
        `the recovery point has no stream ${stream}; it is incomplete: restore another recovery point`,
      );
    }
  }

  const created: Created = { volumes: [] };
  const restoreId = randomBytes(8).toString('hex');
  try {
    checkAborted(ctx, what);
    ctx.phase('loading image');
    const imageWasThere = await imageExists(engine, meta.image);
    const image = await loadImage(engine, meta, source, ctx);
    if (!imageWasThere) created.image = image;

    for (const volume of meta.volumes) {
      checkAborted(ctx, what);
      ctx.phase(`volume ${volume.name}`);
      const renamed = volumeNames.get(volume.name) as string;
      await restoreVolume(engine, volume, renamed, restoreId, target, source, created, ctx);
    }

    checkAborted(ctx, what);
    ctx.phase('creating container');
    const container = await createContainer(engine, meta, name, image, volumeNames, created, ctx);

    if (meta.wasRunning) {
      checkAborted(ctx, what);
      ctx.phase('starting container');
      try {
        await container.start();
      } catch (err) {
        throw translate(err, `starting container ${name}`, engine.socketPath);
      }
    }
    return { restoredTarget: target };
  } catch (err) {
    await removeCreated(engine, created, ctx);
    throw err;
  }
}
