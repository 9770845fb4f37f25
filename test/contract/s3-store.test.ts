/**
 * S3Store passes the ObjectStore contract against s3rver (local mode's S3), started the way
 * local mode starts it (a child process with --openssl-legacy-provider), each case in a fresh
 * bucket.
 *
 * s3rver writes an object in place (createWriteStream on its final path), so two racing puts of
 * one key can interleave and a reader can see a put in progress. S3 swaps whole objects; the
 * adapter cannot fix the server, so that one case is not run against it (see serverGaps).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, DeleteBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3ClientConfig, S3Store } from '../../agents/store/s3-store';
import { isTransient } from '../../agents/store/retry';
import { LOCAL_AWS, startEmulators, type Emulators } from '../../local/emulators';
import { describeObjectStoreContract } from './store-suite';

let dataDir: string;
let emulators: Emulators;
let client: S3Client;
let buckets = 0;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'stowage-s3-store-'));
  emulators = await startEmulators(dataDir, { dynamodb: 0, s3: 0, sqs: 0 });
  client = new S3Client(s3ClientConfig({ ...LOCAL_AWS, endpoint: emulators.endpoints.s3 }));
});

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
      racingPuts: 's3rver writes objects in place, not atomically (S3 swaps whole objects)',
    },
  },
);

describe('S3Store errors', () => {
  it('labels a refused connection transient and a missing bucket permanent', async () => {
    const nowhere = new S3Client(
      s3ClientConfig({ ...LOCAL_AWS, endpoint: 'http://127.0.0.1:9', maxAttempts: 1 }),
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
