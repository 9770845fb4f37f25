/**
 * `npm run bench`: Stowage's data path against restic and BorgBackup, on the same data, in the
 * same run, each into a repository in a local directory.
 *
 * For each tool: init (not timed), full backup of full.img, incremental backup of incr.img into
 * the same repository, restore of the incremental snapshot to a file (whose SHA-256 must equal
 * incr.img's, or the tool is reported as failed and its restore is not timed), and the repository
 * directory's size after both backups. Every timed step is a child process under
 * `/usr/bin/time -v`: wall seconds from this process's clock around the spawn, peak RSS from
 * time's "Maximum resident set size". Before each timed step the disk settles (`sync`, then no
 * device I/O for 2 s), so no step pays for earlier write-back or discards. The page cache is not dropped (there is no fair portable way): every
 * tool reads the same, usually cached, files.
 *
 * Benchmarks print ratios; they never assert times. The exit status is 1 only when a tool failed
 * (a step exited non-zero or a restore returned the wrong bytes).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { describeDataset, makeDataset, MiB, type Dataset } from './dataset';
import { build, DIST } from '../cli/build';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const TOOLS = ['stowage', 'restic', 'borg'] as const;
type ToolName = (typeof TOOLS)[number];
/** The shared passphrase of the peers' repositories (their encryption is on, like Stowage's). */
const PASSPHRASE = 'bench';

// ---- child processes ------------------------------------------------------------------------

interface Command {
  cmd: string;
  args: string[];
  cwd: string;
  env?: Record<string, string>;
}

interface Exec {
  code: number;
  seconds: number;
  maxRssKiB: number | null;
  /** User plus system CPU seconds of the step's process tree (time's report), when timed. */
  cpuSeconds: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end, optionally under /usr/bin/time -v; never rejects on exit codes. */
async function exec(
  c: Command,
  options: { timed?: boolean; logFile?: string } = {},
): Promise<Exec> {
  const timeFile = options.logFile ? `${options.logFile}.time` : undefined;
  const [cmd, args] =
    options.timed && timeFile
      ? ['/usr/bin/time', ['-v', '-o', timeFile, c.cmd, ...c.args]]
      : [c.cmd, c.args];
  const started = performance.now();
  const child = spawn(cmd, args, {
    cwd: c.cwd,
    env: { ...process.env, ...c.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const code = await new Promise<number>((done, fail) => {
    child.on('error', fail);
    child.on('close', (status) => done(status ?? 1));
  });
  const seconds = (performance.now() - started) / 1000;
  let maxRssKiB: number | null = null;
  let cpuSeconds: number | null = null;
  if (options.timed && timeFile) {
    const report = await readFile(timeFile, 'utf8').catch(() => '');
    const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(report);
    maxRssKiB = m ? Number(m[1]) : null;
    const user = /User time \(seconds\): ([\d.]+)/.exec(report);
    const system = /System time \(seconds\): ([\d.]+)/.exec(report);
    cpuSeconds = user && system ? Number(user[1]) + Number(system[1]) : null;
  }
  if (options.logFile) {
    await writeFile(
      options.logFile,
      `$ ${c.cmd} ${c.args.join(' ')}\n# cwd ${c.cwd}, exit ${code}, ${seconds.toFixed(2)} s\n` +
        `--- stdout\n${stdout}\n--- stderr\n${stderr}`,
    );
  }
  return { code, seconds, maxRssKiB, cpuSeconds, stdout, stderr };
}

/**
 * User plus system CPU seconds a running process has used so far, all its threads (Linux
 * /proc/PID/stat, utime and stime in clock ticks of 1/100 s); null where it cannot be read.
 */
function processCpuSeconds(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}

/** The line of a failed step's stderr that says what went wrong (not a stack frame). */
function errorLine(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('at ') && l !== '}');
  const line =
    lines.find((l) => /error|fatal/i.test(l)) ?? lines[lines.length - 1] ?? '(no stderr)';
  return line.length > 300 ? `${line.slice(0, 300)}...` : line;
}

/**
 * Flushes dirty data, then waits (at most 2 minutes) until the work directory's block device has
 * done no I/O for 2 s: deleting a previous run's gigabytes on a file system mounted with
 * `discard` keeps the device busy for a while, and whichever step ran then paid for it (the first
 * tool's full backup ran at 2/3 of its speed in one such run).
 */
async function settle(workDir: string): Promise<void> {
  await exec({ cmd: 'sync', args: [], cwd: '/' });
  const { dev } = await lstat(workDir);
  // Linux's dev_t: major is bits 8-19, minor bits 0-7 and 20-31 (small numbers fit this).
  const id = `${(dev >> 8) & 0xfff} ${(dev & 0xff) | ((dev >> 12) & 0xfff00)}`;
  const sample = async () =>
    (await readFile('/proc/diskstats', 'utf8').catch(() => ''))
      .split('\n')
      .find((line) => line.trim().startsWith(`${id} `)) ?? '';
  const deadline = Date.now() + 120_000;
  let last = await sample();
  let quiet = 0;
  while (last !== '' && quiet < 4 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const now = await sample();
    quiet = now === last ? quiet + 1 : 0;
    last = now;
  }
}

/**
 * Reads the file, or every file under the directory, that the next step reads, so that every
 * tool finds it in the page cache: this machine's kernel hands idle cache back to the hypervisor
 * within a minute or two, so without this the tools that run later would read from the disk.
 */
async function warm(path: string): Promise<void> {
  const info = await lstat(path);
  if (info.isDirectory()) {
    for (const entry of await readdir(path)) await warm(join(path, entry));
    return;
  }
  if (!info.isFile()) return;
  for await (const piece of createReadStream(path, { highWaterMark: 8 * MiB })) void piece;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const piece of createReadStream(path, { highWaterMark: 8 * MiB })) hash.update(piece);
  return hash.digest('hex');
}

/** Apparent bytes (what an object store would bill) and allocated bytes (what `du` shows). */
async function treeSize(dir: string): Promise<{ bytes: number; allocated: number; files: number }> {
  const out = { bytes: 0, allocated: 0, files: 0 };
  const walk = async (d: string): Promise<void> => {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const p = join(d, entry.name);
      if (entry.isDirectory()) await walk(p);
      else {
        const st = await lstat(p);
        out.bytes += st.size;
        out.allocated += st.blocks * 512;
        out.files++;
      }
    }
  };
  await walk(dir);
  return out;
}

async function findFile(dir: string, name: string): Promise<string | null> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) {
      const found = await findFile(p, name);
      if (found) return found;
    } else if (entry.name === name) return p;
  }
  return null;
}

