/**
 * The fault suite: `stowage start` (control plane and agent in one process) is SIGKILLed at
 * seeded random moments of real jobs against the real dockerd and LXD: backups of a container
 * and of an instance in each consistency mode (live, pause, stop), and in-place restores of
 * both. After each kill the service is started again (its agent sweeps the hold journal before
 * it takes any task), and the suite checks that:
 *
 * - every workload that ran before runs,
 * - nothing of Stowage's is left in the engines: helper containers, committed or loaded images
 *   no container uses, temporary volumes, set-aside containers, LXD backup files, temporary
 *   LXD instances,
 * - retrying the job succeeds,
 * and at the end that every COMPLETED point of the suite passes verify. It prints one line of
 * figures. The seed is printed; `STOWAGE_FAULT_SEED=N` replays a run.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { seededRandom } from '../fixtures/data';
import { docker, execIn, TEST_IMAGE } from '../fixtures/docker';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { launchInstance, lxd, removeInstance } from '../fixtures/lxd';
import { StowageProcess } from '../fixtures/stowage-process';

const SEED = Number(process.env.STOWAGE_FAULT_SEED ?? randomBytes(4).readUInt32LE(0));
const tag = randomBytes(3).toString('hex');
const CONTAINER = `fault-web-${tag}`;
const VOLUME = `fault-data-${tag}`;
const INSTANCE = `fault-c-${tag}`;

const random = seededRandom(SEED);

let root: string;
let stowage: StowageProcess;
const figures = { kills: 0, workloadsRestored: 0, leftovers: 0, badPoints: 0 };
const leftoverLog: string[] = [];

interface Job {
  name: string;
  args: string[];
  /** How long one run took when nothing was killed (ms): kills land within it. */
  durationMs?: number;
}

function cli(...args: string[]) {
  const out = stowage.cli(...args);
  return { ...out, job: out.json as { jobId?: string; recoveryPointId?: string; status?: string } };
}

function runToEnd(args: string[]): { recoveryPointId?: string } {
  const out = cli(...args, '--wait');
  expect(out.code, `${args.join(' ')}: ${out.stdout} ${out.stderr}`).toBe(0);
  return out.job;
}

async function containerRuns(): Promise<boolean> {
  const inspect = await docker.getContainer(CONTAINER).inspect();
  return inspect.State.Running && !inspect.State.Paused;
}

async function instanceRuns(): Promise<boolean> {
  const instance = await lxd.get<{ status: string }>(`/1.0/instances/${INSTANCE}`);
  return instance.status === 'Running';
}

