/**
 * The queue worker against fake SQS and Step Functions clients (in-memory stand-ins for the two
 * `send` methods it uses) and a scripted task: what it does when the token is gone before or
 * while a task runs, when the answer cannot be sent, on stop, and with a task kind it does not
 * know.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { SFNClient } from '@aws-sdk/client-sfn';
import type { Message, SQSClient } from '@aws-sdk/client-sqs';
import { AgentWorker, type TaskExecutor } from '../../../../agents/worker/worker';
import type { TaskRun } from '../../../../agents/core/runner';
import { silentLogger } from '../../../../kernel/logger';
import type { AgentTask, JobStatus, SnapshotTask } from '../../../../statemachines/contracts';
import { MemoryCatalog } from '../../../fixtures/memory-catalog';

const QUEUE = 'http://queue.test/stowage-site-test';

/** The part of an SDK command the fakes look at. */
interface Command {
  constructor: { name: string };
  input: Record<string, unknown>;
}

/** An SQS queue in memory: ReceiveMessage hands out what was sent, waiting while it is empty. */
class FakeSqs {
  readonly pending: Message[] = [];
  readonly deleted: string[] = [];
  receives = 0;
  private wake?: () => void;
  private seq = 0;

  sendTask(body: unknown): string {
    const id = `m-${++this.seq}`;
    this.pending.push({
      MessageId: id,
      ReceiptHandle: `rh-${id}`,
      Body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    this.wake?.();
    return id;
  }

  async send(command: Command, options?: { abortSignal?: AbortSignal }) {
    switch (command.constructor.name) {
      case 'ReceiveMessageCommand': {
        this.receives++;
        while (this.pending.length === 0) {
          await new Promise<void>((resolve, reject) => {
            this.wake = resolve;
            options?.abortSignal?.addEventListener('abort', () =>
              reject(Object.assign(new Error('aborted'), { name: 'AbortError' })),
            );
          });
        }
        const max = Number(command.input.MaxNumberOfMessages ?? 1);
        return { Messages: this.pending.splice(0, max) };
      }
      case 'DeleteMessageCommand':
        this.deleted.push(String(command.input.ReceiptHandle).slice(3));
        return {};
      default:
        throw new Error(`FakeSqs: unexpected ${command.constructor.name}`);
    }
  }
}

type SfnCall = { op: string; input: Record<string, unknown> };

/**
 * Step Functions' task-token API in memory. `gone` tokens answer TaskTimedOut (the job ended or
 * the attempt was given up); `failReports` makes that many SendTaskSuccess/Failure calls fail
 * as a dropped connection does.
 */
class FakeSfn {
  readonly calls: SfnCall[] = [];
  readonly gone = new Set<string>();
  /** The catalog the workflow hands run tokens over in, and the agent reads jobs from. */
  readonly catalog = new MemoryCatalog();
  /** Claim token → the job and the run token the workflow hands over when it is claimed. */
  readonly claims = new Map<string, { jobId: string; run: string }>();
  failReports = 0;
  goneError = 'TaskTimedOut';

  async send(command: Command) {
    const op = command.constructor.name.replace(/Command$/, '');
    this.calls.push({ op, input: command.input });
    const token = String(command.input.taskToken);
    if (this.gone.has(token)) {
      throw Object.assign(new Error('Task Timed Out'), { name: this.goneError });
    }
    const claim = this.claims.get(token);
    if (claim && op === 'SendTaskSuccess') {
      // The claim spends the token (a second delivery finds it gone), and the workflow hands
      // the claim its run token.
      this.gone.add(token);
      const { claimId, agent } = JSON.parse(String(command.input.output)) as {
        claimId: string;
        agent: string;
      };
      await this.catalog.putRunToken({ site: agent, jobId: claim.jobId, claimId }, claim.run);
      return {};
    }
    if (op !== 'SendTaskHeartbeat' && this.failReports > 0) {
      this.failReports--;
      throw Object.assign(new Error('connect ECONNREFUSED'), { name: 'Error' });
    }
    return {};
  }

  ops(token: string): string[] {
    return this.calls.filter((c) => c.input.taskToken === token).map((c) => c.op);
  }

  /** Answers on run tokens (claims and heartbeats left out). */
  reports(): SfnCall[] {
    return this.calls.filter(
      (c) => c.op !== 'SendTaskHeartbeat' && !this.claims.has(String(c.input.taskToken)),
    );
  }
}

/**
 * Puts a task on the queue as the workflow does: its message carries the claim token
 * `claim:<run>`, its job is RUNNING in the catalog (unless `jobStatus` says otherwise), and a
 * claim of it is handed the run token `run`.
 */
async function dispatch(
  sqs: FakeSqs,
  sfn: FakeSfn,
  run: string,
  task: AgentTask,
  jobStatus: JobStatus = 'RUNNING',
): Promise<string> {
  const claimToken = `claim:${run}`;
  sfn.claims.set(claimToken, { jobId: task.jobId, run });
  if (!(await sfn.catalog.getJob(task.jobId))) {
    await sfn.catalog.createJob({
      jobId: task.jobId,
      kind: task.kind,
      target: task.target,
      agent: 'test',
      status: jobStatus,
      createdAt: new Date().toISOString(),
    });
  }
  return sqs.sendTask({ taskToken: claimToken, task });
}

function snapshotTask(overrides: Partial<SnapshotTask> = {}): SnapshotTask {
  return {
    kind: 'SNAPSHOT',
    jobId: 'job-1',
    target: 'lxd:c1',
    action: 'create',
    args: {},
    ...overrides,
  };
}

/** A task that runs until `finish` (or its signal aborts it), recording what it was given. */
function scriptedTask() {
  const runs: Array<{ task: AgentTask; run: TaskRun }> = [];
  let finish!: (value: unknown) => void;
  let done = new Promise<unknown>((r) => (finish = r));
  const execute: TaskExecutor = async (task, run) => {
    runs.push({ task, run });
    const aborted = new Promise<never>((_, reject) =>
      run.signal.addEventListener('abort', () => reject(new Error('aborted'))),
    );
    return Promise.race([done, aborted]);
  };
  return {
    runs,
    execute,
    finish: (value: unknown) => {
      finish(value);
      done = new Promise<unknown>((r) => (finish = r));
    },
  };
}

const workers: AgentWorker[] = [];
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop()));
});

