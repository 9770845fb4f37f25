/**
 * The object store port the agent writes recovery points to. Keys come from
 * functions/core/object-layout.ts; adapters only move bytes.
 *
 * Contract: `put` consumes the stream to its end and resolves once the object is durable;
 * an object is visible whole or not at all. `get` of a missing key rejects with
 * ObjectNotFound. `deletePrefix` is idempotent.
 */
import type { Readable } from 'node:stream';

export class ObjectNotFound extends Error {
  override readonly name = 'ObjectNotFound';
  constructor(readonly key: string) {
    super(`object ${key} is not in the store`);
  }
}

export interface ObjectStore {
  put(key: string, body: Readable | Buffer): Promise<void>;
  get(key: string): Promise<Readable>;
  exists(key: string): Promise<boolean>;
  deletePrefix(prefix: string): Promise<void>;
}
