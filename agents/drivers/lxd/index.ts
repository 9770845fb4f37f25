/**
 * The LXD drivers: instances as targets (`lxd:<name>`), backed up as their config and profiles
 * (metadata) + LXD's own uncompressed instance backup (backup.ts), restored by import under a new
 * name or in place over the original (restore.ts), with local snapshots as a fast tier
 * (snapshots.ts); custom storage volumes (`lxd-volume:<pool>/<name>`), backed up and restored on
 * their own the same way (volume-backup.ts, volume-restore.ts); and the whole server
 * (`lxd-server:<agent>`: projects, pools, networks, profiles, images, volumes and instances in one
 * point, server-backup.ts, server-restore.ts, with LXD's disaster recovery API in recover.ts).
 * All talk to LXD's REST API over its unix socket with Node's `http` (client.ts); no LXD type
 * leaves this folder.
 *
 * The inventory lists each instance's snapshots and schedule; listing first deletes the snapshots
 * past their expiry, so what is published never holds an expired one.
 */
import { silentLogger, type Logger } from '../../../kernel/logger';
import type { DiscoveredTarget, Driver } from '../../core/driver';
import { backupInstance, type LxdBackupOptions } from './backup';
import { LxdClient } from './client';
import { translate } from './errors';
import { getInstance, type Engine, type LxdInstance } from './instance';
import { restoreInstance } from './restore';
import { createSnapshotOps, scheduleOf, type CriuCheck } from './snapshots';
import { splitVolumeName } from '../../../kernel/platforms/lxd-volume';
import { getVolume, listVolumes } from './volume';
import { backupVolume } from './volume-backup';
import { restoreVolume } from './volume-restore';
import { backupServer } from './server-backup';
import { restoreServer } from './server-restore';
import { engineFor, list } from './server';
import { releaseLxdHold } from './holds';
import { probeSandbox, removeSandbox, SANDBOX_KEY } from './sandbox';
import { watchLxdEvents } from './events';

export const DEFAULT_LXD_SOCKET = '/var/lib/lxd/unix.socket';

export interface LxdDriverOptions {
  /** lxd's unix socket; default /var/lib/lxd/unix.socket. */
  socketPath?: string;
  /** The LXD project whose instances are targets; default `default`. */
  project?: string;
  /** For what happens outside a job; jobs log through their context. */
  log?: Logger;
  /** Whether stateful snapshots can work here (default: `criu check` on this host). */
  criuCheck?: CriuCheck;
  /**
   * Whether instances and custom volumes on `dir` pools are read and restored in the pool's
   * directory on this host as tree streams (host-tree.ts). Default true (the agent runs as root
   * beside LXD); false: everything goes through LXD's export and import, as for an LXD the
   * agent cannot see the disks of.
   */
  hostAccess?: boolean;
}

export type { LxdBackupOptions };

function engineOf(options: LxdDriverOptions): Engine {
  const socketPath = options.socketPath ?? DEFAULT_LXD_SOCKET;
  const project = options.project ?? 'default';
  return {
    client: new LxdClient({ socketPath, project }),
    socketPath,
    project,
    hostAccess: options.hostAccess ?? true,
  };
}

