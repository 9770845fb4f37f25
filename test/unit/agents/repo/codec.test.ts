import { describe, expect, it } from 'vitest';
import {
  BLOB_VERSION,
  FRAME_HEAD,
  idBytes,
  openBlob,
  openJson,
  SEAL_OVERHEAD,
  sealBlob,
  sealInPlace,
  sealJson,
  sha256Hex,
} from '../../../../agents/repo/codec';
import { IntegrityError } from '../../../../kernel/errors';
import { MiB, prngBytes } from '../../../fixtures/data';

const KEY = prngBytes(32, 0x6b6579);
const OTHER_KEY = prngBytes(32, 0x6f74686572);
const FLAG_ZSTD = 1;
/** version | flags | nonce (12) | body | tag (16): where each part of a sealed blob starts. */
const NONCE_AT = 2;
const BODY_AT = 14;
const TAG_LENGTH = 16;

/** A blob sealed the way the repository seals chunks: bound to the plain bytes' id. */
function sealChunk(plain: Buffer, key = KEY) {
  const aad = idBytes(sha256Hex(plain));
  return { sealed: sealBlob(plain, key, aad), aad };
}

function flipped(blob: Buffer, at: number, mask = 0x01): Buffer {
  const copy = Buffer.from(blob);
  copy[at]! ^= mask;
  return copy;
}

describe('sealBlob and openBlob', () => {
  it.each([
    ['an empty blob', Buffer.alloc(0)],
    ['a 1-byte blob', Buffer.from([0x2a])],
    ['1 MiB of random bytes', prngBytes(MiB, 1)],
    ['1 MiB of zeros', Buffer.alloc(MiB)],
  ])('gives back exactly the sealed bytes for %s', (_name, plain) => {
    const { sealed, aad } = sealChunk(plain);

    const opened = openBlob(sealed, KEY, aad);

    expect(opened.equals(plain)).toBe(true);
    expect(sealed[0]).toBe(BLOB_VERSION);
  });

  it('compresses 1 MiB of zeros to a small fraction of its size and flags it', () => {
    const { sealed } = sealChunk(Buffer.alloc(MiB));

    expect(sealed.length).toBeLessThan(MiB / 100);
    expect(sealed[1]! & FLAG_ZSTD).toBe(FLAG_ZSTD);
  });

  it.each([1, 100, 64 * 1024, MiB])(
    'stores %i random bytes uncompressed, with only the seal overhead added',
    (size) => {
      const { sealed } = sealChunk(prngBytes(size, size));

      expect(sealed[1]! & FLAG_ZSTD).toBe(0);
      expect(sealed.length).toBe(size + SEAL_OVERHEAD);
    },
  );

  it('never shows the plaintext: sealing the same bytes twice gives different blobs', () => {
    const plain = Buffer.from('the same plaintext, sealed twice'.repeat(4));
    const aad = idBytes(sha256Hex(plain));

    const first = sealBlob(plain, KEY, aad);
    const second = sealBlob(plain, KEY, aad);

    expect(first.equals(second)).toBe(false);
    expect(first.includes(plain)).toBe(false);
  });

  it('refuses a blob opened with another key', () => {
    const { sealed, aad } = sealChunk(prngBytes(4096, 2));

    expect(() => openBlob(sealed, OTHER_KEY, aad)).toThrow(IntegrityError);
  });

  it('refuses a blob opened under another id, so a blob cannot be moved to another chunk', () => {
    const a = prngBytes(4096, 3);
    const b = prngBytes(4096, 4);
    const { sealed } = sealChunk(a);

    expect(() => openBlob(sealed, KEY, idBytes(sha256Hex(b)))).toThrow(IntegrityError);
  });

  // Every byte of a small blob, and every part of a large compressed one: header, nonce, body, tag.
  it('refuses a blob with any single byte flipped, wherever it is', () => {
    const { sealed, aad } = sealChunk(prngBytes(200, 5));

    const accepted: number[] = [];
    for (let at = 0; at < sealed.length; at++) {
      for (const mask of [0x01, 0x80]) {
        try {
          openBlob(flipped(sealed, at, mask), KEY, aad);
          accepted.push(at);
        } catch (err) {
          expect(err).toBeInstanceOf(IntegrityError);
        }
      }
    }

    expect(accepted).toEqual([]);
  });

  it.each([
    ['version', () => 0],
    ['flags', () => 1],
    ['nonce', () => NONCE_AT + 5],
    ['body', (length: number) => BODY_AT + ((length - BODY_AT - TAG_LENGTH) >> 1)],
    ['tag', (length: number) => length - TAG_LENGTH + 3],
  ])('refuses a compressed blob with a byte of its %s flipped', (_part, at) => {
    const { sealed, aad } = sealChunk(Buffer.alloc(MiB));

    expect(() => openBlob(flipped(sealed, at(sealed.length)), KEY, aad)).toThrow(IntegrityError);
  });

  it('refuses a blob truncated to any shorter length', () => {
    const { sealed, aad } = sealChunk(prngBytes(100, 6));

    const accepted: number[] = [];
    for (let length = 0; length < sealed.length; length++) {
      try {
        openBlob(sealed.subarray(0, length), KEY, aad);
        accepted.push(length);
      } catch (err) {
        expect(err).toBeInstanceOf(IntegrityError);
      }
    }

    expect(accepted).toEqual([]);
  });

  it('refuses a blob with bytes appended', () => {
    const { sealed, aad } = sealChunk(prngBytes(100, 7));

    expect(() => openBlob(Buffer.concat([sealed, Buffer.alloc(1)]), KEY, aad)).toThrow(
      IntegrityError,
    );
  });
});

