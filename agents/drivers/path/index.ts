/**
 * The path driver: a file, block device or directory on the agent's own host as a target
 * (`path:/srv/images`, `path:/var/lib/vm/disk.img`, `path:/dev/vdb`).
 *
 * A recovery point holds one stream: `file` (kind `file`, the bytes), `device` (kind
 * `block-device`, the bytes to the device's end) or `tree` (kind `tar`, see ./tree.ts), and
 * metadata in the `stowage.path/1` format (./common.ts). A target named by a symlink
 * (`/dev/disk/by-id/...`) is backed up as what the link points to.
 *
 * Paths are not discoverable: `listTargets` answers only the configured roots (none by
 * default), and any absolute path that exists on the host can be backed up whether listed or
 * not. Nothing is quiesced or snapshotted: a file, device or tree that changes while it is read
 * is copied as it was read (a well-formed stream, with warnings in the metadata).
 *
 * Restores never leave a half-written file or tree at the destination: the new copy is built
 * beside it and moved into place in one rename (./bytes.ts, ./extract.ts). The exception is a
 * block device, which can only be overwritten where it is.
 */
import { promises as fs, type Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { DriverError } from '../../../kernel/errors';
import { LogEvent, silentLogger, type Logger } from '../../../kernel/logger';
import type {
  BackupOutcome,
  BackupSink,
  DiscoveredTarget,
  Driver,
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../core/driver';
import { backupBytes, deviceSize, nameTaken, restoreAsFile, restoreOntoDevice } from './bytes';
import {
  anchorDirectory,
  checkAborted,
  checkParent,
  checkPathName,
  errnoOf,
  isInside,
  lstatOrUndefined,
  METADATA_FORMAT,
  notFound,
  parseMetadata,
  translate,
  Warnings,
  type PathBackupMetadata,
  type PathType,
} from './common';
import { restoreTree } from './extract';
import { backupTree } from './tree';

export { METADATA_FORMAT, type PathBackupMetadata } from './common';

export interface PathDriverOptions {
  /** Absolute paths `listTargets` reports. Default none: any existing absolute path works. */
  roots?: string[];
  /**
   * The trees whose files, devices and directories this agent backs up and restores (`--paths`);
   * undefined: every path its user may read and write. Checked on real paths (symlinks resolved).
   */
  allowed?: string[];
  /** For what happens outside a job (listing targets); jobs log through their context. */
  log?: Logger;
}

interface Resolved {
  /** The path as named. */
  path: string;
  /** Where it leads: the same path, or a symlink's resolved target. */
  real: string;
  st: Stats;
}

function typeOf(st: Stats): PathType | undefined {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isBlockDevice()) return 'block-device';
  return undefined;
}

function describe(st: Stats): string {
  if (st.isSocket()) return 'a socket';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFile()) return 'a regular file';
  return 'not a file, block device or directory';
}

/** lstat, following a symlink at the path itself (never below it); undefined if missing. */
async function resolve(path: string): Promise<Resolved | undefined> {
  const lst = await lstatOrUndefined(path);
  if (!lst) return undefined;
  if (!lst.isSymbolicLink()) return { path, real: path, st: lst };
  try {
    const real = await fs.realpath(path);
    return { path, real, st: await fs.stat(real) };
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ELOOP' || errnoOf(err) === 'ENOTDIR') {
      return undefined;
    }
    throw translate(err, `resolving the symlink ${path}`);
  }
}

