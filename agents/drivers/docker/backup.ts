/**
 * Backup of one container: its inspect JSON, its filesystem as a committed image (`docker
 * commit` with pause, then `docker save`), and each named or anonymous volume as a tar read
 * through a helper container.
 *
 * Streams, in order: `image` (docker-image-tar), then `volume/<name>` (volume-tar) per volume.
 * The workload is never left paused: dockerd pauses for the commit and unpauses itself, and this
 * module pauses or stops nothing else. The temporary image tag and every helper are removed in
 * `finally`. Volumes are read while the container runs (crash-consistent, not quiesced).
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { TargetNotFound } from '../../../functions/shared/errors';
import { LogEvent } from '../../../functions/shared/logger';
import type { BackupOutcome, BackupSink, DriverContext } from '../../core/driver';
import {
  METADATA_FORMAT,
  type DockerBackupMetadata,
  type InspectJson,
  type VolumeRecord,
} from './config';
import { checkAborted, inspectByName, removeImageRef, writeToSink, type Engine } from './engine';
import { statusOf, translate } from './errors';
import { HELPER_MOUNT, withVolumeHelper } from './helper';

/**
 * A docker repository path component for a container name: lowercase, separators collapsed,
 * no separator at either end (container names allow `A_b.-c`, repositories do not).
 */
export function imageRepoFor(name: string): string {
  const component = name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return `stowage/${component || 'container'}`;
}

function notFound(name: string): TargetNotFound {
  return new TargetNotFound(
    `container ${name} does not exist; \`stowage targets --platform docker\` lists what the agent sees`,
  );
}

/** Each distinct volume the container mounts, with the facts needed to recreate it. */
async function describeVolumes(engine: Engine, inspect: InspectJson): Promise<VolumeRecord[]> {
  const records: VolumeRecord[] = [];
  const seen = new Set<string>();
  for (const mount of inspect.Mounts ?? []) {
    if (mount.Type !== 'volume' || !mount.Name || seen.has(mount.Name)) continue;
    seen.add(mount.Name);
    let volume: {
      Driver?: string;
      Labels?: Record<string, string> | null;
      Options?: Record<string, string> | null;
    };
    try {
      volume = await engine.docker.getVolume(mount.Name).inspect();
    } catch (err) {
      throw translate(err, `inspecting volume ${mount.Name}`, engine.socketPath);
    }
    records.push({
      name: mount.Name,
      destination: mount.Destination ?? '',
      driver: volume.Driver ?? mount.Driver ?? 'local',
      labels: volume.Labels ?? {},
      options: volume.Options ?? {},
    });
  }
  // inspect lists mounts in no stable order; a fixed order keeps manifests comparable.
  return records.sort((a, b) => a.destination.localeCompare(b.destination));
}

export async function backupContainer(
  engine: Engine,
  name: string,
  sink: BackupSink,
  ctx: DriverContext,
): Promise<BackupOutcome> {
  const target = `docker:${name}`;
  const what = `backup of ${target}`;
  checkAborted(ctx, what);
  ctx.phase('inspecting container');
  const inspect = await inspectByName(engine, name);
  if (!inspect) throw notFound(name);
  const wasRunning = inspect.State?.Running === true;
  const volumes = await describeVolumes(engine, inspect);

  checkAborted(ctx, what);
  ctx.phase('committing image');
  const repo = imageRepoFor(name);
  const tag = randomBytes(6).toString('hex');
  const image = `${repo}:${tag}`;
  let imageId: string;
  try {
    // pause: dockerd freezes the processes for the commit and thaws them itself, even on error.
    const committed = (await engine.docker.getContainer(inspect.Id).commit({
      repo,
      tag,
      pause: wasRunning,
      comment: `stowage backup of ${target}`,
    })) as { Id: string };
    imageId = committed.Id;
  } catch (err) {
    if (statusOf(err) === 404) throw notFound(name);
    throw translate(err, `committing container ${name}`, engine.socketPath);
  }
  ctx.log.debug(LogEvent.driverStep, { step: 'committed', image, imageId });

  try {
    checkAborted(ctx, what);
    ctx.phase('saving image');
    let saved: Readable;
    try {
      saved = (await engine.docker.getImage(image).get()) as Readable;
    } catch (err) {
      throw translate(err, `saving image ${image}`, engine.socketPath);
    }
    await writeToSink(sink, { name: 'image', kind: 'docker-image-tar' }, saved, ctx, what);
  } finally {
    await removeImageRef(engine, image, ctx);
  }

  for (const volume of volumes) {
    checkAborted(ctx, what);
    ctx.phase(`volume ${volume.name}`);
    await withVolumeHelper(
      engine.docker,
      engine.helperImage,
      engine.socketPath,
      { volume: volume.name, readOnly: true, target, log: ctx.log },
      async (helper) => {
        let archive: Readable;
        try {
          // Entries are `vol/...`: the layout HELPER_MOUNT documents.
          archive = (await helper.getArchive({ path: HELPER_MOUNT })) as Readable;
        } catch (err) {
          throw translate(err, `reading volume ${volume.name}`, engine.socketPath);
        }
        await writeToSink(
          sink,
          { name: `volume/${volume.name}`, kind: 'volume-tar' },
          archive,
          ctx,
          what,
        );
      },
    );
  }

  const metadata: DockerBackupMetadata = {
    format: METADATA_FORMAT,
    name,
    container: inspect,
    image,
    imageId,
    originalImage: inspect.Config?.Image ?? '',
    volumes,
    wasRunning,
  };
  return {
    metadata: metadata as unknown as Record<string, unknown>,
    summary: {
      image: metadata.originalImage,
      volumes: volumes.length,
      state: inspect.State?.Status ?? 'unknown',
    },
  };
}
