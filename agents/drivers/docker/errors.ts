/**
 * Translation of dockerode failures into Stowage's error classes, at the boundary. dockerode
 * rejects with a plain Error carrying `statusCode` and `json` (dockerd's `{ message }`) for HTTP
 * answers, and with the socket error (`code`: ECONNREFUSED, ENOENT...) when dockerd is unreachable.
 */
import { DriverError, StowageError, TransientError, isStowageError } from '../../../kernel/errors';

/** Socket-level failures that a retry after dockerd (re)starts will fix. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

/** The HTTP status dockerd answered with, if the failure was an HTTP answer. */
export function statusOf(err: unknown): number | undefined {
  const status = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === 'number' ? status : undefined;
}

/** dockerd's own message (`{"message": ...}`) rather than dockerode's "(HTTP code 404) ..." prefix. */
export function dockerMessage(err: unknown): string {
  const json = (err as { json?: unknown } | null)?.json;
  if (
    json &&
    typeof json === 'object' &&
    typeof (json as { message?: unknown }).message === 'string'
  ) {
    return (json as { message: string }).message;
  }
  if (Buffer.isBuffer(json)) {
    const text = json.toString('utf8').trim();
    if (text) return text;
  }
  return err instanceof Error ? err.message.trim() : String(err);
}

/**
 * Turns any failure of a dockerd call into a StowageError whose message says what was being
 * done (`action`), what dockerd said, and how to fix it. StowageErrors pass through unchanged.
 */
export function translate(err: unknown, action: string, socketPath: string): StowageError {
  if (isStowageError(err)) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && UNREACHABLE.has(code)) {
    return new TransientError(
      `${action}: cannot reach dockerd at ${socketPath} (${code}); start it (bash local/engines/setup.sh) ` +
        'or point the agent at the right socket',
      { cause: err },
    );
  }
  if (code === 'EACCES') {
    return new DriverError(
      `${action}: permission denied on ${socketPath}; run the agent as root or as a member of the docker group`,
      { cause: err },
    );
  }
  const status = statusOf(err);
  const said = dockerMessage(err);
  if (status === 502 || status === 503 || status === 504) {
    return new TransientError(`${action}: dockerd is busy (HTTP ${status}: ${said}); retry later`, {
      cause: err,
    });
  }
  if (status === undefined) return new DriverError(`${action} failed: ${said}`, { cause: err });
  return new DriverError(`${action}: dockerd refused (HTTP ${status}): ${said}`, { cause: err });
}