// ---- the tools ------------------------------------------------------------------------------

interface ToolContext {
  data: Dataset;
  /** Directory holding full.img and incr.img (the peers back up relative names from here). */
  dataDir: string;
  /** This tool's scratch: repo/, restore/, logs, caches. */
  dir: string;
  repo: string;
  restoreDir: string;
}

interface Tool {
  name: ToolName;
  /** Why it cannot run here, or null. */
  unavailable(): Promise<string | null>;
  version(): Promise<string>;
  init(ctx: ToolContext): Command;
  backup(ctx: ToolContext, which: 'full' | 'incr'): Command;
  restore(ctx: ToolContext): Command;
  /** The restored incr.img after `restore` ran. */
  restoredFile(ctx: ToolContext): Promise<string | null>;
  /** Flags and defaults worth printing next to the numbers. */
  notes: string[];
}

async function firstLine(c: Command): Promise<string> {
  const r = await exec(c);
  return (r.stdout || r.stderr).trim().split('\n')[0] ?? '?';
}

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d !== '' && existsSync(join(d, cmd)));
}

function restic(): Tool {
  const env = (ctx: ToolContext): Record<string, string> => ({
    RESTIC_PASSWORD: PASSPHRASE,
    RESTIC_REPOSITORY: ctx.repo,
    RESTIC_CACHE_DIR: join(ctx.dir, 'cache'),
  });
  let backupFlags: string[] = [];
  const tool: Tool = {
    name: 'restic',
    notes: [],
    async unavailable() {
      if (!onPath('restic')) return 'restic is not installed (bash bench/setup.sh installs it)';
      // --no-scan (skip the pre-scan that only feeds the ETA) exists from restic 0.15 on.
      const help = await exec({ cmd: 'restic', args: ['backup', '--help'], cwd: '/' });
      backupFlags = help.stdout.includes('--no-scan') ? ['--no-scan'] : [];
      tool.notes.push(
        'repository v2, compression auto (zstd), default chunker (512 KiB-8 MiB, 1 MiB average)',
        backupFlags.length
          ? 'backup --no-scan'
          : 'no --no-scan in this version (added in 0.15); its scan of one file costs nothing',
      );
      return null;
    },
    version: () => firstLine({ cmd: 'restic', args: ['version'], cwd: '/' }),
    init: (ctx) => ({
      cmd: 'restic',
      args: ['init', '--repository-version', '2'],
      cwd: ctx.dataDir,
      env: env(ctx),
    }),
    backup: (ctx, which) => ({
      cmd: 'restic',
      args: ['backup', ...backupFlags, '--host', 'bench', `${which}.img`],
      cwd: ctx.dataDir,
      env: env(ctx),
    }),
    restore: (ctx) => ({
      cmd: 'restic',
      args: ['restore', 'latest', '--target', ctx.restoreDir],
      cwd: ctx.dataDir,
      env: env(ctx),
    }),
    // restic keeps absolute paths: the file comes back under <target>/<absolute dir>/incr.img.
    restoredFile: (ctx) => findFile(ctx.restoreDir, 'incr.img'),
  };
  return tool;
}

