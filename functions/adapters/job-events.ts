/**
 * The JobEvents port (functions/core/job-events.ts): on EventBridge in AWS (PutEvents on the bus
 * the stack names, EVENT_BUS_NAME; record-job may put only `stowage` events there), and in local
 * mode as one JSON line per event in a file (`<data-dir>/events.jsonl`), the same fields an
 * EventBridge rule would see. Neither ever throws: an event that cannot be put is logged and
 * dropped, since announcing a job must not fail its workflow.
 */
import { appendFile } from 'node:fs/promises';
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import type { Logger } from '../../kernel/logger';
import { Metrics, noMetrics } from '../../kernel/metrics';
import { METRICS } from '../../kernel/resources';
import {
  eventSubject,
  noJobEvents,
  type JobEvent,
  type JobEvents,
  type JobObservers,
  type PolicyEvent,
} from '../core/job-events';

/**
 * The observers a function's composition root wires from its environment: events on the bus
 * EVENT_BUS_NAME names (AWS), or appended to JOB_EVENTS_FILE (local mode), or nowhere; EMF
 * metrics on stdout only in Lambda, where CloudWatch Logs turns them into metrics.
 */
export function jobObserversFromEnv(env: NodeJS.ProcessEnv, log: Logger): JobObservers {
  const bus = env.EVENT_BUS_NAME;
  const file = env.JOB_EVENTS_FILE;
  const events = bus
    ? new EventBridgeJobEvents(bus, log)
    : file
      ? new FileJobEvents(file, log)
      : noJobEvents;
  const sink = env.AWS_LAMBDA_FUNCTION_NAME
    ? (line: string) => void process.stdout.write(`${line}\n`)
    : noMetrics;
  return { events, metrics: new Metrics(METRICS.namespace, sink) };
}

export class EventBridgeJobEvents implements JobEvents {
  constructor(
    private readonly busName: string,
    private readonly log: Logger,
    private readonly client: EventBridgeClient = new EventBridgeClient({}),
  ) {}

  async put(event: JobEvent | PolicyEvent): Promise<void> {
    try {
      const out = await this.client.send(
        new PutEventsCommand({
          Entries: [
            {
              EventBusName: this.busName,
              Source: event.source,
              DetailType: event.detailType,
              Time: new Date(event.time),
              Resources: event.resources,
              Detail: JSON.stringify(event.detail),
            },
          ],
        }),
      );
      if (out.FailedEntryCount) {
        const entry = out.Entries?.[0];
        this.log.warn('job.event.not_put', {
          ...eventSubject(event),
          error: { name: entry?.ErrorCode, message: entry?.ErrorMessage },
        });
      }
    } catch (err) {
      this.log.warn('job.event.not_put', { ...eventSubject(event), error: err });
    }
  }
}

/** Local mode: the events as JSON lines (`detail-type` as EventBridge spells it). */
export class FileJobEvents implements JobEvents {
  constructor(
    private readonly file: string,
    private readonly log: Logger,
  ) {}

  async put(event: JobEvent | PolicyEvent): Promise<void> {
    const line = JSON.stringify({
      time: event.time,
      source: event.source,
      'detail-type': event.detailType,
      resources: event.resources,
      detail: event.detail,
    });
    await appendFile(this.file, `${line}\n`, { mode: 0o600 }).catch((err: unknown) =>
      this.log.warn('job.event.not_put', { ...eventSubject(event), error: err }),
    );
  }
}
