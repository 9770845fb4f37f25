/**
 * Restore of one LXD instance from its `export` stream.
 *
 * Under a new name: refuse (NameTaken) if the name exists; recreate the profiles the point
 * references and this server lacks (LXD refuses an import whose profiles are missing); import
 * (`POST /1.0/instances`, octet-stream, `X-LXD-name`, `X-LXD-pool` when the recorded root pool
 * exists here); start it if it ran at backup time (LXD leaves an import Stopped).
 *
 * In place: the point is imported whole under a temporary name first, so every byte has been
 * read before anything is replaced; only then is the existing instance stopped and deleted and
 * the temporary one renamed. A failure before that leaves the original as it was.
 *
 * On failure the restore removes what it created (the imported or temporary instance, the
 * profiles it added), so a retry starts clean.
 */
import { randomBytes } from 'node:crypto';
import { DriverError, NameTaken, ValidationError } from '../../../functions/shared/errors';
import { LogEvent } from '../../../functions/shared/logger';
import type {
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../core/driver';
import { checkAborted, consumeStream } from '../../core/driver-streams';
import { isNotFound, translate } from './errors';
import {
  EXPORT_STREAM,
  METADATA_FORMAT,
  abortCheck,
  changeState,
  getInstance,
  getProfile,
  instancePath,
  isValidName,
  removeInstance,
  type Engine,
  type LxdBackupMetadata,
} from './instance';

function parseMetadata(metadata: Record<string, unknown>): LxdBackupMetadata {
  if (metadata.format !== METADATA_FORMAT) {
    throw new ValidationError(
      `not an LXD instance recovery point (format ${String(metadata.format)}, expected ${METADATA_FORMAT})`,
    );
  }
  return metadata as unknown as LxdBackupMetadata;
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
      throw new DriverError(`the lxd driver cannot honour ${unsupported} in a restore`);
    }
  }
  const stream = source.streams.find((s) => s.name === EXPORT_STREAM);
  if (!stream) throw new DriverError(`the recovery point has no ${EXPORT_STREAM} stream`);

  ctx.phase('checking the name');
  const existing = await getInstance(engine, name);
  if (existing && !inPlace) {
    throw new NameTaken(`lxd:${name} exists; restore under another name or in place`);
  }
  const importName = existing ? temporaryName(name) : name;

  const createdProfiles: string[] = [];
  let imported = false;
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

    const headers: Record<string, string | number> = {
      'X-LXD-name': importName,
      'Content-Length': stream.size,
    };
    if (metadata.rootPool && (await poolExists(engine, metadata.rootPool))) {
      headers['X-LXD-pool'] = metadata.rootPool;
    }

    ctx.phase('importing instance');
    ctx.expectBytes?.(stream.size);
    const body = await source.openStream(EXPORT_STREAM);
    const answer = await consumeStream(body, ctx, `import of lxd:${name}`, (s) =>
      engine.client.upload('/1.0/instances', s, headers),
    ).catch((err: unknown) => {
      throw translate(err, `importing instance ${importName}`, engine.socketPath);
    });
    imported = true;
    await engine.client
      .wait(answer.operation, abortCheck(ctx, `restore of lxd:${name}`))
      .catch((err: unknown) => {
        throw translate(err, `importing instance ${importName}`, engine.socketPath);
      });

    if (existing) {
      ctx.phase('replacing the existing instance');
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

    // LXD leaves an import Stopped; a frozen instance comes back running (thawed), not frozen.
    if (metadata.status === 'Running' || metadata.status === 'Frozen') {
      ctx.phase('starting instance');
      await changeState(engine, name, 'start');
    }
    imported = false;
    ctx.phase('done');
    return { restoredTarget: `lxd:${name}` };
  } catch (err) {
    // A NameTaken from LXD means someone else took the name meanwhile: theirs, not ours.
    const ours = imported && !(err instanceof NameTaken);
    await cleanUp(engine, ours ? importName : undefined, createdProfiles, ctx);
    throw err;
  }
}

/** A name for the in-place import, within LXD's 63 characters. */
function temporaryName(name: string): string {
  return `${name.slice(0, 40)}-stowage-${randomBytes(4).toString('hex')}`;
}

async function poolExists(engine: Engine, pool: string): Promise<boolean> {
  try {
    await engine.client.get(`/1.0/storage-pools/${encodeURIComponent(pool)}`);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw translate(err, `reading storage pool ${pool}`, engine.socketPath);
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
