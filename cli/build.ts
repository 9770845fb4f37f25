/**
 * `npm run build`: the command line (with the agent) and the codec worker as plain ES modules in
 * dist/, so an agent host runs JavaScript without a TypeScript loader (~70 MB and ~0.5 CPU-s
 * less per process, measured with bench/). Packages stay external: dist/ resolves them from this
 * project's node_modules. The benchmark's step runner is built alongside.
 *
 * The bundle is split (esbuild `splitting`, ES modules): what `stowage start` or `stowage agent`
 * import dynamically (the control plane, the agent, the drivers, the AWS SDK clients) goes into
 * chunks that load only when that command runs, so `stowage jobs` parses a few hundred lines,
 * not the whole agent (`npm run bench:cli` measures it).
 *
 *   npx tsx cli/build.ts [--out DIR]
 */
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
  'bench-tree': 'bench/tree.ts',
} as const;

export const DIST = `${ROOT}dist`;

export async function build(outdir = DIST): Promise<void> {
  // Chunk names change with their contents: old ones would pile up beside the new. Only this
  // build's own files go (dist/console/ is the console's build).
  for (const file of existsSync(outdir) ? readdirSync(outdir) : []) {
    if (/\.mjs(\.map)?$|^sources\.json$/.test(file)) rmSync(join(outdir, file));
  }
  // Taken before esbuild reads anything: a source saved during the build makes the bundle stale.
  const builtAt = Date.now();
  const { metafile } = await esbuild({
    absWorkingDir: ROOT,
    entryPoints: Object.fromEntries(Object.entries(ENTRIES)),
    outdir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    // Chunks go beside the entries: pool.ts and emulators.ts find their siblings from them.
    splitting: true,
    target: 'node20',
    sourcemap: 'linked',
    logLevel: 'warning',
    banner: { js: '#!/usr/bin/env node' },
    metafile: true,
  });
  // What cli/bin.mjs checks before it runs the bundle instead of the sources.
  const inputs = [...Object.keys(metafile.inputs), 'package.json', 'cli/bin.mjs'];
  writeFileSync(join(outdir, 'sources.json'), JSON.stringify({ builtAt, inputs }));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({ options: { out: { type: 'string' } } });
  await build(values.out ?? DIST);
  console.log(`built ${Object.keys(ENTRIES).join(', ')} into ${values.out ?? DIST}`);
}
