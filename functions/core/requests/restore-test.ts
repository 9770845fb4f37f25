/**
 * `POST /restore-tests`: proves a recovery point restores and runs. The point's agent restores it
 * into an isolated sandbox (a new unique name, no network, no published ports, no host mounts),
 * starts it, runs an optional probe inside, records the outcome and the time it took (RTO) on
 * the point, and removes the sandbox whatever happens (journaled as a hold, so a killed agent's
 * successor removes it). Docker containers and LXD instances; AWS Backup's restore testing does
 * not reach on-premises workloads.
 *
 * It runs as a variant of the restore workflow: a RESTORE task whose options carry `test`, which
 * no restore body can set (the platforms' option schemas do not have it).
 */
import { z } from 'zod';
import { AgentUnavailable, PointNotFound, ValidationError } from '../../../kernel/errors';
import type { Job } from '../../../kernel/model';
import { parseTargetKey } from '../../../kernel/targets';
import type { RestoreTestRequest } from '../../../statemachines/contracts';
import { parseBody } from './body';
import { launch, type JobAccepted, type RequestDeps } from './launch';

/** The platforms whose targets run (a container, an instance) and can be probed. */
export const RESTORE_TEST_PLATFORMS: readonly string[] = ['docker', 'lxd'];

/** The sandbox's name: unique per job, valid for Docker (≤ 63 here) and LXD (a letter first, ≤ 63). */
export function sandboxName(jobId: string): string {
  return `stowage-rt-${jobId.replace(/^job-/, '')}`;
}

const NAME_THE_POINT = 'body must name the point: {"recoveryPointId": "rp-..."}';

export const restoreTestBody = z
  .object({
    recoveryPointId: z.string({ error: NAME_THE_POINT }).min(1, NAME_THE_POINT),
    /** Run with `sh -c` inside the sandbox; exit code 0 passes. */
    probe: z
      .string({ error: '"probe" is a command line for sh -c' })
      .min(1, '"probe" is a command line for sh -c')
      .max(4096, '"probe" is at most 4096 characters')
      .optional(),
    probeTimeoutSeconds: z
      .number({ error: '"probeTimeoutSeconds" is a number of seconds' })
      .int('"probeTimeoutSeconds" is a whole number of seconds')
      .min(1, '"probeTimeoutSeconds" is 1 to 3600')
      .max(3600, '"probeTimeoutSeconds" is 1 to 3600')
      .optional(),
  })
  .strict();

export async function requestRestoreTest(deps: RequestDeps, body: unknown): Promise<JobAccepted> {
  const fields = parseBody(restoreTestBody, body);
  const point = await deps.catalog.getPoint(fields.recoveryPointId);
  if (!point) {
    throw new PointNotFound(
      `recovery point ${fields.recoveryPointId} does not exist; \`stowage points\` lists them`,
    );
  }
  const source = parseTargetKey(point.target);
  if (!RESTORE_TEST_PLATFORMS.includes(source.platform)) {
    throw new ValidationError(
      `restore tests run Docker containers and LXD instances; ${point.target} is a ${source.platform} target: use \`stowage verify ${point.recoveryPointId}\` to check its bytes`,
    );
  }
  const agent = await deps.catalog.getAgent(point.agent);
  if (!agent) {
    throw new AgentUnavailable(
      `agent "${point.agent}", which took this point, has never reported; start it with \`stowage agent --site ${point.agent}\``,
    );
  }
  if (!agent.platforms.includes(source.platform)) {
    throw new AgentUnavailable(
      `agent ${point.agent} serves no ${source.platform} engine now (it serves: ${agent.platforms.join(', ') || 'nothing'})`,
    );
  }
  const jobId = deps.newId('job');
  const sandbox = `${source.platform}:${sandboxName(jobId)}`;
  const test: RestoreTestRequest = {
    ...(fields.probe !== undefined ? { probe: ['sh', '-c', fields.probe] } : {}),
    ...(fields.probeTimeoutSeconds !== undefined
      ? { probeTimeoutSeconds: fields.probeTimeoutSeconds }
      : {}),
  };
  const job: Job = {
    jobId,
    kind: 'RESTORE_TEST',
    target: sandbox,
    source: point.target,
    agent: point.agent,
    status: 'PENDING',
    createdAt: deps.clock.now(),
    recoveryPointId: point.recoveryPointId,
  };
  return launch(deps, job, () =>
    deps.workflows.startRestore({
      jobId,
      recoveryPointId: point.recoveryPointId,
      source: point.target,
      target: sandbox,
      agent: point.agent,
      queueUrl: deps.queueUrlFor(point.agent),
      inPlace: false,
      options: { test },
    }),
  );
}
