/**
 * `POST /restores`: a recovery point restored under a new name (`name`, or `to` with another
 * agent), over the original (`inPlace`), or, with neither, under the original name when nothing
 * has that name any more, with its platform's options. The destination is refused here when it
 * is taken (for listed platforms) or badly named.
 */
import { z } from 'zod';
import {
  AgentUnavailable,
  NameTaken,
  PointNotFound,
  ValidationError,
} from '../../../kernel/errors';
import type { AgentRecord, Job, RecoveryPoint } from '../../../kernel/model';
import { specOf } from '../../../kernel/platforms';
import { genericPlan, type RestorePlanAnswer } from '../../../kernel/platforms/restore-plan';
import {
  checkTargetName,
  formatTarget,
  parseTarget,
  parseTargetKey,
  targetKey,
  type TargetRef,
} from '../../../kernel/targets';
import type { RestoreRequestOptions } from '../../../statemachines/contracts';
import { parseRequestBody, platformOptions } from './body';
import { launch, type JobAccepted, type RequestDeps } from './launch';

const NAME_THE_POINT = 'body must name the point: {"recoveryPointId": "rp-...", "name": "NEW"}';
const NON_EMPTY_NAME = '"name" must be a non-empty string';

/** The fields of a restore body besides the options of the point's platform. */
export const restoreFields = {
  recoveryPointId: z.string({ error: NAME_THE_POINT }).min(1, NAME_THE_POINT),
  name: z.string({ error: NON_EMPTY_NAME }).min(1, NON_EMPTY_NAME).optional(),
  inPlace: z.boolean({ error: '"inPlace" is true or false' }).optional(),
  to: z.string({ error: '"to" must be a target such as docker:web2@site' }).optional(),
  plan: z.boolean({ error: '"plan" is true or false' }).optional(),
  list: z
    .string({ error: '"list" is a directory of the point: "" for its root, or a path in it' })
    .refine((p) => !p.startsWith('/') && !p.split('/').includes('..'), {
      message: '"list" is a path inside the point, without a leading / or .. segments',
    })
    .optional(),
};

/** What a restore needs once its body and point are read. */
interface RestoreRequest {
  point: RecoveryPoint;
  source: TargetRef;
  inPlace: boolean;
  name: string | undefined;
  to: TargetRef | undefined;
  options: Record<string, unknown>;
}

async function resolveRestore(
  deps: RequestDeps,
  body: unknown,
): Promise<Destination & { request: RestoreRequest; plan: boolean }> {
  const { fields, options: given } = parseRequestBody('restore', restoreFields, body);
  const point = await deps.catalog.getPoint(fields.recoveryPointId);
  if (!point) {
    // A local snapshot's id (lxd:web/snap0) is listed by `stowage points` too.
    const hint = fields.recoveryPointId.includes(':')
      ? `; for a local snapshot use \`stowage snapshot restore ${fields.recoveryPointId}\``
      : '';
    throw new PointNotFound(
      `recovery point ${fields.recoveryPointId} does not exist; \`stowage points\` lists them${hint}`,
    );
  }
  const source = parseTargetKey(point.target);
  const options = platformOptions('restore', source.platform, given, point.target);
  if (fields.list !== undefined) {
    if (Object.keys(options).length > 0 || fields.inPlace || fields.name || fields.to) {
      throw new ValidationError('"list" lists a point and takes no other restore field');
    }
    options.list = fields.list.replace(/\/+$/, '');
  }
  if (
    options.files !== undefined &&
    (options.dest === undefined) === (options.intoVolume === undefined)
  ) {
    throw new ValidationError(
      "a file-level restore (--file) says where the files go: --dest DIR on the agent's host, or --into-volume NAME",
    );
  }
  if (options.dest !== undefined && options.files === undefined) {
    throw new ValidationError('--dest goes with --file (the files of the point to restore)');
  }
  const to = fields.to !== undefined ? parseTarget(fields.to) : undefined;
  if (to && to.platform !== source.platform) {
    throw new ValidationError(
      `cannot restore a ${source.platform} point to ${formatTarget(to)}: the platforms differ`,
    );
  }
  if (to && fields.name !== undefined && fields.name !== to.name) {
    throw new ValidationError(
      `--name ${fields.name} and --to ${formatTarget(to)} name different targets`,
    );
  }
  const request: RestoreRequest = {
    point,
    source,
    inPlace: fields.inPlace === true,
    name: fields.name ?? to?.name,
    to,
    options,
  };
  const destination = specOf(source.platform).namedAfterAgent
    ? await restoreOntoAgent(deps, request)
    : await restoreAsNamed(deps, request);
  return { request, plan: fields.plan === true, ...destination };
}

/** Where a restore goes: the target it produces and the agent that restores it. */
interface Destination {
  target: string;
  agent: AgentRecord;
}

/**
 * `POST /restores`: checks the request whole (the point, its platform's options, the
 * destination's name and agent) and starts the restore. A body with `"plan": true` is
 * planRestore's.
 */
export async function requestRestore(deps: RequestDeps, body: unknown): Promise<JobAccepted> {
  const { request, plan, target, agent } = await resolveRestore(deps, body);
  if (plan) {
    throw new ValidationError('"plan": true asks for a plan, which starts nothing (planRestore)');
  }
  return startRestore(deps, request, target, agent.agent);
}

/**
 * `POST /restores` with `"plan": true`: the same checks as a restore (a request the restore
 * would refuse is refused alike), then what it would do, from the point's streams and summary
 * and the destination as its agent last reported it (kernel/platforms/restore-plan.ts). Nothing
 * is recorded and nothing starts.
 */
