/**
 * The object store port the agent keeps its repository in: S3 (AWS and local mode's S3 server)
 * or a directory (a NAS or disk target, and the benchmark's). Keys come from
 * functions/core/object-layout.ts; adapters only move bytes. One conformance suite
 * (test/contract/store-suite.ts) holds every adapter to this contract:
 *
 * - `put` consumes the body to its end and resolves once the object is durable; an object is
 *   visible whole or not at all (a body that errors stores nothing), and a second put of the same
 *   key replaces it whole.
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
