/**
 * Local mode: the whole control plane on one machine. Each AWS service is replaced by a local
 * server that speaks its wire protocol (local/emulators.ts, local/sfn), the Lambda handlers run
 * in-process unchanged (they read the same environment variables they get in AWS, with
 * AWS_ENDPOINT_URL_* pointing at the local servers), the HTTP API is served in front of the API
 * handler, and an agent runs beside them for the engines this host has.
 *
 * Ports: the API on `port`, then DynamoDB, S3, SQS and Step Functions on port+1 … port+4
 * (all on 127.0.0.1). Port 0 picks free ports (tests).
 *
 * Every start makes new secrets (./access.ts): the API's token in `<dataDir>/api-token`, the
 * emulators' credentials (nothing else is answered), and `<dataDir>/agent-config.json` with what a
 * standalone agent needs, credentials included; both files 0600.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SQSClient } from '@aws-sdk/client-sqs';
import type { StateMachineDefinition } from 'aws-local-stepfunctions';
import { DynamoDbCatalog } from '../kernel/adapters/dynamodb-catalog';
import { createLogger, LogEvent, type Logger } from '../kernel/logger';
import { systemClock } from '../kernel/ids';
import { ASL_SUBSTITUTIONS, DEFAULT_SITE, FUNCTIONS, WORKFLOWS } from '../kernel/resources';
import {
  agentHeartbeatMs,
  positiveEnv,
  startAgent,
  type AgentConfig,
  type RunningAgent,
  type StoreConfig,
} from '../agents/worker/main';
import { startApiServer } from './api-server';
import { CONSOLE_DIR, consoleBuilt, consoleFiles } from './console-files';
import {
  agentConfigPath,
  apiTokenPath,
  newApiToken,
  newLocalCredentials,
  requireAccessKey,
  writePrivateFile,
  type LocalCredentials,
} from './access';
import { LocalScheduler } from './scheduler';
import { settleInterrupted } from './interrupted';
import { parseSchedule } from '../kernel/schedule';

/** The daily prune in local mode (STOWAGE_PRUNE_SCHEDULE; `off`: none): 04:00 UTC, as in AWS. */
const DEFAULT_PRUNE_SCHEDULE = 'cron(0 4 * * ? *)';
import { LOCAL_AWS, startEmulators, type Emulators } from './emulators';
import { LocalStepFunctions } from './sfn/engine';
import { startSfnServer } from './sfn/server';

const STATEMACHINES_DIR = fileURLToPath(new URL('../statemachines/', import.meta.url));

export interface ControlPlaneOptions {
  dataDir: string;
  /** API port; emulators take the next four. 0: any free ports. */
  port: number;
  /** Run an agent in this process for the engines found here (default true). */
  agent?: boolean;
  site?: string;
  log?: Logger;
  /** Replaces a workflow's ASL before it is registered (tests shorten heartbeats with it). */
  adjustDefinition?: (workflow: keyof typeof WORKFLOWS, definition: StateMachineDefinition) => void;
  agentOptions?: Partial<AgentConfig>;
  /**
   * Replaces every workflow state's HeartbeatSeconds (120 in the ASL files) in the local Step
   * Functions engine, and makes the agents heartbeat four times as often (default
   * $STOWAGE_HEARTBEAT_SECONDS): tests shorten heartbeats here, never in the ASL files.
   */
  heartbeatSeconds?: number;
  /**
   * Where the repository is (chooseStore): this directory; or, with `s3Store`, the local S3
   * server, the same code path as AWS. Default `<dataDir>/store`.
   */
  storeDir?: string;
  s3Store?: boolean;
  /** How often the scheduler looks at the policies (default $STOWAGE_SCHEDULER_TICK_MS, else 5 s). */
  schedulerTickMs?: number;
  /** The web console's built files (default dist/console/ of this checkout). */
  consoleDir?: string;
}

export interface ControlPlane {
  apiUrl: string;
  /** The API's bearer token (also in <dataDir>/api-token). */
  apiToken: string;
  /** The emulators' credentials for this start (also in <dataDir>/agent-config.json). */
  credentials: LocalCredentials;
  endpoints: Emulators['endpoints'] & { sfn: string };
  localConfig: LocalConfig;
  /** The web console at the API's address: its sign-in link, or why there is none. */
  console: { url: string; built: boolean };
  sfn: LocalStepFunctions;
  agent?: RunningAgent;
  close(): Promise<void>;
}

