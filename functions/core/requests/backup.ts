/**
 * `POST /backups`: one target (`target`), or every target whose labels match a selector
 * (`selector`), as one job: the selector is resolved against the agents' inventory now, and
 * the workflow backs up each match into its own recovery point.
 */
import { z } from 'zod';
import { ValidationError } from '../../../kernel/errors';
import type { Job, JobChecks, JobItem } from '../../../kernel/model';
import { checkTargetName, parseSelector, parseTarget, targetKey } from '../../../kernel/targets';
import type { BackupItemInput, BackupRequestOptions } from '../../../statemachines/contracts';
import { parseRequestBody, platformOptions } from './body';
import { launch, type JobAccepted, type RequestDeps } from './launch';
import { agentSeeing, resolveSelector } from './placement';

/** The fields of a backup body besides the platform's options. */
export const backupFields = {
  target: z.string({ error: 'give the target as "PLATFORM:NAME", e.g. "docker:web"' }).optional(),
  selector: z
    .string({ error: 'give the selector as "docker:KEY=VALUE[,KEY=VALUE...][@AGENT]"' })
    .optional(),
  label: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'a label is lower-case letters, digits, . _ -')
    .optional(),
  /** Set by a policy's run: its points record the policy (retention). */
  policy: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'a policy name')
    .optional(),
};

/**
 * `extra.checks`: what a policy's every Nth run asks for once the job ended (core/checks.ts);
 * no request body can set it.
 */
export async function requestBackup(
  deps: RequestDeps,
  body: unknown,
  extra: { checks?: JobChecks } = {},
): Promise<JobAccepted> {
  const { fields, options: given } = parseRequestBody('backup', backupFields, body);
  const { target, selector, label, policy } = fields;
  if ((target === undefined) === (selector === undefined)) {
    throw new ValidationError(
      'give either "target" ("docker:web") or "selector" ("docker:app=web"), not both and not neither',
    );
  }
  const ref = target !== undefined ? parseTarget(target) : undefined;
  const sel = selector !== undefined ? parseSelector(selector) : undefined;
  const platform = ref?.platform ?? sel!.platform;
  const options = platformOptions('backup', platform, given, target ?? selector!);
  const now = deps.clock.now();
  let resolved: Array<{ target: string; agent: string }>;
  if (ref) {
    checkTargetName(ref);
    const agent = await agentSeeing(deps.catalog, ref, now);
    resolved = [{ target: targetKey(ref), agent: agent.agent }];
  } else {
    resolved = await resolveSelector(deps.catalog, sel!, now);
  }
  const jobId = deps.newId('job');
  const items: JobItem[] = resolved.map((r) => ({
    ...r,
    recoveryPointId: deps.newId('rp'),
    status: 'PENDING',
  }));
  const job: Job = {
    jobId,
    kind: 'BACKUP',
    target: ref ? targetKey(ref) : sel!.text,
    agent: [...new Set(items.map((i) => i.agent))].join(','),
    status: 'PENDING',
    createdAt: now,
    ...(ref ? { recoveryPointId: items[0]!.recoveryPointId } : {}),
    ...(label ? { label } : {}),
    ...(policy ? { policy } : {}),
    ...(extra.checks ? { checks: extra.checks } : {}),
    items,
  };
  return launch(deps, job, () =>
    deps.workflows.startBackup({
      jobId: job.jobId,
      target: job.target,
      options: {
        ...options,
        ...(label ? { label } : {}),
        ...(policy ? { policy } : {}),
      } as BackupRequestOptions,
      items: items.map((item, index): BackupItemInput => ({
        index,
        target: item.target,
        agent: item.agent,
        queueUrl: deps.queueUrlFor(item.agent),
        recoveryPointId: item.recoveryPointId,
      })),
      ...(extra.checks ? { checks: extra.checks } : {}),
    }),
  );
}
