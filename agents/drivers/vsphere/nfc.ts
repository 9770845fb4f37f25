/**
 * The NFC transport: a disk read through an HttpNfcLease of ExportSnapshot (vSphere's export of
 * a VM snapshot, the documented way to read disks that are not flat files: a delta of an older
 * snapshot, a sparse disk). The lease hands out one URL per disk (`deviceUrl`, host `*` meaning
 * the server itself); each yields the disk as a streamOptimized VMDK (VMware's Virtual Disk
 * Format 1.1: a header, then grain markers of zlib-compressed data in ascending LBA order, with
 * metadata markers between), which is unpacked here to the disk's raw bytes, zero-filled between
 * grains and up to the capacity. The lease is kept alive with HttpNfcLeaseProgress and ended
 * with HttpNfcLeaseComplete, or HttpNfcLeaseAbort when the read fails.
 *
 * The simulator has no ExportSnapshot, so this path is exercised only by its unpacking tests.
 */
import { inflateSync } from 'node:zlib';
import type { Readable } from 'node:stream';
import { DriverError, TransientError } from '../../../kernel/errors';
import type { ByteReader } from '../../core/driver';
import type { DiskReader, DiskSource, DiskTransport } from './transport';
import type { VimClient } from './vim';
import { child, list, moRef, optText, text, xsiType, type MoRef } from './xml';

const SECTOR = 512;
/** HttpNfcLeaseProgress before the lease's own timeout (5 minutes by default). */
const LEASE_PROGRESS_MS = 60_000;
const LEASE_READY_TIMEOUT_MS = 5 * 60_000;
/** A grain is at most 1 MiB unpacked (grainSize is 128 sectors in practice). */
const MAX_GRAIN_BYTES = 1024 * 1024;

export class NfcTransport implements DiskTransport {
  readonly name = 'nfc';

  constructor(private readonly vim: VimClient) {}

  /** An export is the whole disk, in order: it cannot skip to some areas. */
  readonly partial = false;

  refuses(src: DiskSource): string | undefined {
    if (src.only) return 'an NFC export reads the whole disk';
    return src.disk.fileName ? undefined : `disk "${src.disk.label}" has no file backing`;
  }

  async open(src: DiskSource, signal: AbortSignal): Promise<DiskReader> {
    const lease = moRef(await this.vim.call('ExportSnapshot', src.snapshot));
    if (!lease) throw new DriverError('vSphere returned no HttpNfcLease for ExportSnapshot');
    let done = false;
    const end = async (ok: boolean) => {
      if (done) return;
      done = true;
      clearInterval(keepAlive);
      await this.vim
        .call(ok ? 'HttpNfcLeaseComplete' : 'HttpNfcLeaseAbort', lease)
        .catch(() => undefined);
    };
    const keepAlive = setInterval(() => {
      void this.vim.call('HttpNfcLeaseProgress', lease, { percent: 50 }).catch(() => undefined);
    }, LEASE_PROGRESS_MS);
    try {
      const info = await waitReady(this.vim, lease, signal);
      const url = diskUrl(info, src, this.vim.sdk);
      const cookie = await this.vim.cookieHeader();
      const res = await this.vim.http.send({ method: 'GET', url, headers: cookie, signal });
      if ((res.statusCode ?? 0) !== 200) {
        res.resume();
        throw new DriverError(
          `NFC read of disk "${src.disk.label}" answered HTTP ${res.statusCode}`,
        );
      }
      const reader = streamOptimizedReader(res, src.disk.capacityBytes, `disk "${src.disk.label}"`);
      let fetched = 0;
      return {
        read: async (into) => {
          const n = await reader(into);
          fetched += n;
          return n;
        },
        fetched: () => fetched,
        close: async () => {
          res.destroy();
          await end(fetched === src.disk.capacityBytes);
        },
      };
    } catch (err) {
      await end(false);
      throw err;
    }
  }
}

async function waitReady(vim: VimClient, lease: MoRef, signal: AbortSignal) {
  const deadline = Date.now() + LEASE_READY_TIMEOUT_MS;
  for (;;) {
    const props = await vim.propsOf(lease, ['state', 'info', 'error']);
    const state = text(props.state);
    if (state === 'ready') return props.info;
    if (state === 'error') {
      const fault = child(props.error, 'fault');
      throw new DriverError(
        `vSphere's export lease failed: ${optText(props.error, 'localizedMessage') ?? xsiType(fault) ?? 'no reason given'}`,
      );
    }
    if (signal.aborted) throw new TransientError('NFC export stopped: the job was abandoned');
    if (Date.now() > deadline)
      throw new TransientError('vSphere did not make the export lease ready in 5 minutes');
    await new Promise((r) => setTimeout(r, 200));
  }
}

function diskUrl(info: unknown, src: DiskSource, sdk: URL): URL {
  const urls = list(child(info as never, 'deviceUrl'));
  const mine =
    urls.find(
      (u) => optText(u, 'key') === String(src.disk.key) && optText(u, 'disk') !== 'false',
    ) ?? urls.find((u) => (optText(u, 'key') ?? '').endsWith(`:${src.disk.key}`));
  const raw = mine ? optText(mine, 'url') : undefined;
  if (!raw) {
    throw new DriverError(
      `vSphere's export lease has no URL for disk "${src.disk.label}" (key ${src.disk.key})`,
    );
  }
  const url = new URL(raw.replace('://*', `://${sdk.host}`));
  if (
    url.protocol !== sdk.protocol ||
    (url.host !== sdk.host && !url.host.endsWith(sdk.hostname))
  ) {
    // The URL points elsewhere (an ESXi host): that host is what serves it; keep the scheme.
    url.protocol = sdk.protocol;
  }
  return url;
}

