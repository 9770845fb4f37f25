/**
 * What every vSphere operation shares: the SOAP client, datastore file access, the disk
 * transports in order of preference, and the lookups of a VM's facts (its path, datacenter,
 * folder, resource pool, networks) that backups and restores both need.
 */
import type { Logger } from '../../../kernel/logger';
import { DatastoreFiles } from './datastore';
import { loadPaths, refList, type Paths } from './inventory';
import { vimChangeTracking, type ChangeTracking, type DiskTransport } from './transport';
import type { VimClient } from './vim';
import { moRef, text, type MoRef, type XmlValue } from './xml';

export interface Engine {
  vim: VimClient;
  files: DatastoreFiles;
  /** Tried in order; the first that does not refuse a disk reads it. */
  transports: DiskTransport[];
  /** Changed-block tracking (vSphere's own unless a test gives another). */
  changes: ChangeTracking;
  log: Logger;
}

export interface VmFacts {
  ref: MoRef;
  props: Record<string, XmlValue>;
  paths: Paths;
  datacenterPath: string;
  folder?: string;
  resourcePool?: string;
  powerState: string;
}

export const VM_PROPS = [
  'name',
  'parent',
  'resourcePool',
  'runtime.powerState',
  'config',
  'snapshot',
  'guest.toolsRunningStatus',
  'network',
];

export async function vmFacts(engine: Engine, ref: MoRef, path: string): Promise<VmFacts> {
  const props = await engine.vim.propsOf(ref, VM_PROPS);
  const paths = await loadPaths(engine.vim);
  const parent = moRef(props.parent);
  const pool = moRef(props.resourcePool);
  const dc = parent ? paths.datacenterOf(parent) : undefined;
  const facts: VmFacts = {
    ref,
    props,
    paths,
    datacenterPath: dc?.path ?? path.slice(0, path.lastIndexOf('/vm/')),
    powerState: text(props['runtime.powerState']) ?? 'unknown',
  };
  const folder = parent ? paths.pathOf(parent) : undefined;
  const poolPath = pool ? paths.pathOf(pool) : undefined;
  if (folder !== undefined) facts.folder = folder;
  if (poolPath !== undefined) facts.resourcePool = poolPath;
  return facts;
}

/**
 * Names of the networks a VM's cards use, by reference value and, for distributed port groups,
 * by port group key (a card's DVS backing names the key, not the network).
 */
export async function networkNames(
  engine: Engine,
  networks: XmlValue | undefined,
): Promise<Map<string, string>> {
  const names = new Map<string, string>();
  const byType = new Map<string, MoRef[]>();
  for (const ref of refList(networks)) {
    byType.set(ref.type, [...(byType.get(ref.type) ?? []), ref]);
  }
  for (const [type, refs] of byType) {
    const paths = type === 'DistributedVirtualPortgroup' ? ['name', 'key'] : ['name'];
    for (const o of await engine.vim.retrieveOf(refs, paths)) {
      const name = text(o.props.name);
      if (!name) continue;
      names.set(o.ref.value, name);
      const key = text(o.props.key);
      if (key) names.set(key, name);
    }
  }
  return names;
}

export function engineOf(
  vim: VimClient,
  log: Logger,
  transports?: (files: DatastoreFiles) => DiskTransport[],
  changes?: ChangeTracking,
): Engine {
  const files = new DatastoreFiles(vim);
  return {
    vim,
    files,
    transports: transports ? transports(files) : [],
    changes: changes ?? vimChangeTracking(vim),
    log,
  };
}
