/**
 * The one module that knows the bucket's key layout. Nothing else builds keys.
 *
 *   points/<recoveryPointId>/manifest.json      written last: its presence means "all streams stored"
 *   points/<recoveryPointId>/streams/<nnnn>     stream bytes, in the order the driver wrote them
 */
const POINTS = 'points/';

export function pointPrefix(recoveryPointId: string): string {
  return `${POINTS}${recoveryPointId}/`;
}

export function manifestKey(recoveryPointId: string): string {
  return `${pointPrefix(recoveryPointId)}manifest.json`;
}

export function streamKey(recoveryPointId: string, index: number): string {
  return `${pointPrefix(recoveryPointId)}streams/${String(index).padStart(4, '0')}`;
}
