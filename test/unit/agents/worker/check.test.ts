/**
 * `stowage agent --check` against stand-ins: an HTTP server that answers the AWS calls the check
 * makes (SQS GetQueueAttributes, DynamoDB Query, S3 HeadObject), a Docker engine on a unix
 * socket that lists no containers, and unreachable ones (a closed port, a socket nobody listens
 * on, a missing directory).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkAgent, type CheckResult } from '../../../../agents/worker/check';
import type { AgentConfig } from '../../../../agents/worker/main';

const dir = mkdtempSync(join(tmpdir(), 'stowage-check-'));
const keyFile = join(dir, 'repository.key');
writeFileSync(keyFile, 'k'.repeat(64), { mode: 0o600 });
let aws: Server;
let awsUrl: string;
let docker: Server;
const dockerSocket = join(dir, 'docker.sock');
/** A path where a socket should be, holding nobody: connecting to it fails. */
const deadSocket = join(dir, 'dead.sock');
writeFileSync(deadSocket, '');

beforeAll(async () => {
  aws = createServer((req, res) => {
    const target = String(req.headers['x-amz-target'] ?? '');
    req.resume();
    req.on('end', () => {
      if (target === 'AmazonSQS.GetQueueAttributes') {
        res.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' });
        res.end(JSON.stringify({ Attributes: { ApproximateNumberOfMessages: '3' } }));
      } else if (target === 'DynamoDB_20120810.Query') {
        // The agent's own partition: its header and its targets' items (none yet).
        res.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' });
        res.end('{"Items":[],"Count":0}');
      } else if (req.method === 'HEAD') {
        res.writeHead(404).end();
      } else {
        res.writeHead(400).end();
      }
    });
  });
  await new Promise<void>((resolve) => aws.listen(0, '127.0.0.1', resolve));
  awsUrl = `http://127.0.0.1:${(aws.address() as AddressInfo).port}`;
  docker = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(req.url?.includes('/containers/json') ? '[]' : '{}');
  });
  await new Promise<void>((resolve) => docker.listen(dockerSocket, resolve));
});

afterAll(() => {
  aws.close();
  docker.close();
  rmSync(dir, { recursive: true, force: true });
});

function makeConfig(overrides: Partial<AgentConfig> = {}, endpoint = awsUrl): AgentConfig {
  return {
    site: 'site-1',
    queueUrl: `${endpoint}/000000000000/stowage-site-1`,
    tableName: 'stowage',
    store: { kind: 's3', bucket: 'backups' },
    keys: { kind: 'file', path: keyFile },
    aws: {
      region: 'us-east-1',
      credentials: { accessKeyId: 'AKIDCHECK', secretAccessKey: 'secret' },
      endpoints: { sqs: endpoint, dynamodb: endpoint, s3: endpoint },
    },
    engines: {
      docker: { endpoint: dockerSocket },
      lxd: { endpoint: join(dir, 'no-lxd.sock') },
    },
    ...overrides,
  };
}

const byCheck = (results: CheckResult[]) => Object.fromEntries(results.map((r) => [r.check, r]));

describe('checkAgent', () => {
  it('finds the queue, the catalog, the store, the key and a reachable engine ready, and an engine that is not installed absent', async () => {
    const results = byCheck(await checkAgent(makeConfig()));

    expect(results.queue).toMatchObject({
      status: 'ok',
      detail: expect.stringMatching(/3 task message\(s\) waiting/),
    });
    expect(results.catalog).toMatchObject({
      status: 'ok',
      detail: expect.stringMatching(/agent site-1 has not reported yet/),
    });
    expect(results.store).toMatchObject({
      status: 'ok',
      detail: expect.stringMatching(/no repository yet/),
    });
    expect(results.key?.status).toBe('ok');
    expect(results['engine docker']).toMatchObject({
      status: 'ok',
      detail: expect.stringMatching(/answers: 0 Docker container/),
    });
    expect(results['engine lxd']).toMatchObject({
      status: 'absent',
      fix: expect.stringMatching(/--lxd-socket/),
    });
  });

  it('says what to fix when the AWS endpoints do not answer', async () => {
    const closed = await new Promise<string>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const url = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
        s.close(() => resolve(url));
      });
    });

    const results = byCheck(await checkAgent(makeConfig({}, closed)));

    for (const check of ['queue', 'catalog', 'store']) {
      expect(results[check]).toMatchObject({
        status: 'failed',
        fix: expect.stringMatching(/does not answer/),
      });
    }
    expect(results.queue?.fix).toMatch(/STOWAGE_QUEUE_URL/);
    expect(results.store?.fix).toMatch(/STOWAGE_BUCKET/);
  });

  it('says what to fix when an engine socket exists but nothing answers on it', async () => {
    const results = byCheck(
      await checkAgent(
        makeConfig({
          engines: { docker: { endpoint: deadSocket }, lxd: { endpoint: join(dir, 'x') } },
        }),
      ),
    );

    expect(results['engine docker']).toMatchObject({
      status: 'failed',
      fix: expect.stringMatching(/nothing answers on it: start the engine/),
    });
  });

  it('checks a directory store on this host', async () => {
    const results = byCheck(
      await checkAgent(makeConfig({ store: { kind: 'dir', path: join(dir, 'not-mounted') } })),
    );
    const mounted = byCheck(await checkAgent(makeConfig({ store: { kind: 'dir', path: dir } })));

    expect(results.store).toMatchObject({
      status: 'failed',
      fix: expect.stringMatching(/ReadWritePaths=/),
    });
    expect(mounted.store).toMatchObject({
      status: 'ok',
      detail: expect.stringMatching(/readable and writable; no repository yet/),
    });
  });

  it('accepts a missing key file for a new repository, and refuses it once the repository exists', async () => {
    const store = join(dir, 'store');
    mkdirSync(store);
    const config = makeConfig({
      store: { kind: 'dir', path: store },
      keys: { kind: 'file', path: join(dir, 'missing.key') },
    });

    const fresh = byCheck(await checkAgent(config));
    writeFileSync(join(store, 'config'), 'sealed config');
    const existing = byCheck(await checkAgent(config));

    expect(fresh.key).toMatchObject({
      status: 'ok',
      detail: expect.stringMatching(/first backup of the new repository makes it/),
    });
    expect(existing.key).toMatchObject({
      status: 'failed',
      fix: expect.stringMatching(
        /the repository exists, so its key must come from where it was made/,
      ),
    });
  });
});
