/**
 * What the HTTP API does for a backup, restore, verify or snapshot request: validate it against
 * the catalog and the agents' inventory, record a PENDING job, start the workflow. Everything that can be
 * refused is refused here, before an execution exists, so bad input never leaves one running.
 */
import type { Catalog } from '../../kernel/catalog';
import type { AgentRecord, Job, JobItem } from '../../kernel/model';
import {
  checkTargetName,
  formatTarget,
  isListedPlatform,
  matchesSelector,
  parseSelector,
  isValidPoolName,
  splitVolumeName,
  parseTarget,
  parseTargetKey,
  targetKey,
  type LabelSelector,
  type TargetRef,
} from '../../kernel/targets';
import {
  AgentUnavailable,
  NameTaken,
  PointNotFound,
  SnapshotNotFound,
  TargetNotFound,
  Unsupported,
  ValidationError,
} from '../../kernel/errors';
import { z } from 'zod';
import type {
  BackupExecutionInput,
  BackupItemInput,
  BackupRequestOptions,
  RestoreRequestOptions,
  RestoreExecutionInput,
  SnapshotAction,
  SnapshotArgs,
  SnapshotExecutionInput,
  VerifyExecutionInput,
  PruneExecutionInput,
} from '../../statemachines/contracts';
import type { Clock } from './jobs';
import {
  checkPattern,
  checkSchedule,
  checkScheduleExpiry,
  inventoryEntry,
  isExpired,
  parseExpiry,
  parseSnapshotId,
  snapshotId,
} from '../../kernel/snapshots';

/** Port to Step Functions: starts an execution named after the job, returns its ARN. */
export interface Workflows {
  startBackup(input: BackupExecutionInput): Promise<string>;
  startRestore(input: RestoreExecutionInput): Promise<string>;
  startVerify(input: VerifyExecutionInput): Promise<string>;
  startSnapshot(input: SnapshotExecutionInput): Promise<string>;
  startPrune(input: PruneExecutionInput): Promise<string>;
}

export interface RequestDeps {
  catalog: Catalog;
  workflows: Workflows;
  clock: Clock;
  newId(prefix: 'job' | 'rp'): string;
  queueUrlFor(agent: string): string;
  /** Where policies' schedules live (EventBridge Scheduler in AWS); none in local mode. */
  schedules?: import('./policies').Schedules;
}

export interface JobAccepted {
  jobId: string;
  kind: Job['kind'];
  status: Job['status'];
  target: string;
  agent: string;
  /** The point of a one-target backup, or the point a restore or verify reads. */
  recoveryPointId?: string;
  /** A backup's targets with their points (a backup by selector has no `recoveryPointId`). */
  items?: Array<Pick<JobItem, 'target' | 'agent' | 'recoveryPointId'>>;
  executionArn: string;
}

function seenFor(agent: AgentRecord, now: string): string {
  const seconds = Math.max(0, Math.round((Date.parse(now) - Date.parse(agent.seenAt)) / 1000));
  return `agent ${agent.agent}, last report ${seconds}s ago`;
}

/** Finds the one agent that sees `ref` (or checks the one named with @AGENT). */
async function agentSeeing(catalog: Catalog, ref: TargetRef, now: string): Promise<AgentRecord> {
  const key = targetKey(ref);
  const listed = isListedPlatform(ref.platform);
  if (ref.agent) {
    const agent = await catalog.getAgent(ref.agent);
    if (!agent) {
      throw new AgentUnavailable(
        `no agent named "${ref.agent}" has reported to this Stowage; start one with \`stowage agent --site ${ref.agent}\``,
      );
    }
    if (!listed) {
      if (!agent.platforms.includes(ref.platform)) {
        throw new AgentUnavailable(`agent ${ref.agent} does not serve platform "${ref.platform}"`);
      }
      return agent;
    }
    if (!agent.targets.some((t) => t.target === key)) {
      throw new TargetNotFound(
        `${key} is not among the targets ${seenFor(agent, now)} sees; \`stowage targets\` lists them`,
      );
    }
    return agent;
  }
  const agents = await catalog.listAgents();
  const serving = agents.filter((a) => a.platforms.includes(ref.platform));
  if (serving.length === 0) {
    throw new AgentUnavailable(
      `no agent serves platform "${ref.platform}"; start an agent on a host that runs it`,
    );
  }
  if (!listed) {
    // Nothing lists every path: the agent finds out whether it exists.
    if (serving.length > 1) {
      throw new ValidationError(
        `${key} could be on any of ${serving.map((a) => a.agent).join(', ')}; name the host's agent as ${key}@AGENT`,
      );
    }
    return serving[0]!;
  }
  const seeing = serving.filter((a) => a.targets.some((t) => t.target === key));
  if (seeing.length === 0) {
    throw new TargetNotFound(
      `${key} does not exist: it is not among the targets the agents see (${serving
        .map((a) => seenFor(a, now))
        .join('; ')}); \`stowage targets\` lists them`,
    );
  }
  if (seeing.length > 1) {
    throw new ValidationError(
      `${key} is seen by several agents (${seeing.map((a) => a.agent).join(', ')}); name one as ${key}@AGENT`,
    );
  }
  return seeing[0]!;
}

