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
 * - `snapshots` (optional): local snapshots of a target, kept by the engine itself (the fast tier
 *   beside offsite points). A driver whose engine has them implements SnapshotOps.
 * - Errors: TargetNotFound, NameTaken, DriverError, TransientError, SnapshotNotFound,
 *   Unsupported (kernel/errors).
 */
import type { Readable } from 'node:stream';
import type { TreeEntry } from './tree/format';
import type { Logger } from '../../kernel/logger';
import type { HoldRecord, HoldTaker } from './holds';
import type { SnapshotInfo, SnapshotSchedule } from '../../statemachines/contracts';

export type { SnapshotInfo, SnapshotSchedule };

export interface DiscoveredTarget {
  /** `platform:name`. */
  target: string;
  platform: string;
  name: string;
  /** Engine-specific state in one word (running, exited, stopped...). */
  state: string;
  /** A few human facts (image, volumes...) for `stowage targets`. */
  details?: Record<string, string>;
  /** Present (maybe empty) when the driver keeps local snapshots of this target. */
  snapshots?: SnapshotInfo[];
  snapshotSchedule?: SnapshotSchedule;
  /** The engine's labels of the target, for backups by label selector (Docker). */
  labels?: Record<string, string>;
}

export interface StreamInfo {
  /** Unique within a recovery point; a driver's own naming, e.g. `image`, `volume/data`. */
  name: string;
  /** What the bytes are: `docker-image-tar`, `volume-tar`, `disk`, `file`... */
  kind: string;
  /**
   * What the bytes were made from, in the driver's words, recorded with the stream so a later
   * backup can take the stream whole from this point when its source is the same
   * (BackupSink.reuseParent). Only writeStream and writeFrom record it.
   */
  source?: string;
}

export interface StoredStream extends StreamInfo {
  size: number;
}

/** Reads a stream's next bytes into `into`; resolves how many it wrote, 0 at the end. */
export type ByteReader = (into: Uint8Array) => Promise<number>;

/**
 * Receives a verified piece of a stream (one or more chunks) to put at `offset`. Pieces come in
 * order, one at a time. The bytes are valid
 * only until the returned promise resolves (their buffer is re-used); `zero` says they are all
 * zeros, so a new file may keep a hole there instead.
 */
export type ChunkWrite = (bytes: Uint8Array, offset: number, zero: boolean) => Promise<void>;

/** A stretch of a stream or a disk: `length` bytes from `start`. */
export interface Area {
  start: number;
  length: number;
}

/**
 * A block device's bytes for BackupSink.writeBlocks: `size` bytes in blocks of `blockBytes` (the
 * last one may be shorter).
 */
export interface BlockSource {
  size: number;
  blockBytes: number;
  /**
   * Whether the block at `start` is unchanged since the parent point (from the engine's change
   * tracking). Absent: no change information, every block is read.
   */
  unchanged?: (start: number, length: number) => boolean;
  /** A reader of exactly the bytes of `areas` (whole blocks, in order), one after the other. */
  open(areas: readonly Area[]): Promise<ByteReader>;
}

/** What a block device's backup did (BackupSink.writeBlocks). */
export interface StoredBlocks extends StoredStream {
  bytesRead: number;
  /** Bytes whose chunks came from the parent point without being read. */
  bytesReused: number;
  parent?: string;
}

/** What a tree stream's backup did (agents/core/tree). */
export interface StoredTree extends StoredStream {
  entries: number;
  skipped: number;
  /** Regular files read from the host, and files whose chunks came from the previous point. */
  filesRead: number;
  filesReused: number;
  bytesReused: number;
  /** The previous point the unchanged files came from, if any. */
  parent?: string;
  warnings: string[];
}

export interface BackupSink {
  /** Consumes `data` to its end and stores it. Resolves once the bytes are durable. */
  writeStream(info: StreamInfo, data: Readable): Promise<StoredStream>;
  /**
   * Stores the stream `read` produces, read straight into the data path's buffer: for files and
   * devices, which can read into memory they are given. Same outcome as writeStream. Optional:
   * drivers call it through driver-streams.ts `writeFrom`, which falls back on writeStream.
   */
  writeFrom?(info: StreamInfo, read: ByteReader): Promise<StoredStream>;
  /**
   * Stores the directory `root` of this host as a tree stream named `info.name` (kind `tree`)
   * with its index (agents/core/tree/format.ts): files unchanged since the previous point of
   * the same target are not read again. Optional: a sink without it (an in-memory one in a
   * driver's tests) makes the driver read through the engine's API instead.
   */
  writeTree?(info: { name: string }, root: string, ctx: DriverContext): Promise<StoredTree>;
  /**
   * Stores a block device (a VM disk) so that no chunk spans two of its blocks, taking from the
   * parent point's stream of the same name every block `source.unchanged` says is unchanged (and
   * whose chunks are still stored), and reading the others through `source.open`. Optional: a
   * sink without it gets the whole device through writeFrom.
   */
  writeBlocks?(info: StreamInfo, source: BlockSource): Promise<StoredBlocks>;
  /**
   * The metadata of the parent point: the last point of this target this agent made, which
   * writeTree and writeBlocks take unchanged data from. Undefined when there is none.
   */
  parentMetadata?(): Record<string, unknown> | undefined;
  /**
   * Takes the parent point's stream of the same name and kind whole, without reading anything,
   * when `accept` takes the source it was recorded with (StreamInfo.source) and every one of its
   * chunks is still stored: resolves it with that source. Undefined otherwise: the driver then
   * makes the stream and writes it. Optional: a sink without it has no parent.
   */
  reuseParent?(
    info: StreamInfo,
    accept: (source: string) => boolean,
  ): Promise<(StoredStream & { source: string; parent: string }) | undefined>;
}