export function createLxdDriver(options: LxdDriverOptions = {}): Driver {
  const engine = engineOf(options);
  const { socketPath } = engine;
  const log = options.log ?? silentLogger;
  const snapshots = createSnapshotOps(engine, {
    log,
    ...(options.criuCheck ? { criuCheck: options.criuCheck } : {}),
  });

  async function listTargets(): Promise<DiscoveredTarget[]> {
    let instances: LxdInstance[];
    try {
      instances = await engine.client.get<LxdInstance[]>('/1.0/instances?recursion=1');
    } catch (err) {
      throw translate(err, 'listing instances', socketPath);
    }
    const targets: DiscoveredTarget[] = [];
    for (const i of instances) {
      // Restore tests' sandboxes live only within their job: they are not targets.
      if (i.config?.[SANDBOX_KEY]) continue;
      // An instance deleted meanwhile, or a snapshot LXD will not delete, must not hide the rest.
      const held = await snapshots.list(i.name).catch((err: unknown) => {
        log.warn('agent.inventory.snapshots_failed', { instance: i.name, error: err });
        return [];
      });
      const schedule = scheduleOf(i);
      targets.push({
        target: `lxd:${i.name}`,
        platform: 'lxd',
        name: i.name,
        state: i.status.toLowerCase(),
        details: {
          type: i.type,
          profiles: i.profiles.join(','),
          snapshots: String(held.length),
          ...(schedule ? { schedule: schedule.every } : {}),
        },
        snapshots: held,
        ...(schedule ? { snapshotSchedule: schedule } : {}),
      });
    }
    return targets.sort((a, b) => a.name.localeCompare(b.name));
  }

  return {
    platform: 'lxd',
    listTargets,
    watch: (onChange) => watchLxdEvents({ socketPath, project: engine.project, log }, onChange),
    exists: async (name) => (await getInstance(engine, name)) !== undefined,
    backup: (name, sink, ctx, backupOptions) =>
      backupInstance(engine, name, sink, ctx, backupOptions),
    restore: (metadata, source, restoreOptions, ctx) =>
      restoreInstance(engine, metadata, source, restoreOptions, ctx),
    snapshots,
    sandbox: {
      probe: (name, command, timeoutSeconds, ctx) =>
        probeSandbox(engine, name, command, timeoutSeconds, ctx),
      remove: (name, removeLog) => removeSandbox(engine, name, removeLog),
    },
    // Every LXD driver records its holds as `lxd`: this one releases them all.
    releaseHold: (record) => releaseLxdHold(engine, record),
  };
}

/** Custom storage volumes of every pool as `lxd-volume:POOL/NAME` targets. */
export function createLxdVolumeDriver(options: LxdDriverOptions = {}): Driver {
  const engine = engineOf(options);
  const log = options.log ?? silentLogger;

  async function listTargets(): Promise<DiscoveredTarget[]> {
    const volumes = await listVolumes(engine);
    return volumes
      .map(({ pool, volume, snapshots }) => ({
        target: `lxd-volume:${pool.name}/${volume.name}`,
        platform: 'lxd-volume',
        name: `${pool.name}/${volume.name}`,
        state: (volume.used_by ?? []).length > 0 ? 'in-use' : 'unused',
        details: {
          content: volume.content_type,
          pool: pool.name,
          driver: pool.driver,
          snapshots: String(snapshots),
        },
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  return {
    platform: 'lxd-volume',
    listTargets,
    // Storage-volume events (created, deleted, renamed) reach the inventory at once.
    watch: (onChange) =>
      watchLxdEvents({ socketPath: engine.socketPath, project: engine.project, log }, onChange),
    async exists(name) {
      const { pool, volume } = splitVolumeName(name);
      return (await getVolume(engine, pool, volume)) !== undefined;
    },
    backup: (name, sink, ctx, backupOptions) =>
      backupVolume(engine, name, sink, ctx, backupOptions),
    restore: (metadata, source, restoreOptions, ctx) =>
      restoreVolume(engine, metadata, source, restoreOptions, ctx),
  };
}

export interface LxdServerDriverOptions extends LxdDriverOptions {
  /** The agent's name: its server is the target `lxd-server:<site>`. */
  site: string;
}

/** The whole LXD server the agent runs next to, as the one target `lxd-server:<site>`. */
export function createLxdServerDriver(options: LxdServerDriverOptions): Driver {
  const engine = engineOf(options);
  const { site } = options;

  async function listTargets(): Promise<DiscoveredTarget[]> {
    const projects = await list<{ name: string }>(engine, '/1.0/projects?recursion=1', 'projects');
    let instances = 0;
    for (const project of projects) {
      const at = engineFor(engine, project.name);
      instances += (await list(at, '/1.0/instances', `instances of project ${project.name}`))
        .length;
    }
    const pools = await list(engine, '/1.0/storage-pools', 'storage pools');
    return [
      {
        target: `lxd-server:${site}`,
        platform: 'lxd-server',
        name: site,
        state: 'online',
        details: {
          projects: String(projects.length),
          pools: String(pools.length),
          instances: String(instances),
        },
      },
    ];
  }

  return {
    platform: 'lxd-server',
    listTargets,
    exists: (name) => Promise.resolve(name === site),
    backup: (name, sink, ctx, backupOptions) =>
      backupServer(engine, site, name, sink, ctx, backupOptions),
    restore: (metadata, source, restoreOptions, ctx) =>
      restoreServer(engine, site, metadata, source, restoreOptions, ctx),
  };
}
