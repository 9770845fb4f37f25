/**
 * Backup of a VM (`vsphere:DC/vm/NAME`), the appliance procedure:
 *
 * 1. record the configuration (config.ts: every device with its controller key and unit number,
 *    disk backings and capacities, firmware, CPU, memory, networks, extraConfig);
 * 2. CreateSnapshot_Task without memory, quiesced when VMware Tools runs in the guest (a refused
 *    quiesce is retried unquiesced, and the point says so);
 * 3. read every selected disk as it is in that snapshot (the snapshot's own `config` names each
 *    disk's backing then), one stream per disk through the data path, by the first transport that
 *    can read it, narrowed by CBT where the VM tracks changes;
 * 4. RemoveSnapshot_Task of that same snapshot in a finally, whatever failed. A snapshot that
 *    cannot be removed fails the job with its name, so nobody trusts a point that left one.
 */
import { DriverError, TargetNotFound, Unsupported } from '../../../kernel/errors';
import type { Logger } from '../../../kernel/logger';
import { takeHold, type HoldRecord } from '../../core/holds';
import type { BackupOptions, BackupOutcome, BackupSink, DriverContext } from '../../core/driver';
import { checkAborted, writeFrom } from '../../core/driver-streams';
import {
  flatBacking,
  nicsOf,
  parseConfig,
  parseDevices,
  type SavedDisk,
  type SavedVm,
} from './config';
import { networkNames, vmFacts, type Engine } from './engine';
import { findVm } from './inventory';
import type { Area, DiskReader, DiskTransport } from './transport';
import { snapshotsNamed } from './snapshots';
import { VimFault } from './vim';
import { child, moRef, text, type MoRef } from './xml';

export const DISK_KIND = 'vmdk-raw';

export async function backupVm(
  engine: Engine,
  path: string,
  sink: BackupSink,
  ctx: DriverContext,
  options: BackupOptions = {},
): Promise<BackupOutcome> {
  const ref = await findVm(engine.vim, path);
  return backupVmAt(engine, ref, path, sink, ctx, options);
}

/**
 * The backup of the VM `ref` (named `path` in messages and in the point), its disks as streams
 * `<streamPrefix>disk/<key>`: a vApp's point holds several VMs, each under its own prefix.
 */
export async function backupVmAt(
  engine: Engine,
  ref: MoRef,
  path: string,
  sink: BackupSink,
  ctx: DriverContext,
  options: BackupOptions = {},
  streamPrefix = '',
): Promise<BackupOutcome> {
  if (options.consistency && options.consistency !== 'live') {
    throw new Unsupported(
      `--consistency ${options.consistency} does not apply to vSphere VMs: their disks are read from a VM snapshot (quiesced when VMware Tools runs)`,
    );
  }
  const facts = await vmFacts(engine, ref, path);
  const what = `VM ${path}`;
  const parsed = parseConfig(facts.props.config, what);
  const names = await networkNames(engine, facts.props.network);
  const vm: SavedVm = {
    ...parsed,
    path,
    name: text(facts.props.name) ?? path.split('/').pop()!,
    datacenter: facts.datacenterPath,
    powerState: facts.powerState,
    nics: nicsOf(parsed.devices, names),
    ...(facts.folder !== undefined ? { folder: facts.folder } : {}),
    ...(facts.resourcePool !== undefined ? { resourcePool: facts.resourcePool } : {}),
  };
  const selected = selectDisks(vm.disks, options.disks, what);
  ctx.expectBytes?.(selected.reduce((n, d) => n + d.capacityBytes, 0));

  const toolsRunning = text(facts.props['guest.toolsRunningStatus']) === 'guestToolsRunning';
  const quiesce = toolsRunning && facts.powerState === 'poweredOn';
  checkAborted(ctx, `backup of ${what}`);
  ctx.phase('taking a VM snapshot');
  const snapshotName = `stowage-backup-${Date.now().toString(36)}`;
  // Journaled before it is taken: an agent killed while it holds the snapshot leaves the
  // record, and the next agent's sweep removes the snapshot (releaseSnapshotHold).
  const hold = await takeHold(ctx.holds, 'vsphere', SNAPSHOT_HOLD, {
    vm: ref.value,
    path,
    snapshot: snapshotName,
  });
  let taken: { snapshot: MoRef; quiesced: boolean };
  try {
    taken = await takeSnapshot(engine, ref, snapshotName, quiesce, ctx);
  } catch (err) {
    hold?.abandon();
    throw err;
  }
  const { snapshot, quiesced } = taken;
  ctx.log.info('driver.vsphere.snapshot_taken', { vm: path, snapshot: snapshot.value, quiesced });
  let failure: unknown;
  try {
    await readDisks(
      engine,
      vm,
      facts.datacenterPath,
      ref,
      snapshot,
      selected,
      sink,
      ctx,
      streamPrefix,
    );
  } catch (err) {
    failure = err;
    throw err;
  } finally {
    ctx.phase('removing the VM snapshot');
    const removed = await removeSnapshot(engine, snapshot, snapshotName, path, ctx, failure);
    if (removed) await hold?.clear();
    else hold?.abandon();
  }
  const transports = [...new Set(selected.map((d) => d.transport ?? ''))].join(',');
  return {
    metadata: {
      vm,
      snapshot: { name: snapshotName, quiesced, memory: false },
    },
    summary: {
      disks: selected.length,
      capacity: selected.reduce((n, d) => n + d.capacityBytes, 0),
      powerState: vm.powerState,
      quiesced,
      transport: transports,
    },
  };
}

