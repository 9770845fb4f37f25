import { beforeEach, describe, expect, it } from 'vitest';
import { route } from '../../../../functions/api/routes';
import type { RequestDeps } from '../../../../functions/core/requests/launch';
import { planRestore, requestRestore } from '../../../../functions/core/requests/restore';
import { NameTaken, ValidationError } from '../../../../kernel/errors';
import type { RecoveryPoint } from '../../../../kernel/model';
import type { PlanStep, RestorePlanAnswer } from '../../../../kernel/platforms/restore-plan';
import { makeAgent, makePoint, makeTarget } from '../../../fixtures/factories';
import { makeRequestDeps, type FakeWorkflows } from '../../../fixtures/fake-workflows';
import type { MemoryCatalog } from '../../../fixtures/memory-catalog';

const MiB = 1024 * 1024;
let catalog: MemoryCatalog;
let workflows: FakeWorkflows;
let deps: RequestDeps;

beforeEach(() => {
  ({ catalog, workflows, deps } = makeRequestDeps((a) => `http://127.0.0.1:9324/q/${a}`));
});

const stream = (name: string, size: number) => ({ name, kind: 'tar', size });

/** `action what` of each step, for comparing plans at a glance. */
const outline = (plan: RestorePlanAnswer) =>
  plan.steps.map((s: PlanStep) => `${s.action} ${s.what}`);

async function given(point: Partial<RecoveryPoint>, targets: Parameters<typeof makeAgent>[0]) {
  await catalog.putPoint(makePoint({ recoveryPointId: 'rp-1', agent: 'site-1', ...point }));
  await catalog.putAgent(makeAgent({ agent: 'site-1', ...targets }));
}

/** Nothing recorded, nothing started: a plan changes nothing. */
async function expectNothingChanged() {
  expect(await catalog.listJobs()).toEqual([]);
  expect(workflows.restores).toEqual([]);
}

describe('planRestore: docker', () => {
  const point = {
    target: 'docker:web',
    streams: [
      stream('image', 10 * MiB),
      stream('volume/webdata', 2 * MiB),
      // A volume read as a tree stream has its index beside it: part of it, not a volume.
      { name: 'volume/webdata.index', kind: 'tree-index', size: 4096 },
      stream('volume/logs', MiB),
    ],
    summary: { image: 'busybox:latest', volumes: 2, state: 'running' },
  };

  it('creates the image, the volumes under the new name, the container, remaps, and starts it', async () => {
    await given(point, { targets: ['docker:web'] });

    const plan = await planRestore(deps, {
      recoveryPointId: 'rp-1',
      name: 'web2',
      volumes: { logs: 'web2-logs' },
      ports: { '80/tcp': '8081' },
      plan: true,
    });

    expect(plan).toMatchObject({
      plan: true,
      target: 'docker:web2',
      agent: 'site-1',
      inPlace: false,
      bytesRead: 13 * MiB + 4096, // the tree index is read too
    });
    expect(outline(plan)).toEqual([
      'create image stowage/web:<id>',
      'create volume web2_webdata',
      'create volume web2-logs',
      'create container web2',
      'remap volume logs',
      'remap port 80/tcp',
      'start container web2',
    ]);
    await expectNothingChanged();
  });

  it('reads first, then stops, sets aside and replaces the container and its volumes in place', async () => {
    await given(point, { targets: [makeTarget('docker:web', { state: 'running' })] });

    const plan = await planRestore(deps, { recoveryPointId: 'rp-1', inPlace: true, plan: true });

    expect(outline(plan)).toEqual([
      'read 2 temporary volume(s)',
      'stop container web',
      'rename container web',
      'replace volume webdata',
      'replace volume logs',
      'replace container web',
      'start container web',
    ]);
    await expectNothingChanged();
  });

  it('reads only the one volume a --volume restore asks for', async () => {
    await given(point, { targets: ['docker:web'] });

    const plan = await planRestore(deps, {
      recoveryPointId: 'rp-1',
      volume: 'logs',
      intoVolume: 'logs-copy',
      plan: true,
    });

    expect(plan.streams).toEqual([{ name: 'volume/logs', size: MiB }]);
    expect(plan.bytesRead).toBe(MiB);
    expect(outline(plan)).toEqual(['create volume logs-copy']);
  });

  it('is refused as the restore would be: the original name still exists', async () => {
    await given(point, { targets: ['docker:web'] });

    const attempt = planRestore(deps, { recoveryPointId: 'rp-1', plan: true });

    await expect(attempt).rejects.toBeInstanceOf(NameTaken);
    await expectNothingChanged();
  });
});

