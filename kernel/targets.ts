import { ValidationError } from './errors';

/**
 * A target is written `PLATFORM:NAME[@AGENT]` (docs: DESIGN "The user's interface").
 * Platforms are listed here even before their drivers exist, so a target for a platform the
 * agents do not serve yet is reported as "no agent serves it" rather than "unknown platform".
 */
export const PLATFORMS = [
  'docker',
  'docker-compose',
  'lxd',
  'lxd-volume',
  'lxd-server',
  'vsphere',
  'vapp',
  'path',
] as const;
export type Platform = (typeof PLATFORMS)[number];

export interface TargetRef {
  platform: Platform;
  name: string;
  /** The agent (site) that sees the target; absent when the caller lets Stowage find it. */
  agent?: string;
}

const AGENT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/**
 * Platforms whose targets agents cannot list (any absolute path on the host may be one): the API
 * cannot check them against the inventory, so the agent reports TargetNotFound / NameTaken.
 */
const UNLISTED_PLATFORMS: readonly Platform[] = ['path'];

export function isListedPlatform(platform: Platform): boolean {
  return !UNLISTED_PLATFORMS.includes(platform);
}

export function isPlatform(value: string): value is Platform {
  return (PLATFORMS as readonly string[]).includes(value);
}

export function parseTarget(text: string): TargetRef {
  const raw = text.trim();
  const colon = raw.indexOf(':');
  if (colon <= 0) {
    throw new ValidationError(
      `target "${text}" is not of the form PLATFORM:NAME (for example docker:web); platforms: ${PLATFORMS.join(', ')}`,
    );
  }
  const platform = raw.slice(0, colon);
  if (!isPlatform(platform)) {
    throw new ValidationError(
      `unknown platform "${platform}" in target "${text}"; use one of: ${PLATFORMS.join(', ')}`,
    );
  }
  let name = raw.slice(colon + 1);
  let agent: string | undefined;
  const at = name.lastIndexOf('@');
  if (at >= 0) {
    agent = name.slice(at + 1);
    name = name.slice(0, at);
    if (!AGENT_NAME.test(agent)) {
      throw new ValidationError(
        `agent "${agent}" in target "${text}" is not a valid agent name (letters, digits, . _ -)`,
      );
    }
  }
  if (name.length === 0) {
    throw new ValidationError(`target "${text}" has no name after "${platform}:"`);
  }
  return agent === undefined ? { platform, name } : { platform, name, agent };
}

/**
 * LXD's rules for a custom volume target, `lxd-volume:POOL/NAME`: a pool name has no slash or
 * white space and does not start with a dash; a volume name has no slash or white space and is
 * not `.` or `..` (LXD's storage/drivers ValidVolumeName; its snapshots are `NAME/SNAP`, hence
 * no slash).
 */
export function splitVolumeName(name: string): { pool: string; volume: string } {
  const slash = name.indexOf('/');
  const example = 'for example lxd-volume:default/data';
  if (slash < 0) {
    throw new ValidationError(
      `lxd-volume target "${name}" names no pool: write POOL/NAME (${example})`,
    );
  }
  const pool = name.slice(0, slash);
  const volume = name.slice(slash + 1);
  if (!isValidPoolName(pool)) {
    throw new ValidationError(
      `"${pool}" is not a valid LXD storage pool name (no slash or white space, not starting with -; ${example})`,
    );
  }
  if (!isValidVolumeName(volume)) {
    throw new ValidationError(
      `"${volume}" is not a valid LXD custom volume name (not empty, no slash or white space, not . or ..; ${example})`,
    );
  }
  return { pool, volume };
}

export function isValidPoolName(pool: string): boolean {
  return pool.length > 0 && !pool.startsWith('-') && !/[/\s]/.test(pool);
}

export function isValidVolumeName(volume: string): boolean {
  return volume.length > 0 && volume !== '.' && volume !== '..' && !/[/\s]/.test(volume);
}

/**
 * Checks a target's name against its platform's own rules where Stowage knows them, so a bad
 * name is refused before any workflow starts (parseTarget checks only the syntax).
 */
export function checkTargetName(ref: Pick<TargetRef, 'platform' | 'name'>): void {
  if (ref.platform === 'lxd-volume') splitVolumeName(ref.name);
  if (ref.platform === 'lxd' && !isValidInstanceName(ref.name)) {
    throw new ValidationError(
      `"${ref.name}" is not a valid LXD instance name (letters, digits and dashes, 1-63, starting with a letter, not ending with a dash)`,
    );
  }
}

