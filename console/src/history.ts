/**
 * A job's execution history turned into what the job page shows: the states the workflow went
 * through (entered, exited, how long, retried, failed), as the Step Functions console lists
 * them, and log lines (one per event, the lines its agents logged, and the job's own error and
 * warnings). Pure.
 */
import type { Job, JobLogLine } from '../../kernel/model';
import type { WorkflowEvent } from './api';

export interface StateVisit {
  state: string;
  type: string;
  enteredAt: string;
  exitedAt?: string;
  /** Seconds, once exited. */
  seconds?: number;
  retries: number;
  failed?: { error?: string; cause?: string };
  caught: boolean;
}

/** One visit per StateEntered event, closed by the next StateExited of the same state. */
export function stateVisits(events: readonly WorkflowEvent[]): StateVisit[] {
  const visits: StateVisit[] = [];
  const open = new Map<string, StateVisit[]>();
  for (const e of events) {
    const state = e.state;
    if (!state) continue;
    if (e.type.endsWith('StateEntered')) {
      const v: StateVisit = {
        state,
        type: e.type.slice(0, -'StateEntered'.length),
        enteredAt: e.timestamp,
        retries: 0,
        caught: false,
      };
      visits.push(v);
      open.set(state, [...(open.get(state) ?? []), v]);
      continue;
    }
    const current = open.get(state)?.at(-1);
    if (!current) continue;
    if (e.type.endsWith('StateExited')) {
      current.exitedAt = e.timestamp;
      current.seconds = (Date.parse(e.timestamp) - Date.parse(current.enteredAt)) / 1000;
      open.get(state)!.pop();
    } else if (e.type === 'TaskStateRetried') {
      current.retries++;
    } else if (e.type === 'TaskStateCaught') {
      current.caught = true;
    } else if (e.type.endsWith('Failed')) {
      current.failed = {
        ...(e.error !== undefined ? { error: e.error } : {}),
        ...(e.cause !== undefined ? { cause: e.cause } : {}),
      };
    }
  }
  return visits;
}

export interface LogLine {
  at: string;
  level: 'info' | 'warn' | 'error';
  text: string;
  /** Logged by an agent (GET /jobs/{id}/log), not the workflow. */
  agent?: string;
}

/** The job's story, oldest first: workflow events and its agents' lines, merged by time. */
export function logLines(
  job: Job,
  events: readonly WorkflowEvent[],
  agentLines: readonly JobLogLine[] = [],
): LogLine[] {
  const lines: LogLine[] = [
    {
      at: job.createdAt,
      level: 'info',
      text: `job ${job.jobId} created (${job.kind} ${job.target})`,
    },
  ];
  for (const e of events) {
    const failed =
      e.type.endsWith('Failed') || e.type.endsWith('TimedOut') || e.type.endsWith('Aborted');
    const what = [
      e.type,
      e.state ? `"${e.state}"` : '',
      e.error ?? '',
      e.cause ? `: ${e.cause}` : '',
    ]
      .filter(Boolean)
      .join(' ');
    lines.push({
      at: e.timestamp,
      level: failed ? 'error' : e.type.includes('Retried') ? 'warn' : 'info',
      text: what,
    });
  }
  for (const l of agentLines) {
    lines.push({
      at: l.at,
      level: l.level,
      agent: l.agent,
      text: `${l.target} (${l.agent}) ${l.event}${l.text ? ` ${l.text}` : ''}`,
    });
  }
  for (const w of job.warnings ?? [])
    lines.push({ at: job.endedAt ?? job.createdAt, level: 'warn', text: w });
  for (const item of job.items ?? []) {
    if (item.error) {
      lines.push({
        at: job.endedAt ?? job.createdAt,
        level: 'error',
        text: `${item.target}: ${item.error.name}: ${item.error.message}`,
      });
    }
  }
  if (job.error) {
    lines.push({
      at: job.endedAt ?? job.createdAt,
      level: 'error',
      text: `${job.error.name}: ${job.error.message}`,
    });
  }
  if (job.endedAt) lines.push({ at: job.endedAt, level: 'info', text: `job ended ${job.status}` });
  return lines.sort((a, b) => a.at.localeCompare(b.at));
}
