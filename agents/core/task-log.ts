/**
 * A task's log lines for its job: what the agent logs while it runs a task (the worker's and the
 * runner's lines, the driver's steps, hooks, warnings) is also kept, bounded, and written to the
 * catalog, so `GET /jobs/{id}/log`, `stowage job ID --log` and the console's job page show it,
 * while the task runs and after.
 *
 * Bounds: the first TASK_LOG_LIMITS.lines lines of a task (info and above), each cut at
 * `lineChars` characters; past the cap lines are only counted (`dropped`). Lines gather until the
 * task is claimed (`start`; a task never claimed writes nothing), then go out every `flushMs` in
 * batches of at most `batchLines` (one catalog item each, written once by claim and `seq`).
 * A batch that fails to go out is retried as it was, never re-cut, so a write that did land and
 * is retried adds nothing twice. Writing never holds the task up: a failure is reported to
 * `onWriteError` and retried at the next flush, and `close` tries three more times.
 *
 * Secrets: a field whose name says it holds one (password, secret, token, credentials, keys,
 * authorization, cookies, sessions) is written as `***`, at any depth, and in any text a value
 * after `password=`, `token:`, `--password ` and the like, a URL's `user:password@` and a
 * `Bearer`/`Basic` credential are masked, before a line is cut short.
 */
import { teeLogger, type Level, type Logger } from '../../kernel/logger';
import type { TaskLogBatch, TaskLogLine } from '../../kernel/model';

export const TASK_LOG_LIMITS = {
  /** Lines kept per task (one claim); a retried task starts again under its new claim. */
  lines: 500,
  /** Characters per line: 500 lines of 500 stay far below a catalog item's 400 KB. */
  lineChars: 500,
  /** Lines per catalog item. */
  batchLines: 100,
  /** How often gathered lines are written while the task runs. */
  flushMs: 1000,
};

export type TaskLogLimits = typeof TASK_LOG_LIMITS;

/** Keys every line of the job would repeat (the job's id, target, kind and point). */
const JOB_KEYS = new Set(['jobId', 'target', 'kind', 'recoveryPointId', 'executionArn']);
/** Keys whose value leads the line as plain words. */
const LEAD_KEYS = ['step', 'phase', 'reason'];

const SECRET_KEY =
  /pass(word|wd|phrase)?$|^pwd$|secret|token|credential|authori[sz]ation|cookie|session|private.?key|api.?key|access.?key/i;
const MASK = '***';