const hookSchema = z
  .object({
    command: z.array(z.string()).min(1, 'a hook needs a command (argv, at least one element)'),
    timeoutSeconds: z.number().int().min(1).max(86_400).optional(),
    onError: z.enum(['fail', 'continue']).optional(),
  })
  .strict();

/**
 * The most targets one backup job takes: the Map's items travel in the execution input, which
 * Step Functions limits to 256 KiB (~300 bytes an item, with room for the options).
 */
export const MAX_BACKUP_ITEMS = 200;

const backupBodySchema = z
  .object({
    target: z.string({ error: 'give the target as "PLATFORM:NAME", e.g. "docker:web"' }).optional(),
    selector: z
      .string({ error: 'give the selector as "docker:KEY=VALUE[,KEY=VALUE...][@AGENT]"' })
      .optional(),
    consistency: z.enum(['live', 'pause', 'stop']).optional(),
    includeBinds: z.boolean().optional(),
    hooks: z
      .object({ pre: z.array(hookSchema).optional(), post: z.array(hookSchema).optional() })
      .strict()
      .optional(),
    label: z
      .string()
      .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'a label is lower-case letters, digits, . _ -')
      .optional(),
    snapshots: z.boolean().optional(),
    optimizedStorage: z.boolean().optional(),
    /** Set by a policy's run: its points record the policy (retention). */
    policy: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'a policy name')
      .optional(),
  })
  .strict();

/** Parses a request body, turning every problem into one ValidationError that names the fields. */
function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => {
    // A record's bad key carries what is wrong with it one level down.
    const inner = 'issues' in i && Array.isArray(i.issues) ? i.issues : [];
    const nested = inner.map((n: { message?: unknown }) => String(n.message)).join(', ');
    const message = nested ? `${i.message} (${nested})` : i.message;
    return i.path.length ? `${i.path.join('.')}: ${message}` : message;
  });
  throw new ValidationError(`bad request body: ${problems.join('; ')}`);
}

/**
 * Starts a backup of one target (`target`) or of every container whose labels match a selector
 * (`selector`), as one job: the selector is resolved against the agents' inventory now, and the
 * workflow backs up each match into its own recovery point.
 */
export async function requestBackup(deps: RequestDeps, body: unknown): Promise<JobAccepted> {
  const { target, selector, ...options } = parseBody(backupBodySchema, body);
  if ((target === undefined) === (selector === undefined)) {
    throw new ValidationError(
      'give either "target" ("docker:web") or "selector" ("docker:app=web"), not both and not neither',
    );
  }
  const lxdOnly = (['snapshots', 'optimizedStorage'] as const).filter(
    (k) => options[k] !== undefined,
  );
  const platform = target !== undefined ? parseTarget(target).platform : 'docker';
  if (lxdOnly.length > 0 && !['lxd', 'lxd-volume', 'lxd-server'].includes(platform)) {
    throw new ValidationError(
      `${lxdOnly.join(' and ')} apply to LXD instances, custom volumes and servers, not to ${platform} targets`,
    );
  }
  const now = deps.clock.now();
  let jobTarget: string;
  let resolved: Array<{ target: string; agent: string }>;
  if (target !== undefined) {
    const ref = parseTarget(target);
    checkTargetName(ref);
    const agent = await agentSeeing(deps.catalog, ref, now);
    jobTarget = targetKey(ref);
    resolved = [{ target: jobTarget, agent: agent.agent }];
  } else {
    const sel = parseSelector(selector!);
    jobTarget = sel.text;
    resolved = await resolveSelector(deps.catalog, sel, now);
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
    target: jobTarget,
    agent: [...new Set(items.map((i) => i.agent))].join(','),
    status: 'PENDING',
    createdAt: now,
    ...(target !== undefined ? { recoveryPointId: items[0]!.recoveryPointId } : {}),
    ...(options.label ? { label: options.label } : {}),
    ...(options.policy ? { policy: options.policy } : {}),
    items,
  };
  return launch(deps, job, () =>
    deps.workflows.startBackup({
      jobId: job.jobId,
      target: job.target,
      options: options as BackupRequestOptions,
      items: items.map((item, index): BackupItemInput => ({
        index,
        target: item.target,
        agent: item.agent,
        queueUrl: deps.queueUrlFor(item.agent),
        recoveryPointId: item.recoveryPointId,
      })),
    }),
  );
}

