/**
 * The one module that knows the store's key layout. Nothing else builds keys.
 *
 *   config                           the repository's sealed config (id, chunking, created)
 *   keys/data-key.kms                the data key encrypted by KMS (AWS only)
 *   keys/data-key-copy.kms           the same ciphertext again: either copy unwraps the key
 *   data/<pp>/<packId>               packs: sealed chunk blobs back to back
 *   index/<packId>                   a pack's sealed index: chunk id → offset, length
 *   points/<recoveryPointId>/manifest   written last: its presence means "all chunks stored"
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
const POINTS = 'points/';

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

export function manifestKey(recoveryPointId: string): string {
  return `${pointPrefix(recoveryPointId)}manifest`;
}
