/**
 * Who may call local mode's HTTP API: what API Gateway's IAM auth does in AWS, done on loopback
 * before the handler sees a request (in this order):
 *
 * - `Host` must be a loopback name with the server's port (127.0.0.1, localhost, [::1]): a page
 *   that rebinds its own DNS name to 127.0.0.1 is answered 421, never served.
 * - `Origin`, when a browser sends one, must be the API's own origin (where the web console is
 *   served): a cross-site request, even a "simple" one that needs no CORS answer, is refused with
 *   403 before it acts.
 * - `Authorization: Bearer <token>`, the token `stowage start` writes alone on one line to
 *   `<dataDir>/api-token` (mode 0600, new on every start, so a restart revokes the old one);
 *   without it, 401 saying where the token is.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';

/** The API token's file in the data directory. */
export const API_TOKEN_FILE = 'api-token';

export interface ApiAccess {
  token: string;
  /** Where the token is, for the 401's message. */
  tokenPath: string;
}

export const apiTokenPath = (dataDir: string) => join(dataDir, API_TOKEN_FILE);

/**
 * A standalone agent's configuration and the emulators' credentials: `<dataDir>/agent-config.json`
 * (0600, rewritten on every start), which `stowage agent` reads instead of asking the network.
 */
export const AGENT_CONFIG_FILE = 'agent-config.json';

export const agentConfigPath = (dataDir: string) => join(dataDir, AGENT_CONFIG_FILE);

export interface LocalCredentials {
  accessKeyId: string;
  secretAccessKey: string;
}

/**
 * Fresh emulator credentials for one start (an AWS-shaped access key id, so every SDK accepts
 * it). The emulators check the access key id only (they verify no signature), so the id is the
 * secret: 16 random characters of base32.
 */
export function newLocalCredentials(): LocalCredentials {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let id = 'ASTW';
  for (const b of randomBytes(16)) id += alphabet[b % 32];
  return { accessKeyId: id, secretAccessKey: randomBytes(30).toString('base64url') };
}

/** The access key id a SigV4-signed request names (header or presigned query), if any. */
export function accessKeyOf(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  if (typeof header === 'string') {
    const m = /Credential=([^/,\s]+)\//.exec(header);
    if (m) return m[1];
  }
  const query = new URL(req.url ?? '/', 'http://localhost').searchParams.get('X-Amz-Credential');
  return query ? query.split('/')[0] : undefined;
}

/**
 * Puts a credential check in front of an HTTP server's own request handlers (dynalite, s3rver,
 * local-aws-sqs, the local Step Functions endpoint): a request signed with another access key,
 * or not signed, gets 403 and never reaches the emulator.
 */
export function requireAccessKey(server: Server, accessKeyId: string, service: string): void {
  const handlers = server.listeners('request') as Array<
    (req: IncomingMessage, res: ServerResponse) => void
  >;
  server.removeAllListeners('request');
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const given = accessKeyOf(req);
    if (given !== undefined && sameSecret(given, accessKeyId)) {
      for (const handler of handlers) handler.call(server, req, res);
      return;
    }
    req.resume();
    res.writeHead(403, { 'content-type': 'application/json', connection: 'close' });
    res.end(
      JSON.stringify({
        __type: 'UnrecognizedClientException',
        message: `the local ${service} accepts only the credentials of this Stowage start (agent-config.json in its data directory)`,
      }),
    );
  });
}

/** A fresh token: 32 random bytes, base64url (43 characters, safe in a URL fragment). */
export function newApiToken(): string {
  return randomBytes(32).toString('base64url');
}

/** Writes `text` readable by its owner only (0600, also when the file existed with a wider mode). */
export function writePrivateFile(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600);
}

/** Compares two secrets in time independent of where they differ. */
export function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

const LOOPBACK_NAMES = ['127.0.0.1', 'localhost', '[::1]'];

/**
 * Why the request may not be served, as [status, error, message], or undefined when it may.
 * Reads only the request's headers (nothing of its body).
 */
export function refusal(
  req: IncomingMessage,
  port: number,
  access: ApiAccess,
): [number, string, string] | undefined {
  const host = (req.headers.host ?? '').toLowerCase();
  if (!LOOPBACK_NAMES.some((name) => host === `${name}:${port}`)) {
    return [
      421,
      'MisdirectedRequest',
      `this API answers only on loopback names (127.0.0.1:${port}, localhost:${port}), not Host "${req.headers.host ?? ''}"`,
    ];
  }
  const origin = req.headers.origin;
  if (origin !== undefined && !LOOPBACK_NAMES.some((n) => origin === `http://${n}:${port}`)) {
    return [
      403,
      'CrossOriginRefused',
      `requests from ${origin} are refused: only the API's own origin (http://127.0.0.1:${port}, where the web console is) may call it`,
    ];
  }
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  if (!m || !sameSecret(m[1]!, access.token)) {
    return [
      401,
      'Unauthorized',
      `${m ? 'wrong' : 'no'} API token: send "Authorization: Bearer <token>" with the token \`stowage start\` wrote to ${access.tokenPath} (readable by the user who started it); the CLI reads it there by itself (STOWAGE_DATA_DIR, default ~/.stowage) or from STOWAGE_TOKEN, and the console: link stowage start prints carries it`,
    ];
  }
  return undefined;
}
