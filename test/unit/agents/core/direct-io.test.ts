import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ALIGN,
  cachedShare,
  alignedBuffer,
  alignedMemory,
  isAligned,
  openDirect,
  SequentialReader,
  SequentialWriter,
  STAGE_BYTES,
} from '../../../../agents/core/direct-io';
import { MiB, prngBytes } from '../../../fixtures/data';

// /var/tmp rather than /tmp, which may be a tmpfs without O_DIRECT; never inside the checkout.
const dir = mkdtempSync(join('/var/tmp', 'stowage-direct-io-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Piece {
  bytes: Buffer;
  zero: boolean;
}

/** Pieces of odd lengths (none a multiple of ALIGN), zero ones among them, as a restore hands them. */
function pieces(): Piece[] {
  const lengths = [
    1,
    ALIGN - 1,
    3 * MiB + 17,
    5000,
    STAGE_BYTES + 12_345,
    100,
    2 * MiB + 1,
    7,
    STAGE_BYTES - 3,
    999_999,
  ];
  // Zero pieces: a hole inside one block, holes spanning blocks and stages, a trailing hole.
  const zero = new Set([1, 4, 5, 7, 8]);
  return lengths.map((n, i) => ({
    bytes: zero.has(i) ? Buffer.alloc(n) : prngBytes(n, i + 1),
    zero: zero.has(i),
  }));
}

async function writeAll(
  path: string,
  parts: Piece[],
  sparse: boolean,
  options: Partial<Parameters<typeof SequentialWriter.open>[1]> = {},
) {
  const handle = await open(path, 'w');
  const writer = await SequentialWriter.open(handle, { sparse, ...options });
  let offset = 0;
  for (const { bytes, zero } of parts) {
    await writer.write(bytes, offset, zero);
    offset += bytes.length;
  }
  await writer.finish();
  if (sparse) await handle.truncate(offset);
  await handle.close();
  return writer;
}

describe('alignedMemory', () => {
  it('gives memory O_DIRECT accepts, where a Buffer of the same size is refused', async () => {
    const handle = await open(join(dir, 'probe'), 'w');
    const direct = await openDirect(handle, constants.O_WRONLY);
    expect(direct).toBeDefined();
    const aligned = new Uint8Array(alignedMemory(ALIGN), 0, ALIGN);
    await expect(direct!.write(aligned, 0, ALIGN, 0)).resolves.toMatchObject({
      bytesWritten: ALIGN,
    });
    // malloc'ed memory is aligned to 16 bytes, not to the block size: this is why the writer stages.
    // One of two views 16 bytes apart is off the block size (either may happen to be on it).
    const malloced = Buffer.allocUnsafeSlow(3 * ALIGN);
    const writes = await Promise.allSettled(
      [16, 32].map((at) => direct!.write(malloced.subarray(at, at + ALIGN), 0, ALIGN, 0)),
    );
    expect(
      writes.some(
        (w) => w.status === 'rejected' && (w.reason as { code?: string }).code === 'EINVAL',
      ),
    ).toBe(true);
    await direct!.close();
    await handle.close();
  });
});

describe('SequentialWriter', () => {
  const parts = pieces();
  const whole = Buffer.concat(parts.map((p) => p.bytes));
  const zeroBytes = parts.filter((p) => p.zero).reduce((n, p) => n + p.bytes.length, 0);

  it('writes a sparse file around the page cache: same bytes, holes where whole blocks were zero', async () => {
    const path = join(dir, 'sparse.img');
    const writer = await writeAll(path, parts, true);

    expect(writer.isDirect).toBe(true);
    expect(readFileSync(path).equals(whole)).toBe(true);
    // The zero pieces are ~8 MiB and 2 MiB of holes; only their edge blocks are written.
    const allocated = statSync(path).blocks * 512;
    expect(allocated).toBeLessThan(whole.length - zeroBytes + 8 * ALIGN);
  });

  it('writes every zero when not sparse (a device), over what was there', async () => {
    const path = join(dir, 'device.img');
    const handle = await open(path, 'w');
    await handle.write(Buffer.alloc(whole.length + 3 * ALIGN, 0xaa));
    await handle.close();
    const before = statSync(path).size;

    const device = await open(path, 'r+');
    const writer = await SequentialWriter.open(device, { sparse: false });
    let offset = 0;
    for (const { bytes, zero } of parts) {
      await writer.write(bytes, offset, zero);
      offset += bytes.length;
    }
    await writer.finish();
    await device.close();

    const got = readFileSync(path);
    expect(got.length).toBe(before);
    expect(got.subarray(0, whole.length).equals(whole)).toBe(true);
    // The bytes after the stream are the device's own: the last partial block was not padded.
    expect(got.subarray(whole.length).every((b) => b === 0xaa)).toBe(true);
  });

  it('writes a piece in aligned memory from where it is, its odd tail included', async () => {
    const path = join(dir, 'pack.img');
    const body = alignedBuffer(5 * MiB + 123);
    prngBytes(body.length, 77).copy(body);
    expect(isAligned(body)).toBe(true);

    const handle = await open(path, 'w');
    const writer = await SequentialWriter.open(handle, { sparse: false });
    await writer.write(body, 0, false);
    await writer.finish();
    await handle.close();

    expect(writer.isDirect).toBe(true);
    expect(readFileSync(path).equals(body)).toBe(true);
  });

  it('goes through the page cache when the file system refuses O_DIRECT', async () => {
    const path = join(dir, 'no-direct.img');
    const writer = await writeAll(path, parts, true, {
      openDirect: () => Promise.resolve(undefined),
    });

    expect(writer.isDirect).toBe(false);
    expect(readFileSync(path).equals(whole)).toBe(true);
  });

  it('falls back on the page cache, losing nothing, when a direct write fails with EINVAL', async () => {
    const path = join(dir, 'einval.img');
    let refused = 0;
    const refusing = {
      write: () => {
        refused++;
        return Promise.reject(
          Object.assign(new Error('EINVAL: invalid argument'), { code: 'EINVAL' }),
        );
      },
      close: () => Promise.resolve(),
    } as unknown as FileHandle;
    const writer = await writeAll(path, parts, true, {
      openDirect: () => Promise.resolve(refusing),
    });

    expect(refused).toBeGreaterThan(0);
    expect(writer.isDirect).toBe(false);
    expect(readFileSync(path).equals(whole)).toBe(true);
  });

  it('reports any other write error, and refuses pieces out of order', async () => {
    const handle = await open(join(dir, 'eio.img'), 'w');
    const failing = {
      write: () => Promise.reject(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' })),
      close: () => Promise.resolve(),
    } as unknown as FileHandle;
    const writer = await SequentialWriter.open(handle, {
      sparse: false,
      openDirect: () => Promise.resolve(failing),
    });
    const big = prngBytes(3 * STAGE_BYTES, 9);
    await expect(writer.write(big, 0, false)).rejects.toThrow(/EIO/);
    await writer.abandon();
    await handle.close();

    const other = await open(join(dir, 'order.img'), 'w');
    const ordered = await SequentialWriter.open(other, { sparse: true });
    await ordered.write(Buffer.alloc(10, 1), 0, false);
    await expect(ordered.write(Buffer.alloc(10, 1), 5, false)).rejects.toThrow(/in order/);
    await ordered.abandon();
    await other.close();
  });
});

describe('SequentialReader', () => {
  const data = prngBytes(5 * MiB + 1234, 42);
  const path = join(dir, 'source.img');

  /** Reads the file through `reader` into views of one aligned buffer, `sizes` bytes at a time. */
  async function readAll(reader: SequentialReader, sizes: (i: number) => number, offset = 0) {
    const memory = alignedMemory(2 * MiB + ALIGN);
    const got: Buffer[] = [];
    for (let i = 0, n = -1; n !== 0; i++) {
      const into = new Uint8Array(memory, offset, sizes(i));
      n = await reader.read(into);
      got.push(Buffer.from(into.subarray(0, n)));
    }
    return Buffer.concat(got);
  }

  it('reads aligned buffers around the page cache, and the odd tail through the page cache', async () => {
    writeFileSync(path, data);
    const handle = await open(path, 'r');
    const reader = await SequentialReader.open(handle);
    expect(reader.isDirect).toBe(true);

    const got = await readAll(reader, () => 2 * MiB);

    expect(got.equals(data)).toBe(true);
    expect(reader.isDirect).toBe(true);
    await reader.close();
    await handle.close();
  });

  it('takes any buffer: unaligned memory or lengths go through the page cache, same bytes', async () => {
    const handle = await open(path, 'r');
    const reader = await SequentialReader.open(handle);

    expect(isAligned(new Uint8Array(alignedMemory(ALIGN), 512))).toBe(false);
    expect(isAligned(Buffer.allocUnsafeSlow(ALIGN))).toBe(false);
    const odd = await readAll(reader, (i) => [ALIGN, 777_777, 3 * ALIGN, 100, MiB][i % 5]!, 512);

    expect(odd.equals(data)).toBe(true);
    await reader.close();
    await handle.close();
  });

  it('carries on through the page cache when a direct read is refused with EINVAL', async () => {
    const handle = await open(path, 'r');
    let refused = 0;
    const refusing = {
      read: () => {
        refused++;
        return Promise.reject(Object.assign(new Error('EINVAL'), { code: 'EINVAL' }));
      },
      close: () => Promise.resolve(),
    } as unknown as FileHandle;
    const reader = await SequentialReader.open(handle, {
      openDirect: () => Promise.resolve(refusing),
    });

    const got = await readAll(reader, () => MiB);

    expect(refused).toBe(1);
    expect(reader.isDirect).toBe(false);
    expect(got.equals(data)).toBe(true);
    await handle.close();
  });
});

describe('cachedShare', () => {
  it('tells how much of a file is in the page cache, and nothing for a missing one', async () => {
    const path = join(dir, 'cached.img');
    writeFileSync(path, prngBytes(4 * MiB, 5));

    // Just written, so in the cache (this machine hands idle cache back within a minute or two).
    expect(await cachedShare(path)).toBeGreaterThan(0.9);
    expect(await cachedShare(join(dir, 'missing.img'))).toBeUndefined();
  });
});
