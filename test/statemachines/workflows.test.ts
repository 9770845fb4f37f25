/**
 * The backup and restore ASL files, executed by the local Step Functions endpoint with the real
 * Lambda handlers and catalog, and a scripted agent on the site's queue in place of a real one.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  SendTaskFailureCommand,
  SendTaskHeartbeatCommand,
  SendTaskSuccessCommand,
  SFNClient,
  StopExecutionCommand,
} from '@aws-sdk/client-sfn';
import { DeleteMessageCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { ControlPlane } from '../../local/control-plane';
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { manifestKey, packListKey } from '../../kernel/object-layout';
import { LOCAL_AWS } from '../../local/emulators';
import type {
  AgentTaskMessage,
  BackupResult,
  BackupTask,
  RestoreResult,
  SnapshotResult,
  TaskClaim,
} from '../../statemachines/contracts';
import type { JobAccepted } from '../../functions/core/requests/launch';
import { eventually, removeDir, startTestPlane, tempDir } from '../fixtures/local-plane';

const SITE = 'sm-site';
let dataDir: string;
let plane: ControlPlane;
let sqs: SQSClient;
let sfn: SFNClient;
let s3: S3Client;
let catalog: DynamoDbCatalog;
let queueUrl: string;

async function api<T>(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const res = await fetch(`${plane.apiUrl}${path}`, {
    method,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${plane.apiToken}` },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as T };
}

/** Receives the next task message as an agent would, without claiming it. */
async function nextMessage(): Promise<AgentTaskMessage> {
  return eventually(async () => {
    const out = await sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 1, MaxNumberOfMessages: 1 }),
    );
    const m = out.Messages?.[0];
    if (!m) return undefined;
    await sqs.send(
      new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: m.ReceiptHandle }),
    );
    return JSON.parse(m.Body!) as AgentTaskMessage;
  }, 'a task on the site queue');
}

let claims = 0;
/**
 * Claims a task as an agent does (answers its claim token with a claim id) and returns it with
 * the run token the workflow hands over through the catalog, the one to heartbeat and answer.
 */
async function claim(message: AgentTaskMessage): Promise<AgentTaskMessage> {
  const claimId = `test-claim-${++claims}`;
  const answer: TaskClaim = { claimId, agent: SITE };
  await sfn.send(
    new SendTaskSuccessCommand({ taskToken: message.taskToken, output: JSON.stringify(answer) }),
  );
  const runToken = await eventually(
    () => catalog.takeRunToken({ site: SITE, jobId: message.task.jobId, claimId }),
    'the run token of the claim',
  );
  return { taskToken: runToken, task: message.task };
}

/** The next task, claimed: what an agent runs. */
async function nextTask(): Promise<AgentTaskMessage> {
  return claim(await nextMessage());
}

async function executionOf(jobId: string) {
  const arn = `arn:aws:states:us-east-1:000000000000:execution:stowage-backup:${jobId}`;
  return eventually(async () => {
    const e = await sfn
      .send(new DescribeExecutionCommand({ executionArn: arn }))
      .catch(() => undefined);
    return e && e.status !== 'RUNNING' ? e : undefined;
  }, `execution ${jobId} to end`);
}

async function jobWhenDone(jobId: string) {
  return eventually(async () => {
    const job = await catalog.getJob(jobId);
    return job && !['PENDING', 'RUNNING'].includes(job.status) ? job : undefined;
  }, `job ${jobId} to end`);
}

/** The pack list an agent writes before its manifest: a point of no packs here. */
const packListOf = (recoveryPointId: string) => packListKey(recoveryPointId, 'a1');

/** The pack list and the manifest the agent writes last, so commit-point finds them. */
async function storeManifest(recoveryPointId: string): Promise<void> {
  for (const Key of [packListOf(recoveryPointId), manifestKey(recoveryPointId)]) {
    await s3.send(new PutObjectCommand({ Bucket: plane.localConfig.bucket, Key, Body: '' }));
  }
}

/** Answers a backup task as a successful agent would (manifest stored, then SendTaskSuccess). */
async function succeed(message: AgentTaskMessage): Promise<void> {
  const task = message.task as BackupTask;
  await storeManifest(task.recoveryPointId);
  await sfn.send(
    new SendTaskSuccessCommand({
      taskToken: message.taskToken,
      output: JSON.stringify(backupResultFor(task)),
    }),
  );
}