function selectDisks(
  disks: SavedDisk[],
  choice: BackupOptions['disks'],
  what: string,
): SavedDisk[] {
  const labels = new Set(disks.map((d) => d.label));
  for (const label of [...(choice?.include ?? []), ...(choice?.exclude ?? [])]) {
    if (!labels.has(label)) {
      throw new DriverError(
        `${what} has no disk "${label}"; its disks: ${[...labels].join(', ') || 'none'}`,
      );
    }
  }
  const selected = disks.filter(
    (d) =>
      (!choice?.include || choice.include.includes(d.label)) &&
      !(choice?.exclude ?? []).includes(d.label),
  );
  if (selected.length === 0 && disks.length > 0) {
    throw new DriverError(`${what}: the include/exclude lists leave no disk to back up`);
  }
  return selected;
}

async function takeSnapshot(
  engine: Engine,
  vm: MoRef,
  name: string,
  quiesce: boolean,
  ctx: DriverContext,
): Promise<{ snapshot: MoRef; quiesced: boolean }> {
  const create = async (q: boolean) => {
    const { result } = await engine.vim.runTask(
      'CreateSnapshot_Task',
      vm,
      {
        name,
        description: 'Taken by Stowage for a backup; removed when the backup ends.',
        memory: false,
        quiesce: q,
      },
      'taking the backup snapshot',
      ctx.signal,
    );
    const snapshot = moRef(result);
    if (!snapshot)
      throw new DriverError('vSphere took the snapshot but returned no reference to it');
    return snapshot;
  };
  if (quiesce) {
    try {
      return { snapshot: await create(true), quiesced: true };
    } catch (err) {
      if (!(err instanceof VimFault)) throw err;
      ctx.log.warn('driver.vsphere.quiesce_failed', { error: err.message });
    }
  }
  return { snapshot: await create(false), quiesced: false };
}

/** Removes the backup's snapshot; retried, since a busy host refuses it now and then. */
async function removeSnapshot(
  engine: Engine,
  snapshot: MoRef,
  name: string,
  path: string,
  ctx: DriverContext,
  failure: unknown,
): Promise<boolean> {
  let last: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      // Not tied to the job's signal: an abandoned job still removes its snapshot.
      await engine.vim.runTask(
        'RemoveSnapshot_Task',
        snapshot,
        { removeChildren: false, consolidate: true },
        `removing snapshot ${name} of ${path}`,
      );
      ctx.log.info('driver.vsphere.snapshot_removed', { vm: path, snapshot: snapshot.value });
      return true;
    } catch (err) {
      if (err instanceof VimFault && err.faultType === 'ManagedObjectNotFound') return true;
      last = err;
      await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
    }
  }
  ctx.log.error('driver.vsphere.snapshot_left', { vm: path, snapshot: name, error: last });
  if (failure === undefined) {
    throw new DriverError(
      `the backup of ${path} read every disk but could not remove its snapshot "${name}" (${(last as Error).message}); remove it in vSphere`,
      { cause: last },
    );
  }
  return false;
}

