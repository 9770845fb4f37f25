/**
 * Restores of a VM point, each chosen explicitly:
 *
 * - under a new name (`--name NEW` or `--name DC/vm/folder/NEW`): CreateVM_Task from the saved
 *   configuration (CPU, memory, firmware, guest, extraConfig, the controllers and network cards
 *   the VM had, with folder, resource pool, datastore and network remaps), then every disk
 *   uploaded into the new VM's directory as a flat VMDK and attached at its controller and unit
 *   (ReconfigVM_Task). Everything is checked before anything is created; a failure destroys the
 *   new VM and its files.
 * - in place (`--in-place`): each disk's bytes are first uploaded beside the VM while it keeps
 *   running (a failure there leaves it exactly as it was); then the VM is powered off (the
 *   appliance procedure requires it), each staged disk is copied into the disk's current backing
 *   file (VirtualDiskManager.CopyVirtualDisk_Task, force), the configuration is restored
 *   (ReconfigVM_Task), and the VM ends in the power state asked for.
 * - one disk attached to another VM (`--disk LABEL --attach-to DC/vm/OTHER [--controller KEY
 *   --unit N]`): the disk is uploaded next to OTHER and attached at that virtual device node.
 *
 * A VM snapshot without memory comes back powered off, and so does a restored VM unless
 * `--state running` is asked for.
 */
