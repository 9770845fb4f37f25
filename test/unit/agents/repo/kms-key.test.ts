import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DecryptCommand, GenerateDataKeyCommand, type KMSClient } from '@aws-sdk/client-kms';
import { KmsKeyProvider } from '../../../../agents/repo/kms-key';
import { KMS_DATA_KEY, KMS_DATA_KEY_COPY } from '../../../../kernel/object-layout';
import { DATA_KEY } from '../../../../kernel/resources';
import { MemoryStore } from '../../../fixtures/memory-store';

const KEY_ID = 'arn:aws:kms:eu-west-1:111122223333:key/test';

/** KMS as far as envelope encryption needs it: "wrapping" XORs with a secret only KMS knows. */
function makeFakeKms(options: { denyDecrypt?: boolean; secret?: Buffer } = {}) {
  const secret = options.secret ?? randomBytes(32);
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
      if ((input.CiphertextBlob as Uint8Array).length !== 32) {
        throw Object.assign(new Error('bad ciphertext'), { name: 'InvalidCiphertextException' });
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
    expect(store.keys()).toEqual([KMS_DATA_KEY_COPY, KMS_DATA_KEY].sort());
    expect(store.raw(KMS_DATA_KEY)!.equals(key)).toBe(false);
    expect(store.raw(KMS_DATA_KEY_COPY)!.equals(store.raw(KMS_DATA_KEY)!)).toBe(true);
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

  it.each([
    ['the first', KMS_DATA_KEY, KMS_DATA_KEY_COPY],
    ['the second', KMS_DATA_KEY_COPY, KMS_DATA_KEY],
  ])(
    'unwraps the key from the other copy when %s is lost, and writes the lost one again',
    async (_label, lost, kept) => {
      const original = new MemoryStore();
      const kms = makeFakeKms();
      const key = await new KmsKeyProvider(kms.client, KEY_ID, original).dataKey();
      const store = new MemoryStore();
      await store.put(kept, original.raw(kept)!);

      const again = await new KmsKeyProvider(kms.client, KEY_ID, store).dataKey();

      expect(again.equals(key)).toBe(true);
      expect(store.raw(lost)!.equals(original.raw(kept)!)).toBe(true);
    },
  );

  it('skips a copy KMS cannot decrypt (damaged) and uses the other', async () => {
    const original = new MemoryStore();
    const kms = makeFakeKms();
    const key = await new KmsKeyProvider(kms.client, KEY_ID, original).dataKey();
    const store = new MemoryStore();
    await store.put(KMS_DATA_KEY, Buffer.from('damaged'));
    await store.put(KMS_DATA_KEY_COPY, original.raw(KMS_DATA_KEY_COPY)!);

    expect((await new KmsKeyProvider(kms.client, KEY_ID, store).dataKey()).equals(key)).toBe(true);
  });

  it('refuses two copies that unwrap to different keys (one was planted)', async () => {
    const secret = randomBytes(32);
    const real = new MemoryStore();
    await new KmsKeyProvider(makeFakeKms({ secret }).client, KEY_ID, real).dataKey();
    const planted = new MemoryStore();
    await new KmsKeyProvider(makeFakeKms({ secret }).client, KEY_ID, planted).dataKey();
    const store = new MemoryStore();
    await store.put(KMS_DATA_KEY, real.raw(KMS_DATA_KEY)!);
    await store.put(KMS_DATA_KEY_COPY, planted.raw(KMS_DATA_KEY)!);

    await expect(
      new KmsKeyProvider(makeFakeKms({ secret }).client, KEY_ID, store).dataKey(),
    ).rejects.toMatchObject({ name: 'IntegrityError', message: /different data keys/ });
  });

  it('gives two agents that create the key at once the same one: the store keeps the first', async () => {
    const store = new MemoryStore();
    const kms = makeFakeKms();

    const [a, b] = await Promise.all([
      new KmsKeyProvider(kms.client, KEY_ID, store).dataKey(),
      new KmsKeyProvider(kms.client, KEY_ID, store).dataKey(),
    ]);

    expect(a.equals(b)).toBe(true);
    expect(store.raw(KMS_DATA_KEY_COPY)!.equals(store.raw(KMS_DATA_KEY)!)).toBe(true);
  });
});
