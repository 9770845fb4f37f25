/**
 * Every payload that crosses a state of the backup, restore, verify and snapshot state machines, and the message
 * an agent receives. Handlers, the agent and local mode import these; the ASL files must agree
 * with them (test/statemachines checks the round trip).
 */
import type { ErrorRecord } from '../kernel/errors';

export type JobKind = 'BACKUP' | 'RESTORE' | 'RESTORE_TEST' | 'VERIFY' | 'SNAPSHOT' | 'PRUNE';
export type JobStatus =
  'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'PARTIALLY_FAILED' | 'CANCELLED';
export const TERMINAL_STATUSES: readonly JobStatus[] = [
  'SUCCEEDED',
  'FAILED',
  'PARTIALLY_FAILED',
  'CANCELLED',
];

/**
 * Execution input of backup.asl.json (written by the API handler). One workflow backs up one
 * target or many: a Map runs over `items`, a target alone is a list of one.
 */
export interface BackupExecutionInput {
  jobId: string;
  /** The job's target: `platform:name`, or the selector text (`docker:app=web`). */
  target: string;
  /** Always present (`{}` for the defaults): the ASL passes it on as it is. */
  options: BackupRequestOptions;
  items: BackupItemInput[];
  /**
   * A policy's every Nth run: the checks to start on the points once the job ended (the
   * workflow's `Start checks`, functions/core/checks.ts). Absent: none.
   */
  checks?: { verify?: boolean; restoreTest?: boolean; probe?: string };
}

/** Payload of the start-checks Lambda (backup.asl.json, `Start checks`). */
export interface StartChecksEvent {
  jobId: string;
}

export interface StartChecksOutput {
  jobId: string;
  /** Checks started by this call, and checks that could not start (recorded on the job). */
  started: number;
  refused: number;
}

/** One target of a backup job: which agent backs it up, into which recovery point. */
export interface BackupItemInput {
  /** Position in the job's `items` (the catalog record is updated by it). */
  index: number;
  /** `platform:name`, without the agent. */
  target: string;
  agent: string;
  queueUrl: string;
  recoveryPointId: string;
}

/** What one iteration of the backup Map outputs: the item's outcome. */
export type BackupItemOutcome =
  | { index: number; status: 'COMPLETED'; recoveryPointId: string }
  | { index: number; status: 'FAILED'; error: StatesError };

/** What a backup request may ask beyond its target (see BackupOptions in agents/core/driver.ts). */
export interface BackupRequestOptions {
  consistency?: 'live' | 'pause' | 'stop';
  includeBinds?: boolean;
  hooks?: {
    pre?: Array<{ command: string[]; timeoutSeconds?: number; onError?: 'fail' | 'continue' }>;
    post?: Array<{ command: string[]; timeoutSeconds?: number; onError?: 'fail' | 'continue' }>;
  };
  /** A label the point carries, e.g. `pre-update` (what `stowage rollback` looks for). */
  label?: string;
  /** LXD instances and custom volumes: with their snapshots (default true) or alone (false). */
  snapshots?: boolean;
  /** LXD: the pool driver's optimized format where it has one (zfs, btrfs; not dir). */
  optimizedStorage?: boolean;
  /** The policy whose run this is; its points record it (retention). */
  policy?: string;
  /** vSphere: which disks to read, by label (`include`: only those; `exclude`: all but those). */
  disks?: { include?: string[]; exclude?: string[] };
  /** Tree streams: read every file, not only those changed since the previous point. */
  fullRead?: boolean;
}

/** Execution input of restore.asl.json. */
export interface RestoreExecutionInput {
  jobId: string;
  recoveryPointId: string;
  /** The target the point was taken of. */
  source: string;
  /** What the restore produces: `platform:name`. */
  target: string;
  agent: string;
  queueUrl: string;
  inPlace: boolean;
  /** Always present (`{}` for the defaults): the ASL passes it on as it is. */
  options: RestoreRequestOptions;
}

