/**
 * Stowage's side of the benchmark: one step per process, so that the harness times and measures
 * it exactly like restic's and borg's (wall clock and peak RSS of a child under /usr/bin/time,
 * Node and tsx start-up included).
 *
 *   node --import tsx bench/stowage-step.ts backup  --repo DIR --key FILE --file IMG --record REC
 *   node --import tsx bench/stowage-step.ts restore --repo DIR --key FILE --record REC --out FILE
 *
 * `backup` writes one stream into the repository in DIR (a DirStore), flushes, and saves the
 * StreamRecord as JSON in REC (outside the repository, like the key file, so the repository's size
 * is what Stowage stores). `restore` reads that record's stream back into a file. Each prints one
 * JSON line with what it did on stdout.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { openRepository } from '../agents/repo/repository';
import { LocalKeyFile } from '../agents/repo/keys';
import { DirStore } from '../agents/store/dir-store';
import type { StreamRecord } from '../agents/repo/types';
import { READ_HIGH_WATER_MARK } from '../agents/drivers/path/bytes';

/** The agent's own read size for files (agents/drivers/path/bytes.ts), so the bench measures it. */
const READ_BUFFER = READ_HIGH_WATER_MARK;

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
      const writer = repo.writer();
      const record = await writer.writeStream(
        { name: 'disk', kind: 'file' },
        createReadStream(need('file'), { highWaterMark: READ_BUFFER }),
      );
      await writer.flush();
      await writeFile(need('record'), JSON.stringify(record));
      console.log(JSON.stringify({ step, stats: writer.stats }));
    } else if (step === 'restore') {
      const record = JSON.parse(await readFile(need('record'), 'utf8')) as StreamRecord;
      await pipeline(repo.readStream(record), createWriteStream(need('out')));
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
