/**
 * The HTTP API in local mode: each request becomes the API Gateway (REST, proxy integration)
 * event the Lambda handler receives in AWS, so the very same handler answers. Local mode adds
 * one route of its own, GET /local/config, which tells a standalone local agent where the
 * emulators are.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';

export type ApiHandler = (event: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult>;

function toEvent(req: IncomingMessage, body: Buffer): APIGatewayProxyEvent {
  const url = new URL(req.url ?? '/', 'http://local');
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

export async function startApiServer(
  handler: ApiHandler,
  localConfig: (url: URL) => Promise<unknown>,
  port: number,
  host = '127.0.0.1',
): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://local');
      if (req.method === 'GET' && url.pathname === '/local/config') {
        localConfig(url).then(
          (config) => {
            res.writeHead(200, { 'content-type': 'application/json' });
            res.end(JSON.stringify(config));
          },
          (err: Error) => {
            res.writeHead(400, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ error: 'LocalConfigError', message: err.message }));
          },
        );
        return;
      }
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
    server.listen(port, host, () => resolve());
  });
  return server;
}