/** What a restore may ask beyond its destination (see RestoreOptions in agents/core/driver.ts). */
export interface RestoreRequestOptions {
  /** Names for the restored volumes, by the original volume's name. */
  volumes?: Record<string, string>;
  /** Attach the restored container to this network instead of its recorded ones. */
  network?: string;
  /** Published ports, by container port (`80/tcp`) → host port (`8080`), or `""` to drop. */
  ports?: Record<string, string>;
  /** Restore only this volume of the point (by its original name), into `intoVolume`. */
  volume?: string;
  /** With `volume`: the volume to restore into (created if missing; must be empty unless inPlace). */
  intoVolume?: string;
  /** LXD: the storage pool to restore the instance's root disk, or the custom volume, into. */
  pool?: string;
  /** LXD: device overrides by device name (keys to set; `type: none` masks; `""` drops a key). */
  devices?: Record<string, Record<string, string>>;
  /** LXD: the power state the restored instance ends in (default: as at backup time). */
  state?: 'running' | 'stopped';
  /**
   * LXD servers: first bring back, through LXD's recover API, the instances and custom volumes
   * whose storage is intact but whose database record is gone; restore the rest from the point.
   */
  recover?: boolean;
  /** File-level restore: these paths of the point's tree streams (`STREAM/PATH` with several). */
  files?: string[];
  /** With `files`: a directory on the agent's host to write them into. */
  dest?: string;
  /**
   * `stowage ls`: list this directory of the point's tree streams ('' the root) instead of
   * restoring anything; the listing comes back in the result and on the job.
   */
  list?: string;
  /**
   * vSphere: where a new VM goes (a VM folder's and a resource pool's inventory paths, a
   * datastore's name) and its cards' networks by the original network's name.
   */
  folder?: string;
  resourcePool?: string;
  datastore?: string;
  networks?: Record<string, string>;
  /** vSphere: one disk of the point (by label) attached to the VM `attachTo` (`vsphere:DC/vm/X`). */
  disk?: string;
  attachTo?: string;
  controllerKey?: number;
  unitNumber?: number;
  /**
   * A restore test (`stowage restore-test`, set by the API only, never by a restore body): the
   * point is restored into an isolated sandbox under the restore's target name (no network, no
   * published ports, no host mounts), started, probed, and removed whatever happens.
   */
  test?: RestoreTestRequest;
}

/** What a restore test runs once its sandbox has started. */
export interface RestoreTestRequest {
  /** argv run inside the sandbox (the CLI sends `sh -c CMD`); absent: started is enough. */
  probe?: string[];
  /** How long the probe may run (default 60 s). */
  probeTimeoutSeconds?: number;
}

/** What a restore test found (the agent's result, and what the point records). */
export interface RestoreTestOutcome {
  passed: boolean;
  /** `platform:name` of the sandbox (removed by the time this is reported, unless `removed` is false). */
  sandbox: string;
  /** Recovery time: from the task's start to the sandbox running and its probe passing. */
  rtoMs: number;
  /** Of which the restore itself (reading the point, creating the sandbox). */
  restoreMs: number;
  probe?: {
    command: string[];
    /** null: it did not finish (timed out, abandoned). */
    exitCode: number | null;
    /** The tail of its output (stdout and stderr). */
    output: string;
    error?: string;
  };
  /** Why the test failed before its probe (the restore or the start failed). */
  error?: ErrorRecord;
  /** Whether the sandbox was removed (false: the agent's hold journal removes it later). */
  removed: boolean;
}

/** One entry of a tree listing (`stowage ls`). */
export interface TreeListingEntry {
  path: string;
  type: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: string;
  link?: string;
}

export interface TreeListing {
  path: string;
  entries: TreeListingEntry[];
  /** More entries than a listing carries (LISTING_MAX): narrow the path. */
  truncated: boolean;
}
export interface VerifyExecutionInput {
  jobId: string;
  recoveryPointId: string;
  /** The target the point was taken of. */
  target: string;
  agent: string;
  queueUrl: string;
}

/**
 * Execution input of snapshot.asl.json: one operation on the local snapshots of one target,
 * carried out by the agent that sees it (no bytes leave the host: this is the fast tier).
 */
export interface SnapshotExecutionInput {
  jobId: string;
  /** `platform:name`, without the agent. */
  target: string;
  agent: string;
  queueUrl: string;
  action: SnapshotAction;
  /** The action's arguments; the ASL passes them on as they are. */
  args: SnapshotArgs;
}

