import { beforeEach, describe, expect, it } from 'vitest';
import { requestBackup } from '../../../../functions/core/requests/backup';
import type { RequestDeps } from '../../../../functions/core/requests/launch';
import { requestRestore } from '../../../../functions/core/requests/restore';
import { PRE_UPDATE_LABEL, requestRollback } from '../../../../functions/core/requests/verify';
import {
  AgentUnavailable,
  NameTaken,
  PointNotFound,
  TargetNotFound,
  ValidationError,
} from '../../../../kernel/errors';
import { makeAgent, makePoint, makeTarget, T0 } from '../../../fixtures/factories';
import {
  executionArn,
  makeRequestDeps,
  type FakeWorkflows,
} from '../../../fixtures/fake-workflows';
import type { MemoryCatalog } from '../../../fixtures/memory-catalog';

const queueUrlFor = (agent: string) => `http://127.0.0.1:9324/000000000000/stowage-site-${agent}`;

let catalog: MemoryCatalog;
let workflows: FakeWorkflows;
let deps: RequestDeps;

beforeEach(() => {
  ({ catalog, workflows, deps } = makeRequestDeps(queueUrlFor));
});

async function expectNothingStarted() {
  expect(await catalog.listJobs()).toEqual([]);
  expect(workflows.backups).toEqual([]);
  expect(workflows.restores).toEqual([]);
}