function borg(): Tool {
  const env = (ctx: ToolContext): Record<string, string> => ({
    BORG_PASSPHRASE: PASSPHRASE,
    BORG_REPO: ctx.repo,
    // config, keys cache, chunks cache and security dirs under the tool's scratch, not ~
    BORG_BASE_DIR: join(ctx.dir, 'home'),
    BORG_DISPLAY_PASSPHRASE: 'no',
  });
  return {
    name: 'borg',
    notes: [
      'repokey-blake2, default compression lz4, default chunker (buzhash 512 KiB-8 MiB, 2 MiB average)',
    ],
    async unavailable() {
      return onPath('borg') ? null : 'borg is not installed (bash bench/setup.sh installs it)';
    },
    version: () => firstLine({ cmd: 'borg', args: ['--version'], cwd: '/' }),
    init: (ctx) => ({
      cmd: 'borg',
      args: ['init', '--encryption=repokey-blake2'],
      cwd: ctx.dataDir,
      env: env(ctx),
    }),
    backup: (ctx, which) => ({
      cmd: 'borg',
      args: ['create', `::${which}`, `${which}.img`],
      cwd: ctx.dataDir,
      env: env(ctx),
    }),
    // borg extract writes the archived relative path (incr.img) under the current directory.
    restore: (ctx) => ({
      cmd: 'borg',
      args: ['extract', '::incr'],
      cwd: ctx.restoreDir,
      env: env(ctx),
    }),
    restoredFile: (ctx) => findFile(ctx.restoreDir, 'incr.img'),
  };
}

function stowage(): Tool {
  // The key and the stream records live beside the repository, not in it: stored bytes count the
  // repository alone, like the peers' (whose keys are inside theirs, a few hundred bytes).
  const step = (ctx: ToolContext, args: string[]): Command => ({
    cmd: process.execPath,
    args: [
      join(DIST, 'bench-step.mjs'),
      ...args,
      '--repo',
      ctx.repo,
      '--key',
      join(ctx.dir, 'stowage.key'),
    ],
    cwd: ROOT,
  });
  return {
    name: 'stowage',
    notes: [
      'DirStore repository, default chunking (FastCDC 256 KiB-4 MiB, 1 MiB average), default ' +
        'compression and workers; each step is `node dist/bench-step.mjs` (bench/stowage-step.ts ' +
        'as built by `npm run build`, like an agent host runs dist/stowage.mjs; Node start-up included)',
    ],
    async unavailable() {
      // Built from the sources of this checkout at every run, so it never measures stale code.
      await build();
      return null;
    },
    async version() {
      const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as {
        version: string;
      };
      const head = await exec({ cmd: 'git', args: ['rev-parse', '--short', 'HEAD'], cwd: ROOT });
      const dirty = await exec({ cmd: 'git', args: ['status', '--porcelain'], cwd: ROOT });
      const rev = head.code === 0 ? ` ${head.stdout.trim()}` : '';
      return `stowage ${pkg.version}${rev}${dirty.stdout.trim() ? ' + uncommitted changes' : ''}`;
    },
    init: (ctx) => ({ cmd: 'mkdir', args: ['-p', ctx.repo], cwd: ctx.dir }),
    backup: (ctx, which) =>
      step(ctx, [
        'backup',
        '--file',
        join(ctx.dataDir, `${which}.img`),
        '--record',
        join(ctx.dir, `${which}.record.json`),
      ]),
    restore: (ctx) =>
      step(ctx, [
        'restore',
        '--record',
        join(ctx.dir, 'incr.record.json'),
        '--out',
        join(ctx.restoreDir, 'incr.img'),
      ]),
    restoredFile: async (ctx) => {
      const p = join(ctx.restoreDir, 'incr.img');
      return existsSync(p) ? p : null;
    },
  };
}

