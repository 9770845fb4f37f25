/**
 * Lambda task of the backup workflow: after the agent's SendTaskSuccess, checks that the manifest
 * the agent reports is in the repository and that every pack holding the point's chunks still has
 * its index (functions/core/commit-check.ts), then writes the COMPLETED recovery point.
 */
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { dirPointObjects, s3PointObjects } from '../adapters/manifest-check';
import { checkPointStored, type PointObjects } from '../core/commit-check';
import { commitRecoveryPoint } from '../core/jobs';
import { requireEnv } from '../shared/env';
import { systemClock } from '../../kernel/ids';
import { createLogger, LogEvent } from '../../kernel/logger';
import type { CommitPointEvent, CommitPointOutput } from '../../statemachines/contracts';

const log = createLogger({ service: 'stowage-commit-point' });
let deps:
  { catalog: DynamoDbCatalog; clock: typeof systemClock; objects: PointObjects } | undefined;

export async function handler(event: CommitPointEvent): Promise<CommitPointOutput> {
  deps ??= {
    catalog: new DynamoDbCatalog(requireEnv('TABLE_NAME')),
    clock: systemClock,
    objects: process.env.STORE_DIR
      ? dirPointObjects(process.env.STORE_DIR)
      : s3PointObjects(requireEnv('BUCKET_NAME')),
  };
  // A point is only committed over a manifest that exists (the agent writes it last) and chunks
  // that are all indexed.
  await checkPointStored(deps.objects, event.recoveryPointId, event.result);
  const out = await commitRecoveryPoint(deps, event);
  log.info(LogEvent.pointCommitted, {
    jobId: event.jobId,
    recoveryPointId: out.recoveryPointId,
    target: event.target,
  });
  return out;
}
