/**
 * The HTTP API in local mode: each request becomes the API Gateway (REST, proxy integration)
 * event the Lambda handler receives in AWS, so the very same handler answers.
 *
 * What API Gateway's IAM auth does in AWS, this server does on loopback, before the handler
 * sees anything (in this order):
 *
 * - `Host` must be a loopback name with this server's port (127.0.0.1, localhost, [::1]): a
 *   page that rebinds its own DNS name to 127.0.0.1 is answered 421, never served.
 * - `Origin`, when a browser sends one, must be this API's own origin: a cross-site request
 *   (even a "simple" one that needs no CORS reply) is refused with 403 before it acts.
 * - `Authorization: Bearer <secret>`, the secret `stowage start` wrote alone on one line to
 *   `<dataDir>/api-token` (0600); without it, 401 saying where the secret is.
 * - A body must be `Content-Type: application/json` (415 otherwise), and at most 1 MiB: a larger
 *   declared `Content-Length` is refused with 413 before a byte is read, a chunked body as soon
 *   as it passes the limit.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { sameSecret } from './access';

export type ApiHandler = (event: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult>;

/** The largest request body the API reads (its biggest real body is a few KiB). */
export const MAX_BODY_BYTES = 1024 * 1024;

export interface ApiServerOptions {
  port: number;
  host?: string;
  /** The bearer secret every request must carry. */
  secret: string;
  /** Where the secret is, for the 401's message. */
  secretPath: string;
}

function toEvent(req: IncomingMessage, body: Buffer): APIGatewayProxyEvent {
  const url = new URL(req.url ?? '/', 'http://local');
  const query: Record<string, string> = {};
  url.searchParams.forEach((v, k) => (query[k] = v));
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    // The secret stays here: the handler has no use for it, and logs must never see it.
    if (typeof v === 'string' && k !== 'authorization') headers[k] = v;
  }
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

function refuse(res: ServerResponse, status: number, error: string, message: string): void {
  res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
  res.end(JSON.stringify({ error, message }));
}

const LOOPBACK_NAMES = ['127.0.0.1', 'localhost', '[::1]'];

/**
 * Why the request may not be served (status, error, message), or undefined when it may. Reads
 * only the request line and headers.
 */
export function checkRequest(
  req: IncomingMessage,
  port: number,
  options: Pick<ApiServerOptions, 'secret' | 'secretPath'>,
): [number, string, string] | undefined {
  const host = (req.headers.host ?? '').toLowerCase();
  if (!LOOPBACK_NAMES.some((name) => host === `${name}:${port}`)) {
    return [
      421,
      'MisdirectedRequest',
      `this API answers only on loopback names (127.0.0.1:${port}, localhost:${port}), not Host "${req.headers.host ?? ''}"`,
    ];
  }
  const origin = req.headers.origin;
  if (origin !== undefined && !LOOPBACK_NAMES.some((n) => origin === `http://${n}:${port}`)) {
    return [
      403,
      'CrossOriginRefused',
      `requests from ${origin} are refused: only the API's own origin (http://127.0.0.1:${port}) may call it`,
    ];
  }
  const auth = req.headers.authorization ?? '';
  const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
  if (!m || !sameSecret(m[1]!, options.secret)) {
    return [
      401,
      'Unauthorized',
      `${m ? 'wrong' : 'no'} API token: send "Authorization: Bearer <token>" with the token \`stowage start\` wrote to ${options.secretPath} (readable by the user who started it); the CLI reads it there by itself (--data-dir DIR, default ~/.stowage) or from STOWAGE_TOKEN`,
    ];
  }
  const length = req.headers['content-length'];
  const hasBody =
    (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
  if (hasBody) {
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/json') {
      return [
        415,
        'UnsupportedMediaType',
        `a request body must be JSON sent as Content-Type: application/json (got "${req.headers['content-type'] ?? 'none'}")`,
      ];
    }
    if (length !== undefined && !(Number(length) <= MAX_BODY_BYTES)) {
      return [
        413,
        'PayloadTooLarge',
        `a request body may be at most ${MAX_BODY_BYTES} bytes (this one declares ${length})`,
      ];
    }
  }
  return undefined;
}

export async function startApiServer(
  handler: ApiHandler,
  options: ApiServerOptions,
): Promise<Server> {
  let port = options.port;
  const server = createServer((req, res) => {
    const refused = checkRequest(req, port, options);
    if (refused) {
      req.resume();
      refuse(res, ...refused);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (c: Buffer) => {
      if (tooLarge) return;
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        tooLarge = true;
        chunks.length = 0;
        refuse(
          res,
          413,
          'PayloadTooLarge',
          `a request body may be at most ${MAX_BODY_BYTES} bytes`,
        );
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (tooLarge) return;
      handler(toEvent(req, Buffer.concat(chunks))).then(
        (out) => {
          res.writeHead(out.statusCode, out.headers as Record<string, string>);
          res.end(out.body);
        },
        (err: Error) => {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: 'InternalError', message: err.message }));
        },
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '127.0.0.1', () => resolve());
  });
  port = (server.address() as AddressInfo).port;
  return server;
}
