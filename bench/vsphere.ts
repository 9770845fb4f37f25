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
import { copyFile, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { PointWriter } from '../agents/core/points';
import type { DriverContext } from '../agents/core/driver';
import { createVsphereDriver } from '../agents/drivers/vsphere';
import { parseDatastorePath } from '../agents/drivers/vsphere/inventory';
import { rangedReader, PARALLEL_RANGES, RANGE_BYTES } from '../agents/drivers/vsphere/transport';
import { LocalKeyFile } from '../agents/repo/keys';
import { openRepository } from '../agents/repo/repository';
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
    },
  });
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

    const readOnce = async (): Promise<number> => {
      const started = process.hrtime.bigint();
      const reader = rangedReader({
        capacity,
        fileSize: capacity,
        rangeBytes: RANGE_BYTES,
        parallel: PARALLEL_RANGES,
        signal: ctx.signal,
        fetch: (start, into, signal) => sim.files.readRange('DC0', file, start, into, signal),
      });
      const buf = Buffer.alloc(4 * MiB);
      let total = 0;
      for (let n = await reader.read(buf); n > 0; n = await reader.read(buf)) total += n;
      await reader.close();
      if (total !== capacity) throw new Error(`read ${total} bytes of ${capacity}`);
      return Number(process.hrtime.bigint() - started) / 1e9;
    };

    const driver = createVsphereDriver({
      url: sim.url,
      user: sim.user,
      passwordFile: sim.passwordFile,
    });
    const backupOnce = async (i: number): Promise<number> => {
      const repoDir = join(work, `repo-${i}`);
      const repo = await openRepository({
        store: new DirStore(repoDir),
        keys: new LocalKeyFile(join(work, `key-${i}`)),
      });
      const started = process.hrtime.bigint();
      const writer = repo.writer();
      const sink = new PointWriter(writer, () => undefined);
      const out = await driver.backup('DC0/vm/bench-vm', sink, ctx);
      await writer.flush();
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      await repo.close();
      if (sink.streams[0]?.size !== capacity) throw new Error('the backup stored a short disk');
      if (out.summary.transport !== 'datastore-http') throw new Error('unexpected transport');
      await rm(repoDir, { recursive: true, force: true });
      return seconds;
    };

    const dataPathOnce = async (i: number): Promise<number> => {
      const repoDir = join(work, `local-${i}`);
      const repo = await openRepository({
        store: new DirStore(repoDir),
        keys: new LocalKeyFile(join(work, `lkey-${i}`)),
      });
      const started = process.hrtime.bigint();
      const writer = repo.writer();
      const sink = new PointWriter(writer, () => undefined);
      const path = localFile(sim, flat);
      const handle = await open(path);
      const reader = await openFileReader(handle, ctx, 'bench', path);
      try {
        await sink.writeFrom(FILE_STREAM, reader.read);
      } finally {
        await reader.close();
        await handle.close();
      }
      await writer.flush();
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      await repo.close();
      await rm(repoDir, { recursive: true, force: true });
      return seconds;
    };

    await readOnce(); // warm-up: the page cache, the simulator's first session
    const reads: number[] = [];
    const backups: number[] = [];
    const locals: number[] = [];
    for (let i = 0; i < runs; i++) {
      reads.push(await readOnce());
      backups.push(await backupOnce(i));
      locals.push(await dataPathOnce(i));
    }
    await driver.close();
    const mbs = (s: number) => capacity / 1e6 / s;
    const read = mbs(median(reads));
    const backup = mbs(median(backups));
    const rows = [
      ['measure', 'MB/s (median)', 'runs, s'],
      [
        'datastore read (4 x 8 MiB ranged GETs)',
        read.toFixed(0),
        reads.map((s) => s.toFixed(2)).join(' '),
      ],
      [
        'VM backup (snapshot, read, data path, remove)',
        backup.toFixed(0),
        backups.map((s) => s.toFixed(2)).join(' '),
      ],
      [
        'data path alone (local flat file, path driver)',
        mbs(median(locals)).toFixed(0),
        locals.map((s) => s.toFixed(2)).join(' '),
      ],
      ['backup / read', `${((backup / read) * 100).toFixed(0)} %`, 'goal: at least 80 %'],
    ];
    console.log(`vSphere bench: one ${sizeMiB} MiB disk of bench/dataset.ts's full.img on vcsim`);
    for (const r of rows) console.log(`${r[0]!.padEnd(48)} ${r[1]!.padStart(14)}  ${r[2]}`);
  } finally {
    await sim.stop();
    if (!values.work) await rm(work, { recursive: true, force: true });
  }
}

await main();