// ---- one tool's run -------------------------------------------------------------------------

interface StepResult {
  /** Source bytes the step moved (the image it backed up, or the restored image). */
  bytes: number;
  seconds: number;
  mbPerSecond: number;
  maxRssKiB: number | null;
  /** CPU seconds (user + system, every thread and child) of the step, when timed. */
  cpuSeconds?: number | null;
}

interface ToolResult {
  tool: ToolName;
  version: string | null;
  notes: string[];
  /** 'n/a': not runnable here; 'failed': a step failed or restored wrong bytes. */
  status: 'ok' | 'n/a' | 'failed';
  reason?: string;
  full?: StepResult;
  incr?: StepResult;
  restore?: StepResult;
  storedAfterFull?: { bytes: number; allocated: number; files: number };
  storedAfterBoth?: { bytes: number; allocated: number; files: number };
  peakRssKiB?: number;
}

class StepFailed extends Error {
  override readonly name = 'StepFailed';
}

async function runTool(tool: Tool, data: Dataset, workDir: string): Promise<ToolResult> {
  const result: ToolResult = { tool: tool.name, version: null, notes: tool.notes, status: 'ok' };
  const why = await tool.unavailable();
  if (why) return { ...result, status: 'n/a', reason: why };
  result.version = await tool.version();

  const dir = join(workDir, tool.name);
  await rm(dir, { recursive: true, force: true });
  const ctx: ToolContext = {
    data,
    dataDir: dirname(data.full.path),
    dir,
    repo: join(dir, 'repo'),
    restoreDir: join(dir, 'restore'),
  };
  await mkdir(ctx.restoreDir, { recursive: true });

  const run = async (
    label: string,
    c: Command,
    bytes: number,
    reads: string,
  ): Promise<StepResult> => {
    await warm(reads);
    await settle(workDir);
    process.stderr.write(`  ${tool.name} ${label} ... `);
    const r = await exec(c, { timed: true, logFile: join(dir, `${label}.log`) });
    if (r.code !== 0) {
      process.stderr.write(`exit ${r.code}\n`);
      throw new StepFailed(
        `${label} exited ${r.code}: ${errorLine(r.stderr)} (log: ${join(dir, `${label}.log`)})`,
      );
    }
    const step = {
      bytes,
      seconds: r.seconds,
      mbPerSecond: bytes / 1e6 / r.seconds,
      maxRssKiB: r.maxRssKiB,
      cpuSeconds: r.cpuSeconds,
    };
    process.stderr.write(
      `${r.seconds.toFixed(1)} s, ${step.mbPerSecond.toFixed(0)} MB/s` +
        (r.cpuSeconds !== null ? `, ${r.cpuSeconds.toFixed(1)} CPU s\n` : '\n'),
    );
    return step;
  };

  try {
    const init = await exec(tool.init(ctx), { logFile: join(dir, 'init.log') });
    if (init.code !== 0) throw new StepFailed(`init exited ${init.code}: ${init.stderr.trim()}`);
    result.full = await run(
      'full-backup',
      tool.backup(ctx, 'full'),
      data.full.bytes,
      data.full.path,
    );
    result.storedAfterFull = await treeSize(ctx.repo);
    result.incr = await run(
      'incr-backup',
      tool.backup(ctx, 'incr'),
      data.incr.bytes,
      data.incr.path,
    );
    await settle(workDir);
    result.storedAfterBoth = await treeSize(ctx.repo);
    const restore = await run('restore', tool.restore(ctx), data.incr.bytes, ctx.repo);
    const restored = await tool.restoredFile(ctx);
    if (!restored) throw new StepFailed(`restore wrote no incr.img under ${ctx.restoreDir}`);
    const sha = await sha256File(restored);
    if (sha !== data.incr.sha256)
      throw new StepFailed(
        `restore returned wrong bytes (SHA-256 ${sha}, expected ${data.incr.sha256})`,
      );
    result.restore = restore;
  } catch (err) {
    if (!(err instanceof StepFailed)) throw err;
    result.status = 'failed';
    result.reason = err.message;
  } finally {
    // restored images are as big as the source: do not leave them around
    await rm(ctx.restoreDir, { recursive: true, force: true });
  }
  const rss = [result.full, result.incr, result.restore].map((s) => s?.maxRssKiB ?? 0);
  result.peakRssKiB = Math.max(...rss);
  return result;
}

