/**
 * Backups by label selector (issue #4), as a user runs them: `stowage start` in its own process,
 * the CLI with --json, a real dockerd. Three containers, two of them labelled for the selector:
 * one job makes exactly two recovery points whose restores hold byte-identical volume data, and a
 * job in which one container's backup fails ends PARTIALLY_FAILED with the other point intact and
 * the failing container still running.
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

const RUN = `stw-sel-${process.pid}`;
const A = `${RUN}-a`;
const B = `${RUN}-b`;
const C = `${RUN}-c`;
/** The label value is unique to the run, so no other engineer's container can match. */
const SELECTOR = `docker:stowage-test.app=${RUN},tier=web`;

interface Item {
  target: string;
  agent: string;
  recoveryPointId: string;
  status: string;
  error?: { name: string; message: string };
  progress?: { phase: string; bytesDone: number };
}

let dataDir: string;
let stowageProcess: StowageProcess;
const stowage = (...args: string[]) => stowageProcess.cli(...args);

async function makeContainer(name: string, labels: Record<string, string>): Promise<void> {
  await docker.createVolume({ Name: `${name}-data` });
  const c = await docker.createContainer({
    name,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    Labels: labels,
    HostConfig: { Binds: [`${name}-data:/data`] },
  });
  await c.start();
  const script = [
    'set -e',
    'cd /data',
    `echo "${name}" > whoami.txt && chmod 0640 whoami.txt && chown 1000:1000 whoami.txt`,
    'mkdir -p sub/empty && ln -s ../whoami.txt sub/link',
    'dd if=/dev/urandom of=random.bin bs=1024 count=768 2>/dev/null',
  ].join('\n');
  await execIn(name, ['sh', '-c', script]);
}

beforeAll(async () => {
  await requireTestImage();
  await removeByPrefix(RUN);
  dataDir = tempDir('stowage-sel-');
  stowageProcess = new StowageProcess(dataDir);
  await makeContainer(A, { 'stowage-test.app': RUN, tier: 'web' });
  await makeContainer(B, { 'stowage-test.app': RUN, tier: 'web', extra: 'yes' });
  await makeContainer(C, { 'stowage-test.app': RUN, tier: 'db' });
  await stowageProcess.start();
  await stowageProcess.waitForTargets([A, B, C].map((n) => `docker:${n}`));
});

afterAll(async () => {
  await stowageProcess?.stop();
  await removeByPrefix(RUN);
  if (dataDir) removeDir(dataDir);
});

