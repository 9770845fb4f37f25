import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiTokenPath, newApiToken, writePrivateFile } from '../../../local/access';
import { startApiServer } from '../../../local/api-server';

let server: Server;
let port: number;
let handled = 0;
const token = newApiToken();
const tokenPath = '/data/api-token';

function call(headers: Record<string, string>, method = 'GET', path = '/jobs') {
  return new Promise<{ status: number; body: { error?: string; message?: string } }>(
    (resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, method, headers }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      });
      req.on('error', reject);
      req.end(method === 'POST' ? '{}' : undefined);
    },
  );
}

beforeAll(async () => {
  server = await startApiServer(
    async () => {
      handled++;
      return { statusCode: 200, body: '{"ok":true}', headers: {} };
    },
    0,
    '127.0.0.1',
    { access: { token, tokenPath } },
  );
  port = (server.address() as AddressInfo).port;
});

afterAll(() => new Promise((r) => server.close(r)));

describe("local mode's API access", () => {
  const good = () => ({ host: `127.0.0.1:${port}`, authorization: `Bearer ${token}` });

  it('serves a request with the token, a loopback Host and no Origin or its own', async () => {
    expect((await call(good())).status).toBe(200);
    expect((await call({ ...good(), host: `localhost:${port}` })).status).toBe(200);
    expect((await call({ ...good(), origin: `http://127.0.0.1:${port}` })).status).toBe(200);
  });

  it('refuses without the token, or with another, saying where the token is', async () => {
    const before = handled;
    for (const authorization of [undefined, 'Bearer nope', `Basic ${token}`, `Bearer ${token}x`]) {
      const headers: Record<string, string> = { host: `127.0.0.1:${port}` };
      if (authorization) headers.authorization = authorization;
      const res = await call(headers, 'POST', '/backups');
      expect(res.status).toBe(401);
      expect(res.body.message).toContain(tokenPath);
    }
    expect(handled).toBe(before);
  });

  it('refuses another Host (DNS rebinding) and another Origin before the handler acts', async () => {
    const before = handled;
    expect((await call({ ...good(), host: 'attacker.example' })).status).toBe(421);
    expect((await call({ ...good(), host: `127.0.0.1:${port + 1}` })).status).toBe(421);
    for (const origin of ['http://attacker.example', 'null', `http://127.0.0.1:${port + 1}`]) {
      const res = await call({ ...good(), origin }, 'POST', '/restores');
      expect(res.status).toBe(403);
    }
    expect(handled).toBe(before);
  });

  it('writes the token readable by its owner only', () => {
    const dir = mkdtempSync(join(tmpdir(), 'stowage-token-'));
    try {
      const path = apiTokenPath(dir);
      writePrivateFile(path, `${token}\n`);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      expect(readFileSync(path, 'utf8').trim()).toBe(token);
      expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