/** LXD's rule for instance names: a hostname label (letters, digits, dashes), 1-63 characters. */
export function isValidInstanceName(name: string): boolean {
  return /^[a-zA-Z][a-zA-Z0-9-]{0,62}$/.test(name) && !name.endsWith('-');
}

/** The canonical text of a target, without the agent: the key recovery points are listed by. */
export function targetKey(ref: Pick<TargetRef, 'platform' | 'name'>): string {
  return `${ref.platform}:${ref.name}`;
}

export function formatTarget(ref: TargetRef): string {
  return ref.agent ? `${targetKey(ref)}@${ref.agent}` : targetKey(ref);
}

/**
 * Reads back a canonical key (`platform:name`, as the catalog and the workflows carry it). Unlike
 * `parseTarget` it never splits off an agent, so a name may itself contain `@`
 * (`path:/home/ann@corp/docs`).
 */
export function parseTargetKey(key: string): TargetRef {
  const colon = key.indexOf(':');
  const platform = key.slice(0, colon);
  if (colon <= 0 || !isPlatform(platform) || colon === key.length - 1) {
    throw new ValidationError(`"${key}" is not a target key of the form PLATFORM:NAME`);
  }
  return { platform, name: key.slice(colon + 1) };
}

/** The platform part of a canonical `platform:name` target. */
export function platformOf(target: string): Platform {
  return parseTargetKey(target).platform;
}

/**
 * Containers chosen by their labels: `docker:KEY=VALUE[,KEY=VALUE...][@AGENT]`. A container
 * matches when it carries every pair with exactly that value. Only Docker targets carry labels
 * in the inventory, so only `docker` takes a selector (a Compose project is already one target).
 */
export interface LabelSelector {
  platform: 'docker';
  labels: Record<string, string>;
  agent?: string;
  /** Canonical text without the agent, pairs in the order given: the job's `target`. */
  text: string;
}

const SELECTOR_PLATFORMS = ['docker'] as const;
const SELECTOR_FORM = 'docker:KEY=VALUE[,KEY=VALUE...][@AGENT], for example docker:app=web';

export function parseSelector(text: string): LabelSelector {
  const raw = text.trim();
  const colon = raw.indexOf(':');
  const platform = colon > 0 ? raw.slice(0, colon) : '';
  if (!(SELECTOR_PLATFORMS as readonly string[]).includes(platform)) {
    throw new ValidationError(
      colon > 0
        ? `selector "${text}": only docker containers can be chosen by label (not "${platform}"); write ${SELECTOR_FORM}`
        : `selector "${text}" is not of the form ${SELECTOR_FORM}`,
    );
  }
  let body = raw.slice(colon + 1);
  let agent: string | undefined;
  const at = body.lastIndexOf('@');
  if (at >= 0) {
    agent = body.slice(at + 1);
    body = body.slice(0, at);
    if (!AGENT_NAME.test(agent)) {
      throw new ValidationError(
        `agent "${agent}" in selector "${text}" is not a valid agent name (letters, digits, . _ -)`,
      );
    }
  }
  // A Map, not an object: a label key may be any string, `constructor` or `__proto__` included.
  const labels = new Map<string, string>();
  for (const pair of body.split(',')) {
    const eq = pair.indexOf('=');
    const key = eq > 0 ? pair.slice(0, eq).trim() : '';
    if (!key) {
      throw new ValidationError(
        `selector "${text}": "${pair}" is not KEY=VALUE; write ${SELECTOR_FORM}`,
      );
    }
    if (labels.has(key)) {
      throw new ValidationError(`selector "${text}" names the label "${key}" twice`);
    }
    labels.set(key, pair.slice(eq + 1));
  }
  const pairs = [...labels].map(([k, v]) => `${k}=${v}`);
  return {
    platform: 'docker',
    labels: Object.fromEntries(labels),
    ...(agent !== undefined ? { agent } : {}),
    text: `docker:${pairs.join(',')}`,
  };
}

/** Whether a target with these labels carries every pair of the selector. */
export function matchesSelector(
  selector: Pick<LabelSelector, 'labels'>,
  labels: Record<string, string> | undefined,
): boolean {
  return Object.entries(selector.labels).every(
    ([k, v]) => labels !== undefined && Object.hasOwn(labels, k) && labels[k] === v,
  );
}