export interface RestoreSource {
  /** The streams of the recovery point, in the order the backup wrote them. */
  readonly streams: readonly StoredStream[];
  /** Opens one stream's bytes; rejects with an integrity error rather than yield wrong bytes. */
  openStream(name: string): Promise<Readable>;
  /**
   * Hands one stream's bytes to `write` piece by piece (see ChunkWrite); rejects with an
   * integrity error rather than hand on wrong bytes. Resolves the stream's size. For files and devices: no
   * stream buffering, and buffers are re-used. Optional: drivers call it through
   * driver-streams.ts `forEachChunk`, which falls back on openStream.
   */
  forEachChunk?(name: string, write: ChunkWrite): Promise<number>;
  /**
   * Tree streams (kind `tree`): writes the tree, or only `paths` of it, into the directory
   * `root` of this host, reading only the chunks those files need (agents/core/tree/restore.ts).
   */
  restoreTree?(
    name: string,
    root: string,
    ctx: DriverContext,
    options?: { paths?: readonly string[] },
  ): Promise<{ entries: number; files: number; bytes: number; skipped: number }>;
  /** A tree stream's index entries, in walk order (agents/core/tree/format.ts). */
  treeEntries?(name: string): AsyncIterable<TreeEntry>;
  /** Tree streams as the tar an engine's API takes, under `prefix/` (agents/core/tree/tar.ts). */
  treeAsTar?(name: string, prefix: string): Readable;
  /**
   * Small files and tree streams one after the other as one tar (tar.ts treesAsTar): an
   * archive in an engine's own layout, e.g. an LXD instance's export for LXD's import.
   */
  treesAsTar?(
    parts: ReadonlyArray<{ file: string; content: Buffer } | { stream: string; prefix: string }>,
  ): Readable;
}

export interface DriverContext {
  log: Logger;
  /** Set when the job is being abandoned (heartbeat lost, agent draining). */
  signal: AbortSignal;
  /** Free-text phase for progress (`committing image`, `volume data`...). */
  phase(text: string): void;
  /** How many source bytes the job will read in all, when the driver knows (for the ETA). */
  expectBytes?(total: number): void;
  /**
   * The agent's hold journal (holds.ts): every hold the driver takes (a pause, a stop, a helper,
   * a committed image, a temporary volume...) is recorded here before it is taken and cleared
   * after its release, so an agent that starts after this one was killed can release it. Absent
   * outside an agent (a driver's own tests): then nothing is journaled.
   */
  holds?: HoldTaker;
  /**
   * Called by an in-place restore right before the first change it cannot undo. Rejects (a
   * Cancelled error) when the job ended or its token is gone: the restore then undoes what it
   * did and leaves the target as it was. Once it resolves, `signal` no longer aborts: the
   * restore finishes even if its job is cancelled. Absent outside an agent's task.
   */
  pointOfNoReturn?(): Promise<void>;
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
  /**
   * vSphere: which virtual disks to read, by label (`Hard disk 1`): only those in `include` when
   * it is given, never those in `exclude`. The configuration records every disk either way.
   */
  disks?: { include?: string[]; exclude?: string[] };
  /** Tree streams: read every file, not only those changed since the previous point (the runner's concern). */
  fullRead?: boolean;
}

export interface BackupOutcome {
  /** Everything needed to rebuild the target; stored in the manifest as JSON. */
  metadata: Record<string, unknown>;
  /** A few scalar facts for the catalog listing. */
  summary: Record<string, string | number | boolean>;
  /**
   * Parts of the target that failed while the others were captured (a vApp's child VM): the
   * point is committed listing them, and the job ends PARTIALLY_FAILED. A driver whose every
   * part failed throws instead.
   */
  failures?: Array<{ part: string; error: { name: string; message: string } }>;
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
  /** File-level restore: these paths of the point's tree streams (agents/core/tree/files.ts). */
  files?: string[];
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
  /**
   * vSphere: where a VM restored under a new name goes (inventory paths: a VM folder, a resource
   * pool; a datastore's name), and its network cards' networks by the original network's name
   * (`network` alone moves every card). Default: where the original was.
   */
  folder?: string;
  resourcePool?: string;
  datastore?: string;
  networks?: Record<string, string>;
  /**
   * vSphere: restore one disk of the point (by label) into a new file on the datastore and attach
   * it to the VM `attachTo` (`DC/vm/NAME`), at `controllerKey`/`unitNumber` when given (else the
   * disk's own node, or the first free unit of a controller of the same kind).
   */
  disk?: string;
  attachTo?: string;
  controllerKey?: number;
  unitNumber?: number;
  /**
   * A restore test's sandbox (drivers with SandboxOps): the copy is isolated (no network, no
   * published ports, no host directories or devices of the original, no restart or autostart)
   * and started whatever its state at backup time. It is removed by `SandboxOps.remove`.
   */
  sandbox?: boolean;
}

