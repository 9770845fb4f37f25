import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type {
  BackupOutcome,
  BackupSink,
  DiscoveredTarget,
  Driver,
  DriverContext,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
} from '../../../../agents/core/driver';
import { readManifest } from '../../../../agents/core/points';
import { ProgressReporter } from '../../../../agents/core/progress';
import {
  runBackup,
  runRestore,
  runVerify,
  type RunnerDeps,
  type TaskRun,
} from '../../../../agents/core/runner';
import { StaticKey } from '../../../../agents/repo/keys';
import { Repository } from '../../../../agents/repo/repository';
import type { JobProgress } from '../../../../kernel/model';
import { manifestKey } from '../../../../kernel/object-layout';
import { DriverError, PointNotFound } from '../../../../kernel/errors';
import { silentLogger } from '../../../../kernel/logger';
import type { BackupTask, RestoreTask, VerifyTask } from '../../../../statemachines/contracts';
import { MiB, mixedData, prngBytes, readAll, readsOf } from '../../../fixtures/data';
import { MemoryStore } from '../../../fixtures/memory-store';

/** What the fake driver backs up: an image and a volume, in this order. */
const STREAMS = new Map([
  ['image', { kind: 'docker-image-tar', data: mixedData(3 * MiB, 11) }],
  ['volume/data', { kind: 'volume-tar', data: prngBytes(MiB + 4321, 12) }],
]);
const TOTAL = [...STREAMS.values()].reduce((n, s) => n + s.data.length, 0);

/**
 * A docker Driver over buffers. `backup` writes STREAMS in 256 KiB reads and calls `afterStream`
 * after each one (to fail midway, or to look at the store); `restore` reads every stream of the
 * point into `restored`.
 */
class BufferDriver implements Driver {
  readonly platform = 'docker';
  readonly restored = new Map<string, Buffer>();

  constructor(private readonly afterStream: (stream: string) => Promise<void> = async () => {}) {}

  async listTargets(): Promise<DiscoveredTarget[]> {
    return [];
  }

  async exists(): Promise<boolean> {
    return false;
  }

  async backup(name: string, sink: BackupSink, ctx: DriverContext): Promise<BackupOutcome> {
    ctx.expectBytes?.(TOTAL);
    for (const [stream, { kind, data }] of STREAMS) {
      ctx.phase(`saving ${stream}`);
      await sink.writeStream({ name: stream, kind }, Readable.from(readsOf(data, 256 * 1024)));
      await this.afterStream(stream);
    }
    return {
      metadata: { container: name, streams: [...STREAMS.keys()] },
      summary: { container: name, streams: STREAMS.size },
    };
  }

  async restore(
    metadata: Record<string, unknown>,
    source: RestoreSource,
    options: RestoreOptions,
    ctx: DriverContext,
  ): Promise<RestoreOutcome> {
    ctx.phase(`restoring ${String(metadata.container)}`);
    for (const stream of source.streams) {
      this.restored.set(stream.name, await readAll(await source.openStream(stream.name)));
    }
    return { restoredTarget: `docker:${options.name}` };
  }
}

/** Repositories opened by a test, closed after it: each holds two worker threads. */
const opened: Repository[] = [];

async function makeRepository(store = new MemoryStore()) {
  const repo = await Repository.open({ store, keys: new StaticKey(randomBytes(32)), workers: 2 });
  opened.push(repo);
  return { repo, store };
}

afterEach(async () => {
  await Promise.all(opened.splice(0).map((repo) => repo.close()));
});

function makeDeps(repo: Repository | undefined, overrides: Partial<RunnerDeps> = {}): RunnerDeps {
  return {
    agent: 'site-1',
    drivers: new Map([['docker', new BufferDriver()]]),
    repository: async () => {
      if (!repo) throw new Error('this test should not open the repository');
      return repo;
    },
    log: silentLogger,
    ...overrides,
  };
}

