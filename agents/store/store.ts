/**
 * The object store port the agent keeps its repository in: S3 (AWS and local mode's S3 server)
 * or a directory (a NAS or disk target, and the benchmark's). Keys come from
 * kernel/object-layout.ts; adapters only move bytes. One conformance suite
 * (test/contract/store-suite.ts) holds every adapter to this contract:
 *
 * - `put` consumes the body to its end and resolves once the object is durable; an object is
 *   visible whole or not at all (a body that errors stores nothing).
 * - `put` only creates: every key of the layout (kernel/object-layout.ts) is written once (packs
 *   and indexes under random pack ids, manifests under their point's id, the config and the
 *   wrapped data key once per repository). A put of a key that exists rejects with ObjectExists
 *   and leaves the stored object as it was, so nothing that holds the store's credentials can
 *   replace what a backup wrote (S3: `If-None-Match: *`; a directory: link(2), which never
 *   replaces). Of two puts of one key at once, one stores its object and the other rejects.
 * - `get` of a missing key rejects with ObjectNotFound; with `range` it yields exactly
 *   `range.length` bytes from `range.offset` (a range past the end rejects with RangeNotSatisfiable).
 * - `list` yields every key under a prefix with its size, in no promised order.
 * - `delete` and `deletePrefix` are idempotent: deleting what is not there is not an error.
 */
import type { Readable } from 'node:stream';

export class ObjectNotFound extends Error {
  override readonly name = 'ObjectNotFound';
  constructor(readonly key: string) {
    super(`object ${key} is not in the store`);
  }
}

/** A put of a key that is already stored: the store keeps the object it has. */
export class ObjectExists extends Error {
  override readonly name = 'ObjectExists';
  constructor(readonly key: string) {
    super(
      `object ${key} is already in the store, and stored objects are never replaced (every key is written once)`,
    );
  }
}

export class RangeNotSatisfiable extends Error {
  override readonly name = 'RangeNotSatisfiable';
  constructor(
    readonly key: string,
    readonly range: ByteRange,
  ) {
    super(`object ${key} has no bytes ${range.offset}..${range.offset + range.length - 1}`);
  }
}

export interface ByteRange {
  offset: number;
  length: number;
}

export interface ObjectInfo {
  key: string;
  size: number;
}

export interface ObjectStore {
  put(key: string, body: Readable | Buffer): Promise<void>;
  get(key: string, range?: ByteRange): Promise<Readable>;
  /**
   * Optional: reads `range` of the object into `into` (exactly its length), without a stream.
   * Callers use `getInto` below, which falls back on `get`.
   */
  getInto?(key: string, range: ByteRange, into: Uint8Array): Promise<void>;
  exists(key: string): Promise<boolean>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
  delete(key: string): Promise<void>;
  deletePrefix(prefix: string): Promise<void>;
}

/** Whether `range` lies within an object of `size` bytes (a zero-length range at the end does). */
export function rangeFits({ offset, length }: ByteRange, size: number): boolean {
  return (
    Number.isSafeInteger(offset) &&
    Number.isSafeInteger(length) &&
    offset >= 0 &&
    length >= 0 &&
    offset + length <= size
  );
}

/** Reads a whole object (or a range of it) into memory: for small objects and pack ranges. */
export async function getBuffer(
  store: ObjectStore,
  key: string,
  range?: ByteRange,
): Promise<Buffer> {
  const body = await store.get(key, range);
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * Reads a range of an object into `into` (exactly `range.length` bytes), for callers that re-use
 * their buffers; rejects if the object yields more or fewer bytes than that.
 */
export async function getInto(
  store: ObjectStore,
  key: string,
  range: ByteRange,
  into: Uint8Array,
): Promise<void> {
  if (into.length !== range.length)
    throw new RangeError('getInto: buffer and range differ in length');
  if (store.getInto) return store.getInto(key, range, into);
  const body = await store.get(key, range);
  let at = 0;
  for await (const piece of body) {
    const bytes = piece as Buffer;
    if (at + bytes.length > into.length) {
      body.destroy();
      throw new Error(`${key}: the store returned more than the ${range.length} bytes asked for`);
    }
    into.set(bytes, at);
    at += bytes.length;
  }
  if (at !== into.length) {
    throw new Error(`${key}: the store returned ${at} of the ${range.length} bytes asked for`);
  }
}