function startWorker(
  sqs: FakeSqs,
  sfn: FakeSfn,
  overrides: {
    execute?: TaskExecutor;
    concurrency?: number;
    reportAttempts?: number;
    jobCheckMs?: number;
  } = {},
) {
  const worker = new AgentWorker({
    queueUrl: QUEUE,
    sqs: sqs as unknown as SQSClient,
    sfn: sfn as unknown as SFNClient,
    catalog: sfn.catalog,
    runner: {
      agent: 'test',
      drivers: new Map(),
      repository: () => Promise.reject(new Error('no repository in this test')),
      log: silentLogger,
    },
    log: silentLogger,
    heartbeatMs: 20,
    jobCheckMs: 20,
    waitTimeSeconds: 1,
    reportRetryMs: 5,
    ...overrides,
  });
  worker.start();
  workers.push(worker);
  return worker;
}

async function until<T>(probe: () => T | undefined | false, what: string): Promise<T> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const value = probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('AgentWorker', () => {
  it('runs a task, heartbeats while it runs, answers with its result and deletes its message', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    const task = scriptedTask();
    startWorker(sqs, sfn, { execute: task.execute });
    const id = await dispatch(sqs, sfn, 't1', snapshotTask());

    await until(() => task.runs.length === 1, 'the task to start');
    expect(sqs.deleted).toEqual([id]);
    await until(() => sfn.ops('t1').length >= 3, 'heartbeats while it runs');
    task.finish({ done: true });
    await until(() => sfn.reports().length === 1, 'the answer');

    expect(sfn.reports()).toEqual([
      { op: 'SendTaskSuccess', input: { taskToken: 't1', output: '{"done":true}' } },
    ]);
    expect(task.runs[0]!.task).toEqual(snapshotTask());
  });

  it('never runs a task whose job has ended or whose claim token is gone (claimed already), and drops their messages', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    const task = scriptedTask();
    startWorker(sqs, sfn, { execute: task.execute });
    const ended = await dispatch(sqs, sfn, 'ended', snapshotTask({ jobId: 'old' }), 'CANCELLED');
    sfn.gone.add('claim:spent');
    const spent = await dispatch(sqs, sfn, 'spent', snapshotTask({ jobId: 'twice' }));
    const fresh = await dispatch(sqs, sfn, 'fresh', snapshotTask({ jobId: 'new' }));

    await until(() => task.runs.length === 1, 'the live task to start');
    task.finish({});
    await until(() => sfn.reports().length === 1, 'the live task to answer');

    expect(task.runs.map((r) => r.task.jobId)).toEqual(['new']);
    expect(sqs.deleted.sort()).toEqual([ended, spent, fresh].sort());
    expect(sfn.ops('claim:ended')).toEqual([]);
    expect(sfn.ops('claim:spent')).toEqual(['SendTaskSuccess']);
  });

  it('runs a message delivered twice once: the second claim finds the token spent', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    const task = scriptedTask();
    startWorker(sqs, sfn, { execute: task.execute, concurrency: 2 });
    await dispatch(sqs, sfn, 't1', snapshotTask());
    sqs.sendTask({ taskToken: 'claim:t1', task: snapshotTask() });

    await until(() => sqs.deleted.length === 2, 'both deliveries to be handled');
    await new Promise((r) => setTimeout(r, 50));
    expect(task.runs).toHaveLength(1);
    task.finish({});
    await until(() => sfn.reports().length === 1, 'the answer');
  });

  it('stops a running task within a job check when its job is cancelled, and sends no answer', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    const task = scriptedTask();
    startWorker(sqs, sfn, { execute: task.execute });
    await dispatch(sqs, sfn, 't1', snapshotTask());
    await until(() => task.runs.length === 1, 'the task to start');

    await sfn.catalog.updateJob('job-1', { status: 'CANCELLED' }, ['RUNNING']);
    await until(() => task.runs[0]!.run.signal.aborted, 'the abort');
    expect(task.runs[0]!.run.signal.reason).toMatchObject({ name: 'Cancelled' });
    await new Promise((r) => setTimeout(r, 60));
    expect(sfn.reports()).toEqual([]);
  });

  it('lets a task past its point of no return finish when its job is cancelled after it', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    const task = scriptedTask();
    startWorker(sqs, sfn, { execute: task.execute });
    await dispatch(sqs, sfn, 't1', snapshotTask());
    await until(() => task.runs.length === 1, 'the task to start');

    await task.runs[0]!.run.pointOfNoReturn!();
    expect((await sfn.catalog.getJob('job-1'))?.pointOfNoReturnAt).toBeDefined();
    await sfn.catalog.updateJob('job-1', { status: 'CANCELLED' }, ['RUNNING']);
    await new Promise((r) => setTimeout(r, 100));
    expect(task.runs[0]!.run.signal.aborted).toBe(false);
    task.finish({ restored: true });
    await until(() => sfn.reports().length === 1, 'the answer');
  });

  it('refuses the point of no return of a task whose job was cancelled, and stops it', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    const task = scriptedTask();
    startWorker(sqs, sfn, { execute: task.execute, jobCheckMs: 60_000 });
    await dispatch(sqs, sfn, 't1', snapshotTask());
    await until(() => task.runs.length === 1, 'the task to start');

    await sfn.catalog.updateJob('job-1', { status: 'CANCELLED' }, ['RUNNING']);
    await expect(task.runs[0]!.run.pointOfNoReturn!()).rejects.toMatchObject({
      name: 'Cancelled',
    });
    expect(task.runs[0]!.run.signal.aborted).toBe(true);
  });

  for (const name of ['TaskTimedOut', 'InvalidToken']) {
    it(`aborts a running task when a heartbeat answers ${name}, and sends no answer`, async () => {
      const sqs = new FakeSqs();
      const sfn = new FakeSfn();
      sfn.goneError = name;
      const task = scriptedTask();
      startWorker(sqs, sfn, { execute: task.execute });
      await dispatch(sqs, sfn, 't1', snapshotTask());
      await until(() => task.runs.length === 1, 'the task to start');

      sfn.gone.add('t1');
      await until(() => task.runs[0]!.run.signal.aborted, 'the abort');
      await new Promise((r) => setTimeout(r, 60));

      expect(sfn.reports()).toEqual([]);
      expect(sqs.deleted).toHaveLength(1);
    });
  }

  it('retries an answer that cannot be sent and never runs the task again for it', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    sfn.failReports = 3;
    const task = scriptedTask();
    startWorker(sqs, sfn, { execute: task.execute });
    await dispatch(sqs, sfn, 't1', snapshotTask());
    await until(() => task.runs.length === 1, 'the task to start');
    task.finish({ ok: 1 });

    await until(() => sfn.reports().length === 4, 'the fourth attempt');
    await new Promise((r) => setTimeout(r, 50));
    expect(sfn.reports().map((c) => c.op)).toEqual(Array(4).fill('SendTaskSuccess'));
    expect(task.runs).toHaveLength(1);
    expect(sqs.deleted).toHaveLength(1);
    expect(sqs.pending).toEqual([]);
  });

  it('gives up an answer once the token is gone, without running the task again', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    const task = scriptedTask();
    startWorker(sqs, sfn, { execute: task.execute });
    await dispatch(sqs, sfn, 't1', snapshotTask());
    await until(() => task.runs.length === 1, 'the task to start');
    sfn.failReports = 1;
    task.finish({});
    await until(() => sfn.reports().length === 1, 'the first attempt');
    sfn.gone.add('t1');

    await until(() => sfn.reports().length === 2, 'the second attempt');
    await new Promise((r) => setTimeout(r, 50));
    expect(sfn.reports()).toHaveLength(2);
    expect(task.runs).toHaveLength(1);
  });

  it('drains on stop: polls no more and resolves only after the task under way has answered', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    const task = scriptedTask();
    const worker = startWorker(sqs, sfn, { execute: task.execute });
    await dispatch(sqs, sfn, 't1', snapshotTask());
    await until(() => task.runs.length === 1, 'the task to start');

    let stopped = false;
    const stopping = worker.stop().then(() => (stopped = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(stopped).toBe(false);
    expect(task.runs[0]!.run.signal.aborted).toBe(false);
    await dispatch(sqs, sfn, 't2', snapshotTask({ jobId: 'later' }));
    const receives = sqs.receives;
    task.finish({});
    await stopping;

    expect(sfn.reports().map((c) => c.input.taskToken)).toEqual(['t1']);
    expect(sqs.receives).toBe(receives);
    expect(sqs.pending.map((m) => JSON.parse(m.Body!).taskToken)).toEqual(['claim:t2']);
  });

  it('runs up to its concurrency of tasks at once and takes the next message only when one ends', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    const task = scriptedTask();
    startWorker(sqs, sfn, { execute: task.execute, concurrency: 2 });
    for (const t of ['a', 'b', 'c']) await dispatch(sqs, sfn, t, snapshotTask({ jobId: t }));

    await until(() => task.runs.length === 2, 'two tasks to start');
    await new Promise((r) => setTimeout(r, 50));
    expect(task.runs.map((r) => r.task.jobId)).toEqual(['a', 'b']);
    expect(sqs.pending).toHaveLength(1);
    task.finish({});
    await until(() => task.runs.length === 3, 'the third task to start');
    task.finish({});
    await until(() => sfn.reports().length === 3, 'three answers');
  });

  it('fails a task of a kind it does not know with UnknownTask, naming the kind, before it does anything', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    startWorker(sqs, sfn);
    await dispatch(sqs, sfn, 't1', {
      kind: 'REPACK',
      jobId: 'job-9',
      target: 'docker:web',
    } as never);

    const [report] = await until(() => sfn.reports().length === 1 && sfn.reports(), 'the answer');
    expect(report!.op).toBe('SendTaskFailure');
    expect(report!.input.error).toBe('UnknownTask');
    expect(report!.input.cause).toMatch(/kind "REPACK".*upgrade the agent/);
  });

  it('drops a message that is not a task without answering anything', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    const task = scriptedTask();
    startWorker(sqs, sfn, { execute: task.execute });
    const junk = sqs.sendTask('not json');
    const noToken = sqs.sendTask({ task: snapshotTask() });

    await until(() => sqs.deleted.length === 2, 'both messages to be dropped');
    expect(sqs.deleted.sort()).toEqual([junk, noToken].sort());
    expect(sfn.calls).toEqual([]);
    expect(task.runs).toEqual([]);
  });

  it("keeps a claimed task's log lines for its job, in order and secrets masked, written before the task is answered", async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    const task = scriptedTask();
    const atAnswer: string[][] = [];
    const send = sfn.send.bind(sfn);
    sfn.send = async (command: Command) => {
      if (
        command.constructor.name === 'SendTaskSuccessCommand' &&
        command.input.taskToken === 't1'
      ) {
        const batches = await sfn.catalog.listTaskLogs('job-1');
        atAnswer.push(batches.flatMap((b) => b.lines.map((l) => `${l.event} ${l.text}`)));
      }
      return send(command);
    };
    startWorker(sqs, sfn, { execute: task.execute });
    await dispatch(sqs, sfn, 't1', snapshotTask());

    const { run } = await until(() => task.runs[0], 'the task to start');
    run.log!.info('driver.step', { phase: 'creating snapshot' });
    run.log!.child({ instance: 'c1' }).warn('driver.hook', { command: 'dump --password hunter2' });
    task.finish({ done: true });
    await until(() => sfn.reports().length === 1, 'the answer');

    expect(atAnswer).toEqual([
      [
        'agent.task.received ',
        'driver.step creating snapshot',
        'driver.hook instance=c1 command="dump --password ***"',
      ],
    ]);
    const [batch] = await sfn.catalog.listTaskLogs('job-1');
    expect(batch).toMatchObject({ agent: 'test', target: 'lxd:c1', seq: 0 });
    const [claim] = await sfn.catalog.listTasks('job-1');
    expect(batch!.claimId).toBe(claim!.claimId);
  });

  it('writes no log for a task it did not claim', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    const task = scriptedTask();
    startWorker(sqs, sfn, { execute: task.execute });
    await dispatch(sqs, sfn, 'ended', snapshotTask({ jobId: 'old' }), 'CANCELLED');
    sfn.gone.add('claim:spent');
    await dispatch(sqs, sfn, 'spent', snapshotTask({ jobId: 'twice' }));

    await until(() => sqs.deleted.length === 2, 'both messages to be dropped');
    expect(await sfn.catalog.listTaskLogs('old')).toEqual([]);
    expect(await sfn.catalog.listTaskLogs('twice')).toEqual([]);
  });

  it('runs and answers a task whose log cannot be written', async () => {
    const sqs = new FakeSqs();
    const sfn = new FakeSfn();
    sfn.catalog.appendTaskLog = () => Promise.reject(new Error('the catalog is down'));
    const task = scriptedTask();
    startWorker(sqs, sfn, { execute: task.execute });
    await dispatch(sqs, sfn, 't1', snapshotTask());

    await until(() => task.runs.length === 1, 'the task to start');
    task.finish({ done: true });
    const [report] = await until(() => sfn.reports().length === 1 && sfn.reports(), 'the answer');
    expect(report!.op).toBe('SendTaskSuccess');
  });
});
