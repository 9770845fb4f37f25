/**
 * API Gateway's request models, taken from the synthesized template, against the bodies the
 * CLI and the web console really send: every body a real command sends passes the model of the
 * method it reaches, and malformed variants of them (an unknown field, a field of the wrong
 * type, a required field missing, nested ones too) fail it. API Gateway validates with JSON
 * Schema draft 4, so this does too (Ajv's draft-04 class).
 *
 * The CLI's bodies are captured, not written down here: each command runs as `stowage` does
 * (cli/bin.mjs, from the sources) against a small HTTP server that records what it is sent. The
 * console's are made by its own body builders (console/src/restore-form.ts, policy-form.ts).
 */
import './console-build';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import Ajv from 'ajv-draft-04';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../cdk/project';
import { SITES_CONTEXT_KEY, StowageStack } from '../../cdk/stack';
import { emptyForm, toBody } from '../../console/src/restore-form';
import { blank, bodyOf, formOf } from '../../console/src/policy-form';

type Json = Record<string, unknown>;

interface Sent {
  method: string;
  path: string;
  contentType?: string;
  body: unknown;
  /** Where it came from: the CLI's command line, or the console's builder. */
  from: string;
}

const POINT = 'rp-0123456789abcdef';

/** The CLI commands that send a body, with the flags each platform adds. */
const CLI_COMMANDS: string[][] = [
  ['backup', 'docker:web'],
  [
    'backup',
    'docker:web@site-a',
    '--consistency',
    'stop',
    '--pre-hook',
    'pg_dump -f /backup/db.sql',
    '--post-hook',
    'rm /backup/db.sql',
    '--hook-timeout',
    '120',
    '--hook-on-error',
    'continue',
    '--include-binds',
    '--full-read',
  ],
  ['backup', '--selector', 'docker:app=shop,tier=db@site-a', '--consistency', 'pause'],
  ['backup', 'docker-compose:shop'],
  ['backup', 'lxd:c1', '--no-snapshots', '--optimized-storage', '--consistency', 'stop'],
  ['backup', 'lxd-volume:default/data'],
  ['backup', 'lxd-server:host1'],
  [
    'backup',
    'vsphere:DC0/vm/app',
    '--include-disk',
    'Hard disk 1',
    '--include-disk',
    'Hard disk 2',
  ],
  ['backup', 'vapp:DC0/vapp/shop', '--exclude-disk', 'Hard disk 2'],
  ['backup', 'path:/srv/data'],
  ['restore', POINT],
  ['restore', POINT, '--name', 'web2'],
  [
    'restore',
    POINT,
    '--name',
    'web2',
    '--network',
    'backend',
    '--port',
    '80=8080',
    '--port',
    '443/tcp=',
    '--volume-name',
    'data=data2',
  ],
  ['restore', POINT, '--in-place'],
  ['restore', POINT, '--in-place', '--plan'],
  ['restore', POINT, '--to', 'docker:web3@site-b'],
  ['restore', POINT, '--volume', 'data', '--into', 'data3'],
  ['restore', POINT, '--file', 'etc/app.conf', '--file', 'srv', '--dest', '/tmp/out'],
  ['restore', POINT, '--file', 'etc/app.conf', '--into-volume', 'data'],
  [
    'restore',
    POINT,
    '--name',
    'c2',
    '--pool',
    'fast',
    '--device',
    'eth0,network=lxdbr1,hwaddr=00:16:3e:00:00:01',
    '--state',
    'stopped',
  ],
  ['restore', POINT, '--recover'],
  [
    'restore',
    POINT,
    '--name',
    'app2',
    '--folder',
    'DC0/vm/restored',
    '--resource-pool',
    'DC0/host/DC0_C0/Resources',
    '--datastore',
    'LocalDS_0',
    '--network-map',
    'VM Network=DVS0',
    '--state',
    'running',
  ],
  ['restore', POINT, '--disk', 'Hard disk 2', '--attach-to', 'DC0/vm/other'],
  [
    'restore',
    POINT,
    '--disk',
    'Hard disk 2',
    '--attach-to',
    'DC0/vm/other',
    '--controller',
    '1000',
    '--unit',
    '3',
  ],
  ['ls', POINT, 'etc'],
  ['verify', POINT],
  ['points', 'delete', POINT],
  ['rollback', 'docker:web'],
  ['prune'],
  ['prune', '--dry-run'],
  ['prune', '--repack-below', '30'],
  [
    'policy',
    'create',
    'nightly',
    '--target',
    'docker:web',
    '--target',
    'lxd:c1@site-b',
    '--selector',
    'docker:app=shop',
    '--schedule',
    'cron(0 3 * * ? *)',
    '--timezone',
    'Europe/Paris',
    '--flexible-window',
    '15',
    '--keep-last',
    '3',
    '--keep-hourly',
    '24',
    '--keep-daily',
    '7',
    '--keep-weekly',
    '4',
    '--keep-monthly',
    '12',
    '--keep-yearly',
    '2',
    '--keep-within',
    '2d',
    '--verify-every',
    '7',
    '--restore-test-every',
    '14',
    '--restore-test-probe',
    'wget -q -O- http://127.0.0.1/health',
    '--consistency',
    'stop',
    '--pre-hook',
    'sync',
  ],
  ['policy', 'create', 'hourly', '--target', 'path:/srv/data', '--schedule', 'rate(1 hour)'],
  ['policy', 'update', 'nightly', '--schedule', 'rate(6 hours)', '--keep-last', '5'],
  ['policy', 'update', 'nightly', '--target', 'docker:db', '--no-snapshots'],
  ['policy', 'run', 'nightly'],
  ['cancel', 'job-0123456789'],
  ['snapshot', 'create', 'lxd:c1'],
  ['snapshot', 'create', 'lxd:c1@site-b', '--pattern', 'before-%d', '--expiry', '7d', '--stateful'],
  ['snapshot', 'create', 'vsphere:DC0/vm/app', '--expiry', '2026-12-24T00:00:00Z'],
  ['snapshot', 'expire', 'lxd:c1/snap0', '--expiry', 'never'],
  ['snapshot', 'delete', 'lxd:c1/snap0'],
  ['snapshot', 'restore', 'lxd:c1/snap0'],
  ['snapshot', 'restore', 'vsphere:DC0/vm/app/snap0', '--state', 'stopped'],
  ['snapshot', 'schedule', 'lxd:c1', '--every', '@daily', '--expiry', '7d'],
  ['snapshot', 'schedule', 'lxd:c1', '--every', '0 */6 * * *', '--pattern', 'auto-%d', '--stopped'],
  ['snapshot', 'schedule', 'lxd:c1', '--every', 'none'],
];

