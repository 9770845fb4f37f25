/**
 * A vSphere VM backup's rate against the simulator's own datastore read rate (issue 14's goal:
 * at least 80 % of it). Starts its own vcsim (test/fixtures/vcsim.ts), makes a VM whose one disk
 * holds bench/dataset.ts's full.img (random, zero and log-like regions), then on the same disk:
 *
 * 1. `datastore read`: the flat file read over `/folder` the way the driver reads it (4 ranged
 *    GETs of 8 MiB at a time, transport.ts), the bytes thrown away: what the simulator serves;
 * 2. `VM backup`: createVsphereDriver().backup() into a DirStore repository, every byte through
 *    the data path (chunk, hash, compress, encrypt, pack), snapshot taken and removed included;
 * 3. `data path alone`: the same bytes from the local flat file through the path driver's
 *    reader into the same kind of repository, for where the time goes.
 *
 * Each is run `--runs` times (default 3), alternating, after one warm-up read, with the file in
 * the page cache; the median of each is reported, with the ratio. Nothing else is timed.
 *
 *   npx tsx bench/vsphere.ts [--size MiB] [--runs N] [--work DIR]
 */
import { copyFile, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { PointWriter } from '../agents/core/points';
import type { DriverContext } from '../agents/core/driver';
import { createVsphereDriver } from '../agents/drivers/vsphere';
import { parseDatastorePath } from '../agents/drivers/vsphere/inventory';
import { rangedReader, PARALLEL_RANGES, RANGE_BYTES } from '../agents/drivers/vsphere/transport';
import { LocalKeyFile } from '../agents/repo/keys';
import { openRepository } from '../agents/repo/repository';
import type { WriteStats } from '../agents/repo/types';
import { DirStore } from '../agents/store/dir-store';
import { FILE_STREAM, openFileReader } from '../agents/drivers/path/bytes';
import { silentLogger } from '../kernel/logger';
import { createTestVm, flatOf, localFile, startVcsim } from '../test/fixtures/vcsim';
import { makeDataset, MiB } from './dataset';

const ctx: DriverContext = {
  log: silentLogger,
  signal: new AbortController().signal,
  phase: () => undefined,
};

/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on Linux). */
const HZ = 100;

/** CPU seconds a process has used (user + system), from /proc/PID/stat. */
async function cpuOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / HZ;
}

/** CPU seconds the whole machine has been busy (all cores), from /proc/stat. */
async function machineBusy(): Promise<number> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!;
  const t = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = t[3]! + t[4]!;
  return (t.reduce((a, b) => a + b, 0) - idle) / HZ;
}

interface Sample {
  /** Wall seconds. */
  wall: number;
  /** CPU seconds of this process (every thread: the data path's workers too). */
  node: number;
  /** CPU seconds of the simulator serving it. */
  sim: number;
  /** CPU seconds the rest of the machine used meanwhile: the other sessions' load. */
  others: number;
}