/**
 * Every target whose labels match the selector, on the named agent or on every agent that
 * serves the platform, in a stable order (agent, then name). No match is an error that says what
 * was looked at.
 */
async function resolveSelector(
  catalog: Catalog,
  sel: LabelSelector,
  now: string,
): Promise<Array<{ target: string; agent: string }>> {
  let agents: AgentRecord[];
  if (sel.agent) {
    const agent = await catalog.getAgent(sel.agent);
    if (!agent) {
      throw new AgentUnavailable(
        `no agent named "${sel.agent}" has reported to this Stowage; start one with \`stowage agent --site ${sel.agent}\``,
      );
    }
    agents = [agent];
  } else {
    agents = (await catalog.listAgents()).filter((a) => a.platforms.includes(sel.platform));
    if (agents.length === 0) {
      throw new AgentUnavailable(
        `no agent serves platform "${sel.platform}"; start an agent on a host that runs it`,
      );
    }
  }
  const matches = agents.flatMap((a) =>
    a.targets
      .filter((t) => t.platform === sel.platform && matchesSelector(sel, t.labels))
      .map((t) => ({ target: t.target, agent: a.agent, name: t.name }))
      .sort((x, y) => x.name.localeCompare(y.name)),
  );
  if (matches.length === 0) {
    throw new TargetNotFound(
      `no container matches the selector ${sel.text}${sel.agent ? `@${sel.agent}` : ''} (${agents
        .map((a) => seenFor(a, now))
        .join(
          '; ',
        )}); every label must match exactly: \`docker inspect -f '{{json .Config.Labels}}' NAME\` shows a container's labels`,
    );
  }
  if (matches.length > MAX_BACKUP_ITEMS) {
    throw new ValidationError(
      `the selector ${sel.text} matches ${matches.length} containers, more than the ${MAX_BACKUP_ITEMS} one backup job takes; add a label to narrow it, or name an agent with @AGENT`,
    );
  }
  return matches.map(({ target, agent }) => ({ target, agent }));
}

export interface RestoreRequest {
  recoveryPointId?: unknown;
  name?: unknown;
  inPlace?: unknown;
  to?: unknown;
  volumes?: unknown;
  network?: unknown;
  ports?: unknown;
  volume?: unknown;
  intoVolume?: unknown;
  pool?: unknown;
  devices?: unknown;
  state?: unknown;
  recover?: unknown;
}

const dockerName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'not a valid Docker name');
const restoreOptionsSchema = z.object({
  volumes: z.record(z.string(), dockerName).optional(),
  network: dockerName.optional(),
  ports: z
    .record(
      z.string(),
      z.string().regex(/^(\d{1,5})?$/, 'a host port is a number, or "" to drop it'),
    )
    .refine((ports) => Object.keys(ports).every((p) => /^\d+(\/(tcp|udp|sctp))?$/.test(p)), {
      message: 'a container port is written 80 or 80/tcp',
    })
    .optional(),
  volume: z.string().min(1).optional(),
  intoVolume: dockerName.optional(),
  pool: z
    .string()
    .refine(isValidPoolName, 'a pool name has no slash or white space and does not start with -')
    .optional(),
  devices: z
    .record(
      z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'a device name is letters, digits, . _ -'),
      z.record(
        z.string().regex(/^[a-z][a-z0-9_.-]*$/, 'a device key is lower-case, e.g. pool or network'),
        z.string(),
      ),
    )
    .optional(),
  state: z.enum(['running', 'stopped']).optional(),
  recover: z.boolean().optional(),
});

