/**
 * A running job's progress as the CLI shows it while it waits (`--wait`, `job --follow`), always
 * on stderr so stdout holds only the result (with `--json`, the one JSON document).
 *
 * On a terminal one line is redrawn in place: a bar when the job's size is known, the bytes
 * moved, the rate and the ETA, and what the agent is doing. Anywhere else (a pipe, a log file,
 * CI) each change is one plain line, as a log reader wants it: no carriage returns, no escapes.
 */
import type { Job, JobProgress } from '../kernel/model';
import { bytes, duration, progressLine } from './format';

/** What the bar and the figures are drawn from: the job's own progress, or its items' summed. */
interface Figures {
  phase: string;
  done: number;
  total?: number;
  rate: number;
  eta?: number;
  /** `1 of 3 targets done (1 failed)` for a job of several targets. */
  items?: string;
}

function figuresOf(job: Job): Figures | undefined {
  const items = job.items && job.items.length > 1 ? job.items : undefined;
  if (!items) {
    const p = job.progress;
    return p ? fromProgress(p) : undefined;
  }
  const ended = items.filter((i) => i.status === 'COMPLETED' || i.status === 'FAILED').length;
  const failed = items.filter((i) => i.status === 'FAILED').length;
  const running = items.filter((i) => i.status === 'RUNNING' && i.progress);
  const progresses = items.map((i) => i.progress).filter((p): p is JobProgress => !!p);
  const done = progresses.reduce((n, p) => n + p.bytesDone, 0);
  // The sum has a total only when every item's is known (pending ones included: they have none).
  const totals = items.map((i) => i.progress?.bytesTotal);
  const total = totals.every((t) => t !== undefined)
    ? totals.reduce((n, t) => n! + t!, 0)
    : undefined;
  const rate = running.reduce((n, i) => n + i.progress!.rate, 0);
  return {
    phase: running.map((i) => `${i.target}: ${i.progress!.phase}`).join('; '),
    done,
    ...(total ? { total } : {}),
    rate,
    ...(total && rate > 0 ? { eta: Math.ceil(Math.max(0, total - done) / rate) } : {}),
    items: `${ended} of ${items.length} targets done${failed ? ` (${failed} failed)` : ''}`,
  };
}

function fromProgress(p: JobProgress): Figures {
  return {
    phase: p.phase,
    done: p.bytesDone,
    ...(p.bytesTotal ? { total: p.bytesTotal } : {}),
    rate: p.rate,
    ...(p.bytesTotal && p.etaSeconds !== undefined && p.rate > 0 ? { eta: p.etaSeconds } : {}),
  };
}

/** `[#########-----------]`: `width` cells between the brackets, filled by the done fraction. */
export function bar(fraction: number, width: number): string {
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  const filled = Math.round(f * width);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
}

/**
 * The one line a terminal shows for a running job, at most `columns` characters:
 * `[####------] 42% 1.1 GiB of 2.6 GiB, 85.3 MiB/s, ETA 17s  volume data`. Without a known
 * size there is no bar and no ETA; a job with nothing reported yet shows its status.
 */
export function progressBarLine(job: Job, columns: number): string {
  const status = job.status.toLowerCase();
  const f = job.kind === 'SNAPSHOT' ? undefined : figuresOf(job);
  if (!f) {
    const phase = job.progress?.phase;
    return fit(`${status}${phase ? `: ${phase}` : ''}`, columns);
  }
  const head = f.total
    ? `${bar(f.done / f.total, Math.max(10, Math.min(30, columns - 60)))} ${Math.floor(Math.min(1, f.done / f.total) * 100)}% ${bytes(f.done)} of ${bytes(f.total)}`
    : `${status}: ${bytes(f.done)}`;
  const figures = [
    head,
    ...(f.rate > 0 ? [`${bytes(f.rate)}/s`] : []),
    ...(f.eta !== undefined ? [`ETA ${duration(f.eta)}`] : []),
  ].join(', ');
  const tail = [f.items, f.phase].filter(Boolean).join('; ');
  return fit(tail ? `${figures}  ${tail}` : figures, columns);
}

/** Cut to `columns` characters (a wrapped line could not be redrawn in place). */
function fit(line: string, columns: number): string {
  const max = Math.max(20, columns - 1);
  return line.length <= max ? line : `${line.slice(0, max - 1)}…`;
}

/** Where progress goes: stderr, or a stand-in in tests. */
export interface ProgressSink {
  write(text: string): unknown;
  /** A terminal: the line is redrawn in place. */
  isTTY?: boolean;
  /** Its width; 0 or absent (a terminal that does not say, as under `script`) counts as 80. */
  columns?: number;
}

/**
 * Shows a job's progress on `sink` as it is polled: `update(job)` after every poll, `end()` once
 * the job ended (or the wait was given up), which leaves the cursor on a fresh line.
 */
export class ProgressReporter {
  private last = '';
  private lastPhase = '';
  private lastAt = -Infinity;
  private drawn = false;

  /**
   * `plainEveryMs`: off a terminal, a line whose only news is the byte count waits this long
   * after the one before (a new phase or status is written at once), so a log gets a line
   * every few seconds, not every poll.
   */
  constructor(
    private readonly sink: ProgressSink,
    private readonly jobId: string,
    private readonly plainEveryMs = 5000,
    private readonly now: () => number = Date.now,
  ) {}

  update(job: Job): void {
    if (this.sink.isTTY) {
      const line = progressBarLine(job, this.sink.columns || 80);
      if (line === this.last) return;
      // Carriage return, the line, then erase what a longer previous line left.
      this.sink.write(`\r${line}\x1b[K`);
      this.last = line;
      this.drawn = true;
      return;
    }
    const line = `${this.jobId} ${progressLine(job)}`;
    const phase = [
      job.status,
      job.progress?.phase,
      ...(job.items ?? []).map((i) => `${i.status} ${i.progress?.phase ?? ''}`),
    ].join('|');
    if (line === this.last) return;
    if (phase === this.lastPhase && this.now() - this.lastAt < this.plainEveryMs) return;
    this.sink.write(`${line}\n`);
    this.last = line;
    this.lastPhase = phase;
    this.lastAt = this.now();
  }

  end(): void {
    if (this.drawn) this.sink.write('\n');
    this.drawn = false;
  }
}
