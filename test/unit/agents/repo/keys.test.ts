import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalKeyFile, StaticKey } from '../../../../agents/repo/keys';

let root: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'stowage-keys-'));
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

const modeOf = (path: string) => statSync(path).mode & 0o777;

describe('LocalKeyFile', () => {
  it('creates a 32-byte key in a 0600 file inside a 0700 directory on first use', async () => {
    const path = join(root, 'stowage', 'data.key');

    const key = await new LocalKeyFile(path).dataKey();

    expect(key).toHaveLength(32);
    expect(modeOf(path)).toBe(0o600);
    expect(modeOf(dirname(path))).toBe(0o700);
    const file = JSON.parse(readFileSync(path, 'utf8')) as { version: number; key: string };
    expect(file.version).toBe(1);
    expect(Buffer.from(file.key, 'base64').equals(key)).toBe(true);
  });

  it('returns the same key on every call and from a new instance', async () => {
    const path = join(root, 'data.key');
    const first = new LocalKeyFile(path);

    const keys = [
      await first.dataKey(),
      await first.dataKey(),
      await new LocalKeyFile(path).dataKey(),
    ];

    expect(keys[1]!.equals(keys[0]!)).toBe(true);
    expect(keys[2]!.equals(keys[0]!)).toBe(true);
  });

  it('gives different repositories different keys', async () => {
    const a = await new LocalKeyFile(join(root, 'a.key')).dataKey();
    const b = await new LocalKeyFile(join(root, 'b.key')).dataKey();

    expect(a.equals(b)).toBe(false);
  });

  it.each([
    ['0644', 0o644],
    ['0640', 0o640],
    ['0604', 0o604],
    ['0666', 0o666],
  ])('repairs a key file of mode %s to 0600 and still reads it', async (_label, mode) => {
    const path = join(root, 'data.key');
    const created = await new LocalKeyFile(path).dataKey();
    chmodSync(path, mode);

    const key = await new LocalKeyFile(path).dataKey();

    expect(modeOf(path)).toBe(0o600);
    expect(key.equals(created)).toBe(true);
  });

  it.each([
    ['not JSON', 'hello, I am not a key\n'],
    ['JSON of another shape', '{"name": "something else"}'],
    [
      'a key of another version',
      JSON.stringify({ version: 2, key: Buffer.alloc(32).toString('base64') }),
    ],
    ['a 128-bit key', JSON.stringify({ version: 1, key: Buffer.alloc(16).toString('base64') })],
  ])('refuses a file that is %s, naming its path, and leaves it as it was', async (_what, text) => {
    const path = join(root, 'data.key');
    writeFileSync(path, text, { mode: 0o600 });

    await expect(new LocalKeyFile(path).dataKey()).rejects.toThrow(path);
    expect(readFileSync(path, 'utf8')).toBe(text);
  });

  it('names its path, never the key, in describe()', async () => {
    const path = join(root, 'data.key');
    const provider = new LocalKeyFile(path);
    const key = await provider.dataKey();

    expect(provider.describe()).toContain(path);
    expect(provider.describe()).not.toContain(key.toString('base64'));
  });

  it('lets two instances in one process that race to create it agree on one key', async () => {
    const path = join(root, 'data.key');

    const [a, b] = await Promise.all([
      new LocalKeyFile(path).dataKey(),
      new LocalKeyFile(path).dataKey(),
    ]);

    expect(a.equals(b)).toBe(true);
  });

  // Two agents starting at once run in separate threads or processes. Here the creator is held
  // between creating the file and writing its content (a slow disk, a descheduled thread) while
  // the other instance looks: it must not take the still-empty file for a broken key file, and
  // both must end up with the one key. (Without the hold, two free-running threads hit the same
  // window in a few percent of attempts.)
  it('lets an instance that looks while another is still writing the new file wait for its key', async () => {
    const path = join(root, 'data.key');

    const { creator, reader } = await raceWithPausedCreator(path);

    expect(reader).not.toMatch(/^error:/);
    expect(creator).not.toMatch(/^error:/);
    expect(reader).toBe(creator);
  });
});

describe('StaticKey', () => {
  it('refuses a key that is not 32 bytes', () => {
    expect(() => new StaticKey(Buffer.alloc(16))).toThrow(/32 bytes/);
  });
});

/**
 * Runs two LocalKeyFile instances for `path` in two threads. The creator's `writeFileSync` is
 * wrapped to stop after the file is created (O_EXCL, as the real call does) and before a byte
 * is written, until the reader has finished its own `dataKey()`. Resolves to each one's key in
 * base64, or `error: <message>`.
 */
async function raceWithPausedCreator(path: string): Promise<{ creator: string; reader: string }> {
  const keysModule = new URL('../../../../agents/repo/keys.ts', import.meta.url).href;
  // [0]: the creator has created the file; [1]: the reader is done.
  const signals = new Int32Array(new SharedArrayBuffer(8));
  // An eval'd worker, so no file but this one; tsx loads keys.ts as codec-worker.mjs does.
  const source = `
    const fs = require('node:fs');
    const { syncBuiltinESMExports } = require('node:module');
    const { parentPort, workerData } = require('node:worker_threads');
    const { keysModule, path, role, signals } = workerData;
    if (role === 'creator') {
      fs.writeFileSync = (file, data, options = {}) => {
        const { flag = 'w', mode = 0o666 } = typeof options === 'object' ? options : {};
        const fd = fs.openSync(file, flag, mode);
        Atomics.store(signals, 0, 1);
        Atomics.notify(signals, 0);
        Atomics.wait(signals, 1, 0, 2000);
        try { fs.writeSync(fd, data); } finally { fs.closeSync(fd); }
      };
      syncBuiltinESMExports();
    }
    (async () => {
      const { register } = await import('tsx/esm/api');
      register();
      const { LocalKeyFile } = await import(keysModule);
      if (role === 'reader') Atomics.wait(signals, 0, 0, 2000);
      let out;
      try {
        out = (await new LocalKeyFile(path).dataKey()).toString('base64');
      } catch (err) {
        out = 'error: ' + err.message;
      }
      if (role === 'reader') {
        Atomics.store(signals, 1, 1);
        Atomics.notify(signals, 1);
      }
      parentPort.postMessage(out);
    })();
  `;
  const run = (role: 'creator' | 'reader') =>
    new Promise<string>((resolve, reject) => {
      const worker = new Worker(source, {
        eval: true,
        workerData: { keysModule, path, role, signals },
      });
      worker.once('message', (out: string) => {
        void worker.terminate();
        resolve(out);
      });
      worker.once('error', reject);
    });
  const [creator, reader] = await Promise.all([run('creator'), run('reader')]);
  return { creator, reader };
}
