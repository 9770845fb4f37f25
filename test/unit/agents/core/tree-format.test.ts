/**
 * An index read back (format.ts readEntries) is the entries written, whatever the pieces its
 * bytes come in: multi-byte names cut between two pieces, or between the slices a large piece is
 * decoded in, come back whole.
 */
import { describe, expect, it } from 'vitest';
import { readEntries, type TreeEntry } from '../../../../agents/core/tree/format';

function entries(count: number): TreeEntry[] {
  return Array.from({ length: count }, (_, i) => ({
    path: `dïr-${i % 7}/fïlé-ü-${'€'.repeat(i % 13)}-${i}`,
    type: 'file' as const,
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: `${1_700_000_000_000_000_000 + i}`,
    ctime: `${1_700_000_000_000_000_000 + i}`,
    ino: i,
    size: i,
  }));
}

async function read(pieces: Buffer[]): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  async function* source() {
    for (const piece of pieces) yield piece;
  }
  for await (const entry of readEntries(source())) out.push(entry);
  return out;
}

describe('tree index lines', () => {
  it('reads back every entry from one large piece and from pieces cut anywhere', async () => {
    const want = entries(3000);
    const bytes = Buffer.from(want.map((e) => `${JSON.stringify(e)}\n`).join(''));
    expect(bytes.length).toBeGreaterThan(200_000);
    expect(await read([bytes])).toEqual(want);
    for (const size of [1, 7, 4095, 16_383, 16_385, 65_537]) {
      const pieces: Buffer[] = [];
      for (let at = 0; at < bytes.length; at += size) pieces.push(bytes.subarray(at, at + size));
      expect(await read(pieces)).toEqual(want);
    }
  });
});