function backupResultFor(task: BackupTask): BackupResult {
  return {
    recoveryPointId: task.recoveryPointId,
    manifestKey: manifestKey(task.recoveryPointId),
    packListKey: packListOf(task.recoveryPointId),
    startedAt: '2026-01-01T00:00:00.000Z',
    completedAt: '2026-01-01T00:00:02.500Z',
    bytesRead: 4096,
    bytesNew: 4096,
    bytesStored: 1024,
    streams: [{ name: 'image', kind: 'docker-image-tar', size: 4096 }],
    summary: { image: 'busybox' },
  };
}

async function startBackup(target = 'docker:web'): Promise<JobAccepted> {
  const res = await api<JobAccepted>('POST', '/backups', { target: `${target}@${SITE}` });
  expect(res.status).toBe(202);
  return res.body;
}

beforeAll(async () => {
  dataDir = tempDir();
  plane = await startTestPlane({
    dataDir,
    agent: false,
    // The scripted agent stores manifests in the local S3 server, where commit-point looks.
    s3Store: true,
    site: SITE,
    // Seconds instead of minutes, so heartbeat loss and its retries fit in a test.
    heartbeatSeconds: 1,
    adjustDefinition: (_name, definition) => {
      const adjust = (states: Record<string, unknown>) => {
        for (const state of Object.values(states) as Array<Record<string, unknown>>) {
          for (const retry of (state.Retry as Array<Record<string, unknown>>) ?? [])
            retry.IntervalSeconds = 0;
          const inner = state.ItemProcessor as { States: Record<string, unknown> } | undefined;
          if (inner) adjust(inner.States);
        }
      };
      adjust(definition.States as unknown as Record<string, unknown>);
    },
  });
  const clientConfig = { ...LOCAL_AWS, credentials: { ...plane.credentials } };
  sqs = new SQSClient({ ...clientConfig, endpoint: plane.endpoints.sqs });
  sfn = new SFNClient({ ...clientConfig, endpoint: plane.endpoints.sfn });
  s3 = new S3Client({ ...clientConfig, endpoint: plane.endpoints.s3, forcePathStyle: true });
  catalog = new DynamoDbCatalog(plane.localConfig.tableName, undefined);
  queueUrl = `${plane.localConfig.queueUrlPrefix}stowage-site-${SITE}`;
});

beforeEach(async () => {
  // Leftovers of an earlier test would be taken for this test's task.
  for (;;) {
    const out = await sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10 }),
    );
    if (!out.Messages?.length) break;
    for (const m of out.Messages) {
      await sqs.send(
        new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: m.ReceiptHandle }),
      );
    }
  }
  await catalog.putAgent({
    agent: SITE,
    platforms: ['docker'],
    targets: [
      { target: 'docker:web', platform: 'docker', name: 'web', state: 'running' },
      { target: 'docker:taken', platform: 'docker', name: 'taken', state: 'running' },
      ...['a1', 'a2', 'a3'].map((name) => ({
        target: `docker:${name}`,
        platform: 'docker',
        name,
        state: 'running',
        labels: { app: 'sm' },
      })),
    ],
    seenAt: new Date().toISOString(),
    version: 'test',
  });
});

afterAll(async () => {
  await plane?.close();
  removeDir(dataDir);
});

describe('ASL files', () => {
  it("keep every TimeoutSeconds within a Node timer (2^31 ms), which the local engine's timeouts use", () => {
    const timeouts = (node: unknown): number[] =>
      node && typeof node === 'object'
        ? Object.entries(node).flatMap(([k, v]) =>
            k === 'TimeoutSeconds' && typeof v === 'number' ? [v] : timeouts(v),
          )
        : [];
    for (const file of ['backup', 'restore', 'verify']) {
      const definition: unknown = JSON.parse(
        readFileSync(new URL(`../../statemachines/${file}.asl.json`, import.meta.url), 'utf8'),
      );
      const found = timeouts(definition);
      expect(found.length, file).toBeGreaterThan(0);
      for (const seconds of found) expect(seconds * 1000, file).toBeLessThan(2 ** 31);
    }
  });
});

