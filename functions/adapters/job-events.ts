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
import type { JobEvent, JobEvents } from '../core/job-events';

export class EventBridgeJobEvents implements JobEvents {
  constructor(
    private readonly busName: string,
    private readonly log: Logger,
    private readonly client: EventBridgeClient = new EventBridgeClient({}),
  ) {}

  async put(event: JobEvent): Promise<void> {
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
          jobId: event.detail.jobId,
          status: event.detail.status,
          error: { name: entry?.ErrorCode, message: entry?.ErrorMessage },
        });
      }
    } catch (err) {
      this.log.warn('job.event.not_put', {
        jobId: event.detail.jobId,
        status: event.detail.status,
        error: err,
      });
    }
  }
}

/** Local mode: the events as JSON lines (`detail-type` as EventBridge spells it). */
export class FileJobEvents implements JobEvents {
  constructor(
    private readonly file: string,
    private readonly log: Logger,
  ) {}

  async put(event: JobEvent): Promise<void> {
    const line = JSON.stringify({
      time: event.time,
      source: event.source,
      'detail-type': event.detailType,
      resources: event.resources,
      detail: event.detail,
    });
    await appendFile(this.file, `${line}\n`, { mode: 0o600 }).catch((err: unknown) =>
      this.log.warn('job.event.not_put', { jobId: event.detail.jobId, error: err }),
    );
  }
}
