/**
 * The agent's composition root: reads its configuration once, builds the AWS clients, the store,
 * the catalog and the drivers this host has, and runs the queue worker and the inventory.
 *
 * In AWS the configuration comes from the environment (STOWAGE_SITE, STOWAGE_QUEUE_URL,
 * STOWAGE_TABLE, STOWAGE_BUCKET, STOWAGE_KMS_KEY_ID and the usual AWS credentials). In local mode the control plane
 * passes it directly, or a standalone `stowage agent` reads it from the 0600 agent-config.json
 * that `stowage start` wrote.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SFNClient } from '@aws-sdk/client-sfn';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import type { Logger } from '../../kernel/logger';
import { detectDrivers } from '../drivers';
import { s3ClientConfig, S3Store } from '../store/s3-store';
import { DirStore } from '../store/dir-store';
import { withRetry } from '../store/retry';
import type { ObjectStore } from '../store/store';
import { LocalKeyFile } from '../repo/keys';
import { KmsKeyProvider } from '../repo/kms-key';
import { Repository } from '../repo/repository';
import { KMSClient } from '@aws-sdk/client-kms';
import { InventoryPublisher } from './inventory';
import { AgentWorker } from './worker';
import { DirHoldJournal, type HoldReleaser } from '../core/holds';
import { appendFileSync } from 'node:fs';
import { DirParentRegistry } from '../core/parents';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Metrics, noMetrics, type MetricSink } from '../../kernel/metrics';
import { METRICS } from '../../kernel/resources';

export const AGENT_VERSION = '0.1.0';

/** Tasks an agent runs at once unless told otherwise: the backup Map's MaxConcurrency. */
export const DEFAULT_CONCURRENCY = 2;

/**
 * How often the hold journal is swept between tasks: an engine that was down when a release
 * failed gets its workload back within this once it answers (the inventory's period, 30 s).
 */
export const DEFAULT_HOLD_SWEEP_MS = 30_000;

/** An agent's heartbeat interval for a workflow HeartbeatSeconds: four beats per period. */
export function agentHeartbeatMs(heartbeatSeconds: number): number {
  return Math.max(100, Math.min(30_000, Math.floor((heartbeatSeconds * 1000) / 4)));
}

/** A positive number from the environment, or undefined when the variable is not set. */
export function positiveEnv(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === '') return undefined;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`${name} must be a positive number (it is ${JSON.stringify(text)})`);
  }
  return value;
}

/** Where the repository lives: an S3 bucket (AWS, local mode's default) or a directory. */
export type StoreConfig = { kind: 's3'; bucket: string } | { kind: 'dir'; path: string };

/** Where its data key comes from: a local key file, or KMS envelope encryption. */
export type KeyConfig = { kind: 'file'; path: string } | { kind: 'kms'; keyId: string };

export interface AgentConfig {
  site: string;
  queueUrl: string;
  tableName: string;
  store: StoreConfig;
  keys: KeyConfig;
  /** Explicit endpoints and credentials (local mode); the SDK's defaults otherwise. */
  aws?: {
    region: string;
    credentials?: { accessKeyId: string; secretAccessKey: string };
    endpoints?: { dynamodb?: string; s3?: string; sqs?: string; sfn?: string };
  };
  /**
   * Each engine's settings by its registry id (kernel/platforms EngineSpec: `docker`, `lxd`):
   * `endpoint` (a socket path) and what its driver reads (LXD's `project`); the registry's
   * defaults for what is not given.
   */
  engines?: Record<string, Record<string, string>>;
  /**
   * `path:` targets are backed up and restored only inside these trees (`--paths`), checked on
   * real paths; undefined: any absolute path on the host, as the agent's user may read and write it.
   */
  paths?: string[];
  /** Tasks run at once (default 2, the backup Map's MaxConcurrency). */
  concurrency?: number;
  /**
   * How often a running task heartbeats (default 30 s, or $STOWAGE_AGENT_HEARTBEAT_MS): well
   * under the workflows' HeartbeatSeconds (120 s; shortened for tests through configuration).
   */
  heartbeatMs?: number;
  /**
   * Repository lease ttl (repo/gc.ts); default $STOWAGE_LEASE_SECONDS, else 10 minutes. Tests
   * shorten it so a prune's sweep does not wait minutes for a lease.
   */
  leaseTtlMs?: number;
  /** How often a running task's job is checked, so a cancel reaches it (default 2 s). */
  jobCheckMs?: number;
  waitTimeSeconds?: number;
  /**
   * How often the whole inventory is listed again besides on engine events (default 30 s, or
   * $STOWAGE_INVENTORY_INTERVAL_MS: tests make it long to show that events alone deliver).
   */
  inventoryIntervalMs?: number;
  /**
   * How often the hold journal is swept besides after every task (default 30 s, or
   * $STOWAGE_HOLD_SWEEP_SECONDS; `--hold-sweep-seconds`): how long a hold whose release failed
   * (its engine was down) waits, at most, once the engine answers again. Tests that restart an
   * engine shorten it.
   */
  holdSweepMs?: number;
  /**
   * The hold journal's directory (agents/core/holds.ts): one per agent process, on a disk that
   * survives the agent. Default `~/.stowage/holds/<site>`.
   */
  holdsDir?: string;
  /** Where the last point of each target is noted (core/parents.ts). Default `~/.stowage/parents/<site>`. */
  parentsDir?: string;
  /**
   * Where the agent writes its EMF metrics (kernel/metrics.ts: a heartbeat per inventory report,
   * AgentHeartbeats by Site), for a CloudWatch agent to ship: a file, or `-` for stdout. Default
   * $STOWAGE_METRICS_FILE; none when neither is set.
   */
  metricsFile?: string;
}

