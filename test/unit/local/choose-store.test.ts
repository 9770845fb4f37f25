/**
 * Local mode's repository (local/control-plane.ts chooseStore): a directory store in the data
 * directory unless told otherwise, the local S3 server when asked, and a data directory whose
 * repository is already in the S3 server keeps it there.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { chooseStore } from '../../../local/control-plane';
import { removeDir, tempDir } from '../../fixtures/local-plane';

describe('local mode chooses its store', () => {
  let dataDir: string;
  afterEach(() => removeDir(dataDir));

  it('keeps the repository in <data-dir>/store by default, or in the directory given', () => {
    dataDir = tempDir();
    expect(chooseStore({ dataDir }, 'bucket')).toEqual({
      kind: 'dir',
      path: join(dataDir, 'store'),
    });
    expect(chooseStore({ dataDir, storeDir: join(dataDir, 'x') }, 'bucket')).toEqual({
      kind: 'dir',
      path: join(dataDir, 'x'),
    });
  });

  it('uses the local S3 server when asked, and for a data directory whose repository is there', () => {
    dataDir = tempDir();
    expect(chooseStore({ dataDir, s3Store: true }, 'bucket')).toEqual({
      kind: 's3',
      bucket: 'bucket',
    });
    // An empty bucket (the server made it at start) holds no repository.
    mkdirSync(join(dataDir, 's3', 'bucket'), { recursive: true });
    expect(chooseStore({ dataDir }, 'bucket').kind).toBe('dir');
    writeFileSync(join(dataDir, 's3', 'bucket', 'config._S3rver_object'), 'x');
    expect(chooseStore({ dataDir }, 'bucket')).toEqual({ kind: 's3', bucket: 'bucket' });
    // Once the directory store exists, it is the repository.
    mkdirSync(join(dataDir, 'store'));
    expect(chooseStore({ dataDir }, 'bucket').kind).toBe('dir');
  });
});