describe('requestBackup', () => {
  it('records a PENDING job for a target an agent sees and starts one execution', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web', 'docker:db'] }));

    const accepted = await requestBackup(deps, { target: 'docker:web' });

    const item = { target: 'docker:web', agent: 'site-1', recoveryPointId: 'rp-2' };
    expect(accepted).toEqual({
      jobId: 'job-1',
      kind: 'BACKUP',
      status: 'PENDING',
      target: 'docker:web',
      agent: 'site-1',
      recoveryPointId: 'rp-2',
      items: [item],
      executionArn: executionArn('backup', 'job-1'),
    });
    expect(await catalog.listJobs()).toEqual([
      {
        jobId: 'job-1',
        kind: 'BACKUP',
        target: 'docker:web',
        agent: 'site-1',
        status: 'PENDING',
        createdAt: T0,
        recoveryPointId: 'rp-2',
        items: [{ ...item, status: 'PENDING' }],
      },
    ]);
    expect(workflows.backups).toEqual([
      {
        jobId: 'job-1',
        target: 'docker:web',
        options: {},
        items: [{ index: 0, ...item, queueUrl: queueUrlFor('site-1') }],
      },
    ]);
  });

  it('passes the request options on to the workflow and labels the job', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));
    const options = {
      consistency: 'stop',
      includeBinds: true,
      hooks: { pre: [{ command: ['sh', '-c', 'pg_dump > /data/dump.sql'], timeoutSeconds: 30 }] },
      label: 'pre-update',
    } as const;

    const accepted = await requestBackup(deps, { target: 'docker:web', ...options });

    expect(workflows.backups[0]?.options).toEqual(options);
    expect((await catalog.getJob(accepted.jobId))?.label).toBe('pre-update');
  });

  it.each<[string, Record<string, unknown>, RegExp]>([
    ['an unknown consistency', { consistency: 'freeze' }, /consistency: .*"live"/],
    ['a hook without a command', { hooks: { pre: [{ command: [] }] } }, /hooks\.pre\.0\.command/],
    ['an unknown field', { compression: 'max' }, /compression/],
    ['a label in capitals', { label: 'Pre' }, /label: a label is lower-case/],
  ])('refuses %s, naming the field', async (_what, extra, message) => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));

    const attempt = requestBackup(deps, { target: 'docker:web', ...extra });

    await expect(attempt).rejects.toBeInstanceOf(ValidationError);
    await expect(attempt).rejects.toThrow(message);
    expect(workflows.backups).toEqual([]);
  });

  it('picks the one agent that sees the target among several that serve the platform', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:db'] }));
    await catalog.putAgent(makeAgent({ agent: 'site-2', targets: ['docker:web'] }));

    const accepted = await requestBackup(deps, { target: 'docker:web' });

    expect(accepted.agent).toBe('site-2');
    expect(workflows.backups[0]?.items[0]?.queueUrl).toBe(queueUrlFor('site-2'));
  });

  it('backs up through the agent named with @AGENT, and records the target without it', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));
    await catalog.putAgent(makeAgent({ agent: 'site-2', targets: ['docker:web'] }));

    const accepted = await requestBackup(deps, { target: 'docker:web@site-2' });

    expect(accepted).toMatchObject({ target: 'docker:web', agent: 'site-2' });
    expect(workflows.backups).toEqual([
      expect.objectContaining({
        target: 'docker:web',
        items: [expect.objectContaining({ target: 'docker:web', queueUrl: queueUrlFor('site-2') })],
      }),
    ]);
  });

  it.each<[string, Record<string, unknown>, RegExp]>([
    ['an unknown platform', { target: 'podman:web' }, /unknown platform "podman"/],
    ['a target with no platform', { target: 'web' }, /PLATFORM:NAME/],
    ['a target with no name', { target: 'docker:' }, /no name/],
    ['a bad agent name', { target: 'docker:web@-x' }, /agent "-x"/],
    ['no target field', {}, /give either "target" \("docker:web"\) or "selector"/],
    ['a target that is not a string', { target: 42 }, /target: give the target as "PLATFORM:NAME"/],
  ])(
    'refuses %s with ValidationError, recording no job and starting nothing',
    async (_c, body, why) => {
      await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));

      const request = requestBackup(deps, body);

      await expect(request).rejects.toBeInstanceOf(ValidationError);
      await expect(request).rejects.toThrow(why);
      await expectNothingStarted();
    },
  );

  it('answers TargetNotFound naming the target when no agent sees it', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));

    const request = requestBackup(deps, { target: 'docker:ghost' });

    await expect(request).rejects.toBeInstanceOf(TargetNotFound);
    await expect(request).rejects.toThrow(/docker:ghost does not exist/);
    await expect(request).rejects.toThrow(/agent site-1/);
    await expectNothingStarted();
  });

  it('answers AgentUnavailable when no agent serves the platform', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));

    const request = requestBackup(deps, { target: 'lxd:c1' });

    await expect(request).rejects.toBeInstanceOf(AgentUnavailable);
    await expect(request).rejects.toThrow(/no agent serves platform "lxd"/);
    await expectNothingStarted();
  });

  it('answers AgentUnavailable when no agent has reported at all', async () => {
    await expect(requestBackup(deps, { target: 'docker:web' })).rejects.toBeInstanceOf(
      AgentUnavailable,
    );
    await expectNothingStarted();
  });

  it('asks for @AGENT with a ValidationError when two agents see the target', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));
    await catalog.putAgent(makeAgent({ agent: 'site-2', targets: ['docker:web'] }));

    const request = requestBackup(deps, { target: 'docker:web' });

    await expect(request).rejects.toBeInstanceOf(ValidationError);
    await expect(request).rejects.toThrow(/several agents \(site-1, site-2\)/);
    await expect(request).rejects.toThrow('docker:web@AGENT');
    await expectNothingStarted();
  });

  it('answers AgentUnavailable naming the agent when @AGENT names one never seen', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));

    const request = requestBackup(deps, { target: 'docker:web@site-9' });

    await expect(request).rejects.toBeInstanceOf(AgentUnavailable);
    await expect(request).rejects.toThrow(/no agent named "site-9"/);
    await expectNothingStarted();
  });

  it('answers TargetNotFound when the agent named with @AGENT does not see the target', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));
    await catalog.putAgent(makeAgent({ agent: 'site-2', targets: ['docker:db'] }));

    const request = requestBackup(deps, { target: 'docker:web@site-2' });

    await expect(request).rejects.toBeInstanceOf(TargetNotFound);
    await expect(request).rejects.toThrow(/docker:web is not among the targets agent site-2/);
    await expectNothingStarted();
  });

  it('ends the job FAILED as WorkflowNotStarted and rethrows when the workflow does not start', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));
    const refused = new Error('ExecutionLimitExceeded: too many executions');
    workflows.failWith = refused;

    const request = requestBackup(deps, { target: 'docker:web' });

    await expect(request).rejects.toBe(refused);
    expect(await catalog.listJobs()).toEqual([
      expect.objectContaining({
        jobId: 'job-1',
        status: 'FAILED',
        endedAt: T0,
        error: { name: 'WorkflowNotStarted', message: refused.message },
      }),
    ]);
  });
});

