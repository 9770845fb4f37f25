/**
 * The web console's static files (console/, built by Vite into dist/console/), served by local
 * mode at the API's own address so the console's origin is the API's origin: its calls are
 * same-origin and need no CORS, and the API's Origin rule (only its own origin) admits them.
 *
 * `/config.json` tells the console which mode it runs in: here always `{"mode":"local"}` (the
 * API token sign-in); in AWS the stack deploys one with `"mode":"cloud"` and its Cognito ids.
 *
 * Only two shapes of path are files: `/` (index.html) and `/assets/<name>` where <name> is one
 * flat file name of letters, digits, `_`, `-` and `.` not starting with a dot. Everything else
 * goes to the API, so no path can reach outside dist/console/ (no `..`, no `/`, no
 * percent-escape decoding, no symlink followed out: a file is opened only if its real path is
 * inside the directory). Every page carries a strict Content-Security-Policy: scripts, styles
 * and calls from this origin only, no inline code, no frames.
 */
import { readFileSync, realpathSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * From local/ (run through tsx) and from dist/stowage.mjs (the bundle) alike, `../dist/console/`
 * is the build's output in this checkout.
 */
export const CONSOLE_DIR = fileURLToPath(new URL('../dist/console/', import.meta.url));

export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
};

const ASSET = /^\/assets\/([A-Za-z0-9_-][A-Za-z0-9_.-]*)$/;

/** The console's mode file (console/src/cloud/config.ts reads it). */
export const CONFIG_PATH = '/config.json';
export const LOCAL_CONFIG = { mode: 'local' } as const;

/** Whether `path` (a request's pathname, not decoded) names a console file. */
export function isConsolePath(path: string): boolean {
  return path === '/' || path === '/index.html' || path === CONFIG_PATH || ASSET.test(path);
}

/** Whether the console was built (its index.html exists). */
export function consoleBuilt(dir = CONSOLE_DIR): boolean {
  try {
    return statSync(join(dir, 'index.html')).isFile();
  } catch {
    return false;
  }
}

const LOOPBACK_NAMES = ['127.0.0.1', 'localhost', '[::1]'];

/**
 * The console's file server for the API's HTTP server: it answers a GET or HEAD of a console
 * path and returns true; it returns false (and writes nothing) for any other request, which is
 * then the API's. A console path asked for under a name other than a loopback one with this
 * server's port (a DNS-rebinding page) is answered 421, as the API answers it.
 */
export function consoleFiles(dir = CONSOLE_DIR) {
  return (req: IncomingMessage, res: ServerResponse): boolean => serveConsoleFile(req, res, dir);
}

export function serveConsoleFile(
  req: IncomingMessage,
  res: ServerResponse,
  dir = CONSOLE_DIR,
): boolean {
  const pathname = (req.url ?? '').split('?')[0]!;
  if ((req.method !== 'GET' && req.method !== 'HEAD') || !isConsolePath(pathname)) return false;
  const host = (req.headers.host ?? '').toLowerCase();
  const port = req.socket.localPort;
  if (!LOOPBACK_NAMES.some((name) => host === `${name}:${port}`)) {
    res.writeHead(421, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
    res.end(
      `the console answers only on loopback names (127.0.0.1:${port}), not "${req.headers.host ?? ''}"\n`,
    );
    return true;
  }
  const headers: Record<string, string> = {
    'content-security-policy': CONTENT_SECURITY_POLICY,
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    'cross-origin-opener-policy': 'same-origin',
    'cross-origin-resource-policy': 'same-origin',
  };
  if (pathname === CONFIG_PATH) {
    const doc = JSON.stringify(LOCAL_CONFIG);
    res.writeHead(200, {
      ...headers,
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(doc)),
      'cache-control': 'no-store',
    });
    res.end(req.method === 'HEAD' ? undefined : doc);
    return true;
  }
  const asset = ASSET.exec(pathname)?.[1];
  const name = asset ? join('assets', asset) : 'index.html';
  let body: Buffer;
  try {
    const root = realpathSync(dir);
    const file = realpathSync(join(root, name));
    if (!file.startsWith(root + sep) || !statSync(file).isFile()) throw new Error('not a file');
    body = readFileSync(file);
  } catch {
    const missing = asset
      ? 'no such console file'
      : 'the web console is not built: run `npm run build` (or `npm run build:console`) in the Stowage checkout';
    res.writeHead(404, { ...headers, 'content-type': 'text/plain; charset=utf-8' });
    res.end(req.method === 'HEAD' ? undefined : `${missing}\n`);
    return true;
  }
  res.writeHead(200, {
    ...headers,
    'content-type': TYPES[extname(name)] ?? 'application/octet-stream',
    'content-length': String(body.length),
    // Asset names carry a content hash; index.html names the current ones, so it is never cached.
    'cache-control': asset ? 'public, max-age=31536000, immutable' : 'no-store',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
  return true;
}