export async function planRestore(deps: RequestDeps, body: unknown): Promise<RestorePlanAnswer> {
  const { request, target, agent } = await resolveRestore(deps, body);
  const { point, source, inPlace, options } = request;
  const spec = specOf(source.platform);
  const name = parseTargetKey(target).name;
  const existing = agent.targets.find((t) => t.target === target);
  const planner = spec.planRestore ?? genericPlan(spec.noun);
  const planned = planner({
    point,
    sourceName: source.name,
    name,
    inPlace,
    options,
    agentTargets: agent.targets,
    ...(existing ? { existing } : {}),
  });
  const read = new Set(planned.streams ?? point.streams.map((s) => s.name));
  const streams = point.streams
    .filter((s) => read.has(s.name))
    .map(({ name: stream, size }) => ({ name: stream, size }));
  return {
    plan: true,
    recoveryPointId: point.recoveryPointId,
    source: point.target,
    target,
    agent: agent.agent,
    inPlace,
    bytesRead: streams.reduce((n, s) => n + s.size, 0),
    streams,
    steps: planned.steps,
    notes: planned.notes ?? [],
  };
}

/** A target named by the user: refused when it exists (listed platforms) unless in place. */
async function restoreAsNamed(deps: RequestDeps, request: RestoreRequest): Promise<Destination> {
  const { point, source, inPlace, to, options } = request;
  const spec = specOf(source.platform);
  let name = spec.restoreName ? spec.restoreName(source.name, request.name, options) : request.name;
  // Also with --to another agent: in place means the point's own name, wherever it lands
  // (`--to path:/etc/shadow@local --in-place` must not write a point over another file).
  if (inPlace && name && name !== source.name) {
    throw new ValidationError(
      `--in-place restores over the original (${point.target}); do not give another --name or --to name with it`,
    );
  }
  // Restoring one volume, some files or a listing addresses the point's own target; the agent
  // checks the volume or the destination directory. A restore into a target that exists (a
  // disk attached to a VM) is never refused as taken.
  const partial = options.volume ?? options.files ?? options.list;
  const into = partial !== undefined || spec.restoresInto?.(options) === true;
  if (inPlace || partial !== undefined) name ??= source.name;
  // Neither --name nor --in-place: under the original name, which must be free (the usual case
  // after a deletion). For unlisted platforms (paths) the agent finds out and refuses.
  const original = name === undefined;
  name ??= source.name;
  const destination = { platform: source.platform, name };
  checkTargetName(destination);
  const agentName = to?.agent ?? point.agent;
  const agent = await deps.catalog.getAgent(agentName);
  if (!agent) {
    throw new AgentUnavailable(
      `agent "${agentName}" has never reported; start it with \`stowage agent --site ${agentName}\``,
    );
  }
  // For unlisted platforms (paths) the agent refuses an existing destination itself.
  const exists = agent.targets.some((t) => t.target === targetKey(destination));
  if (exists && !inPlace && !into) {
    throw new NameTaken(
      original
        ? `${targetKey(destination)} still exists on agent ${agentName}; say where to restore: --name NEW to restore beside ${point.target}, or --in-place to replace it`
        : `${targetKey(destination)} already exists on agent ${agentName}; choose another --name, or use --in-place to replace it`,
    );
  }
  return { target: targetKey(destination), agent };
}

/**
 * A target named after its agent (a whole LXD server) is restored onto the agent the target
 * names: `--to lxd-server:OTHER` (or `--name OTHER`) onto agent OTHER's server, `--in-place`
 * onto the one it was taken of. The target exists by definition and such a restore never
 * clobbers (it skips what is there), so there is no NameTaken here.
 */
async function restoreOntoAgent(deps: RequestDeps, request: RestoreRequest): Promise<Destination> {
  const { point, source, inPlace, name, to } = request;
  const { name: platform, noun } = specOf(source.platform);
  if (to?.agent && to.agent !== to.name) {
    throw new ValidationError(
      `a target of ${platform} is named after its agent: write --to ${platform}:${to.agent}, not ${formatTarget(to)}`,
    );
  }
  if (inPlace && name && name !== source.name) {
    throw new ValidationError(
      `--in-place restores onto ${point.target}, the ${noun} the point was taken of; to restore onto another give --to ${platform}:${name} without --in-place`,
    );
  }
  const agentName = name ?? (inPlace ? source.name : undefined);
  if (!agentName) {
    throw new ValidationError(
      `say where to restore: --to ${platform}:AGENT onto that agent's ${noun}, or --in-place onto ${point.target}`,
    );
  }
  const agent = await deps.catalog.getAgent(agentName);
  if (!agent) {
    throw new AgentUnavailable(
      `agent "${agentName}" has never reported; start it with \`stowage agent --site ${agentName}\` on the host of the ${noun}`,
    );
  }
  if (!agent.platforms.includes(platform)) {
    throw new AgentUnavailable(
      `agent ${agentName} serves no ${noun} (it serves: ${agent.platforms.join(', ') || 'nothing'}); start it on a host that runs one`,
    );
  }
  return { target: `${platform}:${agentName}`, agent };
}

function startRestore(
  deps: RequestDeps,
  request: RestoreRequest,
  target: string,
  agent: string,
): Promise<JobAccepted> {
  const { point, inPlace, options } = request;
  const job: Job = {
    jobId: deps.newId('job'),
    kind: 'RESTORE',
    target,
    source: point.target,
    agent,
    status: 'PENDING',
    createdAt: deps.clock.now(),
    recoveryPointId: point.recoveryPointId,
  };
  return launch(deps, job, () =>
    deps.workflows.startRestore({
      jobId: job.jobId,
      recoveryPointId: point.recoveryPointId,
      source: point.target,
      target,
      agent,
      queueUrl: deps.queueUrlFor(agent),
      inPlace,
      options: options as RestoreRequestOptions,
    }),
  );
}
