/**
 * How a disk's bytes leave vSphere: one small interface, DiskTransport, and its ways.
 *
 * - `datastore-http`: the disk's flat extent read over `/folder` with parallel ranged GETs
 *   (what the simulator serves, and any vCenter or ESXi host for disks whose backing at the
 *   snapshot is a flat file). A file shorter than the disk's capacity is zero-filled to it (thin
 *   files on NFS; the simulator's placeholders).
 * - Changed-block tracking (CBT) narrows any transport: when the VM has `changeTrackingEnabled`,
 *   QueryChangedDiskAreas(snapshot, deviceKey, offset, "*") names the areas that hold data, and
 *   the rest is handed on as zeros without being read (zero regions cost nothing). The point
 *   records each disk's changeId; the next backup asks QueryChangedDiskAreas with it for the
 *   areas changed since, and reads only the 4 MiB blocks they touch (`only`), the others taken
 *   from the last point (backup.ts). A transport that cannot read part of a disk (`partial`
 *   false: NFC) reads it whole.
 * - `nfc` (nfc.ts): ExportSnapshot's HttpNfcLease, for disks whose backing is not a flat file.
 *
 * A reader hands the disk's bytes out in order, from offset 0 to its capacity, exactly.
 */
import { DriverError } from '../../../kernel/errors';
import type { Area, ByteReader } from '../../core/driver';
import { copyBytes } from '../../core/shared-copy';
import { YoungCollector } from '../../core/young-gc';
import type { SavedDisk } from './config';
import type { DatastoreFiles, RangeFeed } from './datastore';
import { parseDatastorePath, type DatastorePath } from './inventory';
import type { VimClient } from './vim';
import { checkedInt, child, list, optText, refXml, type MoRef, type XmlValue } from './xml';
import { flatExtentOf } from './vmdk';

export type { Area };

export interface DiskSource {
  disk: SavedDisk;
  /** Whether the disk's backing in the snapshot is a flat file (no parent, flat type). */
  flat: boolean;
  datacenterPath: string;
  vm: MoRef;
  snapshot: MoRef;
  /** Areas that hold data, in order (from CBT); undefined: all of the disk may. */
  allocated?: Area[];
  /**
   * Read only these areas, in order, their bytes one after the other (the blocks an incremental
   * reads); undefined: the whole disk.
   */
  only?: readonly Area[];
}

export interface DiskReader {
  read: ByteReader;
  /** Bytes fetched from the server so far (zeros handed out without a read are not counted). */
  fetched(): number;
  close(): Promise<void>;
}

export interface DiskTransport {
  readonly name: string;
  /** Whether `open` honours DiskSource.only (reads some areas of a disk, not all of it). */
  readonly partial: boolean;
  /** Undefined when it can read this disk, else why not (shown when no transport can). */
  refuses(src: DiskSource): string | undefined;
  open(src: DiskSource, signal: AbortSignal): Promise<DiskReader>;
}

/** Size of one ranged GET and how many run at once (4 x 8 MiB measured best on the simulator). */
export const RANGE_BYTES = 8 * 1024 * 1024;
export const PARALLEL_RANGES = 4;

export class DatastoreHttpTransport implements DiskTransport {
  readonly name = 'datastore-http';
  readonly partial = true;

  constructor(
    private readonly files: DatastoreFiles,
    private readonly options: { rangeBytes?: number; parallel?: number } = {},
  ) {}

  refuses(src: DiskSource): string | undefined {
    if (!src.disk.fileName) return `disk "${src.disk.label}" has no file backing`;
    if (!src.flat) {
      return `disk "${src.disk.label}" is not a flat file in the snapshot (${src.disk.backingType}, or a delta of an older snapshot)`;
    }
    return undefined;
  }

