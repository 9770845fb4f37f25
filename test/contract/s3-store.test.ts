/**
 * S3Store passes the ObjectStore contract against s3rver (local mode's S3), started the way
 * local mode starts it (a child process with --openssl-legacy-provider), each case in a fresh
 * bucket.
 *
 * s3rver writes an object in place (createWriteStream on its final path), so two racing puts of
 * one key can interleave and a reader can see a put in progress. S3 swaps whole objects; the
 * adapter cannot fix the server, so that one case is not run against it (see serverGaps).
 *
 * s3rver also ignores `If-None-Match: *`; local mode's S3 server puts S3's check in front of it
 * (local/s3-conditional-writes.ts), and so does this test, so the create-only cases run against
 * the same server local mode uses. Below, the adapter's own side of conditional writes is held
 * against a recording client: the header on every create, 412 read as ObjectExists.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3ClientConfig, S3Store } from '../../agents/store/s3-store';
import { isTransient } from '../../agents/store/retry';
import { LOCAL_AWS, startEmulators, type Emulators } from '../../local/emulators';
import { newLocalCredentials } from '../../local/access';
import { describeObjectStoreContract } from './store-suite';

let dataDir: string;
let emulators: Emulators;
let client: S3Client;
let buckets = 0;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'stowage-s3-store-'));
  emulators = await startEmulators(dataDir, { dynamodb: 0, s3: 0, sqs: 0 }, newLocalCredentials());
  client = localS3();
});

/** A client of the local S3 server with this file's credentials. */
function localS3(extra: S3ClientConfig = {}): S3Client {
  return new S3Client(
    s3ClientConfig({
      ...LOCAL_AWS,
      credentials: emulators.credentials,
      endpoint: emulators.endpoints.s3,
      ...extra,
    }),
  );
}

afterAll(async () => {
  client?.destroy();
  await emulators?.close();
  await rm(dataDir, { recursive: true, force: true });
});

describeObjectStoreContract(
  'S3Store on s3rver',
  async () => {
    const bucket = `contract-${++buckets}`;
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    const store = new S3Store(bucket, client);
    return {
      store,
      async cleanup() {
        await store.deletePrefix('');
        await client.send(new DeleteBucketCommand({ Bucket: bucket }));
      },
    };
  },
  {
    serverGaps: {
      racingPuts:
        's3rver writes objects in place, and its If-None-Match check (ours) is not atomic with the write',
    },
  },
);

describe('S3Store errors', () => {
  it('labels a refused connection transient and a missing bucket permanent', async () => {
    const nowhere = new S3Client(
      s3ClientConfig({
        ...LOCAL_AWS,
        credentials: emulators.credentials,
        endpoint: 'http://127.0.0.1:9',
        maxAttempts: 1,
      }),
    );
    const refused = await new S3Store('bucket', nowhere).get('k').catch((err: unknown) => err);
    nowhere.destroy();
    const missing = await new S3Store('no-such-bucket', client).get('k').catch((err) => err);

    expect(refused).toMatchObject({ code: 'ECONNREFUSED' });
    expect(isTransient(refused)).toBe(true);
    expect(missing).toMatchObject({ name: 'NoSuchBucket' });
    expect(isTransient(missing)).toBe(false);
  });
});

describe('S3Store conditional writes', () => {
  /** The inputs of the commands `s3` sends, by command name, as they leave for the server. */
  function recording(s3: S3Client): Map<string, Array<Record<string, unknown>>> {
    const seen = new Map<string, Array<Record<string, unknown>>>();
    s3.middlewareStack.add(
      (next, context) => async (args) => {
        const list = seen.get(context.commandName!) ?? [];
        list.push(args.input as Record<string, unknown>);
        seen.set(context.commandName!, list);
        return next(args);
      },
      { step: 'initialize', name: 'recordInputs' },
    );
    return seen;
  }

  it('asks S3 to create, never to replace: If-None-Match * on PutObject and on completing a multipart upload', async () => {
    const s3 = localS3();
    const bucket = `conditional-${++buckets}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const seen = recording(s3);
    const store = new S3Store(bucket, s3);

    await store.put('small', Buffer.from('one request'));
    await store.put('large', Readable.from([randomBytes(20 * 1024 * 1024)]));
    // A pack-sized Buffer (over one part) is one request too: the caller can resend it whole.
    await store.put('pack', randomBytes(20 * 1024 * 1024));

    expect(seen.get('PutObjectCommand')).toEqual([
      expect.objectContaining({ Key: 'small', IfNoneMatch: '*' }),
      expect.objectContaining({ Key: 'pack', IfNoneMatch: '*' }),
    ]);
    expect(seen.get('CompleteMultipartUploadCommand')).toEqual([
      expect.objectContaining({ Key: 'large', IfNoneMatch: '*' }),
    ]);
    await store.deletePrefix('');
    await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
    s3.destroy();
  });
});

describe('the local S3 server', () => {
  it('refuses a create-only put over an existing key only once it has read the body', async () => {
    // Answered before the body was read, Node closed the connection under a client still writing
    // it (after 100 Continue), which then failed with EPIPE instead of the 412 (1 put in ~300).
    const s3 = localS3({ maxAttempts: 1 });
    const events: string[] = [];
    s3.middlewareStack.add(
      (next) => async (args) => {
        const out = await next(args);
        events.push(`answer ${(out.response as { statusCode: number }).statusCode}`);
        return out;
      },
      // Below the deserializer, which throws on an error status: the raw answer.
      { step: 'deserialize', name: 'rawAnswers', priority: 'low' },
    );
    const bucket = `refuse-${++buckets}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'k', Body: 'first' }));
    events.length = 0;
    // 3 MiB (over the size from which the SDK asks for 100 Continue), the last 2 MiB 300 ms late.
    async function* slowly() {
      yield randomBytes(1024 * 1024);
      await new Promise((resolve) => setTimeout(resolve, 300));
      yield randomBytes(2 * 1024 * 1024);
      events.push('body sent');
    }

    await expect(
      s3.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: 'k',
          Body: Readable.from(slowly()),
          ContentLength: 3 * 1024 * 1024,
          IfNoneMatch: '*',
        }),
      ),
    ).rejects.toMatchObject({ name: 'PreconditionFailed' });

    expect(events).toEqual(['body sent', 'answer 412']);
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'k' }));
    await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
    s3.destroy();
  });

  it('aborts a multipart upload as S3 does (s3rver alone answers 405), and then knows it no more', async () => {
    const s3 = localS3({ maxAttempts: 1 });
    const bucket = `abort-${++buckets}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const { UploadId } = await s3.send(
      new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'k' }),
    );
    await s3.send(
      new UploadPartCommand({
        Bucket: bucket,
        Key: 'k',
        UploadId,
        PartNumber: 1,
        Body: randomBytes(1024),
      }),
    );
    // Another key's abort of this upload, and an id that is no upload id: both unknown.
    await expect(
      s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: 'other', UploadId })),
    ).rejects.toMatchObject({ name: 'NoSuchUpload' });
    await expect(
      s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: 'k', UploadId: '../x' })),
    ).rejects.toMatchObject({ name: 'NoSuchUpload' });
    await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: 'k', UploadId }));
    await expect(
      s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: 'k', UploadId })),
    ).rejects.toMatchObject({ name: 'NoSuchUpload' });
    await expect(
      s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: bucket,
          Key: 'k',
          UploadId,
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: 'x' }] },
        }),
      ),
    ).rejects.toBeDefined();
    await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
    s3.destroy();
  });
});