/** What Stowage may have left in the engines; empty when the sweep did its work. */
async function leftovers(): Promise<string[]> {
  const found: string[] = [];
  const containers = await docker.listContainers({ all: true });
  for (const c of containers) {
    const name = (c.Names?.[0] ?? '').replace(/^\//, '');
    if (c.Labels?.['io.stowage.helper'] === '1' && name.startsWith('stowage-helper-')) {
      // Only helpers of this suite's targets: other suites may run helpers of their own.
      const target = c.Labels['io.stowage.helper.target'] ?? '';
      if (target.includes(tag)) found.push(`helper ${name}`);
    }
    if (name.startsWith(`${CONTAINER}-stowage-old-`)) found.push(`set-aside container ${name}`);
  }
  const used = new Set(containers.map((c) => c.ImageID));
  const repo = `stowage/${CONTAINER}`;
  for (const image of await docker.listImages()) {
    const mine = (image.RepoTags ?? []).filter((t) => t.startsWith(`${repo}:`));
    if (mine.length > 0 && !used.has(image.Id)) found.push(`image ${mine.join(',')}`);
  }
  const { Volumes } = await docker.listVolumes();
  for (const v of Volumes ?? []) {
    if (/^stowage-(inplace|volume)-/.test(v.Name)) found.push(`temporary volume ${v.Name}`);
  }
  const backups = await lxd.get<string[]>(`/1.0/instances/${INSTANCE}/backups`);
  for (const b of backups) found.push(`lxd backup ${b}`);
  const instances = await lxd.get<string[]>('/1.0/instances');
  for (const i of instances) {
    if (i.includes(`${INSTANCE}-stowage-`)) found.push(`temporary instance ${i}`);
  }
  return found;
}

beforeAll(async () => {
  root = tempDir('stowage-fault-');
  execFileSync('bash', ['local/engines/setup.sh'], { stdio: 'ignore' });
  // A volume of a few MiB of random data: long enough a backup to be killed in its middle.
  await docker.createVolume({ Name: VOLUME });
  const container = await docker.createContainer({
    name: CONTAINER,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    HostConfig: { Binds: [`${VOLUME}:/data`] },
  });
  await container.start();
  await execIn(CONTAINER, [
    'sh',
    '-c',
    'head -c 12000000 /dev/urandom > /data/blob && echo original > /data/marker',
  ]);
  await launchInstance(INSTANCE);
  stowage = new StowageProcess(join(root, 'data'), ['--store', join(root, 'repository')]);
  await stowage.start();
  await stowage.waitForTargets([`docker:${CONTAINER}`, `lxd:${INSTANCE}`]);
}, 180_000);

afterAll(async () => {
  await stowage?.stop();
  await docker
    .getContainer(CONTAINER)
    .remove({ force: true })
    .catch(() => undefined);
  for (const c of await docker.listContainers({ all: true })) {
    if ((c.Names?.[0] ?? '').includes(`${CONTAINER}-stowage-old-`)) {
      await docker
        .getContainer(c.Id)
        .remove({ force: true })
        .catch(() => undefined);
    }
  }
  await docker
    .getVolume(VOLUME)
    .remove()
    .catch(() => undefined);
  for (const image of await docker.listImages()) {
    for (const t of image.RepoTags ?? []) {
      if (t.startsWith(`stowage/${CONTAINER}:`)) {
        await docker
          .getImage(t)
          .remove()
          .catch(() => undefined);
      }
    }
  }
  await removeInstance(INSTANCE);
  removeDir(root);
});

it('survives SIGKILLs at random points of backups and in-place restores: workloads run, nothing is left, retries succeed, points verify', async () => {
  process.stderr.write(`fault suite seed: ${SEED} (STOWAGE_FAULT_SEED=${SEED} replays it)\n`);
  const points: string[] = [];
  const backups = (target: string): Job[] =>
    (['live', 'pause', 'stop'] as const).map((mode) => ({
      name: `backup ${target} ${mode}`,
      args: ['backup', target, '--consistency', mode],
    }));
  const dockerBackups = backups(`docker:${CONTAINER}`);
  const lxdBackups = backups(`lxd:${INSTANCE}`);

  // One undisturbed run of each job: its duration, and the points the restores go back to.
  for (const job of [...dockerBackups, ...lxdBackups]) {
    const started = Date.now();
    const done = runToEnd(job.args);
    job.durationMs = Date.now() - started;
    if (done.recoveryPointId) points.push(done.recoveryPointId);
  }
  const dockerPoint = points[0]!;
  const lxdPoint = points[3]!;
  const restores: Job[] = [
    { name: 'in-place restore docker', args: ['restore', dockerPoint, '--in-place'] },
    { name: 'in-place restore lxd', args: ['restore', lxdPoint, '--in-place'] },
  ];
  for (const job of restores) {
    const started = Date.now();
    runToEnd(job.args);
    job.durationMs = Date.now() - started;
  }

  const plan: Job[] = [
    ...dockerBackups.flatMap((j) => [j, j, j]),
    ...lxdBackups.flatMap((j) => [j, j]),
    ...[restores[0]!, restores[0]!, restores[0]!, restores[0]!],
    ...[restores[1]!, restores[1]!],
  ];
  for (const job of plan) {
    // The job as the CLI starts it, killed somewhere in the time one run takes.
    const started = cli(...job.args);
    expect(started.code, `${job.name}: ${started.stderr}`).toBe(0);
    const delay = Math.floor(random() * (job.durationMs ?? 1000));
    await new Promise((r) => setTimeout(r, delay));
    await stowage.stop('SIGKILL');
    figures.kills += 1;
    const restarting = Date.now();
    await stowage.start();
    const restartMs = Date.now() - restarting;

    // The restarted agent has swept its journal before it reported ready.
    const dockerUp = await containerRuns().catch(() => false);
    const lxdUp = await instanceRuns().catch(() => false);
    if (dockerUp && lxdUp) figures.workloadsRestored += 1;
    expect(dockerUp, `${job.name} killed after ${delay} ms (seed ${SEED}): container runs`).toBe(
      true,
    );
    expect(lxdUp, `${job.name} killed after ${delay} ms (seed ${SEED}): instance runs`).toBe(true);
    const left = await eventually(
      async () => {
        const now = await leftovers();
        return now.length === 0 ? now : undefined;
      },
      'no leftovers',
      5_000,
    ).catch(async () => leftovers());
    figures.leftovers += left.length;
    leftoverLog.push(...left.map((l) => `${job.name} @${delay}ms: ${l}`));
    expect(left, `${job.name} killed after ${delay} ms (seed ${SEED})`).toEqual([]);

    const retrying = Date.now();
    const retried = runToEnd(job.args);
    if (retried.recoveryPointId && job.args[0] === 'backup') points.push(retried.recoveryPointId);
    process.stderr.write(
      `fault suite kill ${figures.kills}: ${job.name} after ${delay} ms; restarted in ${restartMs} ms, retried in ${Date.now() - retrying} ms\n`,
    );
  }
  // The restored container holds the point's data.
  expect((await execIn(CONTAINER, ['cat', '/data/marker'])).trim()).toBe('original');

  // Every COMPLETED point of these targets, including any a killed job committed, verifies.
  const listed = [`docker:${CONTAINER}`, `lxd:${INSTANCE}`].flatMap((t) =>
    (cli('points', t).json as Array<{ recoveryPointId: string; status: string }>).filter(
      (p) => p.status === 'COMPLETED',
    ),
  );
  // Started together, followed to their end: one CLI round trip each, not one wait each.
  const verifies = listed.map((point) => {
    const started = cli('verify', point.recoveryPointId);
    expect(started.code, started.stderr).toBe(0);
    return String(started.job.jobId);
  });
  for (const jobId of verifies) {
    const ended = await eventually(
      async () => {
        const job = cli('job', jobId).job;
        return job.status === 'RUNNING' || job.status === 'PENDING' ? undefined : job;
      },
      `verify job ${jobId}`,
      120_000,
    );
    if (ended.status !== 'SUCCEEDED') figures.badPoints += 1;
  }
  process.stderr.write(
    `fault suite figures: seed ${SEED}, kills ${figures.kills}, workloads restored ${figures.workloadsRestored}/${figures.kills}, leftovers ${figures.leftovers}, bad points ${figures.badPoints}/${listed.length}\n`,
  );
  expect(figures.kills).toBeGreaterThanOrEqual(20);
  expect(leftoverLog).toEqual([]);
  expect(figures.badPoints).toBe(0);
  // 21 kills, each followed by a restart and the retried job: about ten minutes on a busy
  // two-core machine.
}, 1_500_000);
