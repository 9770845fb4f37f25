/**
 * The vSphere driver against VMware's own simulator (vcsim, built from Debian's govmomi sources:
 * test/fixtures/vcsim.ts starts one instance for this file on a free port and removes its
 * temporary datastore afterwards). The simulator keeps datastore files as real files, so restored
 * bytes are compared with the files themselves. Streams go to an in-memory point.
 *
 * What only the simulator's gaps leave untested here (the code follows the documented API):
 * - reading a disk from a snapshot's base while the VM writes to a delta: the simulator's
 *   CreateSnapshot makes no delta disk and leaves the backing as it was, so a disk changed
 *   during the backup would change under the reader here, not on a real host;
 * - quiesced snapshots (no VMware Tools in simulated guests: CreateSnapshot ignores quiesce);
 * - CBT (QueryChangedDiskAreas is missing; the VMs do not track changes, so it is not asked;
 *   vsphere-cbt.test.ts runs the incremental path with a ChangeTracking of the test's own);
 * - the NFC transport (no ExportSnapshot; its streamOptimized unpacking has unit tests);
 * - RenameSnapshot (snapshot expiry changes) and snapshot memory;
 * - CopyVirtualDisk_Task's own descriptor handling (the simulator copies files verbatim, and the
 *   driver then writes the descriptor it needs);
 * - TLS verification (the simulator serves plain HTTP);
 * - extraConfig removal: a key set to "" is removed by vSphere, appended by the simulator.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Driver } from '../../agents/core/driver';
import type { HoldTaker } from '../../agents/core/holds';
import { silentLogger } from '../../kernel/logger';
import { createVsphereDriver } from '../../agents/drivers/vsphere';
import { child, list, text } from '../../agents/drivers/vsphere/xml';
import { makeDriverContext, makeMemoryPoint } from '../fixtures/memory-point';
import {
  createTestVm,
  expectedBytes,
  flatOf,
  localFile,
  startVcsim,
  type TestDisk,
  type Vcsim,
} from '../fixtures/vcsim';

let sim: Vcsim;
let driver: Driver & { close(): Promise<void> };

function disks(): TestDisk[] {
  return [
    // Data, a zero region, data; the flat file is as long as the disk.
    {
      capacity: 4 << 20,
      bytes: Buffer.concat([randomBytes(1 << 20), Buffer.alloc(1 << 20), randomBytes(2 << 20)]),
    },
    // A flat file shorter than the disk: the rest reads as zeros.
    { capacity: 2 << 20, bytes: randomBytes(1536 * 1024) },
  ];
}

async function vmDevices(path: string) {
  const ref = await sim.vim.call('FindByInventoryPath', (await sim.vim.service()).searchIndex, {
    inventoryPath: path,
  });
  const props = await sim.vim.propsOf({ type: 'VirtualMachine', value: text(ref)! }, [
    'config.hardware.device',
    'snapshot',
    'runtime.powerState',
    'config.hardware.numCPU',
    'config.hardware.memoryMB',
    'config.firmware',
    'config.extraConfig',
  ]);
  const devices = list(child(props['config.hardware.device'], 'VirtualDevice'));
  const vdisks = devices
    .filter((d) => text(child(child(d, 'backing'), 'fileName'))?.endsWith('.vmdk'))
    .map((d) => ({
      label: text(child(child(d, 'deviceInfo'), 'label'))!,
      fileName: text(child(child(d, 'backing'), 'fileName'))!,
      controllerKey: Number(text(child(d, 'controllerKey'))),
      unitNumber: Number(text(child(d, 'unitNumber'))),
      capacity: Number(text(child(d, 'capacityInKB'))) * 1024,
    }));
  return {
    disks: vdisks,
    snapshots: list(child(props.snapshot, 'rootSnapshotList')).length,
    power: text(props['runtime.powerState']),
    numCPU: Number(text(props['config.hardware.numCPU'])),
    memoryMB: Number(text(props['config.hardware.memoryMB'])),
    firmware: text(props['config.firmware']),
    extraConfig: list(child(props['config.extraConfig'], 'OptionValue')).map((o) => [
      text(child(o, 'key')),
      text(child(o, 'value')),
    ]),
    controllers: devices
      .filter((d) =>
        /SCSI|LsiLogic/.test(
          String(Object.entries(d as object).find(([k]) => k.endsWith(':type'))?.[1]),
        ),
      )
      .map((d) => Number(text(child(d, 'key')))),
  };
}

function flatBytes(datastorePath: string): Buffer {
  return readFileSync(localFile(sim, flatOf(datastorePath)));
}

function padded(file: Buffer, capacity: number): Buffer {
  const out = Buffer.alloc(capacity);
  file.copy(out);
  return out;
}

beforeAll(async () => {
  sim = await startVcsim();
  driver = createVsphereDriver({ url: sim.url, user: sim.user, passwordFile: sim.passwordFile });
}, 120_000);

afterAll(async () => {
  await driver?.close();
  await sim?.stop();
  if (sim?.datastoreDir) expect(existsSync(sim.datastoreDir)).toBe(false);
});

describe('vSphere driver (vcsim)', () => {
  it('lists VMs with their power state, disks and datastore', async () => {
    await createTestVm(sim, 'list-vm', disks());
    const targets = await driver.listTargets();
    const vm = targets.find((t) => t.target === 'vsphere:DC0/vm/list-vm');
    expect(vm).toMatchObject({ platform: 'vsphere', state: 'stopped', snapshots: [] });
    expect(vm?.details).toEqual({
      disks: 'disk-202-0=4MiB,disk-202-1=2MiB',
      datastore: 'LocalDS_0',
    });
    expect(targets.some((t) => t.name === 'DC0/vm/DC0_H0_VM0' && t.state === 'running')).toBe(true);
    expect(await driver.exists('DC0/vm/list-vm')).toBe(true);
    expect(await driver.exists('DC0/vm/no-such-vm')).toBe(false);
  });

  it('backs up both disks with the full configuration, restores them in place over overwritten disks, and removes its snapshot', async () => {
    const data = disks();
    const { diskFiles } = await createTestVm(sim, 'inplace-vm', data);
    const point = makeMemoryPoint();
    const out = await driver.backup('DC0/vm/inplace-vm', point.sink, makeDriverContext());

    expect(point.stored.map((s) => [s.kind, s.size])).toEqual([
      ['vmdk-raw', 4 << 20],
      ['vmdk-raw', 2 << 20],
    ]);
    data.forEach((d, i) =>
      expect(point.bytes.get(point.stored[i]!.name)!.equals(expectedBytes(d))).toBe(true),
    );
    const vm = out.metadata.vm as {
      numCPU: number;
      memoryMB: number;
      firmware: string;
      extraConfig: { key: string; value: string }[];
      devices: { type: string; controllerKey?: number; unitNumber?: number }[];
      disks: {
        label: string;
        controllerKey: number;
        unitNumber: number;
        capacityBytes: number;
        fileName: string;
        transport: string;
      }[];
    };
    expect(vm).toMatchObject({ numCPU: 2, memoryMB: 256, firmware: 'efi' });
    expect(vm.extraConfig).toContainEqual({ key: 'stowage.test', value: 'inplace-vm' });
    expect(vm.devices.some((d) => d.type === 'ParaVirtualSCSIController')).toBe(true);
    expect(vm.disks.map((d) => [d.unitNumber, d.capacityBytes, d.fileName, d.transport])).toEqual([
      [0, 4 << 20, diskFiles[0], 'datastore-http'],
      [1, 2 << 20, diskFiles[1], 'datastore-http'],
    ]);
    expect(out.summary).toMatchObject({ disks: 2, quiesced: false, transport: 'datastore-http' });
    expect((await vmDevices('DC0/vm/inplace-vm')).snapshots).toBe(0);

    // Overwrite both disks and change the configuration, then power the VM on.
    for (const f of diskFiles) {
      const p = localFile(sim, flatOf(f));
      rmSync(p);
      await sim.files.put(
        'DC0',
        { datastore: 'LocalDS_0', path: flatOf(f).replace('[LocalDS_0] ', '') },
        randomBytes(3 << 20),
        3 << 20,
      );
    }
    const ref = {
      type: 'VirtualMachine',
      value: text(
        await sim.vim.call('FindByInventoryPath', (await sim.vim.service()).searchIndex, {
          inventoryPath: 'DC0/vm/inplace-vm',
        }),
      )!,
    };
    await sim.vim.runTask(
      'ReconfigVM_Task',
      ref,
      {
        spec: {
          numCPUs: 4,
          memoryMB: 512,
          extraConfig: [
            { key: 'added.later', value: { '@_xsi:type': 'xsd:string', '#text': 'x' } },
          ],
        },
      },
      'test reconfig',
    );
    await sim.vim.runTask('PowerOnVM_Task', ref, {}, 'test power on');

    const ctx = makeDriverContext();
    const restored = await driver.restore(
      out.metadata,
      point.source(),
      { name: 'DC0/vm/inplace-vm', inPlace: true, state: 'running' },
      ctx,
    );
    expect(restored).toEqual({ restoredTarget: 'vsphere:DC0/vm/inplace-vm' });
    data.forEach((d, i) =>
      expect(padded(flatBytes(diskFiles[i]!), d.capacity).equals(expectedBytes(d))).toBe(true),
    );
    const after = await vmDevices('DC0/vm/inplace-vm');
    expect(after).toMatchObject({ numCPU: 2, memoryMB: 256, power: 'poweredOn', snapshots: 0 });
    expect(after.disks.map((d) => d.fileName)).toEqual(diskFiles);
    // A key added since the backup is set to "" (vSphere removes it; the simulator appends it).
    expect(after.extraConfig.filter(([k]) => k === 'added.later').pop()?.[1]).toBe('');
    expect(ctx.phases).toContain('powering DC0/vm/inplace-vm off');
    // The staged copies are gone.
    const dir = localFile(sim, '[LocalDS_0] inplace-vm');
    expect(readdirNames(dir).filter((n) => n.startsWith('stowage-restore-'))).toEqual([]);
  });

  it('restores a point as a new VM with the same disks, controllers and configuration, powered off', async () => {
    const data = disks();
    await createTestVm(sim, 'source-vm', data);
    const point = makeMemoryPoint();
    const out = await driver.backup('DC0/vm/source-vm', point.sink, makeDriverContext());
    const restored = await driver.restore(
      out.metadata,
      point.source(),
      { name: 'source-vm-copy', inPlace: false },
      makeDriverContext(),
    );
    expect(restored).toEqual({ restoredTarget: 'vsphere:DC0/vm/source-vm-copy' });
    const copy = await vmDevices('DC0/vm/source-vm-copy');
    expect(copy).toMatchObject({ numCPU: 2, memoryMB: 256, firmware: 'efi', power: 'poweredOff' });
    expect(copy.extraConfig).toContainEqual(['stowage.test', 'source-vm']);
    expect(copy.disks.map((d) => [d.unitNumber, d.capacity])).toEqual([
      [0, 4 << 20],
      [1, 2 << 20],
    ]);
    expect(copy.disks.every((d) => d.fileName.startsWith('[LocalDS_0] source-vm-copy/'))).toBe(
      true,
    );
    data.forEach((d, i) =>
      expect(padded(flatBytes(copy.disks[i]!.fileName), d.capacity).equals(expectedBytes(d))).toBe(
        true,
      ),
    );
    // The original is untouched, and a name that exists is refused.
    const original = await vmDevices('DC0/vm/source-vm');
    expect(original.disks.map((d) => d.fileName)).toEqual([
      '[LocalDS_0] source-vm/source-vm.vmdk',
      '[LocalDS_0] source-vm/source-vm_1.vmdk',
    ]);
    await expect(
      driver.restore(
        out.metadata,
        point.source(),
        { name: 'source-vm-copy', inPlace: false },
        makeDriverContext(),
      ),
    ).rejects.toMatchObject({ name: 'NameTaken' });
    // An unknown network remap is refused before anything is created.
    await expect(
      driver.restore(
        out.metadata,
        point.source(),
        { name: 'source-vm-nonet', inPlace: false, datastore: 'NoSuchDS' },
        makeDriverContext(),
      ),
    ).rejects.toMatchObject({ name: 'TargetNotFound' });
    expect(await driver.exists('DC0/vm/source-vm-nonet')).toBe(false);
  });

  it('attaches one disk of a point to another VM at the controller and unit asked for', async () => {
    const data = disks();
    await createTestVm(sim, 'disk-source', data);
    await createTestVm(sim, 'disk-target', [{ capacity: 1 << 20, bytes: randomBytes(1 << 20) }]);
    const point = makeMemoryPoint();
    const out = await driver.backup('DC0/vm/disk-source', point.sink, makeDriverContext());
    const before = await vmDevices('DC0/vm/disk-target');
    const controller = before.disks[0]!.controllerKey;
    // The unit already used is refused, naming the free ones.
    await expect(
      driver.restore(
        out.metadata,
        point.source(),
        {
          name: 'DC0/vm/disk-target',
          inPlace: false,
          disk: 'disk-202-1',
          attachTo: 'vsphere:DC0/vm/disk-target',
          controllerKey: controller,
          unitNumber: 0,
        },
        makeDriverContext(),
      ),
    ).rejects.toMatchObject({ name: 'NameTaken' });
    const restored = await driver.restore(
      out.metadata,
      point.source(),
      {
        name: 'DC0/vm/disk-target',
        inPlace: false,
        disk: 'disk-202-1',
        attachTo: 'vsphere:DC0/vm/disk-target',
        controllerKey: controller,
        unitNumber: 3,
      },
      makeDriverContext(),
    );
    expect(restored).toEqual({ restoredTarget: 'vsphere:DC0/vm/disk-target' });
    const after = await vmDevices('DC0/vm/disk-target');
    const attached = after.disks.find((d) => d.unitNumber === 3);
    expect(attached).toMatchObject({ controllerKey: controller, capacity: 2 << 20 });
    expect(padded(flatBytes(attached!.fileName), 2 << 20).equals(expectedBytes(data[1]!))).toBe(
      true,
    );
    expect(after.disks).toHaveLength(2);
  });

  it('removes its snapshot when a disk read fails, and names the disk', async () => {
    const { diskFiles } = await createTestVm(sim, 'broken-vm', disks());
    // The second disk's flat file is gone from the datastore: the read fails on the server.
    rmSync(localFile(sim, flatOf(diskFiles[1]!)));
    const point = makeMemoryPoint();
    await expect(
      driver.backup('DC0/vm/broken-vm', point.sink, makeDriverContext()),
    ).rejects.toThrow(/broken-vm_1-flat\.vmdk does not exist/);
    expect((await vmDevices('DC0/vm/broken-vm')).snapshots).toBe(0);
  });

  it('journals its snapshot before it takes it and clears the record once it is removed', async () => {
    await createTestVm(sim, 'journal-vm', disks());
    const records: Array<{ kind: string; data: Record<string, unknown>; cleared: boolean }> = [];
    const holds: HoldTaker = {
      take(_platform, kind, data) {
        const r = { kind, data, cleared: false };
        records.push(r);
        const record = { id: String(records.length), platform: 'vsphere', kind, takenAt: '', data };
        return Promise.resolve({
          record,
          update: () => Promise.resolve(),
          clear: () => {
            r.cleared = true;
            return Promise.resolve();
          },
          abandon: () => undefined,
        });
      },
    };
    await driver.backup('DC0/vm/journal-vm', makeMemoryPoint().sink, makeDriverContext({ holds }));
    expect(records).toEqual([
      {
        kind: 'vsphere.backup-snapshot',
        data: {
          vm: expect.any(String),
          path: 'DC0/vm/journal-vm',
          snapshot: expect.stringMatching(/^stowage-backup-/),
        },
        cleared: true,
      },
    ]);
  });

  it('releases the snapshot a killed agent left, by its journal record, and again finds nothing', async () => {
    const { ref } = await createTestVm(sim, 'killed-vm', disks());
    await sim.vim.runTask(
      'CreateSnapshot_Task',
      ref,
      { name: 'stowage-backup-killed', memory: false, quiesce: false },
      'test snapshot',
    );
    expect((await vmDevices('DC0/vm/killed-vm')).snapshots).toBe(1);
    const record = {
      id: '1',
      platform: 'vsphere',
      kind: 'vsphere.backup-snapshot',
      takenAt: new Date().toISOString(),
      data: { vm: ref.value, path: 'DC0/vm/killed-vm', snapshot: 'stowage-backup-killed' },
    };
    await driver.releaseHold!(record, silentLogger);
    expect((await vmDevices('DC0/vm/killed-vm')).snapshots).toBe(0);
    await driver.releaseHold!(record, silentLogger);
    await driver.releaseHold!({ ...record, data: { ...record.data, vm: 'vm-gone' } }, silentLogger);
  });

  it('journals an in-place restore before it powers the VM off, through its stages, and clears it', async () => {
    const { ref } = await createTestVm(sim, 'ip-journal-vm', disks());
    await sim.vim.runTask('PowerOnVM_Task', ref, {}, 'test power on');
    const point = makeMemoryPoint();
    const out = await driver.backup('DC0/vm/ip-journal-vm', point.sink, makeDriverContext());
    const journal = recordingJournal();
    await driver.restore(
      out.metadata,
      point.source(),
      { name: 'DC0/vm/ip-journal-vm', inPlace: true, state: 'running' },
      makeDriverContext({ holds: journal.taker }),
    );
    const inPlace = journal.records.filter((r) => r.kind === 'vsphere.in-place-restore');
    expect(inPlace).toHaveLength(1);
    expect(inPlace[0]!.stages).toEqual(['staged', 'writing', 'written']);
    expect(inPlace[0]!.cleared).toBe(true);
    expect(inPlace[0]!.data).toMatchObject({
      path: 'DC0/vm/ip-journal-vm',
      wasRunning: true,
      state: 'running',
    });
    expect((await vmDevices('DC0/vm/ip-journal-vm')).power).toBe('poweredOn');
  });

  it('releases an in-place restore killed before its point of no return: the VM that ran runs again, the staged copies are gone, the disks untouched', async () => {
    const data = disks();
    const { ref, diskFiles } = await createTestVm(sim, 'ip-early-vm', data);
    await sim.vim.runTask('PowerOnVM_Task', ref, {}, 'test power on');
    const point = makeMemoryPoint();
    const out = await driver.backup('DC0/vm/ip-early-vm', point.sink, makeDriverContext());
    const changed = diskFiles.map((f) => overwriteDisk(f));
    const journal = recordingJournal();
    // The agent "dies" at its point of no return: the VM is off, nothing more happens.
    const atPoint = new Promise<void>((reached) => {
      void driver.restore(
        out.metadata,
        point.source(),
        { name: 'DC0/vm/ip-early-vm', inPlace: true },
        makeDriverContext({
          holds: journal.taker,
          pointOfNoReturn: () => {
            reached();
            return new Promise<void>(() => undefined);
          },
        }),
      );
    });
    await atPoint;
    expect((await vmDevices('DC0/vm/ip-early-vm')).power).toBe('poweredOff');
    expect(stagedFiles('ip-early-vm').length).toBeGreaterThan(0);
    const record = journal.records.find((r) => r.kind === 'vsphere.in-place-restore')!;
    expect(record.data.stage).toBe('staged');

    await driver.releaseHold!(journal.asRecord(record), silentLogger);
    expect((await vmDevices('DC0/vm/ip-early-vm')).power).toBe('poweredOn');
    expect(stagedFiles('ip-early-vm')).toEqual([]);
    changed.forEach((bytes, i) => expect(flatBytes(diskFiles[i]!).equals(bytes)).toBe(true));
    // Idempotent: a second release finds nothing to do.
    await driver.releaseHold!(journal.asRecord(record), silentLogger);
    expect((await vmDevices('DC0/vm/ip-early-vm')).power).toBe('poweredOn');
  });

  it('finishes an in-place restore killed past its point of no return: the disks hold the point, the VM ends as asked, the staged copies are gone', async () => {
    const data = disks();
    const { ref, diskFiles } = await createTestVm(sim, 'ip-late-vm', data);
    await sim.vim.runTask('PowerOnVM_Task', ref, {}, 'test power on');
    const point = makeMemoryPoint();
    const out = await driver.backup('DC0/vm/ip-late-vm', point.sink, makeDriverContext());
    diskFiles.forEach((f) => overwriteDisk(f));
    const journal = recordingJournal({ freezeAt: 'writing' });
    void driver.restore(
      out.metadata,
      point.source(),
      { name: 'DC0/vm/ip-late-vm', inPlace: true, state: 'running' },
      makeDriverContext({ holds: journal.taker, pointOfNoReturn: () => Promise.resolve() }),
    );
    await journal.frozen;
    const record = journal.records.find((r) => r.kind === 'vsphere.in-place-restore')!;
    expect(record.data.stage).toBe('writing');
    expect((await vmDevices('DC0/vm/ip-late-vm')).power).toBe('poweredOff');

    await driver.releaseHold!(journal.asRecord(record), silentLogger);
    data.forEach((d, i) =>
      expect(padded(flatBytes(diskFiles[i]!), d.capacity).equals(expectedBytes(d))).toBe(true),
    );
    expect(await vmDevices('DC0/vm/ip-late-vm')).toMatchObject({
      power: 'poweredOn',
      numCPU: 2,
      memoryMB: 256,
    });
    expect(stagedFiles('ip-late-vm')).toEqual([]);
    // A release for a VM that is gone removes what is left and does nothing else.
    await driver.releaseHold!(
      journal.asRecord({ ...record, data: { ...record.data, vm: 'vm-gone' } }),
      silentLogger,
    );
  });

  it('removes its snapshot when the sink fails, and leaves a running VM running', async () => {
    const { ref } = await createTestVm(sim, 'sinkfail-vm', disks());
    await sim.vim.runTask('PowerOnVM_Task', ref, {}, 'test power on');
    const point = makeMemoryPoint({
      onChunk: () => {
        throw new Error('the store is full');
      },
    });
    await expect(
      driver.backup('DC0/vm/sinkfail-vm', point.sink, makeDriverContext()),
    ).rejects.toThrow('the store is full');
    const after = await vmDevices('DC0/vm/sinkfail-vm');
    expect(after).toMatchObject({ snapshots: 0, power: 'poweredOn' });
  });

  it('backs up only the disks included, or all but those excluded', async () => {
    await createTestVm(sim, 'select-vm', disks());
    const only = makeMemoryPoint();
    const a = await driver.backup('DC0/vm/select-vm', only.sink, makeDriverContext(), {
      disks: { include: ['disk-202-1'] },
    });
    expect(only.stored.map((s) => s.size)).toEqual([2 << 20]);
    expect(
      (a.metadata.vm as { disks: { stream?: string }[] }).disks.map((d) => d.stream !== undefined),
    ).toEqual([false, true]);
    const but = makeMemoryPoint();
    await driver.backup('DC0/vm/select-vm', but.sink, makeDriverContext(), {
      disks: { exclude: ['disk-202-1'] },
    });
    expect(but.stored.map((s) => s.size)).toEqual([4 << 20]);
    await expect(
      driver.backup('DC0/vm/select-vm', makeMemoryPoint().sink, makeDriverContext(), {
        disks: { include: ['Hard disk 9'] },
      }),
    ).rejects.toThrow(/has no disk "Hard disk 9"/);
  });

  it('refuses an unknown VM, and a wrong password with a clear message', async () => {
    await expect(
      driver.backup('DC0/vm/nope', makeMemoryPoint().sink, makeDriverContext()),
    ).rejects.toMatchObject({ name: 'TargetNotFound' });
    await expect(
      driver.backup('nope', makeMemoryPoint().sink, makeDriverContext()),
    ).rejects.toMatchObject({ name: 'ValidationError' });
    const wrong = createVsphereDriver({ url: sim.url, user: sim.user, password: 'wrong' });
    await expect(wrong.listTargets()).rejects.toThrow(/refused the login/);
    await wrong.close();
  });

  it('keeps VM snapshots as the local tier: create by pattern, list, restore (powered off without memory, unless asked), delete', async () => {
    const { ref } = await createTestVm(sim, 'snap-vm', disks());
    await sim.vim.runTask('PowerOnVM_Task', ref, {}, 'test power on');
    const ops = driver.snapshots!;
    const ctx = makeDriverContext();
    const expires = new Date(Date.now() + 3600_000);
    const s0 = await ops.create(
      'DC0/vm/snap-vm',
      { pattern: 'pre-%d', expiresAt: expires, stateful: false },
      ctx,
    );
    expect(s0).toMatchObject({ name: 'pre-0', expiresAt: expires.toISOString(), stateful: false });
    await expect(
      ops.create('DC0/vm/snap-vm', { pattern: 'pre-0', stateful: false }, ctx),
    ).rejects.toMatchObject({ name: 'NameTaken' });
    expect((await ops.list('DC0/vm/snap-vm')).map((s) => s.name)).toEqual(['pre-0']);
    expect(
      (await driver.listTargets())
        .find((t) => t.name === 'DC0/vm/snap-vm')
        ?.snapshots?.map((s) => s.name),
    ).toEqual(['pre-0']);
    await ops.restore('DC0/vm/snap-vm', 'pre-0', ctx);
    expect((await vmDevices('DC0/vm/snap-vm')).power).toBe('poweredOff');
    await ops.restore('DC0/vm/snap-vm', 'pre-0', ctx, { state: 'running' });
    expect((await vmDevices('DC0/vm/snap-vm')).power).toBe('poweredOn');
    await expect(ops.restore('DC0/vm/snap-vm', 'nope', ctx)).rejects.toMatchObject({
      name: 'SnapshotNotFound',
    });
    await expect(ops.schedule('DC0/vm/snap-vm', { every: '@daily' }, ctx)).rejects.toMatchObject({
      name: 'Unsupported',
    });
    await ops.delete('DC0/vm/snap-vm', 'pre-0', ctx);
    expect(await ops.list('DC0/vm/snap-vm')).toEqual([]);
    expect((await vmDevices('DC0/vm/snap-vm')).snapshots).toBe(0);
  });
});

function readdirNames(dir: string): string[] {
  return readdirSync(dir);
}

/** Overwrites a disk's flat file with 3 MiB of new bytes; returns them. */
function overwriteDisk(datastorePath: string): Buffer {
  const bytes = randomBytes(3 << 20);
  writeFileSync(localFile(sim, flatOf(datastorePath)), bytes);
  return bytes;
}

