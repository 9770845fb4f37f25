/**
 * The container's writable layer, looked at on the host so that an unchanged one is not committed
 * and saved again at every backup.
 *
 * `docker commit` then `docker save` make the `image` stream: the container's writable layer on
 * top of its image, read whole by dockerd each time (for a 2 MiB busybox, a third of an
 * incremental backup whose volume changed by 1 %). With overlay2 the writable layer is a plain
 * directory on the host (`GraphDriver.Data.UpperDir`): every change to the container's files,
 * a deletion (a whiteout) included, changes the ctime of an entry there or of its directory.
 * Its fingerprint is a digest of each entry's path, type and mode, owner, size, mtime, ctime,
 * inode and device number, with the container's id, its image's id and its configuration (what
 * a commit takes besides the files). When the parent point's image stream was made from the
 * same fingerprint, the backup takes that stream whole (BackupSink.reuseParent): the image it
 * holds is what a commit would make now, the creation date and tag apart.
 *
 * Where the agent cannot see the layer (no host access, another storage driver, a path that
 * is not a directory) or the walk meets a change under way (an entry gone between two looks),
 * there is no fingerprint: the image is committed and saved as before.
 */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { LogEvent } from '../../../kernel/logger';
import type { DriverContext } from '../../core/driver';
import { checkAborted } from '../../core/driver-streams';
import type { InspectJson } from './config';
import type { Engine } from './engine';

/** Bumped whenever what goes into the digest changes, so an older fingerprint never matches. */
const FINGERPRINT_VERSION = 'stowage.docker.layer/1';

/** What an image stream records as its source (StreamInfo.source), as JSON. */
export interface ImageSource {
  /** The writable layer's fingerprint at the commit. */
  layer: string;
  /** The committed image's reference and id, as the stream's tar names them. */
  image: string;
  imageId: string;
}

/** Entries looked at between two turns of the event loop. */
const YIELD_EVERY = 512;

const FINGERPRINT = /^[0-9a-f]{64}$/;
const IMAGE_ID = /^sha256:[0-9a-f]{64}$/;
/** `stowage/<component>:<12 hex>`, as capture names a committed image. */
const IMAGE_REF = /^stowage\/[a-z0-9]+(?:-[a-z0-9]+)*:[0-9a-f]{12}$/;

/** The recorded source of an image stream, or undefined when it is not one this driver wrote. */
export function parseImageSource(source: string): ImageSource | undefined {
  let value: unknown;
  try {
    value = JSON.parse(source);
  } catch {
    return undefined;
  }
  const s = value as Partial<ImageSource> | null;
  if (
    typeof s !== 'object' ||
    s === null ||
    typeof s.layer !== 'string' ||
    !FINGERPRINT.test(s.layer) ||
    typeof s.image !== 'string' ||
    !IMAGE_REF.test(s.image) ||
    typeof s.imageId !== 'string' ||
    !IMAGE_ID.test(s.imageId)
  ) {
    return undefined;
  }
  return { layer: s.layer, image: s.image, imageId: s.imageId };
}

/**
 * The fingerprint of the container's writable layer, or undefined when this agent cannot take
 * one (then the image is committed and saved).
 */
export async function layerFingerprint(
  engine: Engine,
  inspect: InspectJson,
  ctx: DriverContext,
): Promise<string | undefined> {
  if (!engine.hostAccess) return undefined;
  const graph = inspect.GraphDriver as { Name?: unknown; Data?: { UpperDir?: unknown } | null };
  const upper = graph?.Data?.UpperDir;
  if (graph?.Name !== 'overlay2' || typeof upper !== 'string' || !isAbsolute(upper)) {
    return undefined;
  }
  const hash = createHash('sha256');
  hash.update(`${FINGERPRINT_VERSION}\0${inspect.Id}\0${String(inspect.Image)}\0`);
  hash.update(JSON.stringify(inspect.Config ?? null));
  const slash = Buffer.from('/');
  try {
    const top = lstatSync(upper, { bigint: true });
    if (!top.isDirectory()) return undefined;
    let entries = 0;
    // Names as bytes (a name need not be UTF-8); one system call each, as the tree walk makes
    // them, letting the event loop run (and a cancel land) every YIELD_EVERY entries.
    const walk = async (dir: Buffer, rel: Buffer): Promise<void> => {
      const names = readdirSync(dir, { encoding: 'buffer' }).sort(Buffer.compare);
      for (const name of names) {
        if (++entries % YIELD_EVERY === 0) {
          await new Promise((resolve) => setImmediate(resolve));
          checkAborted(ctx, 'looking at the writable layer');
        }
        const path = Buffer.concat([dir, slash, name]);
        const relPath = rel.length > 0 ? Buffer.concat([rel, slash, name]) : name;
        const st = lstatSync(path, { bigint: true });
        hash.update('\n');
        hash.update(relPath);
        hash.update(
          `\0${st.mode}\0${st.uid}\0${st.gid}\0${st.size}\0${st.mtimeNs}\0` +
            `${st.ctimeNs}\0${st.ino}\0${st.rdev}`,
        );
        if (st.isDirectory()) await walk(path, relPath);
      }
    };
    await walk(Buffer.from(upper), Buffer.alloc(0));
    // The top directory last: an entry added or removed at the top while walking changes it.
    const after = lstatSync(upper, { bigint: true });
    if (after.ctimeNs !== top.ctimeNs) throw new Error('the layer changed while it was read');
    hash.update(`\n.\0${top.mode}\0${top.uid}\0${top.gid}\0${top.mtimeNs}\0${top.ctimeNs}`);
    ctx.log.debug(LogEvent.driverStep, { step: 'writable layer looked at', entries });
    return hash.digest('hex');
  } catch (err) {
    if (ctx.signal.aborted) throw err;
    // An entry gone or replaced under the walk, or a layer this agent cannot read: commit.
    ctx.log.info(LogEvent.driverStep, {
      step: 'writable layer not fingerprinted',
      reason: (err as Error).message,
    });
    return undefined;
  }
}