async function backup(
  allowed: string[] | undefined,
  name: string,
  sink: BackupSink,
  ctx: DriverContext,
): Promise<BackupOutcome> {
  const path = checkPathName(name);
  const what = `backup of path:${path}`;
  checkAborted(ctx, what);
  ctx.phase('inspecting path');
  const target = await resolve(path);
  if (!target) throw notFound(path);
  checkAllowed(allowed, await realPathOf(path), path);
  const { st, real } = target;
  const type = typeOf(st);
  if (!type) {
    throw new DriverError(
      `${real} is ${describe(st)}; a path target is a file, block device or directory`,
    );
  }
  const warnings = new Warnings();
  const metadata: PathBackupMetadata = {
    format: METADATA_FORMAT,
    path,
    ...(real !== path ? { resolvedPath: real } : {}),
    type,
    size: 0,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    mtime: st.mtime.toISOString(),
  };
  if (type === 'directory') {
    if (sink.writeTree) {
      ctx.phase(`reading ${real}`);
      // A tree stream: files unchanged since the last point are not read again.
      const tree = await sink.writeTree({ name: 'tree' }, real, ctx);
      metadata.size = tree.size;
      metadata.entries = tree.entries;
      metadata.skipped = tree.skipped;
      metadata.filesRead = tree.filesRead;
      metadata.filesReused = tree.filesReused;
      for (const w of tree.warnings) warnings.add(w);
    } else {
      ctx.phase(`archiving ${real}`);
      const tree = await backupTree(real, sink, ctx, warnings);
      metadata.size = tree.size;
      metadata.entries = tree.entries;
      metadata.skipped = tree.skipped;
    }
  } else {
    ctx.phase(type === 'file' ? `reading ${real}` : `reading device ${real}`);
    // The total the job's ETA is computed from.
    ctx.expectBytes?.(type === 'file' ? st.size : await deviceSize(real, st));
    const stored = await backupBytes(real, type, sink, ctx, warnings);
    metadata.size = stored.size;
  }
  const recorded = warnings.toMetadata();
  if (recorded) {
    metadata.warnings = recorded;
    ctx.log.warn(LogEvent.driverStep, { step: 'backup warnings', count: recorded.length });
  }
  return {
    metadata: metadata as unknown as Record<string, unknown>,
    summary: { type, size: metadata.size },
  };
}

/**
 * Refuses a path outside the trees the agent serves (`--paths`). `real` is the path with every
 * symlink resolved: what would really be read or written.
 */
function checkAllowed(allowed: string[] | undefined, real: string, named: string): void {
  if (!allowed) return;
  if (allowed.some((root) => isInside(real, root))) return;
  throw new DriverError(
    `${named}${real !== named ? ` (which leads to ${real})` : ''} is outside the paths this agent serves (${allowed.join(', ')}); ` +
      'choose a path inside them, or start the agent with a --paths that includes it',
  );
}

/** `path` with every symlink resolved (the parent's, when `path` itself does not exist). */
async function realPathOf(path: string): Promise<string> {
  try {
    return await fs.realpath(path);
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw translate(err, `resolving ${path}`);
  }
  try {
    return join(await fs.realpath(dirname(path)), basename(path));
  } catch (err) {
    throw translate(err, `resolving ${dirname(path)}`);
  }
}

/**
 * Who may restore what where: the API only accepts an in-place restore onto the path the point
 * was taken of, and so does this driver; an in-place restore follows no symlink that was not
 * there at backup time (the real path must be the one recorded); every restore lands inside
 * the agent's `--paths` when it has them; and all writes after these checks go through held
 * directories (common.ts `Anchor`), so a component swapped meanwhile redirects nothing.
 */
