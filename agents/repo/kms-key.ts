/**
 * The data key under KMS envelope encryption (AWS): the store holds the data key encrypted by a
 * KMS key (keys/data-key.kms); an agent asks KMS to decrypt it once per process. The first agent
 * to use an empty repository asks KMS for a new data key and stores its encrypted form.
 * Principals without kms:Decrypt on the KMS key cannot read anything in the bucket.
 */
import { DecryptCommand, GenerateDataKeyCommand, type KMSClient } from '@aws-sdk/client-kms';
import type { KeyProvider } from './keys';
import type { ObjectStore } from '../store/store';
import { getBuffer, ObjectNotFound } from '../store/store';
import { KMS_DATA_KEY } from '../../kernel/object-layout';
import { DATA_KEY } from '../../kernel/resources';

/** Binds the encrypted data key to its use, so it cannot be decrypted for another purpose. */
const ENCRYPTION_CONTEXT = { ...DATA_KEY.encryptionContext };

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
    let wrapped: Buffer | undefined;
    try {
      wrapped = await getBuffer(this.store, KMS_DATA_KEY);
    } catch (err) {
      if (!(err instanceof ObjectNotFound)) throw err;
    }
    if (wrapped) {
      const out = await this.kms.send(
        new DecryptCommand({
          CiphertextBlob: wrapped,
          KeyId: this.keyId,
          EncryptionContext: ENCRYPTION_CONTEXT,
        }),
      );
      return Buffer.from(out.Plaintext!);
    }
    const created = await this.kms.send(
      new GenerateDataKeyCommand({
        KeyId: this.keyId,
        KeySpec: 'AES_256',
        EncryptionContext: ENCRYPTION_CONTEXT,
      }),
    );
    await this.store.put(KMS_DATA_KEY, Buffer.from(created.CiphertextBlob!));
    // Another agent may have raced us: whichever wrapped key is stored is the repository's.
    const stored = await getBuffer(this.store, KMS_DATA_KEY);
    if (!stored.equals(Buffer.from(created.CiphertextBlob!))) {
      this.cached = undefined;
      return this.load();
    }
    return Buffer.from(created.Plaintext!);
  }
}
