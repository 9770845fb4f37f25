/**
 * The vSphere driver: VMs as targets (`vsphere:DC/vm/NAME`), talked to over vSphere's SOAP API
 * (vim.ts, xml.ts) and datastore HTTP (datastore.ts). A backup records the VM's configuration and
 * reads every disk from a VM snapshot it removes afterwards (backup.ts), through a disk transport
 * (transport.ts: datastore HTTP, narrowed by CBT; nfc.ts); restores make a new VM, write a VM's
 * disks back in place, or attach one disk to another VM (restore.ts); VM snapshots are the local
 * tier (snapshots.ts). No vSphere type leaves this folder.
 */
import { readFileSync } from 'node:fs';
import { ValidationError } from '../../../kernel/errors';
import { silentLogger, type Logger } from '../../../kernel/logger';
import type { DiscoveredTarget, Driver } from '../../core/driver';
import { backupVm, releaseSnapshotHold } from './backup';
import { disksOf, parseDevices } from './config';
import { engineOf, type Engine } from './engine';
import { checkVmPath, findByPath, loadPaths, parseDatastorePath } from './inventory';
import { IN_PLACE_HOLD, releaseInPlaceHold, restoreVm } from './restore';
import { createSnapshotOps, snapshotsOf } from './snapshots';
import { DatastoreHttpTransport, type ChangeTracking, type DiskTransport } from './transport';
import { NfcTransport } from './nfc';
import { VimClient } from './vim';
import { watchInventory } from './events';
import { backupVapp, listVapps, putBackVcd, restoreVapp, underVcd, vappExists } from './vapp';
import { VcdClient, type VcdOptions } from './vcd';
import { moRef, text } from './xml';
import type { DatastoreFiles } from './datastore';

export interface VsphereDriverOptions {
  /** `https://vcenter.example.com/sdk` (`http://` for the simulator). */
  url: string;
  user: string;
  /** The password itself, or a file holding it (`--vsphere-password-file`). */
  password?: string;
  passwordFile?: string;
  /** Accept any TLS certificate (`--vsphere-insecure`). */
  insecure?: boolean;
  log?: Logger;
  /** The disk transports in order of preference (default: datastore HTTP, then NFC). */
  transports?: (files: DatastoreFiles, vim: VimClient) => DiskTransport[];
  /**
   * Changed-block tracking (default: vSphere's, QueryChangedDiskAreas). For tests against the
   * simulator, which has none.
   */
  changes?: (vim: VimClient) => ChangeTracking;
}

export function passwordOf(
  options: Pick<VsphereDriverOptions, 'password' | 'passwordFile'>,
): string {
  if (options.password !== undefined) return options.password;
  if (!options.passwordFile) {
    throw new ValidationError(
      'vSphere needs --vsphere-password-file FILE (a file holding the password)',
    );
  }
  let raw: string;
  try {
    raw = readFileSync(options.passwordFile, 'utf8');
  } catch (err) {
    throw new ValidationError(
      `--vsphere-password-file ${options.passwordFile} cannot be read (${(err as Error).message})`,
    );
  }
  const password = raw.replace(/\r?\n$/, '');
  if (!password)
    throw new ValidationError(`--vsphere-password-file ${options.passwordFile} is empty`);
  return password;
}

function vimFor(options: VsphereDriverOptions): VimClient {
  return new VimClient({
    url: options.url,
    user: options.user,
    password: passwordOf(options),
    ...(options.insecure ? { insecure: true } : {}),
  });
}

function engineFor(options: VsphereDriverOptions): Engine {
  const log = options.log ?? silentLogger;
  const vim = vimFor(options);
  return engineOf(
    vim,
    log,
    (files) =>
      options.transports
        ? options.transports(files, vim)
        : [new DatastoreHttpTransport(files), new NfcTransport(vim)],
    options.changes?.(vim),
  );
}

/**
 * vApps (`vapp:DC/vapp/NAME`, vapp.ts), with a session of their own; with `vcd`, jobs run under
 * vCloud Director's maintenance mode and points keep (and restores put back) its metadata.
 */