  async open(src: DiskSource, signal: AbortSignal): Promise<DiskReader> {
    const what = `disk "${src.disk.label}"`;
    const descriptor = parseDatastorePath(src.disk.fileName, what);
    const text = await this.files.readSmall(src.datacenterPath, descriptor);
    const extent = flatExtentOf(descriptor.path.split('/').pop()!, text?.toString('utf8'), what);
    if ('refused' in extent) {
      throw new DriverError(`${what} cannot be read over datastore HTTP: ${extent.refused}`);
    }
    const dir = descriptor.path.includes('/') ? descriptor.path.replace(/\/[^/]*$/, '/') : '';
    const flat: DatastorePath = { datastore: descriptor.datastore, path: dir + extent.file };
    const size = await this.files.size(src.datacenterPath, flat);
    if (size === undefined) {
      throw new DriverError(
        `${what}: its flat file [${flat.datastore}] ${flat.path} does not exist on the datastore`,
      );
    }
    return rangedReader({
      capacity: src.disk.capacityBytes,
      fileSize: size,
      ...(src.allocated ? { allocated: src.allocated } : {}),
      ...(src.only ? { only: src.only } : {}),
      rangeBytes: this.options.rangeBytes ?? RANGE_BYTES,
      parallel: this.options.parallel ?? PARALLEL_RANGES,
      signal,
      fetch: (start, length, sig) =>
        this.files.openRange(src.datacenterPath, flat, start, length, sig),
    });
  }
}

/** A stretch of the disk in the order it is handed out: zeros, or one ranged GET's bytes. */
type Stretch = { zero: number } | { feed: RangeFeed };

/**
 * Hands out [0, capacity) in order (or only the areas `only` names, one after the other):
 * stretches past the file's end, or outside the allocated areas, as zeros without a read; the others as ranged GETs, `parallel` of them under way
 * ahead of the consumer, whose bytes arrive in the socket's own buffers (RangeFeed) and are
 * copied once, into the buffer the consumer offers (the chunking ring). A read fills its buffer
 * whole unless the disk ends first.
 */
export function rangedReader(o: {
  capacity: number;
  fileSize: number;
  allocated?: Area[];
  only?: readonly Area[];
  rangeBytes: number;
  parallel: number;
  signal: AbortSignal;
  fetch: (start: number, length: number, signal: AbortSignal) => RangeFeed;
}): DiskReader {
  const spans = o.only ?? [{ start: 0, length: o.capacity }];
  for (const a of spans) {
    if (!(a.start >= 0 && a.length > 0 && a.start + a.length <= o.capacity)) {
      throw new RangeError(
        `area ${a.start}+${a.length} is not inside the disk (${o.capacity} bytes)`,
      );
    }
  }
  let span = 0;
  const stop = new AbortController();
  const onAbort = () => stop.abort(o.signal.reason);
  o.signal.addEventListener('abort', onAbort, { once: true });
  let next = spans[0]?.start ?? 0;
  let fetched = 0;
  let feeds = 0;
  const young = new YoungCollector();
  const ahead: Stretch[] = [];
  let current: Stretch | undefined;
  /** What is left of the current feed's last piece. */
  let piece: Buffer | undefined;

  function hasData(start: number, end: number): boolean {
    if (!o.allocated) return true;
    return o.allocated.some((a) => a.start < end && a.start + a.length > start);
  }

  function zeros(n: number): void {
    const last = ahead[ahead.length - 1];
    if (last && 'zero' in last) last.zero += n;
    else ahead.push({ zero: n });
  }

  function schedule(): void {
    while (feeds < o.parallel && span < spans.length) {
      const start = next;
      const spanEnd = spans[span]!.start + spans[span]!.length;
      const end = Math.min(start + o.rangeBytes, spanEnd);
      next = end;
      if (end === spanEnd && ++span < spans.length) next = spans[span]!.start;
      const readEnd = Math.min(end, o.fileSize);
      if (readEnd <= start || !hasData(start, end)) {
        zeros(end - start);
        continue;
      }
      ahead.push({ feed: o.fetch(start, readEnd - start, stop.signal) });
      feeds++;
      if (readEnd < end) zeros(end - readEnd); // zeros past the file's end
    }
  }

  async function read(into: Uint8Array): Promise<number> {
    let n = 0;
    while (n < into.length) {
      if (!current) {
        schedule();
        current = ahead.shift();
        if (!current) break;
      }
      if ('zero' in current) {
        const k = Math.min(into.length - n, current.zero);
        into.fill(0, n, n + k);
        n += k;
        current.zero -= k;
        if (current.zero === 0) current = undefined;
        continue;
      }
      if (!piece) {
        const got = await current.feed.next();
        if (got === null) {
          current = undefined;
          feeds--;
          schedule();
          continue;
        }
        piece = got;
        young.taken(got.length);
      }
      const k = Math.min(into.length - n, piece.length);
      copyBytes(into, n, k === piece.length ? piece : piece.subarray(0, k));
      n += k;
      fetched += k;
      piece = k < piece.length ? piece.subarray(k) : undefined;
    }
    return n;
  }

  return {
    read,
    fetched: () => fetched,
    close() {
      o.signal.removeEventListener('abort', onAbort);
      stop.abort(new Error('disk reader closed'));
      for (const s of [current, ...ahead]) if (s && 'feed' in s) s.feed.cancel();
      ahead.length = 0;
      current = undefined;
      return Promise.resolve();
    },
  };
}

