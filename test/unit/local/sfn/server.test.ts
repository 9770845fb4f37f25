/**
 * The local Step Functions endpoint as monitoring tools see it: the real AWS SDK client (and the
 * AWS CLI, where it is installed) lists and describes the state machines, and reads execution
 * histories in the order Step Functions writes them: the final state's events, then the
 * execution's own end.
 */
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  DescribeStateMachineCommand,
  DescribeStateMachineForExecutionCommand,
  GetExecutionHistoryCommand,
  ListStateMachinesCommand,
  SFNClient,
  StartExecutionCommand,
  DescribeExecutionCommand,
  type HistoryEvent,
} from '@aws-sdk/client-sfn';
import { SQSClient } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalStepFunctions } from '../../../../local/sfn/engine';
import { startSfnServer } from '../../../../local/sfn/server';

const CREDENTIALS = { accessKeyId: 'local', secretAccessKey: 'local' };

let engine: LocalStepFunctions;
let server: Server;
let endpoint: string;
let sfn: SFNClient;
let doubleArn: string;
let refuseArn: string;

const fnArn = () => engine.functionArn('double');

beforeAll(async () => {
  engine = new LocalStepFunctions({
    sqs: new SQSClient({ region: 'us-east-1', credentials: CREDENTIALS }),
  });
  engine.registerFunction(fnArn(), async (payload) => ({
    value: (payload as { value: number }).value * 2,
  }));
  doubleArn = engine.register('double', {
    Comment: 'doubles a value',
    StartAt: 'Double',
    States: {
      Double: {
        Type: 'Task',
        Resource: 'arn:aws:states:::lambda:invoke',
        Parameters: { FunctionName: fnArn(), 'Payload.$': '$' },
        ResultSelector: { 'value.$': '$.Payload.value' },
        Next: 'Done',
      },
      Done: { Type: 'Succeed' },
    },
  } as never);
  refuseArn = engine.register('refuse', {
    StartAt: 'Look',
    States: {
      Look: { Type: 'Pass', Next: 'Refuse' },
      Refuse: { Type: 'Fail', Error: 'Refused', Cause: 'no' },
    },
  } as never);
  server = await startSfnServer(engine, 0);
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  sfn = new SFNClient({ region: 'us-east-1', endpoint, credentials: CREDENTIALS });
});

afterAll(async () => {
  await engine?.close();
  await new Promise((r) => server?.close(r));
});

