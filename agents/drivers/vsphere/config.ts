/**
 * A VM's configuration as a recovery point keeps it: the facts a restore needs in plain fields
 * (CPU, memory, firmware, extraConfig, disks with their controller key, unit number, backing and
 * capacity, network cards with their network's name) and every device as vSphere described it
 * (its parsed element, normalized: `@_xsi:type` for the type, no namespace declarations), so the
 * controllers and cards can be replayed into a new VM in the WSDL's element order.
 *
 * Nothing here trusts the answer's shape: numbers are checked, and a disk without a file backing
 * (an RDM in physical mode, say) is recorded and refused by name where bytes are needed.
 */
import { DriverError } from '../../../kernel/errors';
import { parseDatastorePath } from './inventory';
import {
  child,
  isObject,
  list,
  moRef,
  needInt,
  optBool,
  optInt,
  optText,
  text,
  xsiType,
  type MoRef,
  type XmlObject,
  type XmlValue,
} from './xml';

export const VM_FORMAT = 'stowage-vsphere-vm/1';

export interface SavedDevice {
  key: number;
  type: string;
  label: string;
  controllerKey?: number;
  unitNumber?: number;
  busNumber?: number;
  /** The device element as vSphere wrote it (normalized). */
  element: XmlObject;
}

export interface SavedDisk {
  key: number;
  label: string;
  controllerKey: number;
  unitNumber: number;
  capacityBytes: number;
  /** The backing file at backup time: `[datastore] dir/name.vmdk`. */
  fileName: string;
  datastore: string;
  backingType: string;
  diskMode?: string;
  thinProvisioned?: boolean;
  uuid?: string;
  /** CBT's change id of the disk in the backup snapshot, when change tracking was on. */
  changeId?: string;
  /** The stream holding its bytes (absent: excluded from this point). */
  stream?: string;
  /** How its bytes were read: `datastore-http`, `nfc`; with `cbt` when CBT skipped areas. */
  transport?: string;
}

export interface SavedNic {
  key: number;
  label: string;
  type: string;
  /** The network's name (a standard port group or a distributed port group). */
  network?: string;
  macAddress?: string;
  addressType?: string;
}

export interface SavedVm {
  format: typeof VM_FORMAT;
  /** The inventory path, `DC/vm/NAME`. */
  path: string;
  name: string;
  datacenter: string;
  /** Inventory path of the VM's folder and resource pool at backup time. */
  folder?: string;
  resourcePool?: string;
  powerState: string;
  guestId?: string;
  version?: string;
  firmware?: string;
  numCPU: number;
  numCoresPerSocket?: number;
  memoryMB: number;
  annotation?: string;
  uuid?: string;
  instanceUuid?: string;
  changeTrackingEnabled: boolean;
  /** `[datastore] dir/name.vmx`. */
  vmPathName?: string;
  extraConfig: { key: string; value: string }[];
  devices: SavedDevice[];
  disks: SavedDisk[];
  nics: SavedNic[];
}

/** The types vSphere creates in every new VM by itself: never added again by a restore. */
export const BUILT_IN_DEVICES = new Set([
  'VirtualIDEController',
  'VirtualPS2Controller',
  'VirtualPCIController',
  'VirtualSIOController',
  'VirtualKeyboard',
  'VirtualPointingDevice',
  'VirtualMachineVideoCard',
  'VirtualMachineVMCIDevice',
]);

const CONTROLLER_TYPES = new Set([
  'VirtualLsiLogicController',
  'VirtualLsiLogicSASController',
  'ParaVirtualSCSIController',
  'VirtualBusLogicController',
  'VirtualAHCIController',
  'VirtualNVMEController',
  'VirtualSATAController',
  'VirtualSCSIController',
]);

export function isAddableController(type: string): boolean {
  return CONTROLLER_TYPES.has(type);
}

export function isEthernetCard(type: string): boolean {
  return /^Virtual(E1000e?|Vmxnet\d?|PCNet32|Sriov\w*EthernetCard|EthernetCard)$/.test(type);
}

/** Re-keys namespaced type attributes to `@_xsi:type` and drops namespace declarations. */
export function normalize(node: XmlValue): XmlValue {
  if (Array.isArray(node)) return node.map(normalize);
  if (!isObject(node)) return node;
  const out: XmlObject = {};
  for (const [k, v] of Object.entries(node)) {
    if (v === undefined || k.startsWith('@_xmlns')) continue;
    if (k.startsWith('@_') && k.endsWith(':type')) {
      out['@_xsi:type'] = String(v).replace(/^.*:/, '');
      continue;
    }
    out[k] = typeof v === 'object' ? normalize(v) : v;
  }
  return out;
}

/**
 * The devices of a `config.hardware.device` property (an ArrayOfVirtualDevice, its elements
 * named VirtualDevice), or the `device` elements of a `config`'s `hardware`.
 */
export function parseDevices(node: XmlValue | undefined, what: string): SavedDevice[] {
  const devices: SavedDevice[] = [];
  const array = isObject(node) ? child(node, 'VirtualDevice') : undefined;
  for (const raw of list(array ?? node)) {
    const element = normalize(raw) as XmlObject;
    const type = xsiType(element) ?? 'VirtualDevice';
    const d: SavedDevice = {
      key: needInt(element, 'key', `${what}: a device`),
      type,
      label: optText(child(element, 'deviceInfo'), 'label') ?? `${type}-${optText(element, 'key')}`,
      element,
    };
    const controllerKey = optInt(element, 'controllerKey', `${what}: device ${d.key}`);
    const unitNumber = optInt(element, 'unitNumber', `${what}: device ${d.key}`);
    const busNumber = optInt(element, 'busNumber', `${what}: device ${d.key}`);
    if (controllerKey !== undefined) d.controllerKey = controllerKey;
    if (unitNumber !== undefined) d.unitNumber = unitNumber;
    if (busNumber !== undefined) d.busNumber = busNumber;
    devices.push(d);
  }
  return devices;
}

