/**
 * `npm run bench:tree`: a Docker volume of many files of mixed sizes, backed up by Stowage's agent
 * (the docker driver reading the volume on the host as a tree stream, through the runner, into a
 * directory store: the data path, no control plane) and by restic (reading the same volume's
 * host path) in the same run, both into a local directory: a full backup, then an incremental
 * after 1 % of the files were rewritten. Prints each time and the ratios; then one 1 MiB file
 * restored alone out of the volume's point (file-level restore); then the same for an LXD
 * instance on the `dir` pool (its rootfs holding the same mix of files, read on the host by the lxd
 * driver, restic reading the instance's directory; `--only docker|lxd` runs one). With `--small N`: N small files
 * backed up by Stowage (a child process running the bundle, dist/bench-tree.mjs, as an agent runs
 * dist/stowage.mjs, so its peak RSS is its own) and by restic, full and again with nothing
 * changed, times and peak RSS of both. `--phases` prints where each backup's time goes.
 *
 *   npm run bench:tree -- --size 1024 --files 3166     # the issue's volume (1 GiB, 3,166 files)
 *   npm run bench:tree -- --small 1000000              # a million small files
 *
 * Before each step every file is read once, so both tools find the volume in the page cache.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, promises as fs, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Docker from 'dockerode';
import { getOverUnixSocket } from '../agents/core/http-answer';
import { MemoryParentRegistry } from '../agents/core/parents';
import { ProgressReporter } from '../agents/core/progress';
import { runBackup, runRestore, type RunnerDeps } from '../agents/core/runner';
import { createDockerDriver } from '../agents/drivers/docker';
import { createLxdDriver } from '../agents/drivers/lxd';
import { LxdClient } from '../agents/drivers/lxd/client';
import { createPathDriver } from '../agents/drivers/path';
import { StaticKey } from '../agents/repo/keys';
import { Repository } from '../agents/repo/repository';
import { DirStore } from '../agents/store/dir-store';
import { createLogger, silentLogger, type Logger } from '../kernel/logger';
import type { BackupTask } from '../statemachines/contracts';

const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: '1024' },
    files: { type: 'string', default: '3166' },
    small: { type: 'string' },
    'small-child': { type: 'string' },
    phases: { type: 'boolean', default: false },
    only: { type: 'string' },
  },
});

const docker = new Docker({ socketPath: '/var/run/docker.sock' });
const LXD_SOCKET = '/var/lib/lxd/unix.socket';
/** The `dir` pool local/engines/setup-lxd.sh makes (its `source`). */
const LXD_POOL_DIR = '/var/lib/lxd/storage-pools/default';

/**
 * `--phases`: each phase of the agent's backups on stderr with the seconds since the last one
 * (where a backup's time goes: holds, commit, image, each volume, the index, the manifest).
 */
function phaseLogger(): Logger {
  let last = performance.now();
  return createLogger({
    service: 'bench',
    level: 'info',
    write: (line) => {
      const { phase, step } = JSON.parse(line) as { phase?: string; step?: string };
      if (!phase && !step) return;
      const now = performance.now();
      process.stderr.write(`  +${((now - last) / 1000).toFixed(2)} s before: ${phase ?? step}\n`);
      last = now;
    },
  });
}
const IMAGE = 'stowage-test/busybox:latest';
let seq = 0;

function run() {
  return {
    progress: new ProgressReporter(async () => undefined, 60_000),
    signal: new AbortController().signal,
  };
}

function task(target: string): BackupTask {
  seq++;
  return {
    kind: 'BACKUP',
    jobId: `job-${seq}`,
    itemIndex: 0,
    recoveryPointId: `rp-${String(seq).padStart(6, '0')}`,
    target,
    options: {},
  };
}

/** Wall seconds and this process's CPU seconds (its worker threads included) around `f`. */
async function timed<T>(f: () => Promise<T>): Promise<{ s: number; cpu: number; value: T }> {
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  const value = await f();
  const c = process.cpuUsage(c0);
  return { s: Number(process.hrtime.bigint() - t0) / 1e9, cpu: (c.user + c.system) / 1e6, value };
}

