/**
 * One HTTP/1.1 GET over a unix socket whose answer's body is read straight into the caller's
 * memory (a ByteReader), for the engine streams that carry a backup's bytes (dockerd's archive
 * API). Node's http client hands a body out as a new Buffer per socket read (21-36 KiB from
 * dockerd), allocated, grown and freed each time: 1.1-1.7 CPU-s per GiB only to drain dockerd's
 * archive, on a path two cores already limit. Here the socket reads into one buffer that is used
 * again (net's `onread`), and each byte is copied once, into the memory the reader is given.
 *
 * The answer is hostile until checked. The status line and the header fields are bounded
 * (HEAD_LIMIT, FIELDS_LIMIT) and must follow the grammar (RFC 9112: no folded lines, names
 * made of token characters); the body's framing is Content-Length (digits, one value) or
 * Transfer-Encoding `chunked` alone, never both; a chunk's size is 1-13 hex digits on a line of
 * at most LINE_LIMIT bytes, its data followed by CRLF; a body that ends before its framing says
 * is an AnswerCutShort, never a short stream taken as whole.
 */
import { connect, type Socket } from 'node:net';
import type { ByteReader } from './driver';

/** The status line and header fields, in bytes, at most (trailer fields count against it too). */
const HEAD_LIMIT = 64 * 1024;
/** Header fields, at most. */
const FIELDS_LIMIT = 100;
/** A chunk-size line (with its extensions), in bytes, at most. */
const LINE_LIMIT = 4096;
/** What one socket read may bring: the buffer `onread` fills again and again. */
const SOCKET_READ_BYTES = 256 * 1024;

const STATUS_LINE = /^HTTP\/1\.[01] ([1-9]\d\d)(?: [\t\x20-\x7e\x80-\xff]*)?$/;
const FIELD_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[\t ]*([\t\x20-\x7e\x80-\xff]*?)[\t ]*$/;
/** 13 hex digits at most: every size up to 2^52 - 1, all of them safe integers. */
const CHUNK_SIZE_LINE = /^([0-9a-fA-F]{1,13})[\t ]*(?:;[\t\x20-\x7e\x80-\xff]*)?$/;

/** An answer that does not follow HTTP/1.1's grammar or the limits above. */
export class MalformedAnswer extends Error {
  override readonly name = 'MalformedAnswer';
}

/** An answer whose connection ended before the end its framing promised. */
export class AnswerCutShort extends Error {
  override readonly name = 'AnswerCutShort';
}

export interface HttpAnswer {
  status: number;
  /** Header fields by lower-case name; a repeated field's values joined with ", ". */
  headers: ReadonlyMap<string, string>;
  /** The body's next bytes into `into`: how many, 0 at its end. */
  read: ByteReader;
  /** The body as text (UTF-8), its first `limit` bytes at most: for an error answer. */
  text(limit: number): Promise<string>;
  /** Ends the exchange and closes the connection; a read under way rejects. Safe to repeat. */
  close(): void;
}

/**
 * GETs `target` (an origin-form path with its query, already percent-encoded) from the HTTP
 * server on the unix socket `socketPath`; resolves once the answer's head is in. A failure to
 * connect rejects with the socket's error (its `code`: ENOENT, ECONNREFUSED, EACCES); `signal`
 * closes the connection, and a read under way rejects with its reason.
 */
export function getOverUnixSocket(
  socketPath: string,
  target: string,
  signal?: AbortSignal,
): Promise<HttpAnswer> {
  if (!/^\/[\x21-\x7e]*$/.test(target)) {
    throw new RangeError(`not an origin-form request target: ${JSON.stringify(target)}`);
  }
  const request = Buffer.from(
    `GET ${target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: stowage\r\nConnection: close\r\n\r\n`,
    'latin1',
  );
  return new Exchange(socketPath, request, signal).answer;
}

type Framing = 'chunked' | 'close';
type BodyState = 'size' | 'data' | 'crlf' | 'trailer' | 'length' | 'close' | 'done';

