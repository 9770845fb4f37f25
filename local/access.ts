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
import type { IncomingMessage } from 'node:http';
import { dirname, join } from 'node:path';

/** The API token's file in the data directory. */
export const API_TOKEN_FILE = 'api-token';

export interface ApiAccess {
  token: string;
  /** Where the token is, for the 401's message. */
  tokenPath: string;
}

export const apiTokenPath = (dataDir: string) => join(dataDir, API_TOKEN_FILE);

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
