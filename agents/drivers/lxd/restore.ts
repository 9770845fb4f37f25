/**
 * Restore of one LXD instance from its `export` stream, or from its tree streams (a point read
 * on the host, host-tree.ts): then LXD makes the instance empty (`source: none`) and the trees
 * are written into its directory, and its snapshots', in the pool's directory on this host
 * (fillInstance), with the no-follow safety of every tree restore; the rest is the same.
 *
 * Under a new name: refuse (NameTaken) if the name exists; recreate the profiles the point
 * references and this server lacks (LXD refuses an import whose profiles are missing); import
 * (`POST /1.0/instances`, octet-stream, `X-LXD-name`, `X-LXD-pool`: the pool asked for, which
 * must exist, else the recorded root pool when this server has it); apply device overrides to
 * the import (PATCH); end in the power state asked for, by default the one at backup time (LXD
 * leaves an import Stopped). The point's snapshots, if it holds them, come back with it.
 *
 * In place: the point is imported whole under a temporary name first, so every byte has been
 * read (and the device overrides accepted) before anything is replaced; only then is the
 * existing instance stopped and deleted and the temporary one renamed. A failure before that
 * leaves the original as it was.
 *
 * On failure the restore removes what it created (the imported or temporary instance, the
 * profiles it added), so a retry starts clean.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { withGuardedTar } from '../../core/tar-guard';
import { DriverError, NameTaken, ValidationError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type {
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../core/driver';
import { checkAborted, consumeStream } from '../../core/driver-streams';
import { takeHold } from '../../core/holds';
import { translate } from './errors';
import { checkOptimizedTarget } from './export';
import { getPool, requirePool } from './volume';
import { importArchive } from './tree-import';
import { TREE_KIND } from '../../core/tree/format';
import { sandboxConfig, sandboxDevices } from './sandbox';
import { rootPoolOf } from './backup';
import {
  INSTANCE_PATHS,
  MAIN_TREE,
  instanceDirs,
  isTreePoint,
  notOnHost,
  poolDir,
  requireMadeDir,
  snapshotTree,
} from './host-tree';
import {
  EXPORT_STREAM,
  METADATA_FORMAT,
  abortCheck,
  changeState,
  getInstance,
  getProfile,
  instancePath,
  isValidName,
  metadataOf,
  removeInstance,
  type Engine,
  type LxdBackupMetadata,
} from './instance';

function parseMetadata(metadata: Record<string, unknown>): LxdBackupMetadata {
  return metadataOf<LxdBackupMetadata>(metadata, METADATA_FORMAT, 'instance');
}

export async function restoreInstance(
  engine: Engine,
  rawMetadata: Record<string, unknown>,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  const metadata = parseMetadata(rawMetadata);
  const { name, inPlace } = options;
  if (!isValidName(name)) {
    throw new ValidationError(
      `${name} is not a valid LXD instance name (letters, digits and dashes, 1-63, starting with a letter)`,
    );
  }
  for (const unsupported of ['volumes', 'network', 'ports', 'volume', 'intoVolume'] as const) {
    if (options[unsupported] !== undefined) {
      throw new ValidationError(
        `an LXD instance restore cannot honour ${unsupported} (a Docker option); use --device NAME,KEY=VALUE`,
      );
    }
  }
  const tree = isTreePoint(source);
  const stream = source.streams.find((s) => s.name === EXPORT_STREAM);
  if (!stream && !tree) {
    throw new DriverError(`the recovery point has no ${EXPORT_STREAM} stream and no tree`);
  }
  // A restore test's sandbox: every device but the root disk masked (sandbox.ts), started.
  const sandbox = options.sandbox === true;
  const overrides = sandbox
    ? { ...sandboxDevices(metadata.expandedDevices), ...(options.devices ?? {}) }
    : (options.devices ?? {});
  const { pool: devicePool, patch } = planDevices(metadata, overrides);
  if (options.pool !== undefined && devicePool !== undefined && options.pool !== devicePool) {
    throw new ValidationError(
      `--pool ${options.pool} and the root device's pool=${devicePool} disagree; give one of them`,
    );
  }

  ctx.phase('checking the pool and the name');
  const pool = await importPool(engine, metadata, options.pool ?? devicePool);
  const existing = await getInstance(engine, name);
  if (existing && !inPlace) {
    throw new NameTaken(`lxd:${name} exists; restore under another name or in place`);
  }
  const importName = existing ? temporaryName(name) : name;

  const createdProfiles: string[] = [];
  let imported = false;
  // LXD leaves an import Stopped; a frozen instance comes back running (thawed), not frozen.
  const ran = metadata.status === 'Running' || metadata.status === 'Frozen';
  const start = sandbox || (options.state ?? (ran ? 'running' : 'stopped')) === 'running';
  // Journaled before the import: a sweep after a kill removes a half-done import, or past the
  // point of no return of an in-place restore, finishes the swap (lxd.import in holds.ts).
  const record = {
    socketPath: engine.socketPath,
    project: engine.project,
    name,
    temp: importName,
    notBefore: new Date(Date.now() - 2000).toISOString(),
    start,
    phase: 'import',
  };
  const hold = await takeHold(ctx.holds, 'lxd', 'lxd.import', record);
  try {
    ctx.phase('recreating profiles');
    for (const profile of metadata.profileDefinitions ?? []) {
      if (await getProfile(engine, profile.name)) continue;
      checkAborted(ctx, `restore of lxd:${name}`);
      try {
        await engine.client.request('POST', '/1.0/profiles', {
          body: {
            name: profile.name,
            description: profile.description,
            config: profile.config,
            devices: profile.devices,
          },
        });
      } catch (err) {
        throw translate(err, `recreating profile ${profile.name}`, engine.socketPath);
      }
      createdProfiles.push(profile.name);
    }

    const into = tree ? (pool ?? (await profilesRootPool(engine, metadata.profiles))) : undefined;
    if (tree && (await poolDir(engine, into, ctx))) {
      // Straight into the pool's directory: LXD makes the empty instance, the trees fill it.
      ctx.phase('creating instance');
      await createEmptyInstance(engine, metadata, importName, pool, ctx);
      imported = true;
      await fillInstance(engine, metadata, source, importName, ctx);
    } else {
      // Through LXD's import: the point's export, or, for a tree point into a pool this agent
      // cannot write, its trees as LXD's own export (tree-import.ts).
      const headers: Record<string, string | number> = { 'X-LXD-name': importName };
      let body: Readable;
      let bytes: number;
      if (tree) {
        if (!source.treesAsTar || into === undefined)
          throw notOnHost(`the point of lxd:${metadata.name}`, into);
        headers['X-LXD-pool'] = into;
        body = importArchive(metadata, source, await requirePool(engine, into));
        bytes = source.streams.filter((s) => s.kind === TREE_KIND).reduce((n, s) => n + s.size, 0);
      } else {
        headers['Content-Length'] = stream!.size;
        if (pool) headers['X-LXD-pool'] = pool;
        body = await source.openStream(EXPORT_STREAM);
        bytes = stream!.size;
      }
      ctx.phase('importing instance');
      ctx.expectBytes?.(bytes);
      const what = `import of lxd:${name}`;
      const upload = (s: Readable) => engine.client.upload('/1.0/instances', s, headers);
      const answer = await consumeStream(body, ctx, what, (s) =>
        // LXD stores the upload before it unpacks it: a hostile archive never arrives whole.
        // The archive made here from the point's trees is not one to guard against.
        tree ? upload(s) : withGuardedTar(s, { what }, upload),
      ).catch((err: unknown) => {
        throw translate(err, `importing instance ${importName}`, engine.socketPath);
      });
      imported = true;
      await engine.client
        .wait(answer.operation, abortCheck(ctx, `restore of lxd:${name}`))
        .catch((err: unknown) => {
          throw translate(err, `importing instance ${importName}`, engine.socketPath);
        });
    }

    await restoreSnapshotExpiry(engine, importName, metadata.snapshotExpiry ?? {});

    // On the import, before the original is touched: a device LXD refuses fails the restore here.
    if (Object.keys(patch).length > 0 || sandbox) {
      ctx.phase(sandbox ? 'isolating the sandbox' : 'applying device overrides');
      await applyDevices(engine, importName, patch, sandbox ? sandboxConfig(name) : undefined);
    }

    if (existing) {
      // The point of no return: a job that ended (cancelled) before it leaves the original as
      // it was, and the import is removed below; after it the swap finishes whatever happens.
      checkAborted(ctx, `restore of lxd:${name}`);
      await ctx.pointOfNoReturn?.();
      ctx.phase('replacing the existing instance');
      await hold?.update({ ...record, phase: 'swap' });
      await removeInstance(engine, name);
      try {
        await engine.client.run('POST', instancePath(importName), { name });
      } catch (err) {
        // The original is gone by now: keep the restored copy and say where it is.
        imported = false;
        throw translate(
          err,
          `renaming the restored instance ${importName} to ${name} (the restored copy is kept as ${importName})`,
          engine.socketPath,
        );
      }
    }

    if (start) {
      ctx.phase('starting instance');
      await changeState(engine, name, 'start');
    }
    imported = false;
    await hold?.clear();
    ctx.phase('done');
    return { restoredTarget: `lxd:${name}` };
  } catch (err) {
    // A NameTaken from LXD means someone else took the name meanwhile: theirs, not ours.
    const ours = imported && !(err instanceof NameTaken);
    await cleanUp(engine, ours ? importName : undefined, createdProfiles, ctx);
    if (hold?.record.data.phase === 'swap')
      hold.abandon(); // the sweep finishes the swap
    else await hold?.clear();
    throw err;
  }
}

/**
 * Releases an `lxd.import` record a killed restore left: before the swap, removes the import
 * (only one created after the record: never an instance someone else made under that name);
 * past it (in place, the original being removed), removes what is left of the original, names
 * the import after it and starts it if the restore would have.
 */
