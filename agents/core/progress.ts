/**
 * Progress of one job, written to the catalog at most once per interval so a fast stream does
 * not turn into a write per chunk (a phase change is written at once). The rate is measured over
 * the last interval; the ETA comes from it and the total the driver announced, if any.
 */
import type { JobProgress } from '../../kernel/model';

export type ProgressWrite = (progress: JobProgress) => Promise<void>;

/** Where the backup's new and stored byte counts come from (the repository writer's stats). */
export interface StoreCounters {
  bytesNew: number;
  bytesStored: number;
}

export class ProgressReporter {
  private phase = 'starting';
  private bytesDone = 0;
  private bytesTotal?: number;
  private counters?: StoreCounters;
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

  expect(total: number): void {
    this.bytesTotal = total;
  }

  /** Reports the store's counters (new, stored) with every write from now on. */
  track(counters: StoreCounters): void {
    this.counters = counters;
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
    if (this.counters) {
      snapshot.bytesNew = this.counters.bytesNew;
      snapshot.bytesStored = this.counters.bytesStored;
    }
    if (this.bytesTotal !== undefined) {
      snapshot.bytesTotal = this.bytesTotal;
      if (this.rate > 0) {
        snapshot.etaSeconds = Math.max(
          0,
          Math.round((this.bytesTotal - this.bytesDone) / this.rate),
        );
      }
    }
    // Progress is advisory: a failed write is dropped, the next interval writes again.
    this.pending = this.pending.then(() => this.write(snapshot)).catch(() => undefined);
  }
}