describe('requestBackup by label selector', () => {
  const labelled = (target: string, labels: Record<string, string>) =>
    makeTarget(target, { labels });

  beforeEach(async () => {
    await catalog.putAgent(
      makeAgent({
        agent: 'site-1',
        targets: [
          labelled('docker:web-2', { app: 'shop', tier: 'web' }),
          labelled('docker:web-1', { app: 'shop', tier: 'web' }),
          labelled('docker:db', { app: 'shop', tier: 'db' }),
          labelled('docker:other', { app: 'blog' }),
          'docker:plain',
        ],
      }),
    );
  });

  it('backs up every container whose labels match all pairs, as one job of several items', async () => {
    const accepted = await requestBackup(deps, { selector: 'docker:app=shop,tier=web' });

    expect(accepted).toEqual({
      jobId: 'job-1',
      kind: 'BACKUP',
      status: 'PENDING',
      target: 'docker:app=shop,tier=web',
      agent: 'site-1',
      items: [
        { target: 'docker:web-1', agent: 'site-1', recoveryPointId: 'rp-2' },
        { target: 'docker:web-2', agent: 'site-1', recoveryPointId: 'rp-3' },
      ],
      executionArn: executionArn('backup', 'job-1'),
    });
    const job = await catalog.getJob('job-1');
    expect(job?.recoveryPointId).toBeUndefined();
    expect(job?.items?.map((i) => [i.target, i.status])).toEqual([
      ['docker:web-1', 'PENDING'],
      ['docker:web-2', 'PENDING'],
    ]);
    expect(workflows.backups).toHaveLength(1);
    expect(workflows.backups[0]?.items).toEqual([
      {
        index: 0,
        target: 'docker:web-1',
        agent: 'site-1',
        queueUrl: queueUrlFor('site-1'),
        recoveryPointId: 'rp-2',
      },
      {
        index: 1,
        target: 'docker:web-2',
        agent: 'site-1',
        queueUrl: queueUrlFor('site-1'),
        recoveryPointId: 'rp-3',
      },
    ]);
  });

  it('matches across agents unless @AGENT names one, and passes the options to every item', async () => {
    await catalog.putAgent(
      makeAgent({ agent: 'site-2', targets: [labelled('docker:web-9', { app: 'shop' })] }),
    );

    const everywhere = await requestBackup(deps, {
      selector: 'docker:app=shop',
      consistency: 'pause',
    });
    const one = await requestBackup(deps, { selector: 'docker:app=shop@site-2' });

    expect(everywhere.items?.map((i) => `${i.target}@${i.agent}`)).toEqual([
      'docker:db@site-1',
      'docker:web-1@site-1',
      'docker:web-2@site-1',
      'docker:web-9@site-2',
    ]);
    expect(everywhere.agent).toBe('site-1,site-2');
    expect(workflows.backups[0]?.options).toEqual({ consistency: 'pause' });
    expect(workflows.backups[0]?.items[3]?.queueUrl).toBe(queueUrlFor('site-2'));
    expect(one).toMatchObject({ target: 'docker:app=shop', agent: 'site-2' });
    expect(one.items?.map((i) => i.target)).toEqual(['docker:web-9']);
  });

  it('answers TargetNotFound naming the selector when no container matches, and starts nothing', async () => {
    const request = requestBackup(deps, { selector: 'docker:app=shop,tier=cache' });

    await expect(request).rejects.toBeInstanceOf(TargetNotFound);
    await expect(request).rejects.toThrow(
      /no container matches the selector docker:app=shop,tier=cache/,
    );
    await expect(request).rejects.toThrow(/docker inspect/);
    await expectNothingStarted();
  });

  it.each<[string, Record<string, unknown>, RegExp]>([
    ['both target and selector', { target: 'docker:db', selector: 'docker:app=shop' }, /either/],
    ['a selector for another platform', { selector: 'lxd:app=shop' }, /only docker containers/],
    ['a pair without =', { selector: 'docker:app' }, /"app" is not KEY=VALUE/],
    ['an empty key', { selector: 'docker:=shop' }, /"=shop" is not KEY=VALUE/],
    ['a label given twice', { selector: 'docker:app=a,app=b' }, /names the label "app" twice/],
    ['a bad agent name', { selector: 'docker:app=shop@-x' }, /agent "-x"/],
    ['no platform', { selector: 'app=shop' }, /not of the form docker:KEY=VALUE/],
  ])('refuses %s with ValidationError and starts nothing', async (_c, body, why) => {
    const request = requestBackup(deps, body);

    await expect(request).rejects.toBeInstanceOf(ValidationError);
    await expect(request).rejects.toThrow(why);
    await expectNothingStarted();
  });

  it('answers AgentUnavailable when the @AGENT of a selector never reported', async () => {
    const request = requestBackup(deps, { selector: 'docker:app=shop@site-9' });

    await expect(request).rejects.toBeInstanceOf(AgentUnavailable);
    await expectNothingStarted();
  });
});