export async function releaseImport(engine: Engine, data: Record<string, unknown>): Promise<void> {
  const name = String(data.name);
  const temp = String(data.temp);
  const imported = await getInstance(engine, temp);
  if (data.phase !== 'swap') {
    const createdAt = (imported as { created_at?: string } | undefined)?.created_at;
    if (imported && createdAt && Date.parse(createdAt) >= Date.parse(String(data.notBefore))) {
      await removeInstance(engine, temp);
    }
    return;
  }
  if (imported && temp !== name) {
    await removeInstance(engine, name);
    try {
      await engine.client.run('POST', instancePath(temp), { name });
    } catch (err) {
      throw translate(err, `renaming the restored instance ${temp} to ${name}`, engine.socketPath);
    }
  }
  const now = await getInstance(engine, name);
  if (data.start === true && now && now.status !== 'Running') {
    await changeState(engine, name, now.status === 'Frozen' ? 'unfreeze' : 'start');
  }
}

/**
 * The instance as LXD makes it from nothing (`source: none`: a directory holding only LXD's
 * `backup.yaml`), with the point's profiles, devices (its root disk in `pool` when one is
 * given) and config less LXD's volatile keys, which the fill sets (fillInstance).
 */
async function createEmptyInstance(
  engine: Engine,
  metadata: LxdBackupMetadata,
  name: string,
  pool: string | undefined,
  ctx: DriverContext,
): Promise<void> {
  const devices = { ...metadata.devices };
  if (pool !== undefined) {
    const root = Object.keys(devices).find(
      (d) => devices[d]!.type === 'disk' && devices[d]!.path === '/',
    );
    devices[root ?? 'root'] = { ...(root ? devices[root] : { type: 'disk', path: '/' }), pool };
  }
  try {
    await engine.client.run(
      'POST',
      '/1.0/instances',
      {
        name,
        type: metadata.type,
        architecture: metadata.architecture,
        profiles: metadata.profiles,
        devices,
        config: withoutVolatileKeys(metadata.config),
        source: { type: 'none' },
      },
      abortCheck(ctx, `restore of lxd:${name}`),
    );
  } catch (err) {
    throw translate(err, `creating instance ${name}`, engine.socketPath);
  }
}