describe('backup workflow', () => {
  it('dispatches one task with a token, commits the point the agent stored, and ends SUCCEEDED', async () => {
    const job = await startBackup();
    const message = await nextTask();
    expect(message.taskToken).toMatch(/^[A-Za-z0-9_-]{32,}$/);
    expect(message.task).toEqual({
      kind: 'BACKUP',
      jobId: job.jobId,
      itemIndex: 0,
      recoveryPointId: job.recoveryPointId,
      target: 'docker:web',
      options: {},
    });
    expect((await catalog.getJob(job.jobId))?.status).toBe('RUNNING');

    await sfn.send(new SendTaskHeartbeatCommand({ taskToken: message.taskToken }));
    await storeManifest(job.recoveryPointId!);
    await sfn.send(
      new SendTaskSuccessCommand({
        taskToken: message.taskToken,
        output: JSON.stringify(backupResultFor(message.task as BackupTask)),
      }),
    );

    const execution = await executionOf(job.jobId);
    expect(execution.status).toBe('SUCCEEDED');
    const done = await jobWhenDone(job.jobId);
    expect(done.status).toBe('SUCCEEDED');
    const point = await catalog.getPoint(job.recoveryPointId!);
    expect(point).toMatchObject({
      status: 'COMPLETED',
      target: 'docker:web',
      agent: SITE,
      jobId: job.jobId,
      durationMs: 2500,
      bytesRead: 4096,
    });
    const listed = await catalog.listPoints({ target: 'docker:web' });
    expect(listed.map((p) => p.recoveryPointId)).toContain(job.recoveryPointId);

    const history = await sfn.send(
      new GetExecutionHistoryCommand({ executionArn: execution.executionArn }),
    );
    const entered = (history.events ?? [])
      .filter((e) => e.type === 'TaskStateEntered')
      .map((e) => e.stateEnteredEventDetails?.name);
    expect(entered).toEqual([
      'Record job started',
      'Wait for an agent',
      'Agent runs the backup',
      'Commit recovery point',
      'Record job ended',
    ]);
    expect(done.items).toEqual([
      expect.objectContaining({
        target: 'docker:web',
        recoveryPointId: job.recoveryPointId,
        status: 'COMPLETED',
      }),
    ]);
  });

  it('marks the job FAILED with the agent error and commits no point when the agent reports failure', async () => {
    const job = await startBackup();
    const message = await nextTask();
    await sfn.send(
      new SendTaskFailureCommand({
        taskToken: message.taskToken,
        error: 'TargetNotFound',
        cause: 'container web vanished',
      }),
    );

    const done = await jobWhenDone(job.jobId);
    expect(done.status).toBe('FAILED');
    expect(done.error).toEqual({ name: 'TargetNotFound', message: 'container web vanished' });
    expect(done.items?.[0]).toMatchObject({ status: 'FAILED', error: done.error });
    expect((await executionOf(job.jobId)).status).toBe('FAILED');
    expect(await catalog.getPoint(job.recoveryPointId!)).toBeUndefined();
  });

  it('starts the heartbeat clock when an agent claims the task, not while it waits in the queue', async () => {
    const job = await startBackup();
    const message = await nextMessage();
    // Three times HeartbeatSeconds (1 s in this test) with no agent taking the task.
    await new Promise((r) => setTimeout(r, 3000));
    const running = await claim(message);
    await succeed(running);

    expect((await jobWhenDone(job.jobId)).status).toBe('SUCCEEDED');
    expect((await catalog.getPoint(job.recoveryPointId!))?.status).toBe('COMPLETED');
  });

  it('lets only one claim of a task through: a second delivery of its message finds the token spent', async () => {
    const job = await startBackup();
    const message = await nextMessage();
    const running = await claim(message);
    await expect(claim(message)).rejects.toMatchObject({ name: 'TaskTimedOut' });
    await succeed(running);
    expect((await jobWhenDone(job.jobId)).status).toBe('SUCCEEDED');
  });

  it('retries a task whose agent stops heartbeating, then fails the job with States.HeartbeatTimeout', async () => {
    const job = await startBackup();
    const first = await nextTask();
    const second = await nextTask();
    const third = await nextTask();
    expect(new Set([first.taskToken, second.taskToken, third.taskToken]).size).toBe(3);

    const done = await jobWhenDone(job.jobId);
    expect(done.status).toBe('FAILED');
    expect(done.error?.name).toBe('States.HeartbeatTimeout');
    expect(done.error?.message).toMatch(/no heartbeat/);
    // An answer on an expired token is refused, as Step Functions does.
    await expect(
      sfn.send(new SendTaskSuccessCommand({ taskToken: first.taskToken, output: '{}' })),
    ).rejects.toMatchObject({ name: 'TaskTimedOut' });
    expect(await catalog.getPoint(job.recoveryPointId!)).toBeUndefined();
  });

  it('fails the job instead of committing when the agent reports a point whose manifest is not stored', async () => {
    const job = await startBackup();
    const message = await nextTask();
    await sfn.send(
      new SendTaskSuccessCommand({
        taskToken: message.taskToken,
        output: JSON.stringify(backupResultFor(message.task as BackupTask)),
      }),
    );

    const done = await jobWhenDone(job.jobId);
    expect(done.status).toBe('FAILED');
    expect(await catalog.getPoint(job.recoveryPointId!)).toBeUndefined();
  });

  it('closes the open task when the execution is stopped', async () => {
    const job = await startBackup();
    const message = await nextTask();
    await sfn.send(
      new StopExecutionCommand({
        executionArn: job.executionArn,
        error: 'Cancelled',
        cause: 'test',
      }),
    );

    expect((await executionOf(job.jobId)).status).toBe('ABORTED');
    await expect(
      sfn.send(new SendTaskHeartbeatCommand({ taskToken: message.taskToken })),
    ).rejects.toMatchObject({ name: 'TaskTimedOut' });
  });
});

