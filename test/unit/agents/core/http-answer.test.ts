/**
 * The strict HTTP/1.1 answer reader (agents/core/http-answer.ts) against a unix-socket server
 * that writes exactly the bytes a case gives, cut into pieces anywhere: bodies in each framing
 * arrive whole into reads of any size, and hostile answers (bad grammar, ambiguous or lying
 * framing, over the limits, cut short) are refused, never taken as a whole body.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  AnswerCutShort,
  getOverUnixSocket,
  MalformedAnswer,
  type HttpAnswer,
} from '../../../../agents/core/http-answer';

const KiB = 1024;
const MiB = 1024 * KiB;

let dir: string;
let server: Server | undefined;
let socketPath: string;
let sockets = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'stowage-http-answer-'));
});
afterEach(async () => {
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  server = undefined;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Served {
  /** The request as the server read it. */
  request: Promise<string>;
  /** Resolves when the client's connection closed. */
  closed: Promise<void>;
}

/**
 * Serves one connection: reads the request's head, then writes `pieces` one per turn of the
 * event loop, then ends the connection unless `hold` (then it stays open until the client goes).
 */
async function serve(pieces: Buffer[], hold = false): Promise<Served> {
  socketPath = join(dir, `s${++sockets}.sock`);
  let gotRequest!: (text: string) => void;
  let gotClose!: () => void;
  const served: Served = {
    request: new Promise((resolve) => (gotRequest = resolve)),
    closed: new Promise((resolve) => (gotClose = resolve)),
  };
  server = createServer((conn: Socket) => {
    conn.on('error', () => undefined);
    conn.on('close', () => gotClose());
    let head = '';
    conn.on('data', async (data) => {
      if (head.includes('\r\n\r\n')) return;
      head += data.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      gotRequest(head);
      for (const piece of pieces) {
        if (conn.destroyed) return;
        conn.write(piece);
        await new Promise((resolve) => setImmediate(resolve));
      }
      if (!hold) conn.end();
    });
  });
  await new Promise<void>((resolve) => server!.listen(socketPath, resolve));
  return served;
}

/** `bytes` cut at random points into pieces of 1 to `max` bytes. */
function cut(bytes: Buffer, max: number): Buffer[] {
  const pieces: Buffer[] = [];
  for (let at = 0; at < bytes.length;) {
    const n = 1 + Math.floor(Math.random() * max);
    pieces.push(bytes.subarray(at, at + n));
    at += n;
  }
  return pieces;
}

/** Reads the whole body in reads of the sizes given, in turn. */
async function drain(answer: HttpAnswer, sizes: number[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let i = 0; ; i++) {
    const into = Buffer.alloc(sizes[i % sizes.length]!);
    const n = await answer.read(into);
    if (n === 0) return Buffer.concat(parts);
    expect(n).toBeLessThanOrEqual(into.length);
    parts.push(into.subarray(0, n));
  }
}

const head = (fields: string[]) =>
  Buffer.from(`HTTP/1.1 200 OK\r\n${fields.map((f) => `${f}\r\n`).join('')}\r\n`, 'latin1');

/** `body` in chunks of random sizes, each with an extension now and then, and a trailer. */
function chunked(body: Buffer, max: number): Buffer {
  const out: Buffer[] = [];
  for (const piece of cut(body, max)) {
    const ext = Math.random() < 0.3 ? ';name="a b"' : '';
    out.push(Buffer.from(`${piece.length.toString(16)}${ext}\r\n`), piece, Buffer.from('\r\n'));
  }
  out.push(Buffer.from('0\r\nX-Trailer: yes\r\n\r\n'));
  return Buffer.concat(out);
}