/** LXD's own keys of an instance (`volatile.*`: its uuid, idmaps, last state...). */
function withoutVolatileKeys(config: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(config).filter(([k]) => !k.startsWith('volatile.')));
}

/**
 * The volatile keys a filled instance takes from the point: the idmap its files on disk are in
 * (so LXD shifts them at start only if the new instance's map differs, never twice), whether a
 * template is still to apply (a fresh `none` instance says `create`), and its base image.
 */
const CARRIED_VOLATILE = [
  'volatile.last_state.idmap',
  'volatile.apply_template',
  'volatile.base_image',
] as const;

/**
 * Fills an empty instance made by createEmptyInstance from the point's trees, in its pool's
 * directory on this host: its volatile keys first (snapshots copy the config), then each
 * snapshot (made empty by LXD, then filled), then the instance itself. `metadata.yaml`,
 * `templates/` and `rootfs/` are written; LXD's `backup.yaml` stays LXD's.
 */
async function fillInstance(
  engine: Engine,
  metadata: LxdBackupMetadata,
  source: RestoreSource,
  name: string,
  ctx: DriverContext,
): Promise<void> {
  if (!source.restoreTree) throw new DriverError('this restore source cannot read tree streams');
  const what = `restore of lxd:${name}`;
  const created = await getInstance(engine, name);
  const pool = created ? rootPoolOf(created) : undefined;
  const host = await instanceDirs(engine, await poolDir(engine, pool, ctx), name);
  if (!host) throw notOnHost(`the point of lxd:${metadata.name}`, pool);

  const current = await engine.client
    .get<Record<string, unknown> & { config: Record<string, string> }>(instancePath(name))
    .catch((err: unknown) => {
      throw translate(err, `reading instance ${name}`, engine.socketPath);
    });
  const config = { ...current.config };
  for (const key of CARRIED_VOLATILE) {
    const value = metadata.config[key];
    if (value === undefined) delete config[key];
    else config[key] = value;
  }
  try {
    await engine.client.run('PUT', instancePath(name), {
      architecture: current.architecture,
      config,
      devices: current.devices,
      ephemeral: current.ephemeral,
      profiles: current.profiles,
      stateful: current.stateful,
      description: current.description,
    });
  } catch (err) {
    throw translate(err, `setting the idmap of instance ${name}`, engine.socketPath);
  }

  for (const snapshot of metadata.snapshots ?? []) {
    if (!source.streams.some((s) => s.name === snapshotTree(snapshot))) continue;
    checkAborted(ctx, what);
    ctx.phase(`restoring snapshot ${snapshot}`);
    try {
      await engine.client.run(
        'POST',
        `${instancePath(name)}/snapshots`,
        { name: snapshot },
        abortCheck(ctx, what),
      );
    } catch (err) {
      throw translate(err, `creating snapshot ${snapshot} of ${name}`, engine.socketPath);
    }
    const dir = join(host.snapshots, snapshot);
    await requireMadeDir(dir, `snapshot ${name}/${snapshot}`);
    await source.restoreTree(snapshotTree(snapshot), dir, ctx, { paths: INSTANCE_PATHS });
  }
  ctx.phase('restoring instance');
  await source.restoreTree(MAIN_TREE, host.dir, ctx, { paths: INSTANCE_PATHS });
}

