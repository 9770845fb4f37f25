/**
 * `stowage agent --check`: whether an agent with this configuration would work, without taking
 * any task. It asks what the agent needs, each once and with a short timeout: its site's queue
 * (SQS GetQueueAttributes), the catalog (a query of its own agent partition), the store (whether the
 * repository's config object is there, or, for a directory store, that the directory is
 * writable), its data key, and every engine of the platform registry (the driver lists its
 * targets, as the inventory would). Each answer says what is wrong and what to do about it.
 * Nothing is written anywhere.
 */
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { GetQueueAttributesCommand, SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { silentLogger, type Logger } from '../../kernel/logger';
import { CONFIG_KEY } from '../../kernel/object-layout';
import { PLATFORM_SPECS, type DrivenPlatform } from '../../kernel/platforms';
import { DRIVER_FACTORIES } from '../drivers';
import { s3ClientConfig, S3Store } from '../store/s3-store';
import type { AgentConfig } from './main';

export type CheckStatus = 'ok' | 'failed' | 'absent';

export interface CheckResult {
  /** `queue`, `catalog`, `store`, `key`, `engine docker`... */
  check: string;
  status: CheckStatus;
  /** What was found. */
  detail: string;
  /** What to do about it (failed or absent only). */
  fix?: string;
}

/** How long one check may take: an endpoint that does not answer is a failure, not a hang. */
export const CHECK_TIMEOUT_MS = 5000;

function withTimeout<T>(what: string, work: Promise<T>, ms = CHECK_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

const messageOf = (err: unknown) =>
  err instanceof Error
    ? `${err.name !== 'Error' ? `${err.name}: ` : ''}${err.message}`
    : String(err);

/** What to do about an AWS call that failed, from the error's name and message. */
function awsFix(err: unknown, what: string, setting: string): string {
  const text = messageOf(err);
  if (/credential/i.test(text)) {
    return 'no AWS credentials were found: give the agent a credentials file (AWS_SHARED_CREDENTIALS_FILE; the systemd unit loads it with LoadCredential) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, for the site role (stack output AgentRoleArn)';
  }
  if (
    /AccessDenied|not authorized|Forbidden|403|UnrecognizedClient|InvalidClientTokenId|SignatureDoesNotMatch/i.test(
      text,
    )
  ) {
    return `the credentials may not use the ${what}: use the site's agent role (stack output AgentRoleArn), and check that ${setting} is this site's`;
  }
  if (/NonExistent|ResourceNotFound|NoSuchBucket|does not exist/i.test(text)) {
    return `there is no such ${what}: ${setting} must be the stack's output for this site`;
  }
  if (
    /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|no answer|socket hang up|connect/i.test(
      text,
    )
  ) {
    return `the ${what}'s endpoint does not answer: check the network (outbound HTTPS to AWS, a proxy: HTTPS_PROXY), AWS_REGION, and ${setting}; in local mode, that stowage start is running`;
  }
  return `check ${setting} and the agent's credentials`;
}

/** What to do about an engine its driver could not list, from the socket error. */
function engineFix(id: string, endpoint: string, err: unknown): string {
  const text = messageOf(err);
  if (/EACCES|EPERM|permission denied/i.test(text)) {
    return `the agent's user may not open ${endpoint}: run the agent as root, or as a user in the socket's group (the systemd unit: SupplementaryGroups=${id === 'lxd' ? 'lxd' : id})`;
  }
  if (/ECONNREFUSED|ENOTSOCK|no answer|EPIPE|ECONNRESET/i.test(text)) {
    return `${endpoint} exists but nothing answers on it: start the engine (systemctl start ${id === 'docker' ? 'docker' : id}) and check it with its own CLI`;
  }
  return `check the engine at ${endpoint} (its own CLI should answer), or give the agent another endpoint`;
}

/**
 * The data key: a key file this user can read, or KMS (checked when a task opens the repository).
 * A missing key file is made by the first backup of a new repository (LocalKeyFile), so it is
 * wrong only when the repository exists already: a new key could not read it.
 */
async function checkKey(
  config: AgentConfig,
  repository: boolean | undefined,
): Promise<CheckResult> {
  if (config.keys.kind === 'kms') {
    return {
      check: 'key',
      status: 'ok',
      detail: `KMS key ${config.keys.keyId} (unwrapped when the first task opens the repository)`,
    };
  }
  const path = config.keys.path;
  try {
    await access(path, constants.R_OK);
    return { check: 'key', status: 'ok', detail: `key file ${path} is readable` };
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    if (missing && repository === false) {
      return {
        check: 'key',
        status: 'ok',
        detail: `no key file at ${path} yet: the first backup of the new repository makes it (keep a copy)`,
      };
    }
    return {
      check: 'key',
      status: 'failed',
      detail: `key file ${path}: ${messageOf(err)}`,
      fix:
        missing && repository
          ? `the repository exists, so its key must come from where it was made: copy that key file to ${path} (mode 0600, owned by the agent's user) or point STOWAGE_KEY_FILE at it; without it no backup can be read`
          : `make ${path} readable by the agent's user (mode 0600, owned by it), or point STOWAGE_KEY_FILE at the repository's key file`,
    };
  }
}

/** The store, and whether the repository is in it (undefined when that could not be told). */
async function checkStore(
  config: AgentConfig,
  s3: S3Client,
): Promise<CheckResult & { repository?: boolean }> {
  if (config.store.kind === 'dir') {
    const path = config.store.path;
    try {
      await withTimeout('directory store', access(path, constants.R_OK | constants.W_OK));
      const repository = await access(join(path, CONFIG_KEY)).then(
        () => true,
        () => false,
      );
      return {
        check: 'store',
        status: 'ok',
        detail: `directory ${path} is readable and writable; ${repository ? 'the repository is there' : 'no repository yet (the first backup creates it)'}`,
        repository,
      };
    } catch (err) {
      return {
        check: 'store',
        status: 'failed',
        detail: `directory ${path}: ${messageOf(err)}`,
        fix: `mount the store at ${path} and make it readable and writable by the agent's user (the systemd unit: ReadWritePaths=${path})`,
      };
    }
  }
  const bucket = config.store.bucket;
  try {
    const store = new S3Store(bucket, s3);
    const initialised = await withTimeout(`bucket ${bucket}`, store.exists(CONFIG_KEY));
    return {
      check: 'store',
      status: 'ok',
      detail: `bucket ${bucket} answers; ${initialised ? 'the repository is there' : 'no repository yet (the first backup creates it)'}`,
      repository: initialised,
    };
  } catch (err) {
    return {
      check: 'store',
      status: 'failed',
      detail: `bucket ${bucket}: ${messageOf(err)}`,
      fix: awsFix(err, 'bucket', 'STOWAGE_BUCKET'),
    };
  }
}

/** Every engine of the registry, once: reachable (its driver lists targets), absent, or failing. */
async function checkEngines(config: AgentConfig, log: Logger): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const seen = new Set<string>();
  for (const spec of PLATFORM_SPECS) {
    if ('planned' in spec && spec.planned) continue;
    const engine = 'engine' in spec ? spec.engine : undefined;
    if (!engine || seen.has(engine.id)) continue;
    seen.add(engine.id);
    const given = config.engines?.[engine.id] ?? {};
    const endpoint = given.endpoint ?? engine.defaultEndpoint ?? '';
    const check = `engine ${engine.id}`;
    const platforms = PLATFORM_SPECS.filter(
      (s) => 'engine' in s && s.engine?.id === engine.id && !('planned' in s && s.planned),
    ).map((s) => s.name);
    if (!endpoint) {
      results.push({
        check,
        status: 'absent',
        detail: `not configured: this agent serves no ${platforms.join(', ')} targets`,
        fix: `give ${engine.flags.map((f) => f.flags.split(' ')[0]).join(', ')} to serve them`,
      });
      continue;
    }
    if (endpoint.startsWith('/')) {
      try {
        await access(endpoint);
      } catch {
        results.push({
          check,
          status: 'absent',
          detail: `no socket at ${endpoint}: this agent serves no ${platforms.join(', ')} targets`,
          fix: `install and start the engine on this host, or give its socket with ${engine.flags[0]?.flags.split(' ')[0] ?? 'the engine flag'}`,
        });
        continue;
      }
    }
    const driver = DRIVER_FACTORIES[spec.name as DrivenPlatform](
      { ...given, endpoint },
      { site: config.site, log },
    );
    try {
      const targets = await withTimeout(`${engine.id} at ${endpoint}`, driver.listTargets());
      results.push({
        check,
        status: 'ok',
        detail: `${endpoint} answers: ${targets.length} ${spec.noun}(s); serves ${platforms.join(', ')}`,
      });
    } catch (err) {
      results.push({
        check,
        status: 'failed',
        detail: `${endpoint}: ${messageOf(err)}`,
        fix: engineFix(engine.id, endpoint, err),
      });
    } finally {
      await (driver as { close?: () => Promise<void> | void }).close?.();
    }
  }
  return results;
}

/** Every check, in the order an operator fixes them: queue, catalog, store, key, engines. */
export async function checkAgent(
  config: AgentConfig,
  log: Logger = silentLogger,
): Promise<CheckResult[]> {
  const base = config.aws
    ? {
        region: config.aws.region,
        ...(config.aws.credentials ? { credentials: config.aws.credentials } : {}),
      }
    : {};
  const ep = config.aws?.endpoints ?? {};
  // One attempt each, with short timeouts: a check reports, it does not retry.
  const quick = {
    ...base,
    maxAttempts: 1,
    requestHandler: { connectionTimeout: 3000, requestTimeout: CHECK_TIMEOUT_MS },
  };
  const sqs = new SQSClient({ ...quick, ...(ep.sqs ? { endpoint: ep.sqs } : {}) });
  const ddb = new DynamoDBClient({ ...quick, ...(ep.dynamodb ? { endpoint: ep.dynamodb } : {}) });
  const s3 = new S3Client(s3ClientConfig({ ...quick, ...(ep.s3 ? { endpoint: ep.s3 } : {}) }));
  const results: CheckResult[] = [];
  try {
    try {
      const answer = await withTimeout(
        'queue',
        sqs.send(
          new GetQueueAttributesCommand({
            QueueUrl: config.queueUrl,
            AttributeNames: ['ApproximateNumberOfMessages'],
          }),
        ),
      );
      const waiting = answer.Attributes?.ApproximateNumberOfMessages ?? '?';
      results.push({
        check: 'queue',
        status: 'ok',
        detail: `${config.queueUrl} answers; ${waiting} task message(s) waiting`,
      });
    } catch (err) {
      results.push({
        check: 'queue',
        status: 'failed',
        detail: `${config.queueUrl}: ${messageOf(err)}`,
        fix: awsFix(err, 'queue', 'STOWAGE_QUEUE_URL'),
      });
    }
    try {
      const catalog = new DynamoDbCatalog(config.tableName, ddb);
      const record = await withTimeout('catalog', catalog.getAgent(config.site));
      results.push({
        check: 'catalog',
        status: 'ok',
        detail: `table ${config.tableName} answers; agent ${config.site} ${record ? `last reported at ${record.seenAt}` : 'has not reported yet'}`,
      });
    } catch (err) {
      results.push({
        check: 'catalog',
        status: 'failed',
        detail: `table ${config.tableName}: ${messageOf(err)}`,
        fix: awsFix(err, 'table', 'STOWAGE_TABLE'),
      });
    }
    const { repository, ...store } = await checkStore(config, s3);
    results.push(store);
    results.push(await checkKey(config, repository));
    results.push(...(await checkEngines(config, log)));
  } finally {
    for (const client of [sqs, ddb, s3]) client.destroy();
  }
  return results;
}