describe('requestRestore', () => {
  beforeEach(async () => {
    await catalog.putPoint(
      makePoint({ recoveryPointId: 'rp-web', target: 'docker:web', agent: 'site-1' }),
    );
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web', 'docker:db'] }));
    await catalog.putAgent(
      makeAgent({
        agent: 'site-2',
        targets: ['docker:web', 'lxd:c1'],
        platforms: ['docker', 'lxd'],
      }),
    );
  });

  it('restores beside the original under a new name through the agent that took the point', async () => {
    const accepted = await requestRestore(deps, { recoveryPointId: 'rp-web', name: 'web-copy' });

    expect(accepted).toEqual({
      jobId: 'job-1',
      kind: 'RESTORE',
      status: 'PENDING',
      target: 'docker:web-copy',
      agent: 'site-1',
      recoveryPointId: 'rp-web',
      executionArn: executionArn('restore', 'job-1'),
    });
    expect(await catalog.getJob('job-1')).toEqual({
      jobId: 'job-1',
      kind: 'RESTORE',
      target: 'docker:web-copy',
      source: 'docker:web',
      agent: 'site-1',
      status: 'PENDING',
      createdAt: T0,
      recoveryPointId: 'rp-web',
    });
    expect(workflows.restores).toEqual([
      {
        jobId: 'job-1',
        recoveryPointId: 'rp-web',
        source: 'docker:web',
        target: 'docker:web-copy',
        agent: 'site-1',
        queueUrl: queueUrlFor('site-1'),
        inPlace: false,
        options: {},
      },
    ]);
  });

  it('passes remaps to the agent and lets a single-volume restore address the existing container', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));
    await catalog.putPoint(
      makePoint({ recoveryPointId: 'rp-vol', target: 'docker:web', agent: 'site-1' }),
    );

    await requestRestore(deps, {
      recoveryPointId: 'rp-vol',
      volume: 'web-data',
      intoVolume: 'web-data-restored',
    });

    expect(workflows.restores[0]).toMatchObject({
      target: 'docker:web',
      inPlace: false,
      options: { volume: 'web-data', intoVolume: 'web-data-restored' },
    });
  });

  it('refuses a port remap that is not a port, naming the field', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));
    await catalog.putPoint(
      makePoint({ recoveryPointId: 'rp-p', target: 'docker:web', agent: 'site-1' }),
    );

    const attempt = requestRestore(deps, {
      recoveryPointId: 'rp-p',
      name: 'w2',
      ports: { http: '80' },
    });

    await expect(attempt).rejects.toThrow(/ports: a container port is written 80 or 80\/tcp/);
    expect(workflows.restores).toEqual([]);
  });

  it('restores in place under the original name even though it exists', async () => {
    const accepted = await requestRestore(deps, { recoveryPointId: 'rp-web', inPlace: true });

    expect(accepted).toMatchObject({ target: 'docker:web', agent: 'site-1' });
    expect(workflows.restores).toEqual([
      expect.objectContaining({ source: 'docker:web', target: 'docker:web', inPlace: true }),
    ]);
  });

  it('accepts in place with the original name spelled out', async () => {
    const accepted = await requestRestore(deps, {
      recoveryPointId: 'rp-web',
      name: 'web',
      inPlace: true,
    });

    expect(accepted.target).toBe('docker:web');
  });

  it('restores through the agent --to names, on that agent’s queue', async () => {
    const accepted = await requestRestore(deps, {
      recoveryPointId: 'rp-web',
      to: 'docker:web-dr@site-2',
    });

    expect(accepted).toMatchObject({ target: 'docker:web-dr', agent: 'site-2' });
    expect(workflows.restores).toEqual([
      expect.objectContaining({
        source: 'docker:web',
        target: 'docker:web-dr',
        agent: 'site-2',
        queueUrl: queueUrlFor('site-2'),
        inPlace: false,
      }),
    ]);
  });

  it('answers PointNotFound for a point that does not exist', async () => {
    const request = requestRestore(deps, { recoveryPointId: 'rp-missing', name: 'x' });

    await expect(request).rejects.toBeInstanceOf(PointNotFound);
    await expect(request).rejects.toThrow(/rp-missing does not exist/);
    await expectNothingStarted();
  });

  it.each<[string, Record<string, unknown>, RegExp]>([
    ['no point', { name: 'x' }, /must name the point/],
    ['an empty point id', { recoveryPointId: '', name: 'x' }, /must name the point/],
    ['an empty name', { recoveryPointId: 'rp-web', name: '' }, /"name" must be/],
    ['a name that is not a string', { recoveryPointId: 'rp-web', name: 7 }, /"name" must be/],
    ['a --to that is not a string', { recoveryPointId: 'rp-web', to: {} }, /"to" must be/],
    [
      'in place as a string rather than true',
      { recoveryPointId: 'rp-web', inPlace: 'true' },
      /inPlace: "inPlace" is true or false/,
    ],
    [
      '--to on another platform',
      { recoveryPointId: 'rp-web', to: 'lxd:c9@site-2' },
      /cannot restore a docker point to lxd:c9@site-2: the platforms differ/,
    ],
    [
      '--name and --to that disagree',
      { recoveryPointId: 'rp-web', name: 'a', to: 'docker:b@site-2' },
      /--name a and --to docker:b@site-2 name different targets/,
    ],
    [
      'in place with another name',
      { recoveryPointId: 'rp-web', name: 'other', inPlace: true },
      /--in-place restores over the original/,
    ],
    [
      'in place with another name through --to another agent',
      { recoveryPointId: 'rp-web', to: 'docker:other@site-2', inPlace: true },
      /--in-place restores over the original/,
    ],
    ['a malformed --to', { recoveryPointId: 'rp-web', to: 'web2' }, /PLATFORM:NAME/],
  ])('refuses %s with ValidationError, recording no job', async (_c, body, why) => {
    const request = requestRestore(deps, body);

    await expect(request).rejects.toBeInstanceOf(ValidationError);
    await expect(request).rejects.toThrow(why);
    await expectNothingStarted();
  });

  it('restores under the original name when neither --name nor --in-place is given and nothing has that name any more', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:db'] }));

    const accepted = await requestRestore(deps, { recoveryPointId: 'rp-web' });

    expect(accepted).toMatchObject({ target: 'docker:web', agent: 'site-1' });
    expect(workflows.restores).toEqual([
      expect.objectContaining({ source: 'docker:web', target: 'docker:web', inPlace: false }),
    ]);
  });

  it('refuses a restore with neither --name nor --in-place while the original still exists, saying what to give', async () => {
    const request = requestRestore(deps, { recoveryPointId: 'rp-web' });

    await expect(request).rejects.toBeInstanceOf(NameTaken);
    await expect(request).rejects.toThrow(
      /docker:web still exists on agent site-1; say where to restore: --name NEW to restore beside docker:web, or --in-place to replace it/,
    );
    await expectNothingStarted();
  });

  it.each<[string, string, string[], string]>([
    ['a Compose project', 'docker-compose:shop', ['docker-compose'], 'docker-compose:shop'],
    ['an LXD instance', 'lxd:c1', ['lxd'], 'lxd:c1'],
    [
      'an LXD custom volume, in its own pool',
      'lxd-volume:fast/data',
      ['lxd-volume'],
      'lxd-volume:fast/data',
    ],
    ['a path (the agent refuses it if it exists)', 'path:/srv/data', ['path'], 'path:/srv/data'],
  ])(
    'restores %s under its original name when it no longer exists',
    async (_what, target, platforms, expected) => {
      await catalog.putPoint(makePoint({ recoveryPointId: 'rp-x', target, agent: 'site-3' }));
      await catalog.putAgent(makeAgent({ agent: 'site-3', platforms, targets: [] }));

      const accepted = await requestRestore(deps, { recoveryPointId: 'rp-x' });

      expect(accepted.target).toBe(expected);
      expect(workflows.restores[0]).toMatchObject({ target: expected, inPlace: false });
    },
  );

  it('answers NameTaken when the name exists on the agent, and records no job', async () => {
    const request = requestRestore(deps, { recoveryPointId: 'rp-web', name: 'db' });

    await expect(request).rejects.toBeInstanceOf(NameTaken);
    await expect(request).rejects.toThrow(/docker:db already exists on agent site-1/);
    await expectNothingStarted();
  });

  it('answers NameTaken when --to names a target the other agent has', async () => {
    const request = requestRestore(deps, { recoveryPointId: 'rp-web', to: 'docker:web@site-2' });

    await expect(request).rejects.toBeInstanceOf(NameTaken);
    await expect(request).rejects.toThrow(/on agent site-2/);
    await expectNothingStarted();
  });

  it('answers AgentUnavailable when --to names an agent never seen', async () => {
    const request = requestRestore(deps, { recoveryPointId: 'rp-web', to: 'docker:web@site-9' });

    await expect(request).rejects.toBeInstanceOf(AgentUnavailable);
    await expect(request).rejects.toThrow(/agent "site-9"/);
    await expectNothingStarted();
  });

  it('answers AgentUnavailable when the agent that took the point is gone', async () => {
    await catalog.putPoint(makePoint({ recoveryPointId: 'rp-old', agent: 'site-gone' }));

    const request = requestRestore(deps, { recoveryPointId: 'rp-old', name: 'web-copy' });

    await expect(request).rejects.toBeInstanceOf(AgentUnavailable);
    await expect(request).rejects.toThrow(/agent "site-gone" has never reported/);
    await expectNothingStarted();
  });

  it('ends the job FAILED as WorkflowNotStarted and rethrows when the workflow does not start', async () => {
    const refused = new Error('StateMachineDoesNotExist');
    workflows.failWith = refused;

    const request = requestRestore(deps, { recoveryPointId: 'rp-web', name: 'web-copy' });

    await expect(request).rejects.toBe(refused);
    expect(await catalog.getJob('job-1')).toMatchObject({
      status: 'FAILED',
      error: { name: 'WorkflowNotStarted', message: 'StateMachineDoesNotExist' },
    });
  });

  it('restores in place over the original when its name contains an @', async () => {
    await catalog.putPoint(
      makePoint({ recoveryPointId: 'rp-vm', target: 'vsphere:DC0/vm/ann@corp', agent: 'site-1' }),
    );
    await catalog.putAgent(
      makeAgent({
        agent: 'site-1',
        targets: [makeTarget('vsphere:DC0/vm/ann@corp'), makeTarget('vsphere:DC0/vm/ann')],
      }),
    );

    await requestRestore(deps, { recoveryPointId: 'rp-vm', inPlace: true });

    expect(workflows.restores).toEqual([
      expect.objectContaining({
        source: 'vsphere:DC0/vm/ann@corp',
        target: 'vsphere:DC0/vm/ann@corp',
      }),
    ]);
  });

  it('restores a custom volume under a bare --name in the point’s own pool', async () => {
    await catalog.putPoint(
      makePoint({ recoveryPointId: 'rp-vol', target: 'lxd-volume:fast/data', agent: 'site-2' }),
    );
    await catalog.putAgent(
      makeAgent({ agent: 'site-2', targets: ['lxd-volume:fast/data'], platforms: ['lxd-volume'] }),
    );

    await requestRestore(deps, { recoveryPointId: 'rp-vol', name: 'data2' });
    await requestRestore(deps, { recoveryPointId: 'rp-vol', name: 'slow/data' });

    expect(workflows.restores.map((r) => r.target)).toEqual([
      'lxd-volume:fast/data2',
      'lxd-volume:slow/data',
    ]);
    await expect(
      requestRestore(deps, { recoveryPointId: 'rp-vol', name: 'data' }),
    ).rejects.toBeInstanceOf(NameTaken);
    await expect(
      requestRestore(deps, { recoveryPointId: 'rp-vol', name: 'fast/bad name' }),
    ).rejects.toThrow(/not a valid LXD custom volume name/);
  });
});

