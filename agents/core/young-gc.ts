/**
 * How V8 collects garbage in a thread that takes a stream of short-lived Buffers from sockets
 * (an HTTP body arrives as 64 KiB Buffers, two of them for each piece: the socket's read and the
 * HTTP parser's copy), such as the vSphere datastore read.
 *
 * Measured with perf and --trace-gc on bench/vsphere.ts: while those Buffers churn, V8 starts one
 * incremental (concurrent) mark-compact after another on the agent's small heap (~15 MB): ~25 a
 * second, ~37 per GiB of a datastore read and ~100 per GiB of a VM backup, each marking on every
 * V8 helper thread: ~1.3 CPU-s per GiB of a backup, a sixth of its CPU. So, once such a stream
 * starts:
 *
 * - the young generation is collected every 8 MiB taken (0.1-0.5 ms each: little of it is alive),
 *   which frees the Buffers before they pile up (codec-worker.ts does the same for its cipher
 *   output): a read's full collections ~37 -> ~9 per GiB, its CPU 2.3-2.4 -> 1.45-1.75 CPU-s/GiB
 *   (A/B, load 5);
 * - incremental marking is turned off for the process (V8's flag, like --expose-gc in pool.ts, set
 *   once and left so): full collections then run only when the old generation or the external
 *   memory really reaches its limit, as one short atomic pause (~25 ms on this heap; the agent
 *   has no pause-time goal): a VM backup's full collections 120 -> 9 per 2 GiB, its CPU 8.67 ->
 *   7.37 CPU-s/GiB (A/B on a quiet machine).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Collect = (options: { type: 'minor' }) => void;

let collect: Collect | undefined | null;

/** Sets the flags (once) and gives V8's `gc` (exposed to contexts made after the flag is set). */
function collector(): Collect | undefined {
  if (collect === undefined) {
    try {
      setFlagsFromString('--no-incremental-marking');
      setFlagsFromString('--expose-gc');
      collect = runInNewContext('gc') as Collect;
    } catch {
      collect = null;
    }
  }
  return collect ?? undefined;
}

export class YoungCollector {
  private since = 0;

  constructor(private readonly everyBytes = 8 * 1024 * 1024) {
    collector();
  }

  /** Counts `n` bytes taken from sockets; collects the young generation every `everyBytes`. */
  taken(n: number): void {
    this.since += n;
    if (this.since < this.everyBytes) return;
    this.since = 0;
    collector()?.({ type: 'minor' });
  }
}
