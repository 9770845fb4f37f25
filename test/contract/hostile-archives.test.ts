/**
 * Restoring hostile archives through every place where an engine unpacks what a point holds:
 * a Docker volume stream (dockerd's `PUT archive`), a Docker image stream (`docker load`), an
 * LXD instance export and an LXD custom-volume export (LXD's import). Each point is a real
 * backup of a small workload whose archive stream is then swapped for a hostile one (the real
 * archive's entries followed by one way out: `..`, absolute names, a symlink out of the tree and
 * a write through it, hard links to outside files, device nodes). Nothing may appear in, or
 * change in, a watched directory on the host, and a refused restore leaves nothing behind.
 * (The path driver's own extraction has the same corpus in
 * test/unit/agents/drivers/path-hostile-archives.test.ts.)
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDockerDriver } from '../../agents/drivers/docker';
import { createLxdDriver, createLxdVolumeDriver } from '../../agents/drivers/lxd';
import { docker, removeByPrefix, requireTestImage, TEST_IMAGE } from '../fixtures/docker';
import {
  VICTIM,
  VICTIM_CONTENT,
  escapesInto,
  hostileArchives,
  tarOf,
  type HostileArchive,
} from '../fixtures/hostile-tar';
import { LXD_SOCKET, launchInstance, lxd, removeInstance } from '../fixtures/lxd';
import {
  makeMemoryPoint,
  makeDriverContext as makeContext,
  type MemoryPoint,
} from '../fixtures/memory-point';

const RUN = `sth-${randomBytes(3).toString('hex')}`;
let scratch: string;
let outside: string;

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'stowage-hostile-'));
  outside = join(scratch, 'outside');
  mkdirSync(outside);
  writeFileSync(join(outside, VICTIM), VICTIM_CONTENT);
});

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

type Entry = Parameters<typeof tarOf>[0][number];

/** The entries of a tar, bodies included (small archives only). */
async function entriesOf(archive: Buffer): Promise<Entry[]> {
  const extract = tar.extract();
  const entries: Entry[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      const { header } = entry;
      entries.push({ ...header, body: Buffer.concat(chunks) });
    }
  })();
  extract.end(archive);
  await done;
  return entries;
}