describe("a policy's every Nth run (--verify-every, --restore-test-every)", () => {
  it('has the backup workflow start a verify and a restore test of the point once the job ended', async () => {
    const created = await api('POST', '/policies', {
      name: 'sm-checks',
      targets: [`docker:web@${SITE}`],
      schedule: 'rate(1 day)',
      verifyEvery: 2,
      restoreTestEvery: 2,
      restoreTestProbe: 'true',
    });
    expect(created.status).toBe(201);
    const run = async () => {
      const res = await api<{ jobs: JobAccepted[] }>('POST', '/policies/sm-checks/runs');
      expect(res.status).toBe(202);
      const job = res.body.jobs[0]!;
      await succeed(await nextTask());
      expect((await jobWhenDone(job.jobId)).status).toBe('SUCCEEDED');
      return job;
    };

    // Run 1 of 2: no checks, and the workflow never enters Start checks.
    const first = await run();
    const firstExecution = await executionOf(first.jobId);
    const states = async (arn: string) =>
      (
        (await sfn.send(new GetExecutionHistoryCommand({ executionArn: arn }))).events ?? []
      ).flatMap((e) => (e.stateEnteredEventDetails?.name ? [e.stateEnteredEventDetails.name] : []));
    expect(await states(firstExecution.executionArn!)).not.toContain('Start checks');
    expect((await catalog.getJob(first.jobId))?.checks).toBeUndefined();

    // Run 2 of 2: the point is verified and restore-tested, started by the workflow itself.
    const second = await run();
    const tasks = [await nextMessage(), await nextMessage()].map((m) => m.task);
    expect(tasks.map((t) => t.kind).sort()).toEqual(['RESTORE', 'VERIFY']);
    for (const task of tasks) {
      expect(task).toMatchObject({ recoveryPointId: second.recoveryPointId });
    }
    expect(tasks.find((t) => t.kind === 'RESTORE')).toMatchObject({
      options: { test: { probe: ['sh', '-c', 'true'] } },
    });
    const execution = await executionOf(second.jobId);
    expect(execution.status).toBe('SUCCEEDED');
    expect(await states(execution.executionArn!)).toContain('Start checks');
    const done = await catalog.getJob(second.jobId);
    expect(done?.checks).toMatchObject({ verify: true, restoreTest: true, probe: 'true' });
    expect(done?.checks?.started?.map((c) => c.kind).sort()).toEqual(['RESTORE_TEST', 'VERIFY']);
    for (const check of done!.checks!.started!) {
      expect(check.error).toBeUndefined();
      expect((await catalog.getJob(check.jobId!))?.recoveryPointId).toBe(second.recoveryPointId);
    }
    await api('DELETE', '/policies/sm-checks');
  });
});