export function createVappDriver(
  options: VsphereDriverOptions & { vcd?: VcdOptions },
): Driver & { close(): Promise<void> } {
  const engine = engineFor(options);
  const vcd = options.vcd ? new VcdClient(options.vcd) : undefined;
  return {
    platform: 'vapp',
    listTargets: () => listVapps(engine),
    exists: (name) => vappExists(engine, name),
    backup: (name, sink, ctx, backupOptions) =>
      underVcd(vcd, name, ctx, async (href) => {
        const out = await backupVapp(engine, name, sink, ctx, backupOptions);
        if (vcd && href) {
          const record = await vcd.record(href);
          out.metadata.vcd = record;
          out.summary.vcd = true;
          if (record.vdc) out.summary.vcdVdc = record.vdc.name;
        }
        return out;
      }),
    restore: (metadata, source, restoreOptions, ctx) =>
      underVcd(vcd, restoreOptions.name, ctx, async (href) => {
        const out = await restoreVapp(engine, metadata, source, restoreOptions, ctx);
        await putBackVcd(engine, vcd, href, restoreOptions.name, metadata, ctx, options.url);
        return out;
      }),
    async close() {
      vcd?.close();
      await engine.vim.logout();
    },
  };
}

export function createVsphereDriver(
  options: VsphereDriverOptions,
): Driver & { close(): Promise<void> } {
  const engine = engineFor(options);
  const { vim, log } = engine;
  const snapshots = createSnapshotOps(engine);

  async function listTargets(): Promise<DiscoveredTarget[]> {
    const paths = await loadPaths(vim);
    const vms = await vim.retrieveAll('VirtualMachine', [
      'name',
      'parent',
      'runtime.powerState',
      'config.hardware.device',
      'config.template',
      'snapshot',
    ]);
    const targets: DiscoveredTarget[] = [];
    for (const o of vms) {
      const parent = moRef(o.props.parent);
      const name = text(o.props.name);
      if (!parent || !name || text(o.props['config.template']) === 'true') continue;
      const folder = paths.pathOf(parent);
      if (folder === undefined) continue;
      const path = `${folder}/${name}`;
      let details: Record<string, string> = {};
      try {
        const devices = parseDevices(o.props['config.hardware.device'], `VM ${path}`);
        const disks = disksOf(devices, `VM ${path}`);
        const datastores = new Set(
          disks
            .filter((d) => d.fileName)
            .map((d) => parseDatastorePath(d.fileName, path).datastore),
        );
        details = {
          disks: disks.map((d) => `${d.label}=${formatBytes(d.capacityBytes)}`).join(',') || 'none',
          datastore: [...datastores].join(',') || '-',
        };
      } catch (err) {
        log.warn('agent.inventory.vsphere_vm_unreadable', { vm: path, error: err });
      }
      targets.push({
        target: `vsphere:${path}`,
        platform: 'vsphere',
        name: path,
        state: powerWord(text(o.props['runtime.powerState'])),
        details,
        snapshots: snapshotsOf(o.props.snapshot),
      });
    }
    return targets.sort((a, b) => a.name.localeCompare(b.name));
  }

  return {
    platform: 'vsphere',
    listTargets,
    async exists(name) {
      checkVmPath(name);
      const ref = await findByPath(vim, name);
      return ref?.type === 'VirtualMachine';
    },
    backup: (name, sink, ctx, backupOptions) => backupVm(engine, name, sink, ctx, backupOptions),
    restore: (metadata, source, restoreOptions, ctx) =>
      restoreVm(engine, metadata, source, restoreOptions, ctx),
    snapshots,
    // VMs, vApps and folders: one watch serves the vapp driver's listing too (the inventory
    // lists every driver again on any change). A session of its own, logged out when it stops.
    watch: (onChange) => watchInventory({ vim: vimFor(options), log }, onChange),
    releaseHold: (record, holdLog) =>
      record.kind === IN_PLACE_HOLD
        ? releaseInPlaceHold(engine, record, holdLog)
        : releaseSnapshotHold(engine, record, holdLog),
    close: () => vim.logout(),
  };
}

/** vSphere's power states in one word, as `stowage targets` shows states. */
export function powerWord(state: string | undefined): string {
  if (state === 'poweredOn') return 'running';
  if (state === 'poweredOff') return 'stopped';
  if (state === 'suspended') return 'suspended';
  return state ?? 'unknown';
}

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)}${units[u]}`;
}
