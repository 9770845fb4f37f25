import { ulid } from 'ulid';

/** Sortable, URL-safe ids: `job-01J...`, `rp-01J...` (lower case reads better in a terminal). */
export function newId(prefix: string): string {
  return `${prefix}-${ulid().toLowerCase()}`;
}

export const systemClock = { now: () => new Date().toISOString() };
