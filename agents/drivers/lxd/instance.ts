/**
 * What the backup and restore halves of the LXD driver share: the connection, the shape of an
 * instance as LXD returns it, the metadata a recovery point records, lookups that tell "absent"
 * from "failed", and state changes that wait for LXD to finish them (stop is asynchronous: an
 * instance must be Stopped before it can be deleted or renamed).
 */
import { isValidInstanceName } from '../../../kernel/platforms/lxd';
import { ValidationError } from '../../../kernel/errors';
import type { DriverContext } from '../../core/driver';
import { checkAborted } from '../../core/driver-streams';
import type { LxdClient } from './client';
import { isNotFound, translate } from './errors';
import type { TreeRecord } from './host-tree';

export interface Engine {
  client: LxdClient;
  socketPath: string;
  project: string;
  /**
   * Whether instances and volumes on `dir` pools may be read and written in the pool's directory
   * on this host (host-tree.ts). Default (undefined) yes: the agent runs as root beside LXD.
   */
  hostAccess?: boolean;
}

/** The parts of `GET /1.0/instances/{name}` the driver reads. */
export interface LxdInstance {
  name: string;
  type: string;
  architecture: string;
  status: string;
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
  profiles: string[];
  expanded_config: Record<string, string>;
  expanded_devices: Record<string, Record<string, string>>;
  snapshots?: unknown[] | null;
}

export interface LxdProfile {
  name: string;
  description: string;
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
}

export const METADATA_FORMAT = 'stowage-lxd-instance/1';
export const EXPORT_STREAM = 'export';
export const EXPORT_KIND = 'lxd-backup-tar';

/** What a recovery point of an LXD instance records besides its export stream. */
export interface LxdBackupMetadata {
  format: typeof METADATA_FORMAT;
  project: string;
  name: string;
  type: string;
  architecture: string;
  /** LXD's status word at backup time (Running, Stopped, Frozen). */
  status: string;
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
  profiles: string[];
  expandedConfig: Record<string, string>;
  expandedDevices: Record<string, Record<string, string>>;
  /** Every referenced profile's definition, so a restore elsewhere can recreate missing ones. */
  profileDefinitions: LxdProfile[];
  /** The storage pool of the root disk, when one was set. */
  rootPool?: string;
  /** The root pool's storage driver at backup time. */
  rootPoolDriver?: string;
  instanceOnly: boolean;
  /** The snapshots the export holds (none when instanceOnly). */
  snapshots?: string[];
  /** `expires_at` of the snapshots that have one, by snapshot name (LXD's import drops it). */
  snapshotExpiry?: Record<string, string>;
  /** Whether the export is in the pool driver's optimized format (see export.ts). */
  optimizedStorage?: boolean;
  consistency: 'live' | 'pause' | 'stop';
  /**
   * How the instance was read (host-tree.ts): `host`, its pool's directory as tree streams
   * (`tree` and `snapshot/NAME`); `engine-api` (or absent, older points), LXD's export.
   */
  read?: 'host' | 'engine-api';
  /** Per tree stream, what was read from the host and what came from the last point. */
  trees?: TreeRecord[];
}

/** LXD's rule for instance names (shared with the API's check of a restore's name). */
export const isValidName = isValidInstanceName;

export function instancePath(name: string): string {
  return `/1.0/instances/${encodeURIComponent(name)}`;
}

/** The instance named `name`, or undefined when there is none. */
export async function getInstance(engine: Engine, name: string): Promise<LxdInstance | undefined> {
  if (!isValidName(name)) return undefined;
  try {
    return await engine.client.get<LxdInstance>(instancePath(name));
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw translate(err, `reading instance ${name}`, engine.socketPath);
  }
}

export async function getProfile(engine: Engine, name: string): Promise<LxdProfile | undefined> {
  try {
    return await engine.client.get<LxdProfile>(`/1.0/profiles/${encodeURIComponent(name)}`);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw translate(err, `reading profile ${name}`, engine.socketPath);
  }
}

/** Seconds LXD gives an instance's init to stop cleanly before the driver forces it. */
const STOP_TIMEOUT_S = 30;

export type StateAction = 'start' | 'stop' | 'freeze' | 'unfreeze';

/** Changes an instance's state and waits for it; `stop` falls back to a forced stop. */
export async function changeState(
  engine: Engine,
  name: string,
  action: StateAction,
  options: { force?: boolean } = {},
): Promise<void> {
  const path = `${instancePath(name)}/state`;
  try {
    if (action === 'stop' && !options.force) {
      try {
        await engine.client.run('PUT', path, { action, timeout: STOP_TIMEOUT_S, force: false });
        return;
      } catch {
        // busybox-style inits may ignore LXD's SIGPWR; a forced stop is the documented fallback.
      }
      await engine.client.run('PUT', path, { action, timeout: -1, force: true });
      return;
    }
    await engine.client.run('PUT', path, { action, timeout: -1, force: action === 'stop' });
  } catch (err) {
    throw translate(err, `${action} instance ${name}`, engine.socketPath);
  }
}

/** Stops (forced) and deletes an instance; one already gone is fine. */
export async function removeInstance(engine: Engine, name: string): Promise<void> {
  const instance = await getInstance(engine, name);
  if (!instance) return;
  if (instance.status !== 'Stopped') await changeState(engine, name, 'stop', { force: true });
  try {
    await engine.client.run('DELETE', instancePath(name));
  } catch (err) {
    if (isNotFound(err)) return;
    throw translate(err, `deleting instance ${name}`, engine.socketPath);
  }
}

/** For `client.wait`: stop waiting when the job is abandoned. */
export function abortCheck(ctx: DriverContext, what: string): () => void {
  return () => checkAborted(ctx, what);
}

/**
 * A recovery point's driver metadata as the format it says it is (`format`), or a
 * ValidationError naming what kind of point was expected (`instance`, `server`...).
 */
export function metadataOf<T>(metadata: Record<string, unknown>, format: string, kind: string): T {
  if (metadata.format !== format) {
    throw new ValidationError(
      `not an LXD ${kind} recovery point (format ${String(metadata.format)}, expected ${format})`,
    );
  }
  return metadata as unknown as T;
}
