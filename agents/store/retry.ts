/**
 * Retrying as a decorator around any ObjectStore (restic's `backend/retry` is the model): the
 * adapters only say what went wrong, `isTransient` decides what is worth another attempt, and
 * `withRetry` waits with capped exponential backoff and full jitter between attempts
 * (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
 *
 * What is retried, and what is not:
 * - every operation whose failure `isTransient` calls transient, up to `attempts` in all;
 *   ObjectNotFound, RangeNotSatisfiable, InvalidKey and other 4xx answers are final at once;
 * - `put` only when its body is a Buffer. A stream is consumed by the first attempt and cannot be
 *   replayed: a failed stream put rejects at once, and the caller must produce the bytes again.
 *   A put whose failed attempt may still have stored the object (the answer was lost, not the
 *   request) meets ObjectExists on the next attempt: the stored object is then read back, and the
 *   put succeeds if it holds exactly this body (the earlier attempt's), else ObjectExists stands;
 * - `get` retries obtaining the stream. Once the stream is handed over, an error while reading it
 *   is the caller's (re-ask with a range from where it stopped);
 * - `list` starts the listing again after a failure and skips keys it has already yielded;
 * - `delete` and `deletePrefix` are idempotent, so repeating them is always safe.
 *
 * The AWS SDK retries too (3 attempts by default): behind this decorator a client may be built
 * with fewer, or the two multiply.
 */
import { setTimeout as sleepFor } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import {
  getBuffer,
  getInto,
  ObjectExists,
  type ByteRange,
  type ObjectInfo,
  type ObjectStore,
} from './store';

export interface RetryOptions {
  /** Attempts in all, the first included. Default 5. */
  attempts?: number;
  /** Upper bound of the first wait; it doubles with each attempt. Default 200 ms. */
  baseDelayMs?: number;
  /** No wait is longer than this. Default 5 s (the defaults' four waits are at most 0.2 .. 1.6 s). */
  maxDelayMs?: number;
  /** Which errors are worth another attempt. Default `isTransient`. */
  isTransient?: (err: unknown) => boolean;
  /** Told about each failed attempt that will be retried (to log it). */
  onRetry?: (event: RetryEvent) => void;
  /** Waits between attempts; tests pass one that does not. */
  sleep?: (ms: number) => Promise<void>;
  /** In [0, 1): the jitter. */
  random?: () => number;
}

export interface RetryEvent {
  operation: 'put' | 'get' | 'exists' | 'list' | 'delete' | 'deletePrefix';
  key: string;
  /** The attempt that failed, from 1. */
  attempt: number;
  delayMs: number;
  error: unknown;
}

/** Errors that retrying cannot fix, whatever else they carry. */
const PERMANENT_NAMES = new Set([
  'ObjectNotFound',
  'ObjectExists',
  'RangeNotSatisfiable',
  'InvalidKey',
  'AbortError',
]);

/** AWS error codes for throttling and timeouts (S3's RequestTimeout is a 400). */
const TRANSIENT_NAMES = new Set([
  'SlowDown',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
  'ThrottlingException',
  'Throttling',
  'ThrottledException',
  'TooManyRequestsException',
  'RequestThrottled',
  'RequestThrottledException',
  'RequestLimitExceeded',
  'BandwidthLimitExceeded',
  'ProvisionedThroughputExceededException',
  'PriorRequestNotComplete',
  // S3's answer to a conditional write that raced another on the same key; the next attempt
  // gets a definite answer (stored, or 412).
  'ConditionalRequestConflict',
  'ServiceUnavailable',
  'TransientError',
]);

/** Node network errors, and filesystem errors that clear up by themselves. */
const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTUNREACH',
  'EAGAIN',
  'EBUSY',
]);

interface ErrorShape {
  name?: unknown;
  code?: unknown;
  cause?: unknown;
  errors?: unknown;
  $retryable?: unknown;
  $metadata?: { httpStatusCode?: unknown };
}

/**
 * Whether another attempt may succeed: AWS SDK errors it marks `$retryable`, 5xx and 429
 * answers, throttling and timeout codes; Node network errors; EAGAIN/EBUSY. Looks through
 * `cause` and AggregateError's `errors`. Everything else, 4xx included, is permanent.
 */