async function runToEnd(stateMachineArn: string, input: unknown): Promise<string> {
  const { executionArn } = await sfn.send(
    new StartExecutionCommand({ stateMachineArn, input: JSON.stringify(input) }),
  );
  for (let i = 0; i < 200; i++) {
    const { status } = await sfn.send(new DescribeExecutionCommand({ executionArn }));
    if (status !== 'RUNNING') return executionArn!;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${executionArn} did not end`);
}

async function historyOf(executionArn: string): Promise<HistoryEvent[]> {
  const { events } = await sfn.send(new GetExecutionHistoryCommand({ executionArn }));
  return events ?? [];
}

describe('the local Step Functions endpoint, through the AWS SDK', () => {
  it('lists its state machines and describes each with its definition', async () => {
    const listed = await sfn.send(new ListStateMachinesCommand({}));
    expect(listed.stateMachines?.map((m) => [m.name, m.stateMachineArn, m.type])).toEqual([
      ['double', doubleArn, 'STANDARD'],
      ['refuse', refuseArn, 'STANDARD'],
    ]);
    expect(listed.stateMachines![0]!.creationDate).toBeInstanceOf(Date);

    const paged = await sfn.send(new ListStateMachinesCommand({ maxResults: 1 }));
    expect(paged.stateMachines?.map((m) => m.name)).toEqual(['double']);
    const rest = await sfn.send(new ListStateMachinesCommand({ nextToken: paged.nextToken }));
    expect(rest.stateMachines?.map((m) => m.name)).toEqual(['refuse']);

    const described = await sfn.send(
      new DescribeStateMachineCommand({ stateMachineArn: doubleArn }),
    );
    expect(described).toMatchObject({
      stateMachineArn: doubleArn,
      name: 'double',
      status: 'ACTIVE',
      type: 'STANDARD',
    });
    expect(JSON.parse(described.definition!)).toMatchObject({ StartAt: 'Double' });
    expect(described.roleArn).toMatch(/^arn:aws:iam::/);

    await expect(
      sfn.send(new DescribeStateMachineCommand({ stateMachineArn: `${doubleArn}-gone` })),
    ).rejects.toMatchObject({ name: 'StateMachineDoesNotExist' });
  });

  it('gives a succeeded execution’s history with the final state’s events before ExecutionSucceeded', async () => {
    const executionArn = await runToEnd(doubleArn, { value: 21 });

    const events = await historyOf(executionArn);

    expect(events.map((e) => e.type)).toEqual([
      'ExecutionStarted',
      'TaskStateEntered',
      'TaskStateExited',
      'SucceedStateEntered',
      'SucceedStateExited',
      'ExecutionSucceeded',
    ]);
    expect(events.map((e) => e.id)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(events[1]!.stateEnteredEventDetails?.name).toBe('Double');
    expect(JSON.parse(events[5]!.executionSucceededEventDetails!.output!)).toEqual({ value: 42 });
    const times = events.map((e) => e.timestamp!.getTime());
    expect([...times].sort((a, b) => a - b)).toEqual(times);

    const reversed = await sfn.send(
      new GetExecutionHistoryCommand({ executionArn, reverseOrder: true }),
    );
    expect(reversed.events?.[0]?.type).toBe('ExecutionSucceeded');

    const forExecution = await sfn.send(
      new DescribeStateMachineForExecutionCommand({ executionArn }),
    );
    expect(forExecution).toMatchObject({ stateMachineArn: doubleArn, name: 'double' });
  });

  it('ends a failed execution’s history with its Fail state, then ExecutionFailed', async () => {
    const executionArn = await runToEnd(refuseArn, {});

    const events = await historyOf(executionArn);

    expect(events.map((e) => e.type)).toEqual([
      'ExecutionStarted',
      'PassStateEntered',
      'PassStateExited',
      'FailStateEntered',
      'ExecutionFailed',
    ]);
    expect(events.at(-1)!.executionFailedEventDetails).toMatchObject({
      error: 'Refused',
      cause: 'no',
    });
  });

  it('answers the AWS CLI the same, where it is installed', async () => {
    const executionArn = await runToEnd(doubleArn, { value: 1 });
    const aws = spawnSync('aws', ['--version'], { encoding: 'utf8' });
    // The CLI is optional on a development machine; the SDK checks above are the contract.
    // It runs asynchronously: this process serves the endpoint it calls.
    const cli = async (...args: string[]) => {
      const { stdout } = await promisify(execFile)(
        'aws',
        ['stepfunctions', ...args, '--endpoint-url', endpoint, '--output', 'json'],
        {
          encoding: 'utf8',
          timeout: 60_000,
          env: {
            ...process.env,
            AWS_ACCESS_KEY_ID: 'local',
            AWS_SECRET_ACCESS_KEY: 'local',
            AWS_DEFAULT_REGION: 'us-east-1',
            AWS_PAGER: '',
          },
        },
      );
      return JSON.parse(stdout) as Record<string, unknown>;
    };
    if (aws.status !== 0) {
      expect(aws.error ?? aws.stderr).toBeTruthy();
      return;
    }
    const listed = await cli('list-state-machines');
    const names = (listed.stateMachines as Array<{ name: string }>).map((m) => m.name);
    expect(names).toEqual(['double', 'refuse']);
    const described = await cli('describe-state-machine', '--state-machine-arn', doubleArn);
    expect(described).toMatchObject({ name: 'double', status: 'ACTIVE' });
    const history = await cli('get-execution-history', '--execution-arn', executionArn);
    const types = (history.events as Array<{ type: string }>).map((e) => e.type);
    expect(types.at(-1)).toBe('ExecutionSucceeded');
    expect(types.at(-2)).toBe('SucceedStateExited');
  });
});
