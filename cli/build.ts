/**
 * `npm run build`: the command line (with the agent) and the codec worker as plain ES modules in
 * dist/, so an agent host runs JavaScript without a TypeScript loader (~70 MB and ~0.5 CPU-s
 * less per process, measured with bench/). Packages stay external: dist/ resolves them from this
 * project's node_modules. The benchmark's step runner is built alongside.
 *
 *   npx tsx cli/build.ts [--out DIR]
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build as esbuild } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * Entry points by output name. The worker and the local S3 server must sit beside the bundle
 * that starts them (agents/repo/pool.ts, local/emulators.ts).
 */
export const ENTRIES = {
  stowage: 'cli/main.ts',
  'codec-worker': 'agents/repo/codec-worker.ts',
  's3-server': 'local/s3-server.ts',
  'bench-step': 'bench/stowage-step.ts',
} as const;

export const DIST = `${ROOT}dist`;

export async function build(outdir = DIST): Promise<void> {
  await esbuild({
    absWorkingDir: ROOT,
    entryPoints: Object.fromEntries(Object.entries(ENTRIES)),
    outdir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: 'linked',
    logLevel: 'warning',
    banner: { js: '#!/usr/bin/env node' },
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({ options: { out: { type: 'string' } } });
  await build(values.out ?? DIST);
  console.log(`built ${Object.keys(ENTRIES).join(', ')} into ${values.out ?? DIST}`);
}
