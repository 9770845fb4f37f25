/**
 * A fuzz test of the HTTP API: generated malformed requests (wrong methods and content types,
 * unknown and missing fields, values of the wrong type, huge and unicode strings, ids of 3,000
 * characters, bad percent-escapes, invalid JSON) go over real HTTP to the local API server in
 * this process, in front of the very handler API Gateway invokes, over an in-memory catalog
 * (which keeps DynamoDB's key-size limits, as the real adapter meets them) and recording
 * workflows. No answer may be a 5xx other than the deliberate 503 (no agent can take the work).
 *
 * It prints one line of figures; STOWAGE_FUZZ_SEED=S replays a run, STOWAGE_FUZZ_RUNS=N sets
 * how many requests it makes (default 1,500).
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { handlerWith } from '../../../../functions/api/handler';
import { ROUTES } from '../../../../functions/api/routes';
import { startApiServer } from '../../../../local/api-server';
import { makeAgent, makeJob, makePoint } from '../../../fixtures/factories';
import { makeRequestDeps } from '../../../fixtures/fake-workflows';

const SEED = Number(process.env.STOWAGE_FUZZ_SEED ?? Date.now() % 1_000_000);
const RUNS = Number(process.env.STOWAGE_FUZZ_RUNS ?? 1500);

const AGENT = 'site-1';
const POINT = 'rp-fuzz-1';
const JOB = 'job-fuzz-1';
const POLICY = 'nightly';

/** Every field name the OpenAPI document's request bodies use, and a few nobody knows. */
const FIELDS = [
  'target',
  'targets',
  'selector',
  'recoveryPointId',
  'name',
  'to',
  'inPlace',
  'inplace',
  'options',
  'consistency',
  'hooks',
  'pre',
  'post',
  'includeBinds',
  'optimizedStorage',
  'snapshots',
  'pool',
  'devices',
  'state',
  'recover',
  'volume',
  'intoVolume',
  'volumes',
  'network',
  'ports',
  'schedule',
  'timezone',
  'retention',
  'keepLast',
  'keepDaily',
  'keepWithin',
  'verifyEvery',
  'flexibleWindowMinutes',
  'dryRun',
  'points',
  'snapshotId',
  'pattern',
  'expiry',
  'stateful',
  'every',
  'stopped',
  'label',
  'agent',
  '__proto__',
  'constructor',
  'toString',
  '',
] as const;

const escapes = fc.constantFrom(
  '%',
  '%E0%A4%A',
  '%ZZ',
  '%00',
  '%2F',
  '%2e%2e',
  '..',
  '%C0%AF',
  '%uD800',
  '%FF%FE',
  '\\u0000',
);

/** Strings people do not type: huge, unicode, control characters, escapes, real ids. */
const nastyString = fc.oneof(
  fc.string(),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom(
    'x'.repeat(3000),
    'é'.repeat(3000),
    '😀'.repeat(1500),
    'a'.repeat(100_000),
    '\u0000',
    '\ud800',
    'docker:web',
    `docker:${'w'.repeat(3000)}`,
    'path:relative/../x',
    'path:/srv/../etc',
    'lxd:c1@site-1',
    'docker:web@nobody',
    `${POINT}`,
    'rate(1 minute)',
    'cron(0 0 * * ? *)',
    'at(2030-01-01T00:00:00)',
    'Europe/Paris',
    'Mars/Olympus',
  ),
  escapes,
);

/** Any JSON value, and nasty strings where a string goes. */
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  { maxDepth: 3 },
  nastyString,
  fc.jsonValue({ maxDepth: 3 }),
  fc.integer(),
  fc.double(),
  fc.constantFrom(-1, 0, 1e308, Number.MAX_SAFE_INTEGER + 2, true, false, null, [], {}),
);

const bodyObject = fc.dictionary(fc.oneof(fc.constantFrom(...FIELDS), fc.string()), anyValue, {
  maxKeys: 6,
});

const body = fc.oneof(
  bodyObject.map((o) => JSON.stringify(o)),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.constantFrom(
    '',
    '{',
    '{"target":',
    '{"target": "docker:web",}',
    "{'target': 'docker:web'}",
    '{"target": "\\ud800"}',
    '{"target": "\\x41"}',
    '{"a":'.repeat(5000),
    '['.repeat(10_000),
    'null',
    '\u0000',
    `{"target": "${'x'.repeat(900_000)}"}`,
  ),
  nastyString,
);

