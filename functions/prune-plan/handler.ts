/**
 * Lambda task of the prune workflow: which points go (retention, or the points named by
 * `stowage points delete`), each with why; their catalog items are deleted unless it is a dry
 * run. The agent deletes their manifests and collects garbage next (agents/repo/gc.ts).
 */
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { planPrune } from '../core/prune';
import { requireEnv } from '../shared/env';
import { systemClock } from '../../kernel/ids';
import { createLogger } from '../../kernel/logger';
import type { PruneExecutionInput, PrunePlan } from '../../statemachines/contracts';

const log = createLogger({ service: 'stowage-prune-plan' });
let deps: { catalog: DynamoDbCatalog; clock: typeof systemClock } | undefined;

export async function handler(
  event: Pick<PruneExecutionInput, 'jobId' | 'dryRun' | 'points'>,
): Promise<PrunePlan> {
  deps ??= { catalog: new DynamoDbCatalog(requireEnv('TABLE_NAME')), clock: systemClock };
  const plan = await planPrune(deps, {
    jobId: event.jobId,
    dryRun: event.dryRun === true,
    ...(Array.isArray(event.points) ? { points: event.points } : {}),
  });
  log.info('prune.planned', {
    jobId: event.jobId,
    dryRun: event.dryRun === true,
    points: plan.deletePoints.length,
    busy: plan.busy.length,
    kept: plan.kept,
  });
  return plan;
}