/**
 * The pool LXD puts an instance's root disk in when neither the restore nor its devices say:
 * the root disk of its profiles, the last one that has one winning, as LXD expands them.
 */
async function profilesRootPool(
  engine: Engine,
  profiles: readonly string[],
): Promise<string | undefined> {
  let pool: string | undefined;
  for (const name of profiles) {
    const profile = await getProfile(engine, name);
    const root = Object.values(profile?.devices ?? {}).find(
      (d) => d.type === 'disk' && d.path === '/' && typeof d.pool === 'string',
    );
    if (root) pool = root.pool;
  }
  return pool;
}

/** A name for the in-place import, within LXD's 63 characters. */
function temporaryName(name: string): string {
  return `${name.slice(0, 40)}-stowage-${randomBytes(4).toString('hex')}`;
}

/**
 * The pool to import into: the one asked for (which must exist: the error lists the pools), else
 * the recorded root pool when this server has it (else LXD's default from the profiles). An
 * optimized point needs a pool of the driver it was made on.
 */
async function importPool(
  engine: Engine,
  metadata: LxdBackupMetadata,
  asked: string | undefined,
): Promise<string | undefined> {
  if (asked !== undefined) {
    const pool = await requirePool(engine, asked);
    checkOptimizedTarget(metadata.optimizedStorage, metadata.rootPoolDriver, asked, pool.driver);
    return asked;
  }
  const recorded = metadata.rootPool ? await getPool(engine, metadata.rootPool) : undefined;
  if (recorded) {
    checkOptimizedTarget(
      metadata.optimizedStorage,
      metadata.rootPoolDriver,
      recorded.name,
      recorded.driver,
    );
  }
  return recorded?.name;
}