import { PassThrough } from 'node:stream';
import {
  DriverError,
  NameTaken,
  TargetNotFound,
  Unsupported,
  ValidationError,
} from '../../../kernel/errors';
import type {
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../core/driver';
import { checkAborted, forEachChunk } from '../../core/driver-streams';
import { takeHold, type HoldRecord } from '../../core/holds';
import type { Logger } from '../../../kernel/logger';
import {
  VM_FORMAT,
  isAddableController,
  nicsOf,
  parseDevices,
  type SavedDevice,
  type SavedDisk,
  type SavedVm,
} from './config';
import { networkNames, type Engine } from './engine';
import {
  checkVmPath,
  datacenterParts,
  datastorePathText,
  findByPath,
  findVm,
  namedObjects,
  parseDatastorePath,
  refList,
  type DatastorePath,
} from './inventory';
import { ensurePoweredOff, ensurePoweredOn } from './snapshots';
import { VimFault } from './vim';
import {
  child,
  list,
  moRef,
  refXml,
  text,
  without,
  type MoRef,
  type XmlObject,
  type XmlValue,
} from './xml';
import { adapterTypeOf, flatDescriptor, flatExtentOf, type AdapterType } from './vmdk';

export async function restoreVm(
  engine: Engine,
  metadata: Record<string, unknown>,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  const vm = savedVmOf(metadata);
  if (options.disk !== undefined || options.attachTo !== undefined) {
    return attachDisk(engine, vm, source, options, ctx);
  }
  if (options.inPlace) return restoreInPlace(engine, vm, source, options, ctx);
  return restoreAsNew(engine, vm, source, options, ctx);
}

function savedVmOf(metadata: Record<string, unknown>): SavedVm {
  const vm = metadata.vm as SavedVm | undefined;
  if (!vm || typeof vm !== 'object' || vm.format !== VM_FORMAT || !Array.isArray(vm.disks)) {
    throw new DriverError(
      `this recovery point holds no vSphere VM of format ${VM_FORMAT}; it cannot be restored by the vSphere driver`,
    );
  }
  return vm;
}

function streamOf(source: RestoreSource, disk: SavedDisk): string {
  if (!disk.stream) {
    throw new DriverError(
      `disk "${disk.label}" was excluded from this point; it has no bytes to restore`,
    );
  }
  const s = source.streams.find((x) => x.name === disk.stream);
  if (!s)
    throw new DriverError(`the point lacks the stream ${disk.stream} of disk "${disk.label}"`);
  if (s.size !== disk.capacityBytes) {
    throw new DriverError(
      `stream ${disk.stream} holds ${s.size} bytes, disk "${disk.label}" has ${disk.capacityBytes}`,
    );
  }
  return s.name;
}

/** Where the new VM goes: `NEW` beside the original, or a full path `DC/vm/.../NEW`. */
function newPathOf(vm: SavedVm, name: string): string {
  if (name.includes('/')) {
    checkVmPath(name);
    return name;
  }
  if (!name || /[%\\]/.test(name) || name.length > 80) {
    throw new ValidationError(`"${name}" is not a usable VM name (1-80 characters, no % or \\)`);
  }
  const folder = vm.folder ?? `${vm.datacenter}/vm`;
  return `${folder}/${name}`;
}

// ---- uploads -------------------------------------------------------------------------------

const ZERO_PIECE = Buffer.alloc(0);

/**
 * Uploads one disk's bytes from the point as `<dir>/<base>-flat.vmdk` plus its descriptor
 * `<dir>/<base>.vmdk`; resolves the descriptor's datastore path.
 */
async function uploadDisk(
  engine: Engine,
  dcPath: string,
  dir: DatastorePath,
  base: string,
  disk: SavedDisk,
  controllerType: string,
  source: RestoreSource,
  ctx: DriverContext,
): Promise<DatastorePath> {
  const stream = streamOf(source, disk);
  const prefix = dir.path ? `${dir.path}/` : '';
  const flat: DatastorePath = { datastore: dir.datastore, path: `${prefix}${base}-flat.vmdk` };
  const descriptor: DatastorePath = { datastore: dir.datastore, path: `${prefix}${base}.vmdk` };
  ctx.phase(`uploading disk ${disk.label}`);
  const body = new PassThrough({ highWaterMark: 4 * 1024 * 1024 });
  const put = engine.files.put(dcPath, flat, body, disk.capacityBytes);
  put.catch(() => body.destroy());
  let written = 0;
  try {
    written = await forEachChunk(source, stream, async (bytes) => {
      checkAborted(ctx, `upload of disk ${disk.label}`);
      // The source re-uses its buffer once this resolves: hand the request a copy.
      const ok = body.write(Buffer.from(bytes.length ? bytes : ZERO_PIECE));
      if (!ok) {
        await new Promise<void>((resolve, reject) => {
          const onDrain = () => {
            body.off('close', onClose);
            resolve();
          };
          const onClose = () => {
            body.off('drain', onDrain);
            reject(new DriverError(`the upload of disk ${disk.label} broke off`));
          };
          body.once('drain', onDrain);
          body.once('close', onClose);
        });
      }
    });
    body.end();
  } catch (err) {
    body.destroy();
    await put.catch(() => undefined);
    throw err;
  }
  await put;
  if (written !== disk.capacityBytes) {
    throw new DriverError(`disk ${disk.label}: ${written} bytes restored of ${disk.capacityBytes}`);
  }
  const text = flatDescriptor({
    flatFile: `${base}-flat.vmdk`,
    capacityBytes: disk.capacityBytes,
    adapterType: adapterTypeOf(controllerType),
    thin: disk.thinProvisioned ?? true,
  });
  await engine.files.put(dcPath, descriptor, Buffer.from(text), Buffer.byteLength(text));
  return descriptor;
}

async function deleteDisk(
  engine: Engine,
  dc: MoRef,
  file: DatastorePath,
  log: Logger,
): Promise<void> {
  const sc = await engine.vim.service();
  const name = datastorePathText(file);
  try {
    if (!sc.virtualDiskManager) throw new VimFault('NotSupported', 'no VirtualDiskManager');
    await engine.vim.runTask(
      'DeleteVirtualDisk_Task',
      sc.virtualDiskManager,
      { name, datacenter: refXml(dc) },
      `deleting ${name}`,
    );
  } catch {
    // Not a disk vSphere knows (an upload that broke off): delete its two files one by one.
    for (const f of [name.replace(/\.vmdk$/, '-flat.vmdk'), name]) {
      await engine.vim
        .runTask(
          'DeleteDatastoreFile_Task',
          sc.fileManager,
          { name: f, datacenter: refXml(dc) },
          `deleting ${f}`,
        )
        .catch((err: unknown) =>
          log.warn('driver.vsphere.cleanup_failed', { file: f, error: err }),
        );
    }
  }
}

// ---- device specs --------------------------------------------------------------------------

function diskDeviceSpec(o: {
  key: number;
  descriptor: DatastorePath;
  controllerKey: number;
  unitNumber: number;
  disk: SavedDisk;
}): XmlObject {
  return {
    operation: 'add',
    device: {
      '@_xsi:type': 'VirtualDisk',
      key: o.key,
      backing: {
        '@_xsi:type': 'VirtualDiskFlatVer2BackingInfo',
        fileName: datastorePathText(o.descriptor),
        diskMode: o.disk.diskMode ?? 'persistent',
        thinProvisioned: o.disk.thinProvisioned ?? true,
      },
      controllerKey: o.controllerKey,
      unitNumber: o.unitNumber,
      capacityInKB: Math.ceil(o.disk.capacityBytes / 1024),
    },
  };
}

/** Fields of a saved device that name the old VM's objects or state: never replayed. */
const DEVICE_DROP = ['device', 'slotInfo', 'externalId', 'connected', 'status', 'dynamicProperty'];

interface NetworkTarget {
  name: string;
  ref: MoRef;
  switchUuid?: string;
  portgroupKey?: string;
}

async function networksOf(engine: Engine, dc: MoRef): Promise<Map<string, NetworkTarget>> {
  const out = new Map<string, NetworkTarget>();
  for (const [name, o] of await namedObjects(engine.vim, 'Network', dc)) {
    out.set(name, { name, ref: o.ref });
  }
  const pgs = await namedObjects(engine.vim, 'DistributedVirtualPortgroup', dc, [
    'key',
    'config.distributedVirtualSwitch',
  ]);
  const switches = [...pgs.values()]
    .map((o) => moRef(o.props['config.distributedVirtualSwitch']))
    .filter((r): r is MoRef => r !== undefined);
  const uuids = new Map<string, string>();
  if (switches.length > 0) {
    for (const s of await engine.vim.retrieveOf(switches, ['uuid'])) {
      const uuid = text(s.props.uuid);
      if (uuid) uuids.set(s.ref.value, uuid);
    }
  }
  for (const [name, o] of pgs) {
    const sw = moRef(o.props['config.distributedVirtualSwitch']);
    const switchUuid = sw ? uuids.get(sw.value) : undefined;
    const portgroupKey = text(o.props.key);
    out.set(name, {
      name,
      ref: o.ref,
      ...(switchUuid ? { switchUuid } : {}),
      ...(portgroupKey ? { portgroupKey } : {}),
    });
  }
  return out;
}

function nicBacking(net: NetworkTarget): XmlObject {
  if (net.switchUuid && net.portgroupKey) {
    return {
      '@_xsi:type': 'VirtualEthernetCardDistributedVirtualPortBackingInfo',
      port: { switchUuid: net.switchUuid, portgroupKey: net.portgroupKey },
    };
  }
  return {
    '@_xsi:type': 'VirtualEthernetCardNetworkBackingInfo',
    deviceName: net.name,
    network: refXml(net.ref),
  };
}

/** Replaces `field` of a device element in place (keeping the WSDL order) or appends it. */
function setField(element: XmlObject, field: string, value: XmlObject[string]): void {
  element[field] = value;
}

/** extraConfig keys that belong to one VM's identity or one host's state, not to its config. */
const EXTRA_CONFIG_DROP =
  /^(nvram|migrate\.|sched\.swap\.derivedName|uuid\.|vc\.uuid|vmotion\.|hostCPUID|guestCPUID|userCPUID|monitor\.phys_bits_used|softPowerOff|toolsInstallManager|guestinfo\.)/;

function extraConfigSpec(entries: { key: string; value: string }[]): XmlObject[] {
  return entries
    .filter((e) => !EXTRA_CONFIG_DROP.test(e.key))
    .map((e) => ({ key: e.key, value: { '@_xsi:type': 'xsd:string', '#text': e.value } }));
}

// ---- under a new name ----------------------------------------------------------------------

/**
 * Where a VM restored as new goes when it is a vApp's child: created in the vApp
 * (CreateChildVM_Task), named and reported by `path` (`DC/vm/VAPP/NAME`).
 */
export interface VappPlace {
  vapp: MoRef;
  path: string;
}

export async function restoreAsNew(
  engine: Engine,
  vm: SavedVm,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
  place?: VappPlace,
): Promise<RestoreOutcome> {
  const { vim } = engine;
  const path = place ? place.path : newPathOf(vm, options.name);
  const { datacenterPath, vmName } = checkVmPath(path);
  if (!place && (await findByPath(vim, path))) {
    throw new NameTaken(`vSphere already has ${path}; choose another --name, or --in-place`);
  }
  const dc = await datacenterParts(vim, datacenterPath);
  let folder: MoRef | undefined;
  if (!place) {
    const folderPath = options.folder ?? path.slice(0, path.lastIndexOf('/'));
    folder = await findByPath(vim, folderPath);
    if (!folder || folder.type !== 'Folder') {
      throw new TargetNotFound(`vSphere has no VM folder at ${folderPath} (--folder)`);
    }
  }
  const pool = place ? place.vapp : await resourcePoolFor(engine, vm, options, dc.hostFolder);
  const datastores = await namedObjects(vim, 'Datastore', dc.ref);
  const vmxDatastore = vm.vmPathName
    ? parseDatastorePath(vm.vmPathName, vm.path).datastore
    : undefined;
  const datastore = options.datastore ?? vmxDatastore ?? vm.disks[0]?.datastore;
  if (!datastore || !datastores.has(datastore)) {
    throw new TargetNotFound(
      `datacenter ${datacenterPath} has no datastore "${datastore ?? ''}" (--datastore); it has: ${[...datastores.keys()].join(', ')}`,
    );
  }
  const networks = await networksOf(engine, dc.ref);
  const nicSpecs: XmlObject[] = [];
  let nextKey = -100;
  for (const nic of vm.nics) {
    const wanted = options.networks?.[nic.network ?? ''] ?? options.network ?? nic.network;
    const device = vm.devices.find((d) => d.key === nic.key);
    if (!device) continue;
    const net = wanted ? networks.get(wanted) : undefined;
    if (!net) {
      throw new TargetNotFound(
        `network card "${nic.label}" was on network "${nic.network ?? '?'}", which datacenter ${datacenterPath} lacks${wanted !== nic.network ? ` (asked: "${wanted}")` : ''}; remap it with --network-map ${nic.network ?? 'OLD'}=NEW. Networks: ${[...networks.keys()].join(', ')}`,
      );
    }
    const element = without(device.element, DEVICE_DROP) as XmlObject;
    setField(element, 'key', nextKey--);
    setField(element, 'backing', nicBacking(net));
    if (nic.addressType !== 'manual') {
      delete element.macAddress;
      if ('addressType' in element) setField(element, 'addressType', 'generated');
    }
    nicSpecs.push({ operation: 'add', device: element });
  }
  const controllers = vm.devices.filter((d) => isAddableController(d.type));
  const controllerSpecs = controllers.map((c) => {
    const element = without(c.element, DEVICE_DROP) as XmlObject;
    setField(element, 'key', nextKey--);
    return { operation: 'add', device: element };
  });
  const restorable = vm.disks.filter((d) => d.stream);
  for (const disk of restorable) streamOf(source, disk);
  ctx.expectBytes?.(restorable.reduce((n, d) => n + d.capacityBytes, 0));

  checkAborted(ctx, `restore of ${path}`);
  ctx.phase(`creating VM ${path}`);
  const config: XmlObject = {
    name: vmName,
    ...(vm.version ? { version: vm.version } : {}),
    ...(vm.guestId ? { guestId: vm.guestId } : {}),
    ...(vm.annotation ? { annotation: vm.annotation } : {}),
    files: { vmPathName: `[${datastore}]` },
    numCPUs: vm.numCPU,
    ...(vm.numCoresPerSocket ? { numCoresPerSocket: vm.numCoresPerSocket } : {}),
    memoryMB: vm.memoryMB,
    deviceChange: [...controllerSpecs, ...nicSpecs],
    extraConfig: extraConfigSpec(vm.extraConfig),
    ...(vm.firmware ? { firmware: vm.firmware } : {}),
  };
  const { result } = folder
    ? await vim.runTask(
        'CreateVM_Task',
        folder,
        { config, pool: refXml(pool) },
        `creating VM ${path}`,
        ctx.signal,
      )
    : await vim.runTask('CreateChildVM_Task', pool, { config }, `creating VM ${path}`, ctx.signal);
  const created = moRef(result);
  if (!created) throw new DriverError(`vSphere created ${path} but returned no reference to it`);
  const uploaded: DatastorePath[] = [];
  try {
    const props = await vim.propsOf(created, ['config.files.vmPathName', 'config.hardware.device']);
    const vmx = parseDatastorePath(text(props['config.files.vmPathName']) ?? '', path);
    const dir: DatastorePath = {
      datastore: vmx.datastore,
      path: vmx.path.replace(/\/?[^/]*$/, ''),
    };
    const now = parseDevices(props['config.hardware.device'], `new VM ${path}`);
    const specs: XmlObject[] = [];
    let key = -1;
    for (const [i, disk] of restorable.entries()) {
      const controller = mappedController(vm.devices, now, disk.controllerKey);
      const base = i === 0 ? vmName : `${vmName}_${i}`;
      const descriptor = await uploadDisk(
        engine,
        datacenterPath,
        dir,
        base,
        disk,
        controller.type,
        source,
        ctx,
      );
      uploaded.push(descriptor);
      specs.push(
        diskDeviceSpec({
          key: key--,
          descriptor,
          controllerKey: controller.key,
          unitNumber: disk.unitNumber,
          disk,
        }),
      );
    }
    if (specs.length > 0) {
      ctx.phase(`attaching ${specs.length} disks to ${path}`);
      await vim.runTask(
        'ReconfigVM_Task',
        created,
        { spec: { deviceChange: specs } },
        `attaching the restored disks to ${path}`,
        ctx.signal,
      );
    }
    if (options.state === 'running') {
      ctx.phase(`powering ${path} on`);
      await ensurePoweredOn(engine, created, path);
    }
  } catch (err) {
    ctx.log.warn('driver.vsphere.restore_undo', { vm: path, error: err });
    await vim
      .runTask('Destroy_Task', created, {}, `removing the half-restored ${path}`)
      .catch((e: unknown) =>
        ctx.log.error('driver.vsphere.cleanup_failed', { vm: path, error: e }),
      );
    for (const f of uploaded) await deleteDisk(engine, dc.ref, f, ctx.log).catch(() => undefined);
    throw err;
  }
  return { restoredTarget: `vsphere:${path}` };
}

async function resourcePoolFor(
  engine: Engine,
  vm: SavedVm,
  options: RestoreOptions,
  hostFolder: MoRef,
): Promise<MoRef> {
  const { vim } = engine;
  const asked = options.resourcePool;
  for (const candidate of [asked, vm.resourcePool]) {
    if (!candidate) continue;
    const ref = await findByPath(vim, candidate);
    if (ref && (ref.type === 'ResourcePool' || ref.type === 'VirtualApp')) return ref;
    if (candidate === asked) {
      throw new TargetNotFound(`vSphere has no resource pool at ${candidate} (--resource-pool)`);
    }
  }
  const pools = await vim.retrieveAll('ResourcePool', ['name', 'parent'], hostFolder);
  const root = pools.find((p) => moRef(p.props.parent)?.type !== 'ResourcePool');
  if (!root) throw new TargetNotFound('the datacenter has no resource pool to put the VM in');
  return root.ref;
}

/** The new VM's controller that stands for the saved one (same type and bus number). */
function mappedController(saved: SavedDevice[], now: SavedDevice[], key: number): SavedDevice {
  const old = saved.find((d) => d.key === key);
  const match =
    now.find((d) => d.key === key && d.type === old?.type) ??
    now.find((d) => d.type === old?.type && d.busNumber === old?.busNumber);
  if (!match) {
    throw new DriverError(
      `the new VM has no controller like ${old?.label ?? key} to attach a disk to`,
    );
  }
  return match;
}

// ---- in place ------------------------------------------------------------------------------

/**
 * The hold an in-place restore journals (DESIGN: crash-safe holds) before it stages anything:
 * the VM it powers off, whether it ran, the staged copies, and everything needed to write them
 * into the VM's disks. Its `stage` moves on as the restore does:
 *
 * - `staged`: before the point of no return (uploads under way, the VM being or already powered
 *   off). Release: the staged copies are deleted and the VM is powered on again if it ran.
 * - `writing`: past the point of no return (the disks' bytes are being replaced). Release:
 *   the restore is finished from the staged copies (each copied into its disk again, the
 *   configuration restored), then they are deleted and the VM ends in the power state the
 *   restore asked for. A staged copy that is gone (nothing can finish the write) leaves the VM
 *   powered off, logged, for the operator to restore again.
 * - `written`: the disks are written. Release: the staged copies are deleted, the VM ends in the
 *   power state asked for.
 */
export const IN_PLACE_HOLD = 'vsphere.in-place-restore';

interface InPlaceDisk {
  label: string;
  /** Datastore path of the staged descriptor (its flat file beside it). */
  staged: string;
  /** Datastore path of the disk's backing descriptor, written over. */
  backing: string;
  capacityBytes: number;
  adapterType: AdapterType;
  thin: boolean;
}

export interface InPlaceHoldData extends Record<string, unknown> {
  vm: string;
  path: string;
  datacenter: string;
  wasRunning: boolean;
  /** The power state the restore ends in: `running` powers the VM on, else it stays off. */
  state?: string;
  stage: 'staged' | 'writing' | 'written';
  disks: InPlaceDisk[];
  /** The ReconfigVM_Task spec that puts the configuration back. */
  spec: XmlObject;
}

/** In place over `at` (a vApp's child found by its id), else over the VM at the point's path. */
export async function restoreInPlace(
  engine: Engine,
  vm: SavedVm,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
  at?: { ref: MoRef; path: string },
): Promise<RestoreOutcome> {
  const { vim } = engine;
  const path = at?.path ?? (options.name && options.name.includes('/') ? options.name : vm.path);
  const { datacenterPath } = checkVmPath(path);
  const ref = at?.ref ?? (await findVm(vim, path));
  const dc = await datacenterParts(vim, datacenterPath);
  const props = await vim.propsOf(ref, ['config', 'snapshot', 'runtime.powerState', 'network']);
  const power = text(props['runtime.powerState']) ?? '';
  if (list(child(props.snapshot, 'rootSnapshotList')).length > 0) {
    throw new Unsupported(
      `VM ${path} has snapshots; an in-place restore writes into its base disks, which would break them. Delete its snapshots first, or restore with --name`,
    );
  }
  const current = parseDevices(child(child(props.config, 'hardware'), 'device'), `VM ${path}`);
  const stamp = Date.now().toString(36);
  const plan: { disk: SavedDisk; controllerType: string; dir: DatastorePath; base: string }[] = [];
  const disks: InPlaceDisk[] = [];
  for (const disk of vm.disks.filter((d) => d.stream)) {
    streamOf(source, disk);
    const now =
      current.find((d) => d.type === 'VirtualDisk' && d.key === disk.key) ??
      current.find(
        (d) =>
          d.type === 'VirtualDisk' &&
          d.controllerKey === disk.controllerKey &&
          d.unitNumber === disk.unitNumber,
      );
    if (!now) {
      throw new DriverError(
        `VM ${path} no longer has disk "${disk.label}" at controller ${disk.controllerKey} unit ${disk.unitNumber}; restore it with --disk "${disk.label}" --attach-to ${path}`,
      );
    }
    const capacity = capacityOf(now);
    if (capacity !== disk.capacityBytes) {
      throw new Unsupported(
        `disk "${disk.label}" of ${path} is ${capacity} bytes now and was ${disk.capacityBytes}; vSphere cannot shrink a disk, restore with --name instead`,
      );
    }
    const fileName = text(child(child(now.element, 'backing'), 'fileName'));
    if (!fileName) throw new DriverError(`disk "${disk.label}" of ${path} has no file backing`);
    const backing = parseDatastorePath(fileName, path);
    const controllerType =
      current.find((d) => d.key === now.controllerKey)?.type ?? 'VirtualLsiLogicController';
    const dir: DatastorePath = {
      datastore: backing.datastore,
      path: backing.path.replace(/\/?[^/]*$/, ''),
    };
    const base = `stowage-restore-${stamp}-${plan.length}`;
    plan.push({ disk, controllerType, dir, base });
    disks.push({
      label: disk.label,
      staged: datastorePathText({ ...dir, path: `${dir.path ? `${dir.path}/` : ''}${base}.vmdk` }),
      backing: datastorePathText(backing),
      capacityBytes: disk.capacityBytes,
      adapterType: adapterTypeOf(controllerType),
      thin: disk.thinProvisioned ?? true,
    });
  }
  ctx.expectBytes?.(plan.reduce((n, p) => n + p.disk.capacityBytes, 0));
  // Network remaps of the cards it has now, checked before anything changes.
  const nicEdits = await remappedNics(engine, dc.ref, current, props.network, options, path);
  const spec: XmlObject = {
    ...(vm.annotation !== undefined ? { annotation: vm.annotation } : {}),
    numCPUs: vm.numCPU,
    ...(vm.numCoresPerSocket ? { numCoresPerSocket: vm.numCoresPerSocket } : {}),
    memoryMB: vm.memoryMB,
    extraConfig: extraConfigDiff(vm.extraConfig, props.config),
    ...(vm.firmware ? { firmware: vm.firmware } : {}),
    ...(nicEdits.length ? { deviceChange: nicEdits } : {}),
  };
  let data: InPlaceHoldData = {
    vm: ref.value,
    path,
    datacenter: datacenterPath,
    wasRunning: power === 'poweredOn',
    ...(options.state ? { state: options.state } : {}),
    stage: 'staged',
    disks,
    spec,
  };
  // Journaled before anything is staged or powered off: an agent killed from here on leaves
  // the record, and the next agent's sweep undoes or finishes the restore (releaseInPlaceHold).
  const hold = await takeHold(ctx.holds, 'vsphere', IN_PLACE_HOLD, data);
  const undo = async (powerOn: boolean) => {
    await deleteStaged(engine, datacenterPath, dc.ref, disks, ctx.log);
    if (powerOn && power === 'poweredOn') {
      await ensurePoweredOn(engine, ref, path).catch((err: unknown) => {
        hold?.abandon();
        throw err;
      });
    }
    await hold?.clear();
  };

  // 1. Stage every disk beside its backing while the VM keeps running.
  try {
    for (const p of plan) {
      await uploadDisk(
        engine,
        datacenterPath,
        p.dir,
        p.base,
        p.disk,
        p.controllerType,
        source,
        ctx,
      );
    }
  } catch (err) {
    await undo(false);
    throw err;
  }

  // 2. Power off; if that fails, the VM is as it was (powered on again if it ran).
  try {
    ctx.phase(`powering ${path} off`);
    ctx.log.info('driver.vsphere.power_off_for_restore', { vm: path, was: power });
    await ensurePoweredOff(engine, ref, path);
  } catch (err) {
    await undo(true).catch(() => undefined);
    throw err;
  }

  // 3. The point of no return: the disks' bytes are replaced. A job that ended meanwhile
  // leaves the VM as it was (powered on again if it ran).
  try {
    await ctx.pointOfNoReturn?.();
  } catch (err) {
    await undo(true);
    throw err;
  }
  data = { ...data, stage: 'writing' };
  await hold?.update(data);
  try {
    await writeInPlace(engine, data, dc.ref, ctx.phase.bind(ctx));
  } catch (err) {
    await deleteStaged(engine, datacenterPath, dc.ref, disks, ctx.log);
    await hold?.clear();
    throw new DriverError(
      `the in-place restore of ${path} failed while replacing its disks (${(err as Error).message}); the VM is powered off and its disks may be partly written: restore it again`,
      { cause: err },
    );
  }
  data = { ...data, stage: 'written' };
  await hold?.update(data);
  await deleteStaged(engine, datacenterPath, dc.ref, disks, ctx.log);
  // A restored VM comes back powered off (as from a snapshot without memory) unless asked.
  if (options.state === 'running') {
    ctx.phase(`powering ${path} on`);
    await ensurePoweredOn(engine, ref, path);
  }
  await hold?.clear();
  return { restoredTarget: `vsphere:${path}` };
}

/**
 * Past the point of no return: each staged copy into its disk's backing
 * (VirtualDiskManager.CopyVirtualDisk_Task, force), its descriptor checked, then the
 * configuration (ReconfigVM_Task). Idempotent: a release runs it again after a kill.
 */
async function writeInPlace(
  engine: Engine,
  data: InPlaceHoldData,
  dc: MoRef,
  phase: (text: string) => void,
): Promise<void> {
  const { vim } = engine;
  const sc = await vim.service();
  const ref: MoRef = { type: 'VirtualMachine', value: data.vm };
  for (const d of data.disks) {
    phase(`writing disk ${d.label}`);
    if (!sc.virtualDiskManager) throw new Unsupported('this vSphere has no VirtualDiskManager');
    await vim.runTask(
      'CopyVirtualDisk_Task',
      sc.virtualDiskManager,
      {
        sourceName: d.staged,
        sourceDatacenter: refXml(dc),
        destName: d.backing,
        destDatacenter: refXml(dc),
        force: true,
      },
      `writing disk ${d.label} of ${data.path}`,
    );
    await fixDescriptor(engine, data.datacenter, d);
  }
  phase(`restoring the configuration of ${data.path}`);
  await vim.runTask(
    'ReconfigVM_Task',
    ref,
    { spec: data.spec },
    `restoring the configuration of ${data.path}`,
  );
}

async function deleteStaged(
  engine: Engine,
  dcPath: string,
  dc: MoRef,
  disks: InPlaceDisk[],
  log: Logger,
): Promise<void> {
  for (const d of disks) {
    const staged = parseDatastorePath(d.staged, 'staged disk');
    const flat = { ...staged, path: staged.path.replace(/\.vmdk$/, '-flat.vmdk') };
    // Nothing to delete (an upload that never started, a copy already deleted): skip it.
    const [descriptor, bytes] = await Promise.all([
      engine.files.size(dcPath, staged).catch(() => 0),
      engine.files.size(dcPath, flat).catch(() => 0),
    ]);
    if (descriptor === undefined && bytes === undefined) continue;
    await deleteDisk(engine, dc, staged, log);
  }
}

/** Longest a release waits for tasks the killed agent left running on the VM (a power-off). */
const RELEASE_TASK_WAIT_MS = 5 * 60_000;

/**
 * Releases an in-place restore a killed agent left (IN_PLACE_HOLD above says what each stage
 * does). Waits first for the VM's tasks still running (a power-off the killed agent asked for
 * goes on in vSphere), so it decides on the VM as it ends up. Idempotent; throws (keeping the
 * record) when vSphere refuses a step.
 */
export async function releaseInPlaceHold(
  engine: Engine,
  record: HoldRecord,
  log: Logger,
): Promise<void> {
  const data = record.data as InPlaceHoldData;
  const { vim } = engine;
  const ref: MoRef = { type: 'VirtualMachine', value: String(data.vm) };
  const facts = { vm: data.path, stage: data.stage };
  const dc = await datacenterParts(vim, data.datacenter);
  let props: Record<string, XmlValue>;
  try {
    props = await vim.propsOf(ref, ['recentTask']);
  } catch (err) {
    if (!(err instanceof TargetNotFound)) throw err;
    // The VM is gone: only the staged copies are left to remove.
    await deleteStaged(engine, data.datacenter, dc.ref, data.disks, log);
    return;
  }
  await waitForTasks(engine, refList(props.recentTask), data.path);
  if (data.stage === 'writing') {
    const missing: string[] = [];
    for (const d of data.disks) {
      const staged = parseDatastorePath(d.staged, 'staged disk');
      const flat = { ...staged, path: staged.path.replace(/\.vmdk$/, '-flat.vmdk') };
      if ((await engine.files.size(data.datacenter, flat)) === undefined) missing.push(d.label);
    }
    if (missing.length > 0) {
      // Nothing can finish the write: the VM stays off rather than boot half-written disks.
      log.error('driver.vsphere.in_place_unfinished', {
        ...facts,
        missing,
        next: 'the VM is left powered off; restore it again',
      });
      await deleteStaged(engine, data.datacenter, dc.ref, data.disks, log);
      return;
    }
    await ensurePoweredOff(engine, ref, data.path);
    await writeInPlace(engine, data, dc.ref, () => undefined);
    log.info('driver.vsphere.in_place_finished', facts);
  }
  await deleteStaged(engine, data.datacenter, dc.ref, data.disks, log);
  const powerOn = data.stage === 'staged' ? data.wasRunning : data.state === 'running';
  if (powerOn) await ensurePoweredOn(engine, ref, data.path);
  log.info('driver.vsphere.hold_released', { ...facts, poweredOn: powerOn });
}

async function waitForTasks(engine: Engine, tasks: MoRef[], path: string): Promise<void> {
  const deadline = Date.now() + RELEASE_TASK_WAIT_MS;
  for (const task of tasks) {
    for (;;) {
      let state: string | undefined;
      try {
        state = text(child((await engine.vim.propsOf(task, ['info'])).info, 'state'));
      } catch (err) {
        if (err instanceof TargetNotFound) break;
        throw err;
      }
      if (state !== 'queued' && state !== 'running') break;
      if (Date.now() > deadline) {
        throw new DriverError(
          `VM ${path} still has task ${task.value} running after ${RELEASE_TASK_WAIT_MS / 1000} s; released later`,
        );
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** Edits moving the VM's cards from the networks `options.networks` names to their new ones. */
async function remappedNics(
  engine: Engine,
  dc: MoRef,
  devices: SavedDevice[],
  networkProp: XmlValue | undefined,
  options: RestoreOptions,
  path: string,
): Promise<XmlObject[]> {
  const map = options.networks ?? {};
  if (Object.keys(map).length === 0) return [];
  const nics = nicsOf(devices, await networkNames(engine, networkProp));
  const networks = await networksOf(engine, dc);
  const edits: XmlObject[] = [];
  for (const nic of nics) {
    const wanted = nic.network !== undefined ? map[nic.network] : undefined;
    if (wanted === undefined) continue;
    const net = networks.get(wanted);
    if (!net) {
      throw new TargetNotFound(
        `--network-map ${nic.network}=${wanted}: the datacenter of ${path} has no network "${wanted}"; networks: ${[...networks.keys()].join(', ')}`,
      );
    }
    const device = devices.find((d) => d.key === nic.key)!;
    const element = without(device.element, ['dynamicProperty']) as XmlObject;
    setField(element, 'backing', nicBacking(net));
    edits.push({ operation: 'edit', device: element });
  }
  return edits;
}

function capacityOf(device: SavedDevice): number {
  const bytes = text(child(device.element, 'capacityInBytes'));
  if (bytes) return Number(bytes);
  return Number(text(child(device.element, 'capacityInKB')) ?? '0') * 1024;
}

/**
 * After a disk copy, the backing's descriptor must name its own flat extent. A real vSphere
 * writes it so; a server that copied the staged descriptor verbatim (the simulator copies files)
 * is given a correct one.
 */
async function fixDescriptor(engine: Engine, dcPath: string, d: InPlaceDisk): Promise<void> {
  const backing = parseDatastorePath(d.backing, `disk ${d.label}`);
  const base = backing.path.split('/').pop()!;
  const raw = await engine.files.readSmall(dcPath, backing);
  const extent = flatExtentOf(base, raw?.toString('utf8'), `disk ${d.label}`);
  const wanted = base.replace(/\.vmdk$/, '-flat.vmdk');
  if ('file' in extent && extent.file === wanted) return;
  if ('file' in extent && !extent.file.startsWith('stowage-restore-')) return;
  const textOut = flatDescriptor({
    flatFile: wanted,
    capacityBytes: d.capacityBytes,
    adapterType: d.adapterType,
    thin: d.thin,
  });
  await engine.files.put(dcPath, backing, Buffer.from(textOut), Buffer.byteLength(textOut));
}

/** The saved extraConfig, plus keys added since set to "" (which removes them). */
function extraConfigDiff(saved: { key: string; value: string }[], config: unknown): XmlObject[] {
  const keep = saved.filter((e) => !EXTRA_CONFIG_DROP.test(e.key));
  const savedKeys = new Set(keep.map((e) => e.key));
  const now = list(child(config as XmlObject, 'extraConfig'))
    .map((o) => text(child(o, 'key')))
    .filter((k): k is string => k !== undefined && !EXTRA_CONFIG_DROP.test(k) && !savedKeys.has(k));
  return extraConfigSpec([...keep, ...now.map((key) => ({ key, value: '' }))]);
}

// ---- one disk to another VM ----------------------------------------------------------------

async function attachDisk(
  engine: Engine,
  vm: SavedVm,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  const { vim } = engine;
  if (!options.disk || !options.attachTo) {
    throw new ValidationError('--disk LABEL and --attach-to vsphere:DC/vm/NAME go together');
  }
  const disk = vm.disks.find((d) => d.label === options.disk);
  if (!disk) {
    throw new ValidationError(
      `the point has no disk "${options.disk}"; its disks: ${vm.disks.map((d) => d.label).join(', ')}`,
    );
  }
  streamOf(source, disk);
  const path = options.attachTo.replace(/^vsphere:/, '');
  const { datacenterPath, vmName } = checkVmPath(path);
  const target = await findVm(vim, path);
  const dc = await datacenterParts(vim, datacenterPath);
  const props = await vim.propsOf(target, ['config.hardware.device', 'config.files.vmPathName']);
  const devices = parseDevices(props['config.hardware.device'], `VM ${path}`);
  const controllers = devices.filter(
    (d) => isAddableController(d.type) || d.type === 'VirtualIDEController',
  );
  const savedController = vm.devices.find((d) => d.key === disk.controllerKey);
  let controller: SavedDevice | undefined;
  if (options.controllerKey !== undefined) {
    controller = controllers.find((c) => c.key === options.controllerKey);
    if (!controller) {
      throw new ValidationError(
        `VM ${path} has no disk controller with key ${options.controllerKey}; its controllers: ${controllers.map((c) => `${c.key} (${c.label})`).join(', ')}`,
      );
    }
  } else {
    controller =
      controllers.find((c) => c.key === disk.controllerKey && c.type === savedController?.type) ??
      controllers.find((c) => c.type === savedController?.type) ??
      controllers.find((c) => isAddableController(c.type));
    if (!controller)
      throw new DriverError(`VM ${path} has no disk controller to attach the disk to`);
  }
  const used = new Set(
    devices.filter((d) => d.controllerKey === controller!.key).map((d) => d.unitNumber),
  );
  // SCSI reserves unit 7 for the controller itself.
  const reserved = /SCSI|LsiLogic|BusLogic/.test(controller.type) ? 7 : -1;
  let unit = options.unitNumber;
  if (unit !== undefined) {
    if (!Number.isInteger(unit) || unit < 0 || unit > 64 || unit === reserved) {
      throw new ValidationError(`unit ${unit} is not usable on ${controller.label}`);
    }
    if (used.has(unit)) {
      throw new NameTaken(
        `unit ${unit} of ${controller.label} (key ${controller.key}) on ${path} is taken; free units: ${freeUnits(used, reserved).join(', ')}`,
      );
    }
  } else {
    unit = freeUnits(used, reserved)[0];
    if (unit === undefined)
      throw new DriverError(`${controller.label} on ${path} has no free unit`);
  }
  const vmx = parseDatastorePath(text(props['config.files.vmPathName']) ?? '', path);
  const datastore = options.datastore ?? vmx.datastore;
  const dir: DatastorePath = {
    datastore,
    path: datastore === vmx.datastore ? vmx.path.replace(/\/?[^/]*$/, '') : vmName,
  };
  if (datastore !== vmx.datastore) {
    const sc = await vim.service();
    await vim
      .call('MakeDirectory', sc.fileManager, {
        name: `[${datastore}] ${dir.path}`,
        datacenter: refXml(dc.ref),
        createParentDirectories: true,
      })
      .catch((err: unknown) => {
        if (!(err instanceof VimFault && err.faultType === 'FileAlreadyExists')) throw err;
      });
  }
  ctx.expectBytes?.(disk.capacityBytes);
  const base = `${vmName}-${disk.label.replace(/[^A-Za-z0-9_-]+/g, '_')}-${Date.now().toString(36)}`;
  const descriptor = await uploadDisk(
    engine,
    datacenterPath,
    dir,
    base,
    disk,
    controller.type,
    source,
    ctx,
  );
  try {
    ctx.phase(`attaching disk ${disk.label} to ${path}`);
    await vim.runTask(
      'ReconfigVM_Task',
      target,
      {
        spec: {
          deviceChange: [
            diskDeviceSpec({
              key: -1,
              descriptor,
              controllerKey: controller.key,
              unitNumber: unit,
              disk,
            }),
          ],
        },
      },
      `attaching disk ${disk.label} to ${path}`,
      ctx.signal,
    );
  } catch (err) {
    await deleteDisk(engine, dc.ref, descriptor, ctx.log);
    throw err;
  }
  return { restoredTarget: `vsphere:${path}` };
}

function freeUnits(used: Set<number | undefined>, reserved: number): number[] {
  const out: number[] = [];
  for (let u = 0; u < 16; u++) if (!used.has(u) && u !== reserved) out.push(u);
  return out;
}
