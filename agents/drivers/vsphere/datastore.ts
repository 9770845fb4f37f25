/**
 * Datastore file access over HTTP, `/folder/<path>?dcPath=<datacenter>&dsName=<datastore>` (the
 * vSphere Web Services SDK's "datastore HTTP access"): GET with Range, HEAD, PUT, with the SOAP
 * session's cookie. What comes back is checked: a ranged GET must return exactly the bytes asked
 * for, or the read fails rather than hand on a short or shifted piece.
 */
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { DriverError, TransientError } from '../../../kernel/errors';
import { drain, readBody } from './http';
import type { DatastorePath } from './inventory';
import type { VimClient } from './vim';

/** A descriptor is a few hundred bytes; anything this large is not one. */
const MAX_DESCRIPTOR_BYTES = 1024 * 1024;
const EMPTY = Buffer.alloc(0);
/**
 * A range's pieces kept here before the reader takes them: past this the response is paused, so
 * the rest waits in the socket's kernel buffer (the server keeps sending meanwhile) and is read
 * when the reader comes to it, while it is still in the CPU's cache, instead of piling up as
 * tens of MiB of 64 KiB Buffers that outlive the young generation (every 64 MiB of them cost a
 * full garbage collection) and are cold by the time they are copied.
 */
const HELD_BYTES = 512 * 1024;

/** One ranged GET's bytes in order (DatastoreFiles.openRange). */
export interface RangeFeed {
  /** The next piece as it came from the socket, or null once every byte asked for came. */
  next(): Promise<Buffer | null>;
  /** Ends the request; a later `next` rejects. */
  cancel(): void;
}

export class DatastoreFiles {
  constructor(private readonly vim: VimClient) {}

  url(dcPath: string, file: DatastorePath): URL {
    const url = new URL(this.vim.sdk.href);
    url.pathname = '/folder/' + file.path.split('/').map(encodeURIComponent).join('/');
    url.search = '';
    url.searchParams.set('dcPath', dcPath);
    url.searchParams.set('dsName', file.datastore);
    return url;
  }

