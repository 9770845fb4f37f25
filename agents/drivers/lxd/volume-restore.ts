/**
 * Restore of one LXD custom volume from its `volume-export` stream, with the snapshots the point
 * holds.
 *
 * Import: `POST /1.0/storage-pools/{pool}/volumes/custom`, octet-stream body, `X-LXD-name` (LXD
 * 5.0's `backup_override_name`); an async operation. The pool is the one in the destination
 * name (`POOL/NAME`), so a restore into another pool is a restore under that name.
 *
 * Under a new name: refuse (NameTaken) if the volume exists; import.
 *
 * In place: import whole under a temporary name first, so every byte has been read before
 * anything is replaced. Then the swap, with the instances that use the volume stopped (LXD
 * refuses to rename or delete a volume a running instance uses) and started again afterwards:
 * rename the original aside (LXD points the devices of the instances and profiles that use it at
 * the new name), rename the import to the original's name, point those devices back at it,
 * delete the original. A failure before the swap leaves the original as it was; the instances
 * that ran are started again whatever happens. A volume a profile attaches is refused in place
 * (LXD 5.0 rewrites the profile before the rename and can leave it pointing nowhere).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { withGuardedTar } from '../../core/tar-guard';
import { DriverError, NameTaken, ValidationError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import { splitVolumeName } from '../../../kernel/platforms/lxd-volume';
import type {
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../core/driver';
import { checkAborted, consumeStream } from '../../core/driver-streams';
import {
  MAIN_TREE,
  isTreePoint,
  notOnHost,
  poolDir,
  requireMadeDir,
  snapshotTree,
  volumeDirs,
} from './host-tree';
import { takeHold, type Hold } from '../../core/holds';
import { TREE_KIND } from '../../core/tree/format';
import { volumeImportArchive } from './tree-import';
import { translate } from './errors';
import { checkOptimizedTarget } from './export';
import {
  abortCheck,
  changeState,
  getInstance,
  getProfile,
  instancePath,
  metadataOf,
  type Engine,
} from './instance';
import {
  VOLUME_METADATA_FORMAT,
  VOLUME_STREAM,
  getVolume,
  poolPath,
  removeVolume,
  requirePool,
  volumePath,
  type LxdVolumeBackupMetadata,
} from './volume';

function parseMetadata(metadata: Record<string, unknown>): LxdVolumeBackupMetadata {
  return metadataOf<LxdVolumeBackupMetadata>(metadata, VOLUME_METADATA_FORMAT, 'custom volume');
}

export async function restoreVolume(
  engine: Engine,
  rawMetadata: Record<string, unknown>,
  source: RestoreSource,
  options: RestoreOptions,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  const metadata = parseMetadata(rawMetadata);
  const { pool, volume } = splitVolumeName(options.name);
  const target = `lxd-volume:${pool}/${volume}`;
  if (options.pool !== undefined && options.pool !== pool) {
    throw new ValidationError(
      `the destination ${target} is in pool ${pool}, not ${options.pool}: give the pool once (--pool ${options.pool} --name ${volume})`,
    );
  }
  for (const unsupported of [
    'volumes',
    'network',
    'ports',
    'volume',
    'intoVolume',
    'devices',
    'state',
  ] as const) {
    if (options[unsupported] !== undefined) {
      throw new ValidationError(`a custom volume restore cannot honour ${unsupported}`);
    }
  }
  const tree = isTreePoint(source);
  const stream = source.streams.find((s) => s.name === VOLUME_STREAM);
  if (!stream && !tree) {
    throw new DriverError(`the recovery point has no ${VOLUME_STREAM} stream and no tree`);
  }

  ctx.phase('checking the pool and the name');
  const poolInfo = await requirePool(engine, pool);
  checkOptimizedTarget(metadata.optimizedStorage, metadata.poolDriver, pool, poolInfo.driver);
  const existing = await getVolume(engine, pool, volume);
  if (existing && !options.inPlace) {
    throw new NameTaken(`${target} exists; restore under another name or in place`);
  }
  if (existing && existing.content_type !== metadata.contentType) {
    throw new ValidationError(
      `${target} is a ${existing.content_type} volume and the point holds a ${metadata.contentType} one; restore it under another name`,
    );
  }
  const viaProfiles = (existing?.used_by ?? [])
    .map(userOf)
    .filter((u) => u?.kind === 'profiles')
    .map((u) => u!.name);
  if (existing && viaProfiles.length > 0) {
    // LXD 5.0 rewrites a profile's device before it renames the volume and leaves the profile
    // pointing at a volume that does not exist when an instance of the profile objects.
    throw new ValidationError(
      `${target} is attached through profile ${viaProfiles.join(', ')}; LXD cannot swap such a volume in place. Restore it under another name (--name ${volume}-restored) and point the profile at it`,
    );
  }
  const importName = existing ? temporaryName(volume) : volume;

  const root = tree ? await poolDir(engine, pool, ctx) : undefined;
  if (tree && !root && !source.treesAsTar)
    throw notOnHost(`the point of lxd-volume:${metadata.pool}/${metadata.name}`, pool);

  let imported = false;
  try {
    if (tree && root) {
      ctx.phase('creating volume');
      await createEmptyVolume(engine, metadata, pool, importName, ctx);
      imported = true;
      await fillVolume(engine, metadata, source, root, pool, importName, ctx);
    } else {
      // Through LXD's import: the point's export, or, for a tree point into a pool this agent
      // cannot write, its trees as LXD's own export (tree-import.ts).
      const headers: Record<string, string | number> = { 'X-LXD-name': importName };
      let body: Readable;
      if (tree) {
        body = volumeImportArchive(metadata, source, poolInfo);
        ctx.expectBytes?.(
          source.streams.filter((s) => s.kind === TREE_KIND).reduce((n, s) => n + s.size, 0),
        );
      } else {
        headers['Content-Length'] = stream!.size;
        body = await source.openStream(VOLUME_STREAM);
        ctx.expectBytes?.(stream!.size);
      }
      ctx.phase('importing volume');
      const what = `import of ${target}`;
      const upload = (s: Readable) =>
        engine.client.upload(`${poolPath(pool)}/volumes/custom`, s, headers);
      const answer = await consumeStream(body, ctx, what, (s) =>
        // LXD stores the upload before it unpacks it: a hostile archive never arrives whole.
        // The archive made here from the point's trees is not one to guard against.
        tree ? upload(s) : withGuardedTar(s, { what }, upload),
      ).catch((err: unknown) => {
        throw translate(err, `importing custom volume ${pool}/${importName}`, engine.socketPath);
      });
      imported = true;
      await engine.client
        .wait(answer.operation, abortCheck(ctx, `restore of ${target}`))
        .catch((err: unknown) => {
          throw translate(err, `importing custom volume ${pool}/${importName}`, engine.socketPath);
        });
    }

    if (existing) {
      // The point of no return: a cancel before it leaves the volume as it was.
      checkAborted(ctx, `restore of ${target}`);
      await ctx.pointOfNoReturn?.();
      ctx.phase('replacing the existing volume');
      await swapIn(engine, pool, volume, importName, ctx);
    }
    imported = false;
    ctx.phase('done');
    return { restoredTarget: target };
  } catch (err) {
    // A NameTaken from LXD means someone else took the name meanwhile: theirs, not ours.
    if (imported && !(err instanceof NameTaken)) {
      await removeVolume(engine, pool, importName).catch((cleanupErr: unknown) =>
        ctx.log.warn(LogEvent.driverStep, {
          step: 'remove restored volume',
          volume: `${pool}/${importName}`,
          error: cleanupErr,
        }),
      );
    }
    throw err;
  }
}

/**
 * The volume as LXD makes it empty, with the point's description and config (its volatile idmap
 * keys too: they say which map the files a tree brings back are in, so LXD shifts them only when
 * an instance with another map attaches it).
 */