/** What a probe run inside a sandbox did. */
export interface ProbeResult {
  /** null: it did not finish (timed out, or the job was abandoned). */
  exitCode: number | null;
  /** The tail of its stdout and stderr. */
  output: string;
  error?: string;
}

/**
 * Restore tests' sandboxes, for drivers whose targets run (Docker containers, LXD instances).
 * A sandbox is made by `restore` with `sandbox: true` under a name the control plane chose.
 */
export interface SandboxOps {
  /** Runs `command` (argv) inside the running sandbox, at most `timeoutSeconds`. */
  probe(
    name: string,
    command: string[],
    timeoutSeconds: number,
    ctx: DriverContext,
  ): Promise<ProbeResult>;
  /**
   * Removes the sandbox `name` and whatever its restore created for it (volumes, an image it
   * loaded); only what carries the sandbox's mark, never a workload of that name made by anyone
   * else. Idempotent: a sandbox already gone is fine.
   */
  remove(name: string, log: Logger): Promise<void>;
}

export interface RestoreOutcome {
  /** `platform:name` of what now exists. */
  restoredTarget: string;
}

export interface SnapshotCreateOptions {
  /** The name, with at most one `%d`: the next free number from 0 (LXD's `snap%d`). */
  pattern: string;
  /** undefined: the engine's default for the target (LXD: its `snapshots.expiry`); null: never. */
  expiresAt?: Date | null;
  /** With the running state; refused (Unsupported) before anything changes where impossible. */
  stateful: boolean;
}

/**
 * Local snapshots of a driver's targets, keyed by target name (e.g. an LXD instance; an LXD custom
 * volume driver can implement the same). Every method first deletes the target's snapshots that
 * are past their expiry, so an expired snapshot is never listed, restored or re-expired, whatever
 * the engine's own pruning interval. Unknown targets reject with TargetNotFound, unknown snapshots
 * with SnapshotNotFound.
 */
export interface SnapshotOps {
  /** The target's snapshots, oldest first. */
  list(name: string): Promise<SnapshotInfo[]>;
  /** Takes a snapshot; NameTaken when a pattern without `%d` names one that exists. */
  create(name: string, options: SnapshotCreateOptions, ctx: DriverContext): Promise<SnapshotInfo>;
  /** Changes when a snapshot expires (null: never). */
  setExpiry(
    name: string,
    snapshot: string,
    expiresAt: Date | null,
    ctx: DriverContext,
  ): Promise<SnapshotInfo>;
  delete(name: string, snapshot: string, ctx: DriverContext): Promise<void>;
  /**
   * Puts the target back to the snapshot; its power state afterwards is what it was before (a
   * running workload runs again, also when the restore fails), except where the platform's spec
   * has snapshotRestoreState: then `options.state`, else what the snapshot holds (vSphere: a
   * snapshot without memory comes back powered off, one with memory running).
   */
  restore(
    name: string,
    snapshot: string,
    ctx: DriverContext,
    options?: { state?: 'running' | 'stopped' },
  ): Promise<SnapshotInfo>;
  /** Sets the engine's own schedule (null removes it); returns what is now in force. */
  schedule(
    name: string,
    schedule: SnapshotSchedule | null,
    ctx: DriverContext,
  ): Promise<SnapshotSchedule | null>;
  /** Deletes the target's snapshots past their expiry; returns their names. */
  pruneExpired(name: string, ctx?: DriverContext): Promise<string[]>;
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
  /** Local snapshots, where the engine keeps them (LXD instances). */
  readonly snapshots?: SnapshotOps;
  /** Restore tests' sandboxes, where targets run (Docker containers, LXD instances). */
  readonly sandbox?: SandboxOps;
  /** Calls `onChange` soon after targets appear or vanish; returns the unsubscribe. Optional. */
  watch?(onChange: () => void): () => void;
  /**
   * Releases a hold this driver family recorded (`record.platform` is the driver's platform)
   * and a killed or failed job left: against the engine as it finds it, idempotent, safe for a
   * hold that was only partly taken. Throws to keep the record for the next sweep.
   */
  releaseHold?(record: HoldRecord, log: Logger): Promise<void>;
  /** Ends the driver's sessions and connections (vSphere logs out); once, when the agent stops. */
  close?(): Promise<void>;
}