/**
 * What a standalone local agent needs to join: `<dataDir>/agent-config.json` (0600, rewritten on
 * every start), read by `stowage agent`. Never served over the network.
 */
export interface LocalConfig {
  region: string;
  /** The only credentials the emulators accept (new on every start). */
  credentials: LocalCredentials;
  endpoints: { dynamodb: string; s3: string; sqs: string; sfn: string };
  tableName: string;
  bucket: string;
  queueUrlPrefix: string;
  store: StoreConfig;
  /** The repository's key file (local mode keeps it in the data directory, mode 0600). */
  keyFile: string;
  /** Set when the workflows' HeartbeatSeconds is shortened: agents heartbeat to match. */
  heartbeatSeconds?: number;
}

/** Loads an ASL file with its `${...}` placeholders replaced, as CloudFormation would. */
export function loadDefinition(
  file: string,
  substitutions: Record<string, string>,
): StateMachineDefinition {
  let text = readFileSync(join(STATEMACHINES_DIR, file), 'utf8');
  text = text.replace(/\$\{([A-Za-z0-9_]+)\}/g, (whole, key: string) => {
    const value = substitutions[key];
    if (value === undefined) throw new Error(`${file}: no value for placeholder ${whole}`);
    return value;
  });
  return JSON.parse(text) as StateMachineDefinition;
}

const portOf = (server: Server) => (server.address() as AddressInfo).port;
const plus = (port: number, n: number) => (port === 0 ? 0 : port + n);

/**
 * Local mode's repository: a directory store by default (`<dataDir>/store`). The local S3
 * server (s3rver) writes about 95 MiB/s on this kind of machine, half of what the data path
 * makes, while a directory store writes packs with O_DIRECT at disk speed; the S3 server still
 * runs for what asks for it (`--s3-store`, the S3-path tests), with the agent's S3 store, the
 * code that runs in AWS. A data directory whose repository is already in the S3 server (made
 * before the directory became the default) keeps it there.
 */
export function chooseStore(
  options: Pick<ControlPlaneOptions, 'dataDir' | 'storeDir' | 's3Store'>,
  bucket: string,
): StoreConfig {
  if (options.storeDir) return { kind: 'dir', path: resolve(options.storeDir) };
  const dir = resolve(options.dataDir, 'store');
  const s3Bucket = join(options.dataDir, 's3', bucket);
  const inS3 = !existsSync(dir) && existsSync(s3Bucket) && readdirSync(s3Bucket).length > 0;
  return options.s3Store || inS3 ? { kind: 's3', bucket } : { kind: 'dir', path: dir };
}