export function isTransient(err: unknown): boolean {
  return transient(err, 0);
}

function transient(err: unknown, depth: number): boolean {
  if (typeof err !== 'object' || err === null || depth > 5) return false;
  const e = err as ErrorShape;
  const name = typeof e.name === 'string' ? e.name : '';
  if (PERMANENT_NAMES.has(name)) return false;
  if (e.$retryable) return true;
  if (TRANSIENT_NAMES.has(name)) return true;
  if (typeof e.code === 'string' && TRANSIENT_CODES.has(e.code)) return true;
  const status = e.$metadata?.httpStatusCode;
  if (typeof status === 'number') return status >= 500 || status === 429;
  if (Array.isArray(e.errors) && e.errors.some((inner) => transient(inner, depth + 1))) return true;
  return transient(e.cause, depth + 1);
}

/** Wraps a store so transient failures are retried (see the module header for what is not). */
export function withRetry(store: ObjectStore, options: RetryOptions = {}): ObjectStore {
  return new RetryingStore(store, {
    attempts: options.attempts ?? 5,
    baseDelayMs: options.baseDelayMs ?? 200,
    maxDelayMs: options.maxDelayMs ?? 5_000,
    isTransient: options.isTransient ?? isTransient,
    onRetry: options.onRetry ?? (() => undefined),
    sleep: options.sleep ?? ((ms) => sleepFor(ms)),
    random: options.random ?? Math.random,
  });
}

class RetryingStore implements ObjectStore {
  constructor(
    private readonly inner: ObjectStore,
    private readonly options: Required<RetryOptions>,
  ) {}

  put(key: string, body: Readable | Buffer): Promise<void> {
    if (!Buffer.isBuffer(body)) return this.inner.put(key, body);
    let failedBefore = false;
    return this.retry('put', key, async () => {
      try {
        await this.inner.put(key, body);
      } catch (err) {
        if (failedBefore && err instanceof ObjectExists && (await this.holds(key, body))) return;
        failedBefore = true;
        throw err;
      }
    });
  }

  /** Whether the stored object is exactly `body` (an earlier attempt of this put stored it). */
  private async holds(key: string, body: Buffer): Promise<boolean> {
    const stored = await this.retry('get', key, () => getBuffer(this.inner, key));
    return stored.equals(body);
  }

  get(key: string, range?: ByteRange): Promise<Readable> {
    return this.retry('get', key, () => this.inner.get(key, range));
  }

  /** The whole range is read again on a transient failure, even one midway. */
  getInto(key: string, range: ByteRange, into: Uint8Array): Promise<void> {
    return this.retry('get', key, () => getInto(this.inner, key, range, into));
  }

  exists(key: string): Promise<boolean> {
    return this.retry('exists', key, () => this.inner.exists(key));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const yielded = new Set<string>();
    for (let attempt = 1; ; attempt++) {
      try {
        for await (const info of this.inner.list(prefix)) {
          if (yielded.has(info.key)) continue;
          yielded.add(info.key);
          yield info;
        }
        return;
      } catch (err) {
        await this.waitOrThrow('list', prefix, attempt, err);
      }
    }
  }

  delete(key: string): Promise<void> {
    return this.retry('delete', key, () => this.inner.delete(key));
  }

  deletePrefix(prefix: string): Promise<void> {
    return this.retry('deletePrefix', prefix, () => this.inner.deletePrefix(prefix));
  }

  private async retry<T>(
    operation: RetryEvent['operation'],
    key: string,
    run: () => Promise<T>,
  ): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await run();
      } catch (err) {
        await this.waitOrThrow(operation, key, attempt, err);
      }
    }
  }

  /** Rethrows `error` when it is final, else waits before the next attempt. */
  private async waitOrThrow(
    operation: RetryEvent['operation'],
    key: string,
    attempt: number,
    error: unknown,
  ): Promise<void> {
    const { attempts, baseDelayMs, maxDelayMs } = this.options;
    if (attempt >= attempts || !this.options.isTransient(error)) throw error;
    const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
    const delayMs = Math.round(ceiling * this.options.random());
    this.options.onRetry({ operation, key, attempt, delayMs, error });
    await this.options.sleep(delayMs);
  }
}