describe('custom volume targets', () => {
  it.each([
    ['lxd-volume:data', /names no pool: write POOL\/NAME/],
    ['lxd-volume:default/', /not a valid LXD custom volume name/],
    ['lxd-volume:default/a b', /not a valid LXD custom volume name/],
    ['lxd-volume:-pool/data', /not a valid LXD storage pool name/],
    ['lxd-volume:default/..', /not a valid LXD custom volume name/],
  ])('refuses the backup of %s before anything starts', async (target, message) => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', platforms: ['lxd-volume'], targets: [] }));

    const refused = requestBackup(deps, { target });

    await expect(refused).rejects.toBeInstanceOf(ValidationError);
    await expect(refused).rejects.toThrow(message);
    await expectNothingStarted();
  });
});

describe('LXD request options', () => {
  beforeEach(async () => {
    await catalog.putAgent(
      makeAgent({
        agent: 'site-1',
        platforms: ['docker', 'lxd', 'lxd-volume'],
        targets: ['docker:web', 'lxd:c1', 'lxd-volume:default/data'],
      }),
    );
    await catalog.putPoint(makePoint({ recoveryPointId: 'rp-c1', target: 'lxd:c1' }));
    await catalog.putPoint(makePoint({ recoveryPointId: 'rp-web', target: 'docker:web' }));
    await catalog.putPoint(
      makePoint({ recoveryPointId: 'rp-data', target: 'lxd-volume:default/data' }),
    );
  });

  it('passes snapshots and optimized storage on for LXD targets and refuses them for others', async () => {
    await requestBackup(deps, { target: 'lxd:c1', snapshots: false, optimizedStorage: true });
    expect(workflows.backups[0]?.options).toEqual({ snapshots: false, optimizedStorage: true });

    const refused = requestBackup(deps, { target: 'docker:web', snapshots: false });
    await expect(refused).rejects.toBeInstanceOf(ValidationError);
    await expect(refused).rejects.toThrow(/snapshots apply to LXD/);
  });

  it('passes pool, device overrides and power state on to an instance restore', async () => {
    await requestRestore(deps, {
      recoveryPointId: 'rp-c1',
      name: 'c2',
      pool: 'fast',
      devices: { eth0: { type: 'none' }, root: { pool: 'fast' } },
      state: 'stopped',
    });

    expect(workflows.restores[0]).toMatchObject({
      target: 'lxd:c2',
      options: {
        pool: 'fast',
        devices: { eth0: { type: 'none' }, root: { pool: 'fast' } },
        state: 'stopped',
      },
    });
  });

  it.each([
    [
      { recoveryPointId: 'rp-web', name: 'w2', pool: 'fast' },
      /"pool" applies to lxd and lxd-volume/,
    ],
    [
      { recoveryPointId: 'rp-data', name: 'd2', state: 'running' },
      /"state" applies to lxd, vsphere and vapp points/,
    ],
    [{ recoveryPointId: 'rp-c1', name: 'c2', state: 'paused' }, /state/],
    [{ recoveryPointId: 'rp-c1', name: 'c2', devices: { eth0: { Network: 'x' } } }, /device key/],
    [{ recoveryPointId: 'rp-c1', name: 'c2', pool: 'a/b' }, /pool name has no slash/],
    [{ recoveryPointId: 'rp-data', name: 'slow/d2', pool: 'fast' }, /give the pool once/],
    [{ recoveryPointId: 'rp-c1', name: 'c_2' }, /not a valid LXD instance name/],
  ])('refuses %j with a ValidationError that says why', async (body, message) => {
    const refused = requestRestore(deps, body);
    await expect(refused).rejects.toBeInstanceOf(ValidationError);
    await expect(refused).rejects.toThrow(message);
    expect(workflows.restores).toEqual([]);
  });

  it('restores a custom volume into another pool under its own name with --pool alone', async () => {
    await requestRestore(deps, { recoveryPointId: 'rp-data', pool: 'fast' });
    await requestRestore(deps, { recoveryPointId: 'rp-data', pool: 'fast', name: 'd2' });

    expect(workflows.restores.map((r) => r.target)).toEqual([
      'lxd-volume:fast/data',
      'lxd-volume:fast/d2',
    ]);
  });
});

