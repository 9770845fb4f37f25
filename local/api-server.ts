/**
 * The HTTP API in local mode: each request becomes the API Gateway (REST, proxy integration)
 * event the Lambda handler receives in AWS, so the very same handler answers. It serves no
 * configuration: a standalone agent reads agent-config.json (0600) in the data directory, never
 * whoever answers the port. `files` answers first for the web console's static files (local/console-files.ts),
 * then `access` (local/access.ts) refuses what may not call the API, then `bodyRefusal` what
 * the API does not read (not JSON: 415; a declared length over 1 MiB: 413), each answered and
 * the connection closed without reading the body; a body that does not arrive within
 * BODY_TIMEOUT_MS is answered 408 and its connection closed.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { refusal, type ApiAccess } from './access';

export type ApiHandler = (event: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult>;

/** Answers a request for a static file and returns true, or returns false to leave it to the API. */
export type FileServer = (req: IncomingMessage, res: ServerResponse) => boolean;

/** Bodies larger than this are refused (413) before they are read whole: the API takes JSON. */
export const MAX_BODY_BYTES = 1024 * 1024;

/**
 * How long a request's body may take to arrive, from its headers to its end (408 after it). The
 * API's bodies are a few KiB sent by a local client at once, so 10 s is generous; without a bound
 * a client announcing a body and never sending it (or trickling a chunked one) holds a request,
 * and Node's own requestTimeout (300 s, checked every 30 s) is far too slow to matter.
 */
export const BODY_TIMEOUT_MS = 10_000;

/**
 * Why a request's body may not be read, as [status, error, message], or undefined when it may:
 * only JSON (415 otherwise, `application/json`, UTF-8), and no declared length over
 * MAX_BODY_BYTES (413). A request with no body (no Content-Length or 0, no Transfer-Encoding)
 * may carry any Content-Type or none. Reads only the headers.
 */
export function bodyRefusal(req: IncomingMessage): [number, string, string] | undefined {
  const length = req.headers['content-length'];
  const chunked = req.headers['transfer-encoding'] !== undefined;
  if (!chunked && (length === undefined || Number(length) === 0)) return undefined;
  const given = req.headers['content-type'];
  const [type, ...params] = (given ?? '').split(';').map((p) => p.trim().toLowerCase());
  const charset = params.find((p) => p.startsWith('charset='))?.slice('charset='.length);
  const utf8 = charset === undefined || ['utf-8', 'utf8', '"utf-8"'].includes(charset);
  if (type !== 'application/json' || !utf8) {
    return [
      415,
      'UnsupportedMediaType',
      `request bodies must be JSON sent as "Content-Type: application/json" (UTF-8); this one is ${given === undefined ? 'of no Content-Type' : `"${given}"`}`,
    ];
  }
  if (length !== undefined && !(Number(length) <= MAX_BODY_BYTES)) {
    return [
      413,
      'PayloadTooLarge',
      `request bodies are at most ${MAX_BODY_BYTES} bytes; this one declares ${length}`,
    ];
  }
  return undefined;
}

/**
 * The request target as a URL on this server. A target is a path: one that would parse as
 * something else (`//host/x` is a scheme-relative URL, which `new URL(target, base)` takes for
 * another host, or throws on) is read as a path all the same, and one no URL can hold is
 * undefined (answered 400).
 */
export function requestUrl(target: string | undefined): URL | undefined {
  const text = target ?? '/';
  if (!text.startsWith('/')) return undefined;
  try {
    return new URL(`http://local${text}`);
  } catch {
    return undefined;
  }
}

