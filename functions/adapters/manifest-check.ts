/**
 * The store as commit-point reads it (functions/core/commit-check.ts): whether an object exists,
 * a small object's text, and the packs that have an index. In AWS (and local mode's default) the
 * repository is a bucket; local mode with `--store DIR` keeps it in a directory on the same
 * machine (STORE_DIR).
 */
import { access, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { INDEX_PREFIX, packIdOfIndexKey } from '../../kernel/object-layout';
import type { PointObjects } from '../core/commit-check';

const notFound = (err: unknown) => {
  const name = (err as Error).name;
  return name === 'NotFound' || name === 'NoSuchKey';
};

export function s3PointObjects(
  bucket: string,
  client = new S3Client({ forcePathStyle: true }),
): PointObjects {
  return {
    async exists(key) {
      try {
        await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
        return true;
      } catch (err) {
        if (notFound(err)) return false;
        throw err;
      }
    },
    async read(key) {
      try {
        const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return await out.Body!.transformToString('utf8');
      } catch (err) {
        if (notFound(err)) return undefined;
        throw err;
      }
    },
    async indexedPacks() {
      const packs = new Set<string>();
      let token: string | undefined;
      do {
        const page = await client.send(
          new ListObjectsV2Command({
            Bucket: bucket,
            Prefix: INDEX_PREFIX,
            ...(token ? { ContinuationToken: token } : {}),
          }),
        );
        for (const object of page.Contents ?? []) {
          if (object.Key) packs.add(packIdOfIndexKey(object.Key));
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return packs;
    },
  };
}

export function dirPointObjects(root: string): PointObjects {
  return {
    async exists(key) {
      try {
        await access(join(root, key));
        return true;
      } catch {
        return false;
      }
    },
    async read(key) {
      try {
        return await readFile(join(root, key), 'utf8');
      } catch {
        return undefined;
      }
    },
    async indexedPacks() {
      try {
        return new Set(await readdir(join(root, INDEX_PREFIX)));
      } catch {
        return new Set();
      }
    },
  };
}
