/**
 * Garbage-collection marks (`gc/<markId>`, sealed with the data key): what a prune's mark phase
 * found unreferenced, read by every writer when it refreshes the repository, so that a writer
 * that starts after a mark never relies on a pack the sweep may delete (gc.ts has the protocol).
 * A mark that cannot be opened is skipped and reported: a forged or damaged object must not
 * block backups, and ignoring it only makes writers rely on more packs, which the sweep's
 * re-check of references and leases protects.
 */
import { GC_PREFIX } from '../../kernel/object-layout';
import type { ObjectStore } from '../store/store';
import { getBuffer, ObjectNotFound } from '../store/store';
import { openJson } from './codec';
import type { BadIndexReport } from './repository-index';

export const MARK_PURPOSE = 'gc-mark';

export interface GcMark {
  version: 1;
  markId: string;
  markedAt: string;
  /**
   * Packs the sweep deletes if they are still garbage then: those whose chunks no manifest
   * referenced when the mark was made, and those repacked (`repacked`).
   */
  candidates: string[];
  /** The candidates that were repacked: their referenced chunks were copied into new packs first. */
  repacked?: string[];
  /** The job (prune) that made the mark. */
  jobId: string;
}

export async function loadMarks(
  store: ObjectStore,
  key: Buffer,
  onBad?: BadIndexReport,
): Promise<GcMark[]> {
  const marks: GcMark[] = [];
  for await (const info of store.list(GC_PREFIX)) {
    let sealed: Buffer;
    try {
      sealed = await getBuffer(store, info.key);
    } catch (err) {
      if (err instanceof ObjectNotFound) continue; // swept since the listing
      throw err;
    }
    try {
      const mark = openJson<GcMark>(sealed, key, MARK_PURPOSE);
      if (mark?.version !== 1 || !Array.isArray(mark.candidates)) throw new Error('not a mark');
      marks.push(mark);
    } catch (err) {
      onBad?.(
        info.key,
        `not a garbage-collection mark of this repository: ${(err as Error).message}`,
      );
    }
  }
  return marks;
}
