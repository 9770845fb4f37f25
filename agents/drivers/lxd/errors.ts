/**
 * Translation of LXD failures into Stowage's error classes, at the boundary. The client rejects
 * with LxdApiError (an HTTP answer or a failed operation, with LXD's own text) or with the
 * socket's error (`code`: ECONNREFUSED, ENOENT...) when lxd is unreachable.
 */
import {
  DriverError,
  NameTaken,
  StowageError,
  TargetNotFound,
  TransientError,
  isStowageError,
} from '../../../kernel/errors';
import { LxdApiError } from './client';

/** Socket-level failures that a retry after lxd (re)starts will fix. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

/** LXD says a name is in use with 409, or (inside an operation) only in its text. */
const NAME_CONFLICT = /already exists|already in use/i;

export function statusOf(err: unknown): number | undefined {
  return err instanceof LxdApiError ? err.status : undefined;
}

export function isNotFound(err: unknown): boolean {
  return statusOf(err) === 404;
}

/**
 * Turns any failure of an LXD call into a StowageError whose message says what was being done
 * (`action`), what LXD said, and how to fix it. StowageErrors pass through unchanged.
 */
export function translate(err: unknown, action: string, socketPath: string): StowageError {
  if (isStowageError(err)) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && UNREACHABLE.has(code)) {
    return new TransientError(
      `${action}: cannot reach lxd at ${socketPath} (${code}); start it (bash local/engines/setup-lxd.sh) ` +
        'or point the agent at the right socket',
      { cause: err },
    );
  }
  if (code === 'EACCES') {
    return new DriverError(
      `${action}: permission denied on ${socketPath}; run the agent as root or in lxd's group`,
      { cause: err },
    );
  }
  if (!(err instanceof LxdApiError)) {
    const said = err instanceof Error ? err.message : String(err);
    return new DriverError(`${action} failed: ${said}`, { cause: err });
  }
  if (err.status === 404) return new TargetNotFound(`${action}: ${err.message}`, { cause: err });
  if (err.status === 409 || NAME_CONFLICT.test(err.message)) {
    return new NameTaken(`${action}: ${err.message}`, { cause: err });
  }
  if (err.status === 502 || err.status === 503 || err.status === 504) {
    return new TransientError(
      `${action}: lxd is busy (HTTP ${err.status}: ${err.message}); retry later`,
      {
        cause: err,
      },
    );
  }
  return new DriverError(`${action}: lxd refused (${err.status}): ${err.message}`, { cause: err });
}
