import { describe, expect, it } from 'vitest';
import { checkPointStored, type PointObjects } from '../../../../functions/core/commit-check';
import { IntegrityError } from '../../../../kernel/errors';
import { indexKey, manifestKey, packListKey } from '../../../../kernel/object-layout';

const RP = 'rp-01abc';
const LIST = packListKey(RP, 'f00d');

/** A store of the given keys and texts; indexed packs are read from the index/ keys. */
function makeObjects(objects: Record<string, string>): PointObjects {
  return {
    exists: async (key) => key in objects,
    read: async (key) => objects[key],
    indexedPacks: async () =>
      new Set(
        Object.keys(objects)
          .filter((k) => k.startsWith('index/'))
          .map((k) => k.slice('index/'.length)),
      ),
  };
}

const result = { manifestKey: manifestKey(RP), packListKey: LIST };
const stored = (packs: string[], indexed: string[]) =>
  makeObjects({
    [manifestKey(RP)]: 'sealed',
    [LIST]: packs.join('\n'),
    ...Object.fromEntries(indexed.map((p) => [indexKey(p), 'sealed'])),
  });

describe('checkPointStored', () => {
  it('passes a point whose every pack has its index', async () => {
    await expect(
      checkPointStored(stored(['aa01', 'bb02'], ['aa01', 'bb02', 'cc03']), RP, result),
    ).resolves.toEqual({ packs: 2 });
  });

  it('passes a point of no packs (an empty stream)', async () => {
    await expect(checkPointStored(stored([], []), RP, result)).resolves.toEqual({ packs: 0 });
  });

  it('refuses a point one of whose packs has no index, naming it', async () => {
    const check = checkPointStored(stored(['aa01', 'bb02'], ['aa01']), RP, result);

    await expect(check).rejects.toBeInstanceOf(IntegrityError);
    await expect(check).rejects.toThrow(/1 of its 2 packs have no index.*bb02/);
  });

  it.each([
    ['another point', { manifestKey: manifestKey('rp-other'), packListKey: LIST }],
    ['no pack list', { manifestKey: manifestKey(RP) }],
    ['a pack list of another point', { ...result, packListKey: packListKey('rp-other', 'f00d') }],
    ['a key outside the point', { ...result, packListKey: 'index/aa01' }],
  ])('refuses a result that reports %s', async (_what, reported) => {
    await expect(checkPointStored(stored(['aa01'], ['aa01']), RP, reported)).rejects.toBeInstanceOf(
      IntegrityError,
    );
  });

  it('refuses when the manifest or the pack list is not stored, or the list names junk', async () => {
    await expect(checkPointStored(makeObjects({ [LIST]: 'aa01' }), RP, result)).rejects.toThrow(
      /manifest .* is not in the repository/,
    );
    await expect(
      checkPointStored(makeObjects({ [manifestKey(RP)]: 's' }), RP, result),
    ).rejects.toThrow(/pack list .* is not in the repository/);
    await expect(checkPointStored(stored(['../etc'], []), RP, result)).rejects.toThrow(
      /not a pack/,
    );
  });
});
