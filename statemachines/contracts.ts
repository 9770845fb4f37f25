/**
 * Every payload that crosses a state of the backup and restore state machines, and the message
 * an agent receives. Handlers, the agent and local mode import these; the ASL files must agree
 * with them (test/statemachines checks the round trip).
 */
import type { ErrorRecord } from '../functions/shared/errors';

export type JobKind = 'BACKUP' | 'RESTORE' | 'VERIFY';
export type JobStatus =
  'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'PARTIALLY_FAILED' | 'CANCELLED';
export const TERMINAL_STATUSES: readonly JobStatus[] = [
  'SUCCEEDED',
  'FAILED',
  'PARTIALLY_FAILED',
  'CANCELLED',
];

/** Execution input of backup.asl.json (written by the API handler). */
export interface BackupExecutionInput {
  jobId: string;
  recoveryPointId: string;
  /** `platform:name`, without the agent. */
  target: string;
  agent: string;
  queueUrl: string;
  /** Always present (`{}` for the defaults): the ASL passes it on as it is. */
  options: BackupRequestOptions;
}

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
}
export interface VerifyExecutionInput {
  jobId: string;
  recoveryPointId: string;
  /** The target the point was taken of. */
  target: string;
  agent: string;
  queueUrl: string;
}

/** Payload of the record-job Lambda. */
export type RecordJobEvent =
  | { action: 'start'; jobId: string; executionArn: string }
  | { action: 'succeed'; jobId: string; result: RestoreResult | VerifyResult }
  | { action: 'fail'; jobId: string; error: StatesError };

/** What Step Functions puts at a Catch's ResultPath. */
export interface StatesError {
  Error: string;
  Cause?: string;
}

/** Payload of the commit-point Lambda. */
export interface CommitPointEvent {
  jobId: string;
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

/** The SQS message body of a dispatched task (MessageBody of the waitForTaskToken states). */
export interface AgentTaskMessage {
  taskToken: string;
  task: AgentTask;
}

export type AgentTask = BackupTask | RestoreTask | VerifyTask;

export interface BackupTask {
  kind: 'BACKUP';
  jobId: string;
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

export interface StreamSummary {
  name: string;
  kind: string;
  size: number;
}

/** SendTaskSuccess output of a backup task. */
export interface BackupResult {
  recoveryPointId: string;
  manifestKey: string;
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
}

/** SendTaskSuccess output of a restore task. */
export interface RestoreResult {
  restoredTarget: string;
  startedAt: string;
  completedAt: string;
  bytesWritten: number;
}

/** SendTaskSuccess output of a verify task: every chunk of the point was read and checked. */
export interface VerifyResult {
  startedAt: string;
  completedAt: string;
  bytesVerified: number;
  chunks: number;
  streams: number;
}

export type { ErrorRecord };
