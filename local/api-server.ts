/**
 * The HTTP API in local mode: each request becomes the API Gateway (REST, proxy integration)
 * event the Lambda handler receives in AWS, so the very same handler answers. It serves no
 * configuration: a standalone agent reads agent-config.json (0600) in the data directory, never
 * whoever answers the port. `files` answers first for the web console's static files (local/console-files.ts),
 * then `access` (local/access.ts) refuses what may not call the API.
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

export async function startApiServer(
  handler: ApiHandler,
  port: number,
  host = '127.0.0.1',
  extras: {
    /** Answers first, for the web console's static files. */
    files?: FileServer;
    /** Who may call the API (local/access.ts); every API request is checked when set. */
    access?: ApiAccess;
  } = {},
): Promise<Server> {
  const server = createServer((req, res) => {
    if (extras.files?.(req, res)) {
      req.resume();
      return;
    }
    const denied = extras.access
      ? refusal(req, req.socket.localPort ?? port, extras.access)
      : undefined;
    if (denied) {
      req.resume();
      const [status, error, message] = denied;
      res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
      res.end(JSON.stringify({ error, message }));
      return;
    }
    // Nothing a client sends may throw out of this callback: it would end the process.
    const url = requestUrl(req.url);
    if (!url) {
      req.resume();
      reply(res, 400, { error: 'ValidationError', message: 'malformed request target' });
      return;
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > MAX_BODY_BYTES) {
      req.resume();
      reply(res, 413, {
        error: 'PayloadTooLarge',
        message: `request bodies are at most ${MAX_BODY_BYTES} bytes`,
      });
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (c: Buffer) => {
      if (refused) return;
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        refused = true;
        chunks.length = 0;
        reply(res, 413, {
          error: 'PayloadTooLarge',
          message: `request bodies are at most ${MAX_BODY_BYTES} bytes`,
        });
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => res.destroy());
    req.on('end', () => {
      if (refused) return;
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
    server.listen(port, host, () => resolve());
  });
  return server;
}
