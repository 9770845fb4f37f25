import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import type {
  BackupOutcome,
  BackupSink,
  DiscoveredTarget,
  Driver,
  DriverContext,
  ProbeResult,
  RestoreOptions,
  RestoreOutcome,
  RestoreSource,
  SandboxOps,
} from '../../../../agents/core/driver';
import { DirHoldJournal, type HoldRecord } from '../../../../agents/core/holds';
import { ProgressReporter } from '../../../../agents/core/progress';
import { runBackup, runRestore, type RunnerDeps } from '../../../../agents/core/runner';
import { StaticKey } from '../../../../agents/repo/keys';
import { Repository } from '../../../../agents/repo/repository';
import { DriverError, TransientError } from '../../../../kernel/errors';
import { silentLogger } from '../../../../kernel/logger';
import type { RestoreTask, RestoreTestRequest } from '../../../../statemachines/contracts';
import { MiB, prngBytes, readsOf } from '../../../fixtures/data';
import { MemoryStore } from '../../../fixtures/memory-store';

/**
 * A driver whose sandboxes are names in a set: `restore` with `sandbox` adds one (or fails as
 * told), `probe` answers as told, `remove` deletes it. Every call is logged in `calls`, and the
 * hold journal's records are looked at while the sandbox exists.
 */
class SandboxDriver implements Driver {
  readonly platform = 'docker';
  readonly sandboxes = new Set<string>();
  readonly calls: string[] = [];
  restoreOptions: RestoreOptions | undefined;
  holdsDuringRestore: HoldRecord[] = [];

  constructor(
    private readonly behaviour: {
      restoreFails?: Error;
      probe?: ProbeResult;
      removeFails?: boolean;
      journal?: DirHoldJournal;
    } = {},
  ) {}

  async listTargets(): Promise<DiscoveredTarget[]> {
    return [];
  }

  async exists(): Promise<boolean> {
    return false;
  }

  async backup(_name: string, sink: BackupSink): Promise<BackupOutcome> {
    await sink.writeStream(
      { name: 'volume/data', kind: 'volume-tar' },
      Readable.from(readsOf(prngBytes(MiB, 7), 64 * 1024)),
    );
    return { metadata: { container: 'web' }, summary: {} };
  }

  async restore(
    _metadata: Record<string, unknown>,
    source: RestoreSource,
    options: RestoreOptions,
    ctx: DriverContext,
  ): Promise<RestoreOutcome> {
    this.calls.push('restore');
    this.restoreOptions = options;
    const dir = this.behaviour.journal?.dir;
    this.holdsDuringRestore = dir
      ? readdirSync(dir)
          .filter((f) => f.endsWith('.json'))
          .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as HoldRecord)
      : [];
    for (const stream of source.streams) {
      for await (const _ of await source.openStream(stream.name)) ctx.phase('reading');
    }
    if (this.behaviour.restoreFails) throw this.behaviour.restoreFails;
    this.sandboxes.add(options.name);
    return { restoredTarget: `docker:${options.name}` };
  }

  readonly sandbox: SandboxOps = {
    probe: async (name, command) => {
      this.calls.push(`probe ${name} ${command.join(' ')}`);
      return this.behaviour.probe ?? { exitCode: 0, output: 'ok\n' };
    },
    remove: async (name) => {
      this.calls.push(`remove ${name}`);
      if (this.behaviour.removeFails) throw new DriverError('dockerd is down');
      this.sandboxes.delete(name);
    },
  };
}

const opened: Repository[] = [];
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(opened.splice(0).map((repo) => repo.close()));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function makeJournal(): DirHoldJournal {
  const dir = mkdtempSync(join(tmpdir(), 'stowage-rt-holds-'));
  dirs.push(dir);
  return DirHoldJournal.open(join(dir, 'local'));
}

/** A repository holding one point, rp-1, made by the driver's backup. */
async function makePoint(driver: SandboxDriver, journal?: DirHoldJournal): Promise<RunnerDeps> {
  const repo = await Repository.open({
    store: new MemoryStore(),
    keys: new StaticKey(randomBytes(32)),
    workers: 1,
  });
  opened.push(repo);
  const deps: RunnerDeps = {
    agent: 'local',
    drivers: new Map([['docker', driver]]),
    repository: async () => repo,
    log: silentLogger,
    ...(journal ? { holds: journal } : {}),
  };
  await runBackup(
    deps,
    {
      kind: 'BACKUP',
      jobId: 'job-backup',
      itemIndex: 0,
      recoveryPointId: 'rp-1',
      target: 'docker:web',
      options: {},
    },
    makeRun(),
  );
  return deps;
}

