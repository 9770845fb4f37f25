/**
 * VMDK descriptors (VMware's "Virtual Disk Format 1.1"): the small text file a disk's backing
 * names, whose extent lines say where the bytes are. Stowage reads raw bytes only from flat
 * extents (`RW <sectors> VMFS|FLAT "name-flat.vmdk"`); a sparse or delta extent needs NFC.
 * For a disk it uploads, it writes a descriptor of one flat extent, as vmkfstools would.
 */
import { randomBytes } from 'node:crypto';
import { DriverError } from '../../../kernel/errors';

export interface Extent {
  access: string;
  sectors: number;
  type: string;
  file: string;
}

const SECTOR = 512;

/** The extents of a descriptor; [] when it has none (the simulator's descriptors are empty). */
export function parseDescriptor(text: string, what: string): Extent[] {
  if (text.includes('\u0000')) {
    throw new DriverError(
      `${what}: the descriptor is binary (a sparse VMDK); it needs NFC to be read`,
    );
  }
  const extents: Extent[] = [];
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s+"([^"]+)"/.exec(line);
    if (!m) continue;
    const file = m[4]!;
    if (file.includes('/') || file.includes('..')) {
      throw new DriverError(`${what}: extent "${file}" lies outside the disk's directory; refused`);
    }
    extents.push({ access: m[1]!, sectors: Number(m[2]), type: m[3]!, file });
  }
  return extents;
}

/** The flat extent's file name beside the descriptor, or why the disk has none. */
export function flatExtentOf(
  descriptorName: string,
  text: string | undefined,
  what: string,
): { file: string } | { refused: string } {
  const extents = text === undefined ? [] : parseDescriptor(text, what);
  if (extents.length === 0) {
    // An empty or missing descriptor (the simulator's): the flat file's conventional name.
    return { file: descriptorName.replace(/\.vmdk$/, '-flat.vmdk') };
  }
  if (extents.length > 1) return { refused: `it has ${extents.length} extents` };
  const e = extents[0]!;
  if (e.type !== 'VMFS' && e.type !== 'FLAT') return { refused: `its extent is ${e.type}` };
  return { file: e.file };
}

export type AdapterType = 'lsilogic' | 'buslogic' | 'pvscsi' | 'ide';

export function adapterTypeOf(controllerType: string): AdapterType {
  if (controllerType === 'ParaVirtualSCSIController') return 'pvscsi';
  if (controllerType === 'VirtualBusLogicController') return 'buslogic';
  if (/IDE|AHCI|SATA/.test(controllerType)) return 'ide';
  return 'lsilogic';
}

/** A descriptor for one flat extent of `capacityBytes` (rounded up to whole sectors). */
export function flatDescriptor(options: {
  flatFile: string;
  capacityBytes: number;
  adapterType: AdapterType;
  thin: boolean;
}): string {
  const sectors = Math.ceil(options.capacityBytes / SECTOR);
  const heads = 255;
  const perTrack = 63;
  const cylinders = Math.max(1, Math.ceil(sectors / (heads * perTrack)));
  const cid = randomBytes(4).toString('hex');
  return [
    '# Disk DescriptorFile',
    'version=1',
    'encoding="UTF-8"',
    `CID=${cid}`,
    'parentCID=ffffffff',
    'createType="vmfs"',
    '',
    '# Extent description',
    `RW ${sectors} VMFS "${options.flatFile}"`,
    '',
    '# The Disk Data Base',
    '#DDB',
    '',
    `ddb.adapterType = "${options.adapterType}"`,
    `ddb.geometry.cylinders = "${cylinders}"`,
    `ddb.geometry.heads = "${heads}"`,
    `ddb.geometry.sectors = "${perTrack}"`,
    `ddb.thinProvisioned = "${options.thin ? 1 : 0}"`,
    'ddb.virtualHWVersion = "13"',
    '',
  ].join('\n');
}
