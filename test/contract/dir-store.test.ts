/**
 * DirStore passes the ObjectStore contract on a temp directory, and keeps what only a directory
 * can get wrong: file and directory modes, keys that would leave the root, crash leftovers.
 */
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DirStore, InvalidKey } from '../../agents/store/dir-store';
import { getInto } from '../../agents/store/store';
import { describeObjectStoreContract } from './store-suite';

async function makeRoot(): Promise<{ root: string; cleanup: () => Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), 'stowage-dir-store-'));
  return { root, cleanup: () => rm(root, { recursive: true, force: true }) };
}

/** Every file and directory under `dir`, relative, sorted. */
async function tree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.sort();
}

describeObjectStoreContract('DirStore', async () => {
  const { root, cleanup } = await makeRoot();
  return { store: new DirStore(join(root, 'repo')), cleanup };
});

describe('DirStore on disk', () => {
  let parent: string;
  let root: string;
  let store: DirStore;
  let cleanup: () => Promise<void>;

  beforeEach(async () => {
    ({ root: parent, cleanup } = await makeRoot());
    root = join(parent, 'repo');
    store = new DirStore(root);
  });

  afterEach(async () => {
    await cleanup();
  });

  it('creates files 0600 and the directories it makes 0700', async () => {
    await store.put('points/rp-1/streams/0000', Buffer.from('data'));
    await store.put('points/rp-1/manifest.json', Readable.from([Buffer.from('{}')]));

    for (const file of ['points/rp-1/streams/0000', 'points/rp-1/manifest.json'])
      expect((await stat(join(root, file))).mode & 0o777, file).toBe(0o600);
    for (const dir of ['', 'points', 'points/rp-1', 'points/rp-1/streams'])
      expect((await stat(join(root, dir))).mode & 0o777, dir || 'root').toBe(0o700);
  });

  it.each([
    ['a parent segment', '../escape'],
    ['a parent segment inside', 'a/../../escape'],
    ['a dot segment', 'a/./b'],
    ['an absolute path', '/etc/passwd'],
    ['an empty segment', 'a//b'],
    ['a trailing slash', 'a/'],
    ['no name at all', ''],
    ['a NUL byte', 'a\0b'],
    ['a backslash', 'a\\..\\b'],
    ['a temp file name', 'a/.stowage-tmp-0011223344556677'],
  ])('rejects a key with %s and touches nothing', async (_label, key) => {
    await expect(store.put(key, Buffer.from('x'))).rejects.toBeInstanceOf(InvalidKey);
    await expect(store.get(key)).rejects.toBeInstanceOf(InvalidKey);
    await expect(store.exists(key)).rejects.toBeInstanceOf(InvalidKey);
    await expect(store.delete(key)).rejects.toBeInstanceOf(InvalidKey);

    expect(await tree(parent)).toEqual([]);
  });

  it('serves getInto with one read of the file, not through a stream', async () => {
    const data = Buffer.from('0123456789abcdef'.repeat(1024));
    await store.put('packs/one', data);
    store.get = () => Promise.reject(new Error('getInto must not open a stream'));
    const into = new Uint8Array(new SharedArrayBuffer(100), 0, 100);

    await getInto(store, 'packs/one', { offset: 4000, length: 100 }, into);

    expect(Buffer.from(into).equals(data.subarray(4000, 4100))).toBe(true);
  });

  it('stores a pack-sized body (written with O_DIRECT) byte for byte, odd tail included', async () => {
    const body = Buffer.alloc(17 * 1024 * 1024 + 4097);
    for (let i = 0; i + 4 <= body.length; i += 4096) body.writeUInt32LE((i * 2654435761) >>> 0, i);
    body[body.length - 1] = 0x5a;

    await store.put('packs/big', body);

    expect((await readFile(join(root, 'packs/big'))).equals(body)).toBe(true);
    expect((await stat(join(root, 'packs/big'))).mode & 0o777).toBe(0o600);
  });

  it('rejects a list or deletePrefix prefix that would leave the root', async () => {
    await expect(store.list('../')[Symbol.asyncIterator]().next()).rejects.toBeInstanceOf(
      InvalidKey,
    );
    await expect(store.deletePrefix('a/../../')).rejects.toBeInstanceOf(InvalidKey);
  });

  it('hides a temp file a crash left behind from list, get and deletePrefix', async () => {
    await store.put('points/rp-1/manifest.json', Buffer.from('{}'));
    const leftover = join(root, 'points/rp-1/.stowage-tmp-deadbeefdeadbeef');
    await writeFile(leftover, 'half a stream');

    const keys: string[] = [];
    for await (const { key } of store.list('points/')) keys.push(key);
    await store.deletePrefix('points/');

    expect(keys).toEqual(['points/rp-1/manifest.json']);
    expect(await tree(root)).toEqual([
      'points',
      'points/rp-1',
      'points/rp-1/.stowage-tmp-deadbeefdeadbeef',
    ]);
  });

  it('leaves no temp file behind when the body fails', async () => {
    await store.put('points/rp-1/manifest.json', Buffer.from('{}'));
    const failing = Readable.from(
      (async function* () {
        yield Buffer.alloc(64 * 1024);
        throw new Error('source failed');
      })(),
    );

    await expect(store.put('points/rp-1/streams/0000', failing)).rejects.toThrow('source failed');

    expect(await tree(root)).toEqual([
      'points',
      'points/rp-1',
      'points/rp-1/manifest.json',
      'points/rp-1/streams',
    ]);
  });

  it('removes the directories a delete empties, and keeps the root', async () => {
    await store.put('points/rp-1/streams/0000', Buffer.from('a'));
    await store.put('points/rp-1/manifest.json', Buffer.from('b'));
    await store.put('points/rp-2/manifest.json', Buffer.from('c'));

    await store.deletePrefix('points/rp-1/');
    expect(await tree(root)).toEqual(['points', 'points/rp-2', 'points/rp-2/manifest.json']);

    await store.delete('points/rp-2/manifest.json');
    expect(await tree(root)).toEqual([]);
  });

  it('reads a key whose path runs through a file as missing', async () => {
    await store.put('a/b', Buffer.from('x'));

    expect(await store.exists('a/b/c')).toBe(false);
    await expect(store.get('a/b/c')).rejects.toMatchObject({ name: 'ObjectNotFound' });
    await expect(store.delete('a/b/c')).resolves.toBeUndefined();
  });
});