function makeRun() {
  const progress = new ProgressReporter(async () => undefined, 60_000);
  return { progress, signal: new AbortController().signal };
}

function makeTestTask(test: RestoreTestRequest = {}): RestoreTask {
  return {
    kind: 'RESTORE',
    jobId: 'job-rt',
    recoveryPointId: 'rp-1',
    source: 'docker:web',
    target: 'docker:stowage-rt-1',
    inPlace: false,
    options: { test },
  };
}

describe('a restore test on the agent', () => {
  it('restores into an isolated sandbox, probes it, removes it and reports a pass with its RTO', async () => {
    const journal = makeJournal();
    const driver = new SandboxDriver({ journal });
    const deps = await makePoint(driver, journal);

    const result = await runRestore(deps, makeTestTask({ probe: ['sh', '-c', 'true'] }), makeRun());

    expect(driver.restoreOptions).toMatchObject({
      name: 'stowage-rt-1',
      inPlace: false,
      sandbox: true,
    });
    expect(driver.calls).toEqual([
      'restore',
      'probe stowage-rt-1 sh -c true',
      'remove stowage-rt-1',
    ]);
    expect(driver.sandboxes.size).toBe(0);
    expect(result.test).toMatchObject({
      passed: true,
      sandbox: 'docker:stowage-rt-1',
      removed: true,
      probe: { command: ['sh', '-c', 'true'], exitCode: 0, output: 'ok\n' },
    });
    expect(result.test!.rtoMs).toBeGreaterThanOrEqual(result.test!.restoreMs);
    expect(result.bytesWritten).toBe(MiB);
    // The sandbox was journaled before the restore created anything, and cleared after.
    expect(driver.holdsDuringRestore.map((r) => [r.kind, r.data.name])).toEqual([
      ['docker.sandbox', 'stowage-rt-1'],
    ]);
    expect(readdirSync(journal.dir).filter((f) => f.endsWith('.json'))).toEqual([]);
  });

  it('records a failing probe as a failed test and still removes the sandbox', async () => {
    const driver = new SandboxDriver({ probe: { exitCode: 3, output: 'no such table' } });
    const deps = await makePoint(driver);

    const result = await runRestore(
      deps,
      makeTestTask({ probe: ['sh', '-c', 'check'] }),
      makeRun(),
    );

    expect(result.test).toMatchObject({
      passed: false,
      removed: true,
      probe: { exitCode: 3, output: 'no such table' },
    });
    expect(driver.sandboxes.size).toBe(0);
  });

  it('passes a test without a probe once the sandbox runs', async () => {
    const driver = new SandboxDriver();
    const deps = await makePoint(driver);

    const result = await runRestore(deps, makeTestTask(), makeRun());

    expect(result.test).toMatchObject({ passed: true, removed: true });
    expect(result.test!.probe).toBeUndefined();
    expect(driver.calls).toEqual(['restore', 'remove stowage-rt-1']);
  });

  it('reports a restore that fails as a failed test with its error, after removing what is left', async () => {
    const driver = new SandboxDriver({ restoreFails: new DriverError('image load failed') });
    const deps = await makePoint(driver);

    const result = await runRestore(deps, makeTestTask({ probe: ['true'] }), makeRun());

    expect(result.test).toMatchObject({
      passed: false,
      removed: true,
      error: { name: 'DriverError', message: 'image load failed' },
    });
    expect(driver.calls).toEqual(['restore', 'remove stowage-rt-1']);
  });

  it('fails the task on a transient error (the workflow retries it), after removing the sandbox', async () => {
    const driver = new SandboxDriver({ restoreFails: new TransientError('store throttled') });
    const deps = await makePoint(driver);

    await expect(runRestore(deps, makeTestTask(), makeRun())).rejects.toBeInstanceOf(
      TransientError,
    );
    expect(driver.calls).toEqual(['restore', 'remove stowage-rt-1']);
  });

  it('leaves the sandbox to the hold sweep when it cannot be removed, and says so', async () => {
    const journal = makeJournal();
    const driver = new SandboxDriver({ removeFails: true, journal });
    const deps = await makePoint(driver, journal);

    const result = await runRestore(deps, makeTestTask(), makeRun());

    expect(result.test).toMatchObject({ passed: true, removed: false });
    const left = journal.pending();
    expect(left.map((r) => [r.platform, r.kind, r.data.name, r.jobId])).toEqual([
      ['docker', 'docker.sandbox', 'stowage-rt-1', 'job-rt'],
    ]);
  });
});
