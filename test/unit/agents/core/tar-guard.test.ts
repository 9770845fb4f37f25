import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { TarGuard } from '../../../../agents/core/tar-guard';
import { DriverError } from '../../../../kernel/errors';
import { hostileArchives, tarOf } from '../../../fixtures/hostile-tar';

/** What a consumer behind the guard receives, and how the stream ended. */
async function throughGuard(
  archive: Buffer,
  root?: string,
  chunkSize = 700,
): Promise<{ received: Buffer; error?: unknown }> {
  const chunks: Buffer[] = [];
  for (let at = 0; at < archive.length; at += chunkSize) {
    chunks.push(archive.subarray(at, at + chunkSize));
  }
  const received: Buffer[] = [];
  try {
    await pipeline(
      Readable.from(chunks),
      new TarGuard({ what: 'restore of test', ...(root !== undefined ? { root } : {}) }),
      new Writable({
        write(chunk: Buffer, _e, cb) {
          received.push(chunk);
          cb();
        },
      }),
    );
    return { received: Buffer.concat(received) };
  } catch (error) {
    return { received: Buffer.concat(received), error };
  }
}

describe('TarGuard', () => {
  const outside = '/srv/outside-of-the-target';

  it.each(hostileArchives(outside, 'vol').filter((a) => !a.devices))(
    'refuses $name before the hostile entry reaches the engine',
    async ({ entries }) => {
      const archive = await tarOf(entries);

      const { received, error } = await throughGuard(archive, 'vol');

      expect(error).toBeInstanceOf(DriverError);
      expect((error as Error).message).toMatch(/refusing to hand it to the engine/);
      // The consumer gets at most the entries before the hostile one (the last), never its header.
      const before = (await tarOf(entries.slice(0, -1))).length - 1024;
      expect(received.length).toBeLessThanOrEqual(before);
    },
  );

  it.each([1, 512, 700, 64 * 1024])(
    'passes a well-formed archive byte for byte (chunks of %i bytes)',
    async (chunkSize) => {
      const long = `vol/${'deep/'.repeat(40)}file-with-a-name-longer-than-a-ustar-header-holds`;
      const archive = await tarOf([
        { name: 'vol', type: 'directory', mode: 0o755 },
        { name: 'vol/etc', type: 'directory', mode: 0o755 },
        { name: 'vol/etc/conf', type: 'file', body: 'x'.repeat(1500) },
        { name: 'vol/etc', type: 'directory', mode: 0o700 },
        { name: 'vol/abs-link', type: 'symlink', linkname: '/usr/share/zoneinfo/UTC' },
        { name: 'vol/up-link', type: 'symlink', linkname: '../../elsewhere' },
        { name: 'vol/etc/hard', type: 'link', linkname: 'vol/etc/conf' },
        { name: 'vol/null', type: 'character-device', devmajor: 1, devminor: 3 },
        { name: 'vol/fifo', type: 'fifo' },
        { name: long, type: 'file', body: 'long' },
        { name: 'vol/ünïcødé', type: 'file', body: '' },
      ]);

      const { received, error } = await throughGuard(archive, 'vol', chunkSize);

      expect(error).toBeUndefined();
      expect(received.equals(archive)).toBe(true);
    },
  );

  it('refuses an entry outside the expected top directory', async () => {
    const archive = await tarOf([{ name: 'etc/passwd', type: 'file', body: 'x' }]);

    const { error } = await throughGuard(archive, 'vol');

    expect((error as Error).message).toMatch(/lies outside vol\//);
  });

  it('refuses a truncated archive and one that is not a tar at all', async () => {
    const archive = await tarOf([{ name: 'vol/f', type: 'file', body: 'y'.repeat(4000) }]);

    expect((await throughGuard(archive.subarray(0, 2000), 'vol')).error).toBeInstanceOf(
      DriverError,
    );
    const junk = await throughGuard(Buffer.alloc(4096, 7), 'vol');
    expect((junk.error as Error).message).toMatch(/not a well-formed tar/);
    expect(junk.received.length).toBe(0);
  });
});