function warm(dir: string): void {
  execFileSync('sh', ['-c', `find "${dir}" -type f -exec cat {} + > /dev/null`]);
}

/** Bytes of a stream, read to its end and thrown away. */
async function drain(stream: AsyncIterable<unknown>): Promise<number> {
  let bytes = 0;
  for await (const chunk of stream) bytes += (chunk as Uint8Array).length;
  return bytes;
}

/**
 * The engine's own export of a Docker volume, as the driver's fallback reads it: the tar of
 * `GET /containers/{helper}/archive` of a stopped helper that mounts the volume read-only, read
 * to its end with the driver's own reader (agents/core/http-answer.ts, cheaper than Node's http
 * client: the export is not slowed by a costlier reader than the backup's) into one buffer and
 * thrown away (helper made and removed outside the timing).
 */
async function dockerExport(volume: string): Promise<{ s: number; bytes: number }> {
  const helper = await docker.createContainer({
    Image: IMAGE,
    Cmd: ['true'],
    HostConfig: { Binds: [`${volume}:/vol:ro`] },
  });
  try {
    const t0 = process.hrtime.bigint();
    const answer = await getOverUnixSocket(
      '/var/run/docker.sock',
      `/containers/${helper.id}/archive?path=%2Fvol`,
    );
    if (answer.status !== 200) throw new Error(`export: HTTP ${answer.status}`);
    const into = Buffer.allocUnsafe(2 * 1024 * 1024);
    let bytes = 0;
    for (let n; (n = await answer.read(into)) > 0;) bytes += n;
    answer.close();
    return { s: Number(process.hrtime.bigint() - t0) / 1e9, bytes };
  } finally {
    await helper.remove({ force: true }).catch(() => undefined);
  }
}

/**
 * LXD's own export of an instance, as the driver's fallback reads it: a backup without snapshots
 * and without compression made (`POST .../backups`, waited for), downloaded to its end and thrown
 * away, then deleted (the delete not timed).
 */
async function lxdExport(lxd: LxdClient, name: string): Promise<{ s: number; bytes: number }> {
  const path = `/1.0/instances/${name}/backups/bench-export`;
  const t0 = process.hrtime.bigint();
  await lxd.run('POST', `/1.0/instances/${name}/backups`, {
    name: 'bench-export',
    instance_only: true,
    optimized_storage: false,
    compression_algorithm: 'none',
  });
  try {
    const bytes = await drain((await lxd.download(`${path}/export`)).stream);
    return { s: Number(process.hrtime.bigint() - t0) / 1e9, bytes };
  } finally {
    await lxd.run('DELETE', path).catch(() => undefined);
  }
}

/** The line comparing a full backup through the engine's API with the engine's own export. */
function engineApiLine(
  what: string,
  exported: { s: number; bytes: number },
  ours: { s: number; cpu: number },
): string {
  const rate = (s: number) => (exported.bytes / 1e6 / s).toFixed(0);
  return `${what} through the engine's API (an agent without host access): full backup ${ours.s.toFixed(2)} s (${rate(ours.s)} MB/s, ${ours.cpu.toFixed(1)} CPU s) against the engine's own export of the same data, read and thrown away, ${exported.s.toFixed(2)} s (${rate(exported.s)} MB/s, ${(exported.bytes / 1048576).toFixed(0)} MiB): ${((exported.s / ours.s) * 100).toFixed(0)} % of the export's rate`;
}

