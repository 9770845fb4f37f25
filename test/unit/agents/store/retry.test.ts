/**
 * withRetry around a MemoryStore whose operations fail on cue: what is retried, how often, how
 * long it waits, and what is never retried. The decorated store also passes the whole contract.
 */
import { Readable } from 'node:stream';
import { S3ServiceException } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { InvalidKey } from '../../../../agents/store/dir-store';
import { isTransient, withRetry, type RetryOptions } from '../../../../agents/store/retry';
import {
  getBuffer,
  ObjectExists,
  ObjectNotFound,
  RangeNotSatisfiable,
  type ByteRange,
  type ObjectInfo,
  type ObjectStore,
} from '../../../../agents/store/store';
import { MemoryStore } from '../../../fixtures/memory-store';
import { describeObjectStoreContract } from '../../../contract/store-suite';

type Operation = 'put' | 'get' | 'exists' | 'list' | 'delete' | 'deletePrefix';

/** A MemoryStore that throws the queued errors, one per call, before doing the real thing. */
class FlakyStore implements ObjectStore {
  readonly inner = new MemoryStore();
  readonly calls: Record<Operation, number> = {
    put: 0,
    get: 0,
    exists: 0,
    list: 0,
    delete: 0,
    deletePrefix: 0,
  };
  private readonly failures: unknown[] = [];
  /** For list: how many keys to yield before the queued error. */
  listFailsAfter = 0;

  failNext(...errors: unknown[]): this {
    this.failures.push(...errors);
    return this;
  }

  private call(operation: Operation): void {
    this.calls[operation]++;
    const failure = this.failures.shift();
    if (failure !== undefined) throw failure;
  }

  /** The next put stores its object and then fails with this error, as a lost answer does. */
  loseAnswerOfNextPut?: unknown;

  async put(key: string, body: Readable | Buffer): Promise<void> {
    this.call('put');
    await this.inner.put(key, body);
    const lost = this.loseAnswerOfNextPut;
    this.loseAnswerOfNextPut = undefined;
    if (lost !== undefined) throw lost;
  }
  async get(key: string, range?: ByteRange): Promise<Readable> {
    this.call('get');
    return this.inner.get(key, range);
  }
  async exists(key: string): Promise<boolean> {
    this.call('exists');
    return this.inner.exists(key);
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    this.calls.list++;
    const failure = this.failures.shift();
    let yielded = 0;
    for await (const info of this.inner.list(prefix)) {
      if (failure !== undefined && yielded === this.listFailsAfter) throw failure;
      yield info;
      yielded++;
    }
  }
  async delete(key: string): Promise<void> {
    this.call('delete');
    await this.inner.delete(key);
  }
  async deletePrefix(prefix: string): Promise<void> {
    this.call('deletePrefix');
    await this.inner.deletePrefix(prefix);
  }
}

function s3Error(name: string, status: number, extra: object = {}): S3ServiceException {
  return Object.assign(
    new S3ServiceException({
      name,
      $fault: status >= 500 ? 'server' : 'client',
      $metadata: { httpStatusCode: status },
      message: name,
    }),
    extra,
  );
}

