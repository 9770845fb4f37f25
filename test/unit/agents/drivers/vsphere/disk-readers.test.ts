/**
 * The vSphere disk readers on their own: the streamOptimized VMDK unpacking of the NFC transport
 * (the simulator has no ExportSnapshot, so this is where it is exercised) and the ranged reader
 * of datastore HTTP (zeros past the file's end and outside CBT's allocated areas, never fetched).
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { streamOptimizedReader } from '../../../../../agents/drivers/vsphere/nfc';
import type { RangeFeed } from '../../../../../agents/drivers/vsphere/datastore';
import { rangedReader } from '../../../../../agents/drivers/vsphere/transport';
import type { ByteReader } from '../../../../../agents/core/driver';

const SECTOR = 512;
const GRAIN = 128 * SECTOR;

function header(capacity: number): Buffer {
  const h = Buffer.alloc(SECTOR);
  h.writeUInt32LE(0x564d444b, 0);
  h.writeUInt32LE(3, 4);
  h.writeUInt32LE(1 | (1 << 16) | (1 << 17), 8);
  h.writeBigUInt64LE(BigInt(capacity / SECTOR), 12);
  h.writeBigUInt64LE(128n, 20);
  h.writeBigUInt64LE(1n, 64);
  h.writeUInt16LE(1, 77);
  return h;
}

function pad(b: Buffer): Buffer {
  const rest = b.length % SECTOR;
  return rest ? Buffer.concat([b, Buffer.alloc(SECTOR - rest)]) : b;
}

function grain(offset: number, bytes: Buffer): Buffer {
  const data = deflateSync(bytes);
  const m = Buffer.alloc(12);
  m.writeBigUInt64LE(BigInt(offset / SECTOR), 0);
  m.writeUInt32LE(data.length, 8);
  return pad(Buffer.concat([m, data]));
}

function metadata(type: number, sectors: number): Buffer {
  const m = Buffer.alloc(SECTOR);
  m.writeBigUInt64LE(BigInt(sectors), 0);
  m.writeUInt32LE(type, 12);
  return Buffer.concat([m, Buffer.alloc(sectors * SECTOR, 7)]);
}

async function readAll(read: ByteReader, piece = 100_000): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (;;) {
    const buf = Buffer.alloc(piece);
    const n = await read(buf);
    if (n === 0) return Buffer.concat(parts);
    parts.push(buf.subarray(0, n));
  }
}

/** Hands the bytes out in small uneven pieces, as a socket would. */
function chopped(b: Buffer): Readable {
  const pieces: Buffer[] = [];
  for (let at = 0, k = 1; at < b.length; at += 777 * k, k = (k % 5) + 1) {
    pieces.push(b.subarray(at, at + 777 * k));
  }
  return Readable.from(pieces);
}

describe('streamOptimized VMDK unpacking (NFC)', () => {
  it('yields the raw disk: grains in place, zeros between and after them, metadata skipped', async () => {
    const capacity = 6 * GRAIN;
    const g1 = randomBytes(GRAIN);
    const g4 = Buffer.alloc(GRAIN, 'log line\n');
    const vmdk = Buffer.concat([
      header(capacity),
      grain(GRAIN, g1),
      metadata(1, 4), // a grain table
      grain(4 * GRAIN, g4),
      metadata(2, 1), // the grain directory
      metadata(3, 1), // the footer
      Buffer.alloc(SECTOR), // end of stream
    ]);
    const out = await readAll(streamOptimizedReader(chopped(vmdk), capacity, 'disk'));
    const want = Buffer.alloc(capacity);
    g1.copy(want, GRAIN);
    g4.copy(want, 4 * GRAIN);
    expect(out.equals(want)).toBe(true);
  });

  it('refuses grains out of order, past the disk, or a stream that is not streamOptimized', async () => {
    const capacity = 4 * GRAIN;
    const backwards = Buffer.concat([
      header(capacity),
      grain(2 * GRAIN, randomBytes(GRAIN)),
      grain(GRAIN, randomBytes(GRAIN)),
    ]);
    await expect(
      readAll(streamOptimizedReader(Readable.from([backwards]), capacity, 'disk')),
    ).rejects.toThrow(/out of order/);
    const past = Buffer.concat([header(capacity), grain(4 * GRAIN, randomBytes(GRAIN))]);
    await expect(
      readAll(streamOptimizedReader(Readable.from([past]), capacity, 'disk')),
    ).rejects.toThrow(/past the disk/);
    await expect(
      readAll(streamOptimizedReader(Readable.from([Buffer.alloc(SECTOR)]), capacity, 'disk')),
    ).rejects.toThrow(/not a VMDK/);
  });
});

/** A range's bytes as DatastoreFiles.openRange hands them: pieces, then the end or a failure. */
function feedOf(pieces: Buffer[], failure?: Error): RangeFeed {
  let i = 0;
  return {
    next: () => {
      if (i < pieces.length) return Promise.resolve(pieces[i++]!);
      return failure ? Promise.reject(failure) : Promise.resolve(null);
    },
    cancel: () => undefined,
  };
}

describe('ranged reader (datastore HTTP)', () => {
  it('fetches only the file and the allocated areas, zero-fills the rest to the capacity', async () => {
    const file = randomBytes(5 * 1024 + 300);
    const fetched: number[] = [];
    const reader = rangedReader({
      capacity: 12 * 1024,
      fileSize: file.length,
      allocated: [
        { start: 0, length: 1024 },
        { start: 4096, length: 100 },
      ],
      rangeBytes: 1024,
      parallel: 3,
      signal: new AbortController().signal,
      fetch: (start, length) => {
        fetched.push(start);
        // The bytes in two pieces, as a socket hands them over.
        const half = Math.floor(length / 2);
        return feedOf([
          file.subarray(start, start + half),
          file.subarray(start + half, start + length),
        ]);
      },
    });
    const out = await readAll(reader.read, 700);
    await reader.close();
    const want = Buffer.alloc(12 * 1024);
    file.copy(want, 0, 0, 1024);
    file.copy(want, 4096, 4096, 5120);
    expect(out.equals(want)).toBe(true);
    expect(fetched.sort((a, b) => a - b)).toEqual([0, 4096]);
    expect(reader.fetched()).toBe(2048);
  });

  it('reports a failed range as the read error', async () => {
    const reader = rangedReader({
      capacity: 4096,
      fileSize: 4096,
      rangeBytes: 1024,
      parallel: 2,
      signal: new AbortController().signal,
      fetch: (start, length) =>
        start === 2048
          ? feedOf([], new Error('range 2048 failed'))
          : feedOf([Buffer.alloc(length)]),
    });
    await expect(readAll(reader.read, 1024)).rejects.toThrow('range 2048 failed');
    await reader.close();
  });
});
