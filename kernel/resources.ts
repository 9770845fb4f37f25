/**
 * The definitions of the catalog table, the backup bucket and the site queues, as plain data.
 * The CDK stack builds the AWS resources from these, and local mode creates the same table and
 * queues in its emulators from them, so the two cannot drift. No SDK and no CDK imports here.
 */

export const CATALOG_TABLE = {
  /** Name used in local mode; in AWS the stack lets CloudFormation name the table. */
  localName: 'stowage-catalog',
  partitionKey: 'pk',
  sortKey: 'sk',
  /** Every GSI has string keys named `<index>pk` / `<index>sk`, projected ALL. */
  globalIndexes: ['gsi1', 'gsi2'] as const,
} as const;

export const BACKUP_BUCKET = {
  localName: 'stowage-backups',
  /** Incomplete multipart uploads of an interrupted stream are useless after a week. */
  abortIncompleteMultipartUploadDays: 7,
  /**
   * How long a version that a prune deleted (or anything overwrote) stays recoverable before S3
   * removes it: the window in which a stolen maintenance credential's deletions can be undone.
   * The `stowage:noncurrentDays` context changes it.
   */
  noncurrentVersionDays: 30,
  /** Object Lock's default retention when `stowage:objectLock` turns it on. */
  objectLockDays: 30,
} as const;

/**
 * The site whose agent runs prunes in AWS: its role is the only identity of the stack that may
 * delete from the store (`stowage agent --site maintenance` with that role's credentials).
 */
export const MAINTENANCE_SITE = 'maintenance';

/**
 * What a site may be called: what an SQS queue name may hold (`stowage-site-<site>`), and never
 * `#` or `/`, so the catalog's `SITE#<site>#...` keys of one site can never begin with another's
 * (the site roles' dynamodb:LeadingKeys condition is `SITE#<site>#*`).
 */
export const SITE_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export const SITE_QUEUE = {
  namePrefix: 'stowage-site-',
  /**
   * A received task message stays invisible while its agent checks the task's token; the agent
   * then deletes it before the task runs (Step Functions, not the queue, re-dispatches a task
   * whose agent died), so this only has to outlast that check with margin.
   */
  visibilityTimeoutSeconds: 120,
  receiveWaitTimeSeconds: 20,
  retentionSeconds: 4 * 24 * 3600,
  /** A message that made this many agents fail to even start it goes to the site's DLQ. */
  maxReceiveCount: 5,
  dlqSuffix: '-dlq',
} as const;

export const DEFAULT_SITE = 'local';

/**
 * The KMS key that wraps the repository's data key (AWS). Agents pass this encryption context on
 * every call and IAM allows the key only with it, so the wrapped key cannot be decrypted for
 * another purpose.
 */
export const DATA_KEY = {
  alias: 'alias/stowage-data',
  encryptionContext: { purpose: 'stowage-repository-data-key' },
} as const;

export function siteQueueName(site: string): string {
  return `${SITE_QUEUE.namePrefix}${site}`;
}

/** The state machines, by the ASL file each is defined in (under statemachines/). */
export const WORKFLOWS = {
  backup: { file: 'backup.asl.json', localName: 'stowage-backup' },
  restore: { file: 'restore.asl.json', localName: 'stowage-restore' },
  verify: { file: 'verify.asl.json', localName: 'stowage-verify' },
  snapshot: { file: 'snapshot.asl.json', localName: 'stowage-snapshot' },
  prune: { file: 'prune.asl.json', localName: 'stowage-prune' },
} as const;

/** The Lambda functions, by the folder of their handler (functions/<folder>/handler.ts). */
export const FUNCTIONS = {
  api: 'api',
  recordJob: 'record-job',
  commitPoint: 'commit-point',
  prunePlan: 'prune-plan',
  runPolicy: 'run-policy',
  startChecks: 'start-checks',
} as const;

/**
 * The `${...}` placeholders in the ASL files. CDK passes them as definitionSubstitutions; local
 * mode replaces them before loading the file.
 */
export const ASL_SUBSTITUTIONS = {
  recordJobFunction: 'RecordJobFunctionArn',
  commitPointFunction: 'CommitPointFunctionArn',
  prunePlanFunction: 'PrunePlanFunctionArn',
  startChecksFunction: 'StartChecksFunctionArn',
} as const;

/** EventBridge Scheduler: the group that holds one schedule per policy (AWS). */
export const POLICY_SCHEDULES = {
  groupName: 'stowage-policies',
} as const;

/**
 * The CloudWatch metrics Stowage publishes (as EMF lines: kernel/metrics.ts) and the dashboard
 * and alarms of the stack read (cdk/constructs/monitoring.ts). Units are EMF's.
 */
export const METRICS = {
  namespace: 'Stowage',
  /** record-job: a job started (dimension Kind). */
  jobsStarted: 'JobsStarted',
  /** record-job: a job ended (dimensions Status, and Kind+Status). */
  jobsEnded: 'JobsEnded',
  /** record-job: a job's time from start to end, ms (dimension Kind). */
  jobDuration: 'JobDuration',
  /** record-job, at a backup's end: bytes read from its targets, new to the store, stored. */
  bytesProtected: 'BytesProtected',
  bytesNew: 'BytesNew',
  bytesStored: 'BytesStored',
  /** record-job: a restore test's RTO, ms (dimension Passed). */
  restoreTestRto: 'RestoreTestRto',
  /** The agent: one per inventory report, at 1 s resolution (dimension Site). */
  agentHeartbeats: 'AgentHeartbeats',
} as const;

/** How often an agent reports its inventory (and its heartbeat metric), ms. */
export const INVENTORY_INTERVAL_MS = 30_000;

/** The EventBridge event of each job state change (record-job puts it on the default bus). */
export const JOB_EVENTS = {
  source: 'stowage',
  detailType: 'Job State Change',
} as const;

/**
 * A policy whose expected run did not start within its window: one event per missed run, put by
 * the check the stack schedules every `everyMinutes` (run-policy with `{"checkMissedRuns": true}`).
 */
export const POLICY_EVENTS = {
  source: 'stowage',
  detailType: 'Policy Run Missed',
  everyMinutes: 15,
} as const;
