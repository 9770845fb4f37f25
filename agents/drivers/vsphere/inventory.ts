/**
 * Where things are in vSphere's inventory. A VM target is its inventory path below the root
 * folder, `DC/vm/NAME` (with any folders between: `DC/vm/prod/web`, and a datacenter in a folder:
 * `F/DC/vm/NAME`), as vSphere's SearchIndex.FindByInventoryPath takes it. Paths are built from
 * the `name` and `parent` of every Folder and Datacenter (one ContainerView each); VMs inside a
 * vApp have no folder parent and are not VM targets here (they belong to the vApp).
 */
import { DriverError, TargetNotFound, ValidationError } from '../../../kernel/errors';
import type { VimClient } from './vim';
import { child, list, moRef, optText, text, type MoRef, type XmlValue } from './xml';

/** The datastore path `[ds] dir/file.vmdk` split. */
export interface DatastorePath {
  datastore: string;
  path: string;
}

export function parseDatastorePath(raw: string, what: string): DatastorePath {
  const m = /^\[([^\]]+)\]\s*(.*)$/.exec(raw.trim());
  if (!m || m[2]!.includes('..')) {
    throw new DriverError(
      `${what}: "${raw.slice(0, 200)}" is not a datastore path ([datastore] dir/file)`,
    );
  }
  return { datastore: m[1]!, path: m[2]! };
}

export function datastorePathText(p: DatastorePath): string {
  return `[${p.datastore}] ${p.path}`;
}

/** Checks a `vsphere:` target's name: `DC/vm/NAME` (folders allowed between). */
export function checkVmPath(name: string): { datacenterPath: string; vmName: string } {
  const parts = name.split('/');
  const vmAt = parts.lastIndexOf('vm');
  if (parts.some((p) => p.length === 0) || vmAt < 1 || vmAt === parts.length - 1) {
    throw new ValidationError(
      `"${name}" is not a VM inventory path: write DATACENTER/vm/NAME (for example vsphere:DC0/vm/appliance)`,
    );
  }
  return {
    datacenterPath: parts.slice(0, vmAt).join('/'),
    vmName: parts[parts.length - 1]!,
  };
}

export interface Paths {
  /** Inventory path of a Folder, Datacenter or VirtualApp by reference value. */
  pathOf(ref: MoRef): string | undefined;
  /** The datacenter (path and reference) an object's path lies in. */
  datacenterOf(ref: MoRef): { path: string; ref: MoRef } | undefined;
}

interface Node {
  name: string;
  parent?: MoRef;
  type: string;
}

/** Names and parents of every folder and datacenter, so paths can be built locally. */
export async function loadPaths(vim: VimClient): Promise<Paths> {
  const sc = await vim.service();
  const nodes = new Map<string, Node>();
  for (const type of ['Folder', 'Datacenter', 'VirtualApp', 'ResourcePool', 'ComputeResource']) {
    for (const o of await vim.retrieveAll(type, ['name', 'parent'])) {
      const parent = moRef(o.props.parent);
      nodes.set(key(o.ref), {
        name: text(o.props.name) ?? o.ref.value,
        type,
        ...(parent ? { parent } : {}),
      });
    }
  }
  const root = key(sc.rootFolder);
  const cache = new Map<string, string | undefined>();
  function pathOf(ref: MoRef): string | undefined {
    const k = key(ref);
    if (cache.has(k)) return cache.get(k);
    let result: string | undefined;
    if (k === root) result = '';
    else {
      const node = nodes.get(k);
      const parentPath = node?.parent ? pathOf(node.parent) : undefined;
      if (node && parentPath !== undefined) {
        result = parentPath === '' ? node.name : `${parentPath}/${node.name}`;
      }
    }
    cache.set(k, result);
    return result;
  }
  function datacenterOf(ref: MoRef): { path: string; ref: MoRef } | undefined {
    let at: MoRef | undefined = ref;
    for (let hops = 0; at && hops < 64; hops++) {
      if (at.type === 'Datacenter') {
        const path = pathOf(at);
        return path === undefined ? undefined : { path, ref: at };
      }
      at = nodes.get(key(at))?.parent;
    }
    return undefined;
  }
  return { pathOf, datacenterOf };
}

function key(ref: MoRef): string {
  return `${ref.type}:${ref.value}`;
}

/** The VM at an inventory path; TargetNotFound when there is none (or it is not a VM). */
export async function findVm(vim: VimClient, path: string): Promise<MoRef> {
  checkVmPath(path);
  const ref = await findByPath(vim, path);
  if (!ref || ref.type !== 'VirtualMachine') {
    throw new TargetNotFound(
      `vSphere has no VM at ${path}; \`stowage targets --platform vsphere\` lists the VMs`,
    );
  }
  return ref;
}

export async function findByPath(vim: VimClient, path: string): Promise<MoRef | undefined> {
  const sc = await vim.service();
  return moRef(await vim.call('FindByInventoryPath', sc.searchIndex, { inventoryPath: path }));
}

/** The datacenter's folders and datastore/network names, for restores. */
export async function datacenterParts(
  vim: VimClient,
  dcPath: string,
): Promise<{ ref: MoRef; vmFolder: MoRef; hostFolder: MoRef }> {
  const ref = await findByPath(vim, dcPath);
  if (!ref || ref.type !== 'Datacenter') {
    throw new TargetNotFound(`vSphere has no datacenter at ${dcPath}`);
  }
  const props = await vim.propsOf(ref, ['vmFolder', 'hostFolder']);
  const vmFolder = moRef(props.vmFolder);
  const hostFolder = moRef(props.hostFolder);
  if (!vmFolder || !hostFolder) throw new DriverError(`datacenter ${dcPath} has no vm/host folder`);
  return { ref, vmFolder, hostFolder };
}

/** Every object of `type` (Datastore, Network...) below `root`, by name. */
export async function namedObjects(
  vim: VimClient,
  type: string,
  root: MoRef,
  extra: string[] = [],
): Promise<Map<string, { ref: MoRef; props: Record<string, XmlValue> }>> {
  const out = new Map<string, { ref: MoRef; props: Record<string, XmlValue> }>();
  for (const o of await vim.retrieveAll(type, ['name', ...extra], root)) {
    const name = text(o.props.name);
    if (name !== undefined && !out.has(name)) out.set(name, o);
  }
  return out;
}

/** The references of an ArrayOfManagedObjectReference property. */
export function refList(node: XmlValue | undefined): MoRef[] {
  const out: MoRef[] = [];
  for (const r of list(child(node, 'ManagedObjectReference'))) {
    const ref = moRef(r);
    if (ref) out.push(ref);
  }
  return out;
}

export function optName(node: XmlValue | undefined): string | undefined {
  return optText(node, 'name');
}
