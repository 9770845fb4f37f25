/**
 * Who may talk to local mode. Three secrets, each in its own file under the data directory,
 * created by `stowage start` with mode 0600 (readable by the user who started it, and root):
 *
 *   <dataDir>/api-token          the HTTP API's bearer secret, alone on one line (the CLI's)
 *   <dataDir>/agent-config.json  what a standalone `stowage agent` needs: endpoints, table,
 *                                bucket, store, key file and the emulators' credentials
 *   (in memory, and inside agent-config.json) the emulators' access key and secret
 *
 * All are new on every start, so a restart revokes whatever was handed out before. The emulators
 * (DynamoDB, S3, SQS, Step Functions on the ports after the API's) answer only requests whose
 * SigV4 credential names this start's access key id: a random 20-character id that only the
 * control plane, its agent and agent-config.json hold. They do not recompute the signature (that
 * needs the whole body before the emulator reads it); on loopback only root can see the traffic,
 * and root can read the files anyway.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';

/** The API's secret: `<dataDir>/api-token`. */
export const API_SECRET_FILE = 'api-token';
/** A standalone agent's configuration and credentials: `<dataDir>/agent-config.json`. */
export const AGENT_CONFIG_FILE = 'agent-config.json';

export interface LocalCredentials {
  accessKeyId: string;
  secretAccessKey: string;
}

/** Fresh emulator credentials (an AWS-shaped access key id, so every SDK accepts it). */
export function newLocalCredentials(): LocalCredentials {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const bytes = randomBytes(16);
  let id = 'ASTW';
  for (const b of bytes) id += alphabet[b % 32];
  return { accessKeyId: id, secretAccessKey: randomBytes(30).toString('base64url') };
}

/** A fresh API secret: 32 random bytes, base64url (43 characters). */
export function newApiSecret(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * Writes `text` to `path` readable by its owner only: created 0600 (and chmod'ed, should the
 * file exist with a wider mode), its directory created 0700 if missing.
 */
export function writePrivateFile(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600);
}

export function apiSecretPath(dataDir: string): string {
  return join(dataDir, API_SECRET_FILE);
}

/** Compares two secrets in time independent of where they differ. */
export function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The access key id a SigV4-signed request names (header or presigned query), if any. */
export function accessKeyOf(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  if (typeof header === 'string') {
    const m = /Credential=([^/,\s]+)\//.exec(header);
    if (m) return m[1];
  }
  const query = new URL(req.url ?? '/', 'http://local').searchParams.get('X-Amz-Credential');
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
        message: `the local ${service} accepts only the credentials of this Stowage's control plane and agents (agent-config.json in its data directory)`,
      }),
    );
  });
}