// ---- through the product --------------------------------------------------------------------

/** The same three steps run the way a user runs them (see runProduct). */
interface ProductResult {
  status: 'ok' | 'failed';
  reason?: string;
  full?: StepResult;
  incr?: StepResult;
  restore?: StepResult;
  /** Each step's job, start to end as its record says (the data path and the control plane). */
  jobSeconds: Partial<Record<'full' | 'incr' | 'restore', number>>;
  storeBytes?: number;
  /** Run with `stowage start --s3-store` (the local S3 server) instead of the default store. */
  s3: boolean;
}

interface JobRecord {
  jobId: string;
  status: string;
  recoveryPointId?: string;
  startedAt?: string;
  endedAt?: string;
  createdAt?: string;
}

/**
 * The three steps through the installed `stowage` command (cli/bin.mjs, what `npm link` puts on
 * the PATH, running the bundle `npm run build` made) against a `stowage start` in its own
 * process with its default store: `stowage backup path:FILE --wait` twice and `stowage restore
 * POINT --name FILE --wait`, each timed around the whole command (Node and CLI start-up, the API,
 * the local Step Functions engine, the queue, the agent, commit-point and the CLI's polling
 * included), and each job's own start-to-end time from its record.
 */
async function runProduct(data: Dataset, workDir: string, s3 = false): Promise<ProductResult> {
  const result: ProductResult = { status: 'ok', jobSeconds: {}, s3 };
  const dir = join(workDir, 'product');
  await rm(dir, { recursive: true, force: true });
  const dataDir = join(dir, 'data');
  const restoreDir = join(dir, 'restore');
  await mkdir(restoreDir, { recursive: true });
  const bin = join(ROOT, 'cli/bin.mjs');
  const startArgs = [bin, 'start', '--data-dir', dataDir, '--port', '0'];
  const start = spawn(process.execPath, s3 ? [...startArgs, '--s3-store'] : startArgs, {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, STOWAGE_FROM_SOURCE: '' },
  });
  let startErr = '';
  start.stderr.setEncoding('utf8').on('data', (t: string) => (startErr += t.slice(-4096)));
  try {
    const api = await new Promise<string>((resolveUrl, reject) => {
      let out = '';
      start.stdout.setEncoding('utf8').on('data', (t: string) => {
        out += t;
        const m = /API:\s+(\S+)/.exec(out);
        if (m) resolveUrl(m[1]!);
      });
      start.once('exit', (code) => reject(new Error(`stowage start exited ${code}: ${startErr}`)));
    });
    const cli = (...args: string[]): Command => ({
      cmd: process.execPath,
      args: [bin, ...args, '--json'],
      cwd: ROOT,
      env: { STOWAGE_DATA_DIR: dataDir, STOWAGE_API: api },
    });
    const jobSeconds = async (jobId: string) => {
      const r = await exec(cli('job', jobId));
      const job = JSON.parse(r.stdout) as JobRecord;
      const from = job.startedAt ?? job.createdAt;
      return from && job.endedAt ? (Date.parse(job.endedAt) - Date.parse(from)) / 1000 : NaN;
    };
    const step = async (
      label: 'full' | 'incr' | 'restore',
      c: Command,
      bytes: number,
      reads: string,
    ): Promise<{ step: StepResult; job: JobRecord }> => {
      await warm(reads);
      await settle(workDir);
      process.stderr.write(`  stowage through the product${s3 ? ' (S3)' : ''} ${label} ... `);
      const cpuBefore = processCpuSeconds(start.pid);
      const r = await exec(c, { logFile: join(dir, `${label}.log`) });
      const cpuAfter = processCpuSeconds(start.pid);
      if (r.code !== 0) {
        process.stderr.write(`exit ${r.code}\n`);
        throw new StepFailed(`${label} exited ${r.code}: ${errorLine(r.stderr || r.stdout)}`);
      }
      const job = JSON.parse(r.stdout) as JobRecord;
      result.jobSeconds[label] = await jobSeconds(job.jobId);
      const out = {
        bytes,
        seconds: r.seconds,
        mbPerSecond: bytes / 1e6 / r.seconds,
        maxRssKiB: null,
        // stowage start's own process (agent and control plane), not the CLI's.
        cpuSeconds: cpuBefore !== null && cpuAfter !== null ? cpuAfter - cpuBefore : null,
      };
      process.stderr.write(
        `${r.seconds.toFixed(1)} s (job ${result.jobSeconds[label]!.toFixed(1)} s), ${out.mbPerSecond.toFixed(0)} MB/s` +
          (out.cpuSeconds !== null ? `, stowage start ${out.cpuSeconds.toFixed(1)} CPU s\n` : '\n'),
      );
      return { step: out, job };
    };
    const full = await step(
      'full',
      cli('backup', `path:${data.full.path}`, '--wait'),
      data.full.bytes,
      data.full.path,
    );
    result.full = full.step;
    const incr = await step(
      'incr',
      cli('backup', `path:${data.incr.path}`, '--wait'),
      data.incr.bytes,
      data.incr.path,
    );
    result.incr = incr.step;
    const dest = join(restoreDir, 'incr.img');
    const store = join(dataDir, s3 ? 's3' : 'store');
    const restore = await step(
      'restore',
      cli('restore', incr.job.recoveryPointId!, '--name', dest, '--wait'),
      data.incr.bytes,
      store,
    );
    const sha = await sha256File(dest);
    if (sha !== data.incr.sha256)
      throw new StepFailed(
        `restore returned wrong bytes (SHA-256 ${sha}, expected ${data.incr.sha256})`,
      );
    result.restore = restore.step;
    result.storeBytes = (await treeSize(store)).bytes;
  } catch (err) {
    if (!(err instanceof StepFailed)) throw err;
    result.status = 'failed';
    result.reason = err.message;
  } finally {
    start.kill('SIGTERM');
    await new Promise((r) => (start.exitCode !== null ? r(undefined) : start.once('exit', r)));
    await rm(restoreDir, { recursive: true, force: true });
  }
  return result;
}

