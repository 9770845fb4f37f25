/**
 * A small client for LXD's REST API over its unix socket (Node's `http` with `socketPath`).
 *
 * Protocol: every JSON answer is an envelope `{ type: sync|async|error, error_code, error,
 * metadata, operation }`. An `async` answer names an operation; its outcome is read with
 * `GET /1.0/operations/{id}/wait?timeout=N`, which answers with the operation once it ends or the
 * timeout passes (then it is asked again), so a long backup never holds one request open for
 * longer than a slice and an abandoned job is noticed between slices. A failed operation is
 * `status_code` >= 400 with LXD's text in `err`. Every path carries `project=`.
 *
 * Failures are thrown as LxdApiError (HTTP status + LXD's text) or the socket's own error;
 * errors.ts turns both into Stowage errors. Nothing here leaves the lxd folder except through
 * the driver's platform-neutral types (the contract test uses it to drive LXD directly).
 */
import http from 'node:http';
import type { Readable } from 'node:stream';

export interface LxdEnvelope<T = unknown> {
  type: 'sync' | 'async' | 'error';
  status_code: number;
  error_code: number;
  error: string;
  operation: string;
  metadata: T;
}

export interface LxdOperation {
  id: string;
  status: string;
  status_code: number;
  err: string;
  metadata: Record<string, unknown> | null;
}

/** An HTTP answer or a failed operation: `status` is the HTTP-like code, `message` LXD's text. */
export class LxdApiError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = 'LxdApiError';
    this.status = status;
  }
}

export interface LxdClientOptions {
  socketPath: string;
  project: string;
}

/** Seconds one `/wait` request may block; abandonment is noticed between slices. */
const WAIT_SLICE_S = 5;
/** Operation status codes: 100 created, 101 started, 103 running, 105 pending, 200 success. */
const OPERATION_SUCCESS = 200;

export interface RequestOptions {
  body?: unknown;
  signal?: AbortSignal;
}

export interface DownloadResult {
  stream: Readable;
  /** Content-Length when LXD sent one. */
  size?: number;
  /** Content-Type as LXD sent it (an image export is a tarball or a multipart body). */
  contentType?: string;
}

export class LxdClient {
  readonly socketPath: string;
  readonly project: string;

  constructor(options: LxdClientOptions) {
    this.socketPath = options.socketPath;
    this.project = options.project;
  }

  /** `path` with the client's project appended to its query. */
  private url(path: string): string {
    const sep = path.includes('?') ? '&' : '?';
    return `${path}${sep}project=${encodeURIComponent(this.project)}`;
  }

  private open(
    method: string,
    path: string,
    headers: Record<string, string | number>,
    signal?: AbortSignal,
  ): http.ClientRequest {
    return http.request({
      socketPath: this.socketPath,
      host: 'lxd',
      path: this.url(path),
      method,
      headers,
      signal,
      // A connection per request: Node keeps pooled sockets alive, and one pooled before lxd
      // restarted (a disaster recovery does restart it) fails the next request with EPIPE.
      agent: false,
    });
  }

  /** One JSON call; resolves with the envelope of a 2xx answer, rejects with LxdApiError else. */
  request<T = unknown>(
    method: string,
    path: string,
    options: RequestOptions = {},
  ): Promise<LxdEnvelope<T>> {
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
    const headers: Record<string, string | number> = {};
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(payload);
    }
    return new Promise((resolve, reject) => {
      const req = this.open(method, path, headers, options.signal);
      req.on('response', (res) => {
        readEnvelope<T>(res).then(resolve, reject);
      });
      req.on('error', reject);
      req.end(payload);
    });
  }

  async get<T = unknown>(path: string, signal?: AbortSignal): Promise<T> {
    return (await this.request<T>('GET', path, { signal })).metadata;
  }

  /**
   * Waits for an operation (its id or `/1.0/operations/{id}` path) to end; resolves with it on
   * success, rejects with LxdApiError carrying LXD's `err` on failure. `checkAbort` runs between
   * slices and throws to stop waiting (the operation itself goes on inside LXD).
   */
  async wait(operation: string, checkAbort?: () => void): Promise<LxdOperation> {
    const id = operation.split('/').pop() ?? operation;
    for (;;) {
      checkAbort?.();
      const op = await this.get<LxdOperation>(
        `/1.0/operations/${encodeURIComponent(id)}/wait?timeout=${WAIT_SLICE_S}`,
      );
      if (op.status_code === OPERATION_SUCCESS) return op;
      if (op.status_code >= 400) {
        throw new LxdApiError(op.status_code, op.err || op.status || 'operation failed');
      }
    }
  }

  /** A call that may answer `async`: waits for its operation when it does. */
  async run(
    method: string,
    path: string,
    body?: unknown,
    checkAbort?: () => void,
  ): Promise<LxdOperation | undefined> {
    const answer = await this.request(method, path, { body });
    if (answer.type !== 'async') return undefined;
    return this.wait(answer.operation, checkAbort);
  }

  /** Streams a raw body (an export); a non-2xx answer rejects with LXD's error text. */
  download(path: string, signal?: AbortSignal): Promise<DownloadResult> {
    return new Promise((resolve, reject) => {
      const req = this.open('GET', path, {}, signal);
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) {
          readEnvelope(res).then(
            () => reject(new LxdApiError(status, `unexpected HTTP ${status}`)),
            reject,
          );
          return;
        }
        const length = Number(res.headers['content-length']);
        const contentType = res.headers['content-type'];
        resolve({
          stream: res,
          size: Number.isFinite(length) ? length : undefined,
          ...(contentType ? { contentType } : {}),
        });
      });
      req.on('error', reject);
      req.end();
    });
  }

  /**
   * Sends `body` as an octet-stream (an instance import) and resolves with LXD's envelope. If LXD
   * answers before it has read the whole body (a refusal), its answer wins over the broken pipe.
   */
  upload<T = unknown>(
    path: string,
    body: Readable,
    headers: Record<string, string | number>,
  ): Promise<LxdEnvelope<T>> {
    return new Promise((resolve, reject) => {
      const req = this.open('POST', path, {
        'Content-Type': 'application/octet-stream',
        ...headers,
      });
      let answered = false;
      req.on('response', (res) => {
        answered = true;
        body.unpipe(req);
        readEnvelope<T>(res).then(resolve, reject);
      });
      req.on('error', (err) => {
        if (!answered) reject(err);
      });
      body.on('error', (err) => {
        req.destroy(err);
        reject(err);
      });
      body.pipe(req);
    });
  }
}

/** Reads a JSON envelope; rejects with LxdApiError on an `error` envelope or a non-2xx status. */
function readEnvelope<T>(res: http.IncomingMessage): Promise<LxdEnvelope<T>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('error', reject);
    res.on('end', () => {
      const status = res.statusCode ?? 0;
      const text = Buffer.concat(chunks).toString('utf8');
      let envelope: LxdEnvelope<T> | undefined;
      try {
        envelope = JSON.parse(text) as LxdEnvelope<T>;
      } catch {
        envelope = undefined;
      }
      if (status < 200 || status >= 300 || !envelope || envelope.type === 'error') {
        const said = envelope?.error || text.trim() || `HTTP ${status}`;
        reject(new LxdApiError(envelope?.error_code || status, said));
        return;
      }
      resolve(envelope);
    });
  });
}
