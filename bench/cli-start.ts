/**
 * How long the `stowage` command takes to start, beyond Node's own start-up: each command runs
 * `--runs` times, interleaved with `node -e 0`, and the table gives the median wall time of each
 * and its difference from `node -e 0`'s median (the goal: at most 150 ms for `--version` and
 * `jobs`). `jobs` asks a stub API in this process that answers `[]` (or the API of
 * `--api URL`), so the figure is the CLI's own cost plus one local HTTP round trip.
 *
 *   npm run bench:cli [-- --runs 30] [-- --api http://127.0.0.1:4780]
 *
 * Both forms of the command are measured: `cli/bin.mjs` (the TypeScript sources through tsx's
 * loader: what `npm link` installs) and `dist/stowage.mjs` (`npm run build`, plain JavaScript:
 * what an agent host runs). Numbers, not assertions: a timed assertion would fail on a loaded
 * machine for no fault of the code.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Case {
  label: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
}

function run(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const start = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { cwd: ROOT, env }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`node ${args.join(' ')} failed: ${stderr || err.message}`));
      else resolve(Number(process.hrtime.bigint() - start) / 1e6);
    });
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/** A stand-in for the API: GET /jobs answers an empty list, anything else 404. */
async function stubApi(): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const found = req.method === 'GET' && req.url?.startsWith('/jobs');
    res.writeHead(found ? 200 : 404, { 'content-type': 'application/json' });
    res.end(found ? '[]' : '{"error":"NotFound","message":"stub"}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { runs: { type: 'string', default: '20' }, api: { type: 'string' } },
  });
  const runs = Number(values.runs);
  const stub = values.api ? undefined : await stubApi();
  const env = { ...process.env, STOWAGE_API: values.api ?? stub!.url };
  const cases: Case[] = [{ label: 'node -e 0', args: ['-e', '0'] }];
  const sources = { ...env, STOWAGE_FROM_SOURCE: '1' };
  for (const [form, entry, formEnv] of [
    ['bin.mjs (sources, tsx)', 'cli/bin.mjs', sources],
    ['bin.mjs (bundle if fresh)', 'cli/bin.mjs', env],
    ['dist/stowage.mjs', 'dist/stowage.mjs', env],
  ] as const) {
    if (!existsSync(`${ROOT}${entry}`)) {
      console.log(`(${entry} is missing: \`npm run build\` makes it)`);
      continue;
    }
    cases.push({ label: `${form} --version`, args: [entry, '--version'], env: formEnv });
    cases.push({ label: `${form} jobs`, args: [entry, 'jobs'], env: formEnv });
  }
  const times = new Map<string, number[]>(cases.map((c) => [c.label, []]));
  // One warm-up round (tsx's transform cache, the page cache), then interleaved rounds, so a
  // burst of load on the machine spreads over every case alike.
  for (const c of cases) await run(c.args, c.env ?? env);
  for (let i = 0; i < runs; i++) {
    for (const c of cases) times.get(c.label)!.push(await run(c.args, c.env ?? env));
  }
  stub?.server.close();
  const base = median(times.get('node -e 0')!);
  const rows = cases.map((c) => {
    const m = median(times.get(c.label)!);
    return [
      c.label,
      `${m.toFixed(0)} ms`,
      c.label === 'node -e 0' ? '' : `+${(m - base).toFixed(0)} ms`,
    ];
  });
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i]!.length), 8));
  console.log(`median of ${runs} runs each (${new Date().toISOString()})`);
  console.log(
    ['command', 'median', 'beyond node -e 0'].map((h, i) => h.padEnd(widths[i]!)).join('  '),
  );
  for (const r of rows) console.log(r.map((cell, i) => cell.padEnd(widths[i]!)).join('  '));
}

await main();
