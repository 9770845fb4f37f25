/**
 * A tar stream checked on its way to an engine that unpacks it (dockerd's `PUT archive` for a
 * Docker volume, LXD's instance and custom-volume import). A recovery point is only as
 * trustworthy as whoever could write to the store, so before an engine sees a point's archive
 * whole, every entry is checked: a name that is absolute, has a `..` segment, lies outside the
 * expected top directory, or goes through a symlink or file the archive itself made (the escape
 * `link -> /etc` then `link/passwd`), or a hard link to anything but a regular file earlier in
 * the same archive, fails the stream with DriverError naming the entry.
 *
 * The bytes pass through unchanged (xattrs, sparse entries and all). Each chunk is parsed before
 * it is passed on, and the last chunk is held back until the end of the archive has been read and
 * found clean: a consumer that stores the upload before unpacking it (LXD) never receives a
 * complete hostile archive, and one that unpacks as it reads (dockerd) gets a stream that fails
 * before the hostile entry's header reaches it. The parser is this module's own (ustar, GNU long
 * names, PAX `path`/`linkpath`/`size`), synchronous, so no byte goes out unchecked.
 * Symlinks themselves (to anywhere) and device nodes are data inside the target and pass; the
 * engines create them without following them.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { DriverError } from '../../kernel/errors';

export interface TarGuardOptions {
  /** Names the stream in errors, e.g. `restore of volume web-data`. */
  what: string;
  /** When set, every entry must be this top directory or lie below it (Docker volumes: `vol`). */
  root?: string;
}

type Kind = 'directory' | 'file' | 'symlink' | 'other';

const BLOCK = 512;

/** What the next header's own fields are overridden with (GNU `L`/`K`, PAX `x`). */
interface Pending {
  path?: string;
  linkpath?: string;
  size?: number;
}

function field(block: Buffer, offset: number, length: number): string {
  const raw = block.subarray(offset, offset + length);
  const end = raw.indexOf(0);
  return raw.subarray(0, end === -1 ? raw.length : end).toString('utf8');
}

/** An octal number field, or GNU's base-256 for large values. */
function numeric(block: Buffer, offset: number, length: number): number {
  const raw = block.subarray(offset, offset + length);
  if (raw[0]! & 0x80) {
    let value = raw[0]! & 0x7f;
    for (let i = 1; i < raw.length; i++) value = value * 256 + raw[i]!;
    return value;
  }
  const text = raw.toString('latin1').replace(/\0.*$/s, '').trim();
  return text === '' ? 0 : parseInt(text, 8);
}

function checksumOk(block: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : block[i]!;
  return sum === numeric(block, 148, 8);
}

/** PAX records: `<length> <key>=<value>\n`. */
function paxRecords(data: Buffer): Record<string, string> {
  const records: Record<string, string> = {};
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    if (space === -1) break;
    const length = Number(data.subarray(at, space).toString('latin1'));
    if (!Number.isInteger(length) || length <= 0 || at + length > data.length) break;
    const record = data.subarray(space + 1, at + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0) records[record.slice(0, eq)] = record.slice(eq + 1);
    at += length;
  }
  return records;
}

/** Headers whose body only says something about the next entry (PAX, GNU long names). */
const META_TYPES = new Set(['x', 'g', 'L', 'K']);
/** GNU long names and PAX headers bigger than this are not from a sane archive. */
const MAX_META_BYTES = 1024 * 1024;

export class TarGuard extends Transform {
  /** What each name this archive made is (a later entry may only go through its directories). */
  private readonly made = new Map<string, Kind>();
  private held: Buffer | undefined;
  /** Bytes of the current header (or meta body) not yet complete. */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  /** Body bytes (padded) still to pass over before the next header. */
  private skip = 0;
  /** A meta header's body being collected: its type and padded and real size. */
  private meta: { type: string; size: number; padded: number } | undefined;
  private pending: Pending = {};
  private zeroBlocks = 0;
  private ended = false;
  /** Old GNU sparse headers continue in extension blocks before the body. */
  private sparseExtension = false;
  private sparseBodyBytes = 0;

