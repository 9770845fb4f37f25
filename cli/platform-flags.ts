/**
 * The platforms' flags of the CLI, from the registry (kernel/platforms): the flags of `backup`,
 * `protect-update`, `policy` and `restore` that platforms declare, and the engine flags of
 * `stowage agent` and `stowage start`; and the request bodies and engine settings they make.
 * A platform added to the registry gets its flags here without an edit.
 */
import { Option, type Command } from 'commander';
import { PLATFORM_SPECS, type CliFlag, type EngineFlag } from '../kernel/platforms';

const collect = (value: string, previous: string[] = []) => [...previous, value];

/**
 * The platforms' flags of `backup` (and `protect-update`, `policy`) or `restore`, from the
 * registry (kernel/platforms), each once: several platforms list `--consistency`.
 */
export function platformFlags(kind: 'backup' | 'restore'): CliFlag[] {
  const flags = new Map<string, CliFlag>();
  for (const spec of PLATFORM_SPECS) {
    for (const flag of spec.cli[kind]) if (!flags.has(flag.flags)) flags.set(flag.flags, flag);
  }
  return [...flags.values()];
}

export function addPlatformFlags(
  command: Command,
  kind: 'backup' | 'restore',
  defaults: Record<string, string> = {},
): Command {
  for (const flag of platformFlags(kind)) {
    const option = new Option(flag.flags, flag.help);
    if (flag.choices) option.choices(flag.choices);
    if (flag.repeatable) option.argParser(collect);
    else if (flag.number) option.argParser(Number);
    const preset = defaults[option.attributeName()];
    if (preset !== undefined) option.default(preset);
    command.addOption(option);
  }
  return command;
}

/** The request body fields the platforms' flags set; objects of several flags merge by field. */
export function platformBody(kind: 'backup' | 'restore', flags: Record<string, unknown>) {
  const body: Record<string, unknown> = {};
  for (const flag of platformFlags(kind)) {
    const value = flags[new Option(flag.flags).attributeName()];
    for (const [key, field] of Object.entries(flag.toBody(value, flags))) {
      const before = body[key];
      body[key] = isPlainObject(before) && isPlainObject(field) ? { ...before, ...field } : field;
    }
  }
  return body;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** The engines' flags of `stowage agent` and `stowage start` (kernel/platforms), each once. */
export function engineFlags(): Array<{ engine: string; flag: EngineFlag }> {
  const flags = new Map<string, { engine: string; flag: EngineFlag }>();
  for (const spec of PLATFORM_SPECS) {
    const engine = 'engine' in spec ? spec.engine : undefined;
    for (const flag of engine?.flags ?? []) flags.set(flag.flags, { engine: engine!.id, flag });
  }
  return [...flags.values()];
}

export function addEngineFlags(command: Command): Command {
  for (const { flag } of engineFlags()) {
    const option = new Option(flag.flags, flag.help);
    if (flag.env) option.env(flag.env);
    command.addOption(option);
  }
  return command;
}

/**
 * The engines' settings from those flags, by engine: `{ lxd: { endpoint, project } }`; a flag
 * without a value that was given (`--vsphere-insecure`) is `"true"`.
 */
export function enginesOf(opts: Record<string, unknown>): Record<string, Record<string, string>> {
  const engines: Record<string, Record<string, string>> = {};
  for (const { engine, flag } of engineFlags()) {
    const raw = opts[new Option(flag.flags).attributeName()];
    const value = raw === true ? 'true' : raw;
    if (typeof value === 'string' && value !== '') {
      engines[engine] = { ...engines[engine], [flag.setting]: value };
    }
  }
  return engines;
}
