/**
 * The in-memory store the domain tests use passes the same ObjectStore contract as the real
 * adapters, so a domain test cannot lean on behaviour S3 or a directory would not have.
 */
import { describe, expect, it } from 'vitest';
import { getBuffer } from '../../../../agents/store/store';
import { MemoryStore } from '../../../fixtures/memory-store';
import { describeObjectStoreContract } from '../../../contract/store-suite';

describeObjectStoreContract('MemoryStore', async () => ({
  store: new MemoryStore(),
  cleanup: async () => undefined,
}));

describe('MemoryStore test helpers', () => {
  it('hands a stored object back in chunkSize pieces', async () => {
    const store = new MemoryStore(4);
    await store.put('k', Buffer.from('0123456789'));

    const chunks: string[] = [];
    for await (const chunk of await store.get('k')) chunks.push(String(chunk));

    expect(chunks).toEqual(['0123', '4567', '89']);
  });

  it('shows and replaces stored bytes behind the writer', async () => {
    const store = new MemoryStore();
    await store.put('b', Buffer.from('bee'));
    await store.put('a', Buffer.from('ay'));

    store.replace('a', Buffer.from('tampered'));

    expect(store.keys()).toEqual(['a', 'b']);
    expect(store.raw('a')?.toString()).toBe('tampered');
    expect((await getBuffer(store, 'a', { offset: 2, length: 3 })).toString()).toBe('mpe');
    expect(() => store.replace('missing', Buffer.alloc(1))).toThrow('not in the store');
  });
});
