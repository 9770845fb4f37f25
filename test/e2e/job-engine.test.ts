/**
 * The job engine under ordinary concurrency (issue #11), as a user runs it: `stowage start` in
 * its own process with the workflows' HeartbeatSeconds shortened to 1 s through configuration
 * (never in the ASL files), the CLI with --json, a real dockerd.
 *
 * Six containers backed up by one job on one agent that runs one task at a time, each task held
 * by a pre-hook for longer than HeartbeatSeconds: the tasks that wait in the queue meanwhile do
 * not time out (their heartbeat clock starts when the agent claims them), and the job ends with
 * six points whose restores hold the original bytes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  docker,
  execIn,
  fingerprint,
  removeByPrefix,
  requireTestImage,
  TEST_IMAGE,
} from '../fixtures/docker';
import { removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw-jobs-${process.pid}`;
const SIX = [1, 2, 3, 4, 5, 6].map((n) => `${RUN}-${n}`);
const SELECTOR = `docker:stowage-test.jobs=${RUN}`;
const HEARTBEAT_SECONDS = 1;

let dataDir: string;
let stowageProcess: StowageProcess;
const stowage = (...args: string[]) => stowageProcess.cli(...args);

async function makeContainer(name: string): Promise<void> {
  await docker.createVolume({ Name: `${name}-data` });
  const c = await docker.createContainer({
    name,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    Labels: { 'stowage-test.jobs': RUN },
    HostConfig: { Binds: [`${name}-data:/data`] },
  });
  await c.start();
  await execIn(name, [
    'sh',
    '-c',
    `echo ${name} > /data/whoami && dd if=/dev/urandom of=/data/random.bin bs=1024 count=64 2>/dev/null`,
  ]);
}

beforeAll(async () => {
  await requireTestImage();
  await removeByPrefix(RUN);
  dataDir = tempDir('stowage-jobs-');
  stowageProcess = new StowageProcess(dataDir, ['--concurrency', '1'], {
    STOWAGE_HEARTBEAT_SECONDS: String(HEARTBEAT_SECONDS),
  });
  for (const name of SIX) await makeContainer(name);
  await stowageProcess.start();
  await stowageProcess.waitForTargets(SIX.map((n) => `docker:${n}`));
});

afterAll(async () => {
  await stowageProcess?.stop();
  await removeByPrefix(RUN);
  if (dataDir) removeDir(dataDir);
});

describe('tasks waiting in the queue', () => {
  it('back up six targets on one agent, each held longer than HeartbeatSeconds, into six points', async () => {
    // Each task takes over twice HeartbeatSeconds, one at a time: the last waits over ten.
    const backup = stowage(
      'backup',
      '--selector',
      SELECTOR,
      '--pre-hook',
      `sleep ${2 * HEARTBEAT_SECONDS}`,
      '--wait',
    );
    expect(backup.code, backup.stderr).toBe(0);
    const { jobId } = backup.json as { jobId: string };
    const job = stowage('job', jobId).json as {
      status: string;
      items: Array<{ target: string; status: string; recoveryPointId: string }>;
    };
    expect(job.status).toBe('SUCCEEDED');
    expect(job.items.map((i) => i.status)).toEqual(Array(6).fill('COMPLETED'));
    expect(job.items.map((i) => i.target).sort()).toEqual(SIX.map((n) => `docker:${n}`).sort());

    const points = stowage('points').json as Array<{ recoveryPointId: string; status: string }>;
    for (const item of job.items) {
      expect(points.find((p) => p.recoveryPointId === item.recoveryPointId)?.status).toBe(
        'COMPLETED',
      );
    }
    // One of them restored: the bytes are the original's.
    const first = job.items[0]!;
    const name = `${first.target.slice('docker:'.length)}-r`;
    const restore = stowage('restore', first.recoveryPointId, '--name', name, '--wait');
    expect(restore.code, restore.stderr).toBe(0);
    expect(await fingerprint(name, '/data')).toEqual(
      await fingerprint(first.target.slice('docker:'.length), '/data'),
    );
  });
});