/**
 * Unpacks a streamOptimized VMDK from `body` into the disk's raw bytes, [0, capacity) exactly.
 * Hostile input: grains must come in ascending order, inside the capacity, and inflate to at
 * most one grain.
 */
export function streamOptimizedReader(body: Readable, capacity: number, what: string): ByteReader {
  const iterator = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let pending: Buffer = Buffer.alloc(0);
  let ended = false;
  let header: { grainBytes: number; overheadBytes: number } | undefined;
  let consumed = 0; // bytes of the VMDK consumed so far
  let produced = 0; // raw bytes handed out
  let out: Buffer | undefined; // raw bytes waiting to be handed out
  let outAt = 0;
  let zerosUntil = 0;
  let finished = false;

  async function need(n: number): Promise<boolean> {
    while (pending.length < n && !ended) {
      const next = await iterator.next();
      if (next.done) ended = true;
      else pending = pending.length ? Buffer.concat([pending, next.value]) : next.value;
    }
    return pending.length >= n;
  }
  function take(n: number): Buffer {
    const b = pending.subarray(0, n);
    pending = pending.subarray(n);
    consumed += n;
    return b;
  }
  async function skip(n: number): Promise<void> {
    while (n > 0) {
      if (!(await need(1))) throw new DriverError(`${what}: the NFC stream ended inside metadata`);
      const k = Math.min(n, pending.length);
      take(k);
      n -= k;
    }
  }

  async function readHeader(): Promise<void> {
    if (!(await need(SECTOR))) throw new DriverError(`${what}: the NFC stream is empty`);
    const h = take(SECTOR);
    if (h.readUInt32LE(0) !== 0x564d444b)
      throw new DriverError(`${what}: the NFC stream is not a VMDK`);
    const flags = h.readUInt32LE(8);
    const capacitySectors = Number(h.readBigUInt64LE(12));
    const grainSectors = Number(h.readBigUInt64LE(20));
    const overhead = Number(h.readBigUInt64LE(64));
    const compress = h.readUInt16LE(77);
    if ((flags & (1 << 16)) === 0 || (flags & (1 << 17)) === 0 || compress !== 1) {
      throw new DriverError(
        `${what}: the NFC stream is not a streamOptimized VMDK (flags ${flags.toString(16)})`,
      );
    }
    if (capacitySectors * SECTOR < capacity) {
      throw new DriverError(
        `${what}: the NFC stream holds ${capacitySectors * SECTOR} bytes, the disk ${capacity}`,
      );
    }
    const grainBytes = grainSectors * SECTOR;
    if (grainBytes <= 0 || grainBytes > MAX_GRAIN_BYTES) {
      throw new DriverError(`${what}: grain size ${grainBytes} is out of range`);
    }
    header = { grainBytes, overheadBytes: overhead * SECTOR };
    await skip(header.overheadBytes - SECTOR);
  }

  /** The next grain's raw bytes as `out`, after zeros up to it; false at the end of stream. */
  async function nextGrain(): Promise<boolean> {
    for (;;) {
      // Markers start on sector boundaries.
      const misalign = consumed % SECTOR;
      if (misalign) await skip(SECTOR - misalign);
      if (!(await need(12))) return false;
      const val = Number(pending.readBigUInt64LE(0));
      const size = pending.readUInt32LE(8);
      if (size === 0) {
        if (!(await need(16))) return false;
        const type = pending.readUInt32LE(12);
        await skip(SECTOR);
        if (type === 0) return false; // end of stream
        await skip(val * SECTOR); // a grain table, directory or footer
        continue;
      }
      take(12);
      if (!(await need(size)))
        throw new DriverError(`${what}: the NFC stream ended inside a grain`);
      const compressed = take(size);
      const offset = val * SECTOR;
      if (offset < produced + (out ? out.length - outAt : 0) || offset >= capacity) {
        throw new DriverError(
          `${what}: a grain at byte ${offset} is out of order or past the disk's end`,
        );
      }
      let raw: Buffer;
      try {
        raw = inflateSync(compressed, { maxOutputLength: header!.grainBytes });
      } catch (err) {
        throw new DriverError(`${what}: a grain at byte ${offset} does not inflate`, {
          cause: err,
        });
      }
      zerosUntil = offset;
      out = raw.subarray(0, Math.min(raw.length, capacity - offset));
      outAt = 0;
      return true;
    }
  }

  return async (into) => {
    if (!header) await readHeader();
    for (;;) {
      if (produced < zerosUntil) {
        const n = Math.min(into.length, zerosUntil - produced);
        into.fill(0, 0, n);
        produced += n;
        return n;
      }
      if (out && outAt < out.length) {
        const n = Math.min(into.length, out.length - outAt);
        into.set(out.subarray(outAt, outAt + n));
        outAt += n;
        produced += n;
        return n;
      }
      out = undefined;
      if (!finished && (await nextGrain())) continue;
      finished = true;
      zerosUntil = capacity;
      if (produced < capacity) continue;
      return 0;
    }
  };
}
