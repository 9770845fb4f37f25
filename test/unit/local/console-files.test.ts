import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONTENT_SECURITY_POLICY, consoleFiles, isConsolePath } from '../../../local/console-files';

let dir: string;
let server: Server;
let port: number;

/** A raw request (no URL normalisation by a client), answered by the console or "api". */
function get(path: string, host = `127.0.0.1:${port}`, method = 'GET') {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>(
    (resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, method, headers: { host } }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (p: Buffer) => parts.push(p));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(parts).toString(),
          }),
        );
      });
      req.on('error', reject);
      req.end();
    },
  );
}

beforeAll(async () => {
  const root = mkdtempSync(join(tmpdir(), 'stowage-console-files-'));
  dir = join(root, 'console');
  mkdirSync(join(dir, 'assets'), { recursive: true });
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>Stowage</title>');
  writeFileSync(join(dir, 'assets', 'index-abc.js'), 'console.log(1)');
  writeFileSync(join(root, 'secret.txt'), 'do not serve');
  symlinkSync(join(root, 'secret.txt'), join(dir, 'assets', 'leak.js'));
  const files = consoleFiles(dir);
  server = createServer((req, res) => {
    if (files(req, res)) return;
    res.writeHead(418);
    res.end('api');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(join(dir, '..'), { recursive: true, force: true });
});

describe('the console file server', () => {
  it('serves index.html and hashed assets under a strict CSP', async () => {
    const index = await get('/');
    expect(index.status).toBe(200);
    expect(index.body).toContain('<title>Stowage</title>');
    expect(index.headers['content-security-policy']).toBe(CONTENT_SECURITY_POLICY);
    expect(CONTENT_SECURITY_POLICY).toContain("script-src 'self'");
    expect(CONTENT_SECURITY_POLICY).not.toContain('unsafe');
    expect(index.headers['cache-control']).toBe('no-store');
    expect(index.headers['x-content-type-options']).toBe('nosniff');
    const js = await get('/assets/index-abc.js');
    expect(js.status).toBe(200);
    expect(js.headers['content-type']).toMatch(/^text\/javascript/);
    expect(js.headers['cache-control']).toMatch(/immutable/);
  });

  it('tells the console it runs in local mode, even when the build holds a config.json', async () => {
    writeFileSync(join(dir, 'config.json'), '{"mode":"cloud"}');
    const config = await get('/config.json');
    expect(config.status).toBe(200);
    expect(JSON.parse(config.body)).toEqual({ mode: 'local' });
    expect(config.headers['content-type']).toBe('application/json');
    expect(config.headers['cache-control']).toBe('no-store');
    expect((await get('/config.json', 'evil.example:80')).status).toBe(421);
  });

  it('leaves every other path, and every other method, to the API', async () => {
    for (const path of ['/jobs', '/points/rp-1', '/assets/', '/assets/a/b.js', '/index.htm']) {
      expect((await get(path)).status).toBe(418);
    }
    expect((await get('/', undefined, 'POST')).status).toBe(418);
  });

  it('never serves a file outside its directory', async () => {
    const attempts = [
      '/assets/../index.html',
      '/assets/..%2fsecret.txt',
      '/assets/%2e%2e%2fsecret.txt',
      '/assets/..',
      '/assets/.hidden',
      '/../secret.txt',
      '/assets//etc/passwd',
      '/assets/..\\secret.txt',
    ];
    for (const path of attempts) {
      const res = await get(path);
      expect(res.body, path).not.toContain('do not serve');
      expect([404, 418], path).toContain(res.status);
    }
    // A symlink inside the directory that points out of it is not followed.
    const leak = await get('/assets/leak.js');
    expect(leak.status).toBe(404);
    expect(leak.body).not.toContain('do not serve');
  });

  it('answers a name that is not loopback (DNS rebinding) with 421', async () => {
    expect((await get('/', 'evil.example:80')).status).toBe(421);
    expect((await get('/', `localhost:${port}`)).status).toBe(200);
  });

  it('says how to build the console when it is not built', async () => {
    const empty = consoleFiles(join(dir, 'nowhere'));
    const s = createServer((req, res) => void empty(req, res));
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    const p = (s.address() as AddressInfo).port;
    const text = await new Promise<string>((resolve) => {
      request({ host: '127.0.0.1', port: p, path: '/' }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve(`${res.statusCode} ${body}`));
      }).end();
    });
    await new Promise((r) => s.close(r));
    expect(text).toMatch(/^404 .*npm run build/);
  });

  it('recognises console paths by shape only', () => {
    expect(isConsolePath('/')).toBe(true);
    expect(isConsolePath('/config.json')).toBe(true);
    expect(isConsolePath('/assets/index-B-Xg6p48.js')).toBe(true);
    expect(isConsolePath('/assets/..')).toBe(false);
    expect(isConsolePath('/assets/.x')).toBe(false);
    expect(isConsolePath('/jobs')).toBe(false);
  });
});