// ---- the table ------------------------------------------------------------------------------

interface Row {
  label: string;
  value: (r: ToolResult) => number | undefined;
  format: (v: number) => string;
}

const ROWS: Row[] = [
  {
    label: 'full backup, MB/s',
    value: (r) => r.full?.mbPerSecond,
    format: (v) => v.toFixed(0),
  },
  {
    label: 'incremental backup, MB/s',
    value: (r) => r.incr?.mbPerSecond,
    format: (v) => v.toFixed(0),
  },
  {
    label: 'restore, MB/s',
    value: (r) => r.restore?.mbPerSecond,
    format: (v) => v.toFixed(0),
  },
  {
    label: 'stored after both backups, MiB (lower is better)',
    value: (r) => r.storedAfterBoth?.bytes,
    format: (v) => (v / MiB).toFixed(1),
  },
  {
    label: 'of which the incremental added, MiB (lower is better)',
    value: (r) =>
      r.storedAfterBoth && r.storedAfterFull
        ? r.storedAfterBoth.bytes - r.storedAfterFull.bytes
        : undefined,
    format: (v) => (v / MiB).toFixed(1),
  },
  ...(['full', 'incr', 'restore'] as const).map((step): Row => ({
    label: `${{ full: 'full backup', incr: 'incremental backup', restore: 'restore' }[step]}, CPU s per GiB (lower is better)`,
    value: (r) => {
      const s = r[step];
      return s?.cpuSeconds ? s.cpuSeconds / (s.bytes / 2 ** 30) : undefined;
    },
    format: (v) => v.toFixed(2),
  })),
  {
    label: 'peak RSS of any step, MiB (lower is better)',
    value: (r) => (r.peakRssKiB ? r.peakRssKiB * 1024 : undefined),
    format: (v) => (v / MiB).toFixed(0),
  },
];

function cell(r: ToolResult | undefined, row: Row): string {
  if (!r) return '-';
  if (r.status === 'n/a') return 'n/a';
  const v = row.value(r);
  if (v !== undefined) return row.format(v);
  return r.status === 'failed' ? 'failed' : '-';
}

function ratio(a: ToolResult | undefined, b: ToolResult | undefined, row: Row): string {
  const x = a && a.status !== 'n/a' ? row.value(a) : undefined;
  const y = b && b.status !== 'n/a' ? row.value(b) : undefined;
  if (x === undefined || y === undefined || y === 0) return 'n/a';
  return `${(x / y).toFixed(2)}x`;
}