/** The entries as a tar again (after entriesOf: the same entries, byte for byte in their bodies). */
async function repack(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c) => chunks.push(c as Buffer));
  const ended = new Promise((resolve) => pack.on('end', () => resolve(undefined)));
  for (const { body, ...header } of entries) {
    const data = typeof body === 'string' ? Buffer.from(body) : (body ?? Buffer.alloc(0));
    await new Promise<void>((resolve, reject) =>
      pack.entry({ ...header, size: data.length } as tar.Header, data, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

/** `point` with stream `name` replaced by `bytes`. */
function swapStream(point: MemoryPoint, name: string, bytes: Buffer): void {
  point.bytes.set(name, bytes);
  const stored = point.stored.find((s) => s.name === name)!;
  stored.size = bytes.length;
}

describe('hostile archives through the engines', () => {
  describe('Docker: a volume stream (PUT archive) and the image stream (docker load)', () => {
    const driver = createDockerDriver({ socketPath: '/var/run/docker.sock' });
    const source = `${RUN}-src`;
    let metadata: Record<string, unknown>;
    let point: MemoryPoint;
    let volumeStream: string;
    let realVolume: Entry[];

    beforeAll(async () => {
      await requireTestImage();
      const container = await docker.createContainer({
        name: source,
        Image: TEST_IMAGE,
        Cmd: ['sleep', '1000'],
        HostConfig: { Mounts: [{ Type: 'volume', Source: `${RUN}-data`, Target: '/data' }] },
      });
      await container.start();
      point = makeMemoryPoint();
      metadata = (await driver.backup(source, point.sink, makeContext())).metadata;
      volumeStream = point.stored.find((s) => s.kind === 'volume-tar')!.name;
      realVolume = await entriesOf(point.bytes.get(volumeStream)!);
    }, 120_000);

    afterAll(async () => {
      await removeByPrefix(RUN);
      for (const image of await docker.listImages({ filters: { reference: [`${RUN}*`] } })) {
        await docker
          .getImage(image.Id)
          .remove({ force: true })
          .catch(() => undefined);
      }
    });

    it('restores the untouched point (the guard passes what dockerd wrote)', async () => {
      const result = await driver.restore(
        metadata,
        point.source(),
        { name: `${RUN}-clean`, inPlace: false },
        makeContext(),
      );

      expect(result.restoredTarget).toBe(`docker:${RUN}-clean`);
    }, 120_000);

    it.each(hostileArchives('/OUTSIDE', 'vol').map((a) => [a.name, a] as const))(
      'a volume stream with %s writes nothing outside the volume',
      async (_name, template: HostileArchive) => {
        const hostile = hostileArchives(outside, 'vol').find((a) => a.name === template.name)!;
        const forged = makeMemoryPoint();
        for (const s of point.stored) forged.bytes.set(s.name, point.bytes.get(s.name)!);
        forged.stored.push(...point.stored.map((s) => ({ ...s })));
        swapStream(forged, volumeStream, await repack([...realVolume, ...hostile.entries]));
        const name = `${RUN}-v${randomBytes(2).toString('hex')}`;

        const attempt = await driver
          .restore(metadata, forged.source(), { name, inPlace: false }, makeContext())
          .then(
            () => undefined,
            (err: Error) => err,
          );

        expect(escapesInto(outside)).toEqual([]);
        if (hostile.devices) {
          // Device nodes are data inside the volume; dockerd makes them there, nowhere else.
          expect(attempt).toBeUndefined();
        } else {
          expect(attempt?.name).toBe('DriverError');
          expect(attempt?.message).toMatch(/refusing to hand it to the engine/);
          // A refused restore leaves no container and no volume of its own.
          expect(await docker.listContainers({ all: true, filters: { name: [name] } })).toEqual([]);
          const { Volumes } = await docker.listVolumes({ filters: { name: [name] } });
          expect(Volumes ?? []).toEqual([]);
        }
      },
      60_000,
    );

    it('an image stream with a hostile layer writes nothing outside the image', async () => {
      const layer = await tarOf([
        { name: `../../../../../../../..${outside}/escape-image-dotdot`, body: 'x' },
        { name: `${outside}/escape-image-absolute`, body: 'x' },
        { name: 'out', type: 'symlink', linkname: outside },
        { name: 'out/escape-image-through-symlink', body: 'x' },
        { name: 'hl', type: 'link', linkname: `${outside}/${VICTIM}` },
      ]);
      const { createHash } = await import('node:crypto');
      const diffId = `sha256:${createHash('sha256').update(layer).digest('hex')}`;
      const config = JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: {},
        rootfs: { type: 'layers', diff_ids: [diffId] },
      });
      const configName = `${createHash('sha256').update(config).digest('hex')}.json`;
      const image = await tarOf([
        { name: 'layer/layer.tar', body: layer },
        { name: configName, body: config },
        {
          name: 'manifest.json',
          body: JSON.stringify([
            { Config: configName, RepoTags: [`${RUN}-evil:latest`], Layers: ['layer/layer.tar'] },
          ]),
        },
      ]);
      const forged = makeMemoryPoint();
      for (const s of point.stored) forged.bytes.set(s.name, point.bytes.get(s.name)!);
      forged.stored.push(...point.stored.map((s) => ({ ...s })));
      const imageStream = point.stored.find((s) => s.kind === 'docker-image-tar')!.name;
      swapStream(forged, imageStream, image);

      const attempt = await driver
        .restore(metadata, forged.source(), { name: `${RUN}-img`, inPlace: false }, makeContext())
        .then(
          () => undefined,
          (err: Error) => err,
        );

      expect(escapesInto(outside)).toEqual([]);
      // dockerd unpacks the layer chrooted into the image's own directory: the `..`, absolute
      // and through-symlink entries land there, and the hard link to a host file finds nothing.
      expect(attempt?.name).toBe('DriverError');
      expect(attempt?.message).toMatch(/loading image/);
    }, 120_000);
  });

  describe('LXD: an instance export and a custom volume export (import)', () => {
    const instances = createLxdDriver({ socketPath: LXD_SOCKET });
    const volumes = createLxdVolumeDriver({ socketPath: LXD_SOCKET });
    const instance = `${RUN}-c`;
    const volume = `${RUN}-vol`;
    let instancePoint: MemoryPoint;
    let instanceMeta: Record<string, unknown>;
    let volumePoint: MemoryPoint;
    let volumeMeta: Record<string, unknown>;

    beforeAll(async () => {
      await launchInstance(instance);
      instancePoint = makeMemoryPoint();
      instanceMeta = (
        await instances.backup(instance, instancePoint.sink, makeContext(), { snapshots: false })
      ).metadata;
      await lxd.run('POST', '/1.0/storage-pools/default/volumes/custom', { name: volume });
      volumePoint = makeMemoryPoint();
      volumeMeta = (await volumes.backup(`default/${volume}`, volumePoint.sink, makeContext()))
        .metadata;
    }, 180_000);

    afterAll(async () => {
      const all = await lxd.get<string[]>('/1.0/instances');
      for (const url of all) {
        const name = url.split('/').pop()!;
        if (name.startsWith(RUN)) await removeInstance(name);
      }
      const vols = await lxd.get<string[]>('/1.0/storage-pools/default/volumes/custom');
      for (const url of vols) {
        const name = url.split('/').pop()!;
        if (name.startsWith(RUN)) {
          await lxd
            .run('DELETE', `/1.0/storage-pools/default/volumes/custom/${name}`)
            .catch(() => undefined);
        }
      }
    });

    const forge = async (point: MemoryPoint, hostile: HostileArchive) => {
      const forged = makeMemoryPoint();
      const [stored] = point.stored;
      const real = await entriesOf(point.bytes.get(stored!.name)!);
      forged.stored.push({ ...stored! });
      forged.bytes.set(stored!.name, point.bytes.get(stored!.name)!);
      swapStream(forged, stored!.name, await repack([...real, ...hostile.entries]));
      return forged;
    };

    it('restores the untouched points (the guard passes what LXD exported)', async () => {
      await instances.restore(
        instanceMeta,
        instancePoint.source(),
        { name: `${RUN}-clean`, inPlace: false },
        makeContext(),
      );
      await volumes.restore(
        volumeMeta,
        volumePoint.source(),
        { name: `default/${RUN}-vclean`, inPlace: false },
        makeContext(),
      );
      expect(await lxd.get(`/1.0/instances/${RUN}-clean`)).toBeTruthy();
    }, 180_000);

    it.each(
      hostileArchives('/OUTSIDE', 'backup')
        .filter((a) => !a.devices)
        .map((a) => [a.name, a] as const),
    )(
      'an instance or volume export with %s is refused before LXD has it whole',
      async (_name, template: HostileArchive) => {
        const hostile = hostileArchives(outside, 'backup').find((a) => a.name === template.name)!;
        const suffix = randomBytes(2).toString('hex');

        const attempts = [
          await instances
            .restore(
              instanceMeta,
              (await forge(instancePoint, hostile)).source(),
              { name: `${RUN}-i${suffix}`, inPlace: false },
              makeContext(),
            )
            .then(
              () => undefined,
              (err: Error) => err,
            ),
          await volumes
            .restore(
              volumeMeta,
              (await forge(volumePoint, hostile)).source(),
              { name: `default/${RUN}-v${suffix}`, inPlace: false },
              makeContext(),
            )
            .then(
              () => undefined,
              (err: Error) => err,
            ),
        ];

        expect(escapesInto(outside)).toEqual([]);
        for (const attempt of attempts) {
          expect(attempt?.message).toMatch(/refusing to hand it to the engine/);
        }
        const names = (await lxd.get<string[]>('/1.0/instances')).map((u) => u.split('/').pop());
        expect(names).not.toContain(`${RUN}-i${suffix}`);
      },
      120_000,
    );
  });
});
