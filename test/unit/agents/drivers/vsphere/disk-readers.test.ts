/**
 * The vSphere disk readers on their own: the streamOptimized VMDK unpacking of the NFC transport
 * (the simulator has no ExportSnapshot, so this is where it is exercised) and the ranged reader
 * of datastore HTTP (zeros past the file's end and outside CBT's allocated areas, never fetched).
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { streamOptimizedReader } from '../../../../../agents/drivers/vsphere/nfc';
import { DatastoreFiles, type RangeFeed } from '../../../../../agents/drivers/vsphere/datastore';
import { HttpClient } from '../../../../../agents/drivers/vsphere/http';
import { changedAreas, rangedReader } from '../../../../../agents/drivers/vsphere/transport';
import type { VimClient } from '../../../../../agents/drivers/vsphere/vim';
import type { SavedDisk } from '../../../../../agents/drivers/vsphere/config';
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

  it('reads only the areas asked for, one after the other, past-the-file parts as zeros', async () => {
    const file = randomBytes(10 * 1024);
    const fetched: Array<[number, number]> = [];
    const reader = rangedReader({
      capacity: 16 * 1024,
      fileSize: file.length,
      only: [
        { start: 1024, length: 2048 },
        { start: 8192, length: 4096 },
      ],
      rangeBytes: 1024,
      parallel: 2,
      signal: new AbortController().signal,
      fetch: (start, length) => {
        fetched.push([start, length]);
        return feedOf([file.subarray(start, start + length)]);
      },
    });
    const out = await readAll(reader.read, 900);
    await reader.close();
    const want = Buffer.concat([
      file.subarray(1024, 3072),
      file.subarray(8192, 10240),
      Buffer.alloc(2048), // past the file's end
    ]);
    expect(out.equals(want)).toBe(true);
    expect(fetched.sort((a, b) => a[0] - b[0])).toEqual([
      [1024, 1024],
      [2048, 1024],
      [8192, 1024],
      [9216, 1024],
    ]);
    expect(() =>
      rangedReader({
        capacity: 4096,
        fileSize: 4096,
        only: [{ start: 3072, length: 2048 }],
        rangeBytes: 1024,
        parallel: 1,
        signal: new AbortController().signal,
        fetch: () => feedOf([]),
      }),
    ).toThrow('is not inside the disk');
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

describe('QueryChangedDiskAreas (CBT) answers', () => {
  const disk = { label: 'Hard disk 1', key: 2000, capacityBytes: 64 * 1024 } as SavedDisk;
  /** A VimClient answering DiskChangeInfo as the API reference documents it. */
  function vimAnswering(answers: Array<Record<string, unknown>>) {
    const asked: Array<Record<string, unknown>> = [];
    const vim = {
      call: (method: string, _ref: unknown, args: Record<string, unknown>) => {
        expect(method).toBe('QueryChangedDiskAreas');
        asked.push(args);
        return Promise.resolve(answers.shift());
      },
    } as unknown as VimClient;
    return { vim, asked };
  }
  const vm = { type: 'VirtualMachine', value: 'vm-1' };
  const snapshot = { type: 'VirtualMachineSnapshot', value: 'snapshot-2' };

  it('walks the disk answer by answer and collects the changed areas', async () => {
    const { vim, asked } = vimAnswering([
      {
        startOffset: '0',
        length: String(32 * 1024),
        changedArea: [
          { start: '0', length: '4096' },
          { start: '8192', length: '512' },
        ],
      },
      {
        startOffset: String(32 * 1024),
        length: String(32 * 1024),
        changedArea: { start: '40960', length: '1024' },
      },
    ]);
    const areas = await changedAreas(vim, vm, snapshot, disk, '52 3c/7');
    expect(areas).toEqual([
      { start: 0, length: 4096 },
      { start: 8192, length: 512 },
      { start: 40960, length: 1024 },
    ]);
    expect(asked.map((a) => [a.startOffset, a.changeId, a.deviceKey])).toEqual([
      [0, '52 3c/7', 2000],
      [32 * 1024, '52 3c/7', 2000],
    ]);
  });

  it('refuses answers that do not follow the question or lie outside the disk', async () => {
    const wrongStart = vimAnswering([{ startOffset: '512', length: '1024' }]);
    await expect(changedAreas(wrongStart.vim, vm, snapshot, disk, '*')).rejects.toThrow(
      'answered offset 512',
    );
    const outside = vimAnswering([
      {
        startOffset: '0',
        length: String(64 * 1024),
        changedArea: { start: String(64 * 1024 - 10), length: '20' },
      },
    ]);
    await expect(changedAreas(outside.vim, vm, snapshot, disk, '*')).rejects.toThrow(
      'lies outside',
    );
    const notNumber = vimAnswering([{ startOffset: '0', length: 'lots' }]);
    await expect(changedAreas(notNumber.vim, vm, snapshot, disk, '*')).rejects.toThrow(
      'not an integer',
    );
  });
});

describe('datastore ranged GETs over HTTP (DatastoreFiles.openRange)', () => {
  /** A /folder server with Range support, writing each answer in uneven pieces. */
  async function folderServer(file: Buffer): Promise<{ server: Server; files: DatastoreFiles }> {
    const server = createServer((req, res) => {
      const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
      if (!m) return void res.writeHead(400).end();
      const [start, end] = [Number(m[1]), Number(m[2])];
      res.writeHead(206, {
        'Content-Range': `bytes ${start}-${end}/${file.length}`,
        'Content-Length': String(end - start + 1),
      });
      const body = file.subarray(start, end + 1);
      const write = (at: number): void => {
        if (at >= body.length) return void res.end();
        const n = 1000 + (at % 7919);
        if (res.write(body.subarray(at, at + n))) setImmediate(() => write(at + n));
        else res.once('drain', () => write(at + n));
      };
      write(0);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/sdk`);
    const vim = { sdk: base, http: new HttpClient(base), cookieHeader: () => Promise.resolve({}) };
    return { server, files: new DatastoreFiles(vim as unknown as VimClient) };
  }

  it('hands every byte of ranges read ahead and taken late (held back, then resumed) into a shared ring', async () => {
    // Three ranges of 3 MiB under way at once, each several times what a range holds before it
    // pauses; the reader takes them in order, so the later ones wait paused meanwhile.
    const file = randomBytes(9 * 1024 * 1024 + 12345);
    const { server, files } = await folderServer(file);
    try {
      const reader = rangedReader({
        capacity: file.length + 4096,
        fileSize: file.length,
        rangeBytes: 3 * 1024 * 1024,
        parallel: 3,
        signal: new AbortController().signal,
        fetch: (start, length, signal) =>
          files.openRange(
            'DC0',
            { datastore: 'ds', path: 'vm/disk-flat.vmdk' },
            start,
            length,
            signal,
          ),
      });
      // Into shared memory at odd offsets, as the chunking ring takes them.
      const ring = new Uint8Array(new SharedArrayBuffer(1024 * 1024 + 8));
      const parts: Buffer[] = [];
      for (let i = 0; ; i++) {
        const at = i % 8;
        const n = await reader.read(ring.subarray(at, at + 333_333));
        if (n === 0) break;
        parts.push(Buffer.from(ring.subarray(at, at + n)));
        if (i % 4 === 0) await new Promise((resolve) => setTimeout(resolve, 2));
      }
      await reader.close();
      const out = Buffer.concat(parts);
      expect(out.length).toBe(file.length + 4096);
      expect(out.subarray(0, file.length).equals(file)).toBe(true);
      expect(out.subarray(file.length).every((b) => b === 0)).toBe(true);
      expect(reader.fetched()).toBe(file.length);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
