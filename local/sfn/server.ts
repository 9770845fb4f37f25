/**
 * The AWS JSON 1.0 wire protocol of Step Functions in front of LocalStepFunctions, so that
 * @aws-sdk/client-sfn (the API handler, the agent, the CLI's tests) talks to it unchanged through
 * AWS_ENDPOINT_URL_SFN. Timestamps are epoch seconds, as the protocol has them.
 */
import { createServer, type Server } from 'node:http';
import {
  SfnServiceError,
  type ExecutionRecord,
  type LocalStepFunctions,
  type RegisteredMachine,
} from './engine';

/** What local mode's executions run as: no IAM here, but the field is required. */
const LOCAL_ROLE_ARN = 'arn:aws:iam::000000000000:role/stowage-local';

function machineDescription(m: RegisteredMachine) {
  return {
    stateMachineArn: m.arn,
    name: m.name,
    status: 'ACTIVE',
    definition: JSON.stringify(m.definition, null, 2),
    roleArn: LOCAL_ROLE_ARN,
    type: 'STANDARD',
    creationDate: epoch(m.creationDate),
    loggingConfiguration: { level: 'OFF', includeExecutionData: false },
    tracingConfiguration: { enabled: false },
  };
}

const epoch = (iso: string | undefined) => (iso ? Date.parse(iso) / 1000 : undefined);

function summary(e: ExecutionRecord) {
  return {
    executionArn: e.executionArn,
    stateMachineArn: e.stateMachineArn,
    name: e.name,
    status: e.status,
    startDate: epoch(e.startDate),
    stopDate: epoch(e.stopDate),
  };
}

type Body = Record<string, unknown>;
const str = (b: Body, k: string) => (typeof b[k] === 'string' ? (b[k] as string) : undefined);
function required(b: Body, k: string): string {
  const v = str(b, k);
  if (v === undefined) throw new SfnServiceError('ValidationException', `${k} is required`);
  return v;
}

function page<T>(items: T[], body: Body): { items: T[]; nextToken?: string } {
  const max = typeof body.maxResults === 'number' && body.maxResults > 0 ? body.maxResults : 100;
  const start = str(body, 'nextToken') ? Number(str(body, 'nextToken')) : 0;
  const slice = items.slice(start, start + max);
  return start + max < items.length
    ? { items: slice, nextToken: String(start + max) }
    : { items: slice };
}

export function handleSfnOperation(sfn: LocalStepFunctions, op: string, body: Body): unknown {
  switch (op) {
    case 'ListStateMachines': {
      const { items, nextToken } = page(sfn.listStateMachines(), body);
      return {
        stateMachines: items.map((m) => ({
          stateMachineArn: m.arn,
          name: m.name,
          type: 'STANDARD',
          creationDate: epoch(m.creationDate),
        })),
        ...(nextToken ? { nextToken } : {}),
      };
    }
    case 'DescribeStateMachine':
      return machineDescription(sfn.describeStateMachine(required(body, 'stateMachineArn')));
    case 'DescribeStateMachineForExecution': {
      const e = sfn.describeExecution(required(body, 'executionArn'));
      const {
        status: _status,
        type: _type,
        creationDate,
        ...rest
      } = machineDescription(sfn.describeStateMachine(e.stateMachineArn));
      return { ...rest, updateDate: creationDate };
    }
    case 'StartExecution': {
      const out = sfn.startExecution({
        stateMachineArn: required(body, 'stateMachineArn'),
        ...(str(body, 'name') ? { name: str(body, 'name') } : {}),
        ...(str(body, 'input') ? { input: str(body, 'input') } : {}),
      });
      return { executionArn: out.executionArn, startDate: epoch(out.startDate) };
    }
    case 'DescribeExecution': {
      const e = sfn.describeExecution(required(body, 'executionArn'));
      return { ...summary(e), input: e.input, output: e.output, error: e.error, cause: e.cause };
    }
    case 'ListExecutions': {
      const statusFilter = str(body, 'statusFilter') as ExecutionRecord['status'] | undefined;
      const all = sfn.listExecutions({
        ...(str(body, 'stateMachineArn') ? { stateMachineArn: str(body, 'stateMachineArn') } : {}),
        ...(statusFilter ? { statusFilter } : {}),
      });
      const { items, nextToken } = page(all, body);
      return { executions: items.map(summary), nextToken };
    }
    case 'GetExecutionHistory': {
      const e = sfn.describeExecution(required(body, 'executionArn'));
      const events = body.reverseOrder === true ? [...e.events].reverse() : e.events;
      const { items, nextToken } = page(events, body);
      return {
        events: items.map((ev) => ({
          id: ev.id,
          previousEventId: ev.previousEventId,
          timestamp: epoch(ev.timestamp),
          type: ev.type,
          ...(ev.details ? { [detailsKey(ev.type)]: ev.details } : {}),
        })),
        nextToken,
      };
    }
    case 'StopExecution':
      return {
        stopDate: epoch(
          sfn.stopExecution(required(body, 'executionArn'), str(body, 'error'), str(body, 'cause')),
        ),
      };
    case 'SendTaskSuccess':
      sfn.sendTaskSuccess(required(body, 'taskToken'), required(body, 'output'));
      return {};
    case 'SendTaskFailure':
      sfn.sendTaskFailure(required(body, 'taskToken'), str(body, 'error'), str(body, 'cause'));
      return {};
    case 'SendTaskHeartbeat':
      sfn.sendTaskHeartbeat(required(body, 'taskToken'));
      return {};
    default:
      throw new SfnServiceError(
        'UnknownOperationException',
        `operation ${op} is not supported locally`,
      );
  }
}

/** `TaskStateEntered` → `stateEnteredEventDetails`, `ExecutionFailed` → `executionFailedEventDetails`. */
function detailsKey(type: string): string {
  const m = /^(?:Task|Pass|Choice|Wait|Succeed|Fail|Map|Parallel)(State(?:Entered|Exited))$/.exec(
    type,
  );
  const base = m ? m[1]! : type;
  return `${base[0]!.toLowerCase()}${base.slice(1)}EventDetails`;
}

export async function startSfnServer(
  sfn: LocalStepFunctions,
  port: number,
  host = '127.0.0.1',
): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const target = String(req.headers['x-amz-target'] ?? '');
      const op = target.startsWith('AWSStepFunctions.')
        ? target.slice('AWSStepFunctions.'.length)
        : '';
      let status = 200;
      let payload: unknown;
      try {
        const text = Buffer.concat(chunks).toString() || '{}';
        payload = handleSfnOperation(sfn, op, JSON.parse(text) as Body);
      } catch (err) {
        const known = err instanceof SfnServiceError;
        status = known ? err.status : 500;
        payload = {
          __type: known ? err.name : 'InternalFailure',
          message: (err as Error).message,
        };
      }
      res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0' });
      res.end(JSON.stringify(payload));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