function toEvent(req: IncomingMessage, url: URL, body: Buffer): APIGatewayProxyEvent {
  const query: Record<string, string> = {};
  url.searchParams.forEach((v, k) => (query[k] = v));
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers[k] = v;
  return {
    httpMethod: req.method ?? 'GET',
    path: url.pathname,
    resource: '/{proxy+}',
    pathParameters: { proxy: url.pathname.slice(1) },
    queryStringParameters: Object.keys(query).length ? query : null,
    multiValueQueryStringParameters: null,
    headers,
    multiValueHeaders: {},
    body: body.length ? body.toString('utf8') : null,
    isBase64Encoded: false,
    stageVariables: null,
    requestContext: {
      accountId: '000000000000',
      apiId: 'local',
      httpMethod: req.method ?? 'GET',
      path: url.pathname,
      stage: 'local',
      requestId: `local-${Date.now()}`,
      requestTimeEpoch: Date.now(),
      resourceId: 'local',
      resourcePath: '/{proxy+}',
      protocol: 'HTTP/1.1',
      authorizer: null,
      identity: { sourceIp: req.socket.remoteAddress ?? '127.0.0.1' } as never,
    },
  };
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/**
 * Answers and closes the connection without reading what is left of the request's body: the
 * client may still be sending it (a huge declared length, a chunked body that never ends), and
 * reading it to keep the connection alive is what the refusal is there to avoid.
 */
function refuseAndClose(
  req: IncomingMessage,
  res: ServerResponse,
  [status, error, message]: [number, string, string],
): void {
  req.pause();
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.shouldKeepAlive = false;
  const body = JSON.stringify({ error, message });
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    connection: 'close',
  });
  // The socket is closed once the answer is out, and at the latest a second later.
  res.end(body, () => {
    setTimeout(() => req.socket.destroy(), 1000).unref();
  });
}

export async function startApiServer(
  handler: ApiHandler,
  port: number,
  host = '127.0.0.1',
  extras: {
    /** Answers first, for the web console's static files. */
    files?: FileServer;
    /** Who may call the API (local/access.ts); every API request is checked when set. */
    access?: ApiAccess;
    /** How long a body may take to arrive (BODY_TIMEOUT_MS). */
    bodyTimeoutMs?: number;
  } = {},
): Promise<Server> {
  const bodyTimeoutMs = extras.bodyTimeoutMs ?? BODY_TIMEOUT_MS;
  const server = createServer((req, res) => {
    if (extras.files?.(req, res)) {
      req.resume();
      return;
    }
    const denied = extras.access
      ? refusal(req, req.socket.localPort ?? port, extras.access)
      : undefined;
    if (denied) {
      // Whatever body it sends is never read.
      refuseAndClose(req, res, denied);
      return;
    }
    // Nothing a client sends may throw out of this callback: it would end the process.
    const url = requestUrl(req.url);
    if (!url) {
      req.resume();
      reply(res, 400, { error: 'ValidationError', message: 'malformed request target' });
      return;
    }
    const refused = bodyRefusal(req);
    if (refused) {
      refuseAndClose(req, res, refused);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const timer = setTimeout(() => {
      done = true;
      chunks.length = 0;
      refuseAndClose(req, res, [
        408,
        'RequestTimeout',
        `the request's body did not arrive within ${bodyTimeoutMs} ms`,
      ]);
    }, bodyTimeoutMs);
    req.on('data', (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        done = true;
        clearTimeout(timer);
        chunks.length = 0;
        refuseAndClose(req, res, [
          413,
          'PayloadTooLarge',
          `request bodies are at most ${MAX_BODY_BYTES} bytes`,
        ]);
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => {
      clearTimeout(timer);
      res.destroy();
    });
    req.on('close', () => clearTimeout(timer));
    req.on('end', () => {
      clearTimeout(timer);
      if (done) return;
      done = true;
      let event: APIGatewayProxyEvent;
      try {
        event = toEvent(req, url, Buffer.concat(chunks));
      } catch (err) {
        reply(res, 400, { error: 'ValidationError', message: (err as Error).message });
        return;
      }
      handler(event).then(
        (out) => {
          res.writeHead(out.statusCode, out.headers as Record<string, string>);
          res.end(out.body);
        },
        (err: Error) => reply(res, 500, { error: 'InternalError', message: err.message }),
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Idle connections are kept longer than clients keep them (undici: 4 s, from the 5 s hint):
    // a server closing first races a client's next request on that connection ("other side
    // closed", seen once in a CI run). close() still ends idle connections at once.
    server.keepAliveTimeout = 65_000;
    server.listen(port, host, () => resolve());
  });
  return server;
}
