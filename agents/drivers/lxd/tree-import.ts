/**
 * A tree point of an LXD instance or custom volume (read on the host, host-tree.ts) restored through LXD's own
 * import, where the agent cannot write the pool's directory: a pool of another driver (btrfs,
 * zfs, lvm...), a `dir` pool whose source it cannot see, an agent without host access. The
 * point's trees become the archive LXD's non-optimized export is, which LXD unpacks into a pool
 * of any driver:
 *
 *   backup/index.yaml              what the export says of itself (below)
 *   backup/snapshots/<SNAPSHOT>/   each snapshot's directory (its tree stream)
 *   backup/container/              the instance's directory (`tree`)
 *
 * and for a custom volume `backup/volume-snapshots/<SNAPSHOT>/` and `backup/volume/`.
 *
 * index.yaml is written as JSON (YAML parsers read JSON): the instance's name, type and pool,
 * the snapshots in the archive, `optimized: false`, and under `config` the records LXD's own
 * export carries (the instance as the point recorded it, its snapshots, pool, profiles and
 * volume), from which LXD makes the database records. Owners are written as they are on disk
 * (shifted for an unprivileged container) with the instance's `volatile.last_state.idmap`, as in
 * LXD's own export, so LXD shifts them at start only if the new instance's map differs; extended
 * attributes (a file capability, ACLs) as PAX records, which LXD's unpack applies (core/tree/tar.ts).
 */
import type { Readable } from 'node:stream';
import type { RestoreSource } from '../../core/driver';
import type { LxdBackupMetadata, LxdProfile } from './instance';
import type { LxdVolumeBackupMetadata } from './volume';
import { MAIN_TREE, snapshotTree } from './host-tree';

/** What LXD says of a pool (GET /1.0/storage-pools/NAME). */
export interface PoolRecord {
  name: string;
  driver: string;
  description?: string;
  config?: Record<string, string>;
}

/** LXD's zero time, which it writes for "never" (last use, no expiry). */
const NEVER = '0001-01-01T00:00:00Z';

/** The snapshots of the point that have a tree stream, in the point's order. */
export function snapshotsInPoint(metadata: LxdBackupMetadata, source: RestoreSource): string[] {
  return (metadata.snapshots ?? []).filter((s) =>
    source.streams.some((stream) => stream.name === snapshotTree(s)),
  );
}

/** backup/index.yaml of the archive (JSON, which LXD's YAML parser reads). */
export function importIndex(
  metadata: LxdBackupMetadata,
  snapshots: readonly string[],
  pool: PoolRecord,
  at: string,
): Buffer {
  const common = {
    architecture: metadata.architecture,
    config: metadata.config,
    devices: metadata.devices,
    ephemeral: false,
    profiles: metadata.profiles,
    stateful: false,
    description: '',
    created_at: at,
    expanded_config: metadata.expandedConfig,
    expanded_devices: metadata.expandedDevices,
    last_used_at: NEVER,
  };
  const profiles: LxdProfile[] = metadata.profileDefinitions ?? [];
  const index = {
    name: metadata.name,
    backend: pool.driver,
    pool: pool.name,
    snapshots,
    optimized: false,
    optimized_header: false,
    type: metadata.type,
    config: {
      container: {
        ...common,
        name: metadata.name,
        status: 'Stopped',
        status_code: 102,
        location: 'none',
        type: metadata.type,
        project: metadata.project,
      },
      snapshots: snapshots.map((name) => ({
        ...common,
        name,
        expires_at: metadata.snapshotExpiry?.[name] ?? NEVER,
        size: -1,
      })),
      pool: {
        name: pool.name,
        driver: pool.driver,
        description: pool.description ?? '',
        config: pool.config ?? {},
      },
      profiles: profiles.map((p) => ({
        name: p.name,
        description: p.description ?? '',
        config: p.config ?? {},
        devices: p.devices ?? {},
      })),
      volume: {
        name: metadata.name,
        type: metadata.type,
        content_type: 'filesystem',
        description: '',
        config: {},
      },
      volume_snapshots: snapshots.map((name) => ({
        name,
        content_type: 'filesystem',
        description: '',
        config: {},
      })),
    },
  };
  return Buffer.from(`${JSON.stringify(index, null, 2)}\n`);
}

/**
 * The archive LXD's custom volume import takes (`POST .../volumes/custom`), as its own
 * non-optimized export is: backup/index.yaml, backup/volume-snapshots/NAME/, backup/volume/.
 */
export function volumeImportArchive(
  metadata: LxdVolumeBackupMetadata,
  source: RestoreSource,
  pool: PoolRecord,
): Readable {
  if (!source.treesAsTar) throw new Error('this restore source cannot read tree streams as a tar');
  const snapshots = metadata.snapshots.filter((s) =>
    source.streams.some((stream) => stream.name === snapshotTree(s.name)),
  );
  const index = {
    name: metadata.name,
    backend: pool.driver,
    pool: pool.name,
    snapshots: snapshots.map((s) => s.name),
    optimized: false,
    optimized_header: false,
    type: 'custom',
    config: {
      volume: {
        name: metadata.name,
        type: 'custom',
        content_type: metadata.contentType,
        description: metadata.description,
        config: metadata.config,
        project: metadata.project,
        location: 'none',
        created_at: NEVER,
      },
      volume_snapshots: snapshots.map((s) => ({
        name: s.name,
        description: s.description,
        content_type: metadata.contentType,
        config: metadata.config,
        expires_at: s.expiresAt ?? NEVER,
        created_at: NEVER,
      })),
    },
  };
  return source.treesAsTar([
    { file: 'backup/index.yaml', content: Buffer.from(`${JSON.stringify(index, null, 2)}\n`) },
    ...snapshots.map((s) => ({
      stream: snapshotTree(s.name),
      prefix: `backup/volume-snapshots/${s.name}`,
    })),
    { stream: MAIN_TREE, prefix: 'backup/volume' },
  ]);
}

/** The archive LXD's import takes, made from the point's trees as it is read. */
export function importArchive(
  metadata: LxdBackupMetadata,
  source: RestoreSource,
  pool: PoolRecord,
): Readable {
  if (!source.treesAsTar) throw new Error('this restore source cannot read tree streams as a tar');
  const snapshots = snapshotsInPoint(metadata, source);
  return source.treesAsTar([
    {
      file: 'backup/index.yaml',
      content: importIndex(metadata, snapshots, pool, new Date().toISOString()),
    },
    ...snapshots.map((s) => ({ stream: snapshotTree(s), prefix: `backup/snapshots/${s}` })),
    { stream: MAIN_TREE, prefix: 'backup/container' },
  ]);
}
