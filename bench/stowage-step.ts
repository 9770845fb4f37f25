/**
 * Stowage's side of the benchmark: one step per process, so that the harness times and measures
 * it exactly like restic's and borg's (wall clock and peak RSS of a child under /usr/bin/time,
 * Node start-up included). bench/run.ts runs it as built by cli/build.ts:
 *
 *   node dist/bench-step.mjs backup  --repo DIR --key FILE --file IMG --record REC
 *   node dist/bench-step.mjs restore --repo DIR --key FILE --record REC --out FILE
 *
 * `backup` writes one stream into the repository in DIR (a DirStore), flushes, and saves the
 * StreamRecord as JSON in REC (outside the repository, like the key file, so the repository's size
 * is what Stowage stores). `restore` reads that record's stream back into a new file. Both go
 * through the path driver's own reader and writer (agents/drivers/path/bytes.ts). Each prints
 * one JSON line with what it did on stdout.
 */
import { open, readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { openRepository } from '../agents/repo/repository';
import { LocalKeyFile } from '../agents/repo/keys';
import { DirStore } from '../agents/store/dir-store';
import type { StreamRecord } from '../agents/repo/types';
import { PointReader, PointWriter, type Manifest } from '../agents/core/points';
import { FILE_STREAM, openFileReader, writeChunks } from '../agents/drivers/path/bytes';
import type { DriverContext } from '../agents/core/driver';
import { silentLogger } from '../kernel/logger';

/** What the path driver gets from the agent, minus progress. */
const ctx: DriverContext = {
  log: silentLogger,
  signal: new AbortController().signal,
  phase: () => undefined,
};

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      repo: { type: 'string' },
      key: { type: 'string' },
      file: { type: 'string' },
      record: { type: 'string' },
      out: { type: 'string' },
      workers: { type: 'string' },
    },
  });
  const step = positionals[0];
  const need = (name: keyof typeof values): string => {
    const v = values[name];
    if (typeof v !== 'string') throw new Error(`stowage-step ${step}: --${name} is required`);
    return v;
  };

  const repo = await openRepository({
    store: new DirStore(need('repo')),
    keys: new LocalKeyFile(need('key')),
    ...(values.workers ? { workers: Number(values.workers) } : {}),
  });
  try {
    if (step === 'backup') {
      // The path driver's way (agents/drivers/path/bytes.ts backupBytes), minus its checks.
      const writer = repo.writer();
      const sink = new PointWriter(writer, () => undefined);
      const file = await open(need('file'));
      const reader = await openFileReader(file, ctx, 'backup', need('file'));
      try {
        await sink.writeFrom(FILE_STREAM, reader.read);
      } finally {
        await reader.close();
        await file.close();
      }
      await writer.flush();
      await writeFile(need('record'), JSON.stringify(sink.streams[0]));
      console.log(JSON.stringify({ step, stats: writer.stats }));
    } else if (step === 'restore') {
      // The path driver's way to a new file (restoreAsFile), minus the fsync and atomic rename.
      const record = JSON.parse(await readFile(need('record'), 'utf8')) as StreamRecord;
      const source = new PointReader(
        repo,
        { recoveryPointId: 'bench', streams: [record] } as Manifest,
        () => undefined,
      );
      const out = await open(need('out'), 'wx');
      try {
        // No fsync: restic and borg do not sync what they restore either.
        await writeChunks(out, source, record.name, true, ctx, 'restore', need('out'));
      } finally {
        await out.close();
      }
      console.log(JSON.stringify({ step, bytes: record.size, chunks: record.chunks.length }));
    } else {
      throw new Error(`stowage-step: unknown step ${String(step)} (backup or restore)`);
    }
  } finally {
    await repo.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
