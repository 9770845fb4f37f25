/**
 * Whether a recovery point's manifest is stored: the check commit-point makes before it writes a
 * COMPLETED point. In AWS (and local mode's default) the repository is a bucket; local mode with
 * `--store DIR` keeps it in a directory on the same machine (STORE_DIR).
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';

export type ManifestCheck = (key: string) => Promise<boolean>;

export function s3ManifestCheck(
  bucket: string,
  client = new S3Client({ forcePathStyle: true }),
): ManifestCheck {
  return async (key) => {
    try {
      await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      return true;
    } catch (err) {
      if ((err as Error).name === 'NotFound') return false;
      throw err;
    }
  };
}

export function dirManifestCheck(root: string): ManifestCheck {
  return async (key) => {
    try {
      await access(join(root, key));
      return true;
    } catch {
      return false;
    }
  };
}
