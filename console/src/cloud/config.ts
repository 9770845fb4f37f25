/**
 * Which mode the console runs in, from `/config.json` on its own origin: in AWS the stack
 * deploys one with `"mode": "cloud"` and its own ids (cdk/constructs/web-console.ts); local mode
 * answers `{"mode": "local"}` (local/console-files.ts). Anything else (no file, not JSON, an
 * unknown mode, a missing field) is local mode, the API-token sign-in.
 */
export interface CloudConfig {
  mode: 'cloud';
  region: string;
  /** The API stage's URL, e.g. https://abc.execute-api.eu-west-1.amazonaws.com/prod/ */
  apiUrl: string;
  userPoolId: string;
  userPoolClientId: string;
  identityPoolId: string;
  /** Cognito's hosted sign-in domain, e.g. https://x.auth.eu-west-1.amazoncognito.com */
  authDomain: string;
}

const FIELDS = [
  'region',
  'apiUrl',
  'userPoolId',
  'userPoolClientId',
  'identityPoolId',
  'authDomain',
] as const;

/** The cloud configuration in `value`, or undefined when it is not one. */
export function cloudConfig(value: unknown): CloudConfig | undefined {
  if (!value || typeof value !== 'object') return undefined;
  const v = value as Record<string, unknown>;
  if (v.mode !== 'cloud') return undefined;
  for (const field of FIELDS) {
    if (typeof v[field] !== 'string' || v[field] === '') return undefined;
  }
  for (const field of ['apiUrl', 'authDomain'] as const) {
    if (!(v[field] as string).startsWith('https://')) return undefined;
  }
  return v as unknown as CloudConfig;
}

/** Reads /config.json; undefined means local mode. */
export async function readCloudConfig(): Promise<CloudConfig | undefined> {
  try {
    const res = await fetch('/config.json', { cache: 'no-store', credentials: 'omit' });
    if (!res.ok) return undefined;
    return cloudConfig(await res.json());
  } catch {
    return undefined;
  }
}
