/**
 * A young-generation collection every so many bytes, for a thread that takes a stream of
 * short-lived Buffers from sockets (an HTTP body arrives as 64 KiB Buffers, two of them for each
 * piece: the socket's read and the HTTP parser's copy).
 *
 * Why: V8 frees a dead Buffer's memory only when it collects the generation the Buffer lives in,
 * and lets tens of MiB of young Buffers pile up before it collects the young generation for them;
 * meanwhile, on a small heap (the agent's is ~15 MB), it starts full (mark-compact) collections
 * back to back: ~37 per GiB of a datastore read, ~25 a second, each marking on every helper
 * thread (perf of bench/vsphere.ts). A young collection every 8 MiB (0.1-0.5 ms each: little of
 * the young generation is alive) frees the Buffers before that: ~9 full collections per GiB
 * read, and 2.3-2.4 -> 1.45-1.75 CPU-s per GiB (A/B, load 5). During a VM backup V8 still runs ~10
 * a second. codec-worker.ts does the same for its cipher output.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Collect = (options: { type: 'minor' }) => void;

let collect: Collect | undefined | null;

/** V8's `gc` for this thread (exposed by the flag to contexts made after it is set). */
function collector(): Collect | undefined {
  if (collect === undefined) {
    try {
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

  constructor(private readonly everyBytes = 8 * 1024 * 1024) {}

  /** Counts `n` bytes taken from sockets; collects the young generation every `everyBytes`. */
  taken(n: number): void {
    this.since += n;
    if (this.since < this.everyBytes) return;
    this.since = 0;
    collector()?.({ type: 'minor' });
  }
}