interface PendingRead {
  /** The reader's memory as a Buffer: Buffer#copy is a plain memmove, where a TypedArray's set
   * into shared memory (the chunking ring is a shared WebAssembly.Memory) copies with relaxed
   * atomics, 2-4x slower (11 % of the main thread's samples). */
  into: Buffer;
  filled: number;
  resolve: (n: number) => void;
  reject: (err: unknown) => void;
  flushing: boolean;
}

class Exchange {
  readonly answer: Promise<HttpAnswer>;
  private readonly socket: Socket;
  private settleHead!: { resolve: (a: HttpAnswer) => void; reject: (err: unknown) => void };
  private headParts: Buffer[] = [];
  private headBytes = 0;
  private headDone = false;
  private state: BodyState = 'done';
  /** Bytes left of the current chunk, or of a Content-Length body. */
  private remaining = 0;
  /** The chunk-size or trailer line read so far (latin1). */
  private line = '';
  /** How much of a chunk's CRLF has been seen (0, 1). */
  private crlfSeen = 0;
  private trailerBytes = 0;
  /** What the last socket read brought and nobody has taken yet; the socket is paused meanwhile. */
  private rest: Buffer | undefined;
  private pending: PendingRead | undefined;
  private failure: unknown;
  private ended = false;
  private closed = false;

  constructor(
    socketPath: string,
    request: Buffer,
    private readonly signal?: AbortSignal,
  ) {
    this.answer = new Promise((resolve, reject) => (this.settleHead = { resolve, reject }));
    this.socket = connect({
      path: socketPath,
      onread: {
        buffer: Buffer.allocUnsafe(SOCKET_READ_BYTES),
        callback: (n, buf) => this.onBytes(buf.subarray(0, n) as Buffer),
      },
    });
    // Not end(): a Go server (dockerd) takes a client's half-close for its going away and
    // cancels the request. `Connection: close` has the server close once the answer is out.
    this.socket.on('connect', () => this.socket.write(request));
    this.socket.on('end', () => this.onEnd());
    this.socket.on('error', (err) => this.fail(err));
    this.socket.on('close', () => {
      if (!this.ended) this.fail(new AnswerCutShort('the connection closed'));
    });
    if (signal?.aborted) this.abort();
    else signal?.addEventListener('abort', this.abort, { once: true });
  }

  private readonly abort = () => {
    const reason: unknown = this.signal?.reason ?? new Error('aborted');
    this.fail(reason);
    this.close();
  };

  /** A socket read: false pauses the socket, the bytes kept in `rest` until a read takes them. */
  private onBytes(bytes: Buffer): boolean {
    if (this.failure !== undefined || this.closed) return false;
    try {
      let from = 0;
      if (!this.headDone) {
        from = this.takeHead(bytes);
        if (!this.headDone) return true;
      }
      from = this.feed(bytes, from);
      if (from < bytes.length && this.state !== 'done') {
        this.rest = bytes.subarray(from);
        return false;
      }
      return true;
    } catch (err) {
      this.fail(err);
      this.close();
      return false;
    }
  }

  /** Gathers the head; once it is complete, parses it and says where the body starts. */
  private takeHead(bytes: Buffer): number {
    const before = this.headBytes;
    this.headParts.push(Buffer.from(bytes)); // `bytes` is the socket's buffer: it will be reused
    this.headBytes += bytes.length;
    const head = Buffer.concat(this.headParts);
    const end = head.indexOf('\r\n\r\n', Math.max(0, before - 3), 'latin1');
    if (end < 0) {
      if (head.length > HEAD_LIMIT) {
        throw new MalformedAnswer(`the answer's head is over ${HEAD_LIMIT} bytes`);
      }
      this.headParts = [head];
      return bytes.length;
    }
    if (end + 4 > HEAD_LIMIT) {
      throw new MalformedAnswer(`the answer's head is over ${HEAD_LIMIT} bytes`);
    }
    this.headParts = [];
    const answer = this.parseHead(head.toString('latin1', 0, end));
    this.headDone = true;
    this.settleHead.resolve(answer);
    return end + 4 - before;
  }