/** The staged copies an in-place restore left in a VM's directory. */
function stagedFiles(vm: string): string[] {
  return readdirNames(localFile(sim, `[LocalDS_0] ${vm}`)).filter((n) =>
    n.startsWith('stowage-restore-'),
  );
}

interface Recorded {
  kind: string;
  data: Record<string, unknown>;
  stages: unknown[];
  cleared: boolean;
}

/**
 * A hold journal that records what the driver journals. With `freezeAt`, the update to that
 * stage is written and never returns, as if the agent were killed right after it: `frozen`
 * resolves then.
 */
function recordingJournal(options: { freezeAt?: string } = {}) {
  const records: Recorded[] = [];
  let froze: () => void = () => undefined;
  const frozen = new Promise<void>((r) => (froze = r));
  const taker: HoldTaker = {
    take(_platform, kind, data) {
      const r: Recorded = { kind, data, stages: [data.stage], cleared: false };
      records.push(r);
      const record = { id: String(records.length), platform: 'vsphere', kind, takenAt: '', data };
      return Promise.resolve({
        record,
        update: (next: Record<string, unknown>) => {
          r.data = next;
          r.stages.push(next.stage);
          if (options.freezeAt !== undefined && next.stage === options.freezeAt) {
            froze();
            return new Promise<void>(() => undefined);
          }
          return Promise.resolve();
        },
        clear: () => {
          r.cleared = true;
          return Promise.resolve();
        },
        abandon: () => undefined,
      });
    },
  };
  return {
    taker,
    records,
    frozen,
    asRecord: (r: Recorded) => ({
      id: '1',
      platform: 'vsphere',
      kind: r.kind,
      takenAt: new Date().toISOString(),
      data: r.data,
    }),
  };
}
