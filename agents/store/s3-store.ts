/**
 * ObjectStore on S3 (AWS, and local mode's S3-compatible server, s3rver).
 *
 * - `put` of a stream goes up as a lib-storage multipart Upload of PART_SIZE parts, QUEUE_SIZE in
 *   flight, so memory stays near (QUEUE_SIZE + 1) × PART_SIZE whatever the stream's size; a
 *   stream shorter than one part becomes one PutObject. A Buffer (a pack: 16 MiB and one sealed
 *   chunk) up to SINGLE_PUT_BYTES is always one PutObject: one request instead of four, which the
 *   caller's retry (retry.ts) can resend whole. As a multipart upload, a part's transient failure
 *   made lib-storage abort the upload, and where the abort failed too (s3rver had no
 *   AbortMultipartUpload: local/s3-conditional-writes.ts adds it) it rejected with the abort's
 *   MethodNotAllowed, a permanent error that failed the backup (test/e2e/store-faults.test.ts in
 *   CI). S3 only shows an object once its
 *   upload completes, which gives the port's "whole or not at all" (s3rver does not: it writes
 *   in place, see test/contract/s3-store.test.ts).
 * - Every put is a conditional write, `If-None-Match: *` (on PutObject, and on
 *   CompleteMultipartUpload for a multipart upload): S3 refuses to replace an object (412
 *   PreconditionFailed → ObjectExists), and the bucket policy of the AWS stack refuses agents' writes
 *   without the header. Of two racing writes S3 may answer the loser 409
 *   ConditionalRequestConflict, which retry.ts retries into a definite answer. s3rver ignores the
 *   header; local mode's S3 server adds the check in front of it (local/s3-conditional-writes.ts).
 * - Request/response checksums are only computed when an operation requires one: with a stream
 *   body the default wraps the object in aws-chunked framing that s3rver stores verbatim.
 * - A ranged `get` asks for `bytes=a-b` and then trims the answer to exactly the range, because
 *   servers may send more than asked: s3rver answers `bytes=0-0` with the whole object, and an
 *   HTTP server may ignore Range altogether (200 with every byte). A range that runs past the end
 *   is refused here (S3 would serve the shorter tail).
 * - `list` and `deletePrefix` page with ListObjectsV2 (1,000 keys a page). The continuation token
 *   names a key, not an offset, so deleting a page before fetching the next skips nothing.
 */
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type GetObjectCommandOutput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { Readable } from 'node:stream';
import {
  ObjectExists,
  ObjectNotFound,
  RangeNotSatisfiable,
  type ByteRange,
  type ObjectInfo,
  type ObjectStore,
} from './store';

/** 16 MiB × S3's 10,000-part limit caps one object at 156 GiB. */
const PART_SIZE = 16 * 1024 * 1024;
/** A Buffer up to this size is one PutObject (S3 takes up to 5 GiB in one). */
const SINGLE_PUT_BYTES = 128 * 1024 * 1024;
const QUEUE_SIZE = 4;
/** DeleteObjects takes at most 1,000 keys per request. */
const DELETE_BATCH = 1000;

export function s3ClientConfig(extra: S3ClientConfig = {}): S3ClientConfig {
  return {
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...extra,
  };
}

export class S3Store implements ObjectStore {
  constructor(
    private readonly bucket: string,
    private readonly client: S3Client = new S3Client(s3ClientConfig()),
  ) {}

