/**
 * A Bloom filter of chunk ids the writer knows (stored in the index, or pending in a pack), kept
 * in a SharedArrayBuffer that the codec workers read. It lets a worker seal a chunk in the same
 * task that hashes it when the id is certainly new, and return only the hash otherwise: one round
 * trip per chunk in the common cases (a full backup: all new; an incremental one: almost all
 * known).
 *
 * It only ever saves work, it never decides: the writer still checks every id against the exact
 * index and its pending set, seals on a false positive and drops a sealed blob it already has (an
 * id the filter had not seen yet, or two workers racing on the same new chunk). Reads and writes
 * race freely across threads; a stale read costs one needless seal, nothing else.
 *
 * The bit positions are the first HASHES 32-bit big-endian words of the id, which is a SHA-256
 * digest and so already uniformly distributed. At BITS_PER_ID bits an id the false-positive rate
 * is ~0.24 %; past that load the filter is rebuilt twice as large.
 */
const HASHES = 4;
const BITS_PER_ID = 16;
/** 8 Mbit (1 MiB): half a million ids before the first rebuild. */
const MIN_BITS = 1 << 23;

/** Whether the id whose digest is `digest` may be in the filter whose bits are `words`. */
export function mightContain(words: Int32Array, digest: Uint8Array): boolean {
  const mask = words.length * 32 - 1;
  for (let k = 0; k < HASHES; k++) {
    const o = k * 4;
    const bit =
      ((digest[o]! << 24) | (digest[o + 1]! << 16) | (digest[o + 2]! << 8) | digest[o + 3]!) & mask;
    if ((words[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
  }
  return true;
}

export class KnownIds {
  private words: Int32Array;
  private count = 0;

  /** `ids` is called again, with the current ids, whenever the filter is rebuilt larger. */
  constructor(private readonly ids: () => Iterable<string>) {
    this.words = new Int32Array(0);
    this.rebuild(0);
  }

  /** The filter's current bits, to hand to a worker with each task (shared, not copied). */
  get shared(): Int32Array {
    return this.words;
  }

  add(id: string): void {
    if (this.count >= (this.words.length * 32) / BITS_PER_ID) {
      this.rebuild(this.count + 1);
    }
    this.set(id);
  }

  private set(id: string): void {
    const mask = this.words.length * 32 - 1;
    for (let k = 0; k < HASHES; k++) {
      const bit = parseInt(id.slice(k * 8, k * 8 + 8), 16) & mask;
      this.words[bit >>> 5]! |= 1 << (bit & 31);
    }
    this.count++;
  }

  private rebuild(atLeast: number): void {
    const all = [...this.ids()];
    let bits = MIN_BITS;
    while (bits < Math.max(atLeast, all.length) * 2 * BITS_PER_ID && bits < 2 ** 31) bits *= 2;
    this.words = new Int32Array(new SharedArrayBuffer(bits / 8));
    this.count = 0;
    for (const id of all) this.set(id);
  }
}
