/**
 * The platform-neutral driver interface. A driver knows one engine (Docker, LXD, vSphere) and
 * speaks only in targets, streams and metadata: no dockerode, LXD or vSphere type crosses it.
 *
 * Contract:
 * - `backup` writes every stream of the target through `sink.writeStream`, in order, and returns
 *   the metadata needed to rebuild the target. Whatever it stops, pauses or snapshots it releases
 *   before it returns or throws: a workload running before a backup is running after it.
 * - `restore` rebuilds a target from the manifest's metadata and streams under `options.name`.
 *   It refuses (NameTaken) to overwrite anything that exists unless `options.inPlace`; on failure
 *   it removes what it created, so a retry starts clean. A restore under a new name never touches
 *   the original; an in-place restore reads every stream before it replaces anything, and a
 *   failure before that point leaves the original as it was (and running if it ran).
 * - Errors: TargetNotFound, NameTaken, DriverError, TransientError (functions/shared/errors).
 */
import type { Readable } from 'node:stream';
import type { Logger } from '../../functions/shared/logger';

export interface DiscoveredTarget {
  /** `platform:name`. */
  target: string;
  platform: string;
  name: string;
  /** Engine-specific state in one word (running, exited, stopped...). */
  state: string;
  /** A few human facts (image, volumes...) for `stowage targets`. */
  details?: Record<string, string>;
}

export interface StreamInfo {
  /** Unique within a recovery point; a driver's own naming, e.g. `image`, `volume/data`. */
  name: string;
  /** What the bytes are: `docker-image-tar`, `volume-tar`, `disk`, `file`... */
  kind: string;
}

export interface StoredStream extends StreamInfo {
  size: number;
}

export interface BackupSink {
  /** Consumes `data` to its end and stores it. Resolves once the bytes are durable. */
  writeStream(info: StreamInfo, data: Readable): Promise<StoredStream>;
}

export interface RestoreSource {
  /** The streams of the recovery point, in the order the backup wrote them. */
  readonly streams: readonly StoredStream[];
  /** Opens one stream's bytes; rejects with an integrity error rather than yield wrong bytes. */
  openStream(name: string): Promise<Readable>;
}

export interface DriverContext {
  log: Logger;
  /** Set when the job is being abandoned (heartbeat lost, agent draining). */
  signal: AbortSignal;
  /** Free-text phase for progress (`committing image`, `volume data`...). */
  phase(text: string): void;
  /** How many source bytes the job will read in all, when the driver knows (for the ETA). */
  expectBytes?(total: number): void;
}

/** A command run inside the workload around a backup (a database dump, a flush). */
export interface BackupHook {
  /** argv, run without a shell unless the caller writes `sh -c ...`. */
  command: string[];
  /** Default 60. */
  timeoutSeconds?: number;
  /** `fail` (default): the backup fails; `continue`: logged, the backup goes on. */
  onError?: 'fail' | 'continue';
}

/** How a backup treats the running workload. Drivers ignore what does not apply to them. */
export interface BackupOptions {
  /**
   * `live` (default): capture while it runs (crash-consistent); `pause`: freeze it while its
   * data is captured; `stop`: stop it, capture, start it again (the documented procedure).
   * Whatever fails, a workload that was running before is running after.
   */
  consistency?: 'live' | 'pause' | 'stop';
  /** Also capture bind-mounted host directories (Docker). */
  includeBinds?: boolean;
  /** `pre` runs while the workload still runs, before it is paused or stopped; `post` after it runs again. */
  hooks?: { pre?: BackupHook[]; post?: BackupHook[] };
  /** A label the point carries (e.g. `pre-update` from `stowage protect-update`). */
  label?: string;
  /**
   * LXD instances and custom volumes: also capture their snapshots (default true, as LXD does);
   * false captures the instance or volume alone (LXD's `instance_only` / `volume_only`).
   */
  snapshots?: boolean;
  /**
   * LXD: ask for the pool driver's own format (`optimized_storage`: zfs or btrfs send streams),
   * faster to make and to import but importable only into a pool of the same driver. Used only
   * where the pool's driver has it; on any other pool (dir, lvm, ceph...) the export is the
   * plain one and the point records that.
   */
  optimizedStorage?: boolean;
}

export interface BackupOutcome {
  /** Everything needed to rebuild the target; stored in the manifest as JSON. */
  metadata: Record<string, unknown>;
  /** A few scalar facts for the catalog listing. */
  summary: Record<string, string | number | boolean>;
}

export interface RestoreOptions {
  /** The name of what the restore creates (or replaces, with inPlace). */
  name: string;
  inPlace: boolean;
  /** Remaps and partial restores (Docker); drivers refuse what they cannot honour. */
  volumes?: Record<string, string>;
  network?: string;
  ports?: Record<string, string>;
  volume?: string;
  intoVolume?: string;
  /** LXD: the storage pool to restore into (the instance's root disk, or the custom volume). */
  pool?: string;
  /**
   * LXD: device overrides by device name, applied to the restored instance before it starts
   * (keys set on that device; `type: none` masks a profile's device; `""` removes a key).
   */
  devices?: Record<string, Record<string, string>>;
  /** LXD: the power state the restored instance ends in (default: as it was at backup time). */
  state?: 'running' | 'stopped';
  /**
   * LXD servers: before restoring from the point, bring back through LXD's recover API the
   * instances and custom volumes whose storage is intact but whose database record is gone.
   */
  recover?: boolean;
}

export interface RestoreOutcome {
  /** `platform:name` of what now exists. */
  restoredTarget: string;
}

export interface Driver {
  readonly platform: string;
  /** Every target this driver can see right now. */
  listTargets(): Promise<DiscoveredTarget[]>;
  /** Whether a target of this name exists (restores use it to refuse clobbering). */
  exists(name: string): Promise<boolean>;
  backup(
    name: string,
    sink: BackupSink,
    ctx: DriverContext,
    options?: BackupOptions,
  ): Promise<BackupOutcome>;
  restore(
    metadata: Record<string, unknown>,
    source: RestoreSource,
    options: RestoreOptions,
    ctx: DriverContext,
  ): Promise<RestoreOutcome>;
  /** Calls `onChange` soon after targets appear or vanish; returns the unsubscribe. Optional. */
  watch?(onChange: () => void): () => void;
}
