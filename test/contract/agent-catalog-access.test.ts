/**
 * What a site's agent writes to the catalog, against what its IAM role allows: a real agent
 * worker (agents/worker/worker.ts) runs a backup task of site-a with the DynamoDB catalog on
 * dynalite, through a DynamoDB client that records every request it sends; the control plane
 * (the hand-over, the readers) uses a client of its own. Every request of the agent must be
 * allowed by site-a's role as the synthesized CDK template has it (its dynamodb:LeadingKeys
 * conditions evaluated on the request's partition key), every write must land under site-a's
 * keys, and the job's record must be the control plane's alone, while readers still see the
 * agent's progress and point of no return.
 */
// The stack deploys the web console's build: made once if it is missing.
import '../cdk/console-build';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { SFNClient } from '@aws-sdk/client-sfn';
import type { Message, SQSClient } from '@aws-sdk/client-sqs';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import dynalite from 'dynalite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TaskRun } from '../../agents/core/runner';
import { AgentWorker } from '../../agents/worker/worker';
import { REPO_ROOT } from '../../cdk/project';
import { SITES_CONTEXT_KEY, StowageStack } from '../../cdk/stack';
import { handOverRunToken } from '../../functions/core/jobs';
import { catalogTableInput, DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { silentLogger } from '../../kernel/logger';
import { LOCAL_AWS } from '../../local/emulators';
import type { AgentTask, TaskClaim } from '../../statemachines/contracts';
import { makeJob } from '../fixtures/factories';

const SITE = 'site-a';
const TABLE = 'catalog-access';

interface Statement {
  Effect: string;
  Action: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
}

/** One DynamoDB request the agent sent: its action and the partition key it names. */
interface Sent {
  action: string;
  pk?: string;
}

const asArray = <T>(v: T | T[]): T[] => (Array.isArray(v) ? v : [v]);
const glob = (pattern: string) =>
  new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`);

/**
 * Whether an Allow statement of the role lets this request through: its action, and every
 * dynamodb:LeadingKeys condition (ForAllValues:StringLike / StringEquals) on the request's key.
 */
function allowed(statements: Statement[], request: Sent): boolean {
  return statements.some((st) => {
    if (st.Effect !== 'Allow' || !asArray(st.Action).includes(request.action)) return false;
    return Object.entries(st.Condition ?? {}).every(([operator, keys]) => {
      const values = asArray(keys['dynamodb:LeadingKeys'] ?? []);
      if (values.length === 0) return true;
      if (request.pk === undefined) return false;
      if (operator === 'ForAllValues:StringLike')
        return values.some((v) => glob(v).test(request.pk!));
      if (operator === 'ForAllValues:StringEquals') return values.includes(request.pk);
      return false;
    });
  });
}

/** The DynamoDB statements of a site's role in the synthesized template. */
function roleStatements(site: string): Statement[] {
  const cdkJson = JSON.parse(readFileSync(join(REPO_ROOT, 'cdk.json'), 'utf8')) as {
    context: Record<string, unknown>;
  };
  const app = new App({
    context: {
      ...cdkJson.context,
      'aws:cdk:bundling-stacks': [],
      [SITES_CONTEXT_KEY]: [SITE, 'site-b'],
    },
  });
  const stack = new StowageStack(app, 'Stowage');
  const role = stack.agentAccess.roles[site]!;
  const roleId = Stack.of(stack).resolve(
    (role.node.defaultChild as unknown as { logicalId: string }).logicalId,
  ) as string;
  const resources = Template.fromStack(stack).toJSON().Resources as Record<
    string,
    { Type: string; Properties: Record<string, unknown> }
  >;
  return Object.values(resources)
    .filter(
      (r) =>
        r.Type === 'AWS::IAM::Policy' &&
        asArray(r.Properties.Roles).some(
          (ref) => JSON.stringify(ref) === JSON.stringify({ Ref: roleId }),
        ),
    )
    .flatMap((r) => (r.Properties.PolicyDocument as { Statement: Statement[] }).Statement)
    .filter((st) => asArray(st.Action).some((a) => a.startsWith('dynamodb:')));
}

const server = dynalite({ createTableMs: 0 });
let endpoint: string;
const clients: DynamoDBClient[] = [];

function client(record?: Sent[]): DynamoDBClient {
  const c = new DynamoDBClient({
    ...LOCAL_AWS,
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    endpoint,
  });
  if (record) {
    c.middlewareStack.add(
      (next, context) => async (args) => {
        // Marshalled ({S: ...}) or not, as the document client's middleware has it by then.
        const text = (v: unknown) =>
          typeof v === 'string' ? v : (v as { S?: string } | undefined)?.S;
        const input = args.input as {
          Key?: { pk?: unknown };
          Item?: { pk?: unknown };
          ExpressionAttributeValues?: Record<string, unknown>;
        };
        const pk =
          text(input.Key?.pk) ??
          text(input.Item?.pk) ??
          text(input.ExpressionAttributeValues?.[':pk']);
        record.push({
          action: `dynamodb:${(context.commandName ?? '').replace(/Command$/, '')}`,
          ...(pk !== undefined ? { pk } : {}),
        });
        return next(args);
      },
      { step: 'initialize', name: 'recordRequests' },
    );
  }
  clients.push(c);
  return c;
}

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  await client().send(new CreateTableCommand(catalogTableInput(TABLE)));
});

afterAll(async () => {
  for (const c of clients) c.destroy();
  await new Promise((resolve) => server.close(resolve));
});

describe("a site's agent and the catalog", () => {
  it("writes only under its own site's keys, each request allowed by its role, and readers see its reports", async () => {
    const statements = roleStatements(SITE);
    expect(statements.length).toBeGreaterThan(0);
    const control = new DynamoDbCatalog(TABLE, client());
    const sent: Sent[] = [];
    const agentCatalog = new DynamoDbCatalog(TABLE, client(sent));
    const job = makeJob({
      jobId: 'job-access-1',
      status: 'RUNNING',
      items: [
        { target: 'docker:web', agent: SITE, recoveryPointId: 'rp-access-1', status: 'PENDING' },
      ],
    });
    await control.createJob(job);
    const other = makeJob({ jobId: 'job-access-2', status: 'RUNNING', agent: 'site-b' });
    await control.createJob(other);

    // The queue holds one task for site-a; the claim's answer triggers the real hand-over.
    const task: AgentTask = {
      kind: 'BACKUP',
      jobId: job.jobId,
      itemIndex: 0,
      recoveryPointId: 'rp-access-1',
      target: 'docker:web',
      options: {},
    } as AgentTask;
    const messages: Message[] = [
      {
        MessageId: 'm1',
        ReceiptHandle: 'rh1',
        Body: JSON.stringify({ taskToken: 'claim-token', task }),
      },
    ];
    const answers: { op: string; token: string }[] = [];
    const sqs = {
      send: async (
        command: { constructor: { name: string } },
        options?: { abortSignal?: AbortSignal },
      ) => {
        if (command.constructor.name === 'ReceiveMessageCommand') {
          if (messages.length) return { Messages: messages.splice(0, 1) };
          await new Promise((resolve) => {
            const t = setTimeout(resolve, 200);
            options?.abortSignal?.addEventListener('abort', () => {
              clearTimeout(t);
              resolve(undefined);
            });
          });
          return { Messages: [] };
        }
        return {};
      },
    };
    const sfn = {
      send: async (command: { constructor: { name: string }; input: Record<string, string> }) => {
        const op = command.constructor.name.replace(/Command$/, '');
        answers.push({ op, token: command.input.taskToken! });
        if (op === 'SendTaskSuccess' && command.input.taskToken === 'claim-token') {
          const claim = JSON.parse(command.input.output!) as TaskClaim;
          await handOverRunToken(
            { catalog: control },
            {
              jobId: job.jobId,
              claimId: claim.claimId,
              agent: claim.agent,
              taskToken: 'run-token',
            },
          );
        }
        return {};
      },
    };
    let resolveDone: () => void;
    const done = new Promise<void>((r) => (resolveDone = r));
    const worker = new AgentWorker({
      queueUrl: 'queue',
      sqs: sqs as unknown as SQSClient,
      sfn: sfn as unknown as SFNClient,
      catalog: agentCatalog,
      runner: {
        agent: SITE,
        drivers: new Map(),
        repository: () => Promise.reject(new Error('no repository in this test')),
        log: silentLogger,
      },
      log: silentLogger,
      heartbeatMs: 20,
      jobCheckMs: 20,
      waitTimeSeconds: 1,
      execute: async (_task, run) => {
        try {
          await script(run);
        } catch (err) {
          failure = err as Error;
          throw err;
        } finally {
          resolveDone();
        }
        return { done: true };
      },
    });
    let failure: Error | undefined;
    async function script(run: TaskRun): Promise<void> {
      run.progress.addBytes(4096);
      run.progress.setPhase('volume data');
      await run.progress.stop();
      // What an in-place restore does before it replaces its target.
      await run.pointOfNoReturn!();
      // The job as the API reads it: the agent's progress and mark, folded in.
      const seen = await control.getJob(job.jobId);
      expect(seen?.progress).toMatchObject({ phase: 'volume data', bytesDone: 4096 });
      expect(seen?.items?.[0]).toMatchObject({ status: 'RUNNING' });
      expect(seen?.pointOfNoReturnAt).toEqual(expect.any(String));
    }
    worker.start();
    await done;
    if (failure) {
      await worker.stop();
      throw failure;
    }
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (answers.some((a) => a.token === 'run-token' && a.op === 'SendTaskSuccess')) {
          clearInterval(t);
          resolve();
        }
      }, 10);
    });
    await worker.stop();

    const count = (re: RegExp) => sent.filter((r) => re.test(`${r.action} ${r.pk}`)).length;
    console.log(
      `agent catalog requests: ${sent.length}, job record reads ${count(/GetItem JOB#/)}, ` +
        `claim updates ${count(new RegExp(`UpdateItem SITE#${SITE}#`))}, ` +
        `denied by the role ${sent.filter((r) => !allowed(statements, r)).length}`,
    );
    // Every request the agent sent is one its role allows...
    expect(sent.length).toBeGreaterThan(4);
    expect(sent.filter((r) => !allowed(statements, r))).toEqual([]);
    // ...and every write is under its own site's keys: its claim, never the job's record.
    const writes = sent.filter((r) => /Put|Update|Delete/.test(r.action));
    expect(writes.map((w) => w.action)).toContain('dynamodb:UpdateItem');
    for (const w of writes) expect(w.pk).toMatch(new RegExp(`^(SITE#${SITE}#|AGENT#${SITE}$)`));
    expect(writes.map((w) => w.pk)).toContain(`SITE#${SITE}#JOB#${job.jobId}`);
    // The job's record is the control plane's (the hand-over listed the claim; nothing else).
    const record = await control.getJobRecord(job.jobId);
    expect(record).toEqual(job);
    // Its log lines went to its claim's partition too, and read back for the job.
    const logged = (await control.listTaskLogs(job.jobId)).flatMap((b) => b.lines);
    expect(logged.map((l) => l.event)).toEqual(
      expect.arrayContaining(['agent.task.received', 'agent.task.succeeded']),
    );
    const tasks = await control.listTasks(job.jobId);
    expect(tasks).toEqual([
      expect.objectContaining({ agent: SITE, outcome: 'succeeded', takenAt: expect.any(String) }),
    ]);

    // The role itself refuses what the old key schema let it do: updating a job's record, and
    // another site's claims or agent item.
    for (const pk of [`JOB#${other.jobId}`, `SITE#site-b#JOB#${other.jobId}`, 'AGENT#site-b']) {
      expect(allowed(statements, { action: 'dynamodb:UpdateItem', pk })).toBe(false);
      expect(allowed(statements, { action: 'dynamodb:PutItem', pk })).toBe(false);
    }
    expect(
      allowed(statements, { action: 'dynamodb:Query', pk: `SITE#site-b#JOB#${other.jobId}` }),
    ).toBe(false);
    expect(allowed(statements, { action: 'dynamodb:GetItem', pk: `JOB#${other.jobId}` })).toBe(
      true,
    );
  });
});
