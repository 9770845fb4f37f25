/**
 * What commit-point checks before a recovery point becomes COMPLETED: the manifest the agent
 * reports is the point's and is stored, and every pack holding the point's chunks (the pack list
 * the agent stored beside the manifest, kernel/object-layout.ts packListKey) still has its index
 * in the store. Garbage collection deletes a pack's index before the pack, so an index that is
 * there means its chunks are there; a point whose chunks are not all indexed (a sweep that ran
 * after the agent's own commit check, a crashed upload, a buggy or lying agent's list) fails
 * with IntegrityError instead of becoming a point no restore can read. commit-point cannot open
 * sealed objects (no Lambda holds the data key): the list of pack ids, which are random names,
 * is the one plain-text record of which packs a point uses.
 */
import { IntegrityError } from '../../kernel/errors';
import { isPackListKey, manifestKey } from '../../kernel/object-layout';

/** The store as commit-point sees it: no keys, nothing sealed opened. */
export interface PointObjects {
  exists(key: string): Promise<boolean>;
  /** The object's text, or undefined when there is none. */
  read(key: string): Promise<string | undefined>;
  /** The ids of every pack whose index is stored. */
  indexedPacks(): Promise<Set<string>>;
}

const PACK_ID = /^[0-9a-f]{2,128}$/;
/** How many missing packs an error names (the rest are counted). */
const NAMED = 5;

export async function checkPointStored(
  objects: PointObjects,
  recoveryPointId: string,
  result: { manifestKey: string; packListKey?: string },
): Promise<{ packs: number }> {
  const expected = manifestKey(recoveryPointId);
  if (result.manifestKey !== expected) {
    throw new IntegrityError(
      `the agent reported manifest ${result.manifestKey} for recovery point ${recoveryPointId}, expected ${expected}`,
    );
  }
  if (!(await objects.exists(expected))) {
    throw new IntegrityError(
      `the agent reported recovery point ${recoveryPointId} complete, but its manifest ${expected} is not in the repository`,
    );
  }
  const listKey = result.packListKey;
  if (listKey === undefined || !isPackListKey(recoveryPointId, listKey)) {
    throw new IntegrityError(
      `the agent reported recovery point ${recoveryPointId} without the list of its packs (got ${JSON.stringify(listKey)}): an agent older than the control plane? Upgrade it and back up again`,
    );
  }
  const text = await objects.read(listKey);
  if (text === undefined) {
    throw new IntegrityError(
      `the pack list ${listKey} of recovery point ${recoveryPointId} is not in the repository`,
    );
  }
  const packs = text.split('\n').filter((line) => line !== '');
  const bad = packs.find((p) => !PACK_ID.test(p));
  if (bad !== undefined) {
    throw new IntegrityError(`the pack list ${listKey} names ${JSON.stringify(bad)}, not a pack`);
  }
  if (packs.length === 0) return { packs: 0 };
  const indexed = await objects.indexedPacks();
  const missing = packs.filter((p) => !indexed.has(p));
  if (missing.length > 0) {
    const named = missing.slice(0, NAMED).join(', ');
    const more = missing.length > NAMED ? ` and ${missing.length - NAMED} more` : '';
    throw new IntegrityError(
      `recovery point ${recoveryPointId} is not committed: ${missing.length} of its ${packs.length} packs have no index in the repository (${named}${more}); garbage collection may have removed them after the backup checked, or they were never stored: back up again`,
    );
  }
  return { packs: packs.length };
}