  constructor(private readonly options: TarGuardOptions) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.parse(chunk);
    } catch (err) {
      callback(err as Error);
      return;
    }
    if (this.held) this.push(this.held);
    this.held = chunk;
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (
      !this.ended &&
      (this.skip > 0 || this.partialBytes > 0 || this.meta || this.zeroBlocks === 0)
    ) {
      callback(this.damaged('it ends in the middle of an entry'));
      return;
    }
    if (this.held) this.push(this.held);
    this.held = undefined;
    callback();
  }

  private parse(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.ended) return; // padding after the end marker
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - at);
        this.skip -= n;
        at += n;
        continue;
      }
      const want = this.meta ? this.meta.padded : BLOCK;
      const n = Math.min(want - this.partialBytes, chunk.length - at);
      this.partial.push(chunk.subarray(at, at + n));
      this.partialBytes += n;
      at += n;
      if (this.partialBytes < want) continue;
      const data = Buffer.concat(this.partial, this.partialBytes);
      this.partial = [];
      this.partialBytes = 0;
      if (this.meta) {
        this.metaBody(this.meta.type, data.subarray(0, this.meta.size));
        this.meta = undefined;
      } else if (this.sparseExtension) {
        this.sparseExtension = data[504] !== 0;
        if (!this.sparseExtension) this.skip = this.sparseBodyBytes;
      } else {
        this.header(data);
      }
    }
  }

  private metaBody(type: string, body: Buffer): void {
    if (type === 'L') this.pending.path = field(body, 0, body.length);
    if (type === 'K') this.pending.linkpath = field(body, 0, body.length);
    if (type === 'x') {
      const records = paxRecords(body);
      if (records.path !== undefined) this.pending.path = records.path;
      if (records.linkpath !== undefined) this.pending.linkpath = records.linkpath;
      if (records.size !== undefined) {
        const size = Number(records.size);
        if (!Number.isSafeInteger(size) || size < 0) throw this.damaged('a PAX size is not a size');
        this.pending.size = size;
      }
    }
    // 'g' (global PAX) names no entry; its records do not change names here.
  }

  private header(block: Buffer): void {
    if (block.every((b) => b === 0)) {
      if (++this.zeroBlocks === 2) this.ended = true;
      return;
    }
    if (this.zeroBlocks > 0) throw this.damaged('an entry follows an end-of-archive block');
    if (!checksumOk(block)) throw this.damaged('a header checksum does not match');
    const type = String.fromCharCode(block[156]!) || '0';
    const size = numeric(block, 124, 12);
    if (!Number.isSafeInteger(size) || size < 0) throw this.damaged('a header size is not a size');
    if (META_TYPES.has(type)) {
      if (size > MAX_META_BYTES) throw this.damaged(`a ${type} header of ${size} bytes`);
      this.meta = { type, size, padded: Math.ceil(size / BLOCK) * BLOCK };
      if (size === 0) {
        this.meta = undefined;
      }
      return;
    }
    const ustar = field(block, 257, 6) === 'ustar';
    const prefix = ustar ? field(block, 345, 155) : '';
    const ownName = field(block, 0, 100);
    const name = this.pending.path ?? (prefix ? `${prefix}/${ownName}` : ownName);
    const linkname = this.pending.linkpath ?? field(block, 157, 100);
    const bodySize = this.pending.size ?? size;
    this.pending = {};
    this.check(name, type, linkname);
    // Hard links, symlinks, directories and devices carry no body whatever their size field says
    // (GNU writes sizes for some); everything else is skipped by its size.
    const hasBody = !['1', '2', '3', '4', '5', '6'].includes(type);
    this.skip = hasBody ? Math.ceil(bodySize / BLOCK) * BLOCK : 0;
    if (type === 'S' && block[482] !== 0) {
      this.sparseExtension = true;
      this.sparseBodyBytes = this.skip;
      this.skip = 0;
    }
  }

  private refuse(name: string, why: string): DriverError {
    return new DriverError(
      `${this.options.what}: the archive entry "${name}" ${why}; refusing to hand it to the ` +
        'engine. The recovery point was not written by Stowage or is damaged: nothing from ' +
        'this entry on was restored',
    );
  }

  private damaged(why: string): DriverError {
    return new DriverError(
      `${this.options.what}: the stream is not a well-formed tar (${why}); the recovery point ` +
        'may be damaged: run a verify on it',
    );
  }

  /** `name` relative to the archive's root, refused if it could land anywhere else. */
  private relative(entry: string, name: string, what: string): string {
    if (name.includes('\0')) throw this.refuse(entry, `has a NUL byte in its ${what}`);
    if (name.startsWith('/')) throw this.refuse(entry, `has an absolute ${what}`);
    const parts = name.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.includes('..')) {
      throw this.refuse(
        entry,
        `has a ".." segment in its ${what} and would land outside the target`,
      );
    }
    const { root } = this.options;
    if (root !== undefined && parts.length > 0 && parts[0] !== root) {
      throw this.refuse(entry, `lies outside ${root}/, where everything of this archive belongs`);
    }
    return parts.join('/');
  }

  private check(name: string, type: string, linkname: string): void {
    const rel = this.relative(name, name, 'name');
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      const kind = this.made.get(prefix);
      if (kind !== undefined && kind !== 'directory') {
        throw this.refuse(name, `goes through ${prefix}, which this archive made a ${kind}`);
      }
    }
    if (type === '1') {
      const target = this.relative(name, linkname, 'link target');
      if (this.made.get(target) !== 'file') {
        throw this.refuse(
          name,
          `is a hard link to "${linkname}", which is not a file earlier in the archive`,
        );
      }
    }
    const kind: Kind =
      type === '5'
        ? 'directory'
        : type === '0' || type === '\0' || type === '7' || type === '1' || type === 'S'
          ? 'file'
          : type === '2'
            ? 'symlink'
            : 'other';
    const before = this.made.get(rel);
    // A directory listed again is fine (tar does it for attributes); anything else twice is not:
    // the second would be written over, or through, the first.
    if (before !== undefined && !(before === 'directory' && kind === 'directory')) {
      throw this.refuse(name, 'appears twice in the archive');
    }
    this.made.set(rel, kind);
  }
}

/** `data` checked by a TarGuard: the stream to hand to the engine. */
export function guardTar(data: NodeJS.ReadableStream, options: TarGuardOptions): TarGuard {
  const guard = new TarGuard(options);
  data.on('error', (err) => guard.destroy(err));
  data.pipe(guard);
  return guard;
}

/**
 * Hands `use` the guarded stream; when the consumer fails because the guard refused the
 * archive, the guard's error (naming the entry) is what rejects, not the consumer's echo of it.
 */
export async function withGuardedTar<T>(
  data: NodeJS.ReadableStream,
  options: TarGuardOptions,
  use: (guarded: TarGuard) => Promise<T>,
): Promise<T> {
  const guarded = guardTar(data, options);
  try {
    return await use(guarded);
  } catch (err) {
    throw guarded.errored ?? err;
  }
}
