import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiTokenPath, newApiToken, writePrivateFile } from '../../../local/access';
import { startApiServer } from '../../../local/api-server';

let server: Server;
let port: number;
/** The body timeout of this test's server: short, so a body that never comes is seen quickly. */
const BODY_TIMEOUT_MS = 400;
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
    { access: { token, tokenPath }, bodyTimeoutMs: BODY_TIMEOUT_MS },
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

/**
 * Writes `head` (and `body`, if any) on a raw connection and reads until the server closes it:
 * the answer's status and JSON. It resolves only once the server has closed the connection.
 */
function raw(head: string, body?: string) {
  return new Promise<{
    status: number;
    json: { error?: string; message?: string };
  }>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString()));
    socket.on('error', reject);
    socket.on('close', () => {
      const [, status] = /^HTTP\/1\.1 (\d{3})/.exec(text) ?? [];
      const json = text.slice(text.indexOf('\r\n\r\n') + 4);
      resolve({
        status: Number(status ?? 0),
        json: json ? (JSON.parse(json) as { error?: string }) : {},
      });
    });
    socket.write(head.replace(/\n/g, '\r\n') + '\r\n');
    if (body !== undefined) socket.write(body);
    // The test never ends its side: only the server can close the connection.
  });
}

describe("local mode's API bodies", () => {
  const headers = () =>
    `Host: 127.0.0.1:${port}\nAuthorization: Bearer ${token}\nContent-Type: application/json\n`;

  it('refuses a body that is not JSON with 415 naming the content type, before the handler', async () => {
    const before = handled;
    for (const type of [
      'text/plain',
      'application/x-www-form-urlencoded',
      'application/json; charset=utf-16',
    ]) {
      const res = await call({ ...goodHeaders(), 'content-type': type }, 'POST', '/backups');
      expect(res.status).toBe(415);
      expect(res.body.error).toBe('UnsupportedMediaType');
      expect(res.body.message).toContain(type);
    }
    const none = await call(goodHeaders(), 'POST', '/backups');
    expect(none.status).toBe(415);
    expect(none.body.message).toContain('application/json');
    expect(handled).toBe(before);
    const json = await call(
      { ...goodHeaders(), 'content-type': 'application/json; charset=UTF-8' },
      'POST',
      '/backups',
    );
    expect(json.status).toBe(200);
  });

  it('refuses a huge declared Content-Length with 413 and closes without reading the body', async () => {
    const before = handled;
    const res = await raw(
      `POST /backups HTTP/1.1\n${headers()}Content-Length: 10737418240\n`,
      '{"target":',
    );

    expect(res.status).toBe(413);
    expect(res.json).toMatchObject({ error: 'PayloadTooLarge' });
    expect(res.json.message).toContain('10737418240');
    // Answered and closed by the server (raw() resolves only on close): it never waited for
    // the 10 GiB, nor for the body timeout, which would have answered 408.
    expect(handled).toBe(before);
  });

  it('answers 408 and closes when a declared body never arrives, or a chunked one never ends', async () => {
    const before = handled;
    const absent = await raw(`POST /backups HTTP/1.1\n${headers()}Content-Length: 100\n`, '{"ta');
    const endless = await raw(
      `POST /backups HTTP/1.1\n${headers()}Transfer-Encoding: chunked\n`,
      '5\r\n{"tar\r\n',
    );

    for (const res of [absent, endless]) {
      expect(res.status).toBe(408);
      expect(res.json).toMatchObject({ error: 'RequestTimeout' });
    }
    expect(handled).toBe(before);
    // And the server still serves.
    expect((await call(goodHeaders())).status).toBe(200);
  });

  it('refuses a chunked body with 413 as soon as it passes 1 MiB', async () => {
    const chunk = 'x'.repeat(64 * 1024);
    const body = Array.from(
      { length: 20 },
      () => `${chunk.length.toString(16)}\r\n${chunk}\r\n`,
    ).join('');
    const res = await raw(`POST /backups HTTP/1.1\n${headers()}Transfer-Encoding: chunked\n`, body);

    expect(res.status).toBe(413);
    expect(res.json).toMatchObject({ error: 'PayloadTooLarge' });
  });
});

function goodHeaders(): Record<string, string> {
  return { host: `127.0.0.1:${port}`, authorization: `Bearer ${token}` };
}
