/**
 * Local mode's doors (issue 12): `stowage start` writes a fresh API token (0600) and an agent
 * configuration with this start's emulator credentials (0600); the API serves only requests that
 * carry the token, name a loopback host, come from its own origin and send bodies up to 1 MiB;
 * the emulators serve only this start's credentials; the API serves no configuration, and a
 * standalone agent joins from agent-config.json; a user without the token gets nothing done.
 */
import { spawnSync } from 'node:child_process';
import { ListTablesCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { promises as fs } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const BIN = new URL('../../cli/bin.mjs', import.meta.url).pathname;
let dataDir: string;
let stowage: StowageProcess;

/** A raw HTTP request (fetch would not let a test set Host), answering status and body. */
function raw(
  port: number,
  options: {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
  },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path ?? '/jobs',
        headers: options.headers,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString() }),
        );
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

beforeAll(async () => {
  dataDir = tempDir('stowage-access-');
  await fs.chmod(dataDir, 0o755);
  stowage = new StowageProcess(dataDir, ['--no-agent']);
  await stowage.start();
}, 90_000);

afterAll(async () => {
  await stowage?.stop();
  removeDir(dataDir);
});

describe('local mode access', () => {
  it('writes the API token alone on one line and the agent configuration, both 0600', async () => {
    const token = await fs.readFile(join(dataDir, 'api-token'), 'utf8');
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}\n$/);
    for (const file of ['api-token', 'agent-config.json']) {
      expect(((await fs.stat(join(dataDir, file))).mode & 0o777).toString(8), file).toBe('600');
    }
    const config = JSON.parse(await fs.readFile(join(dataDir, 'agent-config.json'), 'utf8')) as {
      credentials: { accessKeyId: string };
    };
    expect(config.credentials.accessKeyId).not.toBe('S3RVER');
    expect(await fs.readFile(join(dataDir, 'agent-config.json'), 'utf8')).not.toContain(
      token.trim(),
    );
  });

  it('answers 401 without the token, or with a wrong one, saying where the token is', async () => {
    const host = `127.0.0.1:${stowage.port}`;
    const attempts: Array<Record<string, string>> = [
      { host },
      { host, authorization: 'Bearer wrong' },
    ];
    for (const headers of attempts) {
      const res = await raw(stowage.port, { headers });
      expect(res.status).toBe(401);
      expect(JSON.parse(res.body).message).toContain(join(dataDir, 'api-token'));
    }
    expect((await raw(stowage.port, { headers: { host, ...stowage.apiHeaders() } })).status).toBe(
      200,
    );
  });

  it('refuses rebinding hosts, foreign origins, bodies over 1 MiB and bodies that are not JSON', async () => {
    const auth = stowage.apiHeaders();
    const host = `127.0.0.1:${stowage.port}`;
    const cases: Array<[number, Parameters<typeof raw>[1]]> = [
      [421, { headers: { ...auth, host: `evil.example:${stowage.port}` } }],
      [421, { headers: { ...auth, host: '127.0.0.1:1' } }],
      [
        403,
        {
          method: 'POST',
          path: '/rollbacks',
          headers: { ...auth, host, origin: 'https://evil.example', 'content-type': 'text/plain' },
          body: '{"target":"docker:web"}',
        },
      ],
      [
        413,
        {
          method: 'POST',
          path: '/backups',
          headers: {
            ...auth,
            host,
            'transfer-encoding': 'chunked',
            'content-type': 'application/json',
          },
          body: Buffer.alloc((1 << 20) + 1, 0x20),
        },
      ],
      [
        415,
        {
          method: 'POST',
          path: '/backups',
          headers: { ...auth, host, 'content-type': 'text/plain' },
          body: '{"target":"docker:web"}',
        },
      ],
    ];
    for (const [status, options] of cases) {
      expect((await raw(stowage.port, options)).status, JSON.stringify(options.headers)).toBe(
        status,
      );
    }
    expect(
      (await raw(stowage.port, { headers: { ...auth, host: `localhost:${stowage.port}` } })).status,
    ).toBe(200);
    expect(
      (
        await raw(stowage.port, {
          headers: { ...auth, host, origin: `http://127.0.0.1:${stowage.port}` },
        })
      ).status,
    ).toBe(200);
  });

  it('lets the emulators answer only the credentials of this start', async () => {
    for (const offset of [1, 2, 3, 4]) {
      const res = await raw(stowage.port + offset, {
        method: 'POST',
        path: '/',
        headers: {
          host: `127.0.0.1:${stowage.port + offset}`,
          authorization:
            'AWS4-HMAC-SHA256 Credential=S3RVER/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00',
          'content-type': 'application/x-amz-json-1.0',
        },
        body: '{}',
      });
      expect(res.status, `port +${offset}`).toBe(403);
    }
  });

  it("answers this start's credentials from agent-config.json, and serves no configuration over HTTP", async () => {
    const config = JSON.parse(await fs.readFile(join(dataDir, 'agent-config.json'), 'utf8')) as {
      region: string;
      credentials: { accessKeyId: string; secretAccessKey: string };
      endpoints: { dynamodb: string };
    };
    const ddb = new DynamoDBClient({
      region: config.region,
      credentials: config.credentials,
      endpoint: config.endpoints.dynamodb,
    });
    const tables = await ddb.send(new ListTablesCommand({}));
    ddb.destroy();
    expect(tables.TableNames?.length).toBeGreaterThan(0);
    const host = `127.0.0.1:${stowage.port}`;
    const served = await raw(stowage.port, {
      path: '/local/config?site=x',
      headers: { ...stowage.apiHeaders(), host },
    });
    expect(served.status).toBe(404);
    expect(served.body).not.toContain(config.credentials.accessKeyId);
  });

  it('runs a standalone agent from agent-config.json only, and refuses to start without it', async () => {
    const missing = spawnSync(
      process.execPath,
      [BIN, 'agent', '--site', 'access-none', '--config', join(dataDir, 'no-such.json')],
      { env: stowage.userEnv, encoding: 'utf8', timeout: 30_000 },
    );
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain('cannot read the local agent configuration');

    const agent = await stowage.startAgent('access-second', '--paths', dataDir);
    try {
      const listed = await eventually(async () => {
        const agents = await stowage.cliAsync('agents');
        return agents.code === 0 && agents.stdout.includes('access-second') ? agents : undefined;
      }, 'the standalone agent listed by stowage agents');
      expect(listed.stdout).toContain('access-second');
    } finally {
      await stowage.stopAgent(agent);
    }
  }, 90_000);

  it('leaves a user who cannot read the token with 401, and the CLI finds it through STOWAGE_TOKEN', () => {
    const asNobody = spawnSync(process.execPath, [BIN, '--json', 'jobs'], {
      env: { ...stowage.userEnv, HOME: '/nonexistent' },
      uid: 65534,
      gid: 65534,
      encoding: 'utf8',
    });
    expect(asNobody.status, asNobody.stderr).toBe(2);
    expect(asNobody.stderr).toContain('no API token');
    expect(asNobody.stderr).toContain(join(dataDir, 'api-token'));

    const withEnv = spawnSync(process.execPath, [BIN, '--json', 'jobs'], {
      env: {
        ...stowage.userEnv,
        STOWAGE_DATA_DIR: '/nonexistent',
        STOWAGE_TOKEN: stowage.apiHeaders().authorization!.slice('Bearer '.length),
      },
      encoding: 'utf8',
    });
    expect(withEnv.status, withEnv.stderr).toBe(0);
    expect(JSON.parse(withEnv.stdout)).toEqual([]);
  });
});