export type SnapshotAction = 'create' | 'delete' | 'expire' | 'restore' | 'schedule';

/**
 * Arguments of a snapshot action, validated by the API (functions/core/requests.ts). Expiries are
 * `never`, a duration (`30s`, `15m`, `12h`, `7d`, `2w`) counted from when the agent acts, or an
 * ISO 8601 time; the agent turns them into a time by its own clock, the LXD host's.
 */
export interface SnapshotArgs {
  /** create: the name, with at most one `%d` (the next free number, as LXD's snapshots.pattern). */
  pattern?: string;
  /** create, expire: when the snapshot expires; schedule: how long scheduled snapshots live. */
  expiry?: string;
  /** create: with the running state (memory), where the instance supports it. */
  stateful?: boolean;
  /** delete, expire, restore: the snapshot's name (the part after the last `/` of its id). */
  snapshot?: string;
  /** schedule: `@hourly`, `@daily`, ... or a five-field cron expression; `none` removes it. */
  every?: string;
  /** schedule: also snapshot the instance while it is stopped. */
  stopped?: boolean;
  /**
   * restore: the power state afterwards, where the platform's spec has snapshotRestoreState
   * (a vSphere snapshot without memory comes back powered off unless `running` is asked).
   */
  state?: 'running' | 'stopped';
}

/** One local snapshot as agents report it. */
export interface SnapshotInfo {
  /** The snapshot's own name (`snap0`); its id is `<target>/<name>`. */
  name: string;
  createdAt: string;
  /** When it expires; null: never. */
  expiresAt: string | null;
  stateful: boolean;
}

/** The automatic snapshots of a target, run by the engine itself (LXD's snapshots.schedule). */
export interface SnapshotSchedule {
  every: string;
  /** How long each scheduled snapshot lives, in Stowage's syntax (`7d`); absent: forever. */
  expiry?: string;
  pattern?: string;
  /** Whether stopped instances are snapshotted too. */
  stopped?: boolean;
}

/** SendTaskSuccess output of a snapshot task. */
export interface SnapshotResult {
  action: SnapshotAction;
  target: string;
  /** create, expire, restore: the snapshot as it is now. */
  snapshot?: SnapshotInfo;
  /** delete: the name of the snapshot deleted. */
  deleted?: string;
  /** schedule: the schedule now in force; null when removed. */
  schedule?: SnapshotSchedule | null;
  /** Snapshots found past their expiry and deleted before the action. */
  pruned: string[];
  startedAt: string;
  completedAt: string;
}

/** Payload of the record-job Lambda. */
export type RecordJobEvent =
  | { action: 'start'; jobId: string; executionArn: string }
  | { action: 'succeed'; jobId: string; result: RestoreResult | VerifyResult | SnapshotResult }
  | { action: 'fail'; jobId: string; error: StatesError }
  /** A prune's end: what it deleted (or, dry, would have). */
  | {
      action: 'pruned';
      jobId: string;
      plan: PrunePlan;
      mark: PruneMarkResult;
      sweep?: PruneSweepResult;
      waitedFor?: string[];
    }
  /** A prune whose sweep waits for leases: says so on the job. */
  | { action: 'waiting'; jobId: string; waitingFor: string[] }
  /** After a backup's Map: SUCCEEDED, PARTIALLY_FAILED or FAILED from the items' outcomes. */
  | { action: 'end'; jobId: string; outcomes: BackupItemOutcome[] }
  /**
   * A task an agent claimed is handed its run token (`lambda:invoke.waitForTaskToken`): the
   * Lambda stores it in the catalog under the claim, where the claiming agent picks it up.
   */
  | { action: 'hand-over'; jobId: string; claimId: string; agent: string; taskToken: string };

/** What Step Functions puts at a Catch's ResultPath. */
export interface StatesError {
  Error: string;
  Cause?: string;
}

/** Payload of the commit-point Lambda. */
export interface CommitPointEvent {
  jobId: string;
  /** The item of the job this point belongs to. */
  itemIndex: number;
  recoveryPointId: string;
  target: string;
  agent: string;
  options: BackupRequestOptions;
  result: BackupResult;
}

