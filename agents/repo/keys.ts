/**
 * The repository's data key: 32 random bytes that seal every chunk, index, manifest and the
 * repository config. Nothing in the store can be read without it.
 *
 * - Local mode and directory targets: a key file, created on first use with mode 0600 in a
 *   0700 directory, never written to the store. Losing it loses the backups: the README says so.
 * - AWS: KMS envelope encryption (kms-key.ts): the store holds the key encrypted under a KMS key,
 *   and only principals allowed kms:Decrypt on that key can use the repository.
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  linkSync,
  mkdirSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname } from 'node:path';

export interface KeyProvider {
  /** The 32-byte data key; created on first use where the provider can. */
  dataKey(): Promise<Buffer>;
  /** Where the key comes from, for error messages (never the key itself). */
  describe(): string;
}

interface KeyFile {
  version: 1;
  algorithm: 'aes-256-gcm';
  key: string;
  createdAt: string;
}

export class LocalKeyFile implements KeyProvider {
  private cached?: Buffer;
  constructor(readonly path: string) {}

  describe(): string {
    return `key file ${this.path}`;
  }

  async dataKey(): Promise<Buffer> {
    if (this.cached) return this.cached;
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      text = this.create();
    }
    const mode = statSync(this.path).mode & 0o777;
    if (mode & 0o077) chmodSync(this.path, 0o600);
    let parsed: KeyFile;
    try {
      parsed = JSON.parse(text) as KeyFile;
    } catch {
      throw new Error(`${this.describe()} is not a Stowage key file (not JSON)`);
    }
    const key = Buffer.from(parsed.key ?? '', 'base64');
    if (parsed.version !== 1 || key.length !== 32) {
      throw new Error(`${this.describe()} is not a version 1 Stowage key file with a 256-bit key`);
    }
    this.cached = key;
    return key;
  }

  private create(): string {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    const file: KeyFile = {
      version: 1,
      algorithm: 'aes-256-gcm',
      key: randomBytes(32).toString('base64'),
      createdAt: new Date().toISOString(),
    };
    const text = `${JSON.stringify(file, null, 2)}\n`;
    // Written whole under a temporary name, then linked into place: a reader never sees a
    // half-written key, and link (unlike rename) fails instead of replacing another agent's key.
    const tmp = `${this.path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
    try {
      linkSync(tmp, this.path);
      return text;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readFileSync(this.path, 'utf8');
      throw err;
    } finally {
      unlinkSync(tmp);
    }
  }
}

/** A fixed key held in memory (tests, and callers that manage keys themselves). */
export class StaticKey implements KeyProvider {
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error('a data key is 32 bytes');
  }
  async dataKey(): Promise<Buffer> {
    return this.key;
  }
  describe(): string {
    return 'an in-memory key';
  }
}
