/**
 * A target is written `PLATFORM:NAME[@AGENT]` (docs: DESIGN "The user's interface"). The
 * platforms and their own name rules are in the registry (kernel/platforms); this module knows
 * only the grammar every platform shares.
 */
import { ValidationError } from './errors';
import { isPlatform, PLATFORMS, specOf, type Platform } from './platforms';

export { isPlatform, PLATFORMS, type Platform };

export interface TargetRef {
  platform: Platform;
  name: string;
  /** The agent (site) that sees the target; absent when the caller lets Stowage find it. */
  agent?: string;
}

const AGENT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

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
 * Checks a target's name against its platform's own rules where Stowage knows them, so a bad
 * name is refused before any workflow starts (parseTarget checks only the syntax).
 */
export function checkTargetName(ref: Pick<TargetRef, 'platform' | 'name'>): void {
  const bytes = Buffer.byteLength(ref.name, 'utf8');
  if (bytes > MAX_NAME_LENGTH) {
    throw new ValidationError(
      `the name of ${ref.platform} target "${ref.name.slice(0, 40)}..." is ${bytes} bytes; at most ${MAX_NAME_LENGTH} (the catalog keys points by their target)`,
    );
  }
  // eslint-disable-next-line no-control-regex -- control characters are what it looks for
  if (/[\u0000-\u001f\u007f]/.test(ref.name)) {
    throw new ValidationError(
      `the name of ${ref.platform} target ${JSON.stringify(ref.name)} holds control characters (NUL, newline, ...), which no platform accepts`,
    );
  }
  specOf(ref.platform).checkName?.(ref.name);
}

/**
 * The longest name, in UTF-8 bytes, refused before any lookup: the catalog keys a target's points
 * by its name, and a DynamoDB partition key holds at most 2,048 bytes with the key's prefix, so a
 * longer name would be backed up and then fail to commit. Longer than any engine's names; a path
 * longer than this (PATH_MAX is 4,096) cannot be a target.
 */
export const MAX_NAME_LENGTH = 1536;

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
 * Targets chosen by their labels: `PLATFORM:KEY=VALUE[,KEY=VALUE...][@AGENT]`, for the
 * platforms whose spec has a selector (Docker containers). A target matches when it carries
 * every pair with exactly that value.
 */
export interface LabelSelector {
  platform: Platform;
  labels: Record<string, string>;
  agent?: string;
  /** Canonical text without the agent, pairs in the order given: the job's `target`. */
  text: string;
}

export function parseSelector(text: string): LabelSelector {
  const raw = text.trim();
  const colon = raw.indexOf(':');
  const platform = colon > 0 ? raw.slice(0, colon) : '';
  const selecting = PLATFORMS.map(specOf).filter((s) => s.selector);
  const forms = selecting.map((s) => s.selector!.form).join('; or ');
  const capability = isPlatform(platform) ? specOf(platform).selector : undefined;
  if (!capability) {
    throw new ValidationError(
      colon > 0
        ? `selector "${text}": only ${selecting.map((s) => `${s.name} ${s.selector!.noun}s`).join(', ')} can be chosen by label (not "${platform}"); write ${forms}`
        : `selector "${text}" is not of the form ${forms}`,
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
  const pairs = capability.parse(body, text);
  return {
    platform: platform as Platform,
    labels: Object.fromEntries(pairs),
    ...(agent !== undefined ? { agent } : {}),
    text: `${platform}:${pairs.map(([k, v]) => `${k}=${v}`).join(',')}`,
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
