/** consumeStream: which failure a driver reports when reading a stream into a sink fails. */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { consumeStream } from '../../../../agents/core/driver-streams';
import { DriverError } from '../../../../kernel/errors';
import { makeDriverContext } from '../../../fixtures/memory-point';

function tenPieces(): Readable {
  return Readable.from(
    (async function* () {
      for (let i = 0; i < 10; i++) yield Buffer.alloc(1024, i);
    })(),
  );
}

/** What a driver makes of its stream's own error (a failed disk read, say). */
const translate = (broke: Error) => new DriverError(`the source failed: ${broke.message}`);

describe('consumeStream', () => {
  it("reports the consumer's own error when it gives up midway, not the AbortError Node then leaves on the stream", async () => {
    const gaveUp = new Error('the store went away');

    const attempt = consumeStream(
      tenPieces(),
      makeDriverContext(),
      'backup of x',
      async (stream) => {
        for await (const _piece of stream) throw gaveUp;
      },
      translate,
    );

    await expect(attempt).rejects.toBe(gaveUp);
  });

  it("reports the stream's own failure, translated, over what the consumer made of it", async () => {
    const stream = tenPieces();
    const attempt = consumeStream(
      stream,
      makeDriverContext(),
      'backup of x',
      async (s) => {
        for await (const _piece of s) s.destroy(Object.assign(new Error('EIO'), { code: 'EIO' }));
      },
      translate,
    );

    await expect(attempt).rejects.toMatchObject({
      name: 'DriverError',
      message: 'the source failed: EIO',
    });
  });
});