/** A TaskRun whose progress writes land in `writes` (no interval: phase changes only). */
function makeRun() {
  const writes: JobProgress[] = [];
  const progress = new ProgressReporter(async (p) => {
    writes.push(p);
  }, 60_000);
  const run: TaskRun = { progress, signal: new AbortController().signal };
  return { run, writes, progress };
}

let pointCounter = 0;
function makeBackupTask(overrides: Partial<BackupTask> = {}): BackupTask {
  return {
    kind: 'BACKUP',
    jobId: `job-${++pointCounter}`,
    itemIndex: 0,
    recoveryPointId: `rp-${pointCounter}`,
    target: 'docker:web',
    options: {},
    ...overrides,
  };
}

function makeRestoreTask(overrides: Partial<RestoreTask> = {}): RestoreTask {
  return {
    kind: 'RESTORE',
    jobId: `job-${++pointCounter}`,
    recoveryPointId: 'rp-missing',
    source: 'docker:web',
    target: 'docker:web-restored',
    inPlace: false,
    options: {},
    ...overrides,
  };
}

function makeVerifyTask(overrides: Partial<VerifyTask> = {}): VerifyTask {
  return {
    kind: 'VERIFY',
    jobId: `job-${++pointCounter}`,
    recoveryPointId: 'rp-missing',
    target: 'docker:web',
    ...overrides,
  };
}

describe('runBackup', () => {
  it('stores every stream and reports their sizes, with the manifest written only after the driver finished', async () => {
    const { repo, store } = await makeRepository();
    const task = makeBackupTask();
    const seen: boolean[] = [];
    const driver = new BufferDriver(async () => {
      seen.push(await store.exists(manifestKey(task.recoveryPointId)));
    });

    const result = await runBackup(
      makeDeps(repo, { drivers: new Map([['docker', driver]]) }),
      task,
      makeRun().run,
    );

    expect(seen).toEqual([false, false]);
    expect(result.streams).toEqual(
      [...STREAMS].map(([name, s]) => ({ name, kind: s.kind, size: s.data.length })),
    );
    expect(result).toMatchObject({
      recoveryPointId: task.recoveryPointId,
      manifestKey: manifestKey(task.recoveryPointId),
      bytesRead: TOTAL,
      bytesNew: TOTAL,
      summary: { container: 'web', streams: 2 },
    });
    expect(result.bytesStored).toBeGreaterThan(0);
    expect(await store.exists(result.manifestKey)).toBe(true);
    const manifest = await readManifest(repo, task.recoveryPointId);
    expect(manifest).toMatchObject({ jobId: task.jobId, target: 'docker:web', agent: 'site-1' });
    expect(manifest.streams.map((s) => s.size)).toEqual(result.streams.map((s) => s.size));
  });

  it('reports phases, the expected total and the store counters as it goes', async () => {
    const { repo } = await makeRepository();
    const { run, writes, progress } = makeRun();

    const result = await runBackup(makeDeps(repo), makeBackupTask(), run);
    await progress.stop();

    expect(writes.map((w) => w.phase)).toEqual([
      'saving image',
      'saving volume/data',
      'storing the last pack',
      'writing manifest',
    ]);
    expect(writes.at(-1)).toMatchObject({
      bytesDone: TOTAL,
      bytesTotal: TOTAL,
      bytesNew: result.bytesNew,
      bytesStored: result.bytesStored,
    });
  });

  it('passes a driver failure on and leaves no manifest, but keeps the streams already written for the retry', async () => {
    const { repo, store } = await makeRepository();
    const task = makeBackupTask();
    const failure = new DriverError('engine lost web after its image');
    const failing = new BufferDriver(async (stream) => {
      if (stream === 'image') throw failure;
    });

    const error = await runBackup(
      makeDeps(repo, { drivers: new Map([['docker', failing]]) }),
      task,
      makeRun().run,
    ).catch((err: unknown) => err);

    expect(error).toBe(failure);
    expect(await store.exists(manifestKey(task.recoveryPointId))).toBe(false);
    expect(store.keys().filter((k) => k.startsWith('points/'))).toEqual([]);

    const retry = await runBackup(makeDeps(repo), task, makeRun().run);

    expect(retry.bytesNew).toBe(STREAMS.get('volume/data')!.data.length);
    expect(await store.exists(manifestKey(task.recoveryPointId))).toBe(true);
  });
});

