/**
 * What every driver needs around the streams it hands to a sink or takes from a source: stop
 * between steps when the job is abandoned, and report a failed stream as what caused it.
 */
import type { Readable } from 'node:stream';
import type { DriverContext } from './driver';
import { StowageError, TransientError } from '../../functions/shared/errors';

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
    const broke = stream.errored;
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
