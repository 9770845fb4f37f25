/** Human output of the CLI: tables and sizes. `--json` bypasses all of this. */
import type { Job, JobItem, RecoveryPoint } from '../functions/core/model';

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

export function pointsTable(points: RecoveryPoint[]): string {
  return table([
    ['POINT', 'TARGET', 'CREATED', 'STATUS', 'LABEL', 'SIZE', 'NEW', 'STORED', 'STREAMS'],
    ...points.map((p) => [
      p.recoveryPointId,
      p.target,
      p.createdAt,
      p.status,
      p.label ?? '',
      bytes(p.bytesRead),
      bytes(p.bytesNew),
      bytes(p.bytesStored),
      String(p.streams.length),
    ]),
  ]);
}

export function jobDetail(job: Job): string {
  const lines = [
    `job        ${job.jobId}`,
    `kind       ${job.kind.toLowerCase()}`,
    `target     ${job.target}${job.source ? ` (from ${job.source})` : ''}`,
    `agent      ${job.agent}`,
    `status     ${job.status}`,
    ...(job.recoveryPointId ? [`point      ${job.recoveryPointId}`] : []),
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