describe('runRestore and runVerify', () => {
  const store = new MemoryStore();
  let repo: Repository;
  const backupTask = makeBackupTask();

  beforeAll(async () => {
    repo = await Repository.open({ store, keys: new StaticKey(randomBytes(32)), workers: 2 });
    await runBackup(makeDeps(repo), backupTask, makeRun().run);
  });

  afterAll(async () => {
    await repo.close();
  });

  it('gives the driver every stream byte for byte and counts every byte written', async () => {
    const driver = new BufferDriver();
    const { run, writes, progress } = makeRun();

    const result = await runRestore(
      makeDeps(repo, { drivers: new Map([['docker', driver]]) }),
      makeRestoreTask({ recoveryPointId: backupTask.recoveryPointId }),
      run,
    );
    await progress.stop();

    expect([...driver.restored.keys()]).toEqual([...STREAMS.keys()]);
    for (const [name, { data }] of STREAMS) {
      expect(driver.restored.get(name)!.equals(data), name).toBe(true);
    }
    expect(result.restoredTarget).toBe('docker:web-restored');
    expect(result.bytesWritten).toBe(TOTAL);
    expect(writes.at(-1)).toMatchObject({ bytesTotal: TOTAL });
  });

  it('reads and checks every chunk of the point and counts chunks, bytes and streams', async () => {
    const manifest = await readManifest(repo, backupTask.recoveryPointId);

    const result = await runVerify(
      makeDeps(repo),
      makeVerifyTask({ recoveryPointId: backupTask.recoveryPointId }),
      makeRun().run,
    );

    expect(result.chunks).toBe(manifest.streams.reduce((n, s) => n + s.chunks.length, 0));
    expect(result.chunks).toBeGreaterThanOrEqual(STREAMS.size);
    expect(result.bytesVerified).toBe(TOTAL);
    expect(result.streams).toBe(STREAMS.size);
  });

  it('refuses to restore a point that has no manifest with PointNotFound', async () => {
    const restoring = runRestore(makeDeps(repo), makeRestoreTask(), makeRun().run);

    await expect(restoring).rejects.toBeInstanceOf(PointNotFound);
    await expect(restoring).rejects.toThrow('rp-missing');
  });

  it('refuses to verify a point that has no manifest with PointNotFound', async () => {
    const verifying = runVerify(makeDeps(repo), makeVerifyTask(), makeRun().run);

    await expect(verifying).rejects.toBeInstanceOf(PointNotFound);
  });
});

describe('choosing the driver', () => {
  it.each([
    [
      'back up',
      (deps: RunnerDeps) => runBackup(deps, makeBackupTask({ target: 'lxd:c1' }), makeRun().run),
    ],
    [
      'restore',
      (deps: RunnerDeps) =>
        runRestore(deps, makeRestoreTask({ source: 'lxd:c1', target: 'lxd:c1' }), makeRun().run),
    ],
  ])(
    'refuses to %s a target of a platform it has no driver for, naming the drivers it has',
    async (_what, act) => {
      const deps = makeDeps(undefined);

      const error = await act(deps).catch((err: unknown) => err);

      expect(error).toBeInstanceOf(DriverError);
      expect((error as Error).message).toContain('site-1');
      expect((error as Error).message).toContain('lxd');
      expect((error as Error).message).toContain('serves: docker');
    },
  );

  it('says it serves nothing when it has no drivers at all', async () => {
    const deps = makeDeps(undefined, { drivers: new Map() });

    await expect(runBackup(deps, makeBackupTask(), makeRun().run)).rejects.toThrow(
      /serves: nothing/,
    );
  });
});