/** The product's rows: its MB/s for a step against the peers' data-path MB/s for the same step. */
const PRODUCT_ROWS: Array<{ label: string; step: 'full' | 'incr' | 'restore' }> = [
  { label: 'full backup through the product, MB/s', step: 'full' },
  { label: 'incremental backup through the product, MB/s', step: 'incr' },
  { label: 'restore through the product, MB/s', step: 'restore' },
];

function table(
  results: ToolResult[],
  products: ProductResult[],
): { text: string; rows: Record<string, unknown>[] } {
  const by = (t: ToolName): ToolResult | undefined => results.find((r) => r.tool === t);
  const header = ['metric', 'stowage', 'restic', 'borg', 'stowage÷restic', 'stowage÷borg'];
  const productRows = products.flatMap((product) =>
    PRODUCT_ROWS.map(({ label: name, step }) => {
      const label = product.s3 ? name.replace(', MB/s', ' (--s3-store), MB/s') : name;
      const row: Row = {
        label,
        value: (r) => r[step]?.mbPerSecond,
        format: (v) => v.toFixed(0),
      };
      const ours = product[step]?.mbPerSecond;
      const vs = (peer: ToolResult | undefined) => {
        const theirs = peer && peer.status !== 'n/a' ? row.value(peer) : undefined;
        return ours !== undefined && theirs ? `${(ours / theirs).toFixed(2)}x` : 'n/a';
      };
      return [
        label,
        ours !== undefined ? ours.toFixed(0) : product.status,
        cell(by('restic'), row),
        cell(by('borg'), row),
        vs(by('restic')),
        vs(by('borg')),
      ];
    }),
  );
  const rows = ROWS.map((row) => [
    row.label,
    cell(by('stowage'), row),
    cell(by('restic'), row),
    cell(by('borg'), row),
    ratio(by('stowage'), by('restic'), row),
    ratio(by('stowage'), by('borg'), row),
  ]);
  rows.splice(3, 0, ...productRows);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    '| ' +
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ') +
    ' |';
  const text = [
    line(header),
    '|' +
      widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') +
      '|',
    ...rows.map(line),
  ].join('\n');
  return {
    text,
    rows: rows.map((r) => Object.fromEntries(header.map((h, i) => [h, r[i]]))),
  };
}

