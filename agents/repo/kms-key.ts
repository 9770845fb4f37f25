/**
 * The data key under KMS envelope encryption (AWS): the store holds the data key encrypted by a
 * KMS key, twice (keys/data-key.kms and keys/data-key-copy.kms, the same ciphertext), and an agent
 * asks KMS to decrypt it once per process. Principals the KMS key policy does not name cannot
 * read anything in the bucket.
 *
 * - The first agent of an empty repository asks KMS for a new data key and stores its wrapped
 *   form, first copy then second. Stores only create (store.ts), so of two agents racing here
 *   exactly one key wins; the other finds it and uses it.
 * - Either copy unwraps the key: a copy that is missing or that KMS cannot decrypt (damaged) is
 *   skipped, and a missing copy is written again from the one that worked.
 * - Two copies that unwrap to different keys mean one was planted (a copy is only ever written
 *   with the other's bytes): that fails with an IntegrityError rather than guess.
 */
import { DecryptCommand, GenerateDataKeyCommand, type KMSClient } from '@aws-sdk/client-kms';
import type { KeyProvider } from './keys';
import type { ObjectStore } from '../store/store';
import { getBuffer, ObjectExists, ObjectNotFound } from '../store/store';
import { KMS_DATA_KEY, KMS_DATA_KEY_COPY } from '../../kernel/object-layout';
import { DATA_KEY } from '../../kernel/resources';
import { IntegrityError } from '../../kernel/errors';

/** Binds the encrypted data key to its use, so it cannot be decrypted for another purpose. */
const ENCRYPTION_CONTEXT = { ...DATA_KEY.encryptionContext };

/** The copies, in the order they are tried and written. */
const COPIES = [KMS_DATA_KEY, KMS_DATA_KEY_COPY] as const;

/** KMS's answer to a ciphertext it cannot decrypt (damaged, or not made by this key). */
const UNREADABLE = new Set(['InvalidCiphertextException', 'IncorrectKeyException']);

export class KmsKeyProvider implements KeyProvider {
  private cached?: Promise<Buffer>;

  constructor(
    private readonly kms: KMSClient,
    private readonly keyId: string,
    private readonly store: ObjectStore,
  ) {}

  describe(): string {
    return `the data key under KMS key ${this.keyId}`;
  }

  dataKey(): Promise<Buffer> {
    this.cached ??= this.load().catch((err: unknown) => {
      this.cached = undefined;
      throw err;
    });
    return this.cached;
  }

  private async load(): Promise<Buffer> {
    const wrapped = await Promise.all(COPIES.map((key) => this.read(key)));
    if (wrapped.every((w) => w === undefined)) return this.create();

    let found: { plain: Buffer; wrapped: Buffer } | undefined;
    let unreadable: unknown;
    for (const w of wrapped) {
      if (w === undefined) continue;
      try {
        found = { plain: await this.decrypt(w), wrapped: w };
        break;
      } catch (err) {
        if (!UNREADABLE.has((err as Error).name)) throw err;
        unreadable ??= err;
      }
    }
    if (!found) {
      throw new IntegrityError(
        `no stored copy of the wrapped data key (${COPIES.join(', ')}) can be decrypted by KMS key ${this.keyId}: they are damaged or were not made by this key`,
        { cause: unreadable },
      );
    }
    for (const [i, w] of wrapped.entries()) {
      if (w === undefined) {
        await this.write(COPIES[i]!, found.wrapped);
      } else if (!w.equals(found.wrapped) && !(await this.sameKey(w, found.plain))) {
        throw new IntegrityError(
          `${COPIES[0]} and ${COPIES[1]} unwrap to different data keys: one of them was not written by Stowage. The one that opens the repository's config is the real one; remove the other from the bucket (an administrator's task: agents cannot delete)`,
        );
      }
    }
    return found.plain;
  }

  private async create(): Promise<Buffer> {
    const created = await this.kms.send(
      new GenerateDataKeyCommand({
        KeyId: this.keyId,
        KeySpec: 'AES_256',
        EncryptionContext: ENCRYPTION_CONTEXT,
      }),
    );
    const wrapped = Buffer.from(created.CiphertextBlob!);
    try {
      await this.store.put(COPIES[0], wrapped);
    } catch (err) {
      // Another agent created the repository's key first: that one is the key.
      if (err instanceof ObjectExists) return this.load();
      throw err;
    }
    await this.write(COPIES[1], wrapped);
    return Buffer.from(created.Plaintext!);
  }

  /** Writes a copy that was missing; one written meanwhile by another agent is checked next load. */
  private async write(key: string, wrapped: Buffer): Promise<void> {
    try {
      await this.store.put(key, wrapped);
    } catch (err) {
      if (!(err instanceof ObjectExists)) throw err;
    }
  }

  private async sameKey(wrapped: Buffer, plain: Buffer): Promise<boolean> {
    try {
      return (await this.decrypt(wrapped)).equals(plain);
    } catch (err) {
      // A damaged second copy is no threat; the working one stands.
      if (UNREADABLE.has((err as Error).name)) return true;
      throw err;
    }
  }

  private async decrypt(wrapped: Buffer): Promise<Buffer> {
    const out = await this.kms.send(
      new DecryptCommand({
        CiphertextBlob: wrapped,
        KeyId: this.keyId,
        EncryptionContext: ENCRYPTION_CONTEXT,
      }),
    );
    return Buffer.from(out.Plaintext!);
  }

  private async read(key: string): Promise<Buffer | undefined> {
    try {
      return await getBuffer(this.store, key);
    } catch (err) {
      if (err instanceof ObjectNotFound) return undefined;
      throw err;
    }
  }
}