/** What the recording server answers: enough for each command to send its request and end. */
function answerFor(method: string, path: string): [number, unknown] {
  const job = {
    jobId: 'job-0123456789',
    kind: 'RESTORE',
    status: 'SUCCEEDED',
    target: 'docker:web',
    listing: { entries: [], truncated: false },
  };
  if (method === 'GET') return [200, path.startsWith('/jobs/') ? job : []];
  if (path.endsWith('/runs')) return [202, { jobs: [], refused: [] }];
  return [202, { ...job, status: 'PENDING', steps: [], schedule: 'x', timezone: 'UTC' }];
}

function startRecorder(sent: Sent[]): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (text) {
        sent.push({
          method: req.method ?? 'GET',
          path,
          ...(req.headers['content-type'] ? { contentType: req.headers['content-type'] } : {}),
          body: JSON.parse(text),
          from: '',
        });
      }
      const [status, body] = answerFor(req.method ?? 'GET', path);
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Runs `stowage ARGS` against the recorder; resolves when it exits (whatever its exit code). */
function runCli(args: string[], api: string, sent: Sent[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const before = sent.length;
    const child = spawn(process.execPath, [join(REPO_ROOT, 'cli', 'bin.mjs'), ...args, '--json'], {
      env: {
        ...process.env,
        STOWAGE_API: api,
        STOWAGE_TOKEN: 'test-token',
        STOWAGE_FROM_SOURCE: '1',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('exit', () => {
      // Label what this command sent (commands run one at a time).
      for (const s of sent.slice(before)) s.from = `stowage ${args.join(' ')}`;
      if (
        sent.length === before &&
        !['policy run', 'cancel'].some((c) => args.join(' ').startsWith(c))
      ) {
        reject(new Error(`stowage ${args.join(' ')} sent no body: ${stderr.slice(0, 500)}`));
        return;
      }
      resolve();
    });
  });
}

/** Each method's body model in the template, by `METHOD /path/{param}`. */
function modelsOf(template: Json): Map<string, Json> {
  const resources = template.Resources as Record<string, { Type: string; Properties: Json }>;
  const pathOf = (ref: unknown): string => {
    const id = (ref as { Ref?: string }).Ref;
    if (!id) return ''; // the API's root resource (Fn::GetAtt RootResourceId)
    const resource = resources[id]!;
    return `${pathOf(resource.Properties.ParentId)}/${String(resource.Properties.PathPart)}`;
  };
  const models = new Map<string, Json>();
  for (const resource of Object.values(resources)) {
    if (resource.Type !== 'AWS::ApiGateway::Method') continue;
    const modelRef = (resource.Properties.RequestModels as Json | undefined)?.['application/json'];
    if (!modelRef) continue;
    const model = resources[(modelRef as { Ref: string }).Ref]!;
    expect(model.Type).toBe('AWS::ApiGateway::Model');
    models.set(
      `${String(resource.Properties.HttpMethod)} ${pathOf(resource.Properties.ResourceId) || '/'}`,
      model.Properties.Schema as Json,
    );
  }
  return models;
}

/** The model of the method a concrete request reaches (`/policies/nightly` → `/policies/{name}`). */
function modelFor(models: Map<string, Json>, method: string, path: string): Json | undefined {
  for (const [key, schema] of models) {
    const [m, template] = key.split(' ') as [string, string];
    const pattern = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`);
    if (m === method && pattern.test(path)) return schema;
  }
  return undefined;
}

/** Malformed variants of a valid body, each with what is wrong with it. */
function malformed(body: Json, schema: Json): [string, unknown][] {
  const out: [string, unknown][] = [
    ['an unknown field', { ...body, bogus: true }],
    ['an array instead of the object', [body]],
    ['a string instead of the object', JSON.stringify(body)],
  ];
  const properties = (schema.properties ?? {}) as Record<string, Json>;
  for (const [field, value] of Object.entries(body)) {
    const wrong =
      typeof value === 'string'
        ? 12345
        : typeof value === 'number'
          ? '12'
          : typeof value === 'boolean'
            ? 'true'
            : Array.isArray(value)
              ? 'not-a-list'
              : value && typeof value === 'object'
                ? 'not-an-object'
                : 0;
    out.push([`${field} of the wrong type`, { ...body, [field]: wrong }]);
    const nested = properties[field];
    if (
      value &&
      typeof value === 'object' &&
      !Array.isArray(value) &&
      nested?.additionalProperties === false
    ) {
      out.push([`an unknown field in ${field}`, { ...body, [field]: { ...value, bogus: 1 } }]);
    }
    if (Array.isArray(value) && value.length > 0) {
      out.push([`a number in the list ${field}`, { ...body, [field]: [...value, 7] }]);
    }
  }
  for (const field of (schema.required ?? []) as string[]) {
    const rest = { ...body };
    delete rest[field];
    out.push([`no ${field}`, rest]);
  }
  return out;
}

const sent: Sent[] = [];
let models: Map<string, Json>;
let recorder: Server;
const ajv = new Ajv({ allErrors: true, strict: false });

beforeAll(async () => {
  const cdkJson = JSON.parse(readFileSync(join(REPO_ROOT, 'cdk.json'), 'utf8')) as {
    context: Json;
  };
  const app = new App({
    context: {
      ...cdkJson.context,
      'aws:cdk:bundling-stacks': [],
      [SITES_CONTEXT_KEY]: ['local'],
    },
  });
  models = modelsOf(Template.fromStack(new StowageStack(app, 'Stowage')).toJSON() as Json);

  recorder = await startRecorder(sent);
  const api = `http://127.0.0.1:${(recorder.address() as AddressInfo).port}`;
  // One at a time: each command's requests are labelled with it when it exits.
  for (const args of CLI_COMMANDS) await runCli(args, api, sent);

  // The console's bodies, from its own builders.
  const restoreForms = [
    { ...emptyForm(), name: 'web2' },
    {
      ...emptyForm(),
      name: 'web2',
      network: 'backend',
      ports: '80/tcp=8081 443=',
      volumes: { data: 'data2', logs: '' },
    },
    { ...emptyForm(), mode: 'inPlace' as const },
    { ...emptyForm(), mode: 'agent' as const, agent: 'site-b' },
    { ...emptyForm(), mode: 'agent' as const, agent: 'site-b', name: 'c9' },
  ];
  for (const [target, form] of [
    ['docker:web', restoreForms[0]!],
    ['docker:web', restoreForms[1]!],
    ['docker:web', restoreForms[2]!],
    ['docker:web', restoreForms[3]!],
    ['lxd:c1', { ...restoreForms[4]!, pool: 'fast', state: 'stopped' as const }],
    ['lxd-volume:default/data', { ...emptyForm(), name: 'data2', pool: 'fast' }],
    ['vsphere:DC0/vm/app', { ...emptyForm(), name: 'app2' }],
  ] as const) {
    const body = toBody(form, POINT, target);
    sent.push({ method: 'POST', path: '/restores', body, from: `console restore ${target}` });
    sent.push({
      method: 'POST',
      path: '/restores',
      body: { ...body, plan: true },
      from: `console restore plan ${target}`,
    });
  }
  sent.push({
    method: 'POST',
    path: '/backups',
    body: { target: 'docker:web' },
    from: 'console backup',
  });
  const policyForm = { ...blank, name: 'nightly', targets: 'docker:web lxd:c1', keepLast: '3' };
  sent.push({
    method: 'POST',
    path: '/policies',
    body: bodyOf(policyForm, true),
    from: 'console policy create',
  });
  sent.push({
    method: 'PATCH',
    path: '/policies/nightly',
    body: bodyOf(
      formOf({
        name: 'nightly',
        targets: ['docker:web', 'docker:app=shop'],
        schedule: 'cron(0 3 * * ? *)',
        timezone: 'Europe/Paris',
        flexibleWindowMinutes: 0,
        retention: { keepLast: 3, keepDaily: 7 },
        options: {},
        verifyEvery: 3,
        createdAt: '2026-12-01T00:00:00.000Z',
        updatedAt: '2026-12-01T00:00:00.000Z',
        runs: 4,
      }),
      false,
    ),
    from: 'console policy update',
  });
}, 300_000);

afterAll(
  () => new Promise<void>((resolve) => (recorder ? recorder.close(() => resolve()) : resolve())),
);

describe("API Gateway's request models", () => {
  it('has a draft-04 model for every operation of the document that takes a body', () => {
    expect(models.size).toBeGreaterThan(10);
    for (const schema of models.values()) {
      expect(schema.$schema).toBe('http://json-schema.org/draft-04/schema#');
      expect(() => ajv.compile(schema)).not.toThrow();
    }
  });

  it('accepts every body the CLI and the console send, as JSON', () => {
    expect(sent.length).toBeGreaterThanOrEqual(CLI_COMMANDS.length);
    const refused: string[] = [];
    for (const request of sent) {
      if (request.from.startsWith('stowage')) {
        expect(request.contentType, request.from).toBe('application/json');
      }
      const schema = modelFor(models, request.method, request.path);
      if (!schema) {
        // No model: API Gateway passes the body on (an action's `{}`, e.g. a cancel or a run).
        expect(request.body, `${request.from}: ${request.method} ${request.path}`).toEqual({});
        continue;
      }
      const validate = ajv.compile(schema);
      if (!validate(request.body)) {
        refused.push(
          `${request.from} -> ${request.method} ${request.path} ${JSON.stringify(request.body)}: ${ajv.errorsText(validate.errors)}`,
        );
      }
    }
    expect(refused).toEqual([]);
  });

  it('refuses malformed variants of those bodies: unknown fields, wrong types, missing fields', () => {
    const accepted: string[] = [];
    let tried = 0;
    for (const request of sent) {
      const schema = modelFor(models, request.method, request.path);
      if (!schema) continue;
      const validate = ajv.compile(schema);
      for (const [what, body] of malformed(request.body as Json, schema)) {
        tried++;
        if (validate(body)) accepted.push(`${request.from}: ${what}: ${JSON.stringify(body)}`);
      }
    }
    console.log(
      `api models: ${sent.length} real bodies (${sent.filter((s) => s.from.startsWith('stowage')).length} from ${CLI_COMMANDS.length} CLI commands, the rest from the console) passed; ${tried} malformed variants, ${tried - accepted.length} refused`,
    );
    expect(tried).toBeGreaterThan(200);
    expect(accepted).toEqual([]);
  });
});
