/**
 * Single-volume restore (RestoreOptions.volume): one volume's stream of a container's recovery
 * point into a volume, and nothing else. No image is loaded and no container is created, stopped
 * or started; the outcome names the container the request was addressed to (`docker:<name>`),
 * and the log and the phase name the volume.
 *
 * - Into a volume that does not exist: create it (labelled as this restore's, with the recorded
 *   driver and labels) and fill it; a failure removes it.
 * - Into one that exists: refused (DriverError) while a running or paused container mounts it,
 *   since its data would change under it (stopped ones are fine); refused (NameTaken) when it
 *   holds anything, unless inPlace. Otherwise the stream is first read to its end into a
 *   temporary volume, so a damaged point fails before the target is touched; then the target is
 *   emptied and the temporary volume copied into it.
 *
 * Emptying needs no program in any image: `PUT archive` of a tar whose only entry is `vol`, a
 * regular file, makes dockerd's untar remove what is at /mnt/vol before writing the file there
 * (the API leaves noOverwriteDirNonDir off). That removes everything in the volume and then fails
 * with EBUSY on the mount point itself. The failure is expected; emptiness is checked afterwards.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { DriverError, NameTaken, isStowageError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type {
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../core/driver';
import { parseMetadata } from './config';
import { checkAborted, isValidName, volumeExists, type Engine } from './engine';
import { dockerMessage, translate } from './errors';
import { HELPER_LABEL, HELPER_MOUNT, HELPER_MOUNT_PARENT, withVolumeHelper } from './helper';
import { checkSingleVolumeOptions, pointVolume } from './remap';
import {
  checkStreams,
  createRestoreVolume,
  fillVolume,
  keepCreated,
  removeCreated,
  safeDriverOptions,
  type Created,
} from './restore';
import { copyVolume } from './restore-in-place';

/** Container states in which a process may be using the volume's data. */
const ACTIVE_STATES = new Set(['running', 'paused', 'restarting']);

