/**
 * The vSphere journey through the CLI, as a user drives it: `stowage start --vsphere-url ...`
 * against VMware's simulator (test/fixtures/vcsim.ts starts one for this file), a VM with two
 * disks of known bytes listed by `stowage targets --platform vsphere`, backed up, its disks
 * overwritten and restored in place (powered on again with --state running), restored as a new
 * VM, one disk attached to another VM at a controller and unit, a backup of one disk only, and a
 * backup whose disk read fails, which leaves no snapshot behind. The simulator keeps datastore
 * files as real files, so bytes are compared with the files themselves.
 *
 * What the simulator cannot show is listed in test/contract/vsphere-driver.test.ts (no delta
 * disks under a snapshot, no CBT, no NFC export, no quiesce, plain HTTP only).
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';
import {
  holdingProxy,
  createTestVapp,
  createTestVm,
  diskBytes,
  expectedBytes,
  flatOf,
  localFile,
  startVcsim,
  vmState,
  type TestDisk,
  type Vcsim,
} from '../fixtures/vcsim';

const MiB = 1024 * 1024;
let sim: Vcsim;
let root: string;
let stowage: StowageProcess;

/** Data, a zero region and data; and a flat file shorter than its disk (zeros after it). */
const DISKS: TestDisk[] = [
  {
    capacity: 8 * MiB,
    bytes: Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(2 * MiB), randomBytes(3 * MiB)]),
  },
  { capacity: 4 * MiB, bytes: randomBytes(3 * MiB) },
];

function ok(...args: string[]): unknown {
  const run = stowage.cli(...args);
  expect(run.code, `stowage ${args.join(' ')}: ${run.stderr}`).toBe(0);
  return run.json;
}

async function state(path: string) {
  const s = await vmState(sim, path);
  expect(s, `${path} exists`).toBeDefined();
  return s!;
}

/**
 * The agent lists its whole inventory only once an hour here: whatever reaches `targets`
 * sooner came from vSphere's updates (WaitForUpdatesEx), as it would within a second or two.
 */
const INVENTORY_BY_EVENTS = { STOWAGE_INVENTORY_INTERVAL_MS: String(3600_000) };

/** VMs appear in the inventory from vSphere's updates (the hourly listing is too late). */
async function waitForVms(...paths: string[]): Promise<void> {
  await eventually(
    async () => {
      const listed = (stowage.cli('targets', '--platform', 'vsphere').json ?? []) as Array<{
        target: string;
      }>;
      return paths.every((p) => listed.some((l) => l.target === `vsphere:${p}`)) ? true : undefined;
    },
    `${paths.join(', ')} in the inventory`,
    15_000,
  );
}

/** The vSphere targets the API lists now (a direct request: a CLI process takes a second). */
async function listedVms(): Promise<Array<{ target: string; state: string }>> {
  const res = await fetch(`http://127.0.0.1:${stowage.port}/targets?platform=vsphere`, {
    headers: stowage.apiHeaders(),
  });
  return (await res.json()) as Array<{ target: string; state: string }>;
}

/** Milliseconds from now until `probe` holds (polling every 50 ms, at most 15 s). */
async function msUntil(probe: () => Promise<boolean>, what: string): Promise<number> {
  const t0 = Date.now();
  await eventually(async () => ((await probe()) ? true : undefined), what, 15_000);
  return Date.now() - t0;
}

beforeAll(async () => {
  sim = await startVcsim();
  root = tempDir('stowage-vsphere-journey-');
  // No LXD for this agent (a socket that is not there): only vSphere, Docker and paths.
  stowage = new StowageProcess(
    join(root, 'data'),
    [
      '--store',
      join(root, 'store'),
      '--vsphere-url',
      sim.url,
      '--vsphere-user',
      sim.user,
      '--vsphere-password-file',
      sim.passwordFile,
      '--lxd-socket',
      join(root, 'no-lxd.socket'),
    ],
    INVENTORY_BY_EVENTS,
  );
  await stowage.start();
}, 180_000);

afterAll(async () => {
  await stowage?.stop();
  await sim?.stop();
  if (root) removeDir(root);
});