/** Restore options that only LXD targets understand, by the platforms that take them. */
const LXD_RESTORE_OPTIONS = {
  pool: ['lxd', 'lxd-volume'],
  devices: ['lxd'],
  state: ['lxd'],
  recover: ['lxd-server'],
} as const;

export async function requestRestore(
  deps: RequestDeps,
  body: RestoreRequest,
): Promise<JobAccepted> {
  if (typeof body.recoveryPointId !== 'string' || body.recoveryPointId === '') {
    throw new ValidationError(
      'body must name the point: {"recoveryPointId": "rp-...", "name": "NEW"}',
    );
  }
  if (body.name !== undefined && (typeof body.name !== 'string' || body.name === '')) {
    throw new ValidationError('"name" must be a non-empty string');
  }
  if (body.to !== undefined && typeof body.to !== 'string') {
    throw new ValidationError('"to" must be a target such as docker:web2@site');
  }
  const inPlace = body.inPlace === true;
  const { volumes, network, ports, volume, intoVolume, pool, devices, state, recover } = body;
  const options = parseBody(restoreOptionsSchema, {
    recover,
    volumes,
    network,
    ports,
    volume,
    intoVolume,
    pool,
    devices,
    state,
  });
  if (options.intoVolume && !options.volume) {
    throw new ValidationError(
      '"intoVolume" goes with "volume" (the volume of the point to restore)',
    );
  }
  const point = await deps.catalog.getPoint(body.recoveryPointId);
  if (!point) {
    // A local snapshot's id (lxd:web/snap0) is listed by `stowage points` too.
    const hint = body.recoveryPointId.includes(':')
      ? `; for a local snapshot use \`stowage snapshot restore ${body.recoveryPointId}\``
      : '';
    throw new PointNotFound(
      `recovery point ${body.recoveryPointId} does not exist; \`stowage points\` lists them${hint}`,
    );
  }
  const source = parseTargetKey(point.target);
  for (const [option, platforms] of Object.entries(LXD_RESTORE_OPTIONS)) {
    if (options[option as keyof typeof LXD_RESTORE_OPTIONS] === undefined) continue;
    if (!(platforms as readonly string[]).includes(source.platform)) {
      throw new ValidationError(
        `"${option}" applies to ${platforms.join(' and ')} points, not to ${point.target}`,
      );
    }
  }
  const to = typeof body.to === 'string' ? parseTarget(body.to) : undefined;
  if (to && to.platform !== source.platform) {
    throw new ValidationError(
      `cannot restore a ${source.platform} point to ${formatTarget(to)}: the platforms differ`,
    );
  }
  let name = typeof body.name === 'string' ? body.name : to?.name;
  if (to && typeof body.name === 'string' && body.name !== to.name) {
    throw new ValidationError(
      `--name ${body.name} and --to ${formatTarget(to)} name different targets`,
    );
  }
  if (source.platform === 'lxd-server') {
    return requestServerRestore(deps, point, inPlace, name, to, options);
  }
  if (source.platform === 'lxd-volume') {
    if (!name && options.pool) name = splitVolumeName(source.name).volume;
    if (name) name = volumeDestination(source.name, name, options.pool);
  }
  if (inPlace && name && name !== source.name && !to?.agent) {
    throw new ValidationError(
      '--in-place restores over the original; do not give another --name with it',
    );
  }
  // Restoring one volume addresses the point's own container; the agent checks the volume.
  if (inPlace || options.volume) name ??= source.name;
  if (!name) {
    throw new ValidationError(
      `say where to restore: --name NEW to restore beside ${point.target}, or --in-place to replace it`,
    );
  }
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
  if (exists && !inPlace && !options.volume) {
    throw new NameTaken(
      `${targetKey(destination)} already exists on agent ${agentName}; choose another --name, or use --in-place to replace it`,
    );
  }
  const job: Job = {
    jobId: deps.newId('job'),
    kind: 'RESTORE',
    target: targetKey(destination),
    source: point.target,
    agent: agentName,
    status: 'PENDING',
    createdAt: deps.clock.now(),
    recoveryPointId: point.recoveryPointId,
  };
  return launch(deps, job, () =>
    deps.workflows.startRestore({
      jobId: job.jobId,
      recoveryPointId: point.recoveryPointId,
      source: point.target,
      target: job.target,
      agent: agentName,
      queueUrl: deps.queueUrlFor(agentName),
      inPlace,
      options: Object.fromEntries(
        Object.entries(options).filter(([, v]) => v !== undefined),
      ) as RestoreRequestOptions,
    }),
  );
}

