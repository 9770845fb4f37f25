/**
 * Progress of one job, written to the catalog at most once per interval so a fast stream does
 * not turn into a write per chunk. The rate is measured over the last interval.
 */
import type { JobProgress } from '../../functions/core/model';

export type ProgressWrite = (progress: JobProgress) => Promise<void>;

export class ProgressReporter {
  private phase = 'starting';
  private bytesDone = 0;
  private lastBytes = 0;
  private lastAt = Date.now();
  private rate = 0;
  private timer?: NodeJS.Timeout;
  private pending: Promise<void> = Promise.resolve();

  constructor(
    private readonly write: ProgressWrite,
    private readonly intervalMs = 1000,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.push(), this.intervalMs);
    this.timer.unref?.();
    this.push();
  }

  setPhase(phase: string): void {
    this.phase = phase;
    this.push();
  }

  addBytes(n: number): void {
    this.bytesDone += n;
  }

  get total(): number {
    return this.bytesDone;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.pending;
  }

  private push(): void {
    const now = Date.now();
    const seconds = (now - this.lastAt) / 1000;
    if (seconds >= 0.5) {
      this.rate = Math.round((this.bytesDone - this.lastBytes) / seconds);
      this.lastBytes = this.bytesDone;
      this.lastAt = now;
    }
    const snapshot: JobProgress = {
      phase: this.phase,
      bytesDone: this.bytesDone,
      rate: this.rate,
      updatedAt: new Date(now).toISOString(),
    };
    // Progress is advisory: a failed write is dropped, the next interval writes again.
    this.pending = this.pending.then(() => this.write(snapshot)).catch(() => undefined);
  }
}