/** The containers (not our helpers) that mount `volume`, with their state. */
async function volumeUsers(
  engine: Engine,
  volume: string,
): Promise<Array<{ name: string; state: string }>> {
  try {
    const list = await engine.docker.listContainers({ all: true, filters: { volume: [volume] } });
    return list
      .filter((c) => c.Labels?.[HELPER_LABEL] !== '1')
      .map((c) => ({ name: (c.Names?.[0] ?? c.Id).replace(/^\//, ''), state: c.State }));
  } catch (err) {
    throw translate(err, `listing the users of volume ${volume}`, engine.socketPath);
  }
}

/** Whether `volume` holds any entry: its archive has more than the root `vol/`. */
async function hasContent(
  engine: Engine,
  volume: string,
  target: string,
  ctx: DriverContext,
): Promise<boolean> {
  const options = { volume, readOnly: true, target, log: ctx.log, holds: ctx.holds };
  return withVolumeHelper(
    engine.docker,
    engine.helperImage,
    engine.socketPath,
    options,
    async (helper) => {
      let archive: Readable;
      try {
        archive = (await helper.getArchive({ path: HELPER_MOUNT })) as Readable;
      } catch (err) {
        throw translate(err, `reading volume ${volume}`, engine.socketPath);
      }
      const extract = tar.extract();
      try {
        // Only the first two headers are needed: stop reading there, whatever the volume holds.
        return await new Promise<boolean>((resolve, reject) => {
          let entries = 0;
          extract.on('entry', (_header, body, next) => {
            entries += 1;
            if (entries > 1) {
              resolve(true);
              return;
            }
            body.on('end', next);
            body.resume();
          });
          extract.on('finish', () => resolve(entries > 1));
          extract.on('error', reject);
          archive.on('error', reject);
          archive.pipe(extract);
        });
      } catch (err) {
        throw translate(err, `reading volume ${volume}`, engine.socketPath);
      } finally {
        archive.destroy();
        extract.destroy();
      }
    },
  );
}

/** Removes everything in `volume`, keeping the volume (see the module header for how). */
async function emptyVolume(
  engine: Engine,
  volume: string,
  target: string,
  ctx: DriverContext,
): Promise<void> {
  let said: string | undefined;
  await withVolumeHelper(
    engine.docker,
    engine.helperImage,
    engine.socketPath,
    { volume, readOnly: false, target, log: ctx.log, holds: ctx.holds },
    async (helper) => {
      const pack = tar.pack();
      pack.entry({ name: 'vol', type: 'file', size: 0, mode: 0o644 }, '');
      pack.finalize();
      const chunks: Buffer[] = [];
      for await (const chunk of pack) chunks.push(chunk as Buffer);
      try {
        await helper.putArchive(Buffer.concat(chunks), { path: HELPER_MOUNT_PARENT });
      } catch (err) {
        said = dockerMessage(err); // expected: EBUSY on the mount point, after its contents went
      }
    },
  );
  if (await hasContent(engine, volume, target, ctx)) {
    throw new DriverError(
      `emptying volume ${volume} before writing the restored data into it failed` +
        `${said ? ` (dockerd said: ${said})` : ''}; it may be partly emptied`,
    );
  }
}

/** Restores only the point's volume `options.volume` into `options.intoVolume`. */
export async function restoreSingleVolume(
  engine: Engine,
  rawMetadata: Record<string, unknown>,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  const meta = parseMetadata(rawMetadata);
  checkSingleVolumeOptions(options);
  const record = pointVolume(meta, options.volume ?? '');
  const into = options.intoVolume ?? `${record.name}-restored`;
  if (!isValidName(into)) {
    throw new DriverError(
      `"${into}" is not a valid docker volume name; use letters, digits, "_", "." and "-", ` +
        'starting with a letter or digit',
    );
  }
  const stream = `volume/${record.name}`;
  checkStreams(source, [stream]);
  const target = `docker:${options.name}`;
  const what = `restore of volume ${record.name} into ${into}`;
  const restoreId = randomBytes(6).toString('hex');
  const created: Created = { volumes: [], holds: ctx.holds };
  const done = (mode: string): RestoreOutcome => {
    ctx.log.info(LogEvent.driverStep, {
      step: 'volume restored',
      volume: record.name,
      into,
      mode,
      note: 'only this volume was restored: no image was loaded and no container was touched',
    });
    return { restoredTarget: target };
  };

  if (!(await volumeExists(engine, into))) {
    try {
      checkAborted(ctx, what);
      ctx.phase(`volume ${record.name} into ${into}`);
      const spec = {
        driver: record.driver,
        options: safeDriverOptions(record, ctx),
        labels: record.labels,
      };
      await createRestoreVolume(engine, into, spec, restoreId, created);
      await fillVolume(engine, into, stream, target, source, ctx);
    } catch (err) {
      await removeCreated(engine, created, ctx);
      throw err;
    }
    await keepCreated(created);
    return done('new volume');
  }

  const active = (await volumeUsers(engine, into)).filter((u) => ACTIVE_STATES.has(u.state));
  if (active.length > 0) {
    const names = active.map((u) => `${u.name} (${u.state})`).join(', ');
    throw new DriverError(
      `volume ${into} is mounted by ${names}; restoring into it would change its data underneath: ` +
        'stop those containers first, or restore into another volume with --into',
    );
  }
  const full = await hasContent(engine, into, target, ctx);
  if (full && !options.inPlace) {
    throw new NameTaken(
      `volume ${into} already exists and is not empty; restore into another volume with --into, ` +
        'or pass --in-place to replace its contents',
    );
  }

  // Read the whole stream before the target is touched.
  const temp = `stowage-volume-${restoreId}`;
  try {
    checkAborted(ctx, what);
    ctx.phase(`volume ${record.name}`);
    const spec = { driver: 'local', options: {}, labels: {} };
    await createRestoreVolume(engine, temp, spec, restoreId, created);
    await fillVolume(engine, temp, stream, target, source, ctx);
    checkAborted(ctx, what);
  } catch (err) {
    await removeCreated(engine, created, ctx);
    throw err;
  }
  try {
    ctx.phase(`volume ${record.name} into ${into}`);
    if (full) await emptyVolume(engine, into, target, ctx);
    await copyVolume(engine, temp, into, target, ctx);
  } catch (err) {
    await keepCreated(created); // the temporary volume holds the data: left for the operator
    const e = isStowageError(err) ? err : translate(err, what, engine.socketPath);
    throw new DriverError(
      `${what} failed while writing ${into}: ${e.message}; the restored data is kept in volume ` +
        `${temp}: copy it by hand, or restore again`,
      { cause: err },
    );
  }
  await removeCreated(engine, created, ctx);
  return done(full ? 'replaced contents' : 'into empty volume');
}