/**
 * A whole LXD server point is restored onto the LXD server of an agent, the target naming the
 * agent: `--to lxd-server:OTHER` (or `--name OTHER`) onto agent OTHER's server, `--in-place`
 * onto the server it was taken of. The server exists by definition and the restore never
 * clobbers (it skips what is there), so there is no NameTaken here.
 */
async function requestServerRestore(
  deps: RequestDeps,
  point: { recoveryPointId: string; target: string; agent: string },
  inPlace: boolean,
  name: string | undefined,
  to: TargetRef | undefined,
  options: RestoreRequestOptions,
): Promise<JobAccepted> {
  const sourceServer = parseTargetKey(point.target).name;
  if (to?.agent && to.agent !== to.name) {
    throw new ValidationError(
      `a server target is named after its agent: write --to lxd-server:${to.agent}, not ${formatTarget(to)}`,
    );
  }
  if (inPlace && name && name !== sourceServer) {
    throw new ValidationError(
      `--in-place restores onto lxd-server:${sourceServer}, the server the point was taken of; to restore onto another server give --to lxd-server:${name} without --in-place`,
    );
  }
  const server = name ?? (inPlace ? sourceServer : undefined);
  if (!server) {
    throw new ValidationError(
      `say where to restore: --to lxd-server:AGENT onto that agent's LXD server, or --in-place onto lxd-server:${sourceServer}`,
    );
  }
  const agent = await deps.catalog.getAgent(server);
  if (!agent) {
    throw new AgentUnavailable(
      `agent "${server}" has never reported; start it with \`stowage agent --site ${server}\` on the LXD host`,
    );
  }
  if (!agent.platforms.includes('lxd-server')) {
    throw new AgentUnavailable(
      `agent ${server} serves no LXD server (it serves: ${agent.platforms.join(', ') || 'nothing'}); start it on a host where lxd runs`,
    );
  }
  const job: Job = {
    jobId: deps.newId('job'),
    kind: 'RESTORE',
    target: `lxd-server:${server}`,
    source: point.target,
    agent: server,
    status: 'PENDING',
    createdAt: deps.clock.now(),
    recoveryPointId: point.recoveryPointId,
  };
  return launch(deps, job, () =>
    deps.workflows.startRestore({
      jobId: job.jobId,
      recoveryPointId: point.recoveryPointId,
      source: point.target,
      target: job.target,
      agent: server,
      queueUrl: deps.queueUrlFor(server),
      inPlace,
      options: Object.fromEntries(
        Object.entries(options).filter(([, v]) => v !== undefined),
      ) as RestoreRequestOptions,
    }),
  );
}

/**
 * A custom volume is restored as `POOL/NAME`; a bare `--name NEW` means NEW in `--pool`, else in
 * the point's own pool, so `--name data2` stays beside the original; `--pool P` alone keeps the
 * volume's name in pool P.
 */
function volumeDestination(sourceName: string, name: string, pool: string | undefined): string {
  if (!name.includes('/')) return `${pool ?? splitVolumeName(sourceName).pool}/${name}`;
  const named = splitVolumeName(name).pool;
  if (pool !== undefined && named !== pool) {
    throw new ValidationError(
      `--name ${name} is in pool ${named} but --pool says ${pool}; give the pool once`,
    );
  }
  return name;
}

/** The label `stowage protect-update` gives its points and `stowage rollback` looks for. */
export const PRE_UPDATE_LABEL = 'pre-update';

/**
 * Rolls a target back to its newest pre-update point, in place: the procedure's purpose, after an
 * update went wrong.
 */
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

