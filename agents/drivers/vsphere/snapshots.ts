/**
 * VM snapshots as Stowage's local tier (`stowage snapshot create|list|restore|delete vsphere:...`):
 * kept by vSphere on the VM's datastore, instant to take and to go back to. vSphere has no expiry
 * of its own, so Stowage writes it into the snapshot's description (`stowage-expires=<ISO>`) and
 * deletes expired snapshots itself before every operation. The snapshots a backup takes
 * (`stowage-backup-*`) live only while it runs and are never listed here.
 *
 * Names: a pattern's `%d` is the next free number from 0; a name vSphere holds twice (it allows
 * that) is refused as ambiguous rather than guessed.
 */
import { DriverError, NameTaken, SnapshotNotFound, Unsupported } from '../../../kernel/errors';
import type {
  DriverContext,
  SnapshotCreateOptions,
  SnapshotInfo,
  SnapshotOps,
} from '../../core/driver';
import type { Engine } from './engine';
import { findVm } from './inventory';
import { child, list, moRef, optText, text, type MoRef, type XmlValue } from './xml';

const EXPIRES = /stowage-expires=(\S+)/;
const STATEFUL = /stowage-stateful=1/;
const BACKUP_PREFIX = 'stowage-backup-';

interface VmSnapshot {
  ref: MoRef;
  name: string;
  description: string;
  createdAt: string;
  state: string;
}

function flatten(node: XmlValue | undefined, out: VmSnapshot[]): void {
  for (const t of list(child(node, 'rootSnapshotList') ?? child(node, 'childSnapshotList'))) {
    const ref = moRef(child(t, 'snapshot'));
    const name = optText(t, 'name');
    if (ref && name !== undefined) {
      out.push({
        ref,
        name,
        description: optText(t, 'description') ?? '',
        createdAt: optText(t, 'createTime') ?? '',
        state: optText(t, 'state') ?? '',
      });
    }
    for (const c of list(child(t, 'childSnapshotList'))) {
      flatten({ childSnapshotList: c }, out);
    }
  }
}

/** Every snapshot of that name in a VM's `snapshot` property, Stowage's backup ones included. */
export function snapshotsNamed(snapshotProp: XmlValue | undefined, name: string): MoRef[] {
  const all: VmSnapshot[] = [];
  flatten(snapshotProp, all);
  return all.filter((s) => s.name === name).map((s) => s.ref);
}

