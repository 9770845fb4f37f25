/**
 * A tree stream's restore (agents/core/tree/restore.ts, what Docker volumes and path: trees read
 * on the host are restored with) against hostile index entries: nothing is created outside the
 * root, whatever the index says.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DriverContext } from '../../../../agents/core/driver';
import type { TreeEntry } from '../../../../agents/core/tree/format';
import { restoreTreeInto, type TreeSource } from '../../../../agents/core/tree/restore';
import { silentLogger } from '../../../../kernel/logger';
import { VICTIM, VICTIM_CONTENT, escapesInto } from '../../../fixtures/hostile-tar';

let scratch: string;
let outside: string;
let root: string;

beforeEach(() => {
  scratch = mkdtempSync(join(tmpdir(), 'stowage-hostile-tree-'));
  outside = join(scratch, 'outside');
  root = join(scratch, 'target', 'root');
  mkdirSync(outside);
  mkdirSync(root, { recursive: true });
  writeFileSync(join(outside, VICTIM), VICTIM_CONTENT);
});

afterEach(() => rmSync(scratch, { recursive: true, force: true }));

const ctx: DriverContext = {
  log: silentLogger,
  signal: new AbortController().signal,
  phase: () => undefined,
};

const base = { mode: 0o644, uid: 0, gid: 0, mtime: '0', ctime: '0', ino: 1 };
const dir = (path: string): TreeEntry => ({ ...base, path, type: 'dir', mode: 0o755 });
const file = (path: string): TreeEntry => ({ ...base, path, type: 'file', size: 0 });

function source(entries: TreeEntry[]): TreeSource {
  return {
    async *entries() {
      yield* entries;
    },
    forEachChunk: async () => undefined,
  };
}

/** Each index tries one way out; `outside` is filled in per test. */
const hostile = (out: string): Array<[string, TreeEntry[]]> => [
  ['`..` in a path', [dir(''), file('../escape-dotdot')]],
  ['`..` after a directory', [dir(''), dir('a'), file('a/../../escape-deep')]],
  ['an absolute path', [dir(''), file(`${out}/escape-absolute`)]],
  [
    'a symlink out of the tree, then a file through it',
    [dir(''), { ...base, path: 'out', type: 'symlink', link: out }, file('out/escape-through')],
  ],
  [
    'a hard link to an absolute outside file',
    [dir(''), { ...base, path: 'hl', type: 'hardlink', link: join(out, VICTIM) }],
  ],
  [
    'a hard link up to an outside file',
    [dir(''), { ...base, path: 'hl', type: 'hardlink', link: `../../outside/${VICTIM}` }],
  ],
  ['a directory entry that is not below the one before', [dir(''), dir('a'), file('b/c')]],
];

describe('tree stream restore of a hostile index', () => {
  it.each(hostile('/OUTSIDE').map(([name]) => name))(
    'writes nothing outside the root: %s',
    async (name) => {
      const entries = hostile(outside).find(([n]) => n === name)![1];

      const result = await restoreTreeInto(source(entries), root, ctx).then(
        () => undefined,
        (err: unknown) => err,
      );

      expect(escapesInto(outside)).toEqual([]);
      expect(readdirSync(join(scratch, 'target'))).toEqual(['root']);
      expect(result).toBeInstanceOf(Error);
    },
  );
});
