#!/usr/bin/env node
// The `stowage` command (what `npm link` installs). It runs dist/stowage.mjs, the bundle
// `npm run build` makes, when that bundle is newer than every source file it was built from
// (dist/sources.json lists them): plain JavaScript starts in ~30 ms beyond Node's own start-up,
// the sources through tsx's loader in ~140 ms. Otherwise, or with STOWAGE_FROM_SOURCE=1, it
// runs the TypeScript sources, so an edit is never hidden behind a stale bundle.
import { readFileSync, statSync } from 'node:fs';
import { URL } from 'node:url';

function freshBundle() {
  if (process.env.STOWAGE_FROM_SOURCE) return false;
  try {
    const { builtAt, inputs } = JSON.parse(
      readFileSync(new URL('../dist/sources.json', import.meta.url), 'utf8'),
    );
    const root = new URL('../', import.meta.url);
    return inputs.every((file) => statSync(new URL(file, root)).mtimeMs < builtAt);
  } catch {
    return false;
  }
}

if (freshBundle()) {
  await import('../dist/stowage.mjs');
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('./main.ts');
}
