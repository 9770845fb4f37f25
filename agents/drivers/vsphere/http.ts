/**
 * HTTP(S) to a vCenter or ESXi host: the SOAP endpoint (`/sdk`) and datastore file access
 * (`/folder`). TLS is verified against the system's CAs unless the operator said
 * `--vsphere-insecure`; a plain `http://` URL (the simulator) has no TLS to verify. One keep-alive
 * agent per client, so the parallel ranged reads of a disk re-use their connections.
 */
import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { TransientError, DriverError } from '../../../kernel/errors';

export interface HttpOptions {
  /** Accept any server certificate (`--vsphere-insecure`); never the default. */
  insecure?: boolean;
  /** Most sockets open at once to the server. */
  maxSockets?: number;
}

export interface HttpRequest {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE';
  url: URL;
  headers?: Record<string, string>;
  /** A whole body, or a stream (give Content-Length in headers for a stream). */
  body?: Buffer | Readable;
  signal?: AbortSignal;
}

export class HttpClient {
  private readonly agent: http.Agent;
  readonly secure: boolean;

  constructor(base: URL, options: HttpOptions = {}) {
    this.secure = base.protocol === 'https:';
    if (!this.secure && base.protocol !== 'http:') {
      throw new DriverError(`vSphere URL ${base.href}: use https:// (or http:// for a simulator)`);
    }
    const common = { keepAlive: true, maxSockets: options.maxSockets ?? 16 };
    this.agent = this.secure
      ? new https.Agent({ ...common, rejectUnauthorized: !options.insecure })
      : new http.Agent(common);
  }

  /** Resolves once the response headers are in; the caller reads or destroys the body. */
  send(req: HttpRequest): Promise<http.IncomingMessage> {
    const lib = req.url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const outgoing = lib.request(req.url, {
        method: req.method,
        headers: req.headers,
        agent: this.agent,
        ...(req.signal ? { signal: req.signal } : {}),
      });
      outgoing.on('response', resolve);
      outgoing.on('error', (err) => reject(translateNetError(err, req.url)));
      const body = req.body;
      if (body === undefined) outgoing.end();
      else if (Buffer.isBuffer(body)) outgoing.end(body);
      else {
        body.on('error', (err) => outgoing.destroy(err));
        // A body destroyed without an error (a caller giving up: a cancelled restore) ends no
        // request: without this, the request waited for the rest of its body for ever.
        body.on('close', () => {
          if (!body.readableEnded && !outgoing.destroyed) {
            const err = new Error('the request body was closed before its end');
            outgoing.destroy(Object.assign(err, { name: 'AbortError' }));
          }
        });
        body.pipe(outgoing);
      }
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/** The whole body as a Buffer, refusing more than `limit` bytes (answers are hostile). */
export async function readBody(res: http.IncomingMessage, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const piece of res) {
    const buf = piece as Buffer;
    size += buf.length;
    if (size > limit) {
      res.destroy();
      throw new DriverError(`vSphere sent more than ${limit} bytes where an answer was expected`);
    }
    parts.push(buf);
  }
  return Buffer.concat(parts);
}

/** Drains and discards a body so its connection goes back to the pool. */
export async function drain(res: http.IncomingMessage): Promise<void> {
  for await (const piece of res) void piece;
}

function translateNetError(err: Error, url: URL): Error {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const where = `${url.protocol}//${url.host}`;
  if (code.startsWith('ERR_TLS') || /certificate|self.signed|CERT_/i.test(code + err.message)) {
    return new DriverError(
      `vSphere at ${where}: its TLS certificate is not trusted (${err.message}); install its CA ` +
        `certificate on this host (NODE_EXTRA_CA_CERTS), or pass --vsphere-insecure to skip the check`,
      { cause: err },
    );
  }
  if (err.name === 'AbortError') return err;
  return new TransientError(`vSphere at ${where} could not be reached (${code || err.message})`, {
    cause: err,
  });
}
