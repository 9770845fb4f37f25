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
  checkAborted,
  checkParent,
  checkPathName,
  errnoOf,
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

async function backup(name: string, sink: BackupSink, ctx: DriverContext): Promise<BackupOutcome> {
  const path = checkPathName(name);
  const what = `backup of path:${path}`;
  checkAborted(ctx, what);
  ctx.phase('inspecting path');
  const target = await resolve(path);
  if (!target) throw notFound(path);
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

async function restore(
  raw: Record<string, unknown>,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  const meta = parseMetadata(raw);
  const named = checkPathName(options.name, 'the destination of a path restore');
  if (named === '/') throw new DriverError('cannot restore onto /; give another destination path');
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
    await restoreOntoDevice(meta, source, dest, existing, ctx);
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

  if (meta.type === 'directory') {
    const result = await restoreTree(meta, source, dest, options.inPlace, ctx);
    ctx.log.info(LogEvent.driverStep, { step: 'tree restored', dest, ...result });
  } else {
    await restoreAsFile(meta, source, dest, options.inPlace, ctx);
  }
  return { restoredTarget };
}

export function createPathDriver(options: PathDriverOptions = {}): Driver {
  const log = options.log ?? silentLogger;
  const roots = (options.roots ?? []).map((root) => checkPathName(root, 'a configured path root'));

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

  return { platform: 'path', listTargets, exists, backup, restore };
}
