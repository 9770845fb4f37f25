/**
 * Lambda task of the backup workflow (`Start checks`), run when a job of a policy's every Nth
 * run ended with points: starts the verifies and restore tests it asked for
 * (functions/core/checks.ts), the same in AWS and in local mode.
 */
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { SfnWorkflows } from '../adapters/sfn-workflows';
import { startChecks, type ChecksDeps } from '../core/checks';
import { jobObserversFromEnv } from '../adapters/job-events';
import { requireEnv } from '../shared/env';
import { newId, systemClock } from '../../kernel/ids';
import { createLogger } from '../../kernel/logger';
import { siteQueueName } from '../../kernel/resources';
import type { StartChecksEvent, StartChecksOutput } from '../../statemachines/contracts';

const log = createLogger({ service: 'stowage-start-checks' });
let deps: ChecksDeps | undefined;

function wire(): ChecksDeps {
  const prefix = requireEnv('SITE_QUEUE_URL_PREFIX');
  const unused = 'arn:aws:states:::not-used-by-start-checks';
  return {
    catalog: new DynamoDbCatalog(requireEnv('TABLE_NAME')),
    workflows: new SfnWorkflows({
      backup: unused,
      restore: requireEnv('RESTORE_STATE_MACHINE_ARN'),
      verify: requireEnv('VERIFY_STATE_MACHINE_ARN'),
      snapshot: unused,
      prune: unused,
    }),
    clock: systemClock,
    newId,
    queueUrlFor: (agent) => `${prefix}${siteQueueName(agent)}`,
    jobObservers: jobObserversFromEnv(process.env, log),
  };
}

export async function handler(event: StartChecksEvent): Promise<StartChecksOutput> {
  deps ??= wire();
  const out = await startChecks(deps, event.jobId);
  log.child({ jobId: event.jobId }).info('job.checks.started', {
    started: out.started,
    refused: out.refused,
  });
  return { jobId: out.jobId, started: out.started.length, refused: out.refused.length };
}
