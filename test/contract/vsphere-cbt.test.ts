/**
 * Incrementals of a VM's disks by changed-block tracking (agents/drivers/vsphere/backup.ts,
 * agents/core/points.ts writeBlocks), against VMware's simulator, through the agent's runner into
 * a directory store, as an agent runs them.
 *
 * The simulator has no CBT (no QueryChangedDiskAreas, no changeId on a disk's backing), so the
 * driver is given a ChangeTracking that answers what vSphere would: a change id per backup, and
 * since the last one exactly the areas the test overwrote in the disk's flat file. Everything
 * else is the real path: the snapshot, the ranged datastore reads, the data path, the parent
 * point taken from the agent's registry, the restores. What vSphere's own answers look like is
 * tested against the documented payload in transport.ts's changedAreas (unit tests).
 */
import { randomBytes } from 'node:crypto';
import { openSync, closeSync, writeSync } from 'node:fs';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Area } from '../../agents/core/driver';
import { MemoryParentRegistry } from '../../agents/core/parents';
import { readManifest } from '../../agents/core/points';
import { runBackup, runRestore, type RunnerDeps } from '../../agents/core/runner';
import { createVsphereDriver } from '../../agents/drivers/vsphere';
import { DISK_BLOCK_BYTES } from '../../agents/drivers/vsphere/backup';
import type { SavedVm } from '../../agents/drivers/vsphere/config';
import type { ChangeTracking } from '../../agents/drivers/vsphere/transport';
import { Repository } from '../../agents/repo/repository';
import { silentLogger } from '../../kernel/logger';
import type { BackupResult, BackupTask } from '../../statemachines/contracts';
import {
  createTestVm,
  diskBytes,
  flatOf,
  localFile,
  startVcsim,
  vmState,
  type Vcsim,
} from '../fixtures/vcsim';
import { dirRepository, makeRun } from '../fixtures/runner';

const MiB = 1024 * 1024;
const CAPACITY = 24 * MiB;

/** vSphere's answers, as the test knows them: a change id per backup, the areas changed since. */
class FakeTracking implements ChangeTracking {
  current = 'cbt-1';
  /** The areas changed since each change id; an id missing here is refused, as a reset one is. */
  readonly since = new Map<string, Area[]>();
  readonly asked: string[] = [];

  changeIdOf(): string {
    return this.current;
  }

  changedAreas(_vm: unknown, _snapshot: unknown, disk: { capacityBytes: number }, id: string) {
    this.asked.push(id);
    if (id === '*') return Promise.resolve([{ start: 0, length: disk.capacityBytes }]);
    const areas = this.since.get(id);
    if (!areas) return Promise.reject(new Error(`FileFault: change id ${id} is not valid`));
    return Promise.resolve(areas);
  }
}

