/**
 * The path driver's own extraction against hostile tree streams: nothing is written outside the
 * extraction root, and device nodes of a foreign archive are not created.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DriverContext } from '../../../../agents/core/driver';
import { extractTree } from '../../../../agents/drivers/path/extract';
import { silentLogger } from '../../../../kernel/logger';
import {
  VICTIM,
  VICTIM_CONTENT,
  escapesInto,
  hostileArchives,
  tarOf,
} from '../../../fixtures/hostile-tar';

let scratch: string;
let outside: string;
let root: string;

beforeEach(() => {
  scratch = mkdtempSync(join(tmpdir(), 'stowage-hostile-path-'));
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

describe('path driver extraction of a hostile tree stream', () => {
  it.each(hostileArchives('/OUTSIDE', ''))(
    'writes nothing outside the target: $name',
    async (a) => {
      const archive = hostileArchives(outside, '').find((h) => h.name === a.name)!;
      const data = Readable.from([await tarOf(archive.entries)]);

      const result = await extractTree(root, data, ctx, 'restore of a hostile tree').then(
        (r) => r,
        (err: unknown) => err,
      );

      expect(escapesInto(outside)).toEqual([]);
      expect(readdirSync(join(scratch, 'target'))).toEqual(['root']);
      if (archive.devices) {
        expect(result).toEqual({ entries: 0, skipped: 2 });
        expect(readdirSync(root)).toEqual([]);
      } else {
        expect(result).toBeInstanceOf(Error);
        expect((result as Error).name).toBe('DriverError');
      }
    },
  );
});