type Devices = Record<string, Record<string, string>>;

/**
 * Turns `--device` overrides into the devices to PATCH onto the import, checked against the
 * point's devices before anything is read. An override of a device the instance has (its own or
 * a profile's) starts from that device, as `lxc config device override` does; a new device needs
 * a `type`; `type=none` masks a profile's device; an empty value drops a key. The root disk's
 * `pool` is where the import goes (LXD cannot move a root disk by PATCH), so it is returned
 * apart and not patched.
 */
export function planDevices(
  metadata: Pick<LxdBackupMetadata, 'expandedDevices'>,
  overrides: Devices,
): { pool?: string; patch: Devices } {
  const known = metadata.expandedDevices ?? {};
  const patch: Devices = {};
  let pool: string | undefined;
  for (const [name, keys] of Object.entries(overrides)) {
    const base = known[name];
    if (!base && !keys.type) {
      throw new ValidationError(
        `device ${name} is not in the recovery point (it has: ${Object.keys(known).sort().join(', ') || 'none'}); give type=... to add it, e.g. --device ${name},type=disk,...`,
      );
    }
    const isRoot = base?.type === 'disk' && base.path === '/';
    const rest = { ...keys };
    if (isRoot && rest.pool !== undefined) {
      pool = rest.pool;
      delete rest.pool;
      if (Object.keys(rest).length === 0) continue;
    }
    if (rest.type === 'none') {
      patch[name] = { type: 'none' };
      continue;
    }
    const merged: Record<string, string> = { ...(base ?? {}) };
    for (const [key, value] of Object.entries(rest)) {
      if (value === '') delete merged[key];
      else merged[key] = value;
    }
    if (isRoot && pool !== undefined) merged.pool = pool;
    patch[name] = merged;
  }
  return pool === undefined ? { patch } : { pool, patch };
}

/** Puts back the snapshots' expiry, which LXD's import drops (it keeps their descriptions). */
async function restoreSnapshotExpiry(
  engine: Engine,
  name: string,
  expiry: Record<string, string>,
): Promise<void> {
  for (const [snapshot, expiresAt] of Object.entries(expiry)) {
    try {
      await engine.client.run(
        'PATCH',
        `${instancePath(name)}/snapshots/${encodeURIComponent(snapshot)}`,
        { expires_at: expiresAt },
      );
    } catch (err) {
      throw translate(err, `setting the expiry of snapshot ${snapshot}`, engine.socketPath);
    }
  }
}

/** PATCHes devices (and config keys) onto an instance (LXD merges them by name into its own). */
async function applyDevices(
  engine: Engine,
  name: string,
  devices: Devices,
  config?: Record<string, string>,
): Promise<void> {
  try {
    await engine.client.run('PATCH', instancePath(name), {
      devices,
      ...(config ? { config } : {}),
    });
  } catch (err) {
    throw translate(
      err,
      `applying the device overrides ${Object.keys(devices).join(', ')}`,
      engine.socketPath,
    );
  }
}

/** Removes what a failed restore created; logs rather than hides the restore's own error. */
async function cleanUp(
  engine: Engine,
  instance: string | undefined,
  profiles: string[],
  ctx: DriverContext,
): Promise<void> {
  if (instance) {
    try {
      await removeInstance(engine, instance);
    } catch (err) {
      ctx.log.warn(LogEvent.driverStep, { step: 'remove restored instance', instance, error: err });
    }
  }
  for (const profile of profiles.reverse()) {
    try {
      await engine.client.run('DELETE', `/1.0/profiles/${encodeURIComponent(profile)}`);
    } catch (err) {
      ctx.log.warn(LogEvent.driverStep, {
        step: 'remove recreated profile',
        profile,
        error: translate(err, `deleting profile ${profile}`, engine.socketPath),
      });
    }
  }
}
