import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DecryptCommand, GenerateDataKeyCommand, type KMSClient } from '@aws-sdk/client-kms';
import { KmsKeyProvider } from '../../../../agents/repo/kms-key';
import { KMS_DATA_KEY } from '../../../../kernel/object-layout';
import { DATA_KEY } from '../../../../kernel/resources';
import { MemoryStore } from '../../../fixtures/memory-store';

const KEY_ID = 'arn:aws:kms:eu-west-1:111122223333:key/test';

/** KMS as far as envelope encryption needs it: "wrapping" XORs with a secret only KMS knows. */
function makeFakeKms(options: { denyDecrypt?: boolean } = {}) {
  const secret = randomBytes(32);
  const calls: Array<{ command: string; input: Record<string, unknown> }> = [];
  const wrap = (b: Uint8Array) => Buffer.from(b.map((x, i) => x ^ secret[i % 32]!));
  const client = {
    async send(command: GenerateDataKeyCommand | DecryptCommand) {
      const input = command.input as Record<string, unknown>;
      calls.push({ command: command.constructor.name, input });
      if (JSON.stringify(input.EncryptionContext) !== JSON.stringify(DATA_KEY.encryptionContext)) {
        throw Object.assign(new Error('context mismatch'), { name: 'InvalidCiphertextException' });
      }
      if (command instanceof GenerateDataKeyCommand) {
        const plain = randomBytes(32);
        return { Plaintext: plain, CiphertextBlob: wrap(plain), KeyId: KEY_ID };
      }
      if (options.denyDecrypt) {
        throw Object.assign(new Error('not allowed kms:Decrypt'), {
          name: 'AccessDeniedException',
        });
      }
      return { Plaintext: wrap(input.CiphertextBlob as Uint8Array), KeyId: KEY_ID };
    },
  };
  return { client: client as unknown as KMSClient, calls };
}

describe('KmsKeyProvider', () => {
  it('creates the data key on first use and stores only its KMS-wrapped form', async () => {
    const store = new MemoryStore();
    const kms = makeFakeKms();

    const key = await new KmsKeyProvider(kms.client, KEY_ID, store).dataKey();

    expect(key).toHaveLength(32);
    expect(store.keys()).toEqual([KMS_DATA_KEY]);
    expect(store.raw(KMS_DATA_KEY)!.equals(key)).toBe(false);
    expect(kms.calls.map((c) => c.command)).toEqual(['GenerateDataKeyCommand']);
    expect(kms.calls[0]!.input).toMatchObject({ KeyId: KEY_ID, KeySpec: 'AES_256' });
  });

  it('gives every later agent the same key by decrypting the stored one under the context', async () => {
    const store = new MemoryStore();
    const kms = makeFakeKms();
    const first = await new KmsKeyProvider(kms.client, KEY_ID, store).dataKey();

    const second = await new KmsKeyProvider(kms.client, KEY_ID, store).dataKey();

    expect(second.equals(first)).toBe(true);
    const decrypt = kms.calls.find((c) => c.command === 'DecryptCommand')!;
    expect(decrypt.input).toMatchObject({
      KeyId: KEY_ID,
      EncryptionContext: DATA_KEY.encryptionContext,
    });
  });

  it('asks KMS once per process, whatever the number of callers', async () => {
    const store = new MemoryStore();
    const kms = makeFakeKms();
    await new KmsKeyProvider(kms.client, KEY_ID, store).dataKey();
    const provider = new KmsKeyProvider(kms.client, KEY_ID, store);
    kms.calls.length = 0;

    await Promise.all([provider.dataKey(), provider.dataKey(), provider.dataKey()]);

    expect(kms.calls).toHaveLength(1);
  });

  it('fails with the KMS error when the principal may not decrypt, and tries again next time', async () => {
    const store = new MemoryStore();
    await new KmsKeyProvider(makeFakeKms().client, KEY_ID, store).dataKey();
    const provider = new KmsKeyProvider(makeFakeKms({ denyDecrypt: true }).client, KEY_ID, store);

    await expect(provider.dataKey()).rejects.toMatchObject({ name: 'AccessDeniedException' });
    await expect(provider.dataKey()).rejects.toMatchObject({ name: 'AccessDeniedException' });
    expect(provider.describe()).toContain(KEY_ID);
  });
});
