/**
 * JSON log lines: `{ level, time, service, version, event, ...keys }`. Per-job keys are bound
 * with `child`. Never pass secrets or payload bytes.
 */
export const LogEvent = {
  apiRequest: 'api.request',
  apiError: 'api.error',
  jobRecorded: 'job.recorded',
  jobFailed: 'job.failed',
  pointCommitted: 'point.committed',
  taskReceived: 'agent.task.received',
  taskSucceeded: 'agent.task.succeeded',
  taskFailed: 'agent.task.failed',
  taskAbandoned: 'agent.task.abandoned',
  pollError: 'agent.poll.error',
  inventoryPublished: 'agent.inventory.published',
  executionStarted: 'sfn.execution.started',
  executionEnded: 'sfn.execution.ended',
  localReady: 'local.ready',
  driverStep: 'driver.step',
} as const;

export type Level = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(event: string, fields?: Record<string, unknown>): void;
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
  child(keys: Record<string, unknown>): Logger;
}

export interface LoggerOptions {
  service: string;
  version?: string;
  level?: Level;
  write?: (line: string) => void;
}

export function createLogger(options: LoggerOptions, keys: Record<string, unknown> = {}): Logger {
  const threshold = LEVELS[options.level ?? 'info'];
  const write = options.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const emit = (level: Level, event: string, fields?: Record<string, unknown>) => {
    if (LEVELS[level] < threshold) return;
    const record: Record<string, unknown> = {
      level,
      time: new Date().toISOString(),
      service: options.service,
      version: options.version ?? '0.1.0',
      event,
      ...keys,
      ...fields,
    };
    if (record.error instanceof Error) {
      record.error = { name: record.error.name, message: record.error.message };
    }
    write(JSON.stringify(record));
  };
  return {
    debug: (e, f) => emit('debug', e, f),
    info: (e, f) => emit('info', e, f),
    warn: (e, f) => emit('warn', e, f),
    error: (e, f) => emit('error', e, f),
    child: (more) => createLogger(options, { ...keys, ...more }),
  };
}

/** A logger that drops everything: for tests and for callers that take an optional logger. */
export const silentLogger: Logger = createLogger({ service: 'silent', write: () => undefined });

/** Receives a copy of what a tee'd logger logs (teeLogger). */
export type LogSink = (level: Level, event: string, fields: Record<string, unknown>) => void;

/**
 * A logger that logs through `base` and hands a copy of every record to `sink`: the call's
 * fields with the keys its children added (not `base`'s own keys). The agent keeps a task's log
 * lines for the job this way (agents/core/task-log.ts). A sink that throws does not stop the log.
 */
export function teeLogger(base: Logger, sink: LogSink, keys: Record<string, unknown> = {}): Logger {
  const emit = (level: Level, event: string, fields?: Record<string, unknown>) => {
    base[level](event, fields);
    try {
      sink(level, event, { ...keys, ...fields });
    } catch {
      // The copy is a courtesy; the log line itself went out.
    }
  };
  return {
    debug: (e, f) => emit('debug', e, f),
    info: (e, f) => emit('info', e, f),
    warn: (e, f) => emit('warn', e, f),
    error: (e, f) => emit('error', e, f),
    child: (more) => teeLogger(base.child(more), sink, { ...keys, ...more }),
  };
}
