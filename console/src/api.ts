/**
 * The console's only way to Stowage: the HTTP API. In local mode it is at the page's own origin
 * (local mode serves both), with the API token as `Authorization: Bearer`; in AWS the cloud
 * session (cloud/session.ts) replaces the transport with SigV4-signed calls to API Gateway.
 *
 * Sign-in: `stowage start` prints a link `http://127.0.0.1:4780/#token=<token>`. A URL fragment
 * never leaves the browser (no request line, no Referer, no server log carries it); the page
 * moves it into sessionStorage (this tab only, gone when the tab closes) and drops it from the
 * address bar at once.
 */
import type { AgentRecord, Job, JobLog, Policy, RecoveryPoint } from '../../kernel/model';

const TOKEN_KEY = 'stowage.token';

/** Takes a `#token=...` fragment into sessionStorage; answers whether one was taken. */
export function signInFromFragment(): boolean {
  const m = /^#token=([A-Za-z0-9_~.+/=-]+)$/.exec(location.hash);
  if (!m) return false;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]!));
  history.replaceState(null, '', `${location.pathname}#/`);
  return true;
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

export function hasToken(): boolean {
  return sessionStorage.getItem(TOKEN_KEY) !== null;
}

/** An answer of the API other than 2xx: its status, error name and message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Sends one request to the API: `path` is the API's path with its query, `body` JSON text. */
export type Transport = (method: string, path: string, body?: string) => Promise<Response>;

/** Local mode's: the page's own origin, with the API token. */
const tokenTransport: Transport = (method, path, body) => {
  const headers: Record<string, string> = { accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  return fetch(path, {
    method,
    headers,
    credentials: 'omit',
    cache: 'no-store',
    ...(body !== undefined ? { body } : {}),
  });
};

let transport: Transport = tokenTransport;

/** Replaces how requests are sent (the cloud session's signed calls). */
export function useTransport(next: Transport): void {
  transport = next;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await transport(method, path, body !== undefined ? JSON.stringify(body) : undefined);
  } catch (err) {
    if (err instanceof Error && err.name === 'SignInError') {
      throw new ApiError(401, 'SignInError', err.message);
    }
    throw new ApiError(
      0,
      'Unreachable',
      `the Stowage API does not answer (${(err as Error).message})`,
    );
  }
  const text = await res.text();
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = { message: text };
  }
  if (!res.ok) {
    // The API's own errors carry `message`; API Gateway's refusals (a bad signature, a method
    // the role may not call) carry `Message` or `message` only.
    const { error, message, Message } = (data ?? {}) as {
      error?: string;
      message?: string;
      Message?: string;
    };
    throw new ApiError(
      res.status,
      error ?? `HTTP${res.status}`,
      message ?? Message ?? `HTTP ${res.status}`,
    );
  }
  return data as T;
}

const q = encodeURIComponent;

/** A point of either tier as GET /points lists it. */
export type ListedPoint =
  | (RecoveryPoint & {
      tier: 'offsite';
      retention?: { keep: boolean; reasons: string[]; keptUntil?: string };
    })
  | {
      tier: 'snapshot';
      recoveryPointId: string;
      target: string;
      agent: string;
      createdAt: string;
      status: string;
      expiresAt?: string;
      stateful?: boolean;
    };

export interface WorkflowEvent {
  id: number;
  timestamp: string;
  type: string;
  state?: string;
  error?: string;
  cause?: string;
}

export interface Accepted {
  jobId: string;
  status: string;
  target: string;
  recoveryPointId?: string;
}

/** What POST /restores with "plan": true answers: the steps, in order, and the bytes read. */
export interface RestorePlan {
  plan: true;
  recoveryPointId: string;
  source: string;
  target: string;
  agent: string;
  inPlace: boolean;
  bytesRead: number;
  streams: Array<{ name: string; size: number }>;
  steps: Array<{ action: string; what: string; detail?: string }>;
  notes: string[];
}

export const Api = {
  jobs: (limit = 100) => api<Job[]>('GET', `/jobs?limit=${limit}`),
  job: (id: string) => api<Job>('GET', `/jobs/${q(id)}`),
  history: (id: string) =>
    api<{ jobId: string; executionArn?: string; events: WorkflowEvent[] }>(
      'GET',
      `/jobs/${q(id)}/history`,
    ),
  log: (id: string) => api<JobLog>('GET', `/jobs/${q(id)}/log`),
  cancel: (id: string) => api<unknown>('POST', `/jobs/${q(id)}/cancellation`, {}),
  agents: () => api<AgentRecord[]>('GET', '/agents'),
  points: (target?: string, limit = 1000) =>
    api<ListedPoint[]>('GET', `/points?limit=${limit}${target ? `&target=${q(target)}` : ''}`),
  point: (id: string) => api<RecoveryPoint>('GET', `/points/${q(id)}`),
  restore: (body: Record<string, unknown>) => api<Accepted>('POST', '/restores', body),
  planRestore: (body: Record<string, unknown>) =>
    api<RestorePlan>('POST', '/restores', { ...body, plan: true }),
  backup: (body: Record<string, unknown>) => api<Accepted>('POST', '/backups', body),
  policies: () => api<Policy[]>('GET', '/policies'),
  createPolicy: (body: Record<string, unknown>) => api<Policy>('POST', '/policies', body),
  updatePolicy: (name: string, body: Record<string, unknown>) =>
    api<Policy>('PATCH', `/policies/${q(name)}`, body),
  deletePolicy: (name: string) => api<unknown>('DELETE', `/policies/${q(name)}`),
  runPolicy: (name: string) => api<Accepted[] | Accepted>('POST', `/policies/${q(name)}/runs`, {}),
};
