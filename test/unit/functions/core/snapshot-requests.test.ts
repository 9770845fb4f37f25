import { beforeEach, describe, expect, it } from 'vitest';
import type { RequestDeps } from '../../../../functions/core/requests/launch';
import { requestRestore } from '../../../../functions/core/requests/restore';
import {
  planSnapshotRestore,
  requestSnapshotCreate,
  requestSnapshotDelete,
  requestSnapshotExpiry,
  requestSnapshotRestore,
  requestSnapshotSchedule,
} from '../../../../functions/core/requests/snapshot';
import { makeAgent, makeTarget, T0 } from '../../../fixtures/factories';
import {
  executionArn,
  makeRequestDeps,
  type FakeWorkflows,
} from '../../../fixtures/fake-workflows';
import type { MemoryCatalog } from '../../../fixtures/memory-catalog';

let catalog: MemoryCatalog;
let workflows: FakeWorkflows;
let deps: RequestDeps;

const DAY = 86_400_000;
const later = (ms: number) => new Date(Date.parse(T0) + ms).toISOString();

beforeEach(async () => {
  ({ catalog, workflows, deps } = makeRequestDeps());
  await catalog.putAgent(
    makeAgent({
      agent: 'site-1',
      targets: [
        makeTarget('lxd:web', {
          snapshots: [
            { name: 'snap0', createdAt: T0, expiresAt: null, stateful: false },
            { name: 'gone', createdAt: T0, expiresAt: later(-1000), stateful: false },
            { name: 'soon', createdAt: T0, expiresAt: later(DAY), stateful: false },
          ],
        }),
        makeTarget('docker:db'),
        makeTarget('vsphere:DC0/vm/app', {
          snapshots: [{ name: 'pre-0', createdAt: T0, expiresAt: null, stateful: false }],
        }),
      ],
    }),
  );
});

async function expectNothingStarted() {
  expect(await catalog.listJobs()).toEqual([]);
  expect(workflows.snapshots).toEqual([]);
}

