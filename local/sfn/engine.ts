/**
 * A local Step Functions service: executes the project's ASL files with aws-local-stepfunctions
 * and adds what that library lacks and the service has: named executions with ARNs and history,
 * task tokens (`$$.Task.Token`) for `sqs:sendMessage.waitForTaskToken` and
 * `lambda:invoke.waitForTaskToken` states answered through SendTaskSuccess / SendTaskFailure,
 * HeartbeatSeconds enforced from SendTaskHeartbeat (`heartbeatSeconds` replaces every state's
 * value: tests shorten it through configuration, never in the ASL files), and StopExecution that
 * also closes the execution's open tasks.
 *
 * Lambda tasks (`arn:aws:states:::lambda:invoke`) call in-process handlers registered by
 * function ARN, with the service's error shape: Error = the thrown error's name, Cause = a JSON
 * document with errorType and errorMessage.
 *
 * Execution records persist in `<dataDir>/executions.json`; an execution that was running when
 * the process stopped cannot be resumed and is recorded as ABORTED on the next start.
 */
import 'promise.withresolvers/auto';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
import type { Logger } from '../../kernel/logger';
import { silentLogger, LogEvent } from '../../kernel/logger';

export type ExecutionStatus = 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'TIMED_OUT' | 'ABORTED';

export interface HistoryEvent {
  id: number;
  previousEventId: number;
  timestamp: string;
  type: string;
  details?: Record<string, unknown>;
}

export interface ExecutionRecord {
  executionArn: string;
  stateMachineArn: string;
  name: string;
  status: ExecutionStatus;
  startDate: string;
  stopDate?: string;
  input: string;
  output?: string;
  error?: string;
  cause?: string;
  events: HistoryEvent[];
}

