/**
 * Requests about a point that exists: `POST /verifications` reads every chunk of it back on the
 * agent that took it; `POST /rollbacks` restores a target's newest pre-update point in place
 * (after an update went wrong, the purpose of `stowage protect-update`).
 */
import { z } from 'zod';
import { AgentUnavailable, PointNotFound } from '../../../kernel/errors';
import type { Job } from '../../../kernel/model';
import { parseTarget, targetKey } from '../../../kernel/targets';
import { parseBody } from './body';
import { launch, type JobAccepted, type RequestDeps } from './launch';
import { requestRestore } from './restore';

/** The label `stowage protect-update` gives its points and `stowage rollback` looks for. */
export const PRE_UPDATE_LABEL = 'pre-update';

const NAME_THE_POINT = 'body must name the point: {"recoveryPointId": "rp-..."}';

export async function requestVerify(deps: RequestDeps, body: unknown): Promise<JobAccepted> {
  const { recoveryPointId } = parseBody(
    z
      .object({ recoveryPointId: z.string({ error: NAME_THE_POINT }).min(1, NAME_THE_POINT) })
      .strict(),
    body,
  );
  const point = await deps.catalog.getPoint(recoveryPointId);
  if (!point) {
    throw new PointNotFound(
      `recovery point ${recoveryPointId} does not exist; \`stowage points\` lists them`,
    );
  }
  const agent = await deps.catalog.getAgent(point.agent);
  if (!agent) {
    throw new AgentUnavailable(
      `agent "${point.agent}", which holds the key to this point, has never reported; start it with \`stowage agent --site ${point.agent}\``,
    );
  }
  const job: Job = {
    jobId: deps.newId('job'),
    kind: 'VERIFY',
    target: point.target,
    agent: point.agent,
    status: 'PENDING',
    createdAt: deps.clock.now(),
    recoveryPointId: point.recoveryPointId,
  };
  return launch(deps, job, () =>
    deps.workflows.startVerify({
      jobId: job.jobId,
      recoveryPointId: point.recoveryPointId,
      target: point.target,
      agent: point.agent,
      queueUrl: deps.queueUrlFor(point.agent),
    }),
  );
}

export async function requestRollback(deps: RequestDeps, body: unknown): Promise<JobAccepted> {
  const { target } = parseBody(z.object({ target: z.string() }).strict(), body);
  const key = targetKey(parseTarget(target));
  const points = await deps.catalog.listPoints({ target: key, limit: 1000 });
  const point = points.find((p) => p.label === PRE_UPDATE_LABEL && p.status === 'COMPLETED');
  if (!point) {
    throw new PointNotFound(
      `${key} has no ${PRE_UPDATE_LABEL} recovery point; make one with \`stowage protect-update ${key}\` before an update`,
    );
  }
  return requestRestore(deps, { recoveryPointId: point.recoveryPointId, inPlace: true });
}
