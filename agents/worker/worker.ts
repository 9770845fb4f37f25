/**
 * The agent's queue worker. Long-polls the site's queue for task messages and runs up to
 * `concurrency` tasks at once; it asks the queue only for as many messages as it has free slots,
 * so a message it cannot start yet stays in the queue for another agent.
 *
 * A task reaches an agent in two steps (the `Wait for an agent` and `Agent runs ...` states of
 * the workflows), so that its heartbeat clock never runs while it only waits in the queue:
 * 1. The message carries a CLAIM token, whose state has no HeartbeatSeconds. The job is checked
 *    first (catalog): a task whose job is no longer RUNNING never runs, its message is dropped.
 *    The agent claims the task by answering the claim token with a fresh claim id. A claim token
 *    that is gone (the job ended, the attempt was given up, or this is a second delivery of a
 *    message already claimed) means the task must not run here; the message is dropped.
 * 2. The message is deleted once claimed: Step Functions, not the queue, re-dispatches a task
 *    whose agent died (after HeartbeatSeconds, with a new message), so a message is never
 *    re-delivered to run the same task twice.
 * 3. The workflow hands the claim a RUN token (through the catalog, on the claim's record under
 *    this agent's site); its state has HeartbeatSeconds, so its clock starts now, when the task
 *    starts. The agent waits for it (the job checked again meanwhile) and runs the task,
 *    heartbeating the run token. Everything the agent writes about the task (the token taken,
 *    progress, the point of no return, the end) goes to that claim record, never to the job's,
 *    which its IAM role may only read (kernel/catalog.ts ClaimRef).
 * 4. While the task runs, the job is checked every `jobCheckMs`: a job that ended (cancelled)
 *    aborts the task, as does a heartbeat refused because the token is gone; past the point of
 *    no return of an in-place restore (`TaskRun.pointOfNoReturn`) nothing aborts it any more.
 *    Whatever the outcome, once the task's holds are released the claim records that it ended
 *    (`endTask`): `stowage cancel --wait` waits for that.
 * 5. Its result is reported with SendTaskSuccess / SendTaskFailure, retried with backoff while the
 *    service cannot be reached (the task is never run again to report it), and given up only when
 *    the token is gone.
 * 6. What the task logs (the worker's lines, the runner's and its driver's) is also kept for the
 *    job (core/task-log.ts): from the message's receipt, written to the catalog once the task is
 *    claimed (a task that is not claimed here writes nothing), every second while it runs and
 *    after it ended.
 * Connection errors of the poll back off; `stop` stops polling and drains the tasks under way.
 */
