/**
 * The one module that knows the store's key layout. Nothing else builds keys.
 *
 *   config                           the repository's sealed config (id, chunking, created)
 *   keys/data-key.kms                the data key encrypted by KMS (AWS only)
 *   keys/data-key-copy.kms           the same ciphertext again: either copy unwraps the key
 *   data/<pp>/<packId>               packs: sealed chunk blobs back to back
 *   index/<packId>                   a pack's sealed index: chunk id → offset, length
 *   points/<recoveryPointId>/packs/<n>  written just before the manifest, in plain text: the ids
 *                                    of the packs holding the point's chunks (random names any
 *                                    listing shows), which commit-point checks against index/
 *   points/<recoveryPointId>/manifest   written last: its presence means "all chunks stored"
 *   leases/<leaseId>/<ms>            a running task's lease, renewed by a new object (put only
 *                                    creates) whose name is the renewal time in epoch ms
 *   leases/<leaseId>/end             the task has ended: its lease protects nothing any more
 *   gc/<markId>                      a sealed garbage-collection mark: the packs a prune found
 *                                    unreferenced, which writers must not rely on until the sweep
 *
 * Packs are spread over 256 two-hex-digit folders so a directory store never holds a million
 * files in one directory.
 */
export const CONFIG_KEY = 'config';
export const KMS_DATA_KEY = 'keys/data-key.kms';
/** A second copy of the wrapped data key, so losing or damaging one object loses nothing. */
export const KMS_DATA_KEY_COPY = 'keys/data-key-copy.kms';
export const PACKS_PREFIX = 'data/';
export const INDEX_PREFIX = 'index/';
export const POINTS_PREFIX = 'points/';
const POINTS = POINTS_PREFIX;
export const LEASES_PREFIX = 'leases/';
export const GC_PREFIX = 'gc/';
const MANIFEST = 'manifest';

export function packKey(packId: string): string {
  return `${PACKS_PREFIX}${packId.slice(0, 2)}/${packId}`;
}

export function indexKey(packId: string): string {
  return `${INDEX_PREFIX}${packId}`;
}

export function packIdOfIndexKey(key: string): string {
  return key.slice(INDEX_PREFIX.length);
}

export function pointPrefix(recoveryPointId: string): string {
  return `${POINTS}${recoveryPointId}/`;
}

/** One backup attempt's pack list (`attempt`: random, since a retry writes its own). */
export function packListKey(recoveryPointId: string, attempt: string): string {
  return `${pointPrefix(recoveryPointId)}packs/${attempt}`;
}

/** Whether `key` is a pack list of `recoveryPointId`. */
export function isPackListKey(recoveryPointId: string, key: string): boolean {
  const prefix = `${pointPrefix(recoveryPointId)}packs/`;
  return key.startsWith(prefix) && /^[a-z0-9]{1,64}$/.test(key.slice(prefix.length));
}

export function manifestKey(recoveryPointId: string): string {
  return `${pointPrefix(recoveryPointId)}${MANIFEST}`;
}

/** The point whose manifest is stored under `key`, or undefined for any other key. */
export function pointIdOfManifestKey(key: string): string | undefined {
  if (!key.startsWith(POINTS) || !key.endsWith(`/${MANIFEST}`)) return undefined;
  const id = key.slice(POINTS.length, -MANIFEST.length - 1);
  return id && !id.includes('/') ? id : undefined;
}

/** The pack stored under `key` (`data/<pp>/<packId>`), or undefined for any other key. */
export function packIdOfPackKey(key: string): string | undefined {
  const m = /^data\/([0-9a-f]{2})\/([0-9a-f]+)$/.exec(key);
  return m && m[2]!.startsWith(m[1]!) ? m[2] : undefined;
}

/** One renewal of a lease: written at `atMs` (epoch milliseconds). */
export function leaseKey(leaseId: string, atMs: number): string {
  return `${LEASES_PREFIX}${leaseId}/${String(atMs).padStart(15, '0')}`;
}

export function leaseEndKey(leaseId: string): string {
  return `${LEASES_PREFIX}${leaseId}/end`;
}

/** A lease key's lease and renewal time (ms), or `end`; undefined for any other key. */
export function parseLeaseKey(key: string): { leaseId: string; at: number | 'end' } | undefined {
  const m = /^leases\/([A-Za-z0-9_-]{1,200})\/(end|\d{15})$/.exec(key);
  if (!m) return undefined;
  return { leaseId: m[1]!, at: m[2] === 'end' ? 'end' : Number(m[2]) };
}

export function gcMarkKey(markId: string): string {
  return `${GC_PREFIX}${markId}`;
}