describe('getOverUnixSocket', () => {
  const sizes = [1, 7, 4 * KiB, 64 * KiB, 2 * MiB];

  it('sends a GET that closes the connection, and reads a body of each framing cut anywhere', async () => {
    const body = randomBytes(300 * KiB);
    const answers = [
      Buffer.concat([head([`Content-Length: ${body.length}`]), body]),
      Buffer.concat([head(['Transfer-Encoding: chunked']), chunked(body, 40 * KiB)]),
      Buffer.concat([head(['Content-Type: application/x-tar']), body]),
    ];
    for (const answerBytes of answers) {
      for (const max of [1 * KiB, 70 * KiB]) {
        const served = await serve(cut(answerBytes, max));
        const answer = await getOverUnixSocket(socketPath, '/containers/c1/archive?path=%2Fvol');

        expect(answer.status).toBe(200);
        expect((await drain(answer, sizes)).equals(body)).toBe(true);
        expect(await answer.read(Buffer.alloc(1))).toBe(0);
        answer.close();
        expect(await served.request).toMatch(
          /^GET \/containers\/c1\/archive\?path=%2Fvol HTTP\/1\.1\r\n(?:.*\r\n)*Connection: close\r\n/,
        );
        await new Promise<void>((resolve) => server!.close(() => resolve()));
        server = undefined;
      }
    }
  });

  it('brings 16 MiB in chunks of random sizes whole to a reader slower than the socket', async () => {
    const body = randomBytes(16 * MiB);
    await serve(
      cut(
        Buffer.concat([head(['Transfer-Encoding: chunked']), chunked(body, 200 * KiB)]),
        300 * KiB,
      ),
    );
    const answer = await getOverUnixSocket(socketPath, '/big');
    const hash = createHash('sha256');
    let total = 0;
    for (let i = 0; ; i++) {
      const into = Buffer.alloc(i % 2 ? 2 * MiB : 10 * KiB);
      const n = await answer.read(into);
      if (n === 0) break;
      hash.update(into.subarray(0, n));
      total += n;
      if (i % 16 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    }

    expect(total).toBe(body.length);
    expect(hash.digest('hex')).toBe(createHash('sha256').update(body).digest('hex'));
    answer.close();
  });

  it('reads no body for 204 and no byte past a Content-Length', async () => {
    await serve([Buffer.from('HTTP/1.1 204 No Content\r\n\r\n')]);
    const empty = await getOverUnixSocket(socketPath, '/x');
    expect(empty.status).toBe(204);
    expect(await empty.read(Buffer.alloc(16))).toBe(0);
    empty.close();
    await new Promise<void>((resolve) => server!.close(() => resolve()));

    await serve([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA')]);
    const five = await getOverUnixSocket(socketPath, '/x');
    expect((await drain(five, [64])).toString()).toBe('hello');
    five.close();
  });

  it("gives an error answer's status, fields and the first bytes of its text", async () => {
    const json = JSON.stringify({ message: 'No such container: c1' });
    await serve([
      Buffer.from(
        `HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nVary: a\r\nVary: b\r\n` +
          `Content-Length: ${json.length}\r\n\r\n${json}`,
      ),
    ]);
    const answer = await getOverUnixSocket(socketPath, '/containers/c1/archive');

    expect(answer.status).toBe(404);
    expect(answer.headers.get('content-type')).toBe('application/json');
    expect(answer.headers.get('vary')).toBe('a, b');
    expect(await answer.text(12)).toBe(json.slice(0, 12));
    answer.close();
  });

  const hostile: Array<[string, string, RegExp]> = [
    ['not HTTP', 'ICY 200 OK\r\n\r\n', /not an HTTP\/1.x status line/],
    ['HTTP/2', 'HTTP/2 200\r\n\r\n', /not an HTTP\/1.x status line/],
    ['a status of two digits', 'HTTP/1.1 20 OK\r\n\r\n', /not an HTTP\/1.x status line/],
    ['a folded field', 'HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n', /not a header field/],
    ['a name with a space', 'HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n', /not a header field/],
    ['a control byte in a value', 'HTTP/1.1 200 OK\r\nA: b\x00c\r\n\r\n', /not a header field/],
    ['an LF-only head', 'HTTP/1.1 200 OK\nA: b\n\n', /head is over|closed before an answer/],
    ['a head over 64 KiB', `HTTP/1.1 200 OK\r\nA: ${'a'.repeat(70 * KiB)}\r\n\r\n`, /head is over/],
    ['101 fields', `HTTP/1.1 200 OK\r\n${'A: b\r\n'.repeat(101)}\r\n`, /over 100 header fields/],
    ['an interim answer', 'HTTP/1.1 100 Continue\r\n\r\n', /interim answer/],
    [
      'gzip',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx',
      /unsupported Transfer-Encoding/,
    ],
    [
      'chunked after gzip',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
      /unsupported Transfer-Encoding/,
    ],
    [
      'both framings',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n',
      /ambiguous/,
    ],
    ['two lengths', 'HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello', /not a Content-Length/],
    [
      'two length fields',
      'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello',
      /not a Content-Length/,
    ],
    ['a negative length', 'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n', /not a Content-Length/],
    ['an exponent', 'HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n', /not a Content-Length/],
    [
      'a 16-digit length',
      `HTTP/1.1 200 OK\r\nContent-Length: ${'9'.repeat(16)}\r\n\r\n`,
      /not a Content-Length/,
    ],
  ];

  it.each(hostile)('refuses an answer with %s before any body', async (_, text, message) => {
    await serve(cut(Buffer.from(text, 'latin1'), 9));
    const err = await getOverUnixSocket(socketPath, '/x').catch((e: unknown) => e);

    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(message);
  });

  const chunkedHead = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n';
  const badBodies: Array<[string, string, typeof MalformedAnswer | typeof AnswerCutShort, RegExp]> =
    [
      ['a size that is not hex', 'zz\r\nhello\r\n0\r\n\r\n', MalformedAnswer, /not a chunk size/],
      ['a size with 0x', '0x5\r\nhello\r\n0\r\n\r\n', MalformedAnswer, /not a chunk size/],
      ['a negative size', '-5\r\nhello\r\n0\r\n\r\n', MalformedAnswer, /not a chunk size/],
      ['an empty size', '\r\nhello\r\n0\r\n\r\n', MalformedAnswer, /not a chunk size/],
      [
        'a size of 14 hex digits',
        `${'f'.repeat(14)}\r\nhello\r\n`,
        MalformedAnswer,
        /not a chunk size/,
      ],
      [
        'a size line ended by LF alone',
        '5\nhello\r\n0\r\n\r\n',
        MalformedAnswer,
        /not ended by CRLF/,
      ],
      [
        'data longer than its size',
        '5\r\nhelloX\r\n0\r\n\r\n',
        MalformedAnswer,
        /not followed by CRLF/,
      ],
      [
        'a size line over 4 KiB',
        `5;${'a'.repeat(5 * KiB)}\r\nhello\r\n0\r\n\r\n`,
        MalformedAnswer,
        /line over 4096 bytes/,
      ],
      [
        'a bad trailer',
        '5\r\nhello\r\n0\r\nnot a field\r\n\r\n',
        MalformedAnswer,
        /not a trailer field/,
      ],
      ['a chunk cut short', '5\r\nhel', AnswerCutShort, /before the end of the answer/],
      ['no last chunk', '5\r\nhello\r\n', AnswerCutShort, /before the end of the answer/],
      [
        'no end of the trailer',
        '5\r\nhello\r\n0\r\n',
        AnswerCutShort,
        /before the end of the answer/,
      ],
    ];

  it.each(badBodies)('refuses a chunked body with %s', async (_, body, kind, message) => {
    await serve(cut(Buffer.from(chunkedHead + body, 'latin1'), 3));
    const answer = await getOverUnixSocket(socketPath, '/x');
    const err = await drain(answer, [1, 3, 64]).catch((e: unknown) => e);
    answer.close();

    expect(err).toBeInstanceOf(kind);
    expect((err as Error).message).toMatch(message);
  });

  it('refuses a Content-Length body that ends early, and a connection closed before an answer', async () => {
    await serve([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello')]);
    const answer = await getOverUnixSocket(socketPath, '/x');
    await expect(drain(answer, [64])).rejects.toBeInstanceOf(AnswerCutShort);
    answer.close();
    await new Promise<void>((resolve) => server!.close(() => resolve()));

    await serve([Buffer.from('HTTP/1.1 200 OK\r\n')]);
    await expect(getOverUnixSocket(socketPath, '/x')).rejects.toThrow(
      /the connection closed before an answer/,
    );
  });

  it('closes the connection when aborted, and the read under way rejects with the reason', async () => {
    const served = await serve(
      [Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n')],
      true,
    );
    const abort = new AbortController();
    const answer = await getOverUnixSocket(socketPath, '/x', abort.signal);
    const into = Buffer.alloc(64);
    expect(await answer.read(into)).toBe(5);
    const waiting = answer.read(into);
    const reason = new Error('the job was abandoned');
    abort.abort(reason);

    await expect(waiting).rejects.toBe(reason);
    await served.closed;
    await expect(answer.read(into)).rejects.toBe(reason);
  });

  it("keeps a failed connection's code, and refuses a target that is not a path", async () => {
    await expect(getOverUnixSocket(join(dir, 'absent.sock'), '/x')).rejects.toMatchObject({
      code: 'ENOENT',
    });
    expect(() => getOverUnixSocket(join(dir, 'absent.sock'), '/x y\r\nEvil: 1')).toThrow(
      /not an origin-form request target/,
    );
  });
});