describe('backup workflow over several targets (label selector)', () => {
  async function startSelectorBackup(): Promise<JobAccepted> {
    const res = await api<JobAccepted>('POST', '/backups', { selector: `docker:app=sm@${SITE}` });
    expect(res.status).toBe(202);
    expect(res.body.items?.map((i) => i.target)).toEqual(['docker:a1', 'docker:a2', 'docker:a3']);
    return res.body;
  }

  /**
   * Plays the agent until the job ends: answers every task as it comes (two at a time, a task
   * re-sent after a missed heartbeat included) with `answer`.
   */
  async function answerUntilDone(
    jobId: string,
    answer: (message: AgentTaskMessage) => Promise<void>,
  ): Promise<void> {
    for (;;) {
      const job = await catalog.getJob(jobId);
      if (job && !['PENDING', 'RUNNING'].includes(job.status)) return;
      const out = await sqs.send(
        new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 0 }),
      );
      for (const m of out.Messages ?? []) {
        await sqs.send(
          new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: m.ReceiptHandle }),
        );
        await claim(JSON.parse(m.Body!) as AgentTaskMessage)
          .then(answer)
          .catch(() => undefined);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('runs at most two targets at a time, commits a point for each and ends SUCCEEDED', async () => {
    const job = await startSelectorBackup();
    const first = await nextTask();
    const second = await nextTask();
    // MaxConcurrency 2: the third task waits until one of the first two is answered (the two
    // heartbeat meanwhile: the test's HeartbeatSeconds is 1).
    const beat = setInterval(() => {
      for (const m of [first, second]) {
        void sfn.send(new SendTaskHeartbeatCommand({ taskToken: m.taskToken }));
      }
    }, 250);
    const early = await sqs
      .send(new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 2 }))
      .finally(() => clearInterval(beat));
    expect(early.Messages ?? []).toEqual([]);
    await succeed(first);
    const third = await nextTask();
    await succeed(second);
    await succeed(third);

    const tasks = [first, second, third].map((m) => m.task);
    expect(tasks.map((t) => t.target).sort()).toEqual(['docker:a1', 'docker:a2', 'docker:a3']);
    for (const task of tasks) {
      expect(task.kind === 'BACKUP' && job.items?.[task.itemIndex]?.target).toBe(task.target);
    }
    expect((await executionOf(job.jobId)).status).toBe('SUCCEEDED');
    const done = await jobWhenDone(job.jobId);
    expect(done.status).toBe('SUCCEEDED');
    expect(done.target).toBe('docker:app=sm');
    expect(done.items?.map((i) => i.status)).toEqual(['COMPLETED', 'COMPLETED', 'COMPLETED']);
    expect(done.progress?.bytesDone).toBe(3 * 4096);
    for (const item of job.items!) {
      expect(await catalog.getPoint(item.recoveryPointId)).toMatchObject({
        status: 'COMPLETED',
        target: item.target,
        jobId: job.jobId,
      });
    }
  });

  it('ends PARTIALLY_FAILED when one target fails: the others are committed, the failed one has its error and no point', async () => {
    const job = await startSelectorBackup();
    await answerUntilDone(job.jobId, async (message) => {
      if (message.task.target === 'docker:a2') {
        await sfn.send(
          new SendTaskFailureCommand({
            taskToken: message.taskToken,
            error: 'DriverError',
            cause: 'pre-hook exited with 1',
          }),
        );
      } else {
        await succeed(message);
      }
    });

    const done = await jobWhenDone(job.jobId);
    expect(done.status).toBe('PARTIALLY_FAILED');
    expect((await executionOf(job.jobId)).status).toBe('SUCCEEDED');
    expect(done.items?.map((i) => [i.target, i.status])).toEqual([
      ['docker:a1', 'COMPLETED'],
      ['docker:a2', 'FAILED'],
      ['docker:a3', 'COMPLETED'],
    ]);
    expect(done.items?.[1]?.error).toEqual({
      name: 'DriverError',
      message: 'pre-hook exited with 1',
    });
    expect(done.error?.message).toBe('1 of 3 targets failed: docker:a2: pre-hook exited with 1');
    const [a1, a2, a3] = job.items!;
    expect((await catalog.getPoint(a1!.recoveryPointId))?.status).toBe('COMPLETED');
    expect(await catalog.getPoint(a2!.recoveryPointId)).toBeUndefined();
    expect((await catalog.getPoint(a3!.recoveryPointId))?.status).toBe('COMPLETED');
  });

  it('ends FAILED, and the execution with the first error, when every target fails', async () => {
    const job = await startSelectorBackup();
    await answerUntilDone(job.jobId, async (message) => {
      // a1's manifest is missing, so its commit fails; the others fail on the agent.
      if (message.task.target === 'docker:a1') {
        await sfn.send(
          new SendTaskSuccessCommand({
            taskToken: message.taskToken,
            output: JSON.stringify(backupResultFor(message.task as BackupTask)),
          }),
        );
      } else {
        await sfn.send(
          new SendTaskFailureCommand({
            taskToken: message.taskToken,
            error: 'TargetNotFound',
            cause: `${message.task.target} vanished`,
          }),
        );
      }
    });

    const done = await jobWhenDone(job.jobId);
    expect(done.status).toBe('FAILED');
    expect(done.items?.map((i) => i.status)).toEqual(['FAILED', 'FAILED', 'FAILED']);
    expect(done.items?.[0]?.error?.name).toBe('IntegrityError');
    expect(done.error?.name).toBe('IntegrityError');
    expect(done.error?.message).toMatch(/^3 of 3 targets failed: docker:a1: .*manifest/);
    const execution = await executionOf(job.jobId);
    expect(execution.status).toBe('FAILED');
    expect(execution.error).toBe('IntegrityError');
    for (const item of job.items!) {
      expect(await catalog.getPoint(item.recoveryPointId)).toBeUndefined();
    }
  });
});

