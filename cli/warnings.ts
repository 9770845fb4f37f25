/**
 * The AWS SDK warns once per process that Node 20 is past its end of life; the CLI's output is
 * for people and scripts, so that warning is dropped (and only that one). Imported first by
 * main.ts, before anything loads the SDK.
 */
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  const first = rest[0] as string | { type?: string } | undefined;
  const type = typeof first === 'string' ? first : first?.type;
  if (type === 'NodeVersionSupportWarning' || String(warning).includes('NodeVersionSupportWarning'))
    return;
  (emitWarning as (...args: unknown[]) => void)(warning, ...rest);
}) as typeof process.emitWarning;
