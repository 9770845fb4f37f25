/**
 * The local snapshot tier (`POST /snapshots`, `/snapshots/deletions`, `/snapshots/restores`,
 * `/snapshots/expiries`, `/snapshots/schedules`): one SNAPSHOT job on the agent that sees the
 * target, for platforms whose spec keeps local snapshots. No bytes leave the host.
 */
import { z } from 'zod';
import { SnapshotNotFound, Unsupported, ValidationError } from '../../../kernel/errors';
import type { AgentRecord, Job } from '../../../kernel/model';
import { PLATFORMS, specOf } from '../../../kernel/platforms';
import {
  checkPattern,
  checkSchedule,
  checkScheduleExpiry,
  inventoryEntry,
  isExpired,
  parseExpiry,
  parseSnapshotId,
  snapshotId,
} from '../../../kernel/snapshots';
import { parseTarget, targetKey, type TargetRef } from '../../../kernel/targets';
import type { SnapshotAction, SnapshotArgs } from '../../../statemachines/contracts';
import { parseBody } from './body';
import { launch, type JobAccepted, type RequestDeps } from './launch';
import { agentSeeing } from './placement';

/** The targets that keep local snapshots, for messages: `LXD instances`. */
export function snapshotKeepers(): string {
  return PLATFORMS.map(specOf)
    .filter((s) => s.snapshots)
    .map((s) => `${s.noun}s`)
    .join(', ');
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

const snapshotRestoreSchema = z
  .object({
    snapshot: z.string({ error: 'name the snapshot as TARGET/SNAPSHOT, e.g. "lxd:web/snap0"' }),
    state: z.enum(['running', 'stopped']).optional(),
    plan: z.boolean().optional(),
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
  const noSnapshots = () =>
    new Unsupported(
      `${targetKey(ref)} has no local snapshots: the ${ref.platform} driver keeps none (${snapshotKeepers()} do); use \`stowage backup\` for an offsite point`,
    );
  if (!specOf(ref.platform).snapshots) throw noSnapshots();
  const agent = await agentSeeing(deps.catalog, ref, deps.clock.now());
  const entry = inventoryEntry(agent, targetKey(ref));
  if (!entry?.snapshots) throw noSnapshots();
  return { agent, snapshots: entry.snapshots };
}

/** Refuses a snapshot the agent did not report (or reported with an expiry now past). */
async function existingSnapshot(
  deps: RequestDeps,
  text: string,
): Promise<{
  agent: AgentRecord;
  target: string;
  name: string;
  info: NonNullable<AgentRecord['targets'][number]['snapshots']>[number];
}> {
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
  return { agent, target: key, name: ref.name, info: found };
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

/** What `stowage snapshot restore --plan` shows: nothing changes. */
export interface SnapshotRestorePlan {
  plan: true;
  snapshot: string;
  target: string;
  agent: string;
  /** Whether the snapshot holds the workload's memory (a running state to come back to). */
  stateful: boolean;
  /** The state the target is in afterwards: running, stopped, or as before. */
  stateAfter: 'running' | 'stopped' | 'as before';
  steps: Array<{ action: 'stop' | 'replace' | 'start'; what: string; detail?: string }>;
  notes: string[];
}

/** The body's snapshot, checked: its state flag only where the platform takes one. */
function snapshotRestoreBody(body: unknown) {
  const parsed = parseBody(snapshotRestoreSchema, body);
  const ref = parseSnapshotId(parsed.snapshot);
  const spec = specOf(ref.target.platform);
  if (parsed.state !== undefined && !spec.snapshotRestoreState) {
    throw new ValidationError(
      `--state applies to the snapshots of ${PLATFORMS.map(specOf)
        .filter((s) => s.snapshotRestoreState)
        .map((s) => `${s.noun}s`)
        .join(', ')}; ${spec.noun}s come back in the power state they had before`,
    );
  }
  return { ...parsed, spec };
}

export async function requestSnapshotRestore(
  deps: RequestDeps,
  body: unknown,
): Promise<JobAccepted> {
  const { snapshot, state } = snapshotRestoreBody(body);
  const found = await existingSnapshot(deps, snapshot);
  return launchSnapshot(deps, found.agent, found.target, 'restore', {
    snapshot: found.name,
    ...(state ? { state } : {}),
  });
}

/**
 * `POST /snapshots/restores` with `"plan": true`: what the revert would do, from the agent's
 * inventory (the snapshot, whether it holds memory, the target's state now); nothing starts.
 */
export async function planSnapshotRestore(
  deps: RequestDeps,
  body: unknown,
): Promise<SnapshotRestorePlan> {
  const { snapshot, state, spec } = snapshotRestoreBody(body);
  const found = await existingSnapshot(deps, snapshot);
  const id = snapshotId(found.target, found.name);
  const now = inventoryEntry(found.agent, found.target)?.state ?? 'unknown';
  const stateful = found.info.stateful;
  const notes: string[] = [];
  let stateAfter: SnapshotRestorePlan['stateAfter'];
  if (spec.snapshotRestoreState) {
    // vSphere puts the VM in the snapshot's power state: off without memory, on with it.
    stateAfter = state ?? (stateful ? 'running' : 'stopped');
    if (!stateful && state === undefined) {
      notes.push(
        `${id} holds no memory: the ${spec.noun} comes back powered off; --state running powers it on`,
      );
    }
  } else {
    stateAfter = 'as before';
    notes.push(`the ${spec.noun} comes back in the state it has now (${now})`);
  }
  notes.push(
    `everything written to ${found.target} since ${found.info.createdAt} is lost; take a snapshot first (stowage snapshot create ${found.target}) to keep it`,
  );
  const steps: SnapshotRestorePlan['steps'] = [
    { action: 'stop', what: found.target, detail: `now ${now}` },
    { action: 'replace', what: found.target, detail: `reverted to ${found.name}` },
  ];
  if (stateAfter !== 'stopped') {
    steps.push({
      action: 'start',
      what: found.target,
      detail: stateAfter === 'running' ? 'running afterwards' : 'if it ran before',
    });
  }
  return {
    plan: true,
    snapshot: id,
    target: found.target,
    agent: found.agent.agent,
    stateful,
    stateAfter,
    steps,
    notes,
  };
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