  /** The file's size, or undefined when it does not exist. */
  async size(dcPath: string, file: DatastorePath): Promise<number | undefined> {
    const res = await this.send('HEAD', dcPath, file);
    await drain(res);
    if (res.statusCode === 404) return undefined;
    check(res, file, 'HEAD');
    const length = Number(res.headers['content-length']);
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new DriverError(`datastore file ${show(file)}: HEAD gave no usable Content-Length`);
    }
    return length;
  }

  /** A small file's bytes (a VMDK descriptor); undefined when it does not exist. */
  async readSmall(dcPath: string, file: DatastorePath): Promise<Buffer | undefined> {
    const res = await this.send('GET', dcPath, file);
    if (res.statusCode === 404) {
      await drain(res);
      return undefined;
    }
    check(res, file, 'GET');
    return readBody(res, MAX_DESCRIPTOR_BYTES);
  }

  /**
   * Bytes [start, start + length) of the file as they arrive: one ranged GET whose pieces (the
   * socket's own buffers, never copied here) are kept until the caller takes them, so a reader
   * that has several ranges under way reads ahead without a copy. What comes back is checked:
   * the range asked for, exactly `length` bytes, or the feed fails.
   */
  openRange(
    dcPath: string,
    file: DatastorePath,
    start: number,
    length: number,
    signal?: AbortSignal,
  ): RangeFeed {
    const end = start + length - 1;
    const pieces: Buffer[] = [];
    let taken = 0;
    let received = 0;
    let held = 0;
    let paused = false;
    let ended = false;
    let failure: Error | undefined;
    let wake: (() => void) | undefined;
    let res: IncomingMessage | undefined;
    const notify = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    const fail = (err: Error) => {
      failure ??= err;
      res?.destroy();
      notify();
    };
    this.send('GET', dcPath, file, { Range: `bytes=${start}-${end}` }, signal).then((r) => {
      res = r;
      if (failure) return void r.destroy();
      try {
        checkRange(r, file, start, end);
      } catch (err) {
        return fail(err as Error);
      }
      r.on('data', (piece: Buffer) => {
        received += piece.length;
        if (received > length) {
          return fail(
            new DriverError(`datastore ${show(file)}: more bytes than asked for at ${start}`),
          );
        }
        pieces.push(piece);
        held += piece.length;
        if (held > HELD_BYTES && !paused) {
          paused = true;
          r.pause();
        }
        notify();
      });
      r.on('end', () => {
        if (received === length) ended = true;
        else {
          fail(
            new TransientError(
              `datastore ${show(file)}: the read at ${start} broke off after ${received} of ${length} bytes`,
            ),
          );
        }
        notify();
      });
      r.on('error', (err) => fail(err));
      r.on('close', () => {
        if (!ended) {
          fail(
            new TransientError(
              `datastore ${show(file)}: the read at ${start} broke off after ${received} of ${length} bytes`,
            ),
          );
        }
      });
    }, fail);
    return {
      async next() {
        for (;;) {
          if (failure) throw failure;
          if (taken < pieces.length) {
            const piece = pieces[taken]!;
            pieces[taken++] = EMPTY;
            if (taken === pieces.length) {
              pieces.length = 0;
              taken = 0;
            }
            held -= piece.length;
            if (paused && held <= HELD_BYTES / 2) {
              paused = false;
              res?.resume();
            }
            return piece;
          }
          if (ended) return null;
          await new Promise<void>((resolve) => (wake = resolve));
        }
      },
      cancel() {
        fail(new Error('the range read was cancelled'));
      },
    };
  }

  /** Reads bytes [start, start + into.length) of the file into `into`, exactly. */
  async readRange(
    dcPath: string,
    file: DatastorePath,
    start: number,
    into: Uint8Array,
    signal?: AbortSignal,
  ): Promise<void> {
    const feed = this.openRange(dcPath, file, start, into.length, signal);
    let at = 0;
    for (let piece = await feed.next(); piece; piece = await feed.next()) {
      into.set(piece, at);
      at += piece.length;
    }
  }

  /** Writes the whole file (replacing it) from `body`, `length` bytes. */
  async put(
    dcPath: string,
    file: DatastorePath,
    body: Buffer | Readable,
    length: number,
  ): Promise<void> {
    const res = await this.send(
      'PUT',
      dcPath,
      file,
      {
        'Content-Length': String(length),
        'Content-Type': 'application/octet-stream',
      },
      undefined,
      body,
    );
    await drain(res);
    if (res.statusCode !== 200 && res.statusCode !== 201 && res.statusCode !== 204) {
      check(res, file, 'PUT');
      throw new DriverError(`datastore ${show(file)}: PUT answered HTTP ${res.statusCode}`);
    }
  }

  private async send(
    method: 'GET' | 'HEAD' | 'PUT',
    dcPath: string,
    file: DatastorePath,
    headers: Record<string, string> = {},
    signal?: AbortSignal,
    body?: Buffer | Readable,
  ): Promise<IncomingMessage> {
    const cookie = await this.vim.cookieHeader();
    return this.vim.http.send({
      method,
      url: this.url(dcPath, file),
      headers: { ...cookie, ...headers },
      ...(body ? { body } : {}),
      ...(signal ? { signal } : {}),
    });
  }
}

function show(file: DatastorePath): string {
  return `[${file.datastore}] ${file.path}`;
}

/** A ranged GET's answer must be exactly the range asked for. */
function checkRange(res: IncomingMessage, file: DatastorePath, start: number, end: number): void {
  if (res.statusCode === 200 && start !== 0) {
    res.destroy();
    throw new DriverError(`datastore ${show(file)}: the server ignored the byte range asked for`);
  }
  check(res, file, 'GET');
  if (res.statusCode === 206) {
    const range = String(res.headers['content-range'] ?? '');
    const m = /^bytes (\d+)-(\d+)\//.exec(range);
    if (!m || Number(m[1]) !== start || Number(m[2]) !== end) {
      res.destroy();
      throw new DriverError(
        `datastore ${show(file)}: asked for bytes ${start}-${end}, got "${range.slice(0, 80)}"`,
      );
    }
  }
}

function check(res: IncomingMessage, file: DatastorePath, method: string): void {
  const status = res.statusCode ?? 0;
  if (status >= 200 && status < 300) return;
  res.resume();
  if (status === 404)
    throw new DriverError(`datastore file ${show(file)} does not exist (${method})`);
  if (status === 401 || status === 403) {
    throw new DriverError(
      `datastore file ${show(file)}: ${method} refused (HTTP ${status}); the vSphere user needs the Datastore.Browse and Datastore.FileManagement privileges`,
    );
  }
  if (status >= 500) {
    throw new TransientError(`datastore file ${show(file)}: ${method} answered HTTP ${status}`);
  }
  throw new DriverError(`datastore file ${show(file)}: ${method} answered HTTP ${status}`);
}
