/** The ExecutionHistory port on Step Functions' GetExecutionHistory, flattened for the API. */
import { GetExecutionHistoryCommand, SFNClient, type HistoryEvent } from '@aws-sdk/client-sfn';
import type { ExecutionHistory, WorkflowEvent } from '../core/history';
import { NotFoundError } from '../../kernel/errors';

/**
 * A job's execution has a few hundred events (a Map of many targets, several thousand): ten
 * pages of Step Functions' maximum page size is more than any job here makes.
 */
const MAX_PAGES = 10;
const PAGE_SIZE = 1000;

export class SfnHistory implements ExecutionHistory {
  constructor(private readonly client: SFNClient = new SFNClient({})) {}

  async events(executionArn: string): Promise<WorkflowEvent[]> {
    const out: WorkflowEvent[] = [];
    let nextToken: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      let res;
      try {
        res = await this.client.send(
          new GetExecutionHistoryCommand({
            executionArn,
            maxResults: PAGE_SIZE,
            ...(nextToken ? { nextToken } : {}),
          }),
        );
      } catch (err) {
        if ((err as Error).name === 'ExecutionDoesNotExist') {
          throw new NotFoundError(`no execution ${executionArn}`, { cause: err });
        }
        throw err;
      }
      out.push(...(res.events ?? []).map(flatten));
      nextToken = res.nextToken;
      if (!nextToken) break;
    }
    return out;
  }
}

/** Every `...EventDetails` member of an event carries its state's name or its error and cause. */
export function flatten(event: HistoryEvent): WorkflowEvent {
  const flat: WorkflowEvent = {
    id: event.id ?? 0,
    timestamp: toIso(event.timestamp),
    type: event.type ?? 'Unknown',
  };
  for (const [key, value] of Object.entries(event)) {
    if (!key.endsWith('EventDetails') || !value || typeof value !== 'object') continue;
    const d = value as Record<string, unknown>;
    const state = d.name ?? d.resource;
    if (typeof state === 'string') flat.state = state;
    if (typeof d.error === 'string') flat.error = d.error;
    if (typeof d.cause === 'string') flat.cause = d.cause;
  }
  return flat;
}

function toIso(value: unknown): string {
  if (value instanceof Date) return value.toISOString();
  if (typeof value === 'number') return new Date(value * 1000).toISOString();
  if (typeof value === 'string') return new Date(value).toISOString();
  return new Date(0).toISOString();
}