/**
 * Changed-block tracking, behind one small interface: vSphere's own (vimChangeTracking), or a
 * test's where the simulator has none (it lacks QueryChangedDiskAreas).
 */
export interface ChangeTracking {
  /**
   * The disk's change id in the snapshot, from its backing there (`backing.changeId`), when the
   * VM tracks changes; undefined: no CBT for this disk.
   */
  changeIdOf(backing: XmlValue | undefined, vmTracks: boolean, disk: SavedDisk): string | undefined;
  /** The areas of the disk in `snapshot` changed since `changeId` ("*": all that hold data). */
  changedAreas(vm: MoRef, snapshot: MoRef, disk: SavedDisk, changeId: string): Promise<Area[]>;
}

export function vimChangeTracking(vim: VimClient): ChangeTracking {
  return {
    changeIdOf: (backing, vmTracks) => (vmTracks ? optText(backing, 'changeId') : undefined),
    changedAreas: (vm, snapshot, disk, changeId) => changedAreas(vim, vm, snapshot, disk, changeId),
  };
}

/**
 * The areas of a disk that hold data in the snapshot (CBT, changeId "*"), or of those changed
 * since `changeId`. Walks QueryChangedDiskAreas from offset 0 to the capacity; every area is
 * checked to lie inside the disk.
 */
export async function changedAreas(
  vim: VimClient,
  vm: MoRef,
  snapshot: MoRef,
  disk: SavedDisk,
  changeId = '*',
): Promise<Area[]> {
  const areas: Area[] = [];
  const what = `QueryChangedDiskAreas of disk "${disk.label}"`;
  let offset = 0;
  while (offset < disk.capacityBytes) {
    const info = await vim.call('QueryChangedDiskAreas', vm, {
      snapshot: refXml(snapshot),
      deviceKey: disk.key,
      startOffset: offset,
      changeId,
    });
    const start = checkedInt(optText(info, 'startOffset') ?? '', `${what}: startOffset`);
    const length = checkedInt(optText(info, 'length') ?? '', `${what}: length`);
    if (start !== offset || length <= 0) {
      throw new DriverError(
        `${what}: vSphere answered offset ${start} length ${length} for ${offset}`,
      );
    }
    for (const a of list(child(info, 'changedArea'))) {
      const s = checkedInt(optText(a, 'start') ?? '', `${what}: area start`);
      const l = checkedInt(optText(a, 'length') ?? '', `${what}: area length`);
      if (s < start || s + l > start + length || s + l > disk.capacityBytes) {
        throw new DriverError(`${what}: area ${s}+${l} lies outside ${start}+${length}`);
      }
      areas.push({ start: s, length: l });
    }
    offset = start + length;
  }
  return areas;
}