export function disksOf(devices: SavedDevice[], what: string): SavedDisk[] {
  const disks: SavedDisk[] = [];
  for (const d of devices) {
    if (d.type !== 'VirtualDisk') continue;
    const backing = child(d.element, 'backing');
    const fileName = optText(backing, 'fileName');
    if (d.controllerKey === undefined || d.unitNumber === undefined) {
      throw new DriverError(`${what}: disk "${d.label}" has no controller key or unit number`);
    }
    const bytesRaw = optInt(d.element, 'capacityInBytes', `${what}: disk ${d.label}`);
    const kb = optInt(d.element, 'capacityInKB', `${what}: disk ${d.label}`);
    const capacityBytes = bytesRaw ?? (kb !== undefined ? kb * 1024 : undefined);
    if (capacityBytes === undefined || capacityBytes < 0) {
      throw new DriverError(`${what}: disk "${d.label}" reports no capacity`);
    }
    const disk: SavedDisk = {
      key: d.key,
      label: d.label,
      controllerKey: d.controllerKey,
      unitNumber: d.unitNumber,
      capacityBytes,
      fileName: fileName ?? '',
      datastore: fileName ? parseDatastorePath(fileName, `${what}: disk ${d.label}`).datastore : '',
      backingType: xsiType(backing) ?? 'unknown',
    };
    const diskMode = optText(backing, 'diskMode');
    const thin = optBool(backing, 'thinProvisioned');
    const uuid = optText(backing, 'uuid');
    const changeId = optText(backing, 'changeId');
    if (diskMode) disk.diskMode = diskMode;
    if (thin !== undefined) disk.thinProvisioned = thin;
    if (uuid) disk.uuid = uuid;
    if (changeId) disk.changeId = changeId;
    disks.push(disk);
  }
  return disks;
}

/** Whether a disk's backing at the snapshot is a flat file readable as raw bytes. */
export function flatBacking(device: SavedDevice): boolean {
  const backing = child(device.element, 'backing');
  return (
    xsiType(backing) === 'VirtualDiskFlatVer2BackingInfo' && child(backing, 'parent') === undefined
  );
}

export function nicsOf(devices: SavedDevice[], networkNames: Map<string, string>): SavedNic[] {
  const nics: SavedNic[] = [];
  for (const d of devices) {
    if (!isEthernetCard(d.type)) continue;
    const backing = child(d.element, 'backing');
    let network = optText(backing, 'deviceName');
    const portgroupKey = optText(child(backing, 'port'), 'portgroupKey');
    if (portgroupKey) network = networkNames.get(portgroupKey) ?? network;
    const netRef = moRef(child(backing, 'network'));
    if (netRef) network = networkNames.get(netRef.value) ?? network;
    const nic: SavedNic = { key: d.key, label: d.label, type: d.type };
    if (network) nic.network = network;
    const mac = optText(d.element, 'macAddress');
    const addressType = optText(d.element, 'addressType');
    if (mac) nic.macAddress = mac;
    if (addressType) nic.addressType = addressType;
    nics.push(nic);
  }
  return nics;
}

export function extraConfigOf(node: XmlValue | undefined): { key: string; value: string }[] {
  const out: { key: string; value: string }[] = [];
  for (const o of list(child(node, 'extraConfig'))) {
    const key = optText(o, 'key');
    const value = text(child(o, 'value'));
    if (key !== undefined) out.push({ key, value: value ?? '' });
  }
  return out;
}

/** The VM's `config` (VirtualMachineConfigInfo) as a SavedVm, less what the caller adds. */
export function parseConfig(
  config: XmlValue | undefined,
  what: string,
): Omit<SavedVm, 'path' | 'name' | 'datacenter' | 'powerState' | 'nics'> {
  if (!isObject(config)) throw new DriverError(`${what}: vSphere returned no configuration`);
  const hardware = child(config, 'hardware');
  const devices = parseDevices(child(hardware, 'device'), what);
  const saved: Omit<SavedVm, 'path' | 'name' | 'datacenter' | 'powerState' | 'nics'> = {
    format: VM_FORMAT,
    numCPU: needInt(hardware, 'numCPU', what),
    memoryMB: needInt(hardware, 'memoryMB', what),
    changeTrackingEnabled: optBool(config, 'changeTrackingEnabled') ?? false,
    extraConfig: extraConfigOf(config),
    devices,
    disks: disksOf(devices, what),
  };
  const cores = optInt(hardware, 'numCoresPerSocket', what);
  if (cores !== undefined) saved.numCoresPerSocket = cores;
  for (const field of [
    'guestId',
    'version',
    'firmware',
    'annotation',
    'uuid',
    'instanceUuid',
  ] as const) {
    const v = optText(config, field);
    if (v) saved[field] = v;
  }
  const vmPathName = optText(child(config, 'files'), 'vmPathName');
  if (vmPathName) saved.vmPathName = vmPathName;
  return saved;
}

/** Keeps the references a device names so the caller can look their names up. */
export function networkRefsOf(devices: SavedDevice[]): MoRef[] {
  const refs: MoRef[] = [];
  for (const d of devices) {
    const ref = moRef(child(child(d.element, 'backing'), 'network'));
    if (ref) refs.push(ref);
  }
  return refs;
}
