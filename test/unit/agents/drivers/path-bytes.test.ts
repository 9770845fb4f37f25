import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ChunkWrite, RestoreSource } from '../../../../agents/core/driver';
import { openFileReader, writeChunks } from '../../../../agents/drivers/path/bytes';
import { MiB, prngBytes } from '../../../fixtures/data';
import { makeDriverContext } from '../../../fixtures/memory-point';

const dir = mkdtempSync(join(tmpdir(), 'stowage-bytes-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A source handing over `parts` as chunks, the all-zero ones flagged as the repository does. */
function sourceOf(parts: Buffer[]): RestoreSource {
  return {
    streams: [{ name: 'file', kind: 'file', size: parts.reduce((n, p) => n + p.length, 0) }],
    openStream: () => Promise.reject(new Error('writeChunks must use forEachChunk')),
    async forEachChunk(_name: string, write: ChunkWrite) {
      let offset = 0;
      for (const part of parts) {
        await write(
          part,
          offset,
          part.every((b) => b === 0),
        );
        offset += part.length;
      }
      return offset;
    },
  };
}

describe('writing a stream to a file chunk by chunk', () => {
  const parts = [
    prngBytes(MiB, 1),
    Buffer.alloc(8 * MiB),
    prngBytes(MiB, 2),
    Buffer.alloc(4 * MiB),
  ];
  const whole = Buffer.concat(parts);

  it('leaves holes for zero chunks of a new file, and gets its length right with a trailing hole', async () => {
    const path = join(dir, 'sparse.img');
    const handle = await open(path, 'wx');
    const size = await writeChunks(
      handle,
      sourceOf(parts),
      'file',
      true,
      makeDriverContext(),
      't',
      path,
    );
    await handle.close();

    expect(size).toBe(whole.length);
    expect(readFileSync(path).equals(whole)).toBe(true);
    // 2 MiB of data, 12 MiB of holes: the file system holds about the data alone.
    expect(statSync(path).blocks * 512).toBeLessThan(4 * MiB);
  });

  it('writes every zero over what was there when not sparse (a device)', async () => {
    const path = join(dir, 'device.img');
    writeFileSync(path, Buffer.alloc(whole.length, 0xaa));
    const handle = await open(path, 'r+');
    await writeChunks(handle, sourceOf(parts), 'file', false, makeDriverContext(), 't', path);
    await handle.close();

    expect(readFileSync(path).equals(whole)).toBe(true);
  });

  it('reads a file to its end into whatever buffers it is handed', async () => {
    const path = join(dir, 'read.img');
    writeFileSync(path, whole);
    const handle = await open(path, 'r');
    const { read, close } = await openFileReader(handle, makeDriverContext(), 't', path);
    const got: Buffer[] = [];
    for (let n = -1; n !== 0;) {
      const into = Buffer.alloc(777_777);
      n = await read(into);
      got.push(into.subarray(0, n));
    }
    await handle.close();

    await close();
    expect(Buffer.concat(got).equals(whole)).toBe(true);
  });

  it('stops reading once the job is abandoned', async () => {
    const path = join(dir, 'read.img');
    const controller = new AbortController();
    const handle = await open(path, 'r');
    const { read, close } = await openFileReader(
      handle,
      makeDriverContext({ signal: controller.signal }),
      'backup of x',
      path,
    );
    await read(Buffer.alloc(1024));
    controller.abort();

    await expect(read(Buffer.alloc(1024))).rejects.toThrow(/backup of x stopped/);
    await close();
    await handle.close();
  });
});