/** A path of one of the routes with its parameters replaced, or a path nobody routes. */
const path = fc.oneof(
  fc
    .tuple(fc.constantFrom(...ROUTES.map(([, template]) => template)), nastyString, fc.boolean())
    .map(([template, id, slash]) => {
      const text = id === '' ? 'x' : id;
      // Raw text may not even be a valid request target; keep it a legal URL by escaping,
      // except the deliberately bad escapes.
      const part = /^(%|\.\.|\\u)/.test(text) ? text : escapePart(text);
      return template.replace(/\{[^}]+\}/g, part) + (slash ? '/' : '');
    }),
  fc.constantFrom(
    `/points/${POINT}`,
    `/jobs/${JOB}`,
    `/policies/${POLICY}`,
    `/policies/${POLICY}/runs`,
    '/jobs/%E0%A4%A',
    `/jobs/${'j'.repeat(3000)}`,
    `/points/${'p'.repeat(3000)}`,
    `/policies/${'n'.repeat(3000)}`,
    `/policies/${'n'.repeat(3000)}/runs`,
    '/points/../jobs',
    '//jobs',
    '/jobs//x',
    '/',
  ),
  fc.webPath(),
);

const query = fc.dictionary(
  fc.constantFrom('limit', 'platform', 'tier', 'target', 'dryRun', 'x'),
  fc.oneof(nastyString, fc.constantFrom('0', '-1', '1.5', '1e3', '1001', '99999999999999999999')),
  { maxKeys: 3 },
);

const method = fc.oneof(
  fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD'),
  fc.constantFrom('TRACE', 'PROPFIND', 'FOO'),
);

const contentType = fc.constantFrom(
  undefined,
  'application/json',
  'application/json; charset=utf-16',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/octet-stream',
  '*/*',
);

/** A valid body for each write route, which the generator then breaks one way or another. */
const VALID_BODIES: Record<string, Record<string, unknown>> = {
  '/backups': { target: 'docker:web', consistency: 'pause', hooks: { pre: [{ command: 'true' }] } },
  '/restores': { recoveryPointId: POINT, name: 'web2', options: { network: 'backend' } },
  '/verifications': { recoveryPointId: POINT },
  '/rollbacks': { target: 'docker:web' },
  '/prunes': { dryRun: true },
  '/points/deletions': { recoveryPointId: POINT },
  '/policies': { name: 'p2', targets: ['docker:web'], schedule: 'rate(1 day)', keepLast: 3 },
  '/policies/{name}': { schedule: 'cron(0 3 * * ? *)', timezone: 'Europe/Paris' },
  '/policies/{name}/runs': {},
  '/snapshots': { target: 'lxd:c1', pattern: 'snap%d', expiry: '7d' },
  '/snapshots/deletions': { snapshotId: 'lxd:c1/snap0' },
  '/snapshots/restores': { snapshotId: 'lxd:c1/snap0' },
  '/snapshots/expiries': { snapshotId: 'lxd:c1/snap0', expiry: 'never' },
  '/snapshots/schedules': { target: 'lxd:c1', every: '@daily' },
};

/** One valid body with one field dropped, changed to any value, or an unknown field added. */
const brokenBody = fc
  .tuple(
    fc.constantFrom(...Object.keys(VALID_BODIES)),
    fc.constantFrom('drop', 'change', 'add', 'nest'),
    fc.nat(),
    fc.oneof(fc.constantFrom(...FIELDS), fc.string()),
    anyValue,
  )
  .map(([route, how, n, field, value]) => {
    const valid = { ...VALID_BODIES[route] };
    const keys = Object.keys(valid);
    const key = keys.length > 0 ? keys[n % keys.length]! : field;
    if (how === 'drop') delete valid[key];
    if (how === 'change') valid[key] = value;
    if (how === 'add') valid[field] = value;
    if (how === 'nest') valid.options = { [field]: value };
    return { route, body: JSON.stringify(valid) };
  });

const ROUTE_METHOD = new Map(ROUTES.map(([m, template]) => [template, m] as const));

/** A request aimed at a route with a nearly valid body: it gets past parsing into the logic. */
const aimed = fc
  .tuple(brokenBody, fc.nat(9), contentType, query)
  .map(([{ route, body }, roll, ct, q]) => ({
    method: roll === 0 ? 'PUT' : (ROUTE_METHOD.get(route) ?? 'POST'),
    path: route.replace('{name}', roll === 1 ? 'n'.repeat(3000) : POLICY),
    query: q,
    body,
    contentType: roll === 2 ? ct : 'application/json',
    withBody: roll !== 3,
  }));

const request = fc.oneof(
  fc.record({ method, path, query, body, contentType, withBody: fc.boolean() }),
  aimed,
);

/** Percent-encodes every byte of the UTF-8 of `text` but the unreserved ones (lone surrogates too). */
function escapePart(text: string): string {
  return [...Buffer.from(text, 'utf8')]
    .map((b) =>
      /[A-Za-z0-9._~-]/.test(String.fromCharCode(b))
        ? String.fromCharCode(b)
        : `%${b.toString(16).toUpperCase().padStart(2, '0')}`,
    )
    .join('');
}