describe('vSphere incrementals by changed-block tracking (vcsim, a fake CBT)', () => {
  let sim: Vcsim;
  let dir: string;
  let repo: Repository;
  let deps: RunnerDeps;
  let flat: string;
  let fileName: string;
  const tracking = new FakeTracking();
  let seq = 0;

  const backup = async (): Promise<BackupResult> => {
    const task: BackupTask = {
      kind: 'BACKUP',
      jobId: `job-${++seq}`,
      itemIndex: 0,
      recoveryPointId: `rp-${String(seq).padStart(4, '0')}`,
      target: 'vsphere:DC0/vm/cbt-vm',
      options: {},
    };
    return runBackup(deps, task, makeRun());
  };

  const restoreAs = async (point: string, name: string): Promise<Buffer> => {
    await runRestore(
      deps,
      {
        kind: 'RESTORE',
        jobId: `job-${++seq}`,
        recoveryPointId: point,
        source: 'vsphere:DC0/vm/cbt-vm',
        target: `vsphere:DC0/vm/${name}`,
        inPlace: false,
        options: {},
      },
      makeRun(),
    );
    const state = await vmState(sim, `DC0/vm/${name}`);
    return diskBytes(sim, state!.disks[0]!.fileName, CAPACITY);
  };

  const diskOf = async (point: string) => {
    const manifest = await readManifest(repo, point);
    return (manifest.metadata.vm as SavedVm).disks[0]!;
  };

  /** Overwrites `length` bytes at `at` of the disk's flat file with new random bytes. */
  const overwrite = (at: number, length: number): void => {
    const fd = openSync(flat, 'r+');
    try {
      writeSync(fd, randomBytes(length), 0, length, at);
    } finally {
      closeSync(fd);
    }
  };

  beforeAll(async () => {
    sim = await startVcsim();
    dir = await fs.mkdtemp(join(tmpdir(), 'stowage-vsphere-cbt-'));
    repo = await dirRepository(dir);
    deps = {
      agent: 'local',
      drivers: new Map([
        [
          'vsphere',
          createVsphereDriver({
            url: sim.url,
            user: sim.user,
            password: sim.password,
            changes: () => tracking,
          }),
        ],
      ]),
      repository: async () => repo,
      log: silentLogger,
      parents: new MemoryParentRegistry(),
    };
    // Data, a zero region, data: the flat file as long as the disk.
    const bytes = Buffer.concat([
      randomBytes(10 * MiB),
      Buffer.alloc(6 * MiB),
      randomBytes(8 * MiB),
    ]);
    const vm = await createTestVm(sim, 'cbt-vm', [{ capacity: CAPACITY, bytes }]);
    fileName = vm.diskFiles[0]!;
    flat = localFile(sim, flatOf(fileName));
  }, 120_000);

  afterAll(async () => {
    await repo?.close();
    await sim?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('reads only the blocks CBT names since the last point, takes the rest from it, and both points restore byte for byte', async () => {
    const first = await backup();
    expect(first.bytesRead).toBe(CAPACITY);
    const before = diskBytes(sim, fileName, CAPACITY);
    const disk1 = await diskOf(first.recoveryPointId);
    expect(disk1.changeId).toBe('cbt-1');
    expect(disk1.transport).toBe('datastore-http+cbt');
    // Every chunk of the stream lies inside one 4 MiB block.
    const manifest1 = await readManifest(repo, first.recoveryPointId);
    const stream1 = manifest1.streams.find((s) => s.name === disk1.stream)!;
    expect(stream1.blockBytes).toBe(DISK_BLOCK_BYTES);
    let offset = 0;
    for (const c of stream1.chunks) {
      expect(Math.floor(offset / DISK_BLOCK_BYTES)).toBe(
        Math.floor((offset + c.length - 1) / DISK_BLOCK_BYTES),
      );
      offset += c.length;
    }

    // 4 KiB in block 1, 1 MiB across the end of block 4 and the start of block 5.
    overwrite(5 * MiB, 4096);
    overwrite(19.5 * MiB, MiB);
    tracking.since.set('cbt-1', [
      { start: 5 * MiB, length: 4096 },
      { start: 19.5 * MiB, length: MiB },
    ]);
    tracking.current = 'cbt-2';
    const after = diskBytes(sim, fileName, CAPACITY);
    expect(after.equals(before)).toBe(false);

    const second = await backup();
    expect(tracking.asked).toContain('cbt-1');
    // Blocks 1, 4 and 5 read: 12 MiB of 24.
    expect(second.bytesRead).toBe(3 * DISK_BLOCK_BYTES);
    const disk2 = await diskOf(second.recoveryPointId);
    expect(disk2.changeId).toBe('cbt-2');
    expect(disk2.transport).toBe('datastore-http+cbt-incremental');

    expect((await restoreAs(second.recoveryPointId, 'cbt-copy-2')).equals(after)).toBe(true);
    expect((await restoreAs(first.recoveryPointId, 'cbt-copy-1')).equals(before)).toBe(true);
  }, 180_000);

  it('reads the whole disk when CBT refuses the last change id (tracking was reset)', async () => {
    overwrite(2 * MiB, 4096);
    tracking.current = 'cbt-3';
    // No areas recorded since cbt-2: the fake refuses it, as vSphere does a reset change id.
    const third = await backup();
    expect(tracking.asked).toContain('cbt-2');
    expect(third.bytesRead).toBe(CAPACITY);
    expect((await diskOf(third.recoveryPointId)).transport).toBe('datastore-http+cbt');
    const now = diskBytes(sim, fileName, CAPACITY);
    expect((await restoreAs(third.recoveryPointId, 'cbt-copy-3')).equals(now)).toBe(true);
  }, 180_000);
});