export interface CommitPointOutput {
  recoveryPointId: string;
  status: 'COMPLETED';
}

/**
 * The SQS message body of a dispatched task (MessageBody of the `Wait for an agent` states).
 * `taskToken` is the CLAIM token: an agent that takes the task answers it with a TaskClaim and
 * then runs the task under the run token it is handed (see the ASL files' Parallel states).
 */
export interface AgentTaskMessage {
  taskToken: string;
  task: AgentTask;
}

export type AgentTask = BackupTask | RestoreTask | VerifyTask | SnapshotTask | PruneTask;
/** SendTaskSuccess output of a claim: who took the task, under which claim id. */
export interface TaskClaim {
  /** Unique per claim (the agent makes it); the run token is handed over under it. */
  claimId: string;
  agent: string;
}

export interface BackupTask {
  kind: 'BACKUP';
  jobId: string;
  /** The item of the job this task backs up (its progress is written there). */
  itemIndex: number;
  recoveryPointId: string;
  target: string;
  options: BackupRequestOptions;
}

export interface RestoreTask {
  kind: 'RESTORE';
  jobId: string;
  recoveryPointId: string;
  source: string;
  target: string;
  inPlace: boolean;
  options: RestoreRequestOptions;
}

export interface VerifyTask {
  kind: 'VERIFY';
  jobId: string;
  recoveryPointId: string;
  target: string;
}

export interface SnapshotTask {
  kind: 'SNAPSHOT';
  jobId: string;
  target: string;
  action: SnapshotAction;
  args: SnapshotArgs;
}

/**
 * Garbage collection on an agent (it holds the data key the manifests and indexes are sealed
 * with): `mark` deletes the manifests of `deletePoints` and marks the unreferenced packs (in a
 * dry run it only counts them); `sweep` deletes the marked packs still unreferenced once the
 * leases held at the mark have ended. See agents/repo/gc.ts.
 */
export type PruneTask =
  | {
      kind: 'PRUNE';
      jobId: string;
      target: string;
      phase: 'mark';
      dryRun: boolean;
      deletePoints: string[];
      /**
       * Repack packs whose referenced bytes are below this percentage of their size (0: never);
       * absent: 50 (agents/repo/gc.ts DEFAULT_REPACK_BELOW).
       */
      repackBelow?: number;
    }
  | {
      kind: 'PRUNE';
      jobId: string;
      target: string;
      phase: 'sweep';
      markId: string;
      heldBy: PruneLease[];
    };

export interface PruneLease {
  leaseId: string;
  jobId: string;
  kind: string;
  /** A backup's point: the sweep keeps the packs its pack list names (commit-point reads it). */
  recoveryPointId?: string;
}

/** SendTaskSuccess output of a mark. Counts, not lists of packs: payloads stay small. */
export interface PruneMarkResult {
  /** Absent in a dry run: nothing was written. */
  markId?: string;
  pointsDeleted: string[];
  /** Points a running job reads: kept until the next prune. */
  pointsKept: Array<{ recoveryPointId: string; jobId: string }>;
  packs: number;
  /** Bytes of the unreferenced packs and their indexes, plus the deleted manifests. */
  bytes: number;
  /** Packs mostly garbage whose referenced chunks were (dry: would be) copied into new packs. */
  repacked?: number;
  /** Bytes of those packs and their indexes, which the sweep frees. */
  repackedBytes?: number;
  /** Chunks copied and the bytes the copies stored (dry: would store). */
  repackChunks?: number;
  repackWritten?: number;
  /** The leases live at the mark; the sweep waits for them. */
  heldBy: PruneLease[];
}

export type PruneSweepResult =
  | { done: false; waitingFor: string[]; waitSeconds: number }
  | {
      done: true;
      /** Packs deleted, repacked ones included. */
      packsDeleted: number;
      /** Of those, packs that were repacked. */
      packsRepacked?: number;
      /** Chunks no kept point referenced that went with them. */
      chunksDeleted: number;
      /** Bytes of the deleted packs and their indexes (before subtracting what repacks wrote). */
      bytesFreed: number;
      packsKept: number;
      leasesCleared: number;
    };