describe('requestRollback of a Compose project', () => {
  beforeEach(async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker-compose:shop'] }));
  });

  it('restores the newest pre-update point of the project in place, under the project name', async () => {
    await catalog.putPoint(
      makePoint({
        recoveryPointId: 'rp-old',
        target: 'docker-compose:shop',
        label: PRE_UPDATE_LABEL,
        createdAt: '2025-03-01T09:00:00.000Z',
      }),
    );
    await catalog.putPoint(
      makePoint({
        recoveryPointId: 'rp-new',
        target: 'docker-compose:shop',
        label: PRE_UPDATE_LABEL,
        createdAt: '2025-03-01T11:00:00.000Z',
      }),
    );
    await catalog.putPoint(
      makePoint({
        recoveryPointId: 'rp-plain',
        target: 'docker-compose:shop',
        createdAt: '2025-03-01T12:00:00.000Z',
      }),
    );

    const accepted = await requestRollback(deps, { target: 'docker-compose:shop' });

    expect(accepted).toMatchObject({
      kind: 'RESTORE',
      target: 'docker-compose:shop',
      recoveryPointId: 'rp-new',
    });
    expect(workflows.restores).toEqual([
      expect.objectContaining({
        source: 'docker-compose:shop',
        target: 'docker-compose:shop',
        inPlace: true,
      }),
    ]);
  });

  it('refuses a restore onto the existing project without in-place, naming --in-place', async () => {
    await catalog.putPoint(
      makePoint({ recoveryPointId: 'rp-shop', target: 'docker-compose:shop' }),
    );

    const attempt = requestRestore(deps, { recoveryPointId: 'rp-shop', name: 'shop' });

    await expect(attempt).rejects.toBeInstanceOf(NameTaken);
    await expect(attempt).rejects.toThrow(/docker-compose:shop already exists.*--in-place/);
    await expectNothingStarted();
  });

  it('answers PointNotFound naming protect-update when the project has no pre-update point', async () => {
    await catalog.putPoint(
      makePoint({ recoveryPointId: 'rp-shop', target: 'docker-compose:shop' }),
    );

    const attempt = requestRollback(deps, { target: 'docker-compose:shop' });

    await expect(attempt).rejects.toBeInstanceOf(PointNotFound);
    await expect(attempt).rejects.toThrow(/stowage protect-update docker-compose:shop/);
    await expectNothingStarted();
  });
});