// ---- main -----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '2048' },
      work: { type: 'string' },
      keep: { type: 'boolean', default: false },
      only: { type: 'string', default: TOOLS.join(',') },
      seed: { type: 'string', default: '1' },
      product: { type: 'boolean', default: true },
      'product-s3': { type: 'boolean', default: false },
    },
  });
  const only = values.only.split(',').map((s) => s.trim());
  const unknown = only.filter((t) => !(TOOLS as readonly string[]).includes(t));
  if (unknown.length)
    throw new Error(`--only: unknown tool(s) ${unknown.join(', ')} (${TOOLS.join(', ')})`);
  const selected = TOOLS.filter((t) => only.includes(t));

  const ownWork = !values.work;
  const workDir = values.work
    ? resolve(values.work)
    : await mkdtemp(join('/var/tmp', 'stowage-bench-'));
  await mkdir(workDir, { recursive: true });

  const loadAtStart = loadavg()[0]!;
  const results: ToolResult[] = [];
  try {
    process.stderr.write(`work directory ${workDir}\n`);
    const data = await makeDataset(join(workDir, 'data'), {
      sizeMiB: Number(values.size),
      seed: Number(values.seed),
    });
    process.stderr.write(
      data.reused
        ? 'data set reused\n'
        : `data set generated in ${data.generateSeconds.toFixed(1)} s\n`,
    );

    const makers: Record<ToolName, () => Tool> = { stowage, restic, borg };
    const products: ProductResult[] = [];
    for (const name of selected) {
      results.push(await runTool(makers[name](), data, workDir));
      if (name === 'stowage' && values.product) products.push(await runProduct(data, workDir));
      if (name === 'stowage' && values['product-s3'])
        products.push(await runProduct(data, workDir, true));
    }

    const machine = {
      nproc: availableParallelism(),
      cpu: cpus()[0]?.model ?? 'unknown',
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      kernel: release(),
      node: process.version,
      loadAverage1m: { atStart: loadAtStart, atEnd: loadavg()[0]! },
    };
    const dataBytes = data.full.bytes + data.incr.bytes;
    const cacheNote =
      'Before each step what it reads (the image, or the repository for a restore) was read once, ' +
      (dataBytes < totalmem() / 2
        ? 'so every tool found it in the page cache: backups measure the tools, not the disk.'
        : 'but the data set may not fit in the page cache.');
    const { text, rows } = table(results, products);

    const out: string[] = [];
    out.push('');
    out.push(
      `machine: ${machine.nproc} cores, ${machine.cpu}, ${machine.memoryGiB} GiB RAM, ` +
        `Linux ${machine.kernel}, Node ${machine.node}; 1-minute load ` +
        `${machine.loadAverage1m.atStart.toFixed(1)} at start, ${machine.loadAverage1m.atEnd.toFixed(1)} at end`,
    );
    out.push(`data: ${describeDataset(data)}`);
    for (const r of results) {
      out.push(
        `${r.tool}: ${r.version ?? 'not run'}${r.notes.length ? `; ${r.notes.join('; ')}` : ''}`,
      );
    }
    out.push('');
    out.push(text);
    out.push('');
    out.push(
      'MB/s = source bytes (10^6) / wall seconds of the step, start-up included; restore = ' +
        'incr.img bytes. Ratios are stowage/peer for every row: above 1x is better for MB/s, ' +
        'below 1x is better where the row says lower is better. Stored = apparent bytes of the ' +
        'repository directory (keys and caches outside it are not counted).',
    );
    out.push(cacheNote);
    for (const product of products) {
      const job = (k: 'full' | 'incr' | 'restore') => product.jobSeconds[k]?.toFixed(1) ?? '-';
      const cmd = (k: 'full' | 'incr' | 'restore') => product[k]?.seconds.toFixed(1) ?? '-';
      const cpu = (k: 'full' | 'incr' | 'restore') => {
        const step = product[k];
        return step?.cpuSeconds ? (step.cpuSeconds / (step.bytes / 2 ** 30)).toFixed(2) : '-';
      };
      out.push(
        `Through the product${product.s3 ? ' (--s3-store)' : ''}: each step timed around the installed ` +
          `\`stowage\` command against a \`stowage start\` with ${product.s3 ? 'the local S3 server' : 'its default store'} (CLI start-up, API, workflow, queue, agent, ` +
          `commit and polling included); commands ${cmd('full')} / ${cmd('incr')} / ${cmd('restore')} s, ` +
          `their jobs' own records ${job('full')} / ${job('incr')} / ${job('restore')} s (full / incremental / restore), ` +
          `stowage start's CPU ${cpu('full')} / ${cpu('incr')} / ${cpu('restore')} s per GiB.`,
      );
      if (product.status !== 'ok')
        out.push(`stowage through the product failed: ${product.reason}`);
    }
    if (Math.max(loadAtStart, machine.loadAverage1m.atEnd) > machine.nproc / 2)
      out.push(
        'The machine was busy with other work during the run: absolute MB/s are low and ' +
          'noisy, and a tool that ran in a busier minute is disadvantaged; rerun on a quiet machine.',
      );
    for (const r of results) {
      if (r.status !== 'ok') out.push(`${r.tool} ${r.status}: ${r.reason}`);
    }
    console.log(out.join('\n'));

    const resultsDir = join(ROOT, 'bench/results');
    await mkdir(resultsDir, { recursive: true });
    await writeFile(
      join(resultsDir, 'latest.json'),
      JSON.stringify(
        {
          at: new Date().toISOString(),
          machine,
          dataset: {
            ...data,
            full: { ...data.full, path: undefined },
            incr: { ...data.incr, path: undefined },
            description: describeDataset(data),
          },
          notes: [cacheNote],
          results,
          products,
          table: rows,
        },
        null,
        2,
      ) + '\n',
    );
    console.log(`\nresults: ${join(resultsDir, 'latest.json')}`);
    if (results.some((r) => r.status === 'failed')) process.exitCode = 1;
  } finally {
    // A failed tool's directory (logs, repository) stays for a look; a given --work also keeps
    // its data set for the next run; everything else goes unless --keep.
    const failed = results.filter((r) => r.status === 'failed').map((r) => r.tool);
    if (values.keep) process.stderr.write(`kept ${workDir}\n`);
    else {
      const doomed = selected.filter((t) => !failed.includes(t)).map((t) => join(workDir, t));
      doomed.push(join(workDir, 'product'));
      if (ownWork && failed.length === 0) doomed.push(workDir);
      else if (ownWork) doomed.push(join(workDir, 'data'));
      for (const d of doomed) await rm(d, { recursive: true, force: true });
      for (const t of failed) process.stderr.write(`kept ${t}'s logs in ${join(workDir, t)}\n`);
    }
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