/** Starts a verify of a recovery point by the agent that took it. */
export async function requestVerify(
  deps: RequestDeps,
  body: { recoveryPointId?: unknown },
): Promise<JobAccepted> {
  if (typeof body.recoveryPointId !== 'string' || body.recoveryPointId === '') {
    throw new ValidationError('body must name the point: {"recoveryPointId": "rp-..."}');
  }
  const point = await deps.catalog.getPoint(body.recoveryPointId);
  if (!point) {
    throw new PointNotFound(
      `recovery point ${body.recoveryPointId} does not exist; \`stowage points\` lists them`,
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

const snapshotCreateSchema = z
  .object({
    target: z.string({ error: 'give the target as "PLATFORM:NAME", e.g. "lxd:web"' }),
    pattern: z.string().optional(),
    expiry: z.string().optional(),
    stateful: z.boolean().optional(),
  })
  .strict();

const snapshotRefSchema = z
  .object({
    snapshot: z.string({ error: 'name the snapshot as TARGET/SNAPSHOT, e.g. "lxd:web/snap0"' }),
  })
  .strict();

const snapshotExpirySchema = z
  .object({
    snapshot: z.string({ error: 'name the snapshot as TARGET/SNAPSHOT, e.g. "lxd:web/snap0"' }),
    expiry: z.string({ error: 'give the new expiry: never, a duration (7d, 12h) or a time' }),
  })
  .strict();

const snapshotScheduleSchema = z
  .object({
    target: z.string({ error: 'give the target as "PLATFORM:NAME", e.g. "lxd:web"' }),
    every: z.string({ error: 'give the schedule: @daily, a cron expression, or none' }),
    expiry: z.string().optional(),
    pattern: z.string().optional(),
    stopped: z.boolean().optional(),
  })
  .strict();

/**
 * The agent that sees the target, and its inventory entry, which must list snapshots: only
 * targets whose driver has local snapshots (LXD instances) carry that list.
 */
async function snapshotHolder(
  deps: RequestDeps,
  ref: TargetRef,
): Promise<{
  agent: AgentRecord;
  snapshots: NonNullable<AgentRecord['targets'][number]['snapshots']>;
}> {
  const agent = await agentSeeing(deps.catalog, ref, deps.clock.now());
  const entry = inventoryEntry(agent, targetKey(ref));
  if (!entry?.snapshots) {
    throw new Unsupported(
      `${targetKey(ref)} has no local snapshots: the ${ref.platform} driver keeps none (LXD instances do); use \`stowage backup\` for an offsite point`,
    );
  }
  return { agent, snapshots: entry.snapshots };
}

/** Refuses a snapshot the agent did not report (or reported with an expiry now past). */
async function existingSnapshot(
  deps: RequestDeps,
  text: string,
): Promise<{ agent: AgentRecord; target: string; name: string }> {
  const ref = parseSnapshotId(text);
  const { agent, snapshots } = await snapshotHolder(deps, ref.target);
  const key = targetKey(ref.target);
  const found = snapshots.find((s) => s.name === ref.name);
  if (!found || isExpired(found, new Date(deps.clock.now()))) {
    const known = snapshots.filter((s) => !isExpired(s, new Date(deps.clock.now())));
    throw new SnapshotNotFound(
      `${snapshotId(key, ref.name)} does not exist${found ? ` (it expired at ${found.expiresAt})` : ''}; ${key} has ${
        known.length === 0 ? 'no snapshots' : `${known.map((s) => s.name).join(', ')}`
      } (as agent ${agent.agent} last reported; \`stowage snapshot list ${key}\` lists them)`,
    );
  }
  return { agent, target: key, name: ref.name };
}

/** `stowage snapshot create`: a local snapshot named after `pattern` (default LXD's snap%d). */
export async function requestSnapshotCreate(
  deps: RequestDeps,
  body: unknown,
): Promise<JobAccepted> {
  const parsed = parseBody(snapshotCreateSchema, body);
  const ref = parseTarget(parsed.target);
  const args: SnapshotArgs = {
    pattern: checkPattern(parsed.pattern ?? 'snap%d'),
    ...(parsed.expiry !== undefined ? { expiry: expiryText(deps, parsed.expiry) } : {}),
    stateful: parsed.stateful ?? false,
  };
  const { agent } = await snapshotHolder(deps, ref);
  return launchSnapshot(
    deps,
    agent,
    targetKey(ref),
    'create',
    args,
    snapshotId(targetKey(ref), args.pattern!),
  );
}

export async function requestSnapshotDelete(
  deps: RequestDeps,
  body: unknown,
): Promise<JobAccepted> {
  const { snapshot } = parseBody(snapshotRefSchema, body);
  const found = await existingSnapshot(deps, snapshot);
  return launchSnapshot(deps, found.agent, found.target, 'delete', { snapshot: found.name });
}

export async function requestSnapshotRestore(
  deps: RequestDeps,
  body: unknown,
): Promise<JobAccepted> {
  const { snapshot } = parseBody(snapshotRefSchema, body);
  const found = await existingSnapshot(deps, snapshot);
  return launchSnapshot(deps, found.agent, found.target, 'restore', { snapshot: found.name });
}

export async function requestSnapshotExpiry(
  deps: RequestDeps,
  body: unknown,
): Promise<JobAccepted> {
  const parsed = parseBody(snapshotExpirySchema, body);
  const expiry = expiryText(deps, parsed.expiry);
  const found = await existingSnapshot(deps, parsed.snapshot);
  return launchSnapshot(deps, found.agent, found.target, 'expire', {
    snapshot: found.name,
    expiry,
  });
}

/** Sets (or with `every: none` removes) the engine's own snapshot schedule of a target. */
export async function requestSnapshotSchedule(
  deps: RequestDeps,
  body: unknown,
): Promise<JobAccepted> {
  const parsed = parseBody(snapshotScheduleSchema, body);
  const ref = parseTarget(parsed.target);
  const every = checkSchedule(parsed.every);
  if (every === 'none' && (parsed.expiry ?? parsed.pattern ?? parsed.stopped) !== undefined) {
    throw new ValidationError(
      '--every none removes the schedule; give no --expiry, --pattern or --stopped with it',
    );
  }
  const args: SnapshotArgs = {
    every,
    ...(parsed.expiry !== undefined ? { expiry: checkScheduleExpiry(parsed.expiry) } : {}),
    ...(parsed.pattern !== undefined ? { pattern: checkPattern(parsed.pattern) } : {}),
    ...(parsed.stopped !== undefined ? { stopped: parsed.stopped } : {}),
  };
  const { agent } = await snapshotHolder(deps, ref);
  return launchSnapshot(deps, agent, targetKey(ref), 'schedule', args, targetKey(ref));
}

/** A valid expiry, not already past (that would be a delete). */
function expiryText(deps: RequestDeps, text: string): string {
  const expiry = parseExpiry(text);
  if (expiry.kind === 'at' && expiry.at.getTime() <= Date.parse(deps.clock.now())) {
    throw new ValidationError(
      `expiry ${text} is already past; give a later time, or delete the snapshot with \`stowage snapshot delete\``,
    );
  }
  return text.trim();
}

function launchSnapshot(
  deps: RequestDeps,
  agent: AgentRecord,
  target: string,
  action: SnapshotAction,
  args: SnapshotArgs,
  id = snapshotId(target, args.snapshot ?? ''),
): Promise<JobAccepted> {
  const job: Job = {
    jobId: deps.newId('job'),
    kind: 'SNAPSHOT',
    target,
    agent: agent.agent,
    status: 'PENDING',
    createdAt: deps.clock.now(),
    recoveryPointId: id,
    snapshot: { action },
  };
  return launch(deps, job, () =>
    deps.workflows.startSnapshot({
      jobId: job.jobId,
      target,
      agent: agent.agent,
      queueUrl: deps.queueUrlFor(agent.agent),
      action,
      args,
    }),
  );
}

/**
 * Records the PENDING job, then starts its workflow; if the workflow cannot start, the job ends
 * FAILED (WorkflowNotStarted) rather than waiting forever, and the error goes on to the caller.
 */
async function launch(
  deps: RequestDeps,
  job: Job,
  start: () => Promise<string>,
): Promise<JobAccepted> {
  await deps.catalog.createJob(job);
  try {
    return accepted(job, await start());
  } catch (err) {
    await deps.catalog.updateJob(
      job.jobId,
      {
        status: 'FAILED',
        endedAt: deps.clock.now(),
        error: { name: 'WorkflowNotStarted', message: (err as Error).message },
      },
      ['PENDING'],
    );
    throw err;
  }
}

function accepted(job: Job, executionArn: string): JobAccepted {
  return {
    jobId: job.jobId,
    kind: job.kind,
    status: job.status,
    target: job.target,
    agent: job.agent,
    ...(job.recoveryPointId ? { recoveryPointId: job.recoveryPointId } : {}),
    ...(job.items
      ? {
          items: job.items.map(({ target, agent, recoveryPointId }) => ({
            target,
            agent,
            recoveryPointId,
          })),
        }
      : {}),
    executionArn,
  };
}