async function measured(simPid: number, run: () => Promise<void>): Promise<Sample> {
  const [busy0, sim0] = [await machineBusy(), await cpuOf(simPid)];
  const node0 = process.cpuUsage();
  const started = process.hrtime.bigint();
  await run();
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  const n = process.cpuUsage(node0);
  const node = (n.user + n.system) / 1e6;
  const sim = (await cpuOf(simPid)) - sim0;
  const others = Math.max(0, (await machineBusy()) - busy0 - node - sim);
  return { wall, node, sim, others };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1024' },
      runs: { type: 'string', default: '3' },
      work: { type: 'string' },
      // For profiling: run only some measures (read, backup, local), e.g. --only backup.
      only: { type: 'string', default: 'read,backup,local' },
    },
  });
  const only = new Set(values.only.split(','));
  const sizeMiB = Number(values.size);
  const runs = Number(values.runs);
  const capacity = sizeMiB * MiB;
  const work = values.work ?? (await mkdtemp(join(tmpdir(), 'stowage-bench-vsphere-')));
  const sim = await startVcsim();
  try {
    const data = await makeDataset(join(work, 'data'), { sizeMiB, seed: 1 });
    const { diskFiles } = await createTestVm(sim, 'bench-vm', [
      { capacity, bytes: Buffer.alloc(0) },
    ]);
    const flat = flatOf(diskFiles[0]!);
    await copyFile(data.full.path, localFile(sim, flat));
    const file = parseDatastorePath(flat, 'bench');

    // What each kind of backup stored (its last run): the VM disk is cut in fixed 4 MiB blocks,
    // the local file by the content-defined chunker.
    const stored: Partial<Record<'backup' | 'local', WriteStats>> = {};

    const readOnce = (): Promise<Sample> =>
      measured(sim.pid, async () => {
        const reader = rangedReader({
          capacity,
          fileSize: capacity,
          rangeBytes: RANGE_BYTES,
          parallel: PARALLEL_RANGES,
          signal: ctx.signal,
          fetch: (start, length, signal) => sim.files.openRange('DC0', file, start, length, signal),
        });
        const buf = Buffer.alloc(2 * MiB);
        let total = 0;
        for (let n = await reader.read(buf); n > 0; n = await reader.read(buf)) total += n;
        await reader.close();
        if (total !== capacity) throw new Error(`read ${total} bytes of ${capacity}`);
      });

    const driver = createVsphereDriver({
      url: sim.url,
      user: sim.user,
      passwordFile: sim.passwordFile,
    });
    const backupOnce = async (i: number): Promise<Sample> => {
      const repoDir = join(work, `repo-${i}`);
      const repo = await openRepository({
        store: new DirStore(repoDir),
        keys: new LocalKeyFile(join(work, `key-${i}`)),
      });
      const writer = repo.writer();
      const sink = new PointWriter(writer, () => undefined);
      let transport: unknown;
      const sample = await measured(sim.pid, async () => {
        const out = await driver.backup('DC0/vm/bench-vm', sink, ctx);
        await writer.flush();
        transport = out.summary.transport;
        stored.backup = { ...writer.stats };
      });
      await repo.close();
      if (sink.streams[0]?.size !== capacity) throw new Error('the backup stored a short disk');
      if (transport !== 'datastore-http') throw new Error('unexpected transport');
      await rm(repoDir, { recursive: true, force: true });
      return sample;
    };

    const dataPathOnce = async (i: number): Promise<Sample> => {
      const repoDir = join(work, `local-${i}`);
      const repo = await openRepository({
        store: new DirStore(repoDir),
        keys: new LocalKeyFile(join(work, `lkey-${i}`)),
      });
      const writer = repo.writer();
      const sink = new PointWriter(writer, () => undefined);
      const path = localFile(sim, flat);
      const sample = await measured(sim.pid, async () => {
        const handle = await open(path);
        const reader = await openFileReader(handle, ctx, 'bench', path);
        try {
          await sink.writeFrom(FILE_STREAM, reader.read);
        } finally {
          await reader.close();
          await handle.close();
        }
        await writer.flush();
        stored.local = { ...writer.stats };
      });
      await repo.close();
      await rm(repoDir, { recursive: true, force: true });
      return sample;
    };

    const load0 = (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');
    await readOnce(); // warm-up: the page cache, the simulator's first session
    const reads: Sample[] = [];
    const backups: Sample[] = [];
    const locals: Sample[] = [];
    for (let i = 0; i < runs; i++) {
      if (only.has('read')) reads.push(await readOnce());
      if (only.has('backup')) backups.push(await backupOnce(i));
      if (only.has('local')) locals.push(await dataPathOnce(i));
    }
    await driver.close();
    const load1 = (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');
    const gib = capacity / 2 ** 30;
    const mbs = (s: number) => capacity / 1e6 / s;
    const read = mbs(median(reads.map((x) => x.wall)));
    const backup = mbs(median(backups.map((x) => x.wall)));
    const row = (name: string, xs: Sample[]) => [
      name,
      mbs(median(xs.map((x) => x.wall))).toFixed(0),
      (median(xs.map((x) => x.node)) / gib).toFixed(2),
      (median(xs.map((x) => x.sim)) / gib).toFixed(2),
      (median(xs.map((x) => x.others / x.wall)) / cpus().length).toFixed(2),
      xs.map((x) => x.wall.toFixed(2)).join(' '),
    ];
    const rows = [
      ['measure', 'MB/s', 'node CPU-s/GiB', 'vcsim CPU-s/GiB', 'others', 'runs, s'],
      ...(reads.length ? [row('datastore read (4 x 8 MiB ranged GETs)', reads)] : []),
      ...(backups.length ? [row('VM backup (snapshot, read, data path, remove)', backups)] : []),
      ...(locals.length ? [row('data path alone (local flat file, path driver)', locals)] : []),
      ...(reads.length && backups.length
        ? [['backup / read', `${((backup / read) * 100).toFixed(0)} %`, 'goal: at least 80 %']]
        : []),
    ];
    console.log(
      `vSphere bench: one ${sizeMiB} MiB disk of bench/dataset.ts's full.img on vcsim; load average ${load0} before, ${load1} after`,
    );
    console.log(
      '(medians; "others": the share of the cores that other processes kept busy meanwhile)',
    );
    for (const r of rows) {
      console.log(
        `${r[0]!.padEnd(48)} ${r[1]!.padStart(6)} ${(r[2] ?? '').padStart(15)} ${(r[3] ?? '').padStart(16)} ${(r[4] ?? '').padStart(7)}  ${r[5] ?? ''}`,
      );
    }
    for (const [name, st] of Object.entries(stored)) {
      console.log(
        `stored by the ${name === 'backup' ? 'VM backup' : 'data path alone'}: ${(st.bytesStored / 2 ** 20).toFixed(1)} MiB in ${st.newChunks} new chunks of ${st.chunks}`,
      );
    }
  } finally {
    await sim.stop();
    if (!values.work) await rm(work, { recursive: true, force: true });
  }
}

await main();