describe('planRestore: other platforms', () => {
  it('docker-compose: networks, renamed volumes and containers under a new project name', async () => {
    await given(
      {
        target: 'docker-compose:shop',
        streams: [stream('container/0/image', MiB), stream('volume/shop_db', 3 * MiB)],
        summary: { containers: 2, services: 'db,web', volumes: 1, networks: 1, state: 'running' },
      },
      { platforms: ['docker-compose'], targets: ['docker-compose:shop'] },
    );

    const plan = await planRestore(deps, { recoveryPointId: 'rp-1', name: 'shop2', plan: true });

    expect(outline(plan)).toEqual([
      'create 1 network(s)',
      'create volume shop2_db',
      'create project shop2: 2 container(s) (services db,web)',
      'start the containers of project shop2 that ran at backup time',
    ]);
    expect(plan.bytesRead).toBe(4 * MiB);
  });

  it('lxd: profiles, the instance in the pool asked for, device overrides, and the state asked for', async () => {
    await given(
      {
        target: 'lxd:c1',
        streams: [stream('export', 50 * MiB)],
        summary: { type: 'container', state: 'running', profiles: 'default,web', snapshots: 2 },
      },
      { platforms: ['lxd'], targets: [makeTarget('lxd:c1', { state: 'running' })] },
    );

    const copy = await planRestore(deps, {
      recoveryPointId: 'rp-1',
      name: 'c2',
      pool: 'fast',
      devices: { eth0: { type: 'none' } },
      state: 'stopped',
      plan: true,
    });
    const inPlace = await planRestore(deps, { recoveryPointId: 'rp-1', inPlace: true, plan: true });

    expect(outline(copy)).toEqual([
      'create profiles default, web',
      'create container c2',
      'remap device eth0',
      'skip starting container c2',
    ]);
    expect(copy.steps[1]?.detail).toMatch(/with its 2 snapshot\(s\), root disk in pool fast/);
    expect(outline(inPlace)).toEqual([
      'create profiles default, web',
      'create container under a temporary name',
      'stop container c1',
      'replace container c1',
      'start container c1',
    ]);
  });

  it('lxd-volume: in place, the instances that use it are stopped and started again', async () => {
    await given(
      {
        target: 'lxd-volume:default/data',
        streams: [stream('volume-export', 8 * MiB)],
        summary: { pool: 'default', snapshots: 1 },
      },
      {
        platforms: ['lxd-volume'],
        targets: [makeTarget('lxd-volume:default/data', { state: 'in-use' })],
      },
    );

    const plan = await planRestore(deps, { recoveryPointId: 'rp-1', inPlace: true, plan: true });
    const beside = await planRestore(deps, { recoveryPointId: 'rp-1', name: 'data2', plan: true });

    expect(outline(plan)).toEqual([
      'create a custom volume under a temporary name',
      'stop the instances that use default/data',
      'replace custom volume default/data',
      'start the instances that use default/data',
    ]);
    expect(beside.target).toBe('lxd-volume:default/data2');
    expect(outline(beside)).toEqual(['create custom volume default/data2']);
  });

  it('lxd-server: skips what the destination server already has and reads only the rest', async () => {
    await given(
      {
        target: 'lxd-server:host1',
        streams: [
          stream('image/default/abc123', 5 * MiB),
          stream('volume/default/default/data', 2 * MiB),
          stream('instance/default/c1', 20 * MiB),
          stream('instance/default/c2', 30 * MiB),
        ],
        summary: {
          projects: 1,
          pools: 1,
          networks: 0,
          profiles: 2,
          images: 1,
          volumes: 1,
          instances: 2,
        },
      },
      { agent: 'host1', platforms: ['lxd-server'], targets: ['lxd-server:host1'] },
    );
    await catalog.putAgent(
      makeAgent({
        agent: 'host2',
        platforms: ['lxd', 'lxd-volume', 'lxd-server'],
        targets: ['lxd-server:host2', 'lxd:c1'],
      }),
    );

    const plan = await planRestore(deps, {
      recoveryPointId: 'rp-1',
      to: 'lxd-server:host2',
      plan: true,
    });

    expect(plan.target).toBe('lxd-server:host2');
    expect(outline(plan)).toEqual([
      'create 1 project(s)',
      'create 1 storage pool(s)',
      'create 2 profile(s)',
      'create image abc123 (project default)',
      'create custom volume default/data (project default)',
      'skip instance c1 (project default)',
      'create instance c2 (project default)',
    ]);
    expect(plan.bytesRead).toBe(37 * MiB);
  });

  it('path: the destination written, the agent refusing one that exists', async () => {
    await given(
      {
        target: 'path:/srv/data',
        streams: [stream('tree', 7 * MiB)],
        summary: { type: 'directory', size: 7 * MiB },
      },
      { platforms: ['path'], targets: [] },
    );

    const plan = await planRestore(deps, {
      recoveryPointId: 'rp-1',
      name: '/srv/restored',
      plan: true,
    });

    expect(outline(plan)).toEqual(['create directory /srv/restored']);
    expect(plan.notes.join(' ')).toMatch(/refused by the agent if \/srv\/restored exists/);
    expect(plan.bytesRead).toBe(7 * MiB);
  });

  it('vsphere: a new VM and its disks, powered on as it was', async () => {
    await given(
      {
        target: 'vsphere:DC0/vm/app',
        streams: [stream('disk/2000', 64 * MiB), stream('disk/2001', 32 * MiB)],
        summary: { disks: 2, powerState: 'poweredOn' },
      },
      { platforms: ['vsphere'], targets: [makeTarget('vsphere:DC0/vm/app', { state: 'on' })] },
    );

    const plan = await planRestore(deps, {
      recoveryPointId: 'rp-1',
      name: 'DC0/vm/app2',
      plan: true,
    });
    const inPlace = await planRestore(deps, { recoveryPointId: 'rp-1', inPlace: true, plan: true });

    expect(outline(plan)).toEqual([
      'create VM DC0/vm/app2',
      'create disk/2000 of VM DC0/vm/app2',
      'create disk/2001 of VM DC0/vm/app2',
      'start VM DC0/vm/app2',
    ]);
    expect(outline(inPlace)[0]).toBe('stop VM DC0/vm/app');
    expect(plan.bytesRead).toBe(96 * MiB);
  });

  it('vapp: every child VM and disk, every remap, and what vCloud Director gets back and does not', async () => {
    await given(
      {
        target: 'vapp:DC0/vapp/shop',
        streams: [stream('vm/0/disk/2000', 8 * MiB), stream('vm/1/disk/2000', 4 * MiB)],
        summary: { vms: 2, vcd: true, vcdVdc: 'acme-vdc' },
      },
      { platforms: ['vapp'], targets: [] },
    );

    const plan = await planRestore(deps, {
      recoveryPointId: 'rp-1',
      name: 'DC0/vapp/shop2',
      networks: { 'VM Network': 'dr-net' },
      datastore: 'ds2',
      plan: true,
    });

    expect(outline(plan)).toEqual([
      'create vApp DC0/vapp/shop2',
      'create VM 0 of vApp DC0/vapp/shop2',
      'create vm/0/disk/2000 of VM 0 of vApp DC0/vapp/shop2',
      'create VM 1 of vApp DC0/vapp/shop2',
      'create vm/1/disk/2000 of VM 1 of vApp DC0/vapp/shop2',
      'create the metadata of vApp DC0/vapp/shop2',
      'remap datastore',
      'remap networks',
      'create vApp DC0/vapp/shop2 in vCloud Director',
      'replace the vCloud Director metadata and lease of vApp DC0/vapp/shop2',
      'replace the metadata and quotas of VDC acme-vdc, the metadata of its organisation',
      'skip powering on vApp DC0/vapp/shop2',
    ]);
    expect(plan.steps.find((s) => s.action === 'remap' && s.what === 'networks')?.detail).toBe(
      '{"VM Network":"dr-net"}',
    );
    expect(plan.notes.join(' ')).toMatch(/allocation model is not put back/);
    expect(plan.bytesRead).toBe(12 * MiB);
  });
});

describe('POST /restores with "plan": true', () => {
  it('answers 200 with the plan and starts nothing; without it the restore starts (202)', async () => {
    await given(
      { target: 'docker:web', streams: [stream('image', MiB)], summary: { state: 'exited' } },
      { targets: [] },
    );
    const post = (body: unknown) =>
      route(deps, { method: 'POST', path: '/restores', query: {}, body: JSON.stringify(body) });

    const planned = await post({ recoveryPointId: 'rp-1', plan: true });
    await expectNothingChanged();
    const started = await post({ recoveryPointId: 'rp-1' });

    expect(planned.status).toBe(200);
    expect(planned.body).toMatchObject({ plan: true, target: 'docker:web', bytesRead: MiB });
    expect(started.status).toBe(202);
    expect(workflows.restores).toHaveLength(1);
  });

  it('refuses "plan" that is not a boolean, naming it', async () => {
    await given({ target: 'docker:web' }, { targets: [] });

    await expect(requestRestore(deps, { recoveryPointId: 'rp-1', plan: 'yes' })).rejects.toThrow(
      /plan: "plan" is true or false/,
    );
    await expect(
      requestRestore(deps, { recoveryPointId: 'rp-1', plan: true }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expectNothingChanged();
  });
});
