/**
 * Backup of one container: its inspect JSON, its filesystem as a committed image (`docker
 * commit`, then `docker save`; taken whole from the parent point instead when the container's
 * writable layer is unchanged since, layer.ts), each named or anonymous volume as a tar read
 * through a helper container, and with `includeBinds` each bind-mounted host directory the same
 * way.
 *
 * Streams, in order: `image` (docker-image-tar), `volume/<name>` (volume-tar) per volume, then
 * `bind/<index>` (bind-tar) per captured bind mount.
 *
 * Consistency (BackupOptions.consistency):
 * - `live` (default): dockerd pauses the container for the commit only and thaws it itself;
 *   volumes are read while it runs (crash-consistent, not quiesced).
 * - `pause`: the container is frozen for the whole capture (commit, save, volume reads).
 * - `stop`: the documented procedure: stop it, commit, save, read volumes, start it again.
 * Pre hooks run before the pause or stop, while it still runs; post hooks once it runs again
 * (also after a failed capture, so a hook that suspends something in the workload can undo it).
 *
 * Invariant: the pause or stop returns its release, which runs whatever fails (a sink error, an
 * abandoned job, a dockerd error): a container that was running before is running, and not
 * paused, after. A failing release wins over the capture's error: the workload being down is
 * what the operator must hear about. The temporary image tag and every helper are removed too.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { Readable } from 'node:stream';
import { DriverError, TargetNotFound } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type { BackupOptions, BackupOutcome, BackupSink, DriverContext } from '../../core/driver';
import {
  METADATA_FORMAT,
  type BindRecord,
  type Consistency,
  type DockerBackupMetadata,
  type InspectJson,
  type VolumeRecord,
} from './config';
import {
  checkAborted,
  inspectByName,
  removeImageRef,
  writeEngineGet,
  writeToSink,
  type Engine,
  STOP_GRACE_S,
} from './engine';
import { statusOf, translate } from './errors';
import { HELPER_MOUNT, withVolumeHelper } from './helper';
import { hostDirOfBind, hostDirOfVolume } from './host-tree';
import { runHooks, type HookRecord } from './hooks';
import { journaled, takeHold } from '../../core/holds';
import { layerFingerprint, parseImageSource, type ImageSource } from './layer';
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

export function notFound(name: string): TargetNotFound {
  return new TargetNotFound(
    `container ${name} does not exist; \`stowage targets --platform docker\` lists what the agent sees`,
  );
}

/** Each distinct volume the container mounts, with the facts needed to recreate it. */
export async function describeVolumes(
  engine: Engine,
  inspect: InspectJson,
): Promise<VolumeRecord[]> {
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

const CONSISTENCIES: readonly Consistency[] = ['live', 'pause', 'stop'];

/** `options.consistency` with its default; DriverError for a value this driver does not know. */
export function consistencyOf(options: BackupOptions): Consistency {
  const consistency = options.consistency ?? 'live';
  if (!CONSISTENCIES.includes(consistency)) {
    throw new DriverError(
      `unknown consistency "${String(consistency)}"; use one of ${CONSISTENCIES.join(', ')}`,
    );
  }
  return consistency;
}

/** Go's os.ModeDir, the top bit of the mode in dockerd's path stat. */
const GO_MODE_DIR = 2 ** 31;

/**
 * Whether `path` in container `id` is a directory: `HEAD /containers/{id}/archive` answers with
 * the path's stat in `X-Docker-Container-Path-Stat` (base64 JSON; dockerode does not expose it).
 */
function isDirectoryIn(engine: Engine, id: string, path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: engine.socketPath,
        method: 'HEAD',
        path: `/containers/${id}/archive?path=${encodeURIComponent(path)}`,
      },
      (res) => {
        res.resume();
        const header = res.headers['x-docker-container-path-stat'];
        if (res.statusCode !== 200 || typeof header !== 'string') {
          resolve(false);
          return;
        }
        try {
          const stat = JSON.parse(Buffer.from(header, 'base64').toString('utf8')) as {
            mode?: number;
          };
          resolve(Math.floor((stat.mode ?? 0) / GO_MODE_DIR) % 2 === 1);
        } catch {
          resolve(false);
        }
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/**
 * Freezes or stops the container as `consistency` asks and returns the release that undoes it
 * (idempotent; throws DriverError, with the manual fix, if the container cannot run again).
 * A failed pause or stop is undone before it is reported. The hold is journaled
 * (`docker.quiesce`, released by releaseDockerHold) before the container is touched.
 */
export async function quiesce(
  engine: Engine,
  inspect: InspectJson,
  consistency: Consistency,
  ctx: DriverContext,
): Promise<() => Promise<void>> {
  const name = inspect.Name.replace(/^\//, '');
  const running = inspect.State?.Running === true;
  const paused = inspect.State?.Paused === true;
  const nothing = async () => undefined;
  if (consistency === 'live' || !running || (consistency === 'pause' && paused)) return nothing;
  const hold = {
    container: inspect.Id,
    name,
    consistency,
    ownerPaused: paused,
    ...(consistency === 'stop' ? { stopGraceS: STOP_GRACE_S } : {}),
  };
  return journaled(ctx.holds, 'docker', 'docker.quiesce', hold, () =>
    takeQuiesce(engine, inspect, consistency, ctx),
  );
}

async function takeQuiesce(
  engine: Engine,
  inspect: InspectJson,
  consistency: Consistency,
  ctx: DriverContext,
): Promise<() => Promise<void>> {
  const name = inspect.Name.replace(/^\//, '');
  const container = engine.docker.getContainer(inspect.Id);
  const paused = inspect.State?.Paused === true;
  const current = async () => ((await container.inspect()) as unknown as InspectJson).State ?? {};
  const unpause = async () => {
    if ((await current()).Paused) await container.unpause();
  };
  const start = async () => {
    const state = await current();
    if (state.Paused) await container.unpause();
    else if (!state.Running) await container.start();
    // A container its owner had paused goes back to paused (its processes restarted, though).
    if (paused) await container.pause();
  };
  const verb = consistency === 'pause' ? 'unpause' : 'start';
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    ctx.phase(consistency === 'pause' ? 'unpausing container' : 'starting container');
    try {
      await (consistency === 'pause' ? unpause() : start());
    } catch (err) {
      const e = translate(err, `${verb} of container ${name} after its backup`, engine.socketPath);
      throw new DriverError(
        `${e.message}; the container was running before the backup and is not now: ` +
          `run \`docker ${verb} ${name}\``,
        { cause: err },
      );
    }
    ctx.log.info(LogEvent.driverStep, {
      step: consistency === 'pause' ? 'unpaused after capture' : 'started after capture',
      container: name,
    });
  };

  ctx.phase(consistency === 'pause' ? 'pausing container' : 'stopping container');
  try {
    if (consistency === 'pause') await container.pause();
    else await container.stop({ t: STOP_GRACE_S });
  } catch (err) {
    // 304: already stopped meanwhile; still ours to start again.
    if (!(consistency === 'stop' && statusOf(err) === 304)) {
      await release().catch((releaseErr: unknown) => {
        ctx.log.error(LogEvent.driverStep, {
          step: `${verb} after failed quiesce`,
          error: releaseErr,
        });
      });
      if (statusOf(err) === 404) throw notFound(name);
      throw translate(
        err,
        `${consistency === 'pause' ? 'pausing' : 'stopping'} container ${name}`,
        engine.socketPath,
      );
    }
  }
  ctx.log.info(LogEvent.driverStep, {
    step: consistency === 'pause' ? 'paused for capture' : 'stopped for capture',
    container: name,
  });
  return release;
}

export interface Captured {
  image: string;
  imageId: string;
  /** The parent point the image stream was taken from (the writable layer unchanged). */
  imageFrom?: string;
  binds: BindRecord[];
}

/**
 * How `capture` names what it writes. A single-container backup writes `image` and `bind/<i>`;
 * a Compose project backup writes `container/<key>/image` and `container/<key>/bind/<i>` per
 * container. Volume streams are `volume/<volume name>` either way (volume names are unique).
 */
export interface CaptureNaming {
  /** Prepended to the image and bind stream names: '' or `container/<key>/`. */
  streamPrefix: string;
  /** The target for messages and helper labels (`docker:<name>`, `docker-compose:<project>`). */
  target: string;
}

/**
 * Commit, save, volumes, binds: everything that reads the container's data. Reads exactly the
 * `volumes` given (a project backup passes a volume two containers share only once).
 */
export async function capture(
  engine: Engine,
  inspect: InspectJson,
  volumes: readonly VolumeRecord[],
  commitPause: boolean,
  includeBinds: boolean,
  sink: BackupSink,
  ctx: DriverContext,
  naming?: CaptureNaming,
): Promise<Captured> {
  const name = inspect.Name.replace(/^\//, '');
  const target = naming?.target ?? `docker:${name}`;
  const prefix = naming?.streamPrefix ?? '';
  const what = `backup of ${target}`;
  checkAborted(ctx, what);
  const imageOf = await imageStream(engine, inspect, commitPause, sink, ctx, { target, prefix });

  for (const volume of volumes) {
    checkAborted(ctx, what);
    ctx.phase(`volume ${volume.name}`);
    const hostDir = sink.writeTree ? await hostDirOfVolume(engine, volume.name, ctx) : undefined;
    if (hostDir && sink.writeTree) {
      // On the host: files unchanged since the last point are not read again.
      await sink.writeTree({ name: `volume/${volume.name}` }, hostDir, ctx);
      volume.read = 'host';
      continue;
    }
    volume.read = 'engine-api';
    await withVolumeHelper(
      engine.docker,
      engine.helperImage,
      engine.socketPath,
      { volume: volume.name, readOnly: true, target, log: ctx.log, holds: ctx.holds },
      async (helper) => {
        // Entries are `vol/...`: the layout HELPER_MOUNT documents.
        await writeEngineGet(
          engine,
          archiveOf(helper.id),
          sink,
          { name: `volume/${volume.name}`, kind: 'volume-tar' },
          ctx,
          what,
          `reading volume ${volume.name}`,
        );
      },
    );
  }

  const binds: BindRecord[] = [];
  if (!includeBinds) return { ...imageOf, binds };
  const bindMounts = (inspect.Mounts ?? [])
    .filter((m) => m.Type === 'bind' && m.Source && m.Destination)
    .sort((a, b) => String(a.Destination).localeCompare(String(b.Destination)));
  for (const mount of bindMounts) {
    checkAborted(ctx, what);
    const source = mount.Source as string;
    const destination = mount.Destination as string;
    ctx.phase(`bind ${source}`);
    const hostDir = sink.writeTree ? await hostDirOfBind(engine, source) : undefined;
    if (hostDir && sink.writeTree) {
      const index = binds.length;
      await sink.writeTree({ name: `${prefix}bind/${index}` }, hostDir, ctx);
      binds.push({ index, source, destination, readOnly: mount.RW === false, read: 'host' });
      continue;
    }
    await withVolumeHelper(
      engine.docker,
      engine.helperImage,
      engine.socketPath,
      {
        volume: `bind ${source}`,
        bindSource: source,
        readOnly: true,
        target,
        log: ctx.log,
        holds: ctx.holds,
      },
      async (helper) => {
        let directory: boolean;
        try {
          directory = await isDirectoryIn(engine, helper.id, HELPER_MOUNT);
        } catch (err) {
          throw translate(err, `inspecting bind mount ${source}`, engine.socketPath);
        }
        if (!directory) {
          // A bound file (a socket, a config file) is a reference, not data to carry.
          ctx.log.info(LogEvent.driverStep, { step: 'bind skipped: not a directory', source });
          return;
        }
        const index = binds.length;
        const info = { name: `${prefix}bind/${index}`, kind: 'bind-tar' };
        await writeEngineGet(
          engine,
          archiveOf(helper.id),
          sink,
          info,
          ctx,
          what,
          `reading bind mount ${source}`,
        );
        binds.push({
          index,
          source,
          destination,
          readOnly: mount.RW === false,
          read: 'engine-api',
        });
      },
    );
  }
  return { ...imageOf, binds };
}

/**
 * The container's filesystem as the `image` stream: taken whole from the parent point when the
 * writable layer is as it was then (layer.ts), else committed (`docker commit`) and saved
 * (`docker save`), the temporary tag removed after.
 */
async function imageStream(
  engine: Engine,
  inspect: InspectJson,
  commitPause: boolean,
  sink: BackupSink,
  ctx: DriverContext,
  naming: { target: string; prefix: string },
): Promise<{ image: string; imageId: string; imageFrom?: string }> {
  const name = inspect.Name.replace(/^\//, '');
  const what = `backup of ${naming.target}`;
  const info = { name: `${naming.prefix}image`, kind: 'docker-image-tar' };
  ctx.phase('looking at the writable layer');
  const layer = sink.reuseParent ? await layerFingerprint(engine, inspect, ctx) : undefined;
  if (layer !== undefined && sink.reuseParent) {
    let from: ImageSource | undefined;
    const reused = await sink.reuseParent(info, (source) => {
      from = parseImageSource(source);
      return from?.layer === layer;
    });
    if (reused && from) {
      ctx.log.info(LogEvent.driverStep, {
        step: 'image unchanged: taken from the parent point',
        stream: info.name,
        parent: reused.parent,
        imageId: from.imageId,
      });
      return { image: from.image, imageId: from.imageId, imageFrom: reused.parent };
    }
  }

  ctx.phase('committing image');
  const repo = imageRepoFor(name);
  const tag = randomBytes(6).toString('hex');
  const image = `${repo}:${tag}`;
  let imageId: string;
  const imageHold = await takeHold(ctx.holds, 'docker', 'docker.image', { ref: image });
  try {
    // pause (live mode): dockerd freezes the processes for the commit and thaws them itself,
    // even on error. In pause and stop modes the container is already frozen or stopped.
    const committed = (await engine.docker.getContainer(inspect.Id).commit({
      repo,
      tag,
      pause: commitPause,
      comment: `stowage backup of ${naming.target}`,
    })) as { Id: string };
    imageId = committed.Id;
  } catch (err) {
    imageHold?.abandon(); // dockerd may have committed it all the same: the sweep looks
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
    // The layer's fingerprint was taken before the commit: a change in between makes the next
    // backup commit again, never take an image older than the layer it names.
    const source = layer !== undefined ? JSON.stringify({ layer, image, imageId }) : undefined;
    await writeToSink(sink, { ...info, ...(source ? { source } : {}) }, saved, ctx, what);
  } finally {
    if (await removeImageRef(engine, image, ctx)) await imageHold?.clear();
    else imageHold?.abandon();
  }
  return { image, imageId };
}

/** dockerd's archive API for the helper's mount (GET /containers/{id}/archive). */
function archiveOf(helperId: string): string {
  return `/containers/${encodeURIComponent(helperId)}/archive?path=${encodeURIComponent(HELPER_MOUNT)}`;
}

export async function backupContainer(
  engine: Engine,
  name: string,
  sink: BackupSink,
  ctx: DriverContext,
  options: BackupOptions = {},
): Promise<BackupOutcome> {
  const target = `docker:${name}`;
  const what = `backup of ${target}`;
  const consistency = consistencyOf(options);
  checkAborted(ctx, what);
  ctx.phase('inspecting container');
  const inspect = await inspectByName(engine, name);
  if (!inspect) throw notFound(name);
  const wasRunning = inspect.State?.Running === true;
  const wasPaused = inspect.State?.Paused === true;
  const volumes = await describeVolumes(engine, inspect);

  const hooks: HookRecord[] = [];
  await runHooks(engine, inspect, 'pre', options.hooks?.pre, hooks, ctx);

  let captured: Captured | undefined;
  let failure: unknown;
  try {
    checkAborted(ctx, what);
    const release = await quiesce(engine, inspect, consistency, ctx);
    try {
      captured = await capture(
        engine,
        inspect,
        volumes,
        consistency === 'live' && wasRunning && !wasPaused,
        options.includeBinds === true,
        sink,
        ctx,
      );
    } catch (err) {
      failure = err;
    }
    try {
      await release();
    } catch (releaseErr) {
      if (failure !== undefined) {
        ctx.log.error(LogEvent.driverStep, { step: 'capture failed', error: failure });
      }
      failure = releaseErr;
    }
  } catch (err) {
    failure = err;
  }
  if (failure !== undefined || !captured) {
    // The capture failed, but the workload runs again: post hooks still undo what pre hooks did.
    try {
      await runHooks(engine, inspect, 'post', options.hooks?.post, hooks, ctx);
    } catch (hookErr) {
      ctx.log.warn(LogEvent.driverStep, { step: 'post hook after failed capture', error: hookErr });
    }
    throw failure;
  }
  await runHooks(engine, inspect, 'post', options.hooks?.post, hooks, ctx);

  const metadata: DockerBackupMetadata = {
    format: METADATA_FORMAT,
    name,
    container: inspect,
    image: captured.image,
    imageId: captured.imageId,
    ...(captured.imageFrom ? { imageFrom: captured.imageFrom } : {}),
    originalImage: inspect.Config?.Image ?? '',
    volumes,
    wasRunning,
    consistency,
    binds: captured.binds,
    hooks,
    ...(options.label !== undefined ? { label: options.label } : {}),
  };
  return {
    metadata: metadata as unknown as Record<string, unknown>,
    summary: {
      image: metadata.originalImage,
      volumes: volumes.length,
      state: inspect.State?.Status ?? 'unknown',
      consistency,
      ...(options.includeBinds ? { binds: captured.binds.length } : {}),
      // The writable layer unchanged: the image is that point's, not committed again.
      ...(captured.imageFrom ? { imageFrom: captured.imageFrom } : {}),
      ...(hooks.length > 0 ? { hooks: hooks.length } : {}),
    },
  };
}