/** Execution input of prune.asl.json. */
export interface PruneExecutionInput {
  jobId: string;
  /** The agent that collects garbage (any agent: each holds the data key). */
  agent: string;
  queueUrl: string;
  dryRun: boolean;
  /** Repack packs whose referenced bytes are below this percentage (0: never). */
  repackBelow: number;
  /** `stowage points delete`: exactly these points, retention aside. Absent: retention decides. */
  points?: string[];
}

/** Output of the prune-plan Lambda: the points that go, each with why. */
export interface PrunePlan {
  deletePoints: string[];
  expired: Array<{ recoveryPointId: string; target: string; reasons: string[] }>;
  /** Expired points a running restore or verify reads: kept until the next prune. */
  busy: Array<{ recoveryPointId: string; jobId: string }>;
  /** Points kept, by count. */
  kept: number;
  /**
   * Points of ended backups that were never committed (no catalog point), also in
   * `deletePoints`: the mark deletes their manifests where the agent wrote one.
   */
  uncommitted?: string[];
}

/** What a prune job records when it ends (the job's `prune` field). */
export interface PruneSummary {
  dryRun: boolean;
  /** The points deleted (or, dry, that would be), with why; at most 200 listed. */
  points: Array<{ recoveryPointId: string; target: string; reasons: string[] }>;
  pointsDeleted: number;
  /** Manifests of points never committed (a cancel after the agent's success) deleted. */
  uncommittedDeleted?: number;
  pointsKept: number;
  busy: Array<{ recoveryPointId: string; jobId: string }>;
  /**
   * What the mark found: unreferenced packs, and their bytes with the manifests'; a dry run's
   * `bytesFound` also counts what repacking would free (the repacked packs less the copies).
   */
  packsFound: number;
  bytesFound: number;
  /** Packs mostly garbage that were (dry: would be) repacked, and the bytes their copies took. */
  packsRepacked: number;
  bytesRewritten: number;
  packsDeleted: number;
  chunksDeleted: number;
  /** Bytes deleted less the bytes repacking wrote: what the store shrank by. */
  bytesFreed: number;
  /** Jobs whose leases the sweep waited for. */
  waitedFor: string[];
}

export interface StreamSummary {
  name: string;
  kind: string;
  size: number;
}

/** SendTaskSuccess output of a backup task. */
export interface BackupResult {
  recoveryPointId: string;
  manifestKey: string;
  /**
   * The plain-text list of the packs holding the point's chunks (kernel/object-layout.ts
   * packListKey), which commit-point checks against the store's indexes.
   */
  packListKey?: string;
  startedAt: string;
  completedAt: string;
  /** Bytes read from the target. */
  bytesRead: number;
  /** Plain bytes of chunks the repository did not hold yet. */
  bytesNew: number;
  /** Compressed, encrypted bytes this backup added to the store. */
  bytesStored: number;
  streams: StreamSummary[];
  /** A small, catalog-sized summary of the target's metadata (the full one is in the manifest). */
  summary: Record<string, string | number | boolean>;
  /**
   * Parts of the target the point lacks because they failed (a vApp's child VM): the point is
   * committed with them listed, and the job ends PARTIALLY_FAILED.
   */
  failures?: PartFailure[];
}

/** One part of a target that a backup could not capture, and why. */
export interface PartFailure {
  part: string;
  error: { name: string; message: string };
}

/** SendTaskSuccess output of a restore task. */
export interface RestoreResult {
  restoredTarget: string;
  startedAt: string;
  completedAt: string;
  bytesWritten: number;
  /** A restore test's outcome (RestoreRequestOptions.test). */
  test?: RestoreTestOutcome;
  /** A listing (`list`), or the files a file-level restore wrote. */
  listing?: TreeListing;
  files?: number;
}

/** SendTaskSuccess output of a verify task: every chunk of the point was read and checked. */
export interface VerifyResult {
  startedAt: string;
  completedAt: string;
  bytesVerified: number;
  chunks: number;
  streams: number;
  /**
   * What the verify found wrong besides the point (objects under `index/` that were skipped as
   * bad, each with why); absent when nothing was.
   */
  warnings?: string[];
}

export type { ErrorRecord };