async function createEmptyVolume(
  engine: Engine,
  metadata: LxdVolumeBackupMetadata,
  pool: string,
  name: string,
  ctx: DriverContext,
): Promise<void> {
  try {
    await engine.client.run(
      'POST',
      `${poolPath(pool)}/volumes/custom`,
      {
        name,
        description: metadata.description,
        config: metadata.config,
        content_type: 'filesystem',
      },
      abortCheck(ctx, `restore of lxd-volume:${pool}/${name}`),
    );
  } catch (err) {
    throw translate(err, `creating custom volume ${pool}/${name}`, engine.socketPath);
  }
}

/**
 * Fills an empty volume from the point's trees in its pool's directory on this host: each
 * snapshot first (made by LXD from the still empty volume, with its description and expiry,
 * then filled), then the volume itself.
 */
async function fillVolume(
  engine: Engine,
  metadata: LxdVolumeBackupMetadata,
  source: RestoreSource,
  root: string,
  pool: string,
  name: string,
  ctx: DriverContext,
): Promise<void> {
  if (!source.restoreTree) throw new DriverError('this restore source cannot read tree streams');
  const what = `restore of lxd-volume:${pool}/${name}`;
  const host = await volumeDirs(engine, root, name);
  if (!host) throw notOnHost(`the point of lxd-volume:${metadata.pool}/${metadata.name}`, pool);
  for (const snapshot of metadata.snapshots) {
    if (!source.streams.some((s) => s.name === snapshotTree(snapshot.name))) continue;
    checkAborted(ctx, what);
    ctx.phase(`restoring snapshot ${snapshot.name}`);
    try {
      await engine.client.run(
        'POST',
        `${volumePath(pool, name)}/snapshots`,
        {
          name: snapshot.name,
          description: snapshot.description,
          ...(snapshot.expiresAt ? { expires_at: snapshot.expiresAt } : {}),
        },
        abortCheck(ctx, what),
      );
    } catch (err) {
      throw translate(
        err,
        `creating snapshot ${snapshot.name} of ${pool}/${name}`,
        engine.socketPath,
      );
    }
    const dir = join(host.snapshots, snapshot.name);
    await requireMadeDir(dir, `snapshot ${pool}/${name}/${snapshot.name}`);
    await source.restoreTree(snapshotTree(snapshot.name), dir, ctx);
  }
  ctx.phase('restoring volume');
  await source.restoreTree(MAIN_TREE, host.dir, ctx);
}

