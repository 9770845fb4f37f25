/**
 * LXD's optimized storage on a real `btrfs` pool (a loop file LXD makes itself under
 * /var/lib/lxd/disks; mkfs.btrfs from Debian's btrfs-progs, which local/engines/setup-lxd.sh
 * installs): an instance backed up with `optimizedStorage` is LXD's btrfs send stream (the
 * metadata says so), restores byte-identical into a btrfs pool under a new name, with its
 * snapshot, and is refused before anything is made for a `dir` pool. Without optimizedStorage the
 * instance is read on the host in the pool's mount as trees, an incremental reads only the new
 * file, and the point restores through LXD's import. Pool and instances carry the
 * run's prefix and are removed in afterAll.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryParentRegistry } from '../../agents/core/parents';
import { readManifest } from '../../agents/core/points';
import { runBackup, runRestore, type RunnerDeps } from '../../agents/core/runner';
import { silentLogger } from '../../kernel/logger';
import { dirRepository, makeRun } from '../fixtures/runner';
import { createLxdDriver } from '../../agents/drivers/lxd';
import { makeMemoryPoint, makeDriverContext } from '../fixtures/memory-point';
import { LXD_SOCKET, lxd, namesAt, removeInstance, sh } from '../fixtures/lxd';

const RUN = `st-bt-${randomBytes(3).toString('hex')}`;
const POOL = `${RUN}-pool`;
const driver = createLxdDriver({ socketPath: LXD_SOCKET });
const FILES = String.raw`
mkdir -p /data/sub && head -c 2097152 /dev/urandom > /data/sub/random.bin
printf 'hello\n' > /data/hello && chown 1000:1000 /data/hello && chmod 0640 /data/hello
ln -s ../hello /data/sub/link
`;
const LIST = String.raw`cd /data && find . | sort | while IFS= read -r f; do
  if [ -L "$f" ]; then echo "$f L $(stat -c '%u:%g' "$f") $(readlink "$f")"
  elif [ -d "$f" ]; then echo "$f D $(stat -c '%a %u:%g' "$f")"
  else echo "$f F $(stat -c '%a %u:%g %s' "$f") $(sha256sum < "$f" | cut -d' ' -f1)"; fi
done`;

describe('lxd optimized storage on a btrfs pool', () => {
  beforeAll(async () => {
    await lxd.run('POST', '/1.0/storage-pools', {
      name: POOL,
      driver: 'btrfs',
      config: { size: '1GiB' },
    });
  }, 120_000);

  afterAll(async () => {
    for (const name of await namesAt('/1.0/instances')) {
      if (name.startsWith(RUN)) await removeInstance(name);
    }
    await lxd.run('DELETE', `/1.0/storage-pools/${POOL}`).catch(() => undefined);
  }, 120_000);

  it('backs up as a btrfs send stream and restores it identically into a btrfs pool only', async () => {
    const name = `${RUN}-c1`;
    await lxd.run('POST', '/1.0/instances', {
      name,
      profiles: ['default'],
      devices: { root: { type: 'disk', path: '/', pool: POOL } },
      source: { type: 'image', alias: 'stowage-test/busybox' },
    });
    await lxd.run('PUT', `/1.0/instances/${name}/state`, { action: 'start', timeout: -1 });
    await sh(name, FILES);
    await lxd.run('POST', `/1.0/instances/${name}/snapshots`, { name: 'snap0' });
    await sh(name, 'echo after > /data/after');
    const want = await sh(name, LIST);

    const point = makeMemoryPoint();
    const outcome = await driver.backup(name, point.sink, makeDriverContext(), {
      optimizedStorage: true,
    });
    expect(outcome.metadata).toMatchObject({
      optimizedStorage: true,
      rootPool: POOL,
      rootPoolDriver: 'btrfs',
      read: 'engine-api',
      snapshots: ['snap0'],
    });

    const copy = `${RUN}-r1`;
    await driver.restore(
      outcome.metadata,
      point.source(),
      { name: copy, inPlace: false },
      makeDriverContext(),
    );
    expect(await sh(copy, LIST)).toBe(want);
    expect(await namesAt(`/1.0/instances/${copy}/snapshots`)).toEqual(['snap0']);

    await expect(
      driver.restore(
        outcome.metadata,
        point.source(),
        { name: `${RUN}-dir`, inPlace: false, pool: 'default' },
        makeDriverContext(),
      ),
    ).rejects.toThrow(/can only be restored into a btrfs pool/);
    expect(await namesAt('/1.0/instances')).not.toContain(`${RUN}-dir`);
  }, 300_000);

  it("reads an instance on the btrfs pool on the host as trees, then only what changed, and restores it through LXD's import", async () => {
    const name = `${RUN}-t1`;
    await lxd.run('POST', '/1.0/instances', {
      name,
      profiles: ['default'],
      devices: { root: { type: 'disk', path: '/', pool: POOL } },
      source: { type: 'image', alias: 'stowage-test/busybox' },
    });
    await lxd.run('PUT', `/1.0/instances/${name}/state`, { action: 'start', timeout: -1 });
    await sh(name, FILES);
    await lxd.run('POST', `/1.0/instances/${name}/snapshots`, { name: 'snap0' });
    const dir = await fs.mkdtemp(join(tmpdir(), 'stowage-lbt-'));
    const repo = await dirRepository(dir);
    try {
      const deps: RunnerDeps = {
        agent: 'local',
        drivers: new Map([['lxd', driver]]),
        repository: async () => repo,
        log: silentLogger,
        parents: new MemoryParentRegistry(),
      };
      let seq = 0;
      const backup = () =>
        runBackup(
          deps,
          {
            kind: 'BACKUP',
            jobId: `job-${++seq}`,
            itemIndex: 0,
            recoveryPointId: `rp-${String(seq).padStart(4, '0')}`,
            target: `lxd:${name}`,
            options: {},
          },
          makeRun(),
        );
      const first = await backup();
      expect((await readManifest(repo, first.recoveryPointId)).metadata).toMatchObject({
        read: 'host',
        rootPoolDriver: 'btrfs',
      });
      await sh(name, 'head -c 100000 /dev/urandom > /data/sub/changed');
      const second = await backup();
      // The incremental read the one new file, not the instance.
      expect(second.bytesRead).toBe(100_000);
      const want = await sh(name, LIST);

      const copy = `${RUN}-t2`;
      await runRestore(
        deps,
        {
          kind: 'RESTORE',
          jobId: `job-${++seq}`,
          recoveryPointId: second.recoveryPointId,
          source: `lxd:${name}`,
          target: `lxd:${copy}`,
          inPlace: false,
          options: {},
        },
        makeRun(),
      );
      expect(await sh(copy, LIST)).toBe(want);
      expect(await namesAt(`/1.0/instances/${copy}/snapshots`)).toEqual(['snap0']);
      expect(
        (await lxd.get<{ expanded_devices: { root: { pool: string } } }>(`/1.0/instances/${copy}`))
          .expanded_devices.root.pool,
      ).toBe(POOL);
    } finally {
      await repo.close();
      await fs.rm(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
