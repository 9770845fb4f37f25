/**
 * Store faults (issue #11): local mode's control plane with its agent talking to the S3 server
 * through a fault-injecting proxy that answers 5 % of requests with a 5xx and resets 1 % of
 * connections (seeded: STOWAGE_FAULT_SEED=S replays a run; the seed is printed). Backups and
 * restores of path: files complete through it, and every restore holds the original bytes.
 *
 * No engine is used (the agent's docker and lxd endpoints point nowhere): only the path driver.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../../agents/worker/main';
import type { ControlPlane } from '../../local/control-plane';
import { LOCAL_AWS } from '../../local/emulators';
import { DEFAULT_SITE, siteQueueName } from '../../kernel/resources';
import { testLog, eventually, removeDir, startTestPlane, tempDir } from '../fixtures/local-plane';
import { seededRandom } from '../fixtures/data';

const SEED = Number(process.env.STOWAGE_FAULT_SEED ?? Math.floor(Math.random() * 2 ** 31));
const FIVE_XX = 0.05;
const RESETS = 0.01;

const figures = { requests: 0, errors5xx: 0, resets: 0 };

/** Forwards to `upstream` (headers as sent: SigV4 signs the Host), or fails the request. */
function faultProxy(upstream: URL, random: () => number): http.Server {
  return http.createServer((req, res) => {
    figures.requests++;
    const roll = random();
    if (roll < RESETS) {
      figures.resets++;
      req.socket.destroy();
      return;
    }
    if (roll < RESETS + FIVE_XX) {
      figures.errors5xx++;
      req.resume();
      req.on('end', () => {
        const code = roll < RESETS + FIVE_XX / 2 ? 500 : 503;
        res.writeHead(code, { 'content-type': 'application/xml' });
        res.end(
          `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code === 503 ? 'SlowDown' : 'InternalError'}</Code><Message>injected fault</Message></Error>`,
        );
      });
      return;
    }
    const out = http.request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    out.on('error', () => req.socket.destroy());
    req.pipe(out);
  });
}

let dataDir: string;
let plane: ControlPlane;
let proxy: http.Server;
let agent: RunningAgent;
let files: string;

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${plane.apiUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${plane.apiToken}`, 'content-type': 'application/json' },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const json = (await res.json()) as T;
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function finished(jobId: string): Promise<{ status: string; error?: unknown }> {
  return eventually(
    async () => {
      const job = await api<{ status: string; error?: unknown }>('GET', `/jobs/${jobId}`);
      return ['PENDING', 'RUNNING'].includes(job.status) ? undefined : job;
    },
    `job ${jobId} to end`,
    240_000,
  );
}

const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

beforeAll(async () => {
  process.stdout.write(`store faults: seed ${SEED} (STOWAGE_FAULT_SEED=${SEED} replays it)\n`);
  dataDir = tempDir('stowage-store-faults-');
  files = join(dataDir, 'files');
  mkdirSync(files, { recursive: true });
  plane = await startTestPlane({ dataDir: join(dataDir, 'plane'), agent: false, s3Store: true });
  proxy = faultProxy(new URL(plane.endpoints.s3), seededRandom(SEED));
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  agent = await startAgent(
    {
      site: DEFAULT_SITE,
      queueUrl: `${plane.localConfig.queueUrlPrefix}${siteQueueName(DEFAULT_SITE)}`,
      tableName: plane.localConfig.tableName,
      store: plane.localConfig.store,
      keys: { kind: 'file', path: plane.localConfig.keyFile },
      aws: {
        region: LOCAL_AWS.region,
        credentials: { ...plane.credentials },
        endpoints: { ...plane.endpoints, s3: proxyUrl },
      },
      engines: {
        docker: { endpoint: join(dataDir, 'no-docker.sock') },
        lxd: { endpoint: join(dataDir, 'no-lxd.sock') },
      },
      holdsDir: join(dataDir, 'holds'),
      parentsDir: join(dataDir, 'parents'),
      waitTimeSeconds: 1,
    },
    testLog,
  );
}, 120_000);

afterAll(async () => {
  await agent?.stop();
  await plane?.close();
  await new Promise((r) => proxy?.close(r));
  process.stdout.write(
    `store faults figures: seed ${SEED}, requests ${figures.requests}, 5xx ${figures.errors5xx}, resets ${figures.resets}\n`,
  );
  if (dataDir) removeDir(dataDir);
});

describe('with the S3 server failing 5 % of requests and resetting 1 % of connections', () => {
  it('backs up and restores files of several packs, each restore byte for byte', async () => {
    const original = join(files, 'disk.img');
    // 40 MiB: several packs (16 MiB each) and hundreds of requests through the proxy.
    writeFileSync(original, randomBytes(40 * 1024 * 1024));
    const points: Array<{ point: string; sha: string }> = [];
    for (let round = 0; round < 4; round++) {
      if (round > 0) {
        // An incremental: a changed middle, a grown end.
        const bytes = readFileSync(original);
        randomBytes(1024 * 1024).copy(bytes, 10 * 1024 * 1024);
        writeFileSync(original, Buffer.concat([bytes, randomBytes(3 * 1024 * 1024)]));
      }
      const job = await api<{ jobId: string; recoveryPointId: string }>('POST', '/backups', {
        target: `path:${original}`,
      });
      const ended = await finished(job.jobId);
      expect(ended, JSON.stringify(ended)).toMatchObject({ status: 'SUCCEEDED' });
      points.push({ point: job.recoveryPointId, sha: sha(original) });
    }
    for (const [i, { point, sha: expected }] of points.entries()) {
      const dest = join(files, `restored-${i}.img`);
      const job = await api<{ jobId: string }>('POST', '/restores', {
        recoveryPointId: point,
        name: dest,
      });
      const ended = await finished(job.jobId);
      expect(ended, JSON.stringify(ended)).toMatchObject({ status: 'SUCCEEDED' });
      expect(sha(dest)).toBe(expected);
    }
    expect(figures.errors5xx + figures.resets).toBeGreaterThan(0);
  });
});
