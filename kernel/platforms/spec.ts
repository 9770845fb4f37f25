/**
 * What Stowage knows of one platform, declared once (one file per platform in this folder,
 * registered in ./index.ts) and read by every side: the API validates targets and options with
 * it, the agent builds its drivers from it, the CLI offers its flags. Nothing here talks to an
 * engine; the driver that does lives in agents/drivers/<platform>/.
 */
import { z } from 'zod';
import { ValidationError } from '../errors';
import type { RestorePlanner } from './restore-plan';

/**
 * A flag of `stowage backup` or `stowage restore` that a platform takes. Several platforms may
 * list the same flag object (`--consistency`); the CLI offers each flag once.
 */
export interface CliFlag {
  /** Commander's syntax: `--pool <pool>`, `--no-snapshots`, `--port <port=host>`. */
  readonly flags: string;
  readonly help: string;
  /** The only values the flag takes (checked by the CLI before any request). */
  readonly choices?: readonly string[];
  /** Given several times, the values collect into an array. */
  readonly repeatable?: boolean;
  /** The value is a number. */
  readonly number?: boolean;
  /**
   * The request body fields this flag sets, from its value (undefined when it was not given)
   * and the values of the command's other flags (by commander's camel-case names); bodies of
   * several flags are merged, objects field by field. Throws ValidationError for a value the
   * flag cannot take (`--port 80` without `=`).
   */
  toBody(value: unknown, flags: Readonly<Record<string, unknown>>): Record<string, unknown>;
}

/** A flag of `stowage agent` and `stowage start` that configures a platform's engine. */
export interface EngineFlag {
  /** Commander's syntax, e.g. `--lxd-socket <path>`. */
  readonly flags: string;
  readonly help: string;
  /** The environment variable that gives the default. */
  readonly env?: string;
  /** `endpoint`, or the name of the setting the driver factory reads. */
  readonly setting: string;
}

/** Choosing several targets of a platform at once by their labels (`docker:app=web`). */
export interface SelectorCapability {
  /** What the selector chooses, for messages: `container`. */
  readonly noun: string;
  /** The selector's form with an example, for messages. */
  readonly form: string;
  /** How to see a target's labels, for the message when nothing matches. */
  readonly hint: string;
  /**
   * The label pairs of a selector's body (after `PLATFORM:`, without `@AGENT`), in the order
   * given; ValidationError naming what is wrong. `text` is the whole selector, for messages.
   */
  parse(body: string, text: string): Array<[string, string]>;
}

/** The engine a platform's driver talks to. Platforms of one engine share its id and endpoint. */
export interface EngineSpec {
  /** `docker`, `lxd`: the key of AgentConfig.engines. */
  readonly id: string;
  /** Where the engine answers when the agent is not told otherwise (a socket path, a URL). */
  readonly defaultEndpoint?: string;
  /** Flags of `stowage agent` that set the endpoint and the settings. */
  readonly flags: readonly EngineFlag[];
}

export interface PlatformSpec<N extends string = string> {
  /** The PLATFORM of `PLATFORM:NAME`. */
  readonly name: N;
  /** One target, in words, for messages: `Docker container`, `LXD instance`. */
  readonly noun: string;
  /** An example target, for messages and help. */
  readonly example: string;
  /**
   * Refuses a name the platform cannot have (ValidationError saying why), so a bad name is
   * refused before any workflow starts; `parseTarget` checks only the syntax.
   */
  checkName?(name: string): void;
  /**
   * Whether agents list every target of the platform in their inventory, so the API can check
   * one exists and that a restore's name is free (not `path`: any absolute path on the host may
   * be one, and the agent finds out).
   */
  readonly listed: boolean;
  /** Whether a target is named after the agent that serves it (`lxd-server:<site>`). */
  readonly namedAfterAgent?: boolean;
  /** Choosing targets by label, where the platform has it. */
  readonly selector?: SelectorCapability;
  /** Whether targets keep local snapshots (`stowage snapshot ...`). */
  readonly snapshots: boolean;
  /**
   * Whether `stowage snapshot restore --state running|stopped` applies: the power state after
   * going back to a snapshot is not simply what it was (vSphere: a snapshot without memory
   * comes back powered off).
   */
  readonly snapshotRestoreState?: boolean;
  /** What a backup request of this platform may ask beyond its target (strict). */
  readonly backupOptions: z.ZodObject;
  /** What a restore request of a point of this platform may ask beyond its destination (strict). */
  readonly restoreOptions: z.ZodObject;
  /**
   * The destination of a restore given `--name` (or nothing), where the platform names it
   * otherwise than by the name as it is (a custom volume's `POOL/NAME`). Undefined: nothing said.
   */
  restoreName?(
    source: string,
    name: string | undefined,
    options: Record<string, unknown>,
  ): string | undefined;
  /**
   * What a restore of a point of this platform would do, step by step (restore-plan.ts); a
   * platform without one gets the generic plan (its target created, or replaced in place).
   */
  readonly planRestore?: RestorePlanner;
  /**
   * Whether a restore with these options adds to a target that exists (one disk attached to a
   * VM) rather than making one: its destination must exist, so it is never refused as taken.
   */
  restoresInto?(options: Record<string, unknown>): boolean;
  /** Absent for a platform with no engine to find (paths: the agent's own file system). */
  readonly engine?: EngineSpec;
  /** Flags of `stowage backup` / `protect-update` and of `stowage restore`. */
  readonly cli: { readonly backup: readonly CliFlag[]; readonly restore: readonly CliFlag[] };
  /**
   * A platform of the target grammar (DESIGN: "The user's interface") whose driver does not
   * exist yet: its targets parse and their points restore like any other, but no agent serves
   * it, so a backup is refused with AgentUnavailable. It takes no options.
   */
  readonly planned?: boolean;
}

/** The placeholder spec of a planned platform (see PlatformSpec.planned). */
export function plannedPlatform<N extends string>(
  name: N,
  noun: string,
): PlatformSpec<N> & { planned: true } {
  return {
    name,
    noun,
    example: `${name}:NAME`,
    listed: true,
    snapshots: false,
    backupOptions: z.object({}).strict(),
    restoreOptions: z.object({}).strict(),
    cli: { backup: [], restore: [] },
    planned: true,
  };
}

/** A name as `a=b` pairs from repeated flags; a value without `=` is refused naming the flag. */
export function flagPairs(values: readonly string[], flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf('=');
    if (eq <= 0) throw new ValidationError(`${flag} takes KEY=VALUE (got "${v}")`);
    out[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return out;
}
