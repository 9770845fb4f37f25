/**
 * Errors that cross a boundary (HTTP status, ASL `ErrorEquals`, SendTaskFailure) carry a literal
 * `name`: bundlers rename classes, so `constructor.name` can never be trusted.
 * `status` is the HTTP status the API answers with when the error reaches it.
 */
export type ErrorName =
  | 'ValidationError'
  | 'NotFoundError'
  | 'ConflictError'
  | 'TargetNotFound'
  | 'PointNotFound'
  | 'SnapshotNotFound'
  | 'Unsupported'
  | 'NameTaken'
  | 'TransientError'
  | 'DriverError'
  | 'AgentUnavailable'
  | 'IntegrityError'
  | 'UnknownTask'
  | 'Cancelled'
  | 'InternalError';

export class StowageError extends Error {
  override readonly name: ErrorName;
  readonly status: number;
  constructor(name: ErrorName, status: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = name;
    this.status = status;
  }
}

export class ValidationError extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ValidationError', 400, message, options);
  }
}

export class NotFoundError extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('NotFoundError', 404, message, options);
  }
}

export class ConflictError extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ConflictError', 409, message, options);
  }
}

/** The platform has no such container / instance / VM (raised by the API and by drivers). */
export class TargetNotFound extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('TargetNotFound', 404, message, options);
  }
}

export class PointNotFound extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PointNotFound', 404, message, options);
  }
}

/** The target has no local snapshot of that name (or it expired and was deleted). */
export class SnapshotNotFound extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('SnapshotNotFound', 404, message, options);
  }
}

/**
 * The target or its engine cannot do what was asked (a platform without local snapshots, a
 * stateful snapshot where the host cannot checkpoint). Checked before anything changes.
 */
export class Unsupported extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('Unsupported', 422, message, options);
  }
}

/** A restore would overwrite something that exists and the request did not ask for in-place. */
export class NameTaken extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('NameTaken', 409, message, options);
  }
}

/** Worth retrying as is: a dropped connection, a throttled call, a busy engine. */
export class TransientError extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('TransientError', 503, message, options);
  }
}

/** The platform engine refused or failed an operation in a way a retry will not fix. */
export class DriverError extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('DriverError', 502, message, options);
  }
}

export class AgentUnavailable extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('AgentUnavailable', 503, message, options);
  }
}

/** Stored bytes are missing or differ from what was recorded: never hand them on. */
export class IntegrityError extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('IntegrityError', 500, message, options);
  }
}

/** A task message this agent cannot run: a kind it does not know (a newer control plane). */
export class UnknownTask extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('UnknownTask', 400, message, options);
  }
}

/** The job was cancelled (or ended) while its task ran: the task stops and undoes what it did. */
export class Cancelled extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('Cancelled', 409, message, options);
  }
}

export function isStowageError(err: unknown): err is StowageError {
  return err instanceof StowageError;
}

/** The `{ name, message }` pair that travels through SendTaskFailure and into the catalog. */
export interface ErrorRecord {
  name: string;
  message: string;
}
