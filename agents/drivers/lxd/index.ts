/**
 * The LXD driver: instances as targets (`lxd:<name>`), backed up as their config and profiles
 * (metadata) + LXD's own uncompressed instance backup (backup.ts), restored by import under a new
 * name or in place over the original (restore.ts). Talks to LXD's REST API over its unix socket
 * with Node's `http` (client.ts); no LXD type leaves this folder.
 */
import { silentLogger, type Logger } from '../../../functions/shared/logger';
import type { DiscoveredTarget, Driver } from '../../core/driver';
import { backupInstance, type LxdBackupOptions } from './backup';
import { LxdClient } from './client';
import { translate } from './errors';
import { getInstance, type Engine, type LxdInstance } from './instance';
import { restoreInstance } from './restore';

export const DEFAULT_LXD_SOCKET = '/var/lib/lxd/unix.socket';

export interface LxdDriverOptions {
  /** lxd's unix socket; default /var/lib/lxd/unix.socket. */
  socketPath?: string;
  /** The LXD project whose instances are targets; default `default`. */
  project?: string;
  /** For what happens outside a job; jobs log through their context. */
  log?: Logger;
}

export type { LxdBackupOptions };

export function createLxdDriver(options: LxdDriverOptions = {}): Driver {
  const socketPath = options.socketPath ?? DEFAULT_LXD_SOCKET;
  const project = options.project ?? 'default';
  // Nothing outside a job logs yet (no watch); kept for the same shape as the other drivers.
  void (options.log ?? silentLogger);
  const engine: Engine = { client: new LxdClient({ socketPath, project }), socketPath, project };

  async function listTargets(): Promise<DiscoveredTarget[]> {
    let instances: LxdInstance[];
    try {
      instances = await engine.client.get<LxdInstance[]>('/1.0/instances?recursion=1');
    } catch (err) {
      throw translate(err, 'listing instances', socketPath);
    }
    return instances
      .map((i) => ({
        target: `lxd:${i.name}`,
        platform: 'lxd',
        name: i.name,
        state: i.status.toLowerCase(),
        details: { type: i.type, profiles: i.profiles.join(',') },
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  return {
    platform: 'lxd',
    listTargets,
    exists: async (name) => (await getInstance(engine, name)) !== undefined,
    backup: (name, sink, ctx, backupOptions) =>
      backupInstance(engine, name, sink, ctx, backupOptions),
    restore: (metadata, source, restoreOptions, ctx) =>
      restoreInstance(engine, metadata, source, restoreOptions, ctx),
  };
}