/** A name for the in-place import or the set-aside original. */
function temporaryName(name: string): string {
  return `${name.slice(0, 40)}-stowage-${randomBytes(4).toString('hex')}`;
}

/** `/1.0/instances/c1?project=x` → `{ kind: 'instances', name: 'c1' }`; snapshots are skipped. */
function userOf(url: string): { kind: 'instances' | 'profiles'; name: string } | undefined {
  const match = /^\/1\.0\/(instances|profiles)\/([^/?]+)(\?.*)?$/.exec(url);
  if (!match) return undefined;
  return { kind: match[1] as 'instances' | 'profiles', name: decodeURIComponent(match[2]!) };
}

/**
 * Replaces `pool/volume` by the imported `pool/importName` (see the module comment). Throws
 * after undoing what it can; once the import carries the original's name, an error names the
 * kept original so nothing is lost.
 */
async function swapIn(
  engine: Engine,
  pool: string,
  volume: string,
  importName: string,
  ctx: DriverContext,
): Promise<void> {
  const current = await getVolume(engine, pool, volume);
  const users = (current?.used_by ?? []).map(userOf).filter((u) => u !== undefined);
  const stopped: string[] = [];
  const aside = temporaryName(volume);
  const rename = async (from: string, to: string) => {
    try {
      await engine.client.run('POST', volumePath(pool, from), { name: to });
    } catch (err) {
      throw translate(err, `renaming custom volume ${pool}/${from} to ${to}`, engine.socketPath);
    }
  };
  let swapError: unknown;
  const holds = new Map<string, Hold>();
  try {
    for (const user of users) {
      if (user.kind !== 'instances') continue;
      const { name } = user;
      const instance = await getInstance(engine, name);
      if (instance?.status === 'Running' || instance?.status === 'Frozen') {
        ctx.phase(`stopping instance ${name}, which uses the volume`);
        // Journaled first: a sweep after a kill starts it again.
        const hold = await takeHold(ctx.holds, 'lxd', 'lxd.state', {
          socketPath: engine.socketPath,
          project: engine.project,
          instance: name,
          undo: 'start',
        });
        if (hold) holds.set(name, hold);
        await changeState(engine, name, 'stop');
        stopped.push(name);
      }
    }
    await rename(volume, aside);
    try {
      await rename(importName, volume);
    } catch (err) {
      await rename(aside, volume).catch((undoErr: unknown) =>
        ctx.log.warn(LogEvent.driverStep, { step: 'undo rename', volume, error: undoErr }),
      );
      throw err;
    }
    try {
      for (const user of users) await repoint(engine, user, pool, aside, volume);
      await removeVolume(engine, pool, aside);
    } catch (err) {
      throw new DriverError(
        `the restored volume is ${pool}/${volume}, but pointing its users back at it or removing the original failed; the original is kept as ${pool}/${aside}: ${(err as Error).message}`,
        { cause: err },
      );
    }
  } catch (err) {
    swapError = err;
  }
  // Every instance gets its start; a failed one wins over the swap's own error (a workload left
  // down is what the operator must hear about), as in the backups' releases.
  let startError: unknown;
  for (const name of stopped) {
    ctx.phase(`starting instance ${name} again`);
    await changeState(engine, name, 'start').then(
      () => holds.get(name)?.clear(),
      (err: unknown) => {
        holds.get(name)?.abandon();
        startError ??= err;
      },
    );
  }
  // Holds taken for instances whose stop failed: the sweep looks at them.
  for (const [name, hold] of holds) if (!stopped.includes(name)) hold.abandon();
  if (startError) throw startError;
  if (swapError) throw swapError;
}

/** Points the disk devices of `user` that use `pool/from` at `pool/to`. */
async function repoint(
  engine: Engine,
  user: { kind: 'instances' | 'profiles'; name: string },
  pool: string,
  from: string,
  to: string,
): Promise<void> {
  const owner =
    user.kind === 'instances'
      ? await getInstance(engine, user.name)
      : await getProfile(engine, user.name);
  if (!owner) return;
  const devices: Record<string, Record<string, string>> = {};
  for (const [name, device] of Object.entries(owner.devices ?? {})) {
    if (device.type === 'disk' && device.pool === pool && device.source === from) {
      devices[name] = { ...device, source: to };
    }
  }
  if (Object.keys(devices).length === 0) return;
  const path =
    user.kind === 'instances'
      ? instancePath(user.name)
      : `/1.0/profiles/${encodeURIComponent(user.name)}`;
  try {
    await engine.client.run('PATCH', path, { devices });
  } catch (err) {
    throw translate(err, `pointing ${user.kind} ${user.name} at ${pool}/${to}`, engine.socketPath);
  }
}