describe('restore workflow', () => {
  it('dispatches a restore task to the point agent and records the result', async () => {
    const backup = await startBackup();
    const b = await nextTask();
    await storeManifest(backup.recoveryPointId!);
    await sfn.send(
      new SendTaskSuccessCommand({
        taskToken: b.taskToken,
        output: JSON.stringify(backupResultFor(b.task as BackupTask)),
      }),
    );
    await jobWhenDone(backup.jobId);

    const res = await api<JobAccepted>('POST', '/restores', {
      recoveryPointId: backup.recoveryPointId,
      name: 'web2',
    });
    expect(res.status).toBe(202);
    const message = await nextTask();
    expect(message.task).toEqual({
      kind: 'RESTORE',
      jobId: res.body.jobId,
      recoveryPointId: backup.recoveryPointId,
      source: 'docker:web',
      target: 'docker:web2',
      inPlace: false,
      options: {},
    });
    const result: RestoreResult = {
      restoredTarget: 'docker:web2',
      startedAt: 'a',
      completedAt: 'b',
      bytesWritten: 10,
    };
    await sfn.send(
      new SendTaskSuccessCommand({ taskToken: message.taskToken, output: JSON.stringify(result) }),
    );

    const done = await jobWhenDone(res.body.jobId);
    expect(done).toMatchObject({
      status: 'SUCCEEDED',
      kind: 'RESTORE',
      target: 'docker:web2',
      source: 'docker:web',
    });
  });

  it('refuses a restore onto a name the agent sees, before any execution starts', async () => {
    const backup = await startBackup();
    const b = await nextTask();
    await sfn.send(new SendTaskFailureCommand({ taskToken: b.taskToken, error: 'X', cause: 'y' }));
    await jobWhenDone(backup.jobId);
    await catalog.putPoint({
      recoveryPointId: 'rp-fixed',
      target: 'docker:web',
      platform: 'docker',
      agent: SITE,
      jobId: 'job-fixed',
      status: 'COMPLETED',
      createdAt: '2026-01-01T00:00:00Z',
      completedAt: '2026-01-01T00:00:01Z',
      durationMs: 1000,
      bytesRead: 1,
      bytesNew: 1,
      bytesStored: 1,
      streams: [],
      manifestKey: manifestKey('rp-fixed'),
      summary: {},
    });
    const before = (await catalog.listJobs()).length;

    const res = await api<{ error: string; message: string }>('POST', '/restores', {
      recoveryPointId: 'rp-fixed',
      name: 'taken',
    });

    expect(res.status).toBe(409);
    expect(res.body.error).toBe('NameTaken');
    expect(res.body.message).toContain('docker:taken');
    expect((await catalog.listJobs()).length).toBe(before);
  });
});