function treeOf(snapshotProp: XmlValue | undefined): VmSnapshot[] {
  const out: VmSnapshot[] = [];
  flatten(snapshotProp, out);
  return out
    .filter((s) => !s.name.startsWith(BACKUP_PREFIX))
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

function infoOf(s: VmSnapshot): SnapshotInfo {
  const expires = EXPIRES.exec(s.description)?.[1];
  const at = expires && !Number.isNaN(Date.parse(expires)) ? new Date(expires).toISOString() : null;
  return {
    name: s.name,
    createdAt: s.createdAt ? new Date(s.createdAt).toISOString() : new Date(0).toISOString(),
    expiresAt: at,
    stateful: STATEFUL.test(s.description),
  };
}

/** The snapshots of a VM's `snapshot` property, for the inventory. */
export function snapshotsOf(snapshotProp: XmlValue | undefined): SnapshotInfo[] {
  return treeOf(snapshotProp).map(infoOf);
}

/**
 * Whether a snapshot holds the VM's memory: Stowage's own say so in their description; for
 * others, vSphere records `poweredOn` as the tree's state only for a snapshot with memory.
 */
function withMemory(s: VmSnapshot): boolean {
  if (s.description.startsWith(TAKEN_BY)) return STATEFUL.test(s.description);
  return s.state === 'poweredOn';
}

const TAKEN_BY = 'Taken by Stowage.';

function describe(expiresAt: Date | null | undefined, stateful: boolean): string {
  const parts = [TAKEN_BY];
  if (expiresAt) parts.push(`stowage-expires=${expiresAt.toISOString()}`);
  if (stateful) parts.push('stowage-stateful=1');
  return parts.join(' ');
}

export function createSnapshotOps(engine: Engine): SnapshotOps {
  const { vim } = engine;

  async function load(path: string): Promise<{ vm: MoRef; snaps: VmSnapshot[]; power: string }> {
    const vm = await findVm(vim, path);
    const props = await vim.propsOf(vm, ['snapshot', 'runtime.powerState']);
    return { vm, snaps: treeOf(props.snapshot), power: text(props['runtime.powerState']) ?? '' };
  }

  function one(snaps: VmSnapshot[], path: string, name: string): VmSnapshot {
    const found = snaps.filter((s) => s.name === name);
    if (found.length === 0) {
      throw new SnapshotNotFound(`VM ${path} has no snapshot "${name}"`);
    }
    if (found.length > 1) {
      throw new DriverError(
        `VM ${path} has ${found.length} snapshots named "${name}"; rename or delete the others in vSphere first`,
      );
    }
    return found[0]!;
  }

  async function pruneExpired(path: string, ctx?: DriverContext): Promise<string[]> {
    const { snaps } = await load(path);
    const now = Date.now();
    const pruned: string[] = [];
    for (const s of snaps) {
      const at = infoOf(s).expiresAt;
      if (at === null || Date.parse(at) > now) continue;
      await vim.runTask(
        'RemoveSnapshot_Task',
        s.ref,
        { removeChildren: false, consolidate: true },
        `deleting expired snapshot ${s.name} of ${path}`,
        ctx?.signal,
      );
      pruned.push(s.name);
    }
    return pruned;
  }

  return {
    async list(path) {
      await pruneExpired(path);
      return (await load(path)).snaps.map(infoOf);
    },

    async create(path, options: SnapshotCreateOptions, ctx) {
      await pruneExpired(path, ctx);
      const { vm, snaps, power } = await load(path);
      if (options.stateful && power !== 'poweredOn') {
        throw new Unsupported(`a snapshot with memory needs VM ${path} running; it is ${power}`);
      }
      const taken = new Set(snaps.map((s) => s.name));
      let name = options.pattern;
      if (name.includes('%d')) {
        let n = 0;
        while (taken.has(options.pattern.replace('%d', String(n)))) n++;
        name = options.pattern.replace('%d', String(n));
      } else if (taken.has(name)) {
        throw new NameTaken(`VM ${path} already has a snapshot "${name}"`);
      }
      if (name.startsWith(BACKUP_PREFIX)) {
        throw new NameTaken(
          `snapshot names starting "${BACKUP_PREFIX}" are Stowage's backups' own`,
        );
      }
      await vim.runTask(
        'CreateSnapshot_Task',
        vm,
        {
          name,
          description: describe(options.expiresAt, options.stateful),
          memory: options.stateful,
          quiesce: false,
        },
        `taking snapshot ${name} of ${path}`,
        ctx.signal,
      );
      return infoOf(one((await load(path)).snaps, path, name));
    },

    async setExpiry(path, snapshot, expiresAt, ctx) {
      await pruneExpired(path, ctx);
      const s = one((await load(path)).snaps, path, snapshot);
      // RenameSnapshot keeps the name and replaces the description that carries the expiry.
      await vim.call('RenameSnapshot', s.ref, {
        name: s.name,
        description: describe(expiresAt, STATEFUL.test(s.description)),
      });
      return infoOf(one((await load(path)).snaps, path, snapshot));
    },

    async delete(path, snapshot, ctx) {
      await pruneExpired(path, ctx);
      const s = one((await load(path)).snaps, path, snapshot);
      await vim.runTask(
        'RemoveSnapshot_Task',
        s.ref,
        { removeChildren: false, consolidate: true },
        `deleting snapshot ${snapshot} of ${path}`,
        ctx.signal,
      );
    },

    async restore(path, snapshot, ctx, options = {}) {
      await pruneExpired(path, ctx);
      const { vm, snaps, power } = await load(path);
      const s = one(snaps, path, snapshot);
      try {
        // vSphere puts the VM in the snapshot's own power state: a snapshot without memory
        // comes back powered off, one with memory running (suspendWithSnapshot stays off).
        await vim.runTask(
          'RevertToSnapshot_Task',
          s.ref,
          {},
          `reverting ${path} to snapshot ${snapshot}`,
          ctx.signal,
        );
      } catch (err) {
        // Nothing was reverted: a VM that ran runs again.
        if (power === 'poweredOn') await ensurePoweredOn(engine, vm, path).catch(() => undefined);
        throw err;
      }
      if (options.state === 'running') await ensurePoweredOn(engine, vm, path);
      else if (options.state === 'stopped') await ensurePoweredOff(engine, vm, path);
      else if (!withMemory(s)) {
        // vSphere powers a VM off for a snapshot without memory (the simulator keeps the power
        // state it had): make it so everywhere, as the plan says.
        await ensurePoweredOff(engine, vm, path);
      }
      return infoOf(s);
    },

    schedule() {
      return Promise.reject(
        new Unsupported(
          'vSphere has no snapshot schedule of its own that Stowage drives; take them with `stowage snapshot create` from a policy',
        ),
      );
    },

    pruneExpired,
  };
}

export async function ensurePoweredOn(engine: Engine, vm: MoRef, path: string): Promise<void> {
  const props = await engine.vim.propsOf(vm, ['runtime.powerState']);
  if (text(props['runtime.powerState']) === 'poweredOn') return;
  await engine.vim.runTask('PowerOnVM_Task', vm, {}, `powering ${path} on`);
}

export async function ensurePoweredOff(engine: Engine, vm: MoRef, path: string): Promise<void> {
  const props = await engine.vim.propsOf(vm, ['runtime.powerState']);
  if (text(props['runtime.powerState']) === 'poweredOff') return;
  await engine.vim.runTask('PowerOffVM_Task', vm, {}, `powering ${path} off`);
}