describe('sealJson and openJson', () => {
  const manifest = {
    version: 2,
    recoveryPointId: 'rp-1',
    streams: [{ name: 'volume/data', size: 3, chunks: [{ id: 'ab', length: 3 }] }],
    metadata: { image: 'nginx:1.27', labels: { tier: 'web' }, empty: null },
  };

  it('gives back the same document for the same purpose', () => {
    const sealed = sealJson(manifest, KEY, 'manifest:rp-1');

    expect(openJson(sealed, KEY, 'manifest:rp-1')).toEqual(manifest);
  });

  it('refuses a document sealed for another purpose', () => {
    const sealed = sealJson(manifest, KEY, 'manifest:rp-1');

    expect(() => openJson(sealed, KEY, 'manifest:rp-2')).toThrow(IntegrityError);
    expect(() => openJson(sealed, KEY, 'config')).toThrow(IntegrityError);
  });

  it('refuses a document opened with another key', () => {
    const sealed = sealJson(manifest, KEY, 'config');

    expect(() => openJson(sealed, OTHER_KEY, 'config')).toThrow(IntegrityError);
  });
});

describe('sealInPlace', () => {
  /** The blob sealInPlace describes: frame head | ciphertext (over the plaintext) | tag. */
  function sealedInPlace(plain: Uint8Array, aad: Uint8Array, level?: number): Buffer {
    const { frame, length } = sealInPlace(plain, KEY, aad, level);
    expect(length).toBeLessThanOrEqual(plain.length);
    return Buffer.concat([
      frame.subarray(0, FRAME_HEAD),
      plain.subarray(0, length),
      frame.subarray(FRAME_HEAD),
    ]);
  }

  it.each([
    ['compressible', Buffer.alloc(3 * MiB + 17, 'stowage ')],
    ['incompressible', prngBytes(MiB + 5, 7)],
    ['empty', Buffer.alloc(0)],
    ['one byte', Buffer.from([42])],
  ])('seals %s data into a blob that opens like sealBlob’s', (_name, data) => {
    const aad = idBytes(sha256Hex(data));
    // In a SharedArrayBuffer at an odd offset, as in the writer's ring.
    const shared = new Uint8Array(new SharedArrayBuffer(data.length + 3), 3, data.length);
    shared.set(data);

    const sealed = sealedInPlace(shared, aad);

    expect(sealed.length).toBeLessThanOrEqual(data.length + SEAL_OVERHEAD);
    expect(sealed[0]).toBe(BLOB_VERSION);
    expect(openBlob(sealed, KEY, aad).equals(data)).toBe(true);
    expect(sealBlob(data, KEY, aad).length).toBe(sealed.length);
  });

  it.each([0, 1, 2, 3, 4, 5, 6, 7])(
    'seals in place at offset %i modulo 8 of shared memory, where the ciphertext is copied in around V8’s byte-by-byte path',
    (offset) => {
      for (const data of [prngBytes(600 * 1024 + 5, 20 + offset), Buffer.alloc(MiB + 9, 'log ')]) {
        const aad = idBytes(sha256Hex(data));
        const shared = new Uint8Array(new SharedArrayBuffer(data.length + 16), offset, data.length);
        shared.set(data);
        const sealed = sealedInPlace(shared, aad);
        expect(openBlob(sealed, KEY, aad).equals(data)).toBe(true);
      }
    },
  );

  it('compresses only when it pays, like sealBlob', () => {
    const text = Buffer.alloc(MiB, 'abc');
    const random = prngBytes(MiB, 9);
    expect(sealedInPlace(Buffer.from(text), idBytes(sha256Hex(text)))[1]).toBe(FLAG_ZSTD);
    expect(sealedInPlace(Buffer.from(random), idBytes(sha256Hex(random)))[1]).toBe(0);
    expect(sealedInPlace(Buffer.from(text), idBytes(sha256Hex(text)), 0)[1]).toBe(0);
  });

  it('compresses a random-looking chunk that holds a compressible run, however short the run is past 136 KiB', () => {
    const mixed = prngBytes(2 * MiB, 10);
    mixed.set(Buffer.alloc(140 * 1024, 'log line 42 '), MiB + 3333);
    const random = prngBytes(2 * MiB, 11);

    expect(sealedInPlace(Buffer.from(mixed), idBytes(sha256Hex(mixed)))[1]).toBe(FLAG_ZSTD);
    expect(sealedInPlace(Buffer.from(random), idBytes(sha256Hex(random)))[1]).toBe(0);
    const opened = openBlob(
      sealedInPlace(Buffer.from(mixed), idBytes(sha256Hex(mixed))),
      KEY,
      idBytes(sha256Hex(mixed)),
    );
    expect(opened.equals(mixed)).toBe(true);
  });

  it('binds the blob to its aad', () => {
    const data = Buffer.alloc(10_000, 1);
    const sealed = sealedInPlace(Buffer.from(data), idBytes(sha256Hex(data)));
    expect(() => openBlob(sealed, KEY, idBytes(sha256Hex(Buffer.from('other'))))).toThrow(
      IntegrityError,
    );
  });
});
