/**
 * Restore of a directory point: the `tree` tar is extracted into a fresh private directory
 * beside the destination (`<dest>.stowage-partial-<random>`, mode 0700), which then takes the
 * destination's place in one rename. In place, the old tree is first renamed aside
 * (`<dest>.stowage-old-<random>`) and removed only once the new one is in: at no moment is a
 * half-restored tree at the destination, and a failure before the swap leaves the old tree as
 * it was and removes the partial one.
 *
 * Extraction trusts nothing in the archive. Every name is checked before anything is created:
 * absolute names and `..` segments are refused, and an entry may only be created below
 * directories this extraction itself created. Because the partial directory starts empty and
 * private, "created by this extraction" is known from memory without looking at the disk, and
 * a symlink in the archive can never be a path component of a later entry: the escape
 * `link -> /etc` then `link/passwd` is refused, not followed. Hard links may only name regular
 * files extracted earlier. Device nodes and FIFOs in a foreign archive are skipped.
 *
 * Attributes: files get mode, owner (when running as root) and mtime as soon as their bytes are
 * written; directories are created 0700 so the extraction can fill them whatever their mode,
 * and get their mode, owner and mtime at the end, deepest first, after their contents stopped
 * changing them.
 */
import { constants, promises as fs, type Stats } from 'node:fs';
import { basename, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { DriverError, isStowageError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type { DriverContext, RestoreSource } from '../../core/driver';
import {
  anchorDirectory,
  canChown,
  checkAborted,
  consumeStream,
  errnoOf,
  fsyncDir,
  lstatOrUndefined,
  removeQuietly,
  sideName,
  syncFilesystem,
  translate,
  writeFully,
  type Anchor,
  type PathBackupMetadata,
} from './common';
import { nameTaken } from './bytes';
import { TREE_KIND } from '../../core/tree/format';

type Kind = 'directory' | 'file' | 'symlink';
/** One entry of the archive: its header and a stream of its bytes. */
type Entry = tar.ExtractEvents['entry'][1];
type Header = tar.Header & { pax?: Record<string, string> | null };

interface Attributes {
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
}

interface PendingDir {
  abs: string;
  /** Undefined for a directory the archive did not list (a parent made to hold an entry). */
  attrs?: Attributes;
}

export interface ExtractResult {
  entries: number;
  skipped: number;
}

function refuse(name: string, why: string): DriverError {
  return new DriverError(
    `the archive entry "${name}" ${why}; refusing to extract it. The recovery point was not ` +
      'written by the path driver or is damaged: nothing was restored',
  );
}

/**
 * The entry's path relative to the extraction root, `''` for the root itself. Refuses absolute
 * names and `..`; drops `.` and empty segments (`./a//b/` is `a/b`).
 */
export function safeRelativeName(name: string): string {
  if (name.includes('\0')) throw refuse(name, 'contains a NUL byte');
  if (name.startsWith('/')) throw refuse(name, 'is an absolute path');
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..'))
    throw refuse(name, 'has a ".." segment and would land outside the destination');
  return parts.join('/');
}

/** Mode, owner and mtime from the header, PAX records first (large ids, mtimes past 2038). */
function attributesOf(header: Header): Attributes {
  const pax = header.pax ?? {};
  const number = (value: string | undefined, fallback: number) => {
    const n = value === undefined ? NaN : Number(value);
    return Number.isFinite(n) ? n : fallback;
  };
  const seconds = number(pax.mtime, (header.mtime?.getTime() ?? 0) / 1000);
  return {
    mode: (header.mode ?? 0o644) & 0o7777,
    uid: number(pax.uid, header.uid ?? 0),
    gid: number(pax.gid, header.gid ?? 0),
    mtime: new Date(seconds * 1000),
  };
}

async function applyDirAttributes(abs: string, attrs: Attributes | undefined): Promise<void> {
  try {
    if (!attrs) {
      await fs.chmod(abs, 0o755);
      return;
    }
    if (canChown()) await fs.lchown(abs, attrs.uid, attrs.gid);
    await fs.chmod(abs, attrs.mode);
    await fs.utimes(abs, attrs.mtime, attrs.mtime);
  } catch (err) {
    throw translate(err, `setting the mode, owner and mtime of ${abs}`);
  }
}

async function drain(entry: AsyncIterable<unknown>): Promise<void> {
  for await (const _chunk of entry) {
    // Skipped entries still hold their bytes in the archive.
  }
}

class Extraction {
  /** Every path this extraction created, relative to the root → what it is. */
  private readonly created = new Map<string, Kind>();
  private readonly dirs: PendingDir[] = [];
  entries = 0;
  skipped = 0;

  constructor(
    private readonly root: string,
    private readonly ctx: DriverContext,
  ) {}

  /** Creates the missing parents of `rel`; refuses a parent that is anything but our directory. */
  private async parentsOf(rel: string, name: string): Promise<void> {
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      const kind = this.created.get(prefix);
      if (kind === 'directory') continue;
      if (kind !== undefined) {
        throw refuse(name, `goes through ${prefix}, which the archive made a ${kind}`);
      }
      const abs = join(this.root, prefix);
      try {
        await fs.mkdir(abs, { mode: 0o700 });
      } catch (err) {
        throw translate(err, `creating ${abs}`);
      }
      this.created.set(prefix, 'directory');
      this.dirs.push({ abs });
    }
  }

  async add(entry: Entry): Promise<void> {
    const header = entry.header as Header;
    const name = header.name;
    const rel = safeRelativeName(name);
    const type = header.type ?? 'file';
    if (rel === '') {
      // The root's own attributes come from the metadata.
      await drain(entry);
      return;
    }
    await this.parentsOf(rel, name);
    const abs = join(this.root, rel);
    const attrs = attributesOf(header);
    const existing = this.created.get(rel);
    if (existing !== undefined) {
      if (existing === 'directory' && type === 'directory') {
        const pending = this.dirs.find((d) => d.abs === abs);
        if (pending) pending.attrs = attrs;
        await drain(entry);
        return;
      }
      throw refuse(name, 'appears twice in the archive');
    }
    try {
      switch (type) {
        case 'directory':
          await fs.mkdir(abs, { mode: 0o700 });
          this.created.set(rel, 'directory');
          this.dirs.push({ abs, attrs });
          await drain(entry);
          break;
        case 'file':
        case 'contiguous-file':
          await this.writeFile(abs, entry, attrs);
          this.created.set(rel, 'file');
          break;
        case 'symlink': {
          const target = header.linkname ?? '';
          if (!target) throw refuse(name, 'is a symlink to nothing');
          // The target is stored as written and never followed by this extraction.
          await fs.symlink(target, abs);
          if (canChown()) await fs.lchown(abs, attrs.uid, attrs.gid);
          await fs.lutimes(abs, attrs.mtime, attrs.mtime);
          this.created.set(rel, 'symlink');
          await drain(entry);
          break;
        }
        case 'link': {
          const target = safeRelativeName(header.linkname ?? '');
          if (this.created.get(target) !== 'file') {
            throw refuse(
              name,
              `is a hard link to "${header.linkname}", which is not a file extracted before it`,
            );
          }
          await fs.link(join(this.root, target), abs);
          this.created.set(rel, 'file');
          await drain(entry);
          break;
        }
        default:
          this.skipped++;
          this.ctx.log.warn(LogEvent.driverStep, {
            step: 'entry skipped',
            entry: name,
            reason: `a ${type} entry is not restored`,
          });
          await drain(entry);
          return;
      }
    } catch (err) {
      // Filesystem failures say where; a failure of the archive stream itself is judged by
      // extractTree, which knows whether the source broke or the bytes are not a tar.
      if (errnoOf(err)) throw translate(err, `extracting ${name}`);
      throw err;
    }
    this.entries++;
  }

  private async writeFile(abs: string, entry: Entry, attrs: Attributes): Promise<void> {
    // O_EXCL|O_NOFOLLOW: never write through anything that is already there.
    const handle = await fs.open(
      abs,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      for await (const chunk of entry) {
        await writeFully(handle, chunk as Buffer);
      }
      // chown before chmod: chown clears setuid/setgid.
      if (canChown()) await handle.chown(attrs.uid, attrs.gid);
      await handle.chmod(attrs.mode);
      await handle.utimes(attrs.mtime, attrs.mtime);
    } finally {
      await handle.close();
    }
  }

  /** Directories' attributes, deepest first, once nothing will be created in them any more. */
  async finish(): Promise<void> {
    for (const dir of [...this.dirs].reverse()) await applyDirAttributes(dir.abs, dir.attrs);
  }
}

/** Extracts the tar `data` into the empty directory `root`. */
export async function extractTree(
  root: string,
  data: Readable,
  ctx: DriverContext,
  what: string,
): Promise<ExtractResult> {
  return consumeStream(data, ctx, what, async (stream) => {
    const extract = tar.extract();
    const extraction = new Extraction(root, ctx);
    const feeding = pipeline(stream, extract);
    // Its failure is reported after the loop, or superseded by the loop's own.
    feeding.catch(() => undefined);
    try {
      for await (const entry of extract as AsyncIterable<Entry>) {
        checkAborted(ctx, what);
        await extraction.add(entry);
      }
      await feeding;
    } catch (err) {
      extract.destroy();
      // The bytes arrived intact (the source did not fail) but are not a tar: a damaged point.
      if (!stream.errored && !isStowageError(err) && !errnoOf(err)) {
        const said = err instanceof Error ? err.message : String(err);
        throw new DriverError(
          `${what}: the tree stream is not a well-formed tar (${said}); the recovery point may be ` +
            'damaged: run a verify on it',
          { cause: err },
        );
      }
      throw err;
    }
    await extraction.finish();
    return { entries: extraction.entries, skipped: extraction.skipped };
  });
}

/**
 * Restores the directory point to `base` inside the held directory `parent`: a new directory, or
 * (in place) a replacement of the directory there. See the module header for the order of steps.
 * Every step goes through held directories (common.ts `Anchor`): the parent, the private partial
 * directory the tree is extracted into, and the private directory the old tree is moved into to
 * be removed, so renaming or swapping any of their paths meanwhile redirects nothing.
 */
export async function restoreTree(
  meta: PathBackupMetadata,
  source: RestoreSource,
  parent: Anchor,
  base: string,
  inPlace: boolean,
  ctx: DriverContext,
): Promise<ExtractResult> {
  const shown = join(parent.real, base);
  const what = `restore of ${meta.path} to ${shown}`;
  const stream = source.streams.find((s) => s.name === 'tree');
  if (!stream) {
    throw new DriverError(
      `the recovery point has no "tree" stream; it is damaged or was not made by the path driver`,
    );
  }
  const partialName = basename(sideName(base, 'partial'));
  const partial = parent.at(partialName);
  try {
    await fs.mkdir(partial, { mode: 0o700 });
  } catch (err) {
    throw translate(err, `creating ${join(parent.real, partialName)}`);
  }
  let result: ExtractResult;
  try {
    const held = await anchorDirectory(join(parent.real, partialName), privateDirectory);
    try {
      ctx.phase(`extracting into ${join(parent.real, partialName)}`);
      if (stream.kind === TREE_KIND) {
        if (!source.restoreTree) {
          throw new DriverError(`${what}: this restore source cannot read tree streams`);
        }
        result = await source.restoreTree('tree', held.at(''), ctx);
      } else {
        result = await extractTree(held.at(''), await source.openStream('tree'), ctx, what);
      }
      await applyDirAttributes(held.at(''), {
        mode: meta.mode & 0o7777,
        uid: meta.uid,
        gid: meta.gid,
        mtime: new Date(meta.mtime),
      });
      ctx.phase('flushing to disk');
      await syncFilesystem(held.at(''));
    } finally {
      await held.close();
    }
    checkAborted(ctx, what);
    // In place, the swap is the point of no return: a cancel before it leaves the tree as it was.
    if (inPlace) await ctx.pointOfNoReturn?.();
    ctx.phase(`moving into ${shown}`);
    await swapIn(parent, partialName, base, inPlace, ctx);
  } catch (err) {
    await removeQuietly(partial);
    throw err;
  }
  await fsyncDir(parent.at(''));
  return result;
}

/** A directory this restore just made: still ours (root's, when the agent runs as root), 0700. */
function privateDirectory(st: Stats): string | undefined {
  const uid = process.geteuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0) {
    return 'is not the private directory this restore created (it was replaced meanwhile)';
  }
  return undefined;
}