describe('snapshot workflow', () => {
  const snapshotAgent = async () =>
    catalog.putAgent({
      agent: SITE,
      platforms: ['docker', 'lxd'],
      targets: [
        { target: 'docker:web', platform: 'docker', name: 'web', state: 'running' },
        {
          target: 'lxd:c1',
          platform: 'lxd',
          name: 'c1',
          state: 'running',
          snapshots: [
            {
              name: 'snap0',
              createdAt: '2026-01-01T00:00:00.000Z',
              expiresAt: null,
              stateful: false,
            },
          ],
        },
      ],
      seenAt: new Date().toISOString(),
      version: 'test',
    });

  it('dispatches one SNAPSHOT task and records what the agent did on the job', async () => {
    await snapshotAgent();
    const res = await api<JobAccepted>('POST', '/snapshots', {
      target: 'lxd:c1',
      pattern: 'pre-%d',
      expiry: '7d',
    });
    expect(res.status).toBe(202);
    const message = await nextTask();
    expect(message.task).toEqual({
      kind: 'SNAPSHOT',
      jobId: res.body.jobId,
      target: 'lxd:c1',
      action: 'create',
      args: { pattern: 'pre-%d', expiry: '7d', stateful: false },
    });
    const result: SnapshotResult = {
      action: 'create',
      target: 'lxd:c1',
      snapshot: {
        name: 'pre-0',
        createdAt: '2026-01-02T00:00:00.000Z',
        expiresAt: '2026-01-09T00:00:00.000Z',
        stateful: false,
      },
      pruned: [],
      startedAt: '2026-01-02T00:00:00.000Z',
      completedAt: '2026-01-02T00:00:01.000Z',
    };
    await sfn.send(
      new SendTaskSuccessCommand({ taskToken: message.taskToken, output: JSON.stringify(result) }),
    );

    const done = await jobWhenDone(res.body.jobId);
    expect(done).toMatchObject({
      kind: 'SNAPSHOT',
      status: 'SUCCEEDED',
      target: 'lxd:c1',
      recoveryPointId: 'lxd:c1/pre-0',
      snapshot: { action: 'create', result },
    });
    const history = await sfn.send(
      new GetExecutionHistoryCommand({ executionArn: res.body.executionArn }),
    );
    const entered = (history.events ?? [])
      .filter((e) => e.type === 'TaskStateEntered')
      .map((e) => e.stateEnteredEventDetails?.name);
    expect(entered).toEqual([
      'Record job started',
      'Wait for an agent',
      'Agent runs the snapshot',
      'Record job succeeded',
    ]);
  });

  it('records the agent error when the snapshot task fails', async () => {
    await snapshotAgent();
    const res = await api<JobAccepted>('POST', '/snapshots/restores', {
      snapshot: 'lxd:c1/snap0',
    });
    expect(res.status).toBe(202);
    const message = await nextTask();
    expect(message.task).toMatchObject({ action: 'restore', args: { snapshot: 'snap0' } });
    await sfn.send(
      new SendTaskFailureCommand({
        taskToken: message.taskToken,
        error: 'SnapshotNotFound',
        cause: 'lxd:c1/snap0 does not exist',
      }),
    );
    const done = await jobWhenDone(res.body.jobId);
    expect(done.status).toBe('FAILED');
    expect(done.error).toEqual({
      name: 'SnapshotNotFound',
      message: 'lxd:c1/snap0 does not exist',
    });
  });

  it('refuses an unknown snapshot and a target without snapshots before any execution starts', async () => {
    await snapshotAgent();
    const before = (await catalog.listJobs()).length;
    const unknown = await api<{ error: string; message: string }>('POST', '/snapshots/deletions', {
      snapshot: 'lxd:c1/nope',
    });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toBe('SnapshotNotFound');
    expect(unknown.body.message).toContain('snap0');
    const docker = await api<{ error: string; message: string }>('POST', '/snapshots', {
      target: 'docker:web',
    });
    expect(docker.status).toBe(422);
    expect(docker.body.error).toBe('Unsupported');
    expect((await catalog.listJobs()).length).toBe(before);
  });
});
