#!/usr/bin/env node
// The `stowage` command. Runs the TypeScript sources through tsx's loader.
import { register } from 'tsx/esm/api';

// The AWS SDK warns once per process that Node 20 is past its end of life; the CLI's output
// is for people and scripts, so that warning is dropped here (and only that one).
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = (warning, ...rest) => {
  const type = typeof rest[0] === 'string' ? rest[0] : rest[0]?.type;
  if (type === 'NodeVersionSupportWarning' || String(warning).includes('NodeVersionSupportWarning'))
    return;
  return emitWarning(warning, ...rest);
};

register();
await import('./main.ts');