async function restore(
  allowed: string[] | undefined,
  raw: Record<string, unknown>,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  const meta = parseMetadata(raw);
  const named = checkPathName(options.name, 'the destination of a path restore');
  if (named === '/') throw new DriverError('cannot restore onto /; give another destination path');
  if (options.inPlace && named !== meta.path) {
    throw new DriverError(
      `an in-place restore goes back to ${meta.path}, the path the point was taken of, not to ${named}; ` +
        'to restore elsewhere give a new destination path without --in-place',
    );
  }
  checkAborted(ctx, `restore of ${meta.path} to ${named}`);
  ctx.phase('checking the destination');
  const restoredTarget = `path:${named}`;
  let dest = named;
  let existing = await lstatOrUndefined(dest);

  if (existing?.isSymbolicLink()) {
    // A link to a device (/dev/disk/by-id/...) is written through; anything else is refused
    // unless in place, where the restore goes to what the link names, as the backup read it.
    const target = await resolve(dest);
    if (target && meta.type === 'block-device' && target.st.isBlockDevice()) {
      checkAllowed(allowed, target.real, named);
      checkRecorded(meta, options, target.real);
      await restoreOntoDevice(meta, source, target.real, target.st, ctx);
      return { restoredTarget };
    }
    if (!options.inPlace) throw nameTaken(named);
    if (!target) {
      throw new DriverError(
        `${named} is a dangling symlink; remove it or choose another destination path`,
      );
    }
    dest = target.real;
    existing = target.st;
  }

  if (existing?.isBlockDevice() && meta.type === 'block-device') {
    const real = await realPathOf(dest);
    checkAllowed(allowed, real, named);
    checkRecorded(meta, options, real);
    await restoreOntoDevice(meta, source, real, existing, ctx);
    return { restoredTarget };
  }
  if (existing && !options.inPlace) throw nameTaken(named);
  if (existing) {
    if (meta.type === 'directory' && !existing.isDirectory()) {
      throw new DriverError(
        `${dest} is not a directory; a directory point replaces only a directory (choose another destination path)`,
      );
    }
    if (meta.type !== 'directory' && !existing.isFile()) {
      throw new DriverError(
        `${dest} is ${existing.isDirectory() ? 'a directory' : describe(existing)}; a ${meta.type} point ` +
          'replaces only a regular file' +
          (meta.type === 'block-device' ? ' or a block device' : '') +
          ' (choose another destination path)',
      );
    }
  }
  await checkParent(dest);
  const real = await realPathOf(dest);
  checkAllowed(allowed, real, named);
  checkRecorded(meta, options, real);

  // From here on nothing is looked up by the path's text again: only inside the held parent.
  const parent = await anchorDirectory(dirname(real));
  try {
    if (meta.type === 'directory') {
      const result = await restoreTree(meta, source, parent, basename(real), options.inPlace, ctx);
      ctx.log.info(LogEvent.driverStep, { step: 'tree restored', dest: real, ...result });
    } else {
      const at = parent.at(basename(real));
      await restoreAsFile(meta, source, at, options.inPlace, ctx, real);
    }
  } finally {
    await parent.close();
  }
  return { restoredTarget };
}

/**
 * In place, the destination's real path must be the one the backup read: a directory that was
 * replaced by a symlink since (to a directory someone else owns) is refused, not written through.
 */
function checkRecorded(meta: PathBackupMetadata, options: RestoreOptions, real: string): void {
  if (!options.inPlace) return;
  const recorded = meta.resolvedPath ?? meta.path;
  if (real === recorded) return;
  throw new DriverError(
    `${meta.path} now leads to ${real}, but when the point was taken it was ${recorded}: a path component was replaced (by a symlink?) since. ` +
      'An in-place restore does not write through it; check what changed, or restore under a new destination path without --in-place',
  );
}

export function createPathDriver(options: PathDriverOptions = {}): Driver {
  const log = options.log ?? silentLogger;
  const roots = (options.roots ?? []).map((root) => checkPathName(root, 'a configured path root'));
  const allowedNames = options.allowed?.map((p) =>
    checkPathName(p, 'a path the agent serves (--paths)'),
  );
  // Resolved when a job asks (a tree may be mounted or made after the agent starts).
  const allowedReal = async (): Promise<string[] | undefined> =>
    allowedNames && (await Promise.all(allowedNames.map((p) => fs.realpath(p).catch(() => p))));

  async function listTargets(): Promise<DiscoveredTarget[]> {
    const targets: DiscoveredTarget[] = [];
    for (const root of roots) {
      let state = 'missing';
      const details: Record<string, string> = {};
      try {
        const target = await resolve(root);
        if (target) {
          state = typeOf(target.st) ?? 'unsupported';
          if (state === 'file') details.size = String(target.st.size);
          if (state === 'block-device') {
            details.size = String(await deviceSize(target.real, target.st));
          }
        }
      } catch (err) {
        state = 'unreadable';
        log.warn(LogEvent.driverStep, {
          step: 'path root',
          root,
          error: translate(err, `reading ${root}`),
        });
      }
      targets.push({ target: `path:${root}`, platform: 'path', name: root, state, details });
    }
    return targets;
  }

  async function exists(name: string): Promise<boolean> {
    return (await lstatOrUndefined(checkPathName(name))) !== undefined;
  }

  return {
    platform: 'path',
    listTargets,
    exists,
    backup: async (name, sink, ctx) => backup(await allowedReal(), name, sink, ctx),
    restore: async (raw, source, restoreOptions, ctx) =>
      restore(await allowedReal(), raw, source, restoreOptions, ctx),
  };
}
