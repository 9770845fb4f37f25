/**
 * What local mode's S3 server (s3rver) lacks of S3 and the product relies on: conditional writes
 * (below) and AbortMultipartUpload (abortUploads).
 *
 * S3's conditional writes for local mode's S3 server. s3rver ignores `If-None-Match: *` and
 * replaces the object; S3 refuses with 412 PreconditionFailed, and the product relies on that
 * (agents/store/s3-store.ts: every key is written once). This middleware, put in front of
 * s3rver's own, answers 412 to a PutObject or CompleteMultipartUpload that carries
 * `If-None-Match: *` for a key that exists, as S3 does.
 *
 * Unlike S3 the check and the write are two steps: two writes of one key at the same moment can
 * both pass the check (S3 answers one of them 409 ConditionalRequestConflict). The repository
 * never makes two (its keys are random or per point), and the directory store, which has link(2),
 * keeps even that promise.
 */
import { readFile, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import type S3rver from 's3rver';

interface KoaContext {
  req: IncomingMessage;
  method: string;
  path: string;
  query: Record<string, unknown>;
  get(header: string): string;
  set(header: string, value: string): void;
  status: number;
  body: unknown;
  type: string;
}

interface ObjectStoreOfS3rver {
  existsObject(bucket: string, key: string): Promise<boolean>;
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
}

type Middleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;

/** Puts the If-None-Match check first in `server`'s middleware (call before `run`). */
export function refuseOverwrites(server: S3rver): void {
  const { store } = first(server, async (ctx, next) => {
    const target = conditionalCreate(ctx);
    if (target && (await store.existsObject(target.bucket, target.key))) {
      // Node closes a connection whose request body was not read when the answer went out, and
      // a client still writing that body (it was told 100 Continue) then fails with EPIPE, not
      // with the 412: 1 put in ~300 of a 3 MiB body did. Read the body first; the connection stays.
      await drained(ctx.req);
      answerError(
        ctx,
        412,
        'PreconditionFailed',
        'At least one of the pre-conditions you specified did not hold',
        '<Condition>If-None-Match</Condition>',
      );
      return;
    }
    await next();
  });
}

/** Reads and drops what is left of `req`'s body; a client that went away ends it too. */
async function drained(req: IncomingMessage): Promise<void> {
  if (req.complete) return;
  req.resume();
  await finished(req).catch(() => undefined);
}

/** Puts `middleware` first in s3rver's (call before `run`); gives s3rver's store. */
function first(server: S3rver, middleware: Middleware): { store: ObjectStoreOfS3rver } {
  const koa = server as unknown as {
    middleware: Middleware[];
    context: { store: ObjectStoreOfS3rver };
  };
  koa.middleware.unshift(middleware);
  return { store: koa.context.store };
}

/** Answers an S3 error document. */
function answerError(
  ctx: KoaContext,
  status: number,
  code: string,
  message: string,
  extra = '',
): void {
  ctx.status = status;
  ctx.set('x-amz-error-code', code);
  ctx.type = 'application/xml';
  ctx.body =
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code>` +
    `<Message>${message}</Message>${extra}</Error>`;
}

/** The bucket and key a path-style request names, or undefined. */
function objectOf(ctx: KoaContext): { bucket: string; key: string } | undefined {
  const match = /^\/([^/]+)\/(.+)$/.exec(ctx.path);
  if (!match) return undefined;
  return { bucket: decodeURIComponent(match[1]!), key: decodeURIComponent(match[2]!) };
}

/** s3rver's upload ids: 16 random bytes in hex (controllers/object.js initiateMultipartUpload). */
const UPLOAD_ID = /^[0-9a-f]{32}$/;

/**
 * AbortMultipartUpload, which s3rver lacks (it answers 405 MethodNotAllowed): removes the
 * upload's parts and answers 204, or 404 NoSuchUpload for an id it does not hold for that key, as
 * S3 does. Without it lib-storage, which aborts an upload whose part failed, rejected with the
 * abort's 405 instead of the part's error, and the parts stayed on disk. Behind the server's
 * access-key gate (./access.ts), like every request.
 */
export function abortUploads(server: S3rver): void {
  const { store } = first(server, async (ctx, next) => {
    const object = objectOf(ctx);
    if (ctx.method !== 'DELETE' || !('uploadId' in ctx.query) || !object) return next();
    const { bucket, key } = object;
    const uploadId = String(ctx.query.uploadId);
    let dir: string | undefined;
    if (UPLOAD_ID.test(uploadId) && !bucket.includes('..') && !bucket.includes('\\')) {
      dir = join(store.getResourcePath(bucket, undefined, 'uploads'), uploadId);
      const owner = await readFile(join(dir, 'key'), 'utf8').catch(() => undefined);
      if (owner !== key) dir = undefined;
    }
    if (!dir) {
      answerError(ctx, 404, 'NoSuchUpload', 'The specified upload does not exist.');
      return;
    }
    await rm(dir, { recursive: true, force: true });
    ctx.status = 204;
    ctx.body = '';
  });
}

/** The bucket and key of a create-only write (path-style), or undefined for anything else. */
function conditionalCreate(ctx: KoaContext): { bucket: string; key: string } | undefined {
  if (ctx.get('if-none-match').trim() !== '*') return undefined;
  const putObject = ctx.method === 'PUT' && !('partNumber' in ctx.query);
  const completeUpload = ctx.method === 'POST' && 'uploadId' in ctx.query;
  if (!putObject && !completeUpload) return undefined;
  return objectOf(ctx);
}