/** Secrets that show in text by their form: each pattern's first group is kept. */
const SECRET_IN_TEXT: ReadonlyArray<RegExp> = [
  // scheme://user:password@host
  /(\b[a-z][a-z0-9+.-]*:\/\/[^\s:@/]+:)[^\s@/]+(?=@)/gi,
  // Authorization: Bearer X / Basic X
  /(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/-]{6,}=*/gi,
  // --password X, --password=X, -token X (a flag that takes a secret; wherever it stands)
  /(--?(?:password|passwd|pass|pwd|secret|token|api-?key|access-?key)(?:=|\s+))[^\s"']+/gi,
  // password=X, "token": "X", secret: X, AWS_SECRET_ACCESS_KEY=X
  /((?:pass(?:word|wd|phrase)?|pwd|secret(?:[-_]?access[-_]?key)?|token|api[-_]?key|access[-_]?key|credentials?)["']?\s*[=:]\s*["']?)[^\s"'&,;]+/gi,
];

/** `text` with the secrets SECRET_IN_TEXT recognises masked. */
export function maskSecrets(text: string): string {
  let out = text;
  for (const pattern of SECRET_IN_TEXT) out = out.replace(pattern, `$1${MASK}`);
  return out;
}

/** A JSON.stringify replacer that masks the values of secret-named keys at any depth. */
function maskingReplacer(key: string, value: unknown): unknown {
  if (key !== '' && SECRET_KEY.test(key) && value !== undefined && value !== null) return MASK;
  if (value instanceof Error) return maskSecrets(`${value.name}: ${value.message}`);
  if (typeof value === 'string') return maskSecrets(value);
  return value;
}

function render(key: string, value: unknown): string {
  if (SECRET_KEY.test(key)) return MASK;
  if (value instanceof Error) return JSON.stringify(maskSecrets(`${value.name}: ${value.message}`));
  if (typeof value === 'string') {
    // Masked before it is quoted: quoting would put a backslash between a label and its secret.
    const masked = maskSecrets(value);
    return /[\s"=]/.test(masked) || masked === '' ? JSON.stringify(masked) : masked;
  }
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  const error = value as { name?: unknown; message?: unknown } | null;
  if (error && typeof error.name === 'string' && typeof error.message === 'string') {
    return JSON.stringify(maskSecrets(`${error.name}: ${error.message}`));
  }
  return JSON.stringify(value, maskingReplacer) ?? String(value);
}

/**
 * One line's text from a record's fields: the step, phase or reason first as plain words, then
 * the other fields as `key=value` (strings with spaces quoted, objects as JSON), the keys the job
 * already says left out, secrets masked, cut at `maxChars` (ending in `…`).
 */
export function formatLogFields(fields: Record<string, unknown>, maxChars: number): string {
  const words: string[] = [];
  const lead = LEAD_KEYS.find((k) => typeof fields[k] === 'string' && fields[k] !== '');
  if (lead) words.push(fields[lead] as string);
  for (const [key, value] of Object.entries(fields)) {
    if (key === lead || JOB_KEYS.has(key) || value === undefined) continue;
    words.push(`${key}=${render(key, value)}`);
  }
  const text = maskSecrets(words.join(' ').replace(/[\r\n]+/g, ' ⏎ '));
  return text.length > maxChars ? `${text.slice(0, Math.max(0, maxChars - 1))}…` : text;
}

export interface TaskLogOptions {
  claimId: string;
  agent: string;
  target: string;
  /** Stores one batch; must be idempotent per (claimId, seq) (Catalog.appendTaskLog). */
  write(batch: TaskLogBatch): Promise<void>;
  /** A write failed (it is retried at the next flush). */
  onWriteError?(err: unknown): void;
  limits?: Partial<TaskLogLimits>;
  now?: () => Date;
}

export class TaskLog {
  private readonly limits: TaskLogLimits;
  private readonly now: () => Date;
  private pending: TaskLogLine[] = [];
  private kept = 0;
  private dropped = 0;
  private droppedWritten = 0;
  private seq = 0;
  /** The batch on its way out: retried as it is until it lands. */
  private current?: TaskLogBatch;
  private started = false;
  private timer?: ReturnType<typeof setInterval>;
  private flushing?: Promise<void>;

  constructor(private readonly options: TaskLogOptions) {
    this.limits = { ...TASK_LOG_LIMITS, ...options.limits };
    this.now = options.now ?? (() => new Date());
  }

  /** A logger that logs through `base` and keeps a copy of each line here. */
  logger(base: Logger): Logger {
    return teeLogger(base, (level, event, fields) => this.record(level, event, fields));
  }

  /** Keeps one line (info and above), or counts it once the task has its fill. */
  record(level: Level, event: string, fields: Record<string, unknown>): void {
    if (level === 'debug') return;
    if (this.kept >= this.limits.lines) {
      this.dropped++;
      return;
    }
    this.kept++;
    this.pending.push({
      at: this.now().toISOString(),
      level,
      event,
      text: formatLogFields(fields, this.limits.lineChars),
    });
  }

  /** The task is claimed: writes what gathered, then every `flushMs` until `close`. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.timer = setInterval(() => void this.flush(), this.limits.flushMs);
    this.timer.unref?.();
    void this.flush();
  }

  /**
   * Writes every line logged before the call (after a write under way, if any); resolves when
   * they are out or the write failed (then they wait for the next flush), never rejects.
   */
  async flush(): Promise<void> {
    if (!this.started) return;
    await this.flushing;
    this.flushing ??= this.drain()
      .catch((err: unknown) => this.options.onWriteError?.(err))
      .finally(() => {
        this.flushing = undefined;
      });
    await this.flushing;
  }

  /**
   * Stops the timer and writes the rest (three more tries, 0.5 s and 1 s apart). A log that was
   * never started (the task was not claimed) writes nothing.
   */
  async close(): Promise<void> {
    clearInterval(this.timer);
    if (!this.started) return;
    for (let attempt = 1; ; attempt++) {
      await this.flush();
      if (this.drained() || attempt === 3) return;
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }

  private drained(): boolean {
    return !this.current && this.pending.length === 0 && this.dropped === this.droppedWritten;
  }

  private async drain(): Promise<void> {
    while (!this.drained()) {
      if (!this.current) {
        const { claimId, agent, target } = this.options;
        this.current = {
          claimId,
          seq: this.seq++,
          agent,
          target,
          lines: this.pending.splice(0, this.limits.batchLines),
          ...(this.dropped > 0 ? { dropped: this.dropped } : {}),
        };
      }
      await this.options.write(this.current);
      this.droppedWritten = this.current.dropped ?? 0;
      this.current = undefined;
    }
  }
}
