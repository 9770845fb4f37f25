/**
 * vApps (`vapp:DC/vapp/NAME`): one recovery point holds the vApp's own configuration (product
 * info, properties, start order where the server reports it, annotation, resource settings,
 * custom attributes) and every child VM as a VM backup does (backup.ts), each child's disks
 * under `vm/<i>/`. A child that fails is recorded in the point with its error and the others go
 * on; the job then ends PARTIALLY_FAILED (BackupOutcome.failures). Every child failing fails
 * the backup.
 *
 * A restore makes a missing vApp (CreateVApp with the saved product info, properties and
 * annotation, each child created in it with CreateChildVM_Task and its disks uploaded, then
 * the start order and custom attributes) or, `--in-place`, restores over an existing one: its
 * VMs are found by the ids in the point (instance UUID, then managed object id, then name) and
 * restored in place; a child it no longer has is made anew in it; the metadata is applied
 * again. Remaps (network, datastore, resource pool, folder, name) are the VM restore's own.
 * A failed restore of a new vApp removes it and its children.
 *
 * Where the server lacks UpdateVAppConfig or PowerOnVApp_Task (the simulator), the start order
 * and properties are not applied (a warning says so) and children are powered on one by one.
 */
import { DriverError, NameTaken, TargetNotFound, ValidationError } from '../../../kernel/errors';
import type {
  BackupOptions,
  BackupOutcome,
  BackupSink,
  DiscoveredTarget,
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../core/driver';
import { splitVappPath } from '../../../kernel/platforms/vapp';
import { checkAborted } from '../../core/driver-streams';
import { backupVmAt } from './backup';
import { normalize, type SavedVm } from './config';
import type { Engine } from './engine';
import { datacenterParts, findByPath, loadPaths, refList } from './inventory';
import { restoreAsNew, restoreInPlace } from './restore';
import { ensurePoweredOn } from './snapshots';
import type { VcdClient, VcdRecord } from './vcd';
import { VimFault } from './vim';
import {
  child,
  isObject,
  list,
  moRef,
  optText,
  refXml,
  text,
  without,
  type MoRef,
  type XmlObject,
  type XmlValue,
} from './xml';

export const VAPP_FORMAT = 'stowage-vsphere-vapp/1';

export interface SavedChild {
  name: string;
  /** The managed object id at backup time (`vm-42`). */
  id: string;
  instanceUuid?: string;
  /** The child's point, as a VM backup records it; absent when it failed. */
  vm?: SavedVm;
  error?: { name: string; message: string };
}

export interface SavedVapp {
  format: typeof VAPP_FORMAT;
  path: string;
  name: string;
  datacenter: string;
  /** Inventory paths at backup time of its parent resource pool and VM folder. */
  resourcePool?: string;
  folder?: string;
  annotation?: string;
  product: XmlObject[];
  properties: XmlObject[];
  /** The start order: VAppEntityConfigInfo, each with `vm` (the child's name) for its `key`. */
  entityConfig: XmlObject[];
  /** Its ResourceConfigSpec (CPU and memory allocation). */
  resourceConfig?: XmlObject;
  /** Custom attributes by field name. */
  customAttributes: Record<string, string>;
  children: SavedChild[];
}

async function findVapp(engine: Engine, path: string): Promise<MoRef | undefined> {
  const { datacenter, vapp } = splitVappPath(path);
  const dc = await datacenterParts(engine.vim, datacenter);
  const found = (await engine.vim.retrieveAll('VirtualApp', ['name'], dc.ref)).filter(
    (o) => text(o.props.name) === vapp,
  );
  if (found.length > 1) {
    throw new DriverError(
      `datacenter ${datacenter} has ${found.length} vApps named "${vapp}"; rename one in vSphere`,
    );
  }
  return found[0]?.ref;
}

/** The vApps of every datacenter, with their children's power and names. */
export async function listVapps(engine: Engine): Promise<DiscoveredTarget[]> {
  const { vim } = engine;
  const apps = await vim.retrieveAll('VirtualApp', ['name', 'parent', 'parentFolder', 'vm']);
  if (apps.length === 0) return [];
  const paths = await loadPaths(vim);
  const vmRefs = apps.flatMap((a) => refList(a.props.vm));
  const vms = new Map(
    (await vim.retrieveOf(vmRefs, ['name', 'runtime.powerState'])).map((o) => [o.ref.value, o]),
  );
  const out: DiscoveredTarget[] = [];
  for (const a of apps) {
    const name = text(a.props.name);
    const anchor = moRef(a.props.parentFolder) ?? moRef(a.props.parent);
    const dc = anchor ? paths.datacenterOf(anchor) : undefined;
    if (!name || !dc) continue;
    const children = refList(a.props.vm).map((r) => vms.get(r.value));
    const on = children.some((c) => text(c?.props['runtime.powerState']) === 'poweredOn');
    out.push({
      target: `vapp:${dc.path}/vapp/${name}`,
      platform: 'vapp',
      name: `${dc.path}/vapp/${name}`,
      state: on ? 'running' : 'stopped',
      details: {
        vms: children.map((c) => text(c?.props.name) ?? '?').join(',') || 'none',
      },
    });
  }
  return out.sort((x, y) => x.name.localeCompare(y.name));
}

export async function vappExists(engine: Engine, path: string): Promise<boolean> {
  return (await findVapp(engine, path)) !== undefined;
}

// ---- custom attributes -----------------------------------------------------------------------

async function fieldNames(engine: Engine): Promise<Map<string, string>> {
  const sc = await engine.vim.service();
  const names = new Map<string, string>();
  if (!sc.customFieldsManager) return names;
  const props = await engine.vim.propsOf(sc.customFieldsManager, ['field']);
  for (const f of list(child(props.field, 'CustomFieldDef'))) {
    const key = optText(f, 'key');
    const name = optText(f, 'name');
    if (key && name) names.set(key, name);
  }
  return names;
}

async function customAttributesOf(
  engine: Engine,
  node: XmlValue | undefined,
): Promise<Record<string, string>> {
  const values = list(child(node, 'CustomFieldValue'));
  if (values.length === 0) return {};
  const names = await fieldNames(engine);
  const out: Record<string, string> = {};
  for (const v of values) {
    const key = optText(v, 'key');
    const name = key ? names.get(key) : undefined;
    if (name) out[name] = text(child(v, 'value')) ?? '';
  }
  return out;
}

async function applyCustomAttributes(
  engine: Engine,
  entity: MoRef,
  attributes: Record<string, string>,
  ctx: DriverContext,
): Promise<void> {
  const entries = Object.entries(attributes);
  if (entries.length === 0) return;
  const sc = await engine.vim.service();
  if (!sc.customFieldsManager) {
    ctx.log.warn('driver.vsphere.custom_attributes_unsupported', { attributes: entries.length });
    return;
  }
  const byName = new Map([...(await fieldNames(engine))].map(([k, n]) => [n, k]));
  for (const [name, value] of entries) {
    let key = byName.get(name);
    if (key === undefined) {
      const def = await engine.vim.call('AddCustomFieldDef', sc.customFieldsManager, {
        name,
        moType: 'VirtualApp',
      });
      key = optText(def, 'key');
      if (key === undefined)
        throw new DriverError(`vSphere made custom attribute ${name} without a key`);
    }
    await engine.vim.call('SetField', sc.customFieldsManager, {
      entity: refXml(entity),
      key: Number(key),
      value,
    });
  }
}

// ---- backup ------------------------------------------------------------------------------------

const VAPP_PROPS = ['name', 'vm', 'vAppConfig', 'parent', 'parentFolder', 'customValue', 'config'];

function elements(node: XmlValue | undefined, name: string): XmlObject[] {
  return list(child(node, name))
    .filter(isObject)
    .map((e) => without(normalize(e), ['dynamicProperty']) as XmlObject);
}

export async function backupVapp(
  engine: Engine,
  path: string,
  sink: BackupSink,
  ctx: DriverContext,
  options: BackupOptions = {},
): Promise<BackupOutcome> {
  const { vim } = engine;
  const { datacenter, vapp: name } = splitVappPath(path);
  const ref = await findVapp(engine, path);
  if (!ref) {
    throw new TargetNotFound(
      `vSphere has no vApp ${name} in ${datacenter}; \`stowage targets --platform vapp\` lists them`,
    );
  }
  const props = await vim.propsOf(ref, VAPP_PROPS);
  const paths = await loadPaths(vim);
  const config = props.vAppConfig;
  const children = refList(props.vm);
  const childProps = new Map(
    (await vim.retrieveOf(children, ['name', 'config.instanceUuid'])).map((o) => [o.ref.value, o]),
  );
  const idToName = new Map(
    children.map((c) => [c.value, text(childProps.get(c.value)?.props.name) ?? c.value]),
  );
  const entityConfig = elements(config, 'entityConfig').map((e) => {
    const key = moRef(e.key as XmlValue);
    const out: XmlObject = { ...(without(e, ['key']) as XmlObject) };
    if (key) out.vm = idToName.get(key.value) ?? key.value;
    return out;
  });
  const poolRef = moRef(props.parent);
  const folderRef = moRef(props.parentFolder);
  const saved: SavedVapp = {
    format: VAPP_FORMAT,
    path,
    name,
    datacenter,
    product: elements(config, 'product'),
    properties: elements(config, 'property'),
    entityConfig,
    customAttributes: await customAttributesOf(engine, props.customValue),
    children: [],
  };
  const annotation = optText(config, 'annotation');
  if (annotation) saved.annotation = annotation;
  if (isObject(props.config)) {
    saved.resourceConfig = without(normalize(props.config), [
      'entity',
      'changeVersion',
      'lastModified',
      'dynamicProperty',
      'scaleDescendantsShares',
    ]) as XmlObject;
  }
  const poolPath = poolRef ? paths.pathOf(poolRef) : undefined;
  const folderPath = folderRef ? paths.pathOf(folderRef) : undefined;
  if (poolPath !== undefined) saved.resourcePool = poolPath;
  if (folderPath !== undefined) saved.folder = folderPath;

  // Each child's ETA share adds up to the whole vApp's.
  let expected = 0;
  let last = 0;
  const failures: NonNullable<BackupOutcome['failures']> = [];
  let disks = 0;
  for (const [i, vmRef] of children.entries()) {
    checkAborted(ctx, `backup of vApp ${path}`);
    const childName = idToName.get(vmRef.value)!;
    const entry: SavedChild = { name: childName, id: vmRef.value };
    const uuid = text(childProps.get(vmRef.value)?.props['config.instanceUuid']);
    if (uuid) entry.instanceUuid = uuid;
    const childCtx: DriverContext = {
      ...ctx,
      expectBytes: (n) => {
        last = n;
        ctx.expectBytes?.(expected + n);
      },
    };
    try {
      const out = await backupVmAt(
        engine,
        vmRef,
        `${datacenter}/vm/${name}/${childName}`,
        sink,
        childCtx,
        options,
        `vm/${i}/`,
      );
      entry.vm = out.metadata.vm as SavedVm;
      disks += entry.vm.disks.filter((d) => d.stream).length;
    } catch (err) {
      // The job being abandoned stops the whole backup; anything else is this child's failure.
      if (ctx.signal.aborted) throw err;
      const error = { name: (err as Error).name, message: (err as Error).message };
      entry.error = error;
      failures.push({ part: `vm ${childName}`, error });
      ctx.log.warn('driver.vsphere.vapp_child_failed', { vapp: path, vm: childName, error: err });
    }
    expected += last;
    last = 0;
    saved.children.push(entry);
  }
  if (children.length > 0 && failures.length === children.length) {
    throw new DriverError(
      `every VM of vApp ${path} failed: ${failures.map((f) => `${f.part}: ${f.error.message}`).join('; ')}`,
    );
  }
  return {
    metadata: { vapp: saved },
    summary: {
      vms: children.length,
      failedVms: failures.length,
      disks,
      ...(Object.keys(saved.customAttributes).length
        ? { customAttributes: Object.keys(saved.customAttributes).length }
        : {}),
    },
    ...(failures.length ? { failures } : {}),
  };
}

// ---- restore -----------------------------------------------------------------------------------

function savedVappOf(metadata: Record<string, unknown>): SavedVapp {
  const vapp = metadata.vapp as SavedVapp | undefined;
  if (!vapp || vapp.format !== VAPP_FORMAT || !Array.isArray(vapp.children)) {
    throw new DriverError(
      `this recovery point holds no vApp of format ${VAPP_FORMAT}; it cannot be restored as one`,
    );
  }
  return vapp;
}

function missingMethod(err: unknown): boolean {
  return (
    err instanceof VimFault &&
    ['MethodNotFound', 'NotImplemented', 'NotSupported'].includes(err.faultType)
  );
}

async function rootPool(engine: Engine, hostFolder: MoRef): Promise<MoRef> {
  const pools = await engine.vim.retrieveAll('ResourcePool', ['name', 'parent'], hostFolder);
  const root = pools.find(
    (p) => moRef(p.props.parent)?.type !== 'ResourcePool' && p.ref.type === 'ResourcePool',
  );
  if (!root) throw new TargetNotFound('the datacenter has no resource pool to put the vApp in');
  return root.ref;
}

/** The children a vApp has now, by name, with their instance UUIDs. */
async function childrenOf(
  engine: Engine,
  vapp: MoRef,
): Promise<Array<{ ref: MoRef; name: string; instanceUuid?: string }>> {
  const props = await engine.vim.propsOf(vapp, ['vm']);
  const refs = refList(props.vm);
  return (await engine.vim.retrieveOf(refs, ['name', 'config.instanceUuid'])).map((o) => {
    const uuid = text(o.props['config.instanceUuid']);
    return {
      ref: o.ref,
      name: text(o.props.name) ?? o.ref.value,
      ...(uuid ? { instanceUuid: uuid } : {}),
    };
  });
}

/**
 * The start order, properties and annotation through UpdateVAppConfig; a server without it (the
 * simulator) keeps what CreateVApp took (product info, annotation) and says so in the log.
 */
async function applyVappConfig(
  engine: Engine,
  vapp: MoRef,
  saved: SavedVapp,
  ctx: DriverContext,
): Promise<void> {
  const now = await childrenOf(engine, vapp);
  const byName = new Map(now.map((c) => [c.name, c.ref]));
  const current = await engine.vim.propsOf(vapp, ['vAppConfig']);
  const propertyKeys = new Set(elements(current.vAppConfig, 'property').map((p) => String(p.key)));
  const entityConfig = saved.entityConfig
    .map((e) => {
      const ref = typeof e.vm === 'string' ? byName.get(e.vm) : undefined;
      if (!ref) return undefined;
      const { vm: _vm, ...rest } = e;
      return { key: refXml(ref), ...rest } as XmlObject;
    })
    .filter((e): e is XmlObject => e !== undefined);
  const spec: XmlObject = {
    ...(saved.properties.length
      ? {
          property: saved.properties.map((info) => ({
            operation: propertyKeys.has(String(info.key)) ? 'edit' : 'add',
            info,
          })),
        }
      : {}),
    ...(entityConfig.length ? { entityConfig } : {}),
    ...(saved.annotation !== undefined ? { annotation: saved.annotation } : {}),
  };
  if (Object.keys(spec).length === 0) return;
  try {
    await engine.vim.call('UpdateVAppConfig', vapp, { spec });
  } catch (err) {
    if (!missingMethod(err)) throw err;
    ctx.log.warn('driver.vsphere.vapp_config_not_applied', {
      vapp: saved.path,
      reason: 'the server has no UpdateVAppConfig: start order and properties were not applied',
    });
  }
}

async function powerOn(engine: Engine, vapp: MoRef, saved: SavedVapp, path: string): Promise<void> {
  try {
    await engine.vim.runTask('PowerOnVApp_Task', vapp, {}, `powering vApp ${path} on`);
  } catch (err) {
    if (!missingMethod(err)) throw err;
    // One by one, in the saved start order.
    const order = new Map(
      saved.entityConfig.map((e) => [String(e.vm), Number(e.startOrder ?? 0)] as const),
    );
    const now = (await childrenOf(engine, vapp)).sort(
      (a, b) => (order.get(a.name) ?? 0) - (order.get(b.name) ?? 0),
    );
    for (const c of now) await ensurePoweredOn(engine, c.ref, `${path}/${c.name}`);
  }
}

export async function restoreVapp(
  engine: Engine,
  metadata: Record<string, unknown>,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  const saved = savedVappOf(metadata);
  if (options.disk !== undefined || options.attachTo !== undefined) {
    throw new ValidationError(
      'restore one disk from a VM point (vsphere:...); a vApp point restores the whole vApp',
    );
  }
  const path = options.name || saved.path;
  const { datacenter, vapp: name } = splitVappPath(path);
  const existing = await findVapp(engine, path);
  if (existing && !options.inPlace) {
    throw new NameTaken(
      `vSphere already has vApp ${path}; choose another --name, or --in-place to restore over it`,
    );
  }
  const { state, ...childOptions } = options;
  const restorable = saved.children.filter((c) => c.vm);
  for (const c of saved.children.filter((x) => !x.vm)) {
    ctx.log.warn('driver.vsphere.vapp_child_missing', {
      vapp: saved.path,
      vm: c.name,
      reason: `the point lacks it: ${c.error?.message ?? 'not backed up'}`,
    });
  }
  const dc = await datacenterParts(engine.vim, datacenter);
  const folderPath = options.folder ?? saved.folder ?? `${datacenter}/vm`;
  let vapp: MoRef;
  let created = false;
  if (existing) {
    vapp = existing;
  } else {
    const folder = await findByPath(engine.vim, folderPath);
    if (!folder || folder.type !== 'Folder') {
      throw new TargetNotFound(`vSphere has no VM folder at ${folderPath} (--folder)`);
    }
    let pool: MoRef | undefined;
    for (const candidate of [options.resourcePool, saved.resourcePool]) {
      if (!candidate) continue;
      const ref = await findByPath(engine.vim, candidate);
      if (ref && (ref.type === 'ResourcePool' || ref.type === 'VirtualApp')) {
        pool = ref;
        break;
      }
      if (candidate === options.resourcePool) {
        throw new TargetNotFound(`vSphere has no resource pool at ${candidate} (--resource-pool)`);
      }
    }
    pool ??= await rootPool(engine, dc.hostFolder);
    checkAborted(ctx, `restore of vApp ${path}`);
    ctx.phase(`creating vApp ${path}`);
    const made = moRef(
      await engine.vim.call('CreateVApp', pool, {
        name,
        resSpec: saved.resourceConfig ?? defaultResourceSpec(),
        configSpec: {
          ...(saved.product.length
            ? { product: saved.product.map((info) => ({ operation: 'add', info })) }
            : {}),
          ...(saved.properties.length
            ? { property: saved.properties.map((info) => ({ operation: 'add', info })) }
            : {}),
          ...(saved.annotation !== undefined ? { annotation: saved.annotation } : {}),
        },
        vmFolder: refXml(folder),
      }),
    );
    if (!made) throw new DriverError(`vSphere created vApp ${path} but returned no reference`);
    vapp = made;
    created = true;
  }
  try {
    const now = existing ? await childrenOf(engine, vapp) : [];
    for (const c of restorable) {
      checkAborted(ctx, `restore of vApp ${path}`);
      const match =
        now.find((n) => c.instanceUuid && n.instanceUuid === c.instanceUuid) ??
        now.find((n) => n.ref.value === c.id) ??
        now.find((n) => n.name === c.name);
      const childPath = `${datacenter}/vm/${name}/${match?.name ?? c.name}`;
      if (match) {
        await restoreInPlace(
          engine,
          c.vm!,
          source,
          { ...childOptions, name: childPath, inPlace: true },
          ctx,
          { ref: match.ref, path: childPath },
        );
        continue;
      }
      // A new child keeps its name unless a VM of that name is in the folder (the original
      // vApp's, when it still exists): then it is `<vApp>-<name>`.
      const taken = await findByPath(engine.vim, `${folderPath}/${c.name}`);
      const childName = taken ? `${name}-${c.name}` : c.name;
      await restoreAsNew(
        engine,
        c.vm!,
        source,
        { ...childOptions, name: childName, inPlace: false },
        ctx,
        { vapp, path: `${folderPath}/${childName}` },
      );
    }
    ctx.phase(`applying the configuration of vApp ${path}`);
    await applyVappConfig(engine, vapp, saved, ctx);
    await applyCustomAttributes(engine, vapp, saved.customAttributes, ctx);
  } catch (err) {
    if (created) await destroyVapp(engine, vapp, path, ctx);
    throw err;
  }
  if (state === 'running') {
    ctx.phase(`powering vApp ${path} on`);
    await powerOn(engine, vapp, saved, path);
  }
  return { restoredTarget: `vapp:${path}` };
}

/** Removes a half-restored vApp: its children first, then the vApp. Best effort, logged. */
async function destroyVapp(
  engine: Engine,
  vapp: MoRef,
  path: string,
  ctx: DriverContext,
): Promise<void> {
  try {
    for (const c of await childrenOf(engine, vapp)) {
      await engine.vim.runTask('Destroy_Task', c.ref, {}, `removing ${c.name}`);
    }
    await engine.vim.runTask('Destroy_Task', vapp, {}, `removing the half-restored vApp ${path}`);
  } catch (err) {
    ctx.log.error('driver.vsphere.cleanup_failed', { vapp: path, error: err });
  }
}

function defaultResourceSpec(): XmlObject {
  const allocation = (shares: number) => ({
    reservation: 0,
    expandableReservation: true,
    limit: -1,
    shares: { shares, level: 'normal' },
  });
  return { cpuAllocation: allocation(4000), memoryAllocation: allocation(163840) };
}

// ---- vCloud Director -----------------------------------------------------------------------

/**
 * Runs a vApp job under vCloud Director's maintenance mode when the agent has a vCD client and
 * vCD manages a vApp of that name (`work` gets its href; else undefined and no vCD call is
 * made). Maintenance mode is left in a finally; a vApp left in it fails the job, by name.
 */
export async function underVcd<T>(
  vcd: VcdClient | undefined,
  path: string,
  ctx: DriverContext,
  work: (href: string | undefined) => Promise<T>,
): Promise<T> {
  if (!vcd) return work(undefined);
  const { vapp } = splitVappPath(path);
  const href = await vcd.findVapp(vapp).catch((err: unknown) => {
    if (err instanceof TargetNotFound) return undefined;
    throw err;
  });
  if (!href) {
    ctx.log.info('driver.vsphere.vcd_not_managed', { vapp: path });
    return work(undefined);
  }
  let stuck: unknown;
  ctx.phase(`vCloud Director: maintenance mode on for ${vapp}`);
  const out = await vcd.inMaintenance(
    href,
    () => work(href),
    (err) => {
      stuck = err;
      ctx.log.error('driver.vsphere.vcd_maintenance_left_on', { vapp: path, error: err });
    },
  );
  if (stuck !== undefined) {
    throw new DriverError(
      `vApp ${path} is still in vCloud Director's maintenance mode (${(stuck as Error).message}); take it out in vCD`,
      { cause: stuck },
    );
  }
  return out;
}

/**
 * The vCD record a vApp point keeps (metadata.vcd), put back after a restore: a restored vApp
 * that vCD does not manage (restored as new, or after vCD lost it) is first imported into the
 * VDC the point names (VcdClient.importVapp: its VMs moved into one new vCD vApp of the same
 * name); then the vApp's metadata and lease, and the VDC's and org's settings where vCD's API
 * allows (VcdClient.putBackSettings; what it could not put back is logged, item by item).
 */
export async function putBackVcd(
  engine: Engine,
  vcd: VcdClient | undefined,
  href: string | undefined,
  path: string,
  metadata: Record<string, unknown>,
  ctx: DriverContext,
  vsphereUrl: string,
): Promise<void> {
  const record = metadata.vcd as VcdRecord | undefined;
  if (!record) return;
  if (!vcd) {
    ctx.log.warn('driver.vsphere.vcd_not_put_back', {
      vapp: path,
      reason: 'the agent has no --vcd-url; the point holds vCloud Director metadata',
    });
    return;
  }
  let target = href;
  if (!target) {
    if (!record.vdc) {
      ctx.log.warn('driver.vsphere.vcd_not_put_back', {
        vapp: path,
        reason: 'the point names no VDC to import the restored vApp into',
      });
      return;
    }
    const ref = await findVapp(engine, path);
    if (!ref) throw new TargetNotFound(`the restored vApp ${path} is not in vSphere`);
    const vms = refList((await engine.vim.propsOf(ref, ['vm'])).vm).map((r) => r.value);
    ctx.phase(`vCloud Director: importing ${path} into VDC ${record.vdc.name}`);
    target = await vcd.importVapp(splitVappPath(path).vapp, record.vdc.href, vms, vsphereUrl);
    ctx.log.info('driver.vsphere.vcd_imported', { vapp: path, href: target, vms: vms.length });
  }
  ctx.phase('vCloud Director: putting the metadata back');
  await vcd.putBack(target, record);
  const settings = await vcd.putBackSettings(record);
  ctx.log.info('driver.vsphere.vcd_settings', { vapp: path, applied: settings.applied });
  for (const item of settings.notApplied) {
    ctx.log.warn('driver.vsphere.vcd_not_applied', { vapp: path, item });
  }
}
