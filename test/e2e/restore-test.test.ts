/**
 * Restore testing through the product (`stowage restore-test`), against the real dockerd and LXD:
 * a container and an instance are backed up, then each point is restored into a sandbox that is
 * watched while it runs (no network, no published ports, no host directory, its own volume copy),
 * a probe that passes and one that fails run inside it, the outcome and the RTO land on the point
 * (`stowage points`), the sandbox is gone afterwards, and the original is untouched.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { docker, execIn, removeByPrefix, requireTestImage, TEST_IMAGE } from '../fixtures/docker';
import { removeDir, tempDir } from '../fixtures/local-plane';
import { launchInstance, lxd, removeInstance, sh } from '../fixtures/lxd';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw-rt-${randomBytes(3).toString('hex')}`;
const WEB = `${RUN}-web`;
const C1 = `${RUN}-c1`;
const SANDBOX_LABEL = 'io.stowage.sandbox';
const SANDBOX_KEY = 'user.stowage.sandbox';

let root: string;
let hostDir: string;
let stowage: StowageProcess;

interface TestJson {
  jobId: string;
  kind: string;
  status: string;
  target: string;
  recoveryPointId: string;
  error?: { name: string; message: string };
  restoreTest?: {
    passed: boolean;
    sandbox: string;
    rtoMs: number;
    restoreMs: number;
    removed: boolean;
    probe?: { exitCode: number | null; output: string };
  };
}

type Json = Record<string, unknown>;

interface PointJson {
  recoveryPointId: string;
  restoreTest?: { passed: boolean; jobId: string; rtoMs?: number; testedAt: string };
}

beforeAll(async () => {
  await requireTestImage();
  execFileSync('bash', ['local/engines/setup-lxd.sh'], { stdio: 'ignore' });
  root = tempDir('stowage-rt-e2e-');
  hostDir = join(root, 'host');
  mkdirSync(hostDir);
  writeFileSync(join(hostDir, 'secret'), 'host secret\n');

  await docker.createVolume({ Name: `${WEB}-data` });
  const web = await docker.createContainer({
    name: WEB,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    ExposedPorts: { '80/tcp': {} },
    HostConfig: {
      Binds: [`${WEB}-data:/data`, `${hostDir}:/host`],
      PortBindings: { '80/tcp': [{ HostPort: '' }] },
      RestartPolicy: { Name: 'unless-stopped' },
    },
  });
  await web.start();
  await execIn(WEB, ['sh', '-c', 'echo hello > /data/marker']);

  await launchInstance(C1);
  await lxd.run('PATCH', `/1.0/instances/${C1}`, {
    devices: { host: { type: 'disk', source: hostDir, path: '/mnt/host' } },
  });
  await sh(C1, 'mkdir -p /data && echo hello > /data/marker');

  stowage = new StowageProcess(join(root, 'data'));
  await stowage.start();
  await stowage.waitForTargets([`docker:${WEB}`, `lxd:${C1}`]);
}, 180_000);

afterAll(async () => {
  await stowage?.stop();
  await removeByPrefix(RUN);
  await removeInstance(C1);
  if (root) removeDir(root);
}, 120_000);

/** Watches dockerd for a sandbox starting and keeps its inspect (taken while it runs). */
async function watchDockerSandbox() {
  const seen: Array<Awaited<ReturnType<ReturnType<typeof docker.getContainer>['inspect']>>> = [];
  const events = await docker.getEvents({
    filters: { type: ['container'], event: ['start'], label: [SANDBOX_LABEL] },
  });
  const inspected: Array<Promise<void>> = [];
  events.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
      const id = (JSON.parse(line) as { id: string }).id;
      inspected.push(
        docker
          .getContainer(id)
          .inspect()
          .then((i) => void seen.push(i))
          .catch(() => undefined),
      );
    }
  });
  return {
    seen,
    stop: async () => {
      (events as unknown as { destroy(): void }).destroy();
      await Promise.all(inspected);
    },
  };
}

