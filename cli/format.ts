/** Human output of the CLI: tables and sizes. `--json` bypasses all of this. */
import type {
  Job,
  JobItem,
  JobLog,
  JobLogLine,
  RecoveryPoint,
  RestoreTestRecord,
} from '../kernel/model';
import type { RestorePlanAnswer } from '../kernel/platforms/restore-plan';
import type { SnapshotRestorePlan } from '../functions/core/requests/snapshot';
import type { RestoreTestOutcome } from '../statemachines/contracts';
import type { SnapshotListing } from '../kernel/snapshots';
import type { SnapshotSchedule } from '../statemachines/contracts';

/** What GET /points answers: offsite points and local snapshots, told apart by `tier`. */
export type ListedPoint =
  | (RecoveryPoint & {
      tier?: 'offsite';
      /** Why retention keeps it, or that the next prune deletes it (GET /points). */
      retention?: { keep: boolean; reasons: string[]; keptUntil?: string };
    })
  | SnapshotListing;

/** What GET /snapshots answers: each target that keeps snapshots. */
export interface SnapshotTarget {
  target: string;
  agent: string;
  state: string;
  seenAt: string;
  schedule: SnapshotSchedule | null;
  snapshots: SnapshotListing[];
}

export function bytes(n: number | undefined): string {
  if (n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows
    .map((r) =>
      r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  '),
    )
    .join('\n');
}

export function duration(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600)
    return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

export function progressLine(job: Job): string {
  if (job.items && job.items.length > 1) return itemsProgressLine(job, job.items);
  const p = job.progress;
  if (!p) return `${job.status.toLowerCase()}`;
  // Snapshot jobs move no bytes: their phase is all there is to say.
  if (job.kind === 'SNAPSHOT') return `${job.status.toLowerCase()}: ${p.phase}`;
  const done = p.bytesTotal
    ? `${bytes(p.bytesDone)} of ${bytes(p.bytesTotal)}`
    : bytes(p.bytesDone);
  const parts = [`${job.status.toLowerCase()}: ${p.phase}, ${done}`];
  if (p.bytesNew !== undefined) parts.push(`${bytes(p.bytesNew)} new`);
  if (p.bytesStored !== undefined) parts.push(`${bytes(p.bytesStored)} stored`);
  if (p.rate > 0) parts.push(`${bytes(p.rate)}/s`);
  if (p.etaSeconds !== undefined && p.rate > 0) parts.push(`ETA ${duration(p.etaSeconds)}`);
  return parts.join(', ');
}

/** A job of several targets: how many are done, and what the running ones are doing. */
function itemsProgressLine(job: Job, items: JobItem[]): string {
  const ended = items.filter((i) => i.status === 'COMPLETED' || i.status === 'FAILED').length;
  const failed = items.filter((i) => i.status === 'FAILED').length;
  const parts = [
    `${job.status.toLowerCase()}: ${ended} of ${items.length} targets done${failed ? ` (${failed} failed)` : ''}`,
  ];
  for (const item of items) {
    if (item.status === 'RUNNING' && item.progress) {
      parts.push(`${item.target}: ${item.progress.phase}, ${bytes(item.progress.bytesDone)}`);
    }
  }
  return parts.join('; ');
}

/** A backup's targets, one line each: point, status, size or error. */
export function itemsTable(items: JobItem[]): string {
  return table([
    ['TARGET', 'AGENT', 'POINT', 'STATUS', 'PROGRESS'],
    ...items.map((i) => [
      i.target,
      i.agent,
      // A failed item's point was never made: its id would lead nowhere.
      i.status === 'FAILED' ? '-' : i.recoveryPointId,
      i.status,
      i.error
        ? `${i.error.name}: ${i.error.message}`
        : i.progress
          ? `${i.progress.phase} ${bytes(i.progress.bytesDone)}`
          : '',
    ]),
  ]);
}

export function jobsTable(jobs: Job[]): string {
  return table([
    ['JOB', 'KIND', 'TARGET', 'STATUS', 'CREATED', 'PROGRESS'],
    ...jobs.map((j) => [
      j.jobId,
      j.kind.toLowerCase(),
      j.target,
      j.status,
      j.createdAt,
      j.error
        ? `${j.error.name}: ${j.error.message}`
        : j.progress
          ? `${j.progress.phase} ${bytes(j.progress.bytesDone)}`
          : '',
    ]),
  ]);
}

const seconds = (ms: number | undefined) =>
  ms === undefined ? '-' : `${(ms / 1000).toFixed(1)} s`;

/** A restore test in a few words: `RTO 4.2 s, probe exit 0`. */
export function restoreTestText(test: RestoreTestOutcome | RestoreTestRecord | undefined): string {
  if (!test) return '-';
  const probe = test.probe
    ? test.probe.exitCode === null
      ? `probe ${test.probe.error ?? 'did not finish'}`
      : `probe exit ${test.probe.exitCode}`
    : 'no probe';
  return test.error && test.rtoMs === undefined
    ? test.error.name
    : `RTO ${seconds(test.rtoMs)}, ${test.error ? test.error.name : probe}`;
}

/** The RESTORE TEST column: the last test's verdict, RTO and when. */
function lastRestoreTest(test: RestoreTestRecord | undefined): string {
  if (!test) return '-';
  return `${test.passed ? 'passed' : 'FAILED'} (${restoreTestText(test)}) ${test.testedAt}`;
}

export function pointsTable(points: ListedPoint[]): string {
  return table([
    [
      'POINT',
      'TIER',
      'TARGET',
      'CREATED',
      'STATUS',
      'LABEL',
      'EXPIRES',
      'SIZE',
      'NEW',
      'STORED',
      'STREAMS',
      'RESTORE TEST',
      'RETENTION',
    ],
    ...points.map((p) =>
      p.tier === 'snapshot'
        ? [
            p.snapshotId,
            'snapshot',
            p.target,
            p.createdAt,
            p.status,
            p.stateful ? 'stateful' : '',
            p.expiresAt ?? 'never',
            '-',
            '-',
            '-',
            '-',
            '-',
            'snapshot expiry',
          ]
        : [
            p.recoveryPointId,
            'offsite',
            p.target,
            p.createdAt,
            p.status,
            p.label ?? '',
            p.retention?.keep === false ? 'next prune' : (p.retention?.keptUntil ?? '-'),
            bytes(p.bytesRead),
            bytes(p.bytesNew),
            bytes(p.bytesStored),
            String(p.streams.length),
            lastRestoreTest(p.restoreTest),
            p.retention ? p.retention.reasons.join('; ') : '',
          ],
    ),
  ]);
}

export function scheduleText(s: SnapshotSchedule | null): string {
  if (!s) return 'no schedule';
  return [
    `every ${s.every}`,
    `expiry ${s.expiry ?? 'never'}`,
    ...(s.pattern ? [`pattern ${s.pattern}`] : []),
    ...(s.stopped ? ['also while stopped'] : []),
  ].join(', ');
}

export function snapshotsTable(targets: SnapshotTarget[]): string {
  const rows = targets.flatMap((t) => t.snapshots);
  const lines = [
    rows.length === 0
      ? 'no snapshots'
      : table([
          ['SNAPSHOT', 'TARGET', 'CREATED', 'EXPIRES', 'STATEFUL', 'AGENT'],
          ...rows.map((s) => [
            s.snapshotId,
            s.target,
            s.createdAt,
            s.expiresAt ?? 'never',
            s.stateful ? 'yes' : 'no',
            s.agent,
          ]),
        ]),
    '',
    table([['TARGET', 'SCHEDULE'], ...targets.map((t) => [t.target, scheduleText(t.schedule)])]),
  ];
  return lines.join('\n');
}

export function jobDetail(job: Job): string {
  const lines = [
    `job        ${job.jobId}`,
    `kind       ${job.kind.toLowerCase()}`,
    `target     ${job.target}${job.source ? ` (from ${job.source})` : ''}`,
    `agent      ${job.agent}`,
    `status     ${job.status}`,
    ...(job.kind === 'SNAPSHOT'
      ? [`snapshot   ${job.snapshot?.action ?? ''} ${job.recoveryPointId}`]
      : job.recoveryPointId
        ? [`point      ${job.recoveryPointId}`]
        : []),
    `created    ${job.createdAt}`,
  ];
  if (job.startedAt) lines.push(`started    ${job.startedAt}`);
  if (job.endedAt) lines.push(`ended      ${job.endedAt}`);
  if (job.progress) lines.push(`progress   ${progressLine(job)}`);
  if (job.error) lines.push(`error      ${job.error.name}: ${job.error.message}`);
  if (job.items && (job.items.length > 1 || !job.recoveryPointId)) {
    lines.push('', itemsTable(job.items));
  }
  return lines.join('\n');
}

/** One line of a job's agent log: when, how bad, which task (target and agent), what. */
export function logLineText(line: JobLogLine): string {
  return `${line.at} ${line.level.toUpperCase().padEnd(5)} ${line.target} (${line.agent}) ${line.event}${line.text ? ` ${line.text}` : ''}`;
}

/** What a job's agent log left out: the tasks' caps and the answer's own. */
export function jobLogNotes(log: JobLog): string[] {
  return [
    ...(log.omitted > 0 ? [`(${log.omitted} older lines not shown)`] : []),
    ...(log.dropped > 0
      ? [`(${log.dropped} lines past the agents' cap of 500 a task not kept)`]
      : []),
  ];
}

/** A prune job's outcome in words: what went (or, dry, would go), with why, and what it freed. */
export function pruneText(job: Job): string {
  const p = job.prune;
  if (!p) return `prune ${job.status}`;
  const lines = [
    p.dryRun
      ? `prune --dry-run: would delete ${p.pointsDeleted} recovery point(s) and ${p.packsFound} unreferenced pack(s) and repack ${p.packsRepacked ?? 0} pack(s) mostly garbage (copying ${bytes(p.bytesRewritten ?? 0)}), freeing about ${bytes(p.bytesFound)}`
      : `prune SUCCEEDED: deleted ${p.pointsDeleted} recovery point(s), ${p.packsDeleted} pack(s) (${p.chunksDeleted} unreferenced chunks; ${p.packsRepacked ?? 0} of the packs repacked, ${bytes(p.bytesRewritten ?? 0)} copied), freed ${bytes(p.bytesFreed)}`,
  ];
  if (p.uncommittedDeleted) {
    lines.push(
      `${p.dryRun ? 'would delete' : 'deleted'} ${p.uncommittedDeleted} manifest(s) of backups that ended without their point (cancelled after the agent's success, or refused by the commit)`,
    );
  }
  if (p.points.length > 0) {
    lines.push(
      table([
        ['POINT', 'TARGET', 'WHY'],
        ...p.points.map((x) => [x.recoveryPointId, x.target, x.reasons.join('; ')]),
      ]),
    );
  }
  for (const b of p.busy) {
    lines.push(
      `kept for now: ${b.recoveryPointId} is read by running job ${b.jobId}; the next prune deletes it`,
    );
  }
  if (p.waitedFor.length > 0) {
    lines.push(
      `the sweep waited for ${p.waitedFor.join(', ')} (running when the unreferenced packs were marked)`,
    );
  }
  return lines.join('\n');
}

/** A restore plan in words: the steps in order, what is read, and that nothing changed. */
export function planText(plan: RestorePlanAnswer): string {
  const lines = [
    `restore plan: ${plan.recoveryPointId} (${plan.source}) ${plan.inPlace ? 'in place onto' : 'to'} ${plan.target} on agent ${plan.agent}`,
    table(plan.steps.map((s) => [`  ${s.action}`, s.what, s.detail ?? ''])),
    `  reads ${bytes(plan.bytesRead)} from the repository (${plan.streams.length} stream${plan.streams.length === 1 ? '' : 's'})`,
    ...plan.notes.map((n) => `  note: ${n}`),
    'nothing has been changed; run the same command without --plan to restore',
  ];
  return lines.join('\n');
}

export function snapshotPlanText(plan: SnapshotRestorePlan): string {
  return [
    `snapshot restore plan: ${plan.target} reverted to ${plan.snapshot} on agent ${plan.agent} (${plan.stateful ? 'with' : 'without'} memory; afterwards ${plan.stateAfter})`,
    table(plan.steps.map((s) => [`  ${s.action}`, s.what, s.detail ?? ''])),
    ...plan.notes.map((n) => `  note: ${n}`),
    'nothing has been changed; run the same command without --plan to restore',
  ].join('\n');
}
