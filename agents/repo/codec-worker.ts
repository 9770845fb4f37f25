/**
 * The work the data path spreads over worker threads: hashing chunks, sealing new ones and
 * opening stored ones. Buffers travel by transfer, never by copy. The data key arrives once,
 * as workerData, not with each task.
 */
import { move, transferableSymbol, valueSymbol, workerData } from 'piscina';
import { idBytes, openBlob, sealBlob, sha256Hex } from './codec';
import { IntegrityError } from '../../functions/shared/errors';

const { key, level } = workerData as { key: Uint8Array; level: number };
const dataKey = Buffer.from(key);

/** Wraps a result whose buffers are to be transferred back rather than cloned. */
function moving<T extends object>(value: T, buffers: ArrayBufferLike[]) {
  return move({
    get [transferableSymbol]() {
      return buffers;
    },
    get [valueSymbol]() {
      return value;
    },
  } as never);
}

export function hash({ data }: { data: Uint8Array }) {
  return moving({ id: sha256Hex(data), data }, [data.buffer]);
}

export function seal({ id, data }: { id: string; data: Uint8Array }) {
  const sealed = sealBlob(data, dataKey, idBytes(id), level);
  return moving({ sealed }, [sealed.buffer]);
}

/**
 * Opens the blobs of one fetched pack range, checks each plain chunk's SHA-256 against its id,
 * and returns the plain chunks in order (or the index of the first bad one).
 */
export function openRange({
  data,
  blobs,
}: {
  data: Uint8Array;
  blobs: Array<{ id: string; offset: number; length: number }>;
}) {
  const plain: Uint8Array[] = [];
  for (let i = 0; i < blobs.length; i++) {
    const blob = blobs[i]!;
    let chunk: Buffer;
    try {
      chunk = openBlob(
        data.subarray(blob.offset, blob.offset + blob.length),
        dataKey,
        idBytes(blob.id),
      );
    } catch (err) {
      return { bad: i, reason: (err as Error).message };
    }
    if (sha256Hex(chunk) !== blob.id) {
      return {
        bad: i,
        reason: new IntegrityError('content does not match its SHA-256 id').message,
      };
    }
    // Own ArrayBuffer per chunk, so it can be transferred.
    plain.push(
      chunk.byteOffset === 0 && chunk.buffer.byteLength === chunk.length
        ? chunk
        : Buffer.from(chunk),
    );
  }
  return moving(
    { plain },
    plain.map((p) => p.buffer),
  );
}
