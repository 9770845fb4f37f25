/**
 * The API Gateway (REST, IAM auth) proxy handler. Local mode calls it with the same event shape.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { SfnWorkflows } from '../adapters/sfn-workflows';
import { SfnHistory } from '../adapters/sfn-history';
import { schedulesFromEnv } from '../adapters/eventbridge-schedules';
import { jobObserversFromEnv } from '../adapters/job-events';
import type { RequestDeps } from '../core/requests/launch';
import { siteQueueName } from '../../kernel/resources';
import { requireEnv } from '../shared/env';
import { newId, systemClock } from '../../kernel/ids';
import { createLogger, LogEvent } from '../../kernel/logger';
import { StowageError } from '../../kernel/errors';
import { route } from './routes';

const log = createLogger({ service: 'stowage-api' });
let deps: RequestDeps | undefined;

function wire(): RequestDeps {
  const prefix = requireEnv('SITE_QUEUE_URL_PREFIX');
  const schedules = schedulesFromEnv(process.env);
  return {
    catalog: new DynamoDbCatalog(requireEnv('TABLE_NAME')),
    workflows: new SfnWorkflows({
      backup: requireEnv('BACKUP_STATE_MACHINE_ARN'),
      restore: requireEnv('RESTORE_STATE_MACHINE_ARN'),
      verify: requireEnv('VERIFY_STATE_MACHINE_ARN'),
      snapshot: requireEnv('SNAPSHOT_STATE_MACHINE_ARN'),
      prune: requireEnv('PRUNE_STATE_MACHINE_ARN'),
    }),
    clock: systemClock,
    newId,
    queueUrlFor: (agent) => `${prefix}${siteQueueName(agent)}`,
    history: new SfnHistory(),
    jobObservers: jobObserversFromEnv(process.env, log),
    ...(process.env.PRUNE_AGENT ? { pruneAgent: process.env.PRUNE_AGENT } : {}),
    ...(schedules ? { schedules } : {}),
  };
}

export async function handler(event: APIGatewayProxyEvent): Promise<APIGatewayProxyResult> {
  deps ??= wire();
  return withCors(await answer(deps, event), event, process.env.CONSOLE_ORIGIN);
}

/**
 * The CORS header of an answer to the web console in AWS: its origin (CloudFront) is not the
 * API's, so the browser reads an answer only if it names that origin. Only the one configured
 * origin is ever named (API Gateway answers the preflights itself; cdk/constructs/api.ts), and
 * `Vary: Origin` keeps caches from handing one origin's answer to another. Local mode serves the
 * console from the API's own origin and sets no CONSOLE_ORIGIN.
 */
export function withCors(
  result: APIGatewayProxyResult,
  event: Pick<APIGatewayProxyEvent, 'headers'>,
  consoleOrigin: string | undefined,
): APIGatewayProxyResult {
  if (!consoleOrigin) return result;
  const origin = Object.entries(event.headers ?? {}).find(
    ([name]) => name.toLowerCase() === 'origin',
  )?.[1];
  const headers: Record<string, string | number | boolean> = {
    ...(result.headers ?? {}),
    vary: 'Origin',
  };
  if (origin === consoleOrigin) headers['access-control-allow-origin'] = consoleOrigin;
  return { ...result, headers };
}

/** The handler over given dependencies (tests run it over an in-memory catalog). */
export function handlerWith(
  given: RequestDeps,
): (event: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult> {
  return (event) => answer(given, event);
}

async function answer(
  deps: RequestDeps,
  event: APIGatewayProxyEvent,
): Promise<APIGatewayProxyResult> {
  const started = Date.now();
  const query: Record<string, string | undefined> = { ...(event.queryStringParameters ?? {}) };
  const body =
    event.body && event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString() : event.body;
  try {
    const res = await route(deps, { method: event.httpMethod, path: event.path, query, body });
    log.info(LogEvent.apiRequest, {
      method: event.httpMethod,
      path: event.path,
      status: res.status,
      ms: Date.now() - started,
    });
    return json(res.status, res.body);
  } catch (err) {
    const status = err instanceof StowageError ? err.status : 500;
    log.error(LogEvent.apiError, {
      method: event.httpMethod,
      path: event.path,
      status,
      error: err,
    });
    const name = err instanceof Error ? err.name : 'InternalError';
    const message = status === 500 ? 'internal error; see the API logs' : (err as Error).message;
    return json(status, { error: name, message });
  }
}

function json(statusCode: number, body: unknown): APIGatewayProxyResult {
  return {
    statusCode,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  };
}