describe('docker backups by label selector, one job for several containers', () => {
  it('lists each container with its labels in the inventory', () => {
    const targets = stowage('targets', '--platform', 'docker').json as Array<{
      target: string;
      labels?: Record<string, string>;
    }>;
    expect(targets.find((t) => t.target === `docker:${B}`)?.labels).toEqual({
      'stowage-test.app': RUN,
      tier: 'web',
      extra: 'yes',
    });
  });

  it('backs up exactly the two matching containers into two points whose restores hold the same bytes', async () => {
    const started = stowage('backup', '--selector', SELECTOR);
    expect(started.code, started.stderr).toBe(0);
    const { jobId } = started.json as { jobId: string };
    // While it runs, the agent's progress shows on the item it is working on.
    const seen: Item[] = [];
    for (;;) {
      const res = await fetch(`http://127.0.0.1:${stowageProcess.port}/jobs/${jobId}`, {
        headers: stowageProcess.apiHeaders(),
      });
      const polled = (await res.json()) as { status: string; items: Item[] };
      seen.push(...polled.items.filter((i) => i.status === 'RUNNING'));
      if (!['PENDING', 'RUNNING'].includes(polled.status)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen.some((i) => i.progress && i.progress.phase !== 'done')).toBe(true);
    const followed = stowage('job', jobId, '--follow');
    expect(followed.code, followed.stderr).toBe(0);
    const out = followed.json as { jobId: string; status: string; target: string; items: Item[] };
    expect(out.status).toBe('SUCCEEDED');
    expect(out.target).toBe(SELECTOR);
    expect(out.items.map((i) => [i.target, i.status])).toEqual([
      [`docker:${A}`, 'COMPLETED'],
      [`docker:${B}`, 'COMPLETED'],
    ]);

    // The job shows each item with its point and its final progress.
    const job = stowage('job', out.jobId).json as { status: string; items: Item[] };
    expect(job.status).toBe('SUCCEEDED');
    for (const item of job.items) {
      expect(item.progress?.phase).toBe('done');
      expect(item.progress?.bytesDone).toBeGreaterThan(768 * 1024);
    }

    const all = stowage('points').json as Array<{ recoveryPointId: string; target: string }>;
    const made = all.filter((p) => out.items.some((i) => i.recoveryPointId === p.recoveryPointId));
    expect(made.map((p) => p.target).sort()).toEqual([`docker:${A}`, `docker:${B}`]);
    expect(all.filter((p) => p.target === `docker:${C}`)).toEqual([]);

    for (const item of out.items) {
      const name = `${item.target.slice('docker:'.length)}-r`;
      const restore = stowage('restore', item.recoveryPointId, '--name', name, '--wait');
      expect(restore.code, restore.stderr).toBe(0);
      expect(await fingerprint(name, '/data')).toEqual(
        await fingerprint(item.target.slice('docker:'.length), '/data'),
      );
      // A restored copy carries the original's labels, so the selector would match it next time.
      await docker.getContainer(name).remove({ force: true });
    }
  });

  it('ends PARTIALLY_FAILED (exit 4) when one container fails: the other point is whole, the failing container still runs', async () => {
    // B's pre-hook fails (onError fail); A's passes. Stop mode: A is stopped and started again.
    await execIn(B, ['touch', '/data/refuse-backup']);
    const pointsBefore = (stowage('points', `docker:${B}`).json as unknown[]).length;

    const backup = stowage(
      'backup',
      '--selector',
      SELECTOR,
      '--consistency',
      'stop',
      '--pre-hook',
      'test ! -e /data/refuse-backup',
      '--wait',
    );

    expect(backup.code, backup.stdout + backup.stderr).toBe(4);
    const out = backup.json as {
      jobId: string;
      status: string;
      items: Item[];
      error: { message: string };
    };
    expect(out.status, JSON.stringify(out)).toBe('PARTIALLY_FAILED');
    const [a, b] = out.items;
    expect(a).toMatchObject({ target: `docker:${A}`, status: 'COMPLETED' });
    expect(b, JSON.stringify(out)).toMatchObject({ target: `docker:${B}`, status: 'FAILED' });
    expect(b?.error?.message).toMatch(/hook/);
    expect(out.error.message).toContain(`1 of 2 targets failed: docker:${B}`);

    const listed = stowage('jobs').json as Array<{ jobId: string; status: string }>;
    expect(listed.find((j) => j.jobId === out.jobId)?.status).toBe('PARTIALLY_FAILED');

    // A's point is listed and whole; B got none; both containers run.
    const aPoints = stowage('points', `docker:${A}`).json as Array<{
      recoveryPointId: string;
      status: string;
    }>;
    expect(aPoints.find((p) => p.recoveryPointId === a?.recoveryPointId)?.status).toBe('COMPLETED');
    const verify = stowage('verify', a!.recoveryPointId, '--wait');
    expect(verify.code, verify.stderr).toBe(0);
    expect((stowage('points', `docker:${B}`).json as unknown[]).length).toBe(pointsBefore);
    expect(stowage('points', `docker:${B}`).stdout).not.toContain(b!.recoveryPointId);
    for (const name of [A, B]) {
      expect((await docker.getContainer(name).inspect()).State.Running, name).toBe(true);
    }
    const restore = stowage('restore', a!.recoveryPointId, '--name', `${A}-r2`, '--wait');
    expect(restore.code, restore.stderr).toBe(0);
    expect(await fingerprint(`${A}-r2`, '/data')).toEqual(await fingerprint(A, '/data'));
  });

  it('refuses a selector that matches nothing, naming it, and starts no job', () => {
    const jobsBefore = (stowage('jobs').json as unknown[]).length;

    const none = stowage('backup', '--selector', `docker:stowage-test.app=${RUN},tier=cache`);

    expect(none.code).toBe(2);
    expect(none.json).toMatchObject({ error: 'TargetNotFound' });
    expect((none.json as { message: string }).message).toContain(
      `docker:stowage-test.app=${RUN},tier=cache`,
    );
    const both = stowage('backup', `docker:${A}`, '--selector', SELECTOR);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('not both');
    expect((stowage('jobs').json as unknown[]).length).toBe(jobsBefore);
  });
});