function nodeError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code} from the socket`), { code });
}

function makeRetrying(flaky: FlakyStore, overrides: RetryOptions = {}) {
  const waits: number[] = [];
  const store = withRetry(flaky, {
    sleep: async (ms) => void waits.push(ms),
    random: () => 0.5,
    ...overrides,
  });
  return { store, waits };
}

describe('withRetry', () => {
  it('retries transient errors and then succeeds', async () => {
    const flaky = new FlakyStore();
    await flaky.inner.put('k', Buffer.from('value'));
    flaky.failNext(nodeError('ECONNRESET'), s3Error('SlowDown', 503));
    const { store } = makeRetrying(flaky);

    const got = await getBuffer(store, 'k');

    expect(got.toString()).toBe('value');
    expect(flaky.calls.get).toBe(3);
  });

  it.each<[Operation, (store: ObjectStore) => Promise<unknown>]>([
    ['put', (s) => s.put('k', Buffer.from('x'))],
    ['exists', (s) => s.exists('k')],
    ['delete', (s) => s.delete('k')],
    ['deletePrefix', (s) => s.deletePrefix('p/')],
  ])('retries %s after a transient error', async (operation, run) => {
    const flaky = new FlakyStore().failNext(s3Error('InternalError', 500));
    const { store } = makeRetrying(flaky);

    await run(store);

    expect(flaky.calls[operation]).toBe(2);
  });

  it('gives up after the configured attempts with the last error', async () => {
    const errors = [1, 2, 3].map((i) => s3Error('ServiceUnavailable', 503, { attempt: i }));
    const flaky = new FlakyStore().failNext(...errors);
    const { store } = makeRetrying(flaky, { attempts: 3 });

    await expect(store.exists('k')).rejects.toBe(errors[2]);
    expect(flaky.calls.exists).toBe(3);
  });

  it('waits exponentially longer with jitter, up to the cap', async () => {
    const flaky = new FlakyStore().failNext(...Array.from({ length: 6 }, () => nodeError('EPIPE')));
    const { store, waits } = makeRetrying(flaky, {
      attempts: 7,
      baseDelayMs: 200,
      maxDelayMs: 1_000,
      random: () => 0.5,
    });

    await store.delete('k');

    expect(waits).toEqual([100, 200, 400, 500, 500, 500]);
    expect(flaky.calls.delete).toBe(7);
  });

  it('draws each wait between zero and the exponential ceiling', async () => {
    for (const random of [0, 0.25, 0.999]) {
      const flaky = new FlakyStore().failNext(
        ...Array.from({ length: 4 }, () => nodeError('EBUSY')),
      );
      const { store, waits } = makeRetrying(flaky, { random: () => random });

      await store.exists('k');

      expect(waits).toEqual([200, 400, 800, 1600].map((ceiling) => Math.round(ceiling * random)));
    }
  });

  it.each([
    ['ObjectNotFound', new ObjectNotFound('k')],
    ['RangeNotSatisfiable', new RangeNotSatisfiable('k', { offset: 9, length: 1 })],
    ['an invalid key', new InvalidKey('../k', 'it has a ".." segment')],
    ['AccessDenied (403)', s3Error('AccessDenied', 403)],
    ['NoSuchBucket (404)', s3Error('NoSuchBucket', 404)],
    ['a plain bug', new TypeError('undefined is not a function')],
  ])('never retries %s', async (_label, error) => {
    const flaky = new FlakyStore().failNext(error);
    const { store, waits } = makeRetrying(flaky);

    await expect(store.get('k')).rejects.toBe(error);

    expect(flaky.calls.get).toBe(1);
    expect(waits).toEqual([]);
  });

  it('does not retry a put whose body is a stream: it cannot be replayed', async () => {
    const error = nodeError('ECONNRESET');
    const flaky = new FlakyStore().failNext(error);
    const { store } = makeRetrying(flaky);

    await expect(store.put('k', Readable.from([Buffer.from('x')]))).rejects.toBe(error);

    expect(flaky.calls.put).toBe(1);
    expect(await flaky.inner.exists('k')).toBe(false);
  });

  it('accepts the object an attempt whose answer was lost stored, when it is this body', async () => {
    const flaky = new FlakyStore();
    flaky.loseAnswerOfNextPut = nodeError('ECONNRESET');
    const { store } = makeRetrying(flaky);

    await store.put('k', Buffer.from('body'));

    expect(flaky.calls.put).toBe(2);
    expect((await getBuffer(flaky.inner, 'k')).toString()).toBe('body');
  });

  it('refuses a put of a taken key with ObjectExists at once, and after a lost answer when the stored object differs', async () => {
    const flaky = new FlakyStore();
    await flaky.inner.put('taken', Buffer.from('theirs'));
    const { store } = makeRetrying(flaky);

    await expect(store.put('taken', Buffer.from('mine'))).rejects.toBeInstanceOf(ObjectExists);
    expect(flaky.calls.put).toBe(1);

    // Someone else's put landed between our lost answer and our retry: theirs stays.
    flaky.failNext(nodeError('ECONNRESET'));
    await flaky.inner.put('raced', Buffer.from('theirs'));
    await expect(store.put('raced', Buffer.from('mine'))).rejects.toBeInstanceOf(ObjectExists);
    expect((await getBuffer(flaky.inner, 'raced')).toString()).toBe('theirs');
  });

  it('restarts a failed listing without yielding a key twice', async () => {
    const flaky = new FlakyStore();
    for (const key of ['l/1', 'l/2', 'l/3', 'l/4']) await flaky.inner.put(key, Buffer.from(key));
    flaky.listFailsAfter = 2;
    flaky.failNext(nodeError('ETIMEDOUT'));
    const { store } = makeRetrying(flaky);

    const keys: string[] = [];
    for await (const { key } of store.list('l/')) keys.push(key);

    expect(keys.sort()).toEqual(['l/1', 'l/2', 'l/3', 'l/4']);
    expect(flaky.calls.list).toBe(2);
  });

  it('tells onRetry about each failed attempt it retries', async () => {
    const error = s3Error('SlowDown', 503);
    const flaky = new FlakyStore().failNext(error);
    const events: unknown[] = [];
    const { store } = makeRetrying(flaky, { onRetry: (event) => events.push(event) });

    await store.exists('k');

    expect(events).toEqual([{ operation: 'exists', key: 'k', attempt: 1, delayMs: 100, error }]);
  });
});

describe('isTransient', () => {
  it.each([
    ['an SDK error marked $retryable', s3Error('Whatever', 400, { $retryable: {} })],
    ['a 500', s3Error('InternalError', 500)],
    ['a 503 SlowDown', s3Error('SlowDown', 503)],
    ['a 429', s3Error('TooManyRequests', 429)],
    ['S3 RequestTimeout (a 400)', s3Error('RequestTimeout', 400)],
    ['ThrottlingException', s3Error('ThrottlingException', 400)],
    ['an SDK socket TimeoutError', Object.assign(new Error('timed out'), { name: 'TimeoutError' })],
    ...['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAGAIN', 'EBUSY'].map(
      (code) => [code, nodeError(code)] as [string, unknown],
    ),
    ['a transient cause', new Error('wrapped', { cause: nodeError('ECONNRESET') })],
    ['an AggregateError of connect failures', new AggregateError([nodeError('ECONNREFUSED')])],
  ])('calls %s transient', (_label, error) => {
    expect(isTransient(error)).toBe(true);
  });

  it.each([
    ['ObjectNotFound', new ObjectNotFound('k')],
    ['RangeNotSatisfiable', new RangeNotSatisfiable('k', { offset: 0, length: 1 })],
    ['a 403', s3Error('AccessDenied', 403)],
    ['a 404', s3Error('NoSuchKey', 404)],
    ['a 400', s3Error('InvalidArgument', 400)],
    ['ENOENT', nodeError('ENOENT')],
    ['ENOSPC', nodeError('ENOSPC')],
    ['an abort', Object.assign(new Error('aborted'), { name: 'AbortError', code: 'ECONNRESET' })],
    ['a plain Error', new Error('bug')],
    ['not an error', 'ECONNRESET'],
    ['undefined', undefined],
  ])('calls %s permanent', (_label, error) => {
    expect(isTransient(error)).toBe(false);
  });
});

describeObjectStoreContract('MemoryStore behind withRetry', async () => ({
  store: withRetry(new MemoryStore()),
  cleanup: async () => undefined,
}));