/** A service error; the HTTP layer sends it as `{ __type: name, message }`. */
export class SfnServiceError extends Error {
  constructor(
    override readonly name: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

export type LambdaHandler = (payload: unknown) => Promise<unknown>;

interface OpenTask {
  token: string;
  executionArn: string;
  stateName: string;
  heartbeatSeconds?: number;
  heartbeatTimer?: NodeJS.Timeout;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

export interface RegisteredMachine {
  arn: string;
  name: string;
  definition: StateMachineDefinition;
  /** When it was registered (CreateStateMachine's creationDate). */
  creationDate: string;
}

export interface LocalStepFunctionsOptions {
  region?: string;
  accountId?: string;
  /** Where execution records persist; in memory only when absent. */
  dataDir?: string;
  sqs: SQSClient;
  log?: Logger;
  /** Replaces the HeartbeatSeconds of every state that has one (tests: seconds, not minutes). */
  heartbeatSeconds?: number;
}

const TOKEN_PLACEHOLDER = '__stowage_local_task_token__';

function namedError(name: string, message: string): Error {
  const err = new Error(message);
  err.name = name;
  return err;
}

export class LocalStepFunctions {
  readonly region: string;
  readonly accountId: string;
  private readonly machines = new Map<string, RegisteredMachine>();
  private readonly executions = new Map<string, ExecutionRecord>();
  private readonly running = new Map<string, { abort(): void; done: Promise<void> }>();
  private readonly tasks = new Map<string, OpenTask>();
  private readonly file?: string;
  private readonly log: Logger;
  private saveTimer?: NodeJS.Timeout;
  private readonly lambdas = new Map<string, LambdaHandler>();
  /** Executions that were running when the endpoint last stopped (recorded ABORTED on load). */
  readonly orphans: ExecutionRecord[] = [];

  constructor(private readonly options: LocalStepFunctionsOptions) {
    this.region = options.region ?? 'us-east-1';
    this.accountId = options.accountId ?? '000000000000';
    this.log = options.log ?? silentLogger;
    if (options.dataDir) {
      mkdirSync(options.dataDir, { recursive: true });
      this.file = join(options.dataDir, 'executions.json');
      this.load();
    }
  }

  /** Whether an execution named `name` was ever started (of any state machine). */
  hasExecutionNamed(name: string): boolean {
    for (const record of this.executions.values()) if (record.name === name) return true;
    return false;
  }

  /** Makes `handler` answer lambda:invoke tasks whose FunctionName is `functionArn`. */
  registerFunction(functionArn: string, handler: LambdaHandler): void {
    this.lambdas.set(functionArn, handler);
  }

  stateMachineArn(name: string): string {
    return `arn:aws:states:${this.region}:${this.accountId}:stateMachine:${name}`;
  }

  functionArn(name: string): string {
    return `arn:aws:lambda:${this.region}:${this.accountId}:function:${name}`;
  }

  /** Registers (or replaces) a state machine; validates the definition now, as CreateStateMachine does. */
  register(name: string, definition: StateMachineDefinition): string {
    for (const [stateName, state] of taskStates(definition)) {
      const resource = state.Resource as string;
      if (!isLambdaResource(resource) && !isCallback(resource)) {
        throw new SfnServiceError(
          'InvalidDefinition',
          `state "${stateName}": resource ${resource} is not supported locally`,
        );
      }
    }
    new StateMachine(definition, { validationOptions: { checkArn: false } });
    const arn = this.stateMachineArn(name);
    this.machines.set(arn, { arn, name, definition, creationDate: new Date().toISOString() });
    return arn;
  }

  /** The registered state machines, by name (ListStateMachines). */
  listStateMachines(): RegisteredMachine[] {
    return [...this.machines.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** One state machine (DescribeStateMachine); StateMachineDoesNotExist if it is not registered. */
  describeStateMachine(stateMachineArn: string): RegisteredMachine {
    const machine = this.machines.get(stateMachineArn);
    if (!machine) {
      throw new SfnServiceError(
        'StateMachineDoesNotExist',
        `State Machine Does Not Exist: '${stateMachineArn}'`,
      );
    }
    return machine;
  }

  startExecution(req: { stateMachineArn: string; name?: string; input?: string }): {
    executionArn: string;
    startDate: string;
  } {
    const machine = this.machines.get(req.stateMachineArn);
    if (!machine) {
      throw new SfnServiceError(
        'StateMachineDoesNotExist',
        `State Machine Does Not Exist: '${req.stateMachineArn}'`,
      );
    }
    const name = req.name ?? randomUUID();
    if (!/^[A-Za-z0-9_-]{1,80}$/.test(name)) {
      throw new SfnServiceError('InvalidName', `Invalid Name: '${name}'`);
    }
    const executionArn = `arn:aws:states:${this.region}:${this.accountId}:execution:${machine.name}:${name}`;
    if (this.executions.has(executionArn)) {
      throw new SfnServiceError(
        'ExecutionAlreadyExists',
        `Execution Already Exists: '${executionArn}'`,
      );
    }
    const inputText = req.input ?? '{}';
    let input: unknown;
    try {
      input = JSON.parse(inputText);
    } catch {
      throw new SfnServiceError(
        'InvalidExecutionInput',
        'Invalid State Machine Execution Input: not JSON',
      );
    }
    const startDate = new Date().toISOString();
    const record: ExecutionRecord = {
      executionArn,
      stateMachineArn: machine.arn,
      name,
      status: 'RUNNING',
      startDate,
      input: inputText,
      events: [],
    };
    this.executions.set(executionArn, record);
    this.addEvent(record, 'ExecutionStarted', { input: inputText, roleArn: 'local' });
    this.run(machine, record, input);
    this.log.info(LogEvent.executionStarted, { executionArn });
    return { executionArn, startDate };
  }

  describeExecution(executionArn: string): ExecutionRecord {
    const record = this.executions.get(executionArn);
    if (!record) {
      throw new SfnServiceError(
        'ExecutionDoesNotExist',
        `Execution Does Not Exist: '${executionArn}'`,
      );
    }
    return record;
  }

  listExecutions(req: {
    stateMachineArn?: string;
    statusFilter?: ExecutionStatus;
  }): ExecutionRecord[] {
    return [...this.executions.values()]
      .filter((e) => !req.stateMachineArn || e.stateMachineArn === req.stateMachineArn)
      .filter((e) => !req.statusFilter || e.status === req.statusFilter)
      .sort((a, b) => b.startDate.localeCompare(a.startDate));
  }

  stopExecution(executionArn: string, error?: string, cause?: string): string {
    const record = this.describeExecution(executionArn);
    const stopDate = new Date().toISOString();
    if (record.status !== 'RUNNING') return record.stopDate ?? stopDate;
    this.finish(record, 'ABORTED', { error, cause });
    this.addEvent(record, 'ExecutionAborted', { error, cause });
    this.running.get(executionArn)?.abort();
    for (const task of this.tasks.values()) {
      if (task.executionArn !== executionArn) continue;
      this.closeTask(task);
      // Settled, so the library clears the state's TimeoutSeconds timer (a day long, it would
      // otherwise keep the process alive); the aborted execution ignores the outcome.
      task.reject(namedError('States.Aborted', 'the execution was stopped'));
    }
    return stopDate;
  }

  sendTaskSuccess(token: string, output: string): void {
    const task = this.openTask(token);
    let value: unknown;
    try {
      value = JSON.parse(output);
    } catch {
      throw new SfnServiceError('InvalidOutput', 'Invalid Output: not JSON');
    }
    this.closeTask(task);
    task.resolve(value);
  }

  sendTaskFailure(token: string, error?: string, cause?: string): void {
    const task = this.openTask(token);
    this.closeTask(task);
    task.reject(namedError(error || 'States.TaskFailed', cause ?? ''));
  }

  sendTaskHeartbeat(token: string): void {
    const task = this.openTask(token);
    this.armHeartbeat(task);
  }

  /** Resolves once every running execution has ended (for orderly shutdown in tests). */
  async close(): Promise<void> {
    for (const arn of [...this.running.keys()]) {
      this.stopExecution(arn, 'States.Aborted', 'local Step Functions endpoint closed');
    }
    await Promise.all([...this.running.values()].map((r) => r.done));
    this.flush();
  }

  private run(machine: RegisteredMachine, record: ExecutionRecord, input: unknown): void {
    const handlers: Record<string, (input: unknown) => Promise<unknown>> = {};
    for (const [stateName, state] of taskStates(machine.definition)) {
      const resource = state.Resource as string;
      handlers[stateName] = isCallback(resource)
        ? (params) => this.dispatchCallback(record.executionArn, stateName, state, params)
        : (payload) => this.invokeLambda(payload);
    }
    // Validated once, when it was registered: validating it again (the library compiles its JSON
    // schema each time, ~0.1 s of the event loop) would delay every execution's start.
    const sm = new StateMachine(machine.definition, { validationOptions: { noValidate: true } });
    const exec = sm.run(input as never, {
      overrides: { taskResourceLocalHandlers: handlers as never },
      noThrowOnAbort: true,
      context: {
        Execution: {
          Id: record.executionArn,
          Name: record.name,
          StartTime: record.startDate,
          Input: input as never,
          RoleArn: 'local',
        },
        StateMachine: { Id: machine.arn, Name: machine.name },
        Task: { Token: TOKEN_PLACEHOLDER },
      },
    });
    const history = (async () => {
      for await (const event of exec.eventLogs) this.recordLibraryEvent(record, event as never);
    })().catch(() => undefined);
    const outcome = exec.result.then(
      (output: unknown) => ({ ok: true as const, output }),
      (err: Error) => ({ ok: false as const, err }),
    );
    // The execution's own event comes last, as Step Functions writes it: after every event of its
    // final state. The library settles its result before its event log has been read to the end
    // (the log ends with the library's terminal event), so both are waited for.
    const all = (async () => {
      const settled = await outcome;
      await history;
      if (record.status === 'RUNNING') {
        if (settled.ok) {
          this.finish(record, 'SUCCEEDED', { output: JSON.stringify(settled.output ?? null) });
          this.addEvent(record, 'ExecutionSucceeded', { output: record.output });
        } else {
          const err = settled.err;
          const caught = (err.cause ?? err) as Error & { cause?: unknown };
          const timedOut = err.name === 'ExecutionTimeoutError';
          const error = timedOut ? 'States.Timeout' : caught.name;
          const cause = typeof caught.cause === 'string' ? caught.cause : caught.message;
          this.finish(record, timedOut ? 'TIMED_OUT' : 'FAILED', { error, cause });
          this.addEvent(record, timedOut ? 'ExecutionTimedOut' : 'ExecutionFailed', {
            error,
            cause,
          });
        }
      }
      this.running.delete(record.executionArn);
      this.log.info(LogEvent.executionEnded, {
        executionArn: record.executionArn,
        status: record.status,
        error: record.error,
      });
    })();
    this.running.set(record.executionArn, { abort: () => exec.abort(), done: all });
  }

  private async invokeLambda(params: unknown): Promise<unknown> {
    const { FunctionName, Payload } = params as { FunctionName: string; Payload?: unknown };
    const fn = this.lambdas.get(FunctionName);
    if (!fn) {
      throw namedError('Lambda.ResourceNotFoundException', `Function not found: ${FunctionName}`);
    }
    try {
      // Payload crosses a process boundary in AWS: give the handler its own copy.
      const payload: unknown = JSON.parse(JSON.stringify(Payload ?? {}));
      const result = await fn(payload);
      return { Payload: result ?? null, StatusCode: 200, ExecutedVersion: '$LATEST' };
    } catch (err) {
      const e = err as Error;
      throw namedError(
        e.name || 'Error',
        JSON.stringify({ errorType: e.name, errorMessage: e.message }),
      );
    }
  }

  private async dispatchCallback(
    executionArn: string,
    stateName: string,
    state: Record<string, unknown>,
    params: unknown,
  ): Promise<unknown> {
    const token = randomBytes(48).toString('base64url');
    const withToken = (text: string): string => {
      const parts = text.split(TOKEN_PLACEHOLDER);
      if (parts.length < 2) {
        throw namedError('States.Runtime', `state "${stateName}" does not pass $$.Task.Token`);
      }
      return parts.join(token);
    };
    const heartbeatSeconds =
      typeof state.HeartbeatSeconds === 'number'
        ? (this.options.heartbeatSeconds ?? state.HeartbeatSeconds)
        : undefined;
    const { promise, resolve, reject } = Promise.withResolvers<unknown>();
    const task: OpenTask = {
      token,
      executionArn,
      stateName,
      resolve,
      reject,
      ...(heartbeatSeconds !== undefined ? { heartbeatSeconds } : {}),
    };
    this.tasks.set(token, task);
    if (isSqsCallback(state.Resource as string)) {
      const { QueueUrl, MessageBody, ...rest } = params as {
        QueueUrl: string;
        MessageBody: unknown;
        [k: string]: unknown;
      };
      let body: string;
      try {
        body = withToken(
          typeof MessageBody === 'string' ? MessageBody : JSON.stringify(MessageBody),
        );
        await this.options.sqs.send(
          new SendMessageCommand({
            QueueUrl,
            MessageBody: body,
            ...(rest as Record<string, never>),
          }),
        );
      } catch (err) {
        this.closeTask(task);
        if ((err as Error).name === 'States.Runtime') throw err;
        throw namedError('SQS.SdkClientException', (err as Error).message);
      }
    } else {
      // lambda:invoke.waitForTaskToken: the function gets the token and returns at once; the
      // task then waits for SendTask* on it. A function that fails fails the task.
      try {
        const { Payload, ...rest } = params as { Payload?: unknown; [k: string]: unknown };
        await this.invokeLambda({
          ...rest,
          Payload: JSON.parse(withToken(JSON.stringify(Payload ?? {}))),
        });
      } catch (err) {
        this.closeTask(task);
        throw err;
      }
    }
    this.armHeartbeat(task);
    try {
      return await promise;
    } finally {
      // Timed out by the library (TimeoutSeconds) or answered: either way the token is spent.
      this.closeTask(task);
    }
  }

  private armHeartbeat(task: OpenTask): void {
    if (task.heartbeatSeconds === undefined) return;
    clearTimeout(task.heartbeatTimer);
    task.heartbeatTimer = setTimeout(() => {
      this.closeTask(task);
      task.reject(
        namedError('States.HeartbeatTimeout', `no heartbeat for ${task.heartbeatSeconds}s`),
      );
    }, task.heartbeatSeconds * 1000);
    task.heartbeatTimer.unref?.();
  }

  private openTask(token: string): OpenTask {
    const task = this.tasks.get(token);
    if (!task) {
      throw new SfnServiceError(
        'TaskTimedOut',
        'Task Timed Out: the task token is unknown, answered or expired',
      );
    }
    return task;
  }

  private closeTask(task: OpenTask): void {
    clearTimeout(task.heartbeatTimer);
    this.tasks.delete(task.token);
  }

  private finish(
    record: ExecutionRecord,
    status: ExecutionStatus,
    fields: { output?: string; error?: string | undefined; cause?: string | undefined },
  ): void {
    record.status = status;
    record.stopDate = new Date().toISOString();
    if (fields.output !== undefined) record.output = fields.output;
    if (fields.error !== undefined) record.error = fields.error;
    if (fields.cause !== undefined) record.cause = fields.cause;
    this.save();
  }

  private recordLibraryEvent(
    record: ExecutionRecord,
    event: {
      type: string;
      state?: { name: string; type: string; input?: unknown; output?: unknown };
      Error?: string;
      Cause?: unknown;
      retry?: { attempt: number };
    },
  ): void {
    const state = event.state;
    // Nothing follows an execution's own end (a stopped execution's states still unwind).
    if (!state || record.status !== 'RUNNING') return;
    switch (event.type) {
      case 'StateEntered':
        this.addEvent(record, `${state.type}StateEntered`, {
          name: state.name,
          input: JSON.stringify(state.input ?? null),
        });
        break;
      case 'StateExited':
        this.addEvent(record, `${state.type}StateExited`, {
          name: state.name,
          output: JSON.stringify(state.output ?? null),
        });
        break;
      case 'StateFailed':
        // Step Functions has a failure event for tasks, maps and parallels; a Fail state's
        // failure is the execution's own (ExecutionFailed).
        if (state.type === 'Task') {
          this.addEvent(record, 'TaskFailed', {
            resourceType: state.type,
            resource: state.name,
            error: event.Error,
            cause: String(event.Cause ?? ''),
          });
        } else if (state.type === 'Map' || state.type === 'Parallel') {
          this.addEvent(record, `${state.type}StateFailed`, {
            name: state.name,
            error: event.Error,
            cause: String(event.Cause ?? ''),
          });
        }
        break;
      case 'StateRetried':
        this.addEvent(record, 'TaskStateRetried', {
          name: state.name,
          attempt: event.retry?.attempt,
        });
        break;
      case 'StateCaught':
        this.addEvent(record, 'TaskStateCaught', { name: state.name });
        break;
    }
  }

  private addEvent(record: ExecutionRecord, type: string, details?: Record<string, unknown>): void {
    const id = record.events.length + 1;
    record.events.push({
      id,
      previousEventId: id - 1,
      timestamp: new Date().toISOString(),
      type,
      ...(details ? { details } : {}),
    });
    this.save();
  }

  private load(): void {
    let saved: ExecutionRecord[] = [];
    try {
      saved = JSON.parse(readFileSync(this.file!, 'utf8')) as ExecutionRecord[];
    } catch {
      return;
    }
    for (const record of saved) {
      if (record.status === 'RUNNING') {
        record.status = 'ABORTED';
        record.stopDate = new Date().toISOString();
        record.error = 'States.Aborted';
        record.cause = 'the local Step Functions endpoint stopped while this execution ran';
        this.orphans.push(record);
      }
      this.executions.set(record.executionArn, record);
    }
  }

  private save(): void {
    if (!this.file || this.saveTimer) return;
    this.saveTimer = setTimeout(() => this.flush(), 200);
    this.saveTimer.unref?.();
  }

  private flush(): void {
    clearTimeout(this.saveTimer);
    this.saveTimer = undefined;
    if (!this.file) return;
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify([...this.executions.values()]));
    renameSync(tmp, this.file);
  }
}

function isLambdaResource(resource: string): boolean {
  return resource === 'arn:aws:states:::lambda:invoke' || resource.startsWith('arn:aws:lambda:');
}

function isSqsCallback(resource: string): boolean {
  return resource === 'arn:aws:states:::sqs:sendMessage.waitForTaskToken';
}

function isCallback(resource: string): boolean {
  return isSqsCallback(resource) || resource === 'arn:aws:states:::lambda:invoke.waitForTaskToken';
}

/** Every Task state, including those inside Map and Parallel states. */
function taskStates(def: {
  States: Record<string, unknown>;
}): Array<[string, Record<string, unknown>]> {
  const found: Array<[string, Record<string, unknown>]> = [];
  for (const [name, raw] of Object.entries(def.States)) {
    const state = raw as Record<string, unknown>;
    if (state.Type === 'Task') found.push([name, state]);
    for (const inner of [
      state.Iterator,
      state.ItemProcessor,
      ...((state.Branches as unknown[]) ?? []),
    ]) {
      if (inner && typeof inner === 'object')
        found.push(...taskStates(inner as { States: Record<string, unknown> }));
    }
  }
  return found;
}
