/**
 * Restore plans (`stowage restore POINT --plan`, `POST /restores` with `"plan": true`): what a
 * restore would create, replace, stop and start, rename or remap, and how many bytes it would
 * read, said before anything changes. The API works it out from what the catalog holds: the
 * point (its streams, sizes and summary) and the destination as its agent last reported it;
 * each platform's spec has a `planRestore` that knows its own steps. The agent still checks
 * everything again when the restore runs (a name taken since, a pool that does not exist).
 */
import type { InventoryTarget, RecoveryPoint } from '../model';

export type PlanAction =
  'create' | 'replace' | 'stop' | 'start' | 'rename' | 'remap' | 'skip' | 'remove' | 'read';

export interface PlanStep {
  action: PlanAction;
  /** What the step acts on, e.g. `container web2`, `volume web2_data`. */
  what: string;
  /** Why, from what, or how much, in words. */
  detail?: string;
}

/** What a platform's planner is given. */
export interface PlanInput {
  point: Pick<RecoveryPoint, 'recoveryPointId' | 'target' | 'agent' | 'streams' | 'summary'>;
  /** The point's target name (`web`, `default/data`, `/srv/data`, an agent for lxd-server). */
  sourceName: string;
  /** The name the restore produces (for lxd-server: the agent whose server receives it). */
  name: string;
  inPlace: boolean;
  /** The platform's restore options, as validated. */
  options: Record<string, unknown>;
  /** The destination agent's inventory. */
  agentTargets: readonly InventoryTarget[];
  /** The destination as that agent last reported it; undefined when it does not list it. */
  existing?: InventoryTarget;
}

export interface PlatformPlan {
  steps: PlanStep[];
  /** The streams the restore reads; default all the point's streams. */
  streams?: string[];
  notes?: string[];
}

export type RestorePlanner = (input: PlanInput) => PlatformPlan;

/** What `POST /restores` with `"plan": true` answers (200); nothing has changed. */
export interface RestorePlanAnswer {
  plan: true;
  recoveryPointId: string;
  /** The target the point was taken of. */
  source: string;
  /** The target the restore would produce (or, for lxd-server, the server it goes onto). */
  target: string;
  agent: string;
  inPlace: boolean;
  /** Bytes the restore would read from the repository: the sum of `streams`. */
  bytesRead: number;
  streams: Array<{ name: string; size: number }>;
  /** In the order the restore would take them. */
  steps: PlanStep[];
  /** What the agent checks when the restore runs, or what the plan cannot know. */
  notes: string[];
}

/** Sizes for plan details: `2.0 MiB`. */
export function planBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function streamSize(input: PlanInput, stream: string): number {
  return input.point.streams.find((s) => s.name === stream)?.size ?? 0;
}

/**
 * The point's streams under `prefix/`, without the prefix (`volume/data` → `data`). A tree
 * stream's index (`volume/data.index`, beside `volume/data`) is part of its stream, not a volume
 * of its own.
 */
export function streamsUnder(input: PlanInput, prefix: string): string[] {
  const names = new Set(input.point.streams.map((s) => s.name));
  return input.point.streams
    .filter((s) => s.name.startsWith(`${prefix}/`))
    .filter((s) => !(s.name.endsWith('.index') && names.has(s.name.slice(0, -'.index'.length))))
    .map((s) => s.name.slice(prefix.length + 1));
}

/** Whether the workload ran at backup time, from the summary's `state` (or `powerState`). */
export function ranAtBackup(input: PlanInput): boolean {
  const state = String(input.point.summary.state ?? input.point.summary.powerState ?? '');
  return /^(running|poweredon|on)$/i.test(state);
}

/** Whether the destination runs now, as its agent last reported it. */
export function runsNow(input: PlanInput): boolean {
  return /^(running|in-use|on|poweredon)$/i.test(input.existing?.state ?? '');
}

/**
 * The plan of a platform with no planner of its own: the target created, or replaced in place
 * (stopped first when it runs), every stream read.
 */
export function genericPlan(noun: string): RestorePlanner {
  return (input) => {
    const steps: PlanStep[] = [];
    if (input.inPlace && input.existing) {
      if (runsNow(input)) steps.push({ action: 'stop', what: `${noun} ${input.name}` });
      steps.push({ action: 'replace', what: `${noun} ${input.name}`, detail: 'with the point' });
    } else {
      steps.push({ action: 'create', what: `${noun} ${input.name}` });
    }
    if (ranAtBackup(input)) steps.push({ action: 'start', what: `${noun} ${input.name}` });
    return { steps };
  };
}