describe('LXD server targets', () => {
  beforeEach(async () => {
    await catalog.putAgent(
      makeAgent({
        agent: 'site-1',
        platforms: ['lxd', 'lxd-server'],
        targets: ['lxd-server:site-1'],
      }),
    );
    await catalog.putAgent(
      makeAgent({ agent: 'site-2', platforms: ['lxd-server'], targets: ['lxd-server:site-2'] }),
    );
    await catalog.putAgent(makeAgent({ agent: 'docker-only', platforms: ['docker'], targets: [] }));
    await catalog.putPoint(
      makePoint({ recoveryPointId: 'rp-srv', target: 'lxd-server:site-1', agent: 'site-1' }),
    );
  });

  it('backs up a server with the LXD options', async () => {
    await requestBackup(deps, { target: 'lxd-server:site-1', snapshots: false });
    expect(workflows.backups).toEqual([
      expect.objectContaining({
        target: 'lxd-server:site-1',
        options: { snapshots: false },
        items: [expect.objectContaining({ target: 'lxd-server:site-1', agent: 'site-1' })],
      }),
    ]);
  });

  it('restores onto the agent the target names, in place onto its own, with recover', async () => {
    await requestRestore(deps, { recoveryPointId: 'rp-srv', to: 'lxd-server:site-2' });
    await requestRestore(deps, { recoveryPointId: 'rp-srv', inPlace: true, recover: true });

    expect(workflows.restores).toEqual([
      expect.objectContaining({
        target: 'lxd-server:site-2',
        agent: 'site-2',
        queueUrl: queueUrlFor('site-2'),
        inPlace: false,
        options: {},
      }),
      expect.objectContaining({
        target: 'lxd-server:site-1',
        agent: 'site-1',
        inPlace: true,
        options: { recover: true },
      }),
    ]);
  });

  it.each([
    [{}, ValidationError, /--to lxd-server:AGENT .* or --in-place/],
    [{ to: 'lxd-server:site-2@site-1' }, ValidationError, /named after its agent/],
    [
      { to: 'lxd-server:site-2', inPlace: true },
      ValidationError,
      /--in-place restores onto lxd-server:site-1/,
    ],
    [{ to: 'lxd-server:nobody' }, AgentUnavailable, /agent "nobody" has never reported/],
    [{ to: 'lxd-server:docker-only' }, AgentUnavailable, /serves no LXD server/],
    [{ inPlace: true, pool: 'fast' }, ValidationError, /"pool" applies to lxd and lxd-volume/],
  ])('refuses %j', async (extra, kind, message) => {
    const attempt = requestRestore(deps, { recoveryPointId: 'rp-srv', ...extra });
    await expect(attempt).rejects.toBeInstanceOf(kind);
    await expect(requestRestore(deps, { recoveryPointId: 'rp-srv', ...extra })).rejects.toThrow(
      message,
    );
    await expectNothingStarted();
  });

  it('refuses recover for anything but a server point', async () => {
    await catalog.putPoint(
      makePoint({ recoveryPointId: 'rp-c1', target: 'lxd:c1', agent: 'site-1' }),
    );
    await expect(
      requestRestore(deps, { recoveryPointId: 'rp-c1', inPlace: true, recover: true }),
    ).rejects.toThrow(/"recover" applies to lxd-server points, not to lxd:c1/);
  });
});

describe('requestRestore of a path point (issue 12: a local user replacing a root-owned file)', () => {
  it('refuses --to another path with --in-place, which once skipped the in-place name check', async () => {
    await catalog.putAgent(makeAgent({ agent: 'local', platforms: ['path'], targets: [] }));
    await catalog.putPoint(
      makePoint({ recoveryPointId: 'rp-mine', target: 'path:/home/ann/notes', agent: 'local' }),
    );

    const request = requestRestore(deps, {
      recoveryPointId: 'rp-mine',
      to: 'path:/etc/shadow@local',
      inPlace: true,
    });

    await expect(request).rejects.toBeInstanceOf(ValidationError);
    await expect(request).rejects.toThrow(
      /--in-place restores over the original \(path:\/home\/ann\/notes\)/,
    );
    await expectNothingStarted();
  });
});