/** The hold kind of a backup's snapshot: `{ vm, path, snapshot }` (the VM's id, its name). */
export const SNAPSHOT_HOLD = 'vsphere.backup-snapshot';

/**
 * Releases a backup snapshot a killed or failed job left (DESIGN: crash-safe holds): every
 * snapshot of that name on that VM is removed; a VM that is gone, or has no such snapshot,
 * holds nothing. Idempotent; throws (keeping the record) when vSphere refuses a removal.
 */
export async function releaseSnapshotHold(
  engine: Engine,
  record: HoldRecord,
  log: Logger,
): Promise<void> {
  if (record.kind !== SNAPSHOT_HOLD) {
    throw new DriverError(`the vSphere driver has no hold of kind ${record.kind}`);
  }
  const vm: MoRef = { type: 'VirtualMachine', value: String(record.data.vm) };
  const name = String(record.data.snapshot);
  let props;
  try {
    props = await engine.vim.propsOf(vm, ['snapshot']);
  } catch (err) {
    if (err instanceof TargetNotFound) return;
    throw err;
  }
  for (const s of snapshotsNamed(props.snapshot, name)) {
    await engine.vim.runTask(
      'RemoveSnapshot_Task',
      s,
      { removeChildren: false, consolidate: true },
      `removing snapshot ${name} of ${String(record.data.path)} (left by a stopped agent)`,
    );
    log.info('driver.vsphere.hold_released', { vm: record.data.path, snapshot: name });
  }
}

async function readDisks(
  engine: Engine,
  vm: SavedVm,
  datacenterPath: string,
  vmRef: MoRef,
  snapshot: MoRef,
  selected: SavedDisk[],
  sink: BackupSink,
  ctx: DriverContext,
  streamPrefix: string,
): Promise<void> {
  const snapProps = await engine.vim.propsOf(snapshot, ['config']);
  const hardware = child(snapProps.config, 'hardware');
  const atSnapshot = parseDevices(child(hardware, 'device'), `snapshot of ${vm.path}`);
  for (const disk of selected) {
    checkAborted(ctx, `backup of ${vm.path}`);
    const device = atSnapshot.find((d) => d.key === disk.key);
    if (!device) {
      throw new DriverError(`disk "${disk.label}" of ${vm.path} is not in the backup snapshot`);
    }
    // The snapshot's backing is what holds still; the VM now writes to a delta beside it.
    const backing = child(device.element, 'backing');
    const fileName = text(child(backing, 'fileName'));
    if (fileName) disk.fileName = fileName;
    const changeId = engine.changes.changeIdOf(backing, vm.changeTrackingEnabled, disk);
    if (changeId) disk.changeId = changeId;
    let allocated: Area[] | undefined;
    if (changeId) {
      allocated = await engine.changes
        .changedAreas(vmRef, snapshot, disk, '*')
        .catch((err: unknown) => {
          ctx.log.warn('driver.vsphere.cbt_unavailable', { disk: disk.label, error: err });
          return undefined;
        });
    }
    const src = {
      disk,
      flat: flatBacking(device),
      datacenterPath,
      vm: vmRef,
      snapshot,
      ...(allocated ? { allocated } : {}),
    };
    const transport = pick(engine.transports, src, vm.path);
    ctx.phase(`disk ${disk.label}`);
    const stream = `${streamPrefix}disk/${disk.key}`;
    const info = { name: stream, kind: DISK_KIND };
    const readers: DiskReader[] = [];
    try {
      let size: number;
      let how = allocated ? `${transport.name}+cbt` : transport.name;
      if (sink.writeBlocks && transport.partial) {
        // Block-aligned, so the next backup can take every block CBT says is unchanged.
        const since = changeId ? parentChangeId(sink, stream, disk) : undefined;
        const changed = since
          ? await engine.changes
              .changedAreas(vmRef, snapshot, disk, since)
              .catch((err: unknown) => {
                ctx.log.warn('driver.vsphere.cbt_incremental_unavailable', {
                  disk: disk.label,
                  changeId: since,
                  error: err,
                });
                return undefined;
              })
          : undefined;
        const stored = await sink.writeBlocks(info, {
          size: disk.capacityBytes,
          blockBytes: DISK_BLOCK_BYTES,
          ...(changed ? { unchanged: (start, length) => !overlaps(changed, start, length) } : {}),
          open: async (areas) => {
            const reader = await transport.open({ ...src, only: areas }, ctx.signal);
            readers.push(reader);
            return reader.read;
          },
        });
        size = stored.size;
        if (changed) how = `${transport.name}+cbt-incremental`;
        ctx.log.info('driver.vsphere.disk_read', {
          disk: disk.label,
          bytesRead: stored.bytesRead,
          bytesReused: stored.bytesReused,
          ...(stored.parent ? { parent: stored.parent, since } : {}),
        });
      } else {
        const reader = await transport.open(src, ctx.signal);
        readers.push(reader);
        size = (await writeFrom(sink, info, reader.read)).size;
      }
      if (size !== disk.capacityBytes) {
        throw new DriverError(
          `disk "${disk.label}": ${size} bytes stored, its capacity is ${disk.capacityBytes}`,
        );
      }
      disk.transport = how;
    } finally {
      for (const reader of readers) await reader.close();
    }
    disk.stream = stream;
  }
}

