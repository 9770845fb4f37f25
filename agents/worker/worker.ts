/**
 * The agent's queue worker. Long-polls the site's queue for task messages and runs up to
 * `concurrency` tasks at once; it asks the queue only for as many messages as it has free slots,
 * so a message it cannot start yet stays in the queue for another agent.
 *
 * For each message:
 * 1. The task's token is checked first (one SendTaskHeartbeat): a token Step Functions no longer
 *    knows (the job ended, was stopped, or gave up on this attempt) means the task must not run;
 *    the message is deleted and nothing is done.
 * 2. The message is deleted before the task runs. Step Functions, not the queue, re-dispatches a
 *    task whose agent died (after HeartbeatSeconds, with a new message and a new token), so a
 *    message is never re-delivered to run the same task twice.
 * 3. While the task runs it heartbeats; a heartbeat refused because the token is gone aborts it.
 * 4. Its result is reported with SendTaskSuccess / SendTaskFailure, retried with backoff while the
 *    service cannot be reached (the task is never run again to report it), and given up only when
 *    the token is gone.
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
import type { Catalog } from '../../kernel/catalog';
import type { Logger } from '../../kernel/logger';
import { LogEvent } from '../../kernel/logger';
import { SITE_QUEUE } from '../../kernel/resources';
import type { AgentTask, AgentTaskMessage } from '../../statemachines/contracts';
import { ProgressReporter } from '../core/progress';
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
  /** Tasks run at once (default 1). */
  concurrency?: number;
  /** How often a running task heartbeats; well under the state's HeartbeatSeconds (120). */
  heartbeatMs?: number;
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
            MaxNumberOfMessages: Math.min(10, this.concurrency - this.running.size),
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
    } catch (err) {
      this.log.error('agent.task.malformed', { error: err, messageId: message.MessageId });
      await this.deleteMessage(message);
      return;
    }
    const { taskToken, task } = parsed;
    const log = this.log.child({ jobId: task.jobId, target: task.target, kind: task.kind });
    log.info(LogEvent.taskReceived, { receiveCount: message.Attributes?.ApproximateReceiveCount });

    // The token first: a task whose job has ended (or whose attempt was given up) never runs.
    try {
      await this.options.sfn.send(new SendTaskHeartbeatCommand({ taskToken }));
    } catch (err) {
      if (isTokenGone(err)) {
        log.warn(LogEvent.taskAbandoned, {
          reason: 'the task token is gone before the task started (its job ended or timed out)',
        });
        await this.deleteMessage(message);
        return;
      }
      log.warn('agent.heartbeat.failed', { error: err });
    }
    // Step Functions re-dispatches a task whose agent dies; the queue never does.
    await this.deleteMessage(message);

    const abort = new AbortController();
    const progress = new ProgressReporter(async (p) => {
      // The job shows the latest progress of any of its items; a backup's item shows its own.
      await this.options.catalog.updateJob(task.jobId, { progress: p }, ['RUNNING']);
      if (task.kind === 'BACKUP' && Number.isInteger(task.itemIndex)) {
        await this.options.catalog.updateJobItem(
          task.jobId,
          task.itemIndex,
          { status: 'RUNNING', progress: p },
          ['RUNNING'],
        );
      }
    });
    const heartbeat = setInterval(
      () => void this.heartbeat(taskToken, abort, log),
      this.options.heartbeatMs ?? 30_000,
    );
    progress.start();
    let outcome: { ok: true; output: unknown } | { ok: false; error: Error };
    try {
      const output = await this.execute(task, { progress, signal: abort.signal });
      outcome = { ok: true, output };
    } catch (err) {
      outcome = { ok: false, error: err instanceof Error ? err : new Error(String(err)) };
    } finally {
      await progress.stop();
    }
    try {
      // What a snapshot task changed is in the listing before its job is seen to end.
      const republished = task.kind === 'SNAPSHOT';
      if (republished) await this.options.afterTask?.().catch(() => undefined);
      if (abort.signal.aborted) {
        log.warn(LogEvent.taskAbandoned, { reason: 'the task token expired while the task ran' });
      } else {
        await this.report(taskToken, outcome, log);
      }
      if (!republished) await this.options.afterTask?.().catch(() => undefined);
    } finally {
      clearInterval(heartbeat);
    }
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

  private async heartbeat(token: string, abort: AbortController, log: Logger): Promise<void> {
    try {
      await this.options.sfn.send(new SendTaskHeartbeatCommand({ taskToken: token }));
    } catch (err) {
      if (isTokenGone(err)) {
        if (!abort.signal.aborted) log.warn('agent.task.token_gone', { error: err });
        abort.abort();
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