  async put(key: string, body: Readable | Buffer): Promise<void> {
    // One request, which the SDK can resend on its own (a Buffer can be replayed).
    if (Buffer.isBuffer(body) && body.length <= SINGLE_PUT_BYTES) {
      try {
        await this.client.send(
          new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, IfNoneMatch: '*' }),
        );
      } catch (err) {
        throw refused(key, err);
      }
      return;
    }
    // When the body fails, lib-storage aborts the multipart upload and, if the abort fails too,
    // rejects with the abort's error: keep the body's.
    let bodyError: unknown;
    if (!Buffer.isBuffer(body)) body.on('error', (err) => (bodyError ??= err));
    const upload = new Upload({
      client: this.client,
      // lib-storage passes IfNoneMatch on to CompleteMultipartUpload (or to the PutObject of a
      // body shorter than one part); S3 checks it when the object would appear.
      params: { Bucket: this.bucket, Key: key, Body: body, IfNoneMatch: '*' },
      partSize: PART_SIZE,
      queueSize: QUEUE_SIZE,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } catch (err) {
      // A body left half read would stall whoever writes into it.
      if (!Buffer.isBuffer(body)) body.destroy();
      throw bodyError ?? refused(key, err);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    if (range && !isWellFormed(range)) throw new RangeNotSatisfiable(key, range);
    // HTTP cannot ask for zero bytes: check the offset against the size instead.
    if (range?.length === 0) {
      if (range.offset > (await this.size(key))) throw new RangeNotSatisfiable(key, range);
      return Readable.from([], { objectMode: false });
    }
    let out: GetObjectCommandOutput;
    try {
      out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Range: range && `bytes=${range.offset}-${range.offset + range.length - 1}`,
        }),
      );
    } catch (err) {
      if (isMissingKey(err)) throw new ObjectNotFound(key);
      if (range && (nameOf(err) === 'InvalidRange' || statusOf(err) === 416))
        throw new RangeNotSatisfiable(key, range);
      throw err;
    }
    const body = out.Body as Readable;
    return range ? exactly(key, range, out, body) : body;
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return true;
    } catch (err) {
      if (isMissingKey(err)) return false;
      throw err;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      const out = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const object of out.Contents ?? []) yield { key: object.Key!, size: object.Size ?? 0 };
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  /** S3 answers 204 whether or not the key was there. */
  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  async deletePrefix(prefix: string): Promise<void> {
    let batch: string[] = [];
    for await (const { key } of this.list(prefix)) {
      batch.push(key);
      if (batch.length === DELETE_BATCH) {
        await this.deleteBatch(prefix, batch);
        batch = [];
      }
    }
    if (batch.length > 0) await this.deleteBatch(prefix, batch);
  }

  /**
   * DeleteObjects requires a body checksum: the SDK sends one even with WHEN_REQUIRED (CRC32;
   * S3 accepts it in place of Content-MD5, s3rver checks neither). It answers 200 with per-key
   * errors, which would otherwise pass silently.
   */
  private async deleteBatch(prefix: string, keys: string[]): Promise<void> {
    const out = await this.client.send(
      new DeleteObjectsCommand({
        Bucket: this.bucket,
        Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true },
      }),
    );
    const failed = out.Errors ?? [];
    if (failed.length > 0) {
      const first = failed[0]!;
      throw new Error(
        `could not delete ${failed.length} objects under ${prefix} (${first.Key}: ${first.Code})`,
        // The per-key code (SlowDown, InternalError, AccessDenied) decides whether to retry.
        { cause: { name: first.Code, message: first.Message } },
      );
    }
  }

  private async size(key: string): Promise<number> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return out.ContentLength ?? 0;
    } catch (err) {
      if (isMissingKey(err)) throw new ObjectNotFound(key);
      throw err;
    }
  }
}

/** A write S3 refused because the key exists (412) becomes ObjectExists; the rest as they are. */
function refused(key: string, err: unknown): unknown {
  return nameOf(err) === 'PreconditionFailed' || statusOf(err) === 412
    ? new ObjectExists(key)
    : err;
}

function isWellFormed({ offset, length }: ByteRange): boolean {
  return Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0;
}

/** Trims a (partial) GET answer to exactly the asked range, or refuses a range past the end. */
function exactly(
  key: string,
  range: ByteRange,
  out: GetObjectCommandOutput,
  body: Readable,
): Readable {
  // `bytes first-last/total`; without it the server sent the whole object.
  const served = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(out.ContentRange ?? '');
  const first = served ? Number(served[1]) : 0;
  const total = served && served[3] !== '*' ? Number(served[3]) : undefined;
  const count = served ? Number(served[2]) - first + 1 : (out.ContentLength ?? 0);
  const skip = range.offset - first;
  if (
    (total !== undefined && range.offset + range.length > total) ||
    skip < 0 ||
    skip + range.length > count
  ) {
    body.destroy();
    throw new RangeNotSatisfiable(key, range);
  }
  if (skip === 0 && count === range.length) return body;
  return Readable.from(slice(body, skip, range.length), { objectMode: false });
}

async function* slice(body: Readable, skip: number, take: number): AsyncGenerator<Buffer> {
  // Leaving the loop early destroys the body, which frees the connection.
  for await (const data of body) {
    let chunk = data as Buffer;
    if (skip >= chunk.length) {
      skip -= chunk.length;
      continue;
    }
    chunk = chunk.subarray(skip, skip + take);
    skip = 0;
    take -= chunk.length;
    yield chunk;
    if (take === 0) break;
  }
}

function nameOf(err: unknown): string | undefined {
  return (err as { name?: string } | undefined)?.name;
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata
    ?.httpStatusCode;
}

/** GET says NoSuchKey; HEAD has no body, so only NotFound / 404. A missing bucket is not this. */
function isMissingKey(err: unknown): boolean {
  const name = nameOf(err);
  if (name === 'NoSuchBucket') return false;
  return name === 'NoSuchKey' || name === 'NotFound' || statusOf(err) === 404;
}