/** The agent's metrics sink: a file appended to, stdout (`-`), or nothing. */
function metricsSink(target: string | undefined, log: Logger): MetricSink {
  if (!target) return noMetrics;
  if (target === '-') return (line) => void process.stdout.write(`${line}\n`);
  return (line) => {
    try {
      appendFileSync(target, `${line}\n`, { mode: 0o644 });
    } catch (err) {
      log.warn('agent.metrics.write_failed', { file: target, error: err });
    }
  };
}

export interface RunningAgent {
  site: string;
  platforms: string[];
  /** Publishes the inventory now (tests use it to avoid waiting for the engine's events). */
  refresh(): Promise<void>;
  stop(): Promise<void>;
}

export async function startAgent(config: AgentConfig, log: Logger): Promise<RunningAgent> {
  const base = config.aws
    ? {
        region: config.aws.region,
        ...(config.aws.credentials ? { credentials: config.aws.credentials } : {}),
      }
    : {};
  const ep = config.aws?.endpoints ?? {};
  const sqs = new SQSClient({ ...base, ...(ep.sqs ? { endpoint: ep.sqs } : {}) });
  const sfn = new SFNClient({ ...base, ...(ep.sfn ? { endpoint: ep.sfn } : {}) });
  // withRetry retries S3 calls itself; the SDK's own retries on top would multiply them.
  const s3 = new S3Client(
    s3ClientConfig({ ...base, maxAttempts: 1, ...(ep.s3 ? { endpoint: ep.s3 } : {}) }),
  );
  const store: ObjectStore =
    config.store.kind === 's3'
      ? withRetry(new S3Store(config.store.bucket, s3))
      : withRetry(new DirStore(config.store.path));
  const keys =
    config.keys.kind === 'file'
      ? new LocalKeyFile(config.keys.path)
      : new KmsKeyProvider(new KMSClient(base), config.keys.keyId, store);
  let repository: Promise<Repository> | undefined;
  const openRepo = () => {
    const onBadIndex = (key: string, reason: string) =>
      agentLog.warn('agent.repository.bad_index', {
        object: key,
        reason,
        effect: 'skipped: the chunks it lists are not known to this agent',
      });
    repository ??= Repository.open({ store, keys, onBadIndex }).catch((err: unknown) => {
      repository = undefined;
      throw err;
    });
    return repository;
  };
  const ddb = new DynamoDBClient({ ...base, ...(ep.dynamodb ? { endpoint: ep.dynamodb } : {}) });
  const catalog = new DynamoDbCatalog(config.tableName, ddb);
  const agentLog = log.child({ agent: config.site });
  const drivers = detectDrivers(config, agentLog);
  // What a killed predecessor held is released before this agent takes any task: the retry of
  // its job finds the workload as its owner left it, not as Stowage stopped it.
  const journal = DirHoldJournal.open(
    config.holdsDir ?? join(homedir(), '.stowage', 'holds', config.site),
  );
  const releasers = new Map<string, HoldReleaser>();
  for (const driver of drivers.values()) {
    const release = driver.releaseHold?.bind(driver);
    if (release) releasers.set(driver.platform, release);
  }
  let sweeping: Promise<unknown> | undefined;
  const sweep = () =>
    (sweeping ??= journal
      .sweep(releasers, agentLog)
      .then((outcome) => {
        if (outcome.released + outcome.kept > 0) agentLog.info('agent.holds.swept', outcome);
      })
      .catch((err: unknown) => agentLog.error('agent.holds.sweep_failed', { error: err }))
      .finally(() => {
        sweeping = undefined;
      }));
  await sweep();
  const sweepTimer = setInterval(() => void sweep(), holdSweepMs(config));
  sweepTimer.unref();
  const metrics = new Metrics(
    METRICS.namespace,
    metricsSink(config.metricsFile ?? process.env.STOWAGE_METRICS_FILE, agentLog),
  );
  const inventory = new InventoryPublisher(
    config.site,
    drivers,
    catalog,
    agentLog,
    AGENT_VERSION,
    config.inventoryIntervalMs ?? positiveEnv('STOWAGE_INVENTORY_INTERVAL_MS'),
    // At 1 s resolution: the agent-silent alarm looks at 30 s periods (cdk/constructs/monitoring.ts).
    () =>
      metrics.publish([{ name: METRICS.agentHeartbeats, unit: 'Count', value: 1, resolution: 1 }], {
        Site: config.site,
      }),
  );
  await inventory.start();
  const worker = new AgentWorker({
    queueUrl: config.queueUrl,
    sqs,
    sfn,
    catalog,
    runner: {
      agent: config.site,
      drivers,
      repository: openRepo,
      log: agentLog,
      holds: journal,
      parents: DirParentRegistry.open(
        config.parentsDir ?? join(homedir(), '.stowage', 'parents', config.site),
      ),
      ...(leaseTtlMs(config) !== undefined ? { leaseTtlMs: leaseTtlMs(config) } : {}),
      ...(config.paths ? { paths: config.paths } : {}),
    },
    log: agentLog,
    concurrency: config.concurrency ?? DEFAULT_CONCURRENCY,
    heartbeatMs: config.heartbeatMs ?? positiveEnv('STOWAGE_AGENT_HEARTBEAT_MS') ?? 30_000,
    ...(config.jobCheckMs ? { jobCheckMs: config.jobCheckMs } : {}),
    ...(config.waitTimeSeconds ? { waitTimeSeconds: config.waitTimeSeconds } : {}),
    afterTask: async () => {
      await sweep();
      await inventory.publish();
    },
  });
  worker.start();
  // Opened now rather than by the first task (its index read, its codec threads started: ~0.2 s
  // here), so a job does not wait for it; a failure is the first task's to report again.
  void openRepo().catch((err: unknown) =>
    agentLog.warn('agent.repository.open_failed', {
      error: err,
      effect: 'the first task opens it again and fails with the reason if it still cannot',
    }),
  );
  return {
    site: config.site,
    platforms: [...drivers.keys()],
    refresh: () => inventory.publish(),
    async stop() {
      inventory.stop();
      clearInterval(sweepTimer);
      await worker.stop();
      await sweeping;
      journal.close();
      if (repository) await (await repository.catch(() => undefined))?.close();
      for (const driver of drivers.values()) {
        await driver
          .close?.()
          .catch((err: unknown) =>
            agentLog.warn('agent.driver.close_failed', { platform: driver.platform, error: err }),
          );
      }
      for (const client of [sqs, sfn, s3, ddb]) client.destroy();
    },
  };
}

/** The hold sweep's period: the setting, else $STOWAGE_HOLD_SWEEP_SECONDS, else 30 s. */
export function holdSweepMs(config: Pick<AgentConfig, 'holdSweepMs'>): number {
  const seconds = positiveEnv('STOWAGE_HOLD_SWEEP_SECONDS');
  return config.holdSweepMs ?? (seconds !== undefined ? seconds * 1000 : DEFAULT_HOLD_SWEEP_MS);
}

function leaseTtlMs(config: AgentConfig): number | undefined {
  if (config.leaseTtlMs !== undefined) return config.leaseTtlMs;
  const seconds = Number(process.env.STOWAGE_LEASE_SECONDS);
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : undefined;
}