import {
  DeleteMessageCommand,
  ReceiveMessageCommand,
  type Message,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import {
  SendTaskFailureCommand,
  SendTaskHeartbeatCommand,
  SendTaskSuccessCommand,
  type SFNClient,
} from '@aws-sdk/client-sfn';
import { randomBytes } from 'node:crypto';
import type { Catalog, ClaimRef } from '../../kernel/catalog';
import { Cancelled } from '../../kernel/errors';
import type { Logger } from '../../kernel/logger';
import { LogEvent } from '../../kernel/logger';
import { SITE_QUEUE } from '../../kernel/resources';
import type { AgentTask, AgentTaskMessage, TaskClaim } from '../../statemachines/contracts';
import { ProgressReporter } from '../core/progress';
import { TaskLog } from '../core/task-log';
import { runTask, type RunnerDeps, type TaskRun } from '../core/runner';

/** Runs one task; resolves its result (SendTaskSuccess output), rejects with its error. */
export type TaskExecutor = (task: AgentTask, run: TaskRun) => Promise<unknown>;

export interface WorkerOptions {
  queueUrl: string;
  sqs: SQSClient;
  sfn: SFNClient;
  catalog: Catalog;
  runner: RunnerDeps;
  log: Logger;
  /** Tasks run at once (default 1; `stowage agent --concurrency`, default 2). */
  concurrency?: number;
  /** How often a running task heartbeats; well under the state's HeartbeatSeconds (120). */
  heartbeatMs?: number;
  /** How often a running task's job is read, so a cancel reaches it within seconds (2000). */
  jobCheckMs?: number;
  /** How long a claim waits for its run token before it gives the task up (60 s). */
  handOverTimeoutMs?: number;
  /** Long-poll wait; shorter in tests so `stop` returns quickly. */
  waitTimeSeconds?: number;
  /** First delay between attempts to report a result (doubles, at most 30 s). */
  reportRetryMs?: number;
  /** Attempts to report a result before it is given up (default 10: minutes, past a heartbeat). */
  reportAttempts?: number;
  /** Runs a task (default: the runner's runTask). Tests put a scripted task here. */
  execute?: TaskExecutor;
  /**
   * Called after every task (the inventory changes after a restore); for a snapshot task before
   * it is answered, so the listing shows its effect once the job has ended.
   */
  afterTask?: () => Promise<void>;
}

/** What SendTask* answer when Step Functions no longer waits for the token. */
const TOKEN_GONE = new Set(['TaskTimedOut', 'TaskDoesNotExist', 'InvalidToken']);
const MAX_BACKOFF_MS = 30_000;

const isTokenGone = (err: unknown) => TOKEN_GONE.has((err as Error)?.name);

export class AgentWorker {
  private stopping = false;
  private readonly pollAbort = new AbortController();
  private loop?: Promise<void>;
  private readonly log: Logger;
  private readonly running = new Set<Promise<void>>();
  private readonly concurrency: number;
  private readonly execute: TaskExecutor;

  constructor(private readonly options: WorkerOptions) {
    this.log = options.log;
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? 1));
    this.execute = options.execute ?? ((task, run) => runTask(options.runner, task, run));
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops polling and waits for every task under way to finish and report. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.pollAbort.abort();
    await this.loop;
    await Promise.all([...this.running]);
  }

  private async run(): Promise<void> {
    let backoff = 1000;
    while (!this.stopping) {
      if (this.running.size >= this.concurrency) {
        await Promise.race(this.running);
        continue;
      }
      let messages: Message[] = [];
      try {
        const out = await this.options.sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: this.options.queueUrl,
            // One at a time, each as soon as it is there: a long poll for several messages
            // answers, in local mode's SQS server, only once it has them all or its wait is
            // over, so a single task sent to an idle agent waited 20 s. The loop takes the next
            // one at once while slots are free.
            MaxNumberOfMessages: 1,
            WaitTimeSeconds: this.options.waitTimeSeconds ?? SITE_QUEUE.receiveWaitTimeSeconds,
            MessageSystemAttributeNames: ['All'],
          }),
          { abortSignal: this.pollAbort.signal },
        );
        messages = out.Messages ?? [];
        backoff = 1000;
      } catch (err) {
        if (this.stopping) break;
        this.log.warn(LogEvent.pollError, { error: err, retryInMs: backoff });
        await sleep(backoff);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        continue;
      }
      for (const message of messages) {
        const handling: Promise<void> = this.handle(message)
          .catch((err: unknown) => this.log.error('agent.task.crashed', { error: err }))
          .finally(() => this.running.delete(handling));
        this.running.add(handling);
      }
    }
  }

  private async handle(message: Message): Promise<void> {
    let parsed: AgentTaskMessage;
    try {
      parsed = JSON.parse(message.Body ?? '') as AgentTaskMessage;
      if (typeof parsed.taskToken !== 'string' || !parsed.task || typeof parsed.task !== 'object')
        throw new Error('no taskToken or task');
      if (typeof parsed.task.jobId !== 'string') throw new Error('no jobId');
    } catch (err) {
      this.log.error('agent.task.malformed', { error: err, messageId: message.MessageId });
      await this.deleteMessage(message);
      return;
    }
    const { taskToken: claimToken, task } = parsed;
    const claimId = randomBytes(18).toString('base64url');
    // Everything this agent writes about the task goes to this claim's record, under its site.
    const ref: ClaimRef = { site: this.options.runner.agent, jobId: task.jobId, claimId };
    const base = this.log.child({ jobId: task.jobId, target: task.target, kind: task.kind });
    let writeFailed = false;
    const taskLog = new TaskLog({
      claimId,
      agent: this.options.runner.agent,
      target: task.target,
      write: (batch) => this.options.catalog.appendTaskLog(ref, batch),
      onWriteError: (err) => {
        // Once per task on stderr; the lines are kept and written at the next flush.
        if (!writeFailed) base.warn('agent.task.log_write_failed', { error: err });
        writeFailed = true;
      },
    });
    const log = taskLog.logger(base);
    log.info(LogEvent.taskReceived, { receiveCount: message.Attributes?.ApproximateReceiveCount });

    // The job first: a task whose job has ended (failed, cancelled) never runs.
    const ended = await this.jobEnded(task.jobId, log);
    if (ended) {
      log.warn(LogEvent.taskAbandoned, { reason: `${ended} before the task started` });
      await this.deleteMessage(message);
      return;
    }
    // The claim: only one agent, once, gets the task; a second delivery finds the token spent.
    const claim: TaskClaim = { claimId, agent: this.options.runner.agent };
    try {
      await this.options.sfn.send(
        new SendTaskSuccessCommand({ taskToken: claimToken, output: JSON.stringify(claim) }),
      );
    } catch (err) {
      if (isTokenGone(err)) {
        log.warn(LogEvent.taskAbandoned, {
          reason:
            'the task is not for this agent to run: its claim token is gone (the job ended, the attempt was given up, or the task was claimed already)',
        });
        await this.deleteMessage(message);
      } else {
        // Not known whether the claim went through: the message comes back after its visibility
        // timeout, and its claim either works then or finds the token spent.
        log.warn('agent.task.claim_failed', { error: err });
      }
      return;
    }
    // Step Functions re-dispatches a task whose agent dies; the queue never does.
    await this.deleteMessage(message);
    // The task is this agent's: its log lines go to the job from now on.
    taskLog.start();
    try {
      await this.runToEnd(task, ref, log, taskLog);
    } finally {
      await taskLog.close();
    }
  }

  /** A claimed task: its run token, then the task itself, then its end on the claim. */
  private async runToEnd(
    task: AgentTask,
    ref: ClaimRef,
    log: Logger,
    taskLog: TaskLog,
  ): Promise<void> {
    const taskToken = await this.runTokenFor(ref, log);
    if (!taskToken) return;
    let outcome: 'succeeded' | 'failed' | 'stopped' = 'stopped';
    try {
      // Cancelled while the token was on its way: the task ends before it starts.
      const ended = await this.jobEnded(task.jobId, log);
      if (ended) {
        log.warn(LogEvent.taskAbandoned, { reason: `${ended} before the task started` });
        return;
      }
      outcome = await this.runClaimed(task, ref, taskToken, log, taskLog);
    } finally {
      await this.endTask(ref, outcome, log);
    }
  }

  /**
   * Records on the claim that the task ended, after its holds were released (what `stowage
   * cancel --wait` waits for). Retried briefly; the task's outcome does not depend on it.
   */
  private async endTask(
    claim: ClaimRef,
    outcome: 'succeeded' | 'failed' | 'stopped',
    log: Logger,
  ): Promise<void> {
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        await this.options.catalog.endTask(claim, {
          endedAt: new Date().toISOString(),
          outcome,
        });
        return;
      } catch (err) {
        if (attempt === 3) log.warn('agent.task.end_not_recorded', { error: err });
        else await sleep(500 * attempt);
      }
    }
  }

  /** Why the job must not (or no longer) run, or undefined while it is RUNNING. */
  private async jobEnded(jobId: string, log: Logger): Promise<string | undefined> {
    let job;
    try {
      // The job's record: an agent may read it, not other sites' claims.
      job = await this.options.catalog.getJobRecord(jobId);
    } catch (err) {
      // The catalog unreachable is no reason to drop work; the tokens still guard it.
      log.warn('agent.job.check_failed', { error: err });
      return undefined;
    }
    if (!job) return `job ${jobId} is not in the catalog`;
    return job.status === 'RUNNING' ? undefined : `job ${jobId} is ${job.status}`;
  }

  /** Waits for the workflow to hand the claim its run token; undefined when the task is off. */
  private async runTokenFor(claim: ClaimRef, log: Logger): Promise<string | undefined> {
    const { jobId } = claim;
    const deadline = Date.now() + (this.options.handOverTimeoutMs ?? 60_000);
    let delay = 50;
    let nextJobCheck = Date.now() + 2000;
    for (;;) {
      try {
        const token = await this.options.catalog.takeRunToken(claim);
        if (token) return token;
      } catch (err) {
        log.warn('agent.task.hand_over_read_failed', { error: err });
      }
      if (Date.now() > deadline) {
        log.warn(LogEvent.taskAbandoned, {
          reason:
            'no run token was handed over for the claim in time; the workflow re-dispatches it',
        });
        return undefined;
      }
      if (Date.now() > nextJobCheck) {
        nextJobCheck = Date.now() + 2000;
        const ended = await this.jobEnded(jobId, log);
        if (ended) {
          log.warn(LogEvent.taskAbandoned, { reason: `${ended} before the task started` });
          return undefined;
        }
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 500);
    }
  }

  /** Runs a claimed task to its end and reports it; resolves how it ended. */
  private async runClaimed(
    task: AgentTask,
    claim: ClaimRef,
    taskToken: string,
    log: Logger,
    taskLog: TaskLog,
  ): Promise<'succeeded' | 'failed' | 'stopped'> {
    const abort = new AbortController();
    let pastNoReturn = false;
    const progress = new ProgressReporter(async (p) => {
      // On the claim: readers show it as the job's latest progress, and a backup's as its item's.
      await this.options.catalog.reportProgress(
        claim,
        p,
        task.kind === 'BACKUP' && Number.isInteger(task.itemIndex) ? task.itemIndex : undefined,
      );
    });
    const stopFor = (reason: Error) => {
      if (pastNoReturn || abort.signal.aborted) return;
      log.warn('agent.task.stopping', { reason: reason.message });
      abort.abort(reason);
    };
    const heartbeat = setInterval(
      () => void this.heartbeat(taskToken, stopFor, log),
      this.options.heartbeatMs ?? 30_000,
    );
    const jobCheck = setInterval(() => {
      void this.jobEnded(task.jobId, log).then((ended) => {
        if (ended) stopFor(new Cancelled(`${ended}: the task stopped and undid its work`));
      });
    }, this.options.jobCheckMs ?? 2000);
    const pointOfNoReturn = async (): Promise<void> => {
      // Checked last before the change that cannot be undone: the token alive, and the claim
      // marked past its point of no return unless a cancel marked it first (one conditional
      // write each, so exactly one wins; a cancel after this lets the task finish).
      await this.options.sfn.send(new SendTaskHeartbeatCommand({ taskToken })).catch((err) => {
        if (isTokenGone(err)) {
          const gone = new Cancelled('the task token is gone (the job ended): nothing was changed');
          stopFor(gone);
          throw gone;
        }
      });
      const marked = await this.options.catalog.markPointOfNoReturn(
        claim,
        new Date().toISOString(),
      );
      // A job ended otherwise than by a cancel (which marks the claims first) is seen here.
      const ended = marked ? await this.jobEnded(task.jobId, log) : undefined;
      if (!marked || ended || abort.signal.aborted) {
        const cancelled = new Cancelled(
          `job ${task.jobId} ended before its point of no return: nothing was changed`,
        );
        stopFor(cancelled);
        throw cancelled;
      }
      pastNoReturn = true;
      log.info(LogEvent.driverStep, { step: 'past the point of no return: the task finishes' });
    };
    progress.start();
    let outcome: { ok: true; output: unknown } | { ok: false; error: Error };
    try {
      const output = await this.execute(task, {
        progress,
        signal: abort.signal,
        pointOfNoReturn,
        log,
      });
      outcome = { ok: true, output };
    } catch (err) {
      outcome = { ok: false, error: err instanceof Error ? err : new Error(String(err)) };
    } finally {
      clearInterval(jobCheck);
      await progress.stop();
    }
    try {
      // What a snapshot task changed is in the listing before its job is seen to end.
      const republished = task.kind === 'SNAPSHOT';
      if (republished) await this.options.afterTask?.().catch(() => undefined);
      if (abort.signal.aborted) {
        log.warn(LogEvent.taskAbandoned, {
          reason: (abort.signal.reason as Error | undefined)?.message ?? 'the task was stopped',
        });
      } else {
        // The task's lines are in the job's log before its job can be seen to end.
        await taskLog.flush();
        await this.report(taskToken, outcome, log);
      }
      if (!republished) await this.options.afterTask?.().catch(() => undefined);
    } finally {
      clearInterval(heartbeat);
    }
    return abort.signal.aborted ? 'stopped' : outcome.ok ? 'succeeded' : 'failed';
  }

  /** Reports the outcome, retrying while Step Functions cannot be reached; never re-runs. */
  private async report(
    taskToken: string,
    outcome: { ok: true; output: unknown } | { ok: false; error: Error },
    log: Logger,
  ): Promise<void> {
    const command = outcome.ok
      ? new SendTaskSuccessCommand({ taskToken, output: JSON.stringify(outcome.output ?? null) })
      : new SendTaskFailureCommand({
          taskToken,
          error: outcome.error.name.slice(0, 256),
          cause: outcome.error.message.slice(0, 32_000),
        });
    const attempts = this.options.reportAttempts ?? 10;
    let delay = this.options.reportRetryMs ?? 1000;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.options.sfn.send(command as SendTaskSuccessCommand);
        if (outcome.ok) log.info(LogEvent.taskSucceeded);
        else log.warn(LogEvent.taskFailed, { error: outcome.error });
        return;
      } catch (err) {
        if (isTokenGone(err)) {
          log.warn(LogEvent.taskAbandoned, {
            reason: 'the task token expired before the answer',
          });
          return;
        }
        if (attempt >= attempts) {
          log.error('agent.task.report_failed', { error: err, attempts });
          return;
        }
        log.warn('agent.task.report_retry', { error: err, attempt, retryInMs: delay });
        await sleep(delay);
        delay = Math.min(delay * 2, MAX_BACKOFF_MS);
      }
    }
  }

  private async heartbeat(
    token: string,
    stop: (reason: Error) => void,
    log: Logger,
  ): Promise<void> {
    try {
      await this.options.sfn.send(new SendTaskHeartbeatCommand({ taskToken: token }));
    } catch (err) {
      if (isTokenGone(err)) {
        stop(new Cancelled('the task token is gone (the job ended or gave up on this attempt)'));
        return;
      }
      log.warn('agent.heartbeat.failed', { error: err });
    }
  }

  private async deleteMessage(message: Message): Promise<void> {
    try {
      await this.options.sqs.send(
        new DeleteMessageCommand({
          QueueUrl: this.options.queueUrl,
          ReceiptHandle: message.ReceiptHandle,
        }),
      );
    } catch (err) {
      this.log.warn('agent.message.delete_failed', { error: err });
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
