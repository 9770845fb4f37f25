/**
 * The target of every policy's EventBridge Scheduler schedule: one run of the policy (a backup
 * job per target or selector, resolved now), exactly as `stowage policy run` does. A policy
 * deleted since the schedule fired is nothing to run. The stack's daily prune schedule invokes
 * it too, with `{"prune": true}`: a prune on the maintenance agent (core/prune.ts
 * runScheduledPrune).
 */
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { SfnWorkflows } from '../adapters/sfn-workflows';
import { announceMissedRuns, noSchedules, runPolicy, type PolicyDeps } from '../core/policies';
import { requestBackup } from '../core/requests/backup';
import { runScheduledPrune } from '../core/prune';
import { jobObserversFromEnv } from '../adapters/job-events';
import { requireEnv } from '../shared/env';
import { NotFoundError } from '../../kernel/errors';
import { newId, systemClock } from '../../kernel/ids';
import { createLogger } from '../../kernel/logger';
import { siteQueueName } from '../../kernel/resources';

const log = createLogger({ service: 'stowage-run-policy' });
let deps: PolicyDeps | undefined;

function wire(): PolicyDeps {
  const prefix = requireEnv('SITE_QUEUE_URL_PREFIX');
  const unused = 'arn:aws:states:::not-used-by-run-policy';
  return {
    catalog: new DynamoDbCatalog(requireEnv('TABLE_NAME')),
    workflows: new SfnWorkflows({
      backup: requireEnv('BACKUP_STATE_MACHINE_ARN'),
      restore: unused,
      verify: unused,
      snapshot: unused,
      prune: requireEnv('PRUNE_STATE_MACHINE_ARN'),
    }),
    clock: systemClock,
    newId,
    queueUrlFor: (agent) => `${prefix}${siteQueueName(agent)}`,
    schedules: noSchedules,
    jobObservers: jobObserversFromEnv(process.env, log),
    ...(process.env.PRUNE_AGENT ? { pruneAgent: process.env.PRUNE_AGENT } : {}),
  };
}

export async function handler(event: {
  policy?: unknown;
  prune?: unknown;
  checkMissedRuns?: unknown;
}): Promise<unknown> {
  deps ??= wire();
  if (event?.checkMissedRuns === true) {
    const out = await announceMissedRuns(deps);
    if (out.announced.length) log.warn('policy.runs_missed', out);
    return out;
  }
  if (event?.prune === true) {
    const d = deps;
    const out = await runScheduledPrune({
      ...d,
      startPrune: (input) => d.workflows.startPrune(input),
    });
    log.info('prune.scheduled', out);
    return out;
  }
  if (typeof event?.policy !== 'string') throw new Error('run-policy: the event names no policy');
  try {
    const run = await runPolicy(deps, event.policy, requestBackup);
    log.info('policy.ran', {
      policy: run.policy,
      jobs: run.jobs.map((j) => j.jobId),
      refused: run.refused,
    });
    return { policy: run.policy, jobs: run.jobs.map((j) => j.jobId), refused: run.refused.length };
  } catch (err) {
    if (err instanceof NotFoundError) {
      log.warn('policy.gone', { policy: event.policy });
      return { policy: event.policy, jobs: [] };
    }
    throw err;
  }
}
