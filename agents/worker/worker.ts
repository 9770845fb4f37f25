/**
 * The agent's queue worker. Long-polls the site's queue; for each task message it heartbeats to
 * Step Functions (SendTaskHeartbeat) and extends the message's visibility while the task runs,
 * then answers with SendTaskSuccess or SendTaskFailure and only then deletes the message. If a
 * heartbeat is refused (the token expired: Step Functions gave up on this attempt), the task is
 * aborted and its message dropped. Connection errors back off; SIGTERM drains (`stop`).
 */
import {
  ChangeMessageVisibilityCommand,
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
import type { AgentTaskMessage } from '../../statemachines/contracts';
import { ProgressReporter } from '../core/progress';
import { runBackup, runRestore, runSnapshot, runVerify, type RunnerDeps } from '../core/runner';

export interface WorkerOptions {
  queueUrl: string;
  sqs: SQSClient;
  sfn: SFNClient;
  catalog: Catalog;
  runner: RunnerDeps;
  log: Logger;
  /** How often a running task heartbeats; well under the state's HeartbeatSeconds (120). */
  heartbeatMs?: number;
  /** Long-poll wait; shorter in tests so `stop` returns quickly. */
  waitTimeSeconds?: number;
  /**
   * Called after every task (the inventory changes after a restore); for a snapshot task before
   * it is answered, so the listing shows its effect once the job has ended.
   */
  afterTask?: () => Promise<void>;
}

const TOKEN_GONE = new Set(['TaskTimedOut', 'TaskDoesNotExist', 'InvalidToken']);
const MAX_BACKOFF_MS = 30_000;

export class AgentWorker {
  private stopping = false;
  private readonly pollAbort = new AbortController();
  private loop?: Promise<void>;
  private readonly log: Logger;

  constructor(private readonly options: WorkerOptions) {
    this.log = options.log;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops polling and waits for the task under way to finish and report. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.pollAbort.abort();
    await this.loop;
  }

  private async run(): Promise<void> {
    let backoff = 1000;
    while (!this.stopping) {
      let messages: Message[] = [];
      try {
        const out = await this.options.sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: this.options.queueUrl,
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
      for (const message of messages) await this.handle(message);
    }
  }

  private async handle(message: Message): Promise<void> {
    let parsed: AgentTaskMessage;
    try {
      parsed = JSON.parse(message.Body ?? '') as AgentTaskMessage;
      if (!parsed.taskToken || !parsed.task?.kind) throw new Error('no taskToken or task');
    } catch (err) {
      this.log.error('agent.task.malformed', { error: err, messageId: message.MessageId });
      await this.deleteMessage(message);
      return;
    }
    const { taskToken, task } = parsed;
    const log = this.log.child({ jobId: task.jobId, target: task.target, kind: task.kind });
    log.info(LogEvent.taskReceived, { receiveCount: message.Attributes?.ApproximateReceiveCount });

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
      () => void this.heartbeat(taskToken, message, abort, log),
      this.options.heartbeatMs ?? 30_000,
    );
    progress.start();
    let outcome: { ok: true; output: unknown } | { ok: false; error: Error };
    try {
      const run = { progress, signal: abort.signal };
      const output =
        task.kind === 'BACKUP'
          ? await runBackup(this.options.runner, task, run)
          : task.kind === 'RESTORE'
            ? await runRestore(this.options.runner, task, run)
            : task.kind === 'SNAPSHOT'
              ? await runSnapshot(this.options.runner, task, run)
              : await runVerify(this.options.runner, task, run);
      outcome = { ok: true, output };
    } catch (err) {
      outcome = { ok: false, error: err instanceof Error ? err : new Error(String(err)) };
    } finally {
      clearInterval(heartbeat);
      await progress.stop();
    }
    // What a snapshot task changed is in the listing before its job is seen to end.
    const republished = task.kind === 'SNAPSHOT';
    if (republished) await this.options.afterTask?.().catch(() => undefined);
    if (abort.signal.aborted) {
      log.warn(LogEvent.taskAbandoned, { reason: 'the task token expired while the task ran' });
      await this.deleteMessage(message);
      return;
    }
    try {
      if (outcome.ok) {
        await this.options.sfn.send(
          new SendTaskSuccessCommand({ taskToken, output: JSON.stringify(outcome.output) }),
        );
        log.info(LogEvent.taskSucceeded);
      } else {
        await this.options.sfn.send(
          new SendTaskFailureCommand({
            taskToken,
            error: outcome.error.name.slice(0, 256),
            cause: outcome.error.message.slice(0, 32_000),
          }),
        );
        log.warn(LogEvent.taskFailed, { error: outcome.error });
      }
      await this.deleteMessage(message);
    } catch (err) {
      if (TOKEN_GONE.has((err as Error).name)) {
        log.warn(LogEvent.taskAbandoned, { reason: 'the task token expired before the answer' });
        await this.deleteMessage(message);
      } else {
        // Leave the message: it becomes visible again and the task is retried.
        log.error('agent.task.report_failed', { error: err });
      }
    }
    if (!republished) await this.options.afterTask?.().catch(() => undefined);
  }

  private async heartbeat(token: string, message: Message, abort: AbortController, log: Logger) {
    try {
      await this.options.sfn.send(new SendTaskHeartbeatCommand({ taskToken: token }));
    } catch (err) {
      if (TOKEN_GONE.has((err as Error).name)) {
        abort.abort();
        return;
      }
      log.warn('agent.heartbeat.failed', { error: err });
    }
    try {
      await this.options.sqs.send(
        new ChangeMessageVisibilityCommand({
          QueueUrl: this.options.queueUrl,
          ReceiptHandle: message.ReceiptHandle,
          VisibilityTimeout: SITE_QUEUE.visibilityTimeoutSeconds,
        }),
      );
    } catch (err) {
      log.warn('agent.visibility.failed', { error: err });
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
