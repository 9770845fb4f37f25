/**
 * An engine restarted in the middle of a job (issue #11): the job fails with a clear error and
 * the workload runs again afterwards. The test runs its own dockerd (its own data and exec roots,
 * socket and bridge), so it can restart it without touching the shared one; `stowage start
 * --docker-socket` points the agent at it.
 *
 * A stop-mode backup stops the container; dockerd is restarted while it is stopped (its stream
 * breaks, and the release cannot start the container while dockerd is down). The job ends
 * FAILED naming the container, the hold stays in the journal, and the agent's next sweep (after
 * the task, then every 30 s) starts the container once dockerd answers again.
 */
import { execSync, spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTestImage, TEST_IMAGE } from '../fixtures/docker';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw-restart-${process.pid}`;
const ROOT = `/tmp/${RUN}`;
const SOCKET = join(ROOT, 'docker.sock');
/**
 * A bridge of its own: a dockerd started with --bridge=none deletes the default bridge docker0,
 * which the shared dockerd's containers use (every later start there failed).
 */
const BRIDGE = `stwr${process.pid % 100_000}`;
const own = new Docker({ socketPath: SOCKET });

let dockerd: ChildProcess | undefined;
let dataDir: string;
let stowageProcess: StowageProcess;
const stowage = (...args: string[]) => stowageProcess.cli(...args);

async function startDockerd(): Promise<void> {
  execSync(
    `ip link show ${BRIDGE} >/dev/null 2>&1 || { ip link add ${BRIDGE} type bridge && ip addr add 10.213.77.1/24 dev ${BRIDGE} && ip link set ${BRIDGE} up; }`,
  );
  dockerd = spawn(
    'dockerd',
    [
      '--data-root',
      join(ROOT, 'root'),
      '--exec-root',
      join(ROOT, 'exec'),
      '-H',
      `unix://${SOCKET}`,
      '--pidfile',
      join(ROOT, 'docker.pid'),
      `--bridge=${BRIDGE}`,
      '--iptables=false',
      '--ip6tables=false',
    ],
    { stdio: 'ignore' },
  );
  await eventually(
    () =>
      own.ping().then(
        () => true,
        () => undefined,
      ),
    'the test dockerd answering',
    30_000,
  );
}

async function stopDockerd(): Promise<void> {
  const child = dockerd;
  dockerd = undefined;
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

const running = async () =>
  (await own
    .getContainer(RUN)
    .inspect()
    .then(
      (i) => i.State.Running,
      () => false,
    )) as boolean;

beforeAll(async () => {
  await requireTestImage();
  rmSync(ROOT, { recursive: true, force: true });
  await startDockerd();
  execSync(`docker save ${TEST_IMAGE} | docker -H unix://${SOCKET} load`, { stdio: 'ignore' });
  await own.createVolume({ Name: `${RUN}-data` });
  const c = await own.createContainer({
    name: RUN,
    Image: TEST_IMAGE,
    // Stops at once on SIGTERM (a bare sleep would take docker's 10 s grace).
    Cmd: ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 1; done'],
    HostConfig: { Binds: [`${RUN}-data:/data`], NetworkMode: 'none' },
  });
  await c.start();
  dataDir = tempDir('stowage-restart-');
  // The hold sweep every second (30 s by default): the container runs again soon after dockerd.
  stowageProcess = new StowageProcess(dataDir, [
    '--docker-socket',
    SOCKET,
    '--hold-sweep-seconds',
    '1',
  ]);
  await stowageProcess.start();
  await stowageProcess.waitForTargets([`docker:${RUN}`]);
}, 180_000);

afterAll(async () => {
  await stowageProcess?.stop();
  await own
    .getContainer(RUN)
    .remove({ force: true, v: true })
    .catch(() => undefined);
  await stopDockerd();
  execSync(`ip link delete ${BRIDGE} 2>/dev/null || true`);
  try {
    execSync(`umount -R ${ROOT}/root 2>/dev/null; rm -rf ${ROOT}`, { stdio: 'ignore' });
  } catch {
    // a busy mount: leave it
  }
  if (dataDir) removeDir(dataDir);
});

describe('dockerd restarted in the middle of a stop-mode backup', () => {
  it('fails the job with a clear error, and the container runs again afterwards', async () => {
    const started = stowage(
      'backup',
      `docker:${RUN}`,
      '--consistency',
      'stop',
      '--pre-hook',
      'dd if=/dev/urandom of=/data/r.bin bs=1048576 count=64 2>/dev/null',
    );
    expect(started.code, started.stderr).toBe(0);
    const { jobId } = started.json as { jobId: string };
    await eventually(
      async () => ((await running()) ? undefined : true),
      'the container stopped',
      60_000,
    );

    await stopDockerd();
    await startDockerd();

    const job = await eventually(
      async () => {
        const j = stowage('job', jobId).json as { status: string; error?: { message: string } };
        return ['PENDING', 'RUNNING'].includes(j.status) ? undefined : j;
      },
      'the job to end',
      120_000,
    );
    expect(job.status).toBe('FAILED');
    expect(job.error?.message).toMatch(new RegExp(`${RUN}|docker`));
    const t0 = Date.now();
    await eventually(
      async () => ((await running()) ? true : undefined),
      'the container running again',
      60_000,
    );
    process.stdout.write(
      `engine restart figures: job FAILED (${job.error?.message.slice(0, 200)}); container running ${Date.now() - t0} ms after the job ended\n`,
    );
    const points = (stowage('points', `docker:${RUN}`).json as unknown[] | undefined) ?? [];
    expect(points).toHaveLength(0);
  });
});
