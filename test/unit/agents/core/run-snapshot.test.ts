import { describe, expect, it } from 'vitest';
import type {
  DiscoveredTarget,
  Driver,
  DriverContext,
  SnapshotCreateOptions,
  SnapshotInfo,
  SnapshotOps,
  SnapshotSchedule,
} from '../../../../agents/core/driver';
import { ProgressReporter } from '../../../../agents/core/progress';
import { runSnapshot, type RunnerDeps, type TaskRun } from '../../../../agents/core/runner';
import { silentLogger } from '../../../../kernel/logger';
import type { SnapshotTask } from '../../../../statemachines/contracts';

const info = (name: string, expiresAt: string | null = null): SnapshotInfo => ({
  name,
  createdAt: '2026-01-01T00:00:00.000Z',
  expiresAt,
  stateful: false,
});

/** SnapshotOps that record their calls; `pruneExpired` reports `expired`. */
class RecordingOps implements SnapshotOps {
  readonly calls: unknown[][] = [];
  constructor(private readonly expired: string[] = []) {}
  async list() {
    return [];
  }
  async create(name: string, options: SnapshotCreateOptions, _ctx: DriverContext) {
    this.calls.push(['create', name, options]);
    return info('made', options.expiresAt ? options.expiresAt.toISOString() : null);
  }
  async setExpiry(name: string, snapshot: string, expiresAt: Date | null) {
    this.calls.push(['setExpiry', name, snapshot, expiresAt]);
    return info(snapshot, expiresAt?.toISOString() ?? null);
  }
  async delete(name: string, snapshot: string) {
    this.calls.push(['delete', name, snapshot]);
  }
  async restore(name: string, snapshot: string) {
    this.calls.push(['restore', name, snapshot]);
    return info(snapshot);
  }
  async schedule(name: string, schedule: SnapshotSchedule | null) {
    this.calls.push(['schedule', name, schedule]);
    return schedule;
  }
  async pruneExpired(name: string) {
    this.calls.push(['prune', name]);
    return this.expired;
  }
}

function makeDriver(platform: string, snapshots?: SnapshotOps): Driver {
  return {
    platform,
    listTargets: async (): Promise<DiscoveredTarget[]> => [],
    exists: async () => true,
    backup: () => Promise.reject(new Error('not here')),
    restore: () => Promise.reject(new Error('not here')),
    ...(snapshots ? { snapshots } : {}),
  };
}

function makeDeps(drivers: Driver[]): RunnerDeps {
  return {
    agent: 'site-1',
    drivers: new Map(drivers.map((d) => [d.platform, d])),
    repository: () => Promise.reject(new Error('snapshot tasks open no repository')),
    log: silentLogger,
  };
}

const run = (): TaskRun => ({
  progress: new ProgressReporter(async () => {}, 60_000),
  signal: new AbortController().signal,
});

const task = (overrides: Partial<SnapshotTask>): SnapshotTask => ({
  kind: 'SNAPSHOT',
  jobId: 'job-1',
  target: 'lxd:web',
  action: 'create',
  args: {},
  ...overrides,
});

describe('runSnapshot', () => {
  it('prunes first, turns a duration into a time from when it acts, and reports what it did', async () => {
    const ops = new RecordingOps(['old-1']);
    const before = Date.now();
    const result = await runSnapshot(
      makeDeps([makeDriver('lxd', ops)]),
      task({ args: { pattern: 'pre-%d', expiry: '2h', stateful: false } }),
      run(),
    );
    expect(ops.calls[0]).toEqual(['prune', 'web']);
    const [, name, options] = ops.calls[1] as [string, string, SnapshotCreateOptions];
    expect(name).toBe('web');
    expect(options.pattern).toBe('pre-%d');
    const at = options.expiresAt!.getTime();
    expect(at).toBeGreaterThanOrEqual(before + 7_200_000);
    expect(at).toBeLessThanOrEqual(Date.now() + 7_200_000);
    expect(result).toMatchObject({
      action: 'create',
      target: 'lxd:web',
      snapshot: { name: 'made' },
      pruned: ['old-1'],
    });
  });

  it("leaves the expiry to the engine's default when the request gives none", async () => {
    const ops = new RecordingOps();
    await runSnapshot(
      makeDeps([makeDriver('lxd', ops)]),
      task({ args: { pattern: 's%d' } }),
      run(),
    );
    expect(ops.calls[1]).toEqual(['create', 'web', { pattern: 's%d', stateful: false }]);
  });

  it('passes expire never, delete, restore and schedule on to the driver', async () => {
    const ops = new RecordingOps();
    const deps = makeDeps([makeDriver('lxd', ops)]);
    const expire = await runSnapshot(
      deps,
      task({ action: 'expire', args: { snapshot: 's0', expiry: 'never' } }),
      run(),
    );
    expect(expire.snapshot?.expiresAt).toBeNull();
    expect(
      (await runSnapshot(deps, task({ action: 'delete', args: { snapshot: 's0' } }), run()))
        .deleted,
    ).toBe('s0');
    await runSnapshot(deps, task({ action: 'restore', args: { snapshot: 's1' } }), run());
    const set = await runSnapshot(
      deps,
      task({ action: 'schedule', args: { every: '@daily', expiry: '7d' } }),
      run(),
    );
    expect(set.schedule).toEqual({ every: '@daily', expiry: '7d' });
    const removed = await runSnapshot(
      deps,
      task({ action: 'schedule', args: { every: 'none' } }),
      run(),
    );
    expect(removed.schedule).toBeNull();
    expect(ops.calls.filter((c) => c[0] !== 'prune')).toEqual([
      ['setExpiry', 'web', 's0', null],
      ['delete', 'web', 's0'],
      ['restore', 'web', 's1'],
      ['schedule', 'web', { every: '@daily', expiry: '7d' }],
      ['schedule', 'web', null],
    ]);
  });

  it('refuses with Unsupported a target whose driver keeps no snapshots', async () => {
    await expect(
      runSnapshot(makeDeps([makeDriver('docker')]), task({ target: 'docker:web' }), run()),
    ).rejects.toMatchObject({ name: 'Unsupported', message: expect.stringContaining('docker') });
  });
});