/**
 * A disk's stream is cut at every 4 MiB (the chunker's largest chunk, so an all-zero block is one
 * chunk that a restore leaves as a hole), as Proxmox Backup Server cuts VM images: a disk changes
 * in place and never shifts, so blocks lose no deduplication, and an incremental takes every block
 * CBT reports unchanged from the last point without reading it.
 */
export const DISK_BLOCK_BYTES = 4 * 1024 * 1024;

function overlaps(areas: readonly Area[], start: number, length: number): boolean {
  return areas.some((a) => a.start < start + length && a.start + a.length > start);
}

/**
 * The change id the parent point recorded for this same disk (same stream, device key, capacity
 * and, where both have one, backing uuid), if any: what QueryChangedDiskAreas compares against.
 */
function parentChangeId(sink: BackupSink, stream: string, disk: SavedDisk): string | undefined {
  const meta = sink.parentMetadata?.();
  if (!meta) return undefined;
  const vms: Array<SavedVm | undefined> = [
    meta.vm as SavedVm | undefined,
    ...((meta.vapp as { children?: Array<{ vm?: SavedVm }> } | undefined)?.children ?? []).map(
      (c) => c.vm,
    ),
  ];
  for (const vm of vms) {
    for (const d of vm?.disks ?? []) {
      if (
        d.stream === stream &&
        d.key === disk.key &&
        d.capacityBytes === disk.capacityBytes &&
        (!d.uuid || !disk.uuid || d.uuid === disk.uuid) &&
        typeof d.changeId === 'string' &&
        d.changeId !== ''
      ) {
        return d.changeId;
      }
    }
  }
  return undefined;
}

function pick(
  transports: DiskTransport[],
  src: Parameters<DiskTransport['refuses']>[0],
  path: string,
): DiskTransport {
  const reasons: string[] = [];
  for (const t of transports) {
    const why = t.refuses(src);
    if (why === undefined) return t;
    reasons.push(`${t.name}: ${why}`);
  }
  throw new Unsupported(
    `no disk transport can read disk "${src.disk.label}" of ${path} (${reasons.join('; ') || 'none configured'})`,
  );
}
