/**
 * Lambda task of the backup workflow: after the agent's SendTaskSuccess, checks that the manifest
 * the agent reports is in the repository, then writes the COMPLETED recovery point.
 */
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { dirManifestCheck, s3ManifestCheck, type ManifestCheck } from '../adapters/manifest-check';
import { commitRecoveryPoint } from '../core/jobs';
import { manifestKey } from '../../kernel/object-layout';
import { requireEnv } from '../shared/env';
import { IntegrityError } from '../../kernel/errors';
import { systemClock } from '../../kernel/ids';
import { createLogger, LogEvent } from '../../kernel/logger';
import type { CommitPointEvent, CommitPointOutput } from '../../statemachines/contracts';

const log = createLogger({ service: 'stowage-commit-point' });
let deps:
  | { catalog: DynamoDbCatalog; clock: typeof systemClock; manifestStored: ManifestCheck }
  | undefined;

export async function handler(event: CommitPointEvent): Promise<CommitPointOutput> {
  deps ??= {
    catalog: new DynamoDbCatalog(requireEnv('TABLE_NAME')),
    clock: systemClock,
    manifestStored: process.env.STORE_DIR
      ? dirManifestCheck(process.env.STORE_DIR)
      : s3ManifestCheck(requireEnv('BUCKET_NAME')),
  };
  // A point is only committed over a manifest that exists: the agent writes it last.
  const key = manifestKey(event.recoveryPointId);
  if (event.result.manifestKey !== key) {
    throw new Error(`agent reported manifest ${event.result.manifestKey}, expected ${key}`);
  }
  if (!(await deps.manifestStored(key))) {
    throw new IntegrityError(
      `the agent reported recovery point ${event.recoveryPointId} complete, but its manifest ${key} is not in the repository`,
    );
  }
  const out = await commitRecoveryPoint(deps, event);
  log.info(LogEvent.pointCommitted, {
    jobId: event.jobId,
    recoveryPointId: out.recoveryPointId,
    target: event.target,
  });
  return out;
}