describe('snapshot requests', () => {
  it('records a SNAPSHOT job and starts the snapshot workflow with the validated arguments', async () => {
    const accepted = await requestSnapshotCreate(deps, {
      target: 'lxd:web',
      pattern: 'pre-%d',
      expiry: '7d',
    });
    expect(accepted).toMatchObject({
      kind: 'SNAPSHOT',
      status: 'PENDING',
      target: 'lxd:web',
      agent: 'site-1',
      recoveryPointId: 'lxd:web/pre-%d',
      executionArn: executionArn('snapshot', accepted.jobId),
    });
    expect(workflows.snapshots).toEqual([
      {
        jobId: accepted.jobId,
        target: 'lxd:web',
        agent: 'site-1',
        queueUrl: 'queue://site-1',
        action: 'create',
        args: { pattern: 'pre-%d', expiry: '7d', stateful: false },
      },
    ]);
    expect((await catalog.getJob(accepted.jobId))?.snapshot).toEqual({ action: 'create' });
  });

  it('passes restore, delete and expiry of a listed snapshot to the agent that sees it', async () => {
    await requestSnapshotRestore(deps, { snapshot: 'lxd:web/snap0' });
    await requestSnapshotDelete(deps, { snapshot: 'lxd:web/soon@site-1' });
    await requestSnapshotExpiry(deps, { snapshot: 'lxd:web/snap0', expiry: 'never' });
    expect(workflows.snapshots.map((s) => [s.action, s.args])).toEqual([
      ['restore', { snapshot: 'snap0' }],
      ['delete', { snapshot: 'soon' }],
      ['expire', { snapshot: 'snap0', expiry: 'never' }],
    ]);
  });

  it('passes --state on for a vSphere snapshot restore, and refuses it for LXD, where the state is kept', async () => {
    await requestSnapshotRestore(deps, { snapshot: 'vsphere:DC0/vm/app/pre-0', state: 'running' });
    expect(workflows.snapshots.map((s) => [s.target, s.action, s.args])).toEqual([
      ['vsphere:DC0/vm/app', 'restore', { snapshot: 'pre-0', state: 'running' }],
    ]);
    await expect(
      requestSnapshotRestore(deps, { snapshot: 'lxd:web/snap0', state: 'running' }),
    ).rejects.toThrow(/--state applies to the snapshots of vSphere VMs; LXD instances come back/);
  });

  it('plans a revert without starting anything: a VM snapshot without memory comes back off', async () => {
    const vm = await planSnapshotRestore(deps, {
      snapshot: 'vsphere:DC0/vm/app/pre-0',
      plan: true,
    });
    expect(vm).toMatchObject({
      plan: true,
      snapshot: 'vsphere:DC0/vm/app/pre-0',
      target: 'vsphere:DC0/vm/app',
      agent: 'site-1',
      stateful: false,
      stateAfter: 'stopped',
    });
    expect(vm.steps.map((s) => s.action)).toEqual(['stop', 'replace']);
    expect(vm.notes[0]).toMatch(
      /holds no memory: the vSphere VM comes back powered off; --state running/,
    );
    const on = await planSnapshotRestore(deps, {
      snapshot: 'vsphere:DC0/vm/app/pre-0',
      state: 'running',
      plan: true,
    });
    expect(on).toMatchObject({ stateAfter: 'running' });
    expect(on.steps.map((s) => s.action)).toEqual(['stop', 'replace', 'start']);
    const ct = await planSnapshotRestore(deps, { snapshot: 'lxd:web/snap0', plan: true });
    expect(ct).toMatchObject({ stateAfter: 'as before' });
    expect(ct.notes.join(' ')).toMatch(/written to lxd:web since 2025-03-01T10:00:00.000Z is lost/);
    await expect(
      planSnapshotRestore(deps, { snapshot: 'lxd:web/snap0', state: 'running', plan: true }),
    ).rejects.toThrow(/--state applies to the snapshots of vSphere VMs/);
    await expect(
      planSnapshotRestore(deps, { snapshot: 'lxd:web/nope', plan: true }),
    ).rejects.toMatchObject({
      name: 'SnapshotNotFound',
    });
    await expectNothingStarted();
  });

  it('refuses an unknown or expired snapshot, naming those that exist', async () => {
    await expect(requestSnapshotRestore(deps, { snapshot: 'lxd:web/nope' })).rejects.toMatchObject({
      name: 'SnapshotNotFound',
      message: expect.stringContaining('snap0, soon'),
    });
    await expect(requestSnapshotRestore(deps, { snapshot: 'lxd:web/gone' })).rejects.toMatchObject({
      name: 'SnapshotNotFound',
      message: expect.stringContaining('expired at'),
    });
    await expectNothingStarted();
  });

  it('refuses a target without local snapshots, an unknown target and bad arguments', async () => {
    await expect(requestSnapshotCreate(deps, { target: 'docker:db' })).rejects.toMatchObject({
      name: 'Unsupported',
    });
    await expect(requestSnapshotCreate(deps, { target: 'lxd:nope' })).rejects.toMatchObject({
      name: 'TargetNotFound',
    });
    await expect(
      requestSnapshotCreate(deps, { target: 'lxd:web', pattern: 'a%db%d' }),
    ).rejects.toMatchObject({ name: 'ValidationError' });
    await expect(
      requestSnapshotCreate(deps, { target: 'lxd:web', expiry: 'tomorrow' }),
    ).rejects.toMatchObject({ name: 'ValidationError', message: expect.stringContaining('7d') });
    await expect(
      requestSnapshotExpiry(deps, { snapshot: 'lxd:web/snap0', expiry: '2020-01-01T00:00:00Z' }),
    ).rejects.toMatchObject({ name: 'ValidationError', message: expect.stringContaining('past') });
    await expect(
      requestSnapshotCreate(deps, { target: 'lxd:web', stateful: 'yes' }),
    ).rejects.toMatchObject({
      name: 'ValidationError',
      message: expect.stringContaining('stateful'),
    });
    await expect(
      requestSnapshotSchedule(deps, { target: 'lxd:web', every: 'daily' }),
    ).rejects.toMatchObject({ name: 'ValidationError' });
    await expect(
      requestSnapshotSchedule(deps, { target: 'lxd:web', every: 'none', expiry: '7d' }),
    ).rejects.toMatchObject({ name: 'ValidationError', message: expect.stringContaining('none') });
    await expect(
      requestSnapshotSchedule(deps, { target: 'lxd:web', every: '@daily', expiry: '30s' }),
    ).rejects.toMatchObject({ name: 'ValidationError' });
    await expectNothingStarted();
  });

  it('points a snapshot id given to the offsite restore at `stowage snapshot restore`', async () => {
    await expect(
      requestRestore(deps, { recoveryPointId: 'lxd:web/snap0', name: 'web2' }),
    ).rejects.toMatchObject({
      name: 'PointNotFound',
      message: expect.stringContaining('stowage snapshot restore lxd:web/snap0'),
    });
  });

  it('sets a schedule with the expiry in the engine-neutral syntax', async () => {
    await requestSnapshotSchedule(deps, {
      target: 'lxd:web',
      every: '0 3 * * *',
      expiry: '12h',
      pattern: 'auto-%d',
      stopped: true,
    });
    expect(workflows.snapshots[0]).toMatchObject({
      action: 'schedule',
      args: { every: '0 3 * * *', expiry: '12h', pattern: 'auto-%d', stopped: true },
    });
  });
});
