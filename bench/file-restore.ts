/**
 * `npm run bench:file-restore`: one 1 MiB file restored out of a big Docker volume, through the
 * product as a user runs it: `stowage start --store DIR` in its own process, the `stowage`
 * command (cli/bin.mjs, what `npm link` installs, from the bundle `npm run build` makes), a real
 * dockerd.
 *
 *   npm run bench:file-restore                      # 10 GiB in 40,960 files, 3 restores
 *   npm run bench:file-restore -- --gib 1 --runs 5
 *
 * 1. A volume is filled on the host (its Mountpoint) with `--gib` GiB in files of 256 KiB (one
 *    chunk each: a unique 32-byte head, then random bytes from a 64 MiB pool, so nothing
 *    deduplicates or compresses), 400 to a directory, plus the 1 MiB target `d0017/target.bin`.
 * 2. `stowage backup docker:C --wait` (timed, for scale).
 * 3. `stowage restore POINT --file d0017/target.bin --dest DIR --wait`, `--runs` times, each
 *    into a new DIR: the wall time of the command, start to exit, and the restored file
 *    compared with the original. The store is in the page cache (it was just written).
 * 4. One more restore under `strace` (not timed): the bytes the agent read from files under the
 *    store directory (pread/read on descriptors there), which is what a restore reads from S3.
 * Everything (volume, container, data directory, store) is removed at the end. Numbers, not
 * assertions.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'cli', 'bin.mjs');
const IMAGE = 'stowage-test/busybox:latest';
const FILE = 256 * 1024;
const PER_DIR = 400;
const TARGET = 'd0017/target.bin';

const { values: args } = parseArgs({
  options: {
    gib: { type: 'string', default: '10' },
    runs: { type: 'string', default: '3' },
    work: { type: 'string', default: '/var/tmp' },
  },
});
const gib = Number(args.gib);
const runs = Number(args.runs);
const RUN = `stowage-bench-file-${process.pid}`;
const work = mkdtempSync(join(args.work!, 'stowage-file-restore-'));
const dataDir = join(work, 'data');
const store = join(work, 'store');

const sh = (cmd: string, argv: string[]) => execFileSync(cmd, argv, { encoding: 'utf8' }).trim();
const seconds = (ms: number) => (ms / 1000).toFixed(2);
const mib = (n: number) => (n / 1048576).toFixed(2);

async function freePort(): Promise<number> {
  for (;;) {
    const base = 20_000 + Math.floor(Math.random() * 20_000);
    const free = await Promise.all(
      [0, 1, 2, 3, 4].map(
        (i) =>
          new Promise<boolean>((resolve) => {
            const s = createServer().once('error', () => resolve(false));
            s.listen(base + i, '127.0.0.1', () => s.close(() => resolve(true)));
          }),
      ),
    );
    if (free.every(Boolean)) return base;
  }
}

let port = 0;
const env = () => ({
  ...process.env,
  STOWAGE_API: `http://127.0.0.1:${port}`,
  STOWAGE_DATA_DIR: dataDir,
});

/** `stowage ARGS --json`, timed from spawn to exit. */
function stowage(...argv: string[]): { ms: number; json: Record<string, unknown> } {
  const t0 = performance.now();
  const out = spawnSync(process.execPath, [BIN, ...argv, '--json'], {
    env: env(),
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  const ms = performance.now() - t0;
  if (out.status !== 0) throw new Error(`stowage ${argv.join(' ')}: ${out.stdout}${out.stderr}`);
  return { ms, json: JSON.parse(out.stdout) as Record<string, unknown> };
}

/** Fills `dir` with `bytes` of 256 KiB files, 400 to a directory, and the 1 MiB target. */
function fill(dir: string, bytes: number): Buffer {
  const pool = randomFillSync(Buffer.allocUnsafe(64 << 20));
  const files = Math.ceil((bytes - 1048576) / FILE);
  const buf = Buffer.allocUnsafe(FILE);
  for (let i = 0; i < files; i++) {
    const d = join(dir, `d${String(Math.floor(i / PER_DIR)).padStart(4, '0')}`);
    if (i % PER_DIR === 0) mkdirSync(d);
    const from = ((i * 4099 * 16) % (pool.length - FILE)) & ~15;
    pool.copy(buf, 0, from, from + FILE);
    buf.write(`stowage bench file ${String(i).padStart(12, '0')}`, 0, 'latin1');
    const fd = openSync(join(d, `f${i}.bin`), 'w');
    writeSync(fd, buf);
    closeSync(fd);
  }
  mkdirSync(dirname(join(dir, TARGET)), { recursive: true });
  const target = randomFillSync(Buffer.allocUnsafe(1048576));
  const fd = openSync(join(dir, TARGET), 'w');
  writeSync(fd, target);
  closeSync(fd);
  return target;
}

let server: ChildProcess | undefined;

async function main(): Promise<void> {
  console.log(`building the bundle (npm run build's CLI part), so bin.mjs runs it`);
  sh(process.execPath, [
    join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'),
    join(ROOT, 'cli', 'build.ts'),
  ]);

  sh('docker', ['volume', 'create', `${RUN}-data`]);
  const mount = sh('docker', ['volume', 'inspect', '-f', '{{.Mountpoint}}', `${RUN}-data`]);
  sh('docker', ['run', '-d', '--name', RUN, '-v', `${RUN}-data:/data`, IMAGE, 'sleep', '1000000']);
  const t0 = performance.now();
  const target = fill(mount, gib * 1024 ** 3);
  const total = Number(sh('du', ['-sb', mount]).split(/\s/)[0]);
  const count = Number(sh('sh', ['-c', `find ${mount} -type f | wc -l`]));
  console.log(
    `volume ${RUN}-data: ${(total / 1024 ** 3).toFixed(2)} GiB in ${count} files, written in ${seconds(performance.now() - t0)} s`,
  );

  port = await freePort();
  mkdirSync(dataDir, { recursive: true });
  const log = openSync(join(work, 'stowage-start.log'), 'a');
  server = spawn(
    process.execPath,
    [BIN, 'start', '--data-dir', dataDir, '--port', String(port), '--store', store],
    { env: env(), stdio: ['ignore', log, log] },
  );
  const deadline = Date.now() + 120_000;
  for (;;) {
    const listed = spawnSync(process.execPath, [BIN, 'targets', '--json'], {
      env: env(),
      encoding: 'utf8',
    });
    if (listed.status === 0 && listed.stdout.includes(`docker:${RUN}`)) break;
    if (Date.now() > deadline) throw new Error('stowage start did not list the container in 2 min');
    await new Promise((r) => setTimeout(r, 500));
  }

  const backup = stowage('backup', `docker:${RUN}`, '--wait');
  const point = backup.json.recoveryPointId as string;
  console.log(
    `backup: ${seconds(backup.ms)} s (${(total / 1e6 / (backup.ms / 1000)).toFixed(0)} MB/s), point ${point}`,
  );

  const want = createHash('sha256').update(target).digest('hex');
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const dest = join(work, `restored-${i}`);
    const restore = stowage('restore', point, '--file', TARGET, '--dest', dest, '--wait');
    const got = createHash('sha256')
      .update(readFileSync(join(dest, TARGET)))
      .digest('hex');
    if (got !== want) throw new Error(`restore ${i}: the restored file differs from the original`);
    times.push(restore.ms);
    console.log(`restore --file ${TARGET} (1.00 MiB): ${seconds(restore.ms)} s, bytes equal`);
  }

  // Not timed: the same restore under strace, for the bytes read from the store's files.
  const pid = server.pid!;
  const trace = join(work, 'strace.txt');
  const tracer = spawn(
    'strace',
    ['-f', '-y', '-e', 'trace=read,pread64,preadv,preadv2', '-o', trace, '-p', String(pid)],
    {
      stdio: 'ignore',
    },
  );
  await new Promise((r) => setTimeout(r, 1000));
  stowage('restore', point, '--file', TARGET, '--dest', join(work, 'restored-traced'), '--wait');
  tracer.kill('SIGINT');
  await new Promise((r) => tracer.once('exit', r));
  let fromStore = 0;
  // With -f a call another thread interrupts is split: "read(5</path>, ... <unfinished ...>",
  // then "<... read resumed>..., = N" on the same pid.
  const open = new Map<string, string>();
  for (const line of readFileSync(trace, 'utf8').split('\n')) {
    const call = /^(\d+)\s+p?read\w*\(\d+<([^>]*)>/.exec(line);
    const result = /=\s+(\d+)$/.exec(line);
    if (call && line.endsWith('<unfinished ...>')) open.set(call[1]!, call[2]!);
    const pid = /^(\d+)/.exec(line)?.[1];
    const path = call ? call[2]! : line.includes(' resumed>') && pid ? open.get(pid) : undefined;
    if (path?.startsWith(store) && result) fromStore += Number(result[1]);
  }
  const sorted = [...times].sort((a, b) => a - b);
  console.log(
    `\none 1 MiB file out of a ${(total / 1024 ** 3).toFixed(2)} GiB volume of ${count} files, through \`stowage restore --file --dest --wait\`: median ${seconds(sorted[Math.floor(sorted.length / 2)]!)} s (runs: ${times.map(seconds).join(', ')} s); ${mib(fromStore)} MiB read from the store (the point's index included)`,
  );
}

try {
  await main();
} finally {
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server!.once('exit', r));
    server.kill('SIGTERM');
    await exited;
  }
  spawnSync('docker', ['rm', '-f', RUN], { stdio: 'ignore' });
  spawnSync('docker', ['volume', 'rm', '-f', `${RUN}-data`], { stdio: 'ignore' });
  rmSync(work, { recursive: true, force: true });
  console.log(`removed the volume, the container, ${work} (data directory and store)`);
}