  private parseHead(text: string): HttpAnswer {
    const [statusLine, ...fieldLines] = text.split('\r\n');
    const status = STATUS_LINE.exec(statusLine!);
    if (!status) {
      throw new MalformedAnswer(`not an HTTP/1.x status line: ${JSON.stringify(statusLine)}`);
    }
    if (fieldLines.length > FIELDS_LIMIT) {
      throw new MalformedAnswer(`the answer has over ${FIELDS_LIMIT} header fields`);
    }
    const headers = new Map<string, string>();
    for (const line of fieldLines) {
      const field = FIELD_LINE.exec(line);
      if (!field) throw new MalformedAnswer(`not a header field: ${JSON.stringify(line)}`);
      const name = field[1]!.toLowerCase();
      const known = headers.get(name);
      headers.set(name, known === undefined ? field[2]! : `${known}, ${field[2]!}`);
    }
    const code = Number(status[1]);
    if (code < 200) throw new MalformedAnswer(`an interim answer (${code}) to a plain GET`);
    this.startBody(code, headers);
    return {
      status: code,
      headers,
      read: (into) => this.read(into),
      text: (limit) => this.text(limit),
      close: () => this.close(),
    };
  }

  private startBody(status: number, headers: Map<string, string>): void {
    const framing = framingOf(status, headers);
    if (framing === 'chunked') this.state = 'size';
    else if (framing === 'close') this.state = 'close';
    else {
      this.remaining = framing;
      this.state = framing === 0 ? 'done' : 'length';
    }
  }

  /**
   * Moves body bytes from `bytes[from...]` through the framing into the read under way; returns
   * where it stopped: the end, or where body data met no room (no read under way, or it is full).
   */
  private feed(bytes: Buffer, from: number): number {
    let at = from;
    copying: while (at < bytes.length && this.state !== 'done') {
      switch (this.state) {
        case 'size':
        case 'trailer':
          at = this.takeLine(bytes, at);
          break;
        case 'crlf': {
          const want = this.crlfSeen === 0 ? 0x0d : 0x0a;
          if (bytes[at] !== want) throw new MalformedAnswer('a chunk not followed by CRLF');
          at++;
          if (++this.crlfSeen === 2) this.state = 'size';
          break;
        }
        default: {
          const copied = this.copyOut(bytes, at);
          if (copied === 0) break copying;
          at += copied;
          if (this.state === 'close') break;
          this.remaining -= copied;
          if (this.remaining === 0) {
            if (this.state === 'length') this.state = 'done';
            else {
              this.state = 'crlf';
              this.crlfSeen = 0;
            }
          }
        }
      }
    }
    this.settleRead();
    return at;
  }

  /** Copies body data into the read under way; how many bytes (0: no room). */
  private copyOut(bytes: Buffer, at: number): number {
    const read = this.pending;
    if (!read) return 0;
    let n = Math.min(bytes.length - at, read.into.length - read.filled);
    if (this.state !== 'close') n = Math.min(n, this.remaining);
    if (n > 0) {
      bytes.copy(read.into, read.filled, at, at + n);
      read.filled += n;
    }
    return n;
  }

  /** Reads a chunk-size or trailer line up to its LF; acts on it once whole. */
  private takeLine(bytes: Buffer, at: number): number {
    const lf = bytes.indexOf(0x0a, at);
    const stop = lf < 0 ? bytes.length : lf;
    this.line += bytes.toString('latin1', at, stop);
    if (this.state === 'trailer') this.trailerBytes += stop - at + 1;
    if (this.line.length > LINE_LIMIT || this.trailerBytes > HEAD_LIMIT) {
      throw new MalformedAnswer(`a chunk-size or trailer line over ${LINE_LIMIT} bytes`);
    }
    if (lf < 0) return bytes.length;
    if (!this.line.endsWith('\r')) throw new MalformedAnswer('a line not ended by CRLF');
    const line = this.line.slice(0, -1);
    this.line = '';
    if (this.state === 'trailer') {
      if (line === '') this.state = 'done';
      else if (!FIELD_LINE.exec(line)) {
        throw new MalformedAnswer(`not a trailer field: ${JSON.stringify(line)}`);
      }
      return lf + 1;
    }
    const size = CHUNK_SIZE_LINE.exec(line);
    if (!size) throw new MalformedAnswer(`not a chunk size: ${JSON.stringify(line)}`);
    this.remaining = parseInt(size[1]!, 16);
    this.state = this.remaining === 0 ? 'trailer' : 'data';
    return lf + 1;
  }

