/**
 * What every driver needs around the streams it hands to a sink or takes from a source: stop
 * between steps when the job is abandoned, and report a failed stream as what caused it.
 */
import { Readable } from 'node:stream';
import type {
  BackupSink,
  ByteReader,
  ChunkWrite,
  DriverContext,
  RestoreSource,
  StoredStream,
  StreamInfo,
} from './driver';
import { StowageError, TransientError } from '../../kernel/errors';

/** Throws if the job is being abandoned (heartbeat lost, agent draining); call between steps. */
export function checkAborted(ctx: DriverContext, what: string): void {
  if (!ctx.signal.aborted) return;
  const reason: unknown = ctx.signal.reason;
  if (reason instanceof StowageError) throw reason;
  const message = `${what} stopped: the job was abandoned (heartbeat lost or agent draining)`;
  throw new TransientError(message, { cause: reason });
}

/**
 * Runs `consume(stream)` with the stream destroyed if the job is abandoned meanwhile, and always
 * destroyed afterwards, so a consumer that gives up early never leaves a request or a file
 * handle hanging. A failure is reported as what caused it: the abandonment; the stream's own
 * StowageError (an integrity error from the store); what `translate` makes of the stream's own
 * error (a driver knows its engine's: a failed disk read, say); else a stream that broke off
 * midway, which is worth a retry (TransientError); and only then the consumer's own error.
 */
export async function consumeStream<T>(
  stream: Readable,
  ctx: DriverContext,
  what: string,
  consume: (stream: Readable) => Promise<T>,
  translate: (streamError: Error) => Error | undefined = () => undefined,
): Promise<T> {
  const onAbort = () => stream.destroy(new Error(`${what}: the job was abandoned`));
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await consume(stream);
  } catch (err) {
    checkAborted(ctx, what);
    // A consumer that gives up midway (a store gone away) ends its `for await` on the stream,
    // and Node then destroys the stream with an AbortError: the consequence, not the cause.
    const broke = stream.errored?.name === 'AbortError' ? null : stream.errored;
    if (broke instanceof StowageError) throw broke;
    const translated = broke ? translate(broke) : undefined;
    if (translated) throw translated;
    if (broke && !(err instanceof StowageError)) {
      throw new TransientError(`${what}: the stream broke off midway (${broke.message}); retry`, {
        cause: broke,
      });
    }
    throw err;
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
    if (!stream.destroyed) stream.destroy();
  }
}

/** Read size when a ByteReader has to be turned into a stream (a sink without writeFrom). */
const FALLBACK_READ_BYTES = 1024 * 1024;

/** Stores what `read` produces: straight into the sink's buffer if it can, else as a stream. */
export function writeFrom(
  sink: BackupSink,
  info: StreamInfo,
  read: ByteReader,
): Promise<StoredStream> {
  if (sink.writeFrom) return sink.writeFrom(info, read);
  async function* pieces() {
    for (;;) {
      const buf = Buffer.allocUnsafe(FALLBACK_READ_BYTES);
      const n = await read(buf);
      if (n === 0) return;
      yield buf.subarray(0, n);
    }
  }
  return sink.writeStream(info, Readable.from(pieces(), { objectMode: false }));
}

/** Hands a stream's chunks to `write` in order, through the source's own loop if it has one. */
export async function forEachChunk(
  source: RestoreSource,
  name: string,
  write: ChunkWrite,
): Promise<number> {
  if (source.forEachChunk) return source.forEachChunk(name, write);
  let offset = 0;
  for await (const piece of await source.openStream(name)) {
    const bytes = piece as Buffer;
    await write(bytes, offset, false);
    offset += bytes.length;
  }
  return offset;
}
