/**
 * The local stand-ins for DynamoDB, S3 and SQS, each speaking its service's wire protocol on a
 * loopback port, with state under one data directory:
 *
 *   <dataDir>/dynamodb/   dynalite's LevelDB (catalog)
 *   <dataDir>/s3/         s3rver's files (recovery points)
 *
 * SQS messages are held in memory (local-aws-sqs): a task in flight belongs to an execution
 * that does not survive a restart anyway. Tables and queues are created here from the same
 * definitions the CDK stack uses (kernel/resources.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import {
  CreateTableCommand,
  DynamoDBClient,
  ResourceInUseException,
} from '@aws-sdk/client-dynamodb';
import { CreateQueueCommand, SQSClient } from '@aws-sdk/client-sqs';
import dynalite from 'dynalite';
import { createSqsServer } from 'local-aws-sqs';
import { catalogTableInput } from '../kernel/adapters/dynamodb-catalog';
import { requireAccessKey, type LocalCredentials } from './access';
import { BACKUP_BUCKET, CATALOG_TABLE, SITE_QUEUE, siteQueueName } from '../kernel/resources';

export interface EmulatorPorts {
  dynamodb: number;
  s3: number;
  sqs: number;
}

export interface Emulators {
  /** The only credentials the emulators accept. */
  credentials: LocalCredentials;
  endpoints: { dynamodb: string; s3: string; sqs: string };
  tableName: string;
  bucket: string;
  /** Queue URL of a site's queue (created by `ensureSiteQueue`). */
  queueUrlPrefix: string;
  ensureSiteQueue(site: string): Promise<string>;
  close(): Promise<void>;
}

/** The region the SDK clients need (credentials are made per start: ./access.ts). */
export const LOCAL_AWS = { region: 'us-east-1' } as const;

const listen = (server: Server, port: number) =>
  new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });

async function startS3(
  port: number,
  directory: string,
  bucket: string,
  credentials: LocalCredentials,
): Promise<{ child: ChildProcess; port: number }> {
  mkdirSync(directory, { recursive: true });
  // dist/s3-server.mjs beside the bundle (`npm run build`), else the source through tsx.
  const built = fileURLToPath(new URL('./s3-server.mjs', import.meta.url));
  const entry = existsSync(built)
    ? [built]
    : ['--import', 'tsx', fileURLToPath(new URL('./s3-server.ts', import.meta.url))];
  const child = spawn(
    process.execPath,
    ['--openssl-legacy-provider', ...entry, String(port), directory, bucket],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
      // In the environment, not argv: another user can read a process's argv, not its environment.
      env: {
        ...process.env,
        STOWAGE_S3_ACCESS_KEY_ID: credentials.accessKeyId,
        STOWAGE_S3_SECRET_ACCESS_KEY: credentials.secretAccessKey,
      },
    },
  );
  const lines = createInterface({ input: child.stdout! });
  const actual = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error('local S3 server did not start within 20 s')),
      20_000,
    );
    child.once('exit', (code) => reject(new Error(`local S3 server exited with code ${code}`)));
    lines.on('line', (line) => {
      const m = /^ready (\d+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
  return { child, port: actual };
}

export async function startEmulators(
  dataDir: string,
  ports: EmulatorPorts,
  credentials: LocalCredentials,
): Promise<Emulators> {
  const tableName = CATALOG_TABLE.localName;
  const bucket = BACKUP_BUCKET.localName;

  const dynamoDir = join(dataDir, 'dynamodb');
  mkdirSync(dynamoDir, { recursive: true });
  const dynamo = dynalite({
    path: dynamoDir,
    createTableMs: 0,
    deleteTableMs: 0,
    updateTableMs: 0,
  });
  requireAccessKey(dynamo, credentials.accessKeyId, 'DynamoDB');
  const dynamoPort = await listen(dynamo, ports.dynamodb);

  const sqsServer = await createSqsServer({
    port: ports.sqs,
    hostname: '127.0.0.1',
    emulateQueueCreationLifecycle: false,
  } as never);
  requireAccessKey(sqsServer, credentials.accessKeyId, 'SQS');
  const sqsPort = (sqsServer.address() as AddressInfo).port;

  let s3: { child: ChildProcess; port: number };
  try {
    s3 = await startS3(ports.s3, join(dataDir, 's3'), bucket, credentials);
  } catch (err) {
    dynamo.close();
    sqsServer.close();
    throw err;
  }

  const endpoints = {
    dynamodb: `http://127.0.0.1:${dynamoPort}`,
    s3: `http://127.0.0.1:${s3.port}`,
    sqs: `http://127.0.0.1:${sqsPort}`,
  };

  const clientConfig = { ...LOCAL_AWS, credentials: { ...credentials } };
  const ddb = new DynamoDBClient({ ...clientConfig, endpoint: endpoints.dynamodb });
  try {
    await ddb.send(new CreateTableCommand(catalogTableInput(tableName)));
  } catch (err) {
    if (!(err instanceof ResourceInUseException)) throw err;
  }

  ddb.destroy();
  const sqs = new SQSClient({ ...clientConfig, endpoint: endpoints.sqs });
  const queues = new Map<string, string>();
  const ensureSiteQueue = async (site: string): Promise<string> => {
    const known = queues.get(site);
    if (known) return known;
    const url = await createSiteQueue(sqs, site);
    queues.set(site, url);
    return url;
  };

  return {
    credentials,
    endpoints,
    tableName,
    bucket,
    queueUrlPrefix: `${endpoints.sqs}/123456789012/`,
    ensureSiteQueue,
    async close() {
      sqs.destroy();
      s3.child.kill('SIGTERM');
      await Promise.all([
        new Promise((r) => dynamo.close(r)),
        new Promise((r) => sqsServer.close(r)),
        new Promise((r) => (s3.child.exitCode !== null ? r(null) : s3.child.once('exit', r))),
      ]);
    },
  };
}

/**
 * Creates a site's queue and its dead-letter queue as the CDK stack does (idempotent: SQS answers
 * an existing queue's URL). A standalone agent calls it for its own site with the credentials of
 * agent-config.json.
 */
export async function createSiteQueue(sqs: SQSClient, site: string): Promise<string> {
  const name = siteQueueName(site);
  await sqs.send(new CreateQueueCommand({ QueueName: `${name}${SITE_QUEUE.dlqSuffix}` }));
  const dlqArn = `arn:aws:sqs:${LOCAL_AWS.region}:123456789012:${name}${SITE_QUEUE.dlqSuffix}`;
  const out = await sqs.send(
    new CreateQueueCommand({
      QueueName: name,
      Attributes: {
        VisibilityTimeout: String(SITE_QUEUE.visibilityTimeoutSeconds),
        MessageRetentionPeriod: String(SITE_QUEUE.retentionSeconds),
        RedrivePolicy: JSON.stringify({
          deadLetterTargetArn: dlqArn,
          maxReceiveCount: SITE_QUEUE.maxReceiveCount,
        }),
      },
    }),
  );
  return out.QueueUrl!;
}