describe('vSphere through the CLI (vcsim)', () => {
  it('backs up a VM of two disks and restores it in place, as a new VM, and one disk onto another VM', async () => {
    const { ref, diskFiles } = await createTestVm(sim, 'journey-vm', DISKS);
    await createTestVm(sim, 'journey-other', [{ capacity: MiB, bytes: randomBytes(MiB) }]);
    await sim.vim.runTask('PowerOnVM_Task', ref, {}, 'test power on');
    await waitForVms('DC0/vm/journey-vm', 'DC0/vm/journey-other');

    const targets = ok('targets', '--platform', 'vsphere') as Array<{
      target: string;
      state: string;
      details: Record<string, string>;
    }>;
    expect(targets.every((t) => t.target.startsWith('vsphere:'))).toBe(true);
    expect(targets.find((t) => t.target === 'vsphere:DC0/vm/journey-vm')).toMatchObject({
      state: 'running',
      details: { disks: 'disk-202-0=8MiB,disk-202-1=4MiB', datastore: 'LocalDS_0' },
    });

    // Backup: both disks, the snapshot it read them from removed.
    const backup = ok('backup', 'vsphere:DC0/vm/journey-vm', '--wait') as {
      recoveryPointId: string;
    };
    const point = backup.recoveryPointId;
    const points = ok('points', 'vsphere:DC0/vm/journey-vm') as Array<{
      recoveryPointId: string;
      streams: Array<{ size: number }>;
      summary: Record<string, unknown>;
    }>;
    const listed = points.find((p) => p.recoveryPointId === point)!;
    expect(listed.streams.map((s) => s.size)).toEqual([8 * MiB, 4 * MiB]);
    expect(listed.summary).toMatchObject({ disks: 2, transport: 'datastore-http' });
    expect(await state('DC0/vm/journey-vm')).toMatchObject({ snapshots: 0, power: 'poweredOn' });

    // In place: both disks overwritten, then put back; the VM is powered off for it and on again.
    for (const f of diskFiles) {
      rmSync(localFile(sim, flatOf(f)));
      const path = flatOf(f).replace('[LocalDS_0] ', '');
      await sim.files.put('DC0', { datastore: 'LocalDS_0', path }, randomBytes(MiB), MiB);
    }
    ok('restore', point, '--in-place', '--state', 'running', '--wait');
    DISKS.forEach((d, i) =>
      expect(diskBytes(sim, diskFiles[i]!, d.capacity).equals(expectedBytes(d))).toBe(true),
    );
    expect(await state('DC0/vm/journey-vm')).toMatchObject({ power: 'poweredOn', snapshots: 0 });

    // As a new VM beside the original, powered off; a name that exists is refused by the API.
    ok('restore', point, '--name', 'journey-copy', '--wait');
    const copy = await state('DC0/vm/journey-copy');
    expect(copy.power).toBe('poweredOff');
    expect(copy.disks.map((d) => [d.unitNumber, d.capacity])).toEqual([
      [0, 8 * MiB],
      [1, 4 * MiB],
    ]);
    DISKS.forEach((d, i) =>
      expect(diskBytes(sim, copy.disks[i]!.fileName, d.capacity).equals(expectedBytes(d))).toBe(
        true,
      ),
    );
    const taken = stowage.cli('restore', point, '--name', 'journey-other');
    expect(taken.code).toBe(2);
    expect(taken.stderr).toMatch(/vsphere:DC0\/vm\/journey-other already exists/);

    // One disk onto another VM, at the controller and unit asked for.
    const other = await state('DC0/vm/journey-other');
    const controller = other.disks[0]!.controllerKey;
    ok(
      'restore',
      point,
      '--disk',
      'disk-202-1',
      '--attach-to',
      'vsphere:DC0/vm/journey-other',
      '--controller',
      String(controller),
      '--unit',
      '3',
      '--wait',
    );
    const attached = (await state('DC0/vm/journey-other')).disks.find((d) => d.unitNumber === 3);
    expect(attached).toMatchObject({ controllerKey: controller, capacity: 4 * MiB });
    expect(diskBytes(sim, attached!.fileName, 4 * MiB).equals(expectedBytes(DISKS[1]!))).toBe(true);
    // The unit is now taken: refused by the agent, naming the free ones.
    const again = stowage.cli(
      'restore',
      point,
      '--disk',
      'disk-202-1',
      '--attach-to',
      'vsphere:DC0/vm/journey-other',
      '--controller',
      String(controller),
      '--unit',
      '3',
      '--wait',
    );
    expect(again.code).toBe(1);
    expect(JSON.stringify(again.json)).toMatch(/unit 3 .* is taken; free units/);
  }, 300_000);

  it('backs up only the disks asked for, and refuses an unknown disk label', async () => {
    await createTestVm(sim, 'journey-select', DISKS);
    await waitForVms('DC0/vm/journey-select');
    const only = ok(
      'backup',
      'vsphere:DC0/vm/journey-select',
      '--exclude-disk',
      'disk-202-0',
      '--wait',
    ) as {
      recoveryPointId: string;
    };
    const point = (
      ok('points', 'vsphere:DC0/vm/journey-select') as Array<{
        recoveryPointId: string;
        streams: Array<{ size: number }>;
      }>
    ).find((p) => p.recoveryPointId === only.recoveryPointId)!;
    expect(point.streams.map((s) => s.size)).toEqual([4 * MiB]);
    const unknown = stowage.cli(
      'backup',
      'vsphere:DC0/vm/journey-select',
      '--include-disk',
      'Hard disk 9',
      '--wait',
    );
    expect(unknown.code).toBe(1);
    expect(JSON.stringify(unknown.json)).toMatch(/has no disk \\"Hard disk 9\\"/);
  }, 180_000);

  it('keeps VM snapshots as the local tier: create, list, restore (powered off without memory, running when asked), delete', async () => {
    const { ref } = await createTestVm(sim, 'journey-snap', DISKS);
    await sim.vim.runTask('PowerOnVM_Task', ref, {}, 'test power on');
    await waitForVms('DC0/vm/journey-snap');
    const created = ok(
      'snapshot',
      'create',
      'vsphere:DC0/vm/journey-snap',
      '--pattern',
      'pre-%d',
      '--expiry',
      '1d',
      '--wait',
    ) as { snapshotId: string };
    expect(created.snapshotId).toBe('vsphere:DC0/vm/journey-snap/pre-0');
    const listed = ok('snapshot', 'list', 'vsphere:DC0/vm/journey-snap') as Array<{
      target: string;
      snapshots: Array<{ name: string; expiresAt: string | null }>;
    }>;
    expect(listed[0]?.snapshots.map((x) => x.name)).toEqual(['pre-0']);
    expect(listed[0]?.snapshots[0]?.expiresAt).not.toBeNull();
    const points = ok('points', 'vsphere:DC0/vm/journey-snap') as Array<{ tier: string }>;
    expect(points.map((p) => p.tier)).toEqual(['snapshot']);

    // The plan says the VM comes back off, and changes nothing.
    const before = await state('DC0/vm/journey-snap');
    const plan = ok('snapshot', 'restore', 'vsphere:DC0/vm/journey-snap/pre-0', '--plan') as {
      stateAfter: string;
      notes: string[];
    };
    expect(plan.stateAfter).toBe('stopped');
    expect(plan.notes[0]).toMatch(/holds no memory: the vSphere VM comes back powered off/);
    expect(await state('DC0/vm/journey-snap')).toEqual(before);
    ok('snapshot', 'restore', 'vsphere:DC0/vm/journey-snap/pre-0', '--wait');
    expect((await state('DC0/vm/journey-snap')).power).toBe('poweredOff');
    ok('snapshot', 'restore', 'vsphere:DC0/vm/journey-snap/pre-0', '--state', 'running', '--wait');
    expect((await state('DC0/vm/journey-snap')).power).toBe('poweredOn');

    ok('snapshot', 'delete', 'vsphere:DC0/vm/journey-snap/pre-0', '--wait');
    expect((await state('DC0/vm/journey-snap')).snapshots).toBe(0);
  }, 180_000);

  it('backs up a vApp through the CLI, restores it after deletion, and ends PARTIALLY_FAILED (exit 4) when a child fails', async () => {
    await createTestVapp(sim, 'jshop', [
      ['jshop-web', [DISKS[1]!]],
      ['jshop-db', [DISKS[1]!]],
    ]);
    await eventually(
      async () => {
        const listed = (stowage.cli('targets', '--platform', 'vapp').json ?? []) as Array<{
          target: string;
          details: Record<string, string>;
        }>;
        return listed.find((t) => t.target === 'vapp:DC0/vapp/jshop');
      },
      'vapp:DC0/vapp/jshop in the inventory',
      15_000,
    );
    const whole = ok('backup', 'vapp:DC0/vapp/jshop', '--wait') as { recoveryPointId: string };

    // One child's disk goes: the point holds the other and names it; the job is PARTIALLY_FAILED.
    const db = await state('DC0/vm/jshop-db');
    rmSync(localFile(sim, flatOf(db.disks[0]!.fileName)));
    const half = stowage.cli('backup', 'vapp:DC0/vapp/jshop', '--wait');
    expect(half.code, half.stderr).toBe(4);
    expect(half.json).toMatchObject({
      status: 'PARTIALLY_FAILED',
      error: { name: 'PartiallyBackedUp', message: expect.stringMatching(/vm jshop-db: /) },
    });
    const points = ok('points', 'vapp:DC0/vapp/jshop') as Array<{
      recoveryPointId: string;
      failures?: Array<{ part: string }>;
    }>;
    expect(points.map((p) => p.failures?.map((f) => f.part) ?? [])).toEqual([['vm jshop-db'], []]);

    // The whole point restores the vApp after it was deleted (the API finds the name free).
    for (const vm of ['jshop-web', 'jshop-db']) {
      await sim.vim.runTask('Destroy_Task', (await state(`DC0/vm/${vm}`)).ref, {}, 'test destroy');
    }
    const apps = await sim.vim.retrieveAll('VirtualApp', ['name']);
    const app = apps.find((a) => a.props.name && JSON.stringify(a.props.name).includes('jshop'))!;
    await sim.vim.runTask('Destroy_Task', app.ref, {}, 'test destroy');
    await eventually(
      async () => {
        const listed = (stowage.cli('targets', '--platform', 'vapp').json ?? []) as Array<{
          target: string;
        }>;
        return listed.some((t) => t.target === 'vapp:DC0/vapp/jshop') ? undefined : true;
      },
      'vapp:DC0/vapp/jshop gone from the inventory',
      15_000,
    );
    ok('restore', whole.recoveryPointId, '--name', 'jshop', '--wait');
    for (const vm of ['jshop-web', 'jshop-db']) {
      const restored = await state(`DC0/vm/${vm}`);
      expect(
        diskBytes(sim, restored.disks[0]!.fileName, DISKS[1]!.capacity).equals(
          expectedBytes(DISKS[1]!),
        ),
      ).toBe(true);
    }
  }, 300_000);

  it('follows the updates vSphere sends: a VM created, powered on and deleted reaches the targets without a listing', async () => {
    const vm = 'vsphere:DC0/vm/journey-events';
    const find = async () => (await listedVms()).find((t) => t.target === vm);
    const { ref } = await createTestVm(sim, 'journey-events', [DISKS[1]!]);
    const created = await msUntil(async () => (await find()) !== undefined, 'the new VM listed');
    await sim.vim.runTask('PowerOnVM_Task', ref, {}, 'test power on');
    const started = await msUntil(
      async () => (await find())?.state === 'running',
      'the VM listed as running',
    );
    await sim.vim.runTask('PowerOffVM_Task', ref, {}, 'test power off');
    await sim.vim.runTask('Destroy_Task', ref, {}, 'test destroy');
    const deleted = await msUntil(async () => (await find()) === undefined, 'the VM gone');
    process.stdout.write(
      `inventory figures: vsphere VM created listed in ${created} ms, running in ${started} ms, deleted gone in ${deleted} ms (whole listings hourly)\n`,
    );
  }, 60_000);

  it('finishes an in-place restore whose agent was killed while the VM was powered off for it, once the agent is back', async () => {
    // An agent of its own, talking to vcsim through a proxy that holds the first disk copy
    // (CopyVirtualDisk_Task, right after the point of no return) unanswered: killed there.
    const proxy = await holdingProxy(sim.url, /<CopyVirtualDisk_Task/);
    const dir = join(root, 'killed');
    const killable = new StowageProcess(
      join(dir, 'data'),
      [
        '--store',
        join(dir, 'store'),
        '--vsphere-url',
        proxy.url,
        '--vsphere-user',
        sim.user,
        '--vsphere-password-file',
        sim.passwordFile,
        '--lxd-socket',
        join(root, 'no-lxd.socket'),
      ],
      INVENTORY_BY_EVENTS,
    );
    try {
      await killable.start();
      const { ref, diskFiles } = await createTestVm(sim, 'journey-killed', DISKS);
      await sim.vim.runTask('PowerOnVM_Task', ref, {}, 'test power on');
      await killable.waitForTargets(['vsphere:DC0/vm/journey-killed']);
      const backup = killable.cli('backup', 'vsphere:DC0/vm/journey-killed', '--wait');
      expect(backup.code, backup.stderr).toBe(0);
      const point = (backup.json as { recoveryPointId: string }).recoveryPointId;
      for (const f of diskFiles) {
        await sim.files.put(
          'DC0',
          { datastore: 'LocalDS_0', path: flatOf(f).replace('[LocalDS_0] ', '') },
          randomBytes(MiB),
          MiB,
        );
      }
      const started = killable.cli('restore', point, '--in-place', '--state', 'running');
      expect(started.code, started.stderr).toBe(0);
      await proxy.held;
      await killable.stop('SIGKILL');

      // What the killed agent left: the VM powered off, its disks not written yet, staged copies.
      expect((await state('DC0/vm/journey-killed')).power).toBe('poweredOff');
      expect(
        diskBytes(sim, diskFiles[0]!, DISKS[0]!.capacity).equals(expectedBytes(DISKS[0]!)),
      ).toBe(false);
      const staged = () =>
        readdirSync(localFile(sim, '[LocalDS_0] journey-killed')).filter((n) =>
          n.startsWith('stowage-restore-'),
        );
      expect(staged().length).toBeGreaterThan(0);
      const journal = join(dir, 'data', 'holds');
      const records = () =>
        readdirSync(journal, { recursive: true }).filter((n) => String(n).endsWith('.json'));
      expect(records()).toHaveLength(1);

      // The next agent (same data directory, straight to vcsim) sweeps the journal before it
      // reports ready and takes any task: it finishes the restore.
      await proxy.close();
      const direct = new StowageProcess(
        join(dir, 'data'),
        [
          '--store',
          join(dir, 'store'),
          '--vsphere-url',
          sim.url,
          '--vsphere-user',
          sim.user,
          '--vsphere-password-file',
          sim.passwordFile,
          '--lxd-socket',
          join(root, 'no-lxd.socket'),
        ],
        INVENTORY_BY_EVENTS,
      );
      await direct.start();
      try {
        await eventually(
          async () => (records().length === 0 ? true : undefined),
          'the hold released',
          60_000,
        );
        expect((await state('DC0/vm/journey-killed')).power).toBe('poweredOn');
        DISKS.forEach((d, i) =>
          expect(diskBytes(sim, diskFiles[i]!, d.capacity).equals(expectedBytes(d))).toBe(true),
        );
        expect(staged()).toEqual([]);
      } finally {
        await direct.stop();
      }
    } finally {
      await killable.stop();
      await proxy.close();
    }
  }, 300_000);

  it('fails a backup whose disk read fails, and leaves no snapshot on the VM', async () => {
    const { diskFiles } = await createTestVm(sim, 'journey-broken', DISKS);
    await waitForVms('DC0/vm/journey-broken');
    rmSync(localFile(sim, flatOf(diskFiles[1]!)));
    const run = stowage.cli('backup', 'vsphere:DC0/vm/journey-broken', '--wait');
    expect(run.code).toBe(1);
    expect(JSON.stringify(run.json)).toMatch(/journey-broken_1-flat\.vmdk does not exist/);
    expect((await state('DC0/vm/journey-broken')).snapshots).toBe(0);
  }, 180_000);
});