export async function startControlPlane(options: ControlPlaneOptions): Promise<ControlPlane> {
  const log = options.log ?? createLogger({ service: 'stowage-local' });
  const startedAt = systemClock.now();
  const site = options.site ?? DEFAULT_SITE;
  const heartbeatSeconds = options.heartbeatSeconds ?? positiveEnv('STOWAGE_HEARTBEAT_SECONDS');
  // New on every start: the credentials of a previous start (or the s3rver default) stop working.
  const credentials = newLocalCredentials();
  const emulators = await startEmulators(
    options.dataDir,
    { dynamodb: plus(options.port, 1), s3: plus(options.port, 2), sqs: plus(options.port, 3) },
    credentials,
  );
  const closers: Array<() => Promise<void>> = [() => emulators.close()];
  try {
    const sqs = new SQSClient({
      ...LOCAL_AWS,
      credentials: { ...credentials },
      endpoint: emulators.endpoints.sqs,
    });
    await emulators.ensureSiteQueue(site);

    // The handlers' own clients find everything through the environment, as in AWS.
    const sfn = new LocalStepFunctions({
      dataDir: join(options.dataDir, 'stepfunctions'),
      sqs,
      log,
      ...(heartbeatSeconds ? { heartbeatSeconds } : {}),
    });
    const sfnServer = await startSfnServer(sfn, plus(options.port, 4));
    requireAccessKey(sfnServer, credentials.accessKeyId, 'Step Functions');
    closers.unshift(async () => {
      await sfn.close();
      await new Promise((r) => sfnServer.close(r));
      sqs.destroy();
    });
    const endpoints = { ...emulators.endpoints, sfn: `http://127.0.0.1:${portOf(sfnServer)}` };

    const backupArn = sfn.stateMachineArn(WORKFLOWS.backup.localName);
    const restoreArn = sfn.stateMachineArn(WORKFLOWS.restore.localName);
    const verifyArn = sfn.stateMachineArn(WORKFLOWS.verify.localName);
    const snapshotArn = sfn.stateMachineArn(WORKFLOWS.snapshot.localName);
    const pruneArn = sfn.stateMachineArn(WORKFLOWS.prune.localName);
    const store = chooseStore(options, emulators.bucket);
    const keyFile = join(options.dataDir, 'keys', 'repository.key');
    Object.assign(process.env, {
      AWS_REGION: LOCAL_AWS.region,
      AWS_ACCESS_KEY_ID: credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
      AWS_ENDPOINT_URL_DYNAMODB: endpoints.dynamodb,
      AWS_ENDPOINT_URL_S3: endpoints.s3,
      AWS_ENDPOINT_URL_SQS: endpoints.sqs,
      AWS_ENDPOINT_URL_SFN: endpoints.sfn,
      AWS_REQUEST_CHECKSUM_CALCULATION: 'WHEN_REQUIRED',
      AWS_RESPONSE_CHECKSUM_VALIDATION: 'WHEN_REQUIRED',
      TABLE_NAME: emulators.tableName,
      BUCKET_NAME: emulators.bucket,
      BACKUP_STATE_MACHINE_ARN: backupArn,
      RESTORE_STATE_MACHINE_ARN: restoreArn,
      VERIFY_STATE_MACHINE_ARN: verifyArn,
      SNAPSHOT_STATE_MACHINE_ARN: snapshotArn,
      PRUNE_STATE_MACHINE_ARN: pruneArn,
      ...(store.kind === 'dir' ? { STORE_DIR: store.path } : {}),
      SITE_QUEUE_URL_PREFIX: emulators.queueUrlPrefix,
      // Job State Change events, one JSON line each (EventBridge's fields): what AWS puts on the bus.
      JOB_EVENTS_FILE: join(options.dataDir, 'events.jsonl'),
    });
    const api = await import('../functions/api/handler');
    const recordJob = await import('../functions/record-job/handler');
    const commitPoint = await import('../functions/commit-point/handler');
    const prunePlan = await import('../functions/prune-plan/handler');
    const startChecks = await import('../functions/start-checks/handler');
    const functionName = (folder: string) => `stowage-${folder}`;
    sfn.registerFunction(sfn.functionArn(functionName(FUNCTIONS.recordJob)), (p) =>
      recordJob.handler(p as never),
    );
    sfn.registerFunction(sfn.functionArn(functionName(FUNCTIONS.commitPoint)), (p) =>
      commitPoint.handler(p as never),
    );
    sfn.registerFunction(sfn.functionArn(functionName(FUNCTIONS.prunePlan)), (p) =>
      prunePlan.handler(p as never),
    );
    sfn.registerFunction(sfn.functionArn(functionName(FUNCTIONS.startChecks)), (p) =>
      startChecks.handler(p as never),
    );

    const substitutions = {
      [ASL_SUBSTITUTIONS.recordJobFunction]: sfn.functionArn(functionName(FUNCTIONS.recordJob)),
      [ASL_SUBSTITUTIONS.commitPointFunction]: sfn.functionArn(functionName(FUNCTIONS.commitPoint)),
      [ASL_SUBSTITUTIONS.prunePlanFunction]: sfn.functionArn(functionName(FUNCTIONS.prunePlan)),
      [ASL_SUBSTITUTIONS.startChecksFunction]: sfn.functionArn(functionName(FUNCTIONS.startChecks)),
    };
    for (const key of Object.keys(WORKFLOWS) as Array<keyof typeof WORKFLOWS>) {
      const definition = loadDefinition(WORKFLOWS[key].file, substitutions);
      options.adjustDefinition?.(key, definition);
      sfn.register(WORKFLOWS[key].localName, definition);
    }

    const catalog = new DynamoDbCatalog(emulators.tableName);

    const localConfig: LocalConfig = {
      region: LOCAL_AWS.region,
      credentials,
      endpoints,
      tableName: emulators.tableName,
      bucket: emulators.bucket,
      queueUrlPrefix: emulators.queueUrlPrefix,
      store,
      keyFile,
      ...(heartbeatSeconds ? { heartbeatSeconds } : {}),
    };
    writePrivateFile(agentConfigPath(options.dataDir), `${JSON.stringify(localConfig, null, 2)}\n`);
    // The policies' schedules: what EventBridge Scheduler does in AWS.
    const { requestBackup } = await import('../functions/core/requests/backup');
    const { SfnWorkflows } = await import('../functions/adapters/sfn-workflows');
    const { newId } = await import('../kernel/ids');
    const { siteQueueName } = await import('../kernel/resources');
    const { noSchedules } = await import('../functions/core/policies');
    const { jobObserversFromEnv } = await import('../functions/adapters/job-events');
    const tick = options.schedulerTickMs ?? Number(process.env.STOWAGE_SCHEDULER_TICK_MS);
    const pruneSchedule = process.env.STOWAGE_PRUNE_SCHEDULE ?? DEFAULT_PRUNE_SCHEDULE;
    const { runScheduledPrune } = await import('../functions/core/prune');
    const schedulerDeps = {
      catalog,
      workflows: new SfnWorkflows({
        backup: backupArn,
        restore: restoreArn,
        verify: verifyArn,
        snapshot: snapshotArn,
        prune: pruneArn,
      }),
      clock: systemClock,
      newId,
      queueUrlFor: (agent: string) => `${emulators.queueUrlPrefix}${siteQueueName(agent)}`,
      schedules: noSchedules,
      jobObservers: jobObserversFromEnv(process.env, log),
    };
    // The work the previous process left: jobs that can never finish end Interrupted, and
    // checks a finished backup asked for are started (local/interrupted.ts).
    await settleInterrupted(
      { ...schedulerDeps, log },
      {
        orphans: sfn.orphans,
        hasExecutionNamed: (name) => sfn.hasExecutionNamed(name),
        backupStateMachineArn: backupArn,
        startedAt,
      },
    );
    const scheduler = new LocalScheduler({
      ...(pruneSchedule !== 'off'
        ? {
            prune: {
              schedule: parseSchedule(pruneSchedule).expression,
              statePath: join(options.dataDir, 'scheduler', 'prune.json'),
              run: () =>
                runScheduledPrune({
                  ...schedulerDeps,
                  startPrune: (input) => schedulerDeps.workflows.startPrune(input),
                }),
            },
          }
        : {}),
      deps: schedulerDeps,
      requestBackup,
      log,
      ...(Number.isFinite(tick) && tick > 0 ? { tickMs: tick } : {}),
    });
    closers.unshift(() => scheduler.stop());

    const consoleDir = options.consoleDir ?? CONSOLE_DIR;
    // A new token on every start: a restart revokes whatever was handed out before.
    const apiToken = newApiToken();
    const tokenPath = apiTokenPath(options.dataDir);
    writePrivateFile(tokenPath, `${apiToken}\n`);
    const apiServer = await startApiServer(api.handler, options.port, '127.0.0.1', {
      files: consoleFiles(consoleDir),
      access: { token: apiToken, tokenPath },
    });
    closers.unshift(() => new Promise((r) => apiServer.close(() => r())));
    const apiUrl = `http://127.0.0.1:${portOf(apiServer)}`;

    let agent: RunningAgent | undefined;
    if (options.agent !== false) {
      agent = await startAgent(
        {
          site,
          queueUrl: await emulators.ensureSiteQueue(site),
          tableName: emulators.tableName,
          store,
          keys: { kind: 'file', path: keyFile },
          aws: { region: LOCAL_AWS.region, credentials: { ...credentials }, endpoints },
          holdsDir: join(options.dataDir, 'holds', site),
          parentsDir: join(options.dataDir, 'parents', site),
          ...(heartbeatSeconds ? { heartbeatMs: agentHeartbeatMs(heartbeatSeconds) } : {}),
          ...options.agentOptions,
        },
        log,
      );
      closers.unshift(() => agent!.stop());
    }
    scheduler.start();
    log.info(LogEvent.localReady, {
      api: apiUrl,
      dataDir: options.dataDir,
      agent: agent?.site,
      platforms: agent?.platforms,
    });
    return {
      apiUrl,
      credentials,
      endpoints,
      localConfig,
      apiToken,
      // The token rides in the fragment, which the browser never sends: no log line carries it.
      console: { url: `${apiUrl}/#token=${apiToken}`, built: consoleBuilt(consoleDir) },
      sfn,
      ...(agent ? { agent } : {}),
      async close() {
        for (const close of closers) await close().catch(() => undefined);
      },
    };
  } catch (err) {
    for (const close of closers) await close().catch(() => undefined);
    throw err;
  }
}