/** Mixed sizes: many small files, some medium, a few large (log-uniform, 1 KiB .. 64 MiB). */
function sizes(total: number, count: number, seed: number): number[] {
  let x = seed;
  const rnd = () => (x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const raw = Array.from({ length: count }, () =>
    Math.exp(Math.log(1024) + rnd() * Math.log(65536)),
  );
  const sum = raw.reduce((a, b) => a + b, 0);
  return raw.map((r) => Math.max(1, Math.floor((r / sum) * total)));
}

async function fill(root: string, list: number[]): Promise<void> {
  for (let i = 0; i < list.length; i++) {
    const dir = join(root, `d${i % 40}`, `e${i % 7}`);
    await fs.mkdir(dir, { recursive: true });
    // Half random, half text-like, as volumes hold both.
    const n = list[i]!;
    const bytes =
      i % 2
        ? randomBytes(n)
        : Buffer.from('log line 0123456789 abcdef\n'.repeat(Math.ceil(n / 27))).subarray(0, n);
    await fs.writeFile(join(dir, `f${i}.bin`), bytes);
  }
}

function restic(repo: string, ...a: string[]): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('restic', ['--no-cache', ...a], {
    env: { ...process.env, RESTIC_PASSWORD: 'bench', RESTIC_REPOSITORY: repo },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`restic ${a.join(' ')}: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** Writes `count` small files (14 to 20 bytes each) under `src`, 1,000 to a directory. */
function makeSmallFiles(src: string, count: number): void {
  for (let i = 0; i < count; i++) {
    const d = join(src, `d${Math.floor(i / 1000)}`);
    if (i % 1000 === 0) mkdirSync(d, { recursive: true });
    writeFileSync(join(d, `f${i}`), `small file ${i}\n`);
  }
}

/** The child of `--small`: backs up `src` twice (full, then nothing changed) in this process. */
async function smallChild(src: string): Promise<void> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'stowage-small-'));
  const repo = await Repository.open({
    store: new DirStore(join(dir, 'store')),
    keys: new StaticKey(randomBytes(32)),
  });
  const deps: RunnerDeps = {
    agent: 'bench',
    drivers: new Map([['path', createPathDriver()]]),
    repository: async () => repo,
    log: silentLogger,
    parents: new MemoryParentRegistry(),
  };
  const full = await timed(() => runBackup(deps, task(`path:${src}`), run()));
  const fullRss = process.resourceUsage().maxRSS / 1024;
  const incr = await timed(() => runBackup(deps, task(`path:${src}`), run()));
  await repo.close();
  await fs.rm(dir, { recursive: true, force: true });
  const rss = process.resourceUsage().maxRSS / 1024;
  console.log(
    JSON.stringify({
      fullS: full.s,
      incrementalS: incr.s,
      incrementalRead: incr.value.bytesRead,
      fullPeakRssMiB: Math.round(fullRss),
      peakRssMiB: Math.round(rss),
    }),
  );
}

/** restic's wall and CPU seconds and peak RSS (GNU time) for one command. */
function resticTimed(repo: string, ...a: string[]): { s: number; cpu: number; rssMiB: number } {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S %M', 'restic', '--no-cache', ...a], {
    env: { ...process.env, RESTIC_PASSWORD: 'bench', RESTIC_REPOSITORY: repo },
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`restic ${a.join(' ')}: ${r.stderr}`);
  const [s, user, sys, kib] = r.stderr.trim().split('\n').pop()!.split(' ').map(Number);
  return { s: s!, cpu: user! + sys!, rssMiB: Math.round(kib! / 1024) };
}

/**
 * `--small N`: N small files, backed up by Stowage's runner in a child process (so its peak RSS
 * is the backup's: tsx, the repository, the codec workers and the walk included) and by restic,
 * full and then again with nothing changed.
 */
async function smallFiles(count: number): Promise<void> {
  const work = await fs.mkdtemp(join('/var/tmp', 'stowage-bench-small-'));
  try {
    const src = join(work, 'src');
    makeSmallFiles(src, count);
    warm(src);
    // The child runs as the agent does, from the bundle (no TypeScript loader in its RSS). The
    // build module is loaded here only: bundled into the child's own file, it would take the
    // child's command line for its own.
    const { build, DIST } = await import('../cli/build');
    await build();
    const r = spawnSync(process.execPath, [join(DIST, 'bench-tree.mjs'), '--small-child', src], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    if (r.status !== 0) throw new Error(`the Stowage child failed (${r.status})`);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, number>;
    const resticRepo = join(work, 'restic');
    restic(resticRepo, 'init', '--repository-version', '2');
    warm(src);
    const rFull = resticTimed(resticRepo, 'backup', '--host', 'bench', src);
    const rIncr = resticTimed(resticRepo, 'backup', '--host', 'bench', src);
    console.log(`tree of ${count} small files (path:, into a directory store)`);
    console.log('| | stowage | restic | stowage ÷ restic |');
    console.log('| --- | ---: | ---: | ---: |');
    const row = (what: string, a: number, b: number, unit: string) =>
      console.log(
        `| ${what} | ${a.toFixed(1)} ${unit} | ${b.toFixed(1)} ${unit} | ${(a / b).toFixed(2)}x |`,
      );
    row('full backup', out.fullS!, rFull.s, 's');
    row('incremental, nothing changed', out.incrementalS!, rIncr.s, 's');
    row('peak RSS (whole process)', out.peakRssMiB!, Math.max(rFull.rssMiB, rIncr.rssMiB), 'MiB');
    console.log(`stowage's incremental read ${out.incrementalRead} bytes`);
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

/**
 * The LXD instance rows: a running container on the `dir` pool whose rootfs holds the same mix of
 * files under /data (owned by the container's root, host uid 100000, as LXD keeps it), backed up
 * by the lxd driver reading the instance's directory on the host as a tree stream, and by restic
 * reading the same directory; full, then after 1 % of the files were rewritten.
 */
async function lxdInstance(total: number, count: number, work: string): Promise<void> {
  const lxd = new LxdClient({ socketPath: LXD_SOCKET, project: 'default' });
  const name = `stowage-bench-${randomBytes(3).toString('hex')}`;
  await lxd.run('POST', '/1.0/instances', {
    name,
    source: { type: 'image', alias: 'stowage-test/busybox' },
  });
  const dir = join(LXD_POOL_DIR, 'containers', name);
  const data = join(dir, 'rootfs', 'data');
  const list = sizes(total, count, 11);
  const repo = await Repository.open({
    store: new DirStore(join(work, 'stowage-lxd')),
    keys: new StaticKey(randomBytes(32)),
  });
  const deps: RunnerDeps = {
    agent: 'bench',
    drivers: new Map([['lxd', createLxdDriver({ socketPath: LXD_SOCKET })]]),
    repository: async () => repo,
    log: args.phases ? phaseLogger() : silentLogger,
    parents: new MemoryParentRegistry(),
  };
  const apiRepo = await Repository.open({
    store: new DirStore(join(work, 'stowage-lxd-api')),
    keys: new StaticKey(randomBytes(32)),
  });
  const apiDeps: RunnerDeps = {
    ...deps,
    drivers: new Map([['lxd', createLxdDriver({ socketPath: LXD_SOCKET, hostAccess: false })]]),
    repository: async () => apiRepo,
    parents: new MemoryParentRegistry(),
  };
  const resticRepo = join(work, 'restic-lxd');
  try {
    await fill(data, list);
    execFileSync('chown', ['-R', '100000:100000', data]);
    await lxd.run('PUT', `/1.0/instances/${name}/state`, { action: 'start', timeout: -1 });
    restic(resticRepo, 'init', '--repository-version', '2');
    warm(dir);
    const sFull = await timed(() => runBackup(deps, task(`lxd:${name}`), run()));
    warm(dir);
    const rFull = resticTimed(resticRepo, 'backup', '--host', 'bench', dir);
    const changed = list.map((_, i) => i).filter((i) => i % 100 === 0);
    for (const i of changed) {
      await fs.writeFile(join(data, `d${i % 40}`, `e${i % 7}`, `f${i}.bin`), randomBytes(list[i]!));
    }
    warm(dir);
    const sIncr = await timed(() => runBackup(deps, task(`lxd:${name}`), run()));
    warm(dir);
    const rIncr = resticTimed(resticRepo, 'backup', '--host', 'bench', dir);
    // The fallback for a pool the agent cannot see: LXD's export, through the API.
    warm(dir);
    const exported = await lxdExport(lxd, name);
    warm(dir);
    const api = await timed(() => runBackup(apiDeps, task(`lxd:${name}`), run()));
    const mib = (n: number) => (n / 1048576).toFixed(0);
    console.log(
      `LXD instance (dir pool, read on the host): ${mib(list.reduce((a, b) => a + b, 0))} MiB in ${count} files under /data plus the busybox rootfs; ${changed.length} files (1 %) rewritten for the incremental`,
    );
    console.log(
      '| step | stowage s | restic s | stowage ÷ restic time | stowage CPU s | restic CPU s |',
    );
    console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
    for (const [what, ours, theirs] of [
      ['full backup', sFull, rFull],
      ['incremental, 1 % of files', sIncr, rIncr],
    ] as const) {
      console.log(
        `| ${what} | ${ours.s.toFixed(2)} | ${theirs.s.toFixed(2)} | ${(ours.s / theirs.s).toFixed(2)}x | ${ours.cpu.toFixed(1)} | ${theirs.cpu.toFixed(1)} |`,
      );
    }
    console.log(`${engineApiLine('LXD instance', exported, api)}`);
    console.log(
      `incremental ÷ full (stowage): ${((sIncr.s / sFull.s) * 100).toFixed(0)} %; instance bytes read: full ${mib(sFull.value.bytesRead)} MiB, incremental ${mib(sIncr.value.bytesRead)} MiB (the rewritten files: ${mib(changed.reduce((n, i) => n + list[i]!, 0))} MiB)`,
    );
  } finally {
    await repo.close();
    await apiRepo.close();
    await lxd
      .run('PUT', `/1.0/instances/${name}/state`, { action: 'stop', force: true, timeout: -1 })
      .catch(() => undefined);
    await lxd.run('DELETE', `/1.0/instances/${name}`).catch(() => undefined);
  }
}

async function main(): Promise<void> {
  if (args['small-child']) return smallChild(args['small-child']);
  if (args.small) return smallFiles(Number(args.small));
  const total = Number(args.size) * 1024 * 1024;
  const count = Number(args.files);
  if (args.only === 'lxd') {
    const work = await fs.mkdtemp(join('/var/tmp', 'stowage-bench-lxd-'));
    try {
      return await lxdInstance(total, count, work);
    } finally {
      await fs.rm(work, { recursive: true, force: true });
    }
  }
  const RUN = `stowage-bench-tree-${randomBytes(3).toString('hex')}`;
  const work = await fs.mkdtemp(join('/var/tmp', 'stowage-bench-tree-'));
  const volume = `${RUN}-data`;
  await docker.createVolume({ Name: volume });
  const mount = ((await docker.getVolume(volume).inspect()) as { Mountpoint: string }).Mountpoint;
  const list = sizes(total, count, 7);
  await fill(mount, list);
  await docker.createContainer({
    name: RUN,
    Image: IMAGE,
    Cmd: ['sleep', '100000'],
    HostConfig: { Binds: [`${volume}:/data`] },
  });
  await docker.getContainer(RUN).start();
  const repo = await Repository.open({
    store: new DirStore(join(work, 'stowage')),
    keys: new StaticKey(randomBytes(32)),
  });
  const deps: RunnerDeps = {
    agent: 'bench',
    drivers: new Map([['docker', createDockerDriver()]]),
    repository: async () => repo,
    log: args.phases ? phaseLogger() : silentLogger,
    parents: new MemoryParentRegistry(),
  };
  const apiRepo = await Repository.open({
    store: new DirStore(join(work, 'stowage-api')),
    keys: new StaticKey(randomBytes(32)),
  });
  const apiDeps: RunnerDeps = {
    ...deps,
    drivers: new Map([['docker', createDockerDriver({ hostAccess: false })]]),
    repository: async () => apiRepo,
    parents: new MemoryParentRegistry(),
  };
  const resticRepo = join(work, 'restic');
  try {
    restic(resticRepo, 'init', '--repository-version', '2');
    warm(mount);
    const sFull = await timed(() => runBackup(deps, task(`docker:${RUN}`), run()));
    warm(mount);
    const rFull = resticTimed(resticRepo, 'backup', '--host', 'bench', mount);
    // 1 % of the files rewritten (new random bytes, same size).
    const changed = list.map((_, i) => i).filter((i) => i % 100 === 0);
    for (const i of changed) {
      const path = join(mount, `d${i % 40}`, `e${i % 7}`, `f${i}.bin`);
      await fs.writeFile(path, randomBytes(list[i]!));
    }
    warm(mount);
    const sIncr = await timed(() => runBackup(deps, task(`docker:${RUN}`), run()));
    warm(mount);
    const rIncr = resticTimed(resticRepo, 'backup', '--host', 'bench', mount);
    // The fallback for a volume the agent cannot see: dockerd's archive API through a helper.
    warm(mount);
    const exported = await dockerExport(volume);
    warm(mount);
    const api = await timed(() => runBackup(apiDeps, task(`docker:${RUN}`), run()));
    // The image's bytes, when the backup read them (not taken from the parent point).
    const image = (r: typeof sFull.value) =>
      r.summary.imageFrom ? 0 : (r.streams.find((s) => s.name === 'image')?.size ?? 0);
    // One file of about 1 MiB, restored alone.
    const one = list.findIndex((n) => n > 900_000 && n < 1_400_000);
    const oneRun = run();
    const fileRestore = await timed(() =>
      runRestore(
        deps,
        {
          kind: 'RESTORE',
          jobId: `job-${++seq}`,
          recoveryPointId: sIncr.value.recoveryPointId,
          source: `docker:${RUN}`,
          target: `docker:${RUN}`,
          inPlace: false,
          options: { files: [`d${one % 40}/e${one % 7}/f${one}.bin`], dest: join(work, 'one') },
        },
        oneRun,
      ),
    );
    const mib = (n: number) => (n / 1048576).toFixed(0);
    console.log(
      `Docker volume: ${mib(list.reduce((a, b) => a + b, 0))} MiB in ${count} files; ${changed.length} files (1 %) rewritten for the incremental`,
    );
    console.log(
      `load average at the end: ${loadavg()
        .map((n) => n.toFixed(1))
        .join(' ')}`,
    );
    console.log(
      '| step | stowage s | restic s | stowage ÷ restic time | stowage CPU s | restic CPU s | data path MB/s |',
    );
    console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    const rate = (r: typeof sFull) => (r.value.bytesRead / 1e6 / r.s).toFixed(0);
    for (const [what, ours, theirs] of [
      ['full backup', sFull, rFull],
      ['incremental, 1 % of files', sIncr, rIncr],
    ] as const) {
      console.log(
        `| ${what} | ${ours.s.toFixed(2)} | ${theirs.s.toFixed(2)} | ${(ours.s / theirs.s).toFixed(2)}x | ${ours.cpu.toFixed(1)} | ${theirs.cpu.toFixed(1)} | ${rate(ours)} |`,
      );
    }
    console.log(
      `incremental ÷ full (stowage): ${((sIncr.s / sFull.s) * 100).toFixed(0)} %; volume bytes read: full ${mib(sFull.value.bytesRead - image(sFull.value))} MiB, incremental ${mib(sIncr.value.bytesRead - image(sIncr.value))} MiB; the committed image: ${mib(image(sFull.value))} MiB read by the full, ${sIncr.value.summary.imageFrom ? 'taken from it by the incremental (the writable layer unchanged)' : `${mib(image(sIncr.value))} MiB read by the incremental`}`,
    );
    console.log(engineApiLine('Docker volume', exported, api));
    console.log(
      `file-level restore of one ${(list[one]! / 1048576).toFixed(2)} MiB file: ${fileRestore.s.toFixed(2)} s, ${mib(oneRun.progress.total)} MiB read`,
    );
    if (args.only !== 'docker') await lxdInstance(total, count, work);
  } finally {
    await repo.close();
    await apiRepo.close();
    await docker
      .getContainer(RUN)
      .remove({ force: true })
      .catch(() => undefined);
    await docker
      .getVolume(volume)
      .remove()
      .catch(() => undefined);
    await fs.rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
