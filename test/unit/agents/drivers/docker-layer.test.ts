/**
 * The docker driver's look at a container's writable layer (docker/layer.ts): the fingerprint
 * stays the same while nothing in the layer changes and moves with every kind of change a
 * container can make (a write, a new file deep down, a deletion, a mode, a rename), and with the
 * container, its image or its configuration; where the agent cannot see an overlay2 layer there
 * is none. The image source a stream records is read back only when it is wholly well-formed.
 */
import { promises as fs, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InspectJson } from '../../../../agents/drivers/docker/config';
import type { Engine } from '../../../../agents/drivers/docker/engine';
import { layerFingerprint, parseImageSource } from '../../../../agents/drivers/docker/layer';
import { makeDriverContext } from '../../../fixtures/memory-point';

let upper: string;
const engine = { hostAccess: true } as Engine;
const inspectOf = (overrides: Partial<InspectJson> = {}): InspectJson => ({
  Id: 'c'.repeat(64),
  Name: '/app',
  Image: `sha256:${'a'.repeat(64)}`,
  Config: { Image: 'busybox', Cmd: ['sleep', '1000'] },
  GraphDriver: { Name: 'overlay2', Data: { UpperDir: upper } },
  ...overrides,
});
const fingerprint = (inspect = inspectOf(), on = engine) =>
  layerFingerprint(on, inspect, makeDriverContext());

beforeAll(async () => {
  upper = await fs.mkdtemp(join(tmpdir(), 'stowage-layer-'));
  await fs.mkdir(join(upper, 'etc/app'), { recursive: true });
  await fs.writeFile(join(upper, 'etc/app/conf'), 'a=1\n');
  await fs.writeFile(join(upper, 'log'), 'started\n');
});
afterAll(() => fs.rm(upper, { recursive: true, force: true }));

describe("a container's writable layer", () => {
  it('has the same fingerprint while nothing changes, and another after each change', async () => {
    const seen = new Set<string>();
    const take = async () => {
      const f = await fingerprint();
      expect(f).toMatch(/^[0-9a-f]{64}$/);
      return f!;
    };
    const first = await take();
    expect(await take()).toBe(first);
    seen.add(first);
    const changes: Array<[string, () => Promise<void>]> = [
      ['a write', () => fs.appendFile(join(upper, 'log'), 'more\n')],
      ['a new file deep down', () => fs.writeFile(join(upper, 'etc/app/new'), '')],
      ['a deletion', () => fs.rm(join(upper, 'etc/app/new'))],
      ['a mode', () => fs.chmod(join(upper, 'log'), 0o600)],
      ['a rename', () => fs.rename(join(upper, 'log'), join(upper, 'log.1'))],
      ['an empty directory', () => fs.mkdir(join(upper, 'run'))],
    ];
    for (const [what, change] of changes) {
      await change();
      const now = await take();
      expect(seen.has(now), what).toBe(false);
      seen.add(now);
      expect(await take(), `${what}, looked at again`).toBe(now);
    }
  });

  it('moves with the container, its image and its configuration', async () => {
    const base = await fingerprint();
    const others = await Promise.all([
      fingerprint(inspectOf({ Id: 'd'.repeat(64) })),
      fingerprint(inspectOf({ Image: `sha256:${'b'.repeat(64)}` })),
      fingerprint(inspectOf({ Config: { Image: 'busybox', Cmd: ['sleep', '2000'] } })),
    ]);
    for (const other of others) expect(other).not.toBe(base);
    expect(new Set(others).size).toBe(3);
  });

  it('stops at a cancel during a long walk, rather than answer that there is none', async () => {
    await fs.mkdir(join(upper, 'many'));
    for (let i = 0; i < 600; i++) await fs.writeFile(join(upper, 'many', `f${i}`), '');
    const controller = new AbortController();
    controller.abort(new Error('cancelled by the operator'));
    await expect(
      layerFingerprint(engine, inspectOf(), makeDriverContext({ signal: controller.signal })),
    ).rejects.toThrow(/cancelled by the operator|abandoned/);
    await fs.rm(join(upper, 'many'), { recursive: true });
  });

  it('tells apart names that are not UTF-8', async () => {
    const dir = Buffer.from(upper);
    const name = (byte: number) => Buffer.concat([dir, Buffer.from('/x'), Buffer.from([byte])]);
    writeFileSync(name(0xff), '');
    const before = await fingerprint();
    renameSync(name(0xff), name(0xfe));
    // The same inode and size: only the name's bytes (and the ctimes) differ.
    expect(await fingerprint()).not.toBe(before);
    rmSync(name(0xfe));
  });

  it('has none where the agent cannot see an overlay2 layer', async () => {
    expect(await fingerprint(inspectOf(), { hostAccess: false } as Engine)).toBeUndefined();
    const without = [
      { GraphDriver: { Name: 'btrfs', Data: { UpperDir: upper } } },
      { GraphDriver: { Name: 'overlay2', Data: null } },
      { GraphDriver: { Name: 'overlay2', Data: { UpperDir: 'relative/diff' } } },
      { GraphDriver: { Name: 'overlay2', Data: { UpperDir: join(upper, 'log.1') } } },
      { GraphDriver: { Name: 'overlay2', Data: { UpperDir: join(upper, 'gone') } } },
      { GraphDriver: undefined },
    ];
    for (const overrides of without) {
      expect(await fingerprint(inspectOf(overrides)), JSON.stringify(overrides)).toBeUndefined();
    }
  });
});

describe("an image stream's recorded source", () => {
  const good = {
    layer: 'f'.repeat(64),
    image: 'stowage/my-app:0123456789ab',
    imageId: `sha256:${'e'.repeat(64)}`,
  };

  it('is read back when well-formed', () => {
    expect(parseImageSource(JSON.stringify(good))).toEqual(good);
  });

  it('is refused whole when any part of it is not what the driver writes', () => {
    const bad = [
      'not json',
      'null',
      '"a string"',
      JSON.stringify({ ...good, layer: 'F'.repeat(64) }),
      JSON.stringify({ ...good, layer: 'f'.repeat(63) }),
      JSON.stringify({ ...good, image: 'busybox:latest' }),
      JSON.stringify({ ...good, image: 'stowage/my-app:0123456789ab\nx' }),
      JSON.stringify({ ...good, image: 'stowage/../x:0123456789ab' }),
      JSON.stringify({ ...good, imageId: 'e'.repeat(64) }),
      JSON.stringify({ ...good, imageId: 7 }),
      JSON.stringify({ layer: good.layer, image: good.image }),
    ];
    for (const source of bad) expect(parseImageSource(source), source).toBeUndefined();
  });
});
