/** What the CLI reads from its arguments before commander does (cli/main.ts). */

/** The commands whose flags come from the platform registry (platform and engine flags). */
const REGISTRY_COMMANDS = new Set([
  'start',
  'agent',
  'backup',
  'protect-update',
  'policy',
  'restore',
]);

/** The command word of `argv` (after the global options; `--api` takes a value), or undefined. */
export function commandWord(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--api') i++;
    else if (!arg.startsWith('-')) return arg;
  }
  return undefined;
}

/**
 * Whether the command needs the platform registry: it takes its flags, or `help COMMAND` may
 * list them (`stowage --help` lists commands only, `--version` nothing).
 */
export function needsRegistry(word: string | undefined): boolean {
  return word !== undefined && (word === 'help' || REGISTRY_COMMANDS.has(word));
}