  private read(into: Uint8Array): Promise<number> {
    if (this.pending) return Promise.reject(new Error('a read is already under way'));
    if (into.length === 0) return Promise.reject(new RangeError('a read into no room'));
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.state === 'done') return Promise.resolve(0);
    return new Promise<number>((resolve, reject) => {
      const buffer = Buffer.from(into.buffer, into.byteOffset, into.byteLength);
      this.pending = { into: buffer, filled: 0, resolve, reject, flushing: false };
      try {
        const rest = this.rest;
        this.rest = undefined;
        if (rest) {
          const at = this.feed(rest, 0);
          if (at < rest.length && this.state !== 'done') this.rest = rest.subarray(at);
        }
      } catch (err) {
        this.fail(err);
        this.close();
        return;
      }
      if (this.ended && this.pending) this.onEnd();
      else if (!this.rest && this.pending && !this.closed) this.socket.resume();
    });
  }

  /**
   * Hands the read under way its bytes: at once when it is full or the body is over, else after
   * the socket reads already due in this turn of the event loop (one promise per turn, not per
   * socket read).
   */
  private settleRead(): void {
    const read = this.pending;
    if (!read || read.filled === 0) {
      if (read && this.state === 'done') this.resolveRead(read);
      return;
    }
    if (read.filled === read.into.length || this.state === 'done') this.resolveRead(read);
    else if (!read.flushing) {
      read.flushing = true;
      setImmediate(() => {
        if (this.pending === read) this.resolveRead(read);
      });
    }
  }

  private resolveRead(read: PendingRead): void {
    this.pending = undefined;
    read.resolve(read.filled);
  }

  private onEnd(): void {
    this.ended = true;
    if (this.rest) return; // bytes not taken yet; the read that takes them comes back here
    if (this.state === 'close') this.state = 'done';
    if (!this.headDone) this.fail(new AnswerCutShort('the connection closed before an answer'));
    else if (this.state !== 'done') {
      this.fail(new AnswerCutShort('the connection closed before the end of the answer'));
    } else this.settleRead();
  }

  private async text(limit: number): Promise<string> {
    const body = Buffer.allocUnsafe(limit);
    let length = 0;
    while (length < limit) {
      const n = await this.read(body.subarray(length));
      if (n === 0) break;
      length += n;
    }
    return body.toString('utf8', 0, length);
  }

  /** Records the first failure: the head or the read under way rejects with it. */
  private fail(err: unknown): void {
    if (this.failure !== undefined) return;
    if (this.state === 'done' && this.headDone && !this.pending) return; // a close after the end
    this.failure = err;
    if (!this.headDone) this.settleHead.reject(err);
    const read = this.pending;
    this.pending = undefined;
    read?.reject(err);
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.signal?.removeEventListener('abort', this.abort);
    this.rest = undefined;
    this.socket.destroy();
    this.fail(new Error('the answer was closed'));
  }
}

/** How the answer's body is delimited: a length, chunks, or the connection's end. */
function framingOf(status: number, headers: Map<string, string>): number | Framing {
  if (status === 204 || status === 304) return 0;
  const coding = headers.get('transfer-encoding');
  const length = headers.get('content-length');
  if (coding !== undefined) {
    if (length !== undefined) {
      throw new MalformedAnswer('both Transfer-Encoding and Content-Length (an ambiguous body)');
    }
    if (coding.toLowerCase() !== 'chunked') {
      throw new MalformedAnswer(`an unsupported Transfer-Encoding: ${JSON.stringify(coding)}`);
    }
    return 'chunked';
  }
  if (length === undefined) return 'close';
  const values = new Set(length.split(',').map((v) => v.trim()));
  const [value] = values;
  if (values.size !== 1 || !/^\d{1,15}$/.test(value!)) {
    throw new MalformedAnswer(`not a Content-Length: ${JSON.stringify(length)}`);
  }
  return Number(value);
}