/** Polls LXD for a sandbox instance and keeps what it looked like while it ran. */
function watchLxdSandbox() {
  const seen = new Map<
    string,
    { devices: Record<string, Record<string, string>>; status: string }
  >();
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const all = await lxd
        .get<
          Array<{
            name: string;
            status: string;
            config: Record<string, string>;
            expanded_devices: Record<string, Record<string, string>>;
          }>
        >('/1.0/instances?recursion=1')
        .catch(() => []);
      for (const i of all) {
        if (i.config[SANDBOX_KEY] === i.name && i.status === 'Running') {
          seen.set(i.name, { devices: i.expanded_devices, status: i.status });
        }
      }
      await new Promise((r) => setTimeout(r, 150));
    }
  })();
  return {
    seen,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

const nameOf = (target: string) => target.slice(target.indexOf(':') + 1);

describe('restore tests of a Docker container', () => {
  let pointId = '';
  let originalId = '';

  it('backs the container up', async () => {
    originalId = (await docker.getContainer(WEB).inspect()).Id;
    const backup = stowage.cli('backup', `docker:${WEB}`, '--wait');
    expect(backup.code, backup.stderr).toBe(0);
    pointId = (backup.json as { recoveryPointId: string }).recoveryPointId;
  });

  it('passes a probe in an isolated sandbox, records the RTO on the point and removes the sandbox', async () => {
    const watch = await watchDockerSandbox();
    // Inside: the restored data, no network but lo, no host directory; it writes to its copy.
    const probe =
      'test "$(cat /data/marker)" = hello && test "$(ls /sys/class/net)" = lo && ! test -e /host/secret && echo sandboxed > /data/marker && echo probe-ok';
    const run = await stowage.cliAsync('restore-test', pointId, '--probe', probe, '--wait');
    await watch.stop();
    expect(run.code, run.stderr + run.stdout).toBe(0);
    const out = run.json as TestJson;
    expect(out).toMatchObject({
      kind: 'RESTORE_TEST',
      status: 'SUCCEEDED',
      recoveryPointId: pointId,
    });
    expect(out.restoreTest).toMatchObject({ passed: true, removed: true, probe: { exitCode: 0 } });
    expect(out.restoreTest!.probe!.output).toContain('probe-ok');
    expect(out.restoreTest!.rtoMs).toBeGreaterThan(0);
    expect(out.restoreTest!.rtoMs).toBeGreaterThanOrEqual(out.restoreTest!.restoreMs);
    console.log(
      `restore test figures: docker RTO ${out.restoreTest!.rtoMs} ms (restore ${out.restoreTest!.restoreMs} ms)`,
    );

    // What the sandbox was while it ran.
    const sandbox = nameOf(out.target);
    expect(watch.seen.map((i) => i.Name)).toEqual([`/${sandbox}`]);
    const inspect = watch.seen[0]!;
    expect(inspect.HostConfig.NetworkMode).toBe('none');
    expect(inspect.HostConfig.PortBindings ?? {}).toEqual({});
    expect(inspect.HostConfig.RestartPolicy?.Name).toBe('no');
    expect(inspect.Mounts.filter((m) => m.Type === 'bind')).toEqual([]);
    expect(inspect.Mounts.map((m) => m.Name)).toEqual([`${sandbox}_${WEB}-data`]);

    // Gone afterwards: the container and its volume.
    await expect(docker.getContainer(sandbox).inspect()).rejects.toMatchObject({ statusCode: 404 });
    const { Volumes } = await docker.listVolumes({ filters: { label: [SANDBOX_LABEL] } });
    expect((Volumes ?? []).map((v) => v.Name).filter((n) => n.includes(sandbox))).toEqual([]);

    const points = stowage.cli('points', `docker:${WEB}`).json as PointJson[];
    expect(points[0]!.restoreTest).toMatchObject({ passed: true, jobId: out.jobId });

    // Local mode's Job State Change events: the job created (API), running, then its end.
    const events = readFileSync(join(root, 'data', 'events.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { source: string; 'detail-type': string; detail: Json })
      .filter((e) => e.detail.jobId === out.jobId);
    expect(events.map((e) => [e.source, e['detail-type'], e.detail.status])).toEqual([
      ['stowage', 'Job State Change', 'PENDING'],
      ['stowage', 'Job State Change', 'RUNNING'],
      ['stowage', 'Job State Change', 'SUCCEEDED'],
    ]);
    expect(events[2]!.detail).toMatchObject({
      kind: 'RESTORE_TEST',
      restoreTest: { passed: true },
    });
  });

  it('fails on a probe that fails, says why, records it on the point and removes the sandbox', async () => {
    const run = stowage.cli(
      'restore-test',
      pointId,
      '--probe',
      'echo schema missing; exit 3',
      '--wait',
    );
    expect(run.code).toBe(1);
    const out = run.json as TestJson;
    expect(out.status).toBe('FAILED');
    expect(out.error?.name).toBe('RestoreTestFailed');
    expect(out.error?.message).toMatch(/exited with code 3.*schema missing/);
    expect(out.restoreTest).toMatchObject({ passed: false, removed: true, probe: { exitCode: 3 } });
    await expect(docker.getContainer(nameOf(out.target)).inspect()).rejects.toMatchObject({
      statusCode: 404,
    });
    const points = stowage.cli('points', `docker:${WEB}`).json as PointJson[];
    expect(points[0]!.restoreTest).toMatchObject({ passed: false, jobId: out.jobId });
    const sandboxes = await docker.listContainers({
      all: true,
      filters: { label: [SANDBOX_LABEL] },
    });
    expect(sandboxes.filter((c) => c.Names.some((n) => n.includes('stowage-rt-')))).toEqual([]);
  });

  it('left the original as it was: same container, running, its data and the host directory unchanged', async () => {
    const original = await docker.getContainer(WEB).inspect();
    expect(original.Id).toBe(originalId);
    expect(original.State.Running).toBe(true);
    expect((await execIn(WEB, ['cat', '/data/marker'])).trim()).toBe('hello');
    expect(readFileSync(join(hostDir, 'secret'), 'utf8')).toBe('host secret\n');
  });
});

describe('restore tests of an LXD instance', () => {
  let pointId = '';

  it('backs the instance up', () => {
    const backup = stowage.cli('backup', `lxd:${C1}`, '--wait');
    expect(backup.code, backup.stderr).toBe(0);
    pointId = (backup.json as { recoveryPointId: string }).recoveryPointId;
  });

  it('passes a probe in a sandbox with every device but the root disk masked, then removes it', async () => {
    const watch = watchLxdSandbox();
    const probe =
      'test "$(cat /data/marker)" = hello && ! test -e /mnt/host/secret && echo sandboxed > /data/marker && echo probe-ok';
    const run = await stowage.cliAsync('restore-test', pointId, '--probe', probe, '--wait');
    await watch.stop();
    expect(run.code, run.stderr + run.stdout).toBe(0);
    const out = run.json as TestJson;
    expect(out.restoreTest).toMatchObject({ passed: true, removed: true, probe: { exitCode: 0 } });
    expect(out.restoreTest!.probe!.output).toContain('probe-ok');
    console.log(
      `restore test figures: lxd RTO ${out.restoreTest!.rtoMs} ms (restore ${out.restoreTest!.restoreMs} ms)`,
    );
    const sandbox = nameOf(out.target);
    const seen = watch.seen.get(sandbox);
    expect(seen?.devices.host).toEqual({ type: 'none' });
    expect(seen?.devices.root).toMatchObject({ type: 'disk', path: '/' });
    const names = (await lxd.get<string[]>('/1.0/instances')).map((u) => u.split('/').pop());
    expect(names).not.toContain(sandbox);
    const points = stowage.cli('points', `lxd:${C1}`).json as PointJson[];
    expect(points[0]!.restoreTest).toMatchObject({ passed: true, jobId: out.jobId });
  });

  it('fails on a probe that fails and removes the sandbox; the original runs unchanged', async () => {
    const run = stowage.cli('restore-test', pointId, '--probe', 'exit 7', '--wait');
    expect(run.code).toBe(1);
    const out = run.json as TestJson;
    expect(out.restoreTest).toMatchObject({ passed: false, removed: true, probe: { exitCode: 7 } });
    const names = (await lxd.get<string[]>('/1.0/instances')).map((u) => u.split('/').pop());
    expect(names).not.toContain(nameOf(out.target));
    expect(names).toContain(C1);
    expect((await sh(C1, 'cat /data/marker')).trim()).toBe('hello');
    const state = await lxd.get<{ status: string }>(`/1.0/instances/${C1}/state`);
    expect(state.status).toBe('Running');
  });

  it('refuses an unknown point with exit code 2', () => {
    const run = stowage.cli('restore-test', 'rp-does-not-exist');
    expect(run.code).toBe(2);
  });
});