interface Request {
  method: string;
  path: string;
  query: Record<string, string>;
  body: string;
  contentType: string | undefined;
  withBody: boolean;
}

let server: Server;
let base: string;
/** The API's error log lines (the handler logs what became a 5xx), shown when the test fails. */
const errorLines: string[] = [];

beforeAll(async () => {
  vi.spyOn(process.stderr, 'write').mockImplementation((line) => {
    if (String(line).includes('"level":"error"')) errorLines.push(String(line).slice(0, 400));
    return true;
  });
  const { catalog, deps } = makeRequestDeps();
  await catalog.putAgent(
    makeAgent({ agent: AGENT, targets: ['docker:web', 'lxd:c1', 'path:/srv/data'] }),
  );
  await catalog.putPoint(makePoint({ recoveryPointId: POINT, agent: AGENT }));
  await catalog.createJob(makeJob({ jobId: JOB, agent: AGENT }));
  server = await startApiServer(handlerWith(deps), 0, '127.0.0.1');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // A policy through the API itself, so its stored form is what the API makes.
  const created = await fetch(`${base}/policies`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: POLICY, targets: ['docker:web'], schedule: 'rate(1 day)' }),
  });
  expect(created.status).toBeLessThan(500);
});

afterAll(async () => {
  vi.restoreAllMocks();
  await new Promise((resolve) => server.close(resolve));
});

async function send(req: Request): Promise<{ status: number; error?: string }> {
  const url = new URL(base);
  url.pathname = req.path;
  // Set the query by hand, so bad escapes in it reach the server as sent.
  const search = Object.entries(req.query)
    .map(([k, v]) => `${k}=${/^%/.test(v) ? v : escapePart(v)}`)
    .join('&');
  const target = `${base}${req.path}${search ? `?${search}` : ''}`;
  const hasBody = req.withBody && req.method !== 'GET' && req.method !== 'HEAD';
  const res = await fetch(target, {
    method: req.method,
    headers: req.contentType ? { 'content-type': req.contentType } : {},
    signal: AbortSignal.timeout(10_000),
    ...(hasBody ? { body: req.body } : {}),
  });
  const text = await res.text();
  let error: string | undefined;
  try {
    error = (JSON.parse(text) as { error?: string }).error;
  } catch {
    error = undefined;
  }
  return { status: res.status, ...(error !== undefined ? { error } : {}) };
}

describe('HTTP API fuzz', () => {
  it('answers every malformed request with a 4xx (or a deliberate 503), never another 5xx', async () => {
    const byStatus = new Map<number, number>();
    const failures: string[] = [];
    let sent = 0;
    const started = Date.now();

    await fc.assert(
      fc.asyncProperty(request, async (req) => {
        let answer: { status: number; error?: string };
        try {
          answer = await send(req);
        } catch (err) {
          // fetch itself refusing the request (an invalid method or URL) is not an answer.
          if (err instanceof TypeError) return true;
          throw err;
        }
        sent++;
        byStatus.set(answer.status, (byStatus.get(answer.status) ?? 0) + 1);
        const deliberate = answer.status === 503 && answer.error === 'AgentUnavailable';
        if (answer.status >= 500 && !deliberate) {
          failures.push(
            `${req.method} ${req.path.slice(0, 120)} -> ${answer.status} ${answer.error ?? ''}`,
          );
          return false;
        }
        return true;
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );

    const count = (from: number, to: number) =>
      [...byStatus].filter(([s]) => s >= from && s < to).reduce((n, [, c]) => n + c, 0);
    console.log(
      `api fuzz figures: seed ${SEED}, requests ${sent}, 2xx ${count(200, 300)}, ` +
        `4xx ${count(400, 500)}, 503 ${byStatus.get(503) ?? 0}, other 5xx ${failures.length}, ` +
        `statuses ${JSON.stringify(Object.fromEntries([...byStatus].sort(([a], [b]) => a - b)))}, ` +
        `${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    expect({ failures, errors: errorLines.slice(0, 5) }).toEqual({ failures: [], errors: [] });
    expect(sent).toBeGreaterThanOrEqual(1000);
  }, 120_000);
});

describe('local HTTP API server', () => {
  it('reads a request target beginning with // as a path and keeps serving (it used to end the process)', async () => {
    const res = await fetch(`${base}//%F2%8B%B5%AB//+//~/(///5?tier=%E0%A4%A`);

    expect(res.status).toBe(404);
    expect((await fetch(`${base}/agents`)).status).toBe(200);
  });

  it('refuses a body over 1 MiB with 413 before reading it whole', async () => {
    const res = await fetch(`${base}/backups`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ target: 'x'.repeat(1024 * 1024) }),
    });

    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ error: 'PayloadTooLarge' });
  });
});
