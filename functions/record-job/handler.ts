/**
 * Lambda task of the workflows: records a job's progress in the catalog (functions/core/record-job.ts).
 */
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { recordJob } from '../core/record-job';
import { requireEnv } from '../shared/env';
import { systemClock } from '../../kernel/ids';
import { createLogger } from '../../kernel/logger';
import type { RecordJobEvent } from '../../statemachines/contracts';

const log = createLogger({ service: 'stowage-record-job' });
let deps: { catalog: DynamoDbCatalog; clock: typeof systemClock } | undefined;

export async function handler(event: RecordJobEvent): Promise<{ jobId: string; status: string }> {
  deps ??= { catalog: new DynamoDbCatalog(requireEnv('TABLE_NAME')), clock: systemClock };
  const { jobId, status, log: line } = await recordJob(deps, event);
  if (line) log.child({ jobId: event.jobId })[line.level](line.event, line.fields);
  return { jobId, status };
}