async function swapIn(
  parent: Anchor,
  partialName: string,
  base: string,
  inPlace: boolean,
  ctx: DriverContext,
): Promise<void> {
  const shown = join(parent.real, base);
  const partial = parent.at(partialName);
  const dest = parent.at(base);
  const existing = await lstatOrUndefined(dest);
  if (existing && !inPlace) throw nameTaken(shown);
  if (existing && !existing.isDirectory()) {
    throw new DriverError(
      `${shown} is not a directory; a directory point replaces only a directory`,
    );
  }
  if (!existing) {
    try {
      await fs.rename(partial, dest);
    } catch (err) {
      // rename(2) replaces an empty directory that appeared meanwhile, but not a full one.
      const code = errnoOf(err);
      if (code === 'EEXIST' || code === 'ENOTEMPTY') {
        throw nameTaken(shown);
      }
      throw translate(err, `moving the restored tree to ${shown}`);
    }
    return;
  }
  // The old tree goes into a private directory of ours before it is removed: its own
  // subdirectories may belong to anyone, and a removal walking them by path where their owner
  // can still rename things could be led out of the tree.
  const trashName = basename(sideName(base, 'old'));
  try {
    await fs.mkdir(parent.at(trashName), { mode: 0o700 });
  } catch (err) {
    throw translate(err, `creating ${join(parent.real, trashName)}`);
  }
  let trash: Anchor;
  try {
    trash = await anchorDirectory(join(parent.real, trashName), privateDirectory);
  } catch (err) {
    await fs.rmdir(parent.at(trashName)).catch(() => undefined);
    throw err;
  }
  try {
    try {
      await fs.rename(dest, trash.at('tree'));
    } catch (err) {
      throw translate(err, `moving the old ${shown} aside`);
    }
    try {
      await fs.rename(partial, dest);
    } catch (err) {
      await fs.rename(trash.at('tree'), dest).catch(() => undefined);
      throw translate(err, `moving the restored tree to ${shown}`);
    }
    try {
      await fs.rm(trash.at('tree'), { recursive: true });
    } catch (err) {
      ctx.log.warn(LogEvent.driverStep, {
        step: 'old tree left behind',
        path: join(parent.real, trashName),
        error: translate(err, `removing the old tree in ${join(parent.real, trashName)}`),
      });
    }
  } finally {
    await trash.close();
    await fs.rmdir(parent.at(trashName)).catch(() => undefined);
  }
}
