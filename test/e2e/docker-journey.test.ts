/**
 * The user's journey of issue #2, as a user runs it: `stowage start` in its own process, the CLI
 * as separate commands with --json, a real dockerd, and the restored volumes compared byte for
 * byte (modes, owners, symlinks, empty directories included) with the originals.
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

const RUN = `stw-e2e-${process.pid}`;
const WEB = `${RUN}-web`;
const WEB2 = `${RUN}-web2`;

let dataDir: string;
let stowageProcess: StowageProcess;
const stowage = (...args: string[]) => stowageProcess.cli(...args);

async function makeWeb(): Promise<void> {
  await docker.createVolume({ Name: `${WEB}-data` });
  await docker.createVolume({ Name: `${WEB}-cache` });
  const c = await docker.createContainer({
    name: WEB,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    Env: ['GREETING=hello world', 'MODE=prod'],
    Labels: { app: 'web', tier: 'front' },
    WorkingDir: '/data',
    HostConfig: {
      Binds: [`${WEB}-data:/data`],
      Mounts: [{ Type: 'volume', Source: `${WEB}-cache`, Target: '/cache' }],
    },
  });
  await c.start();
  const script = [
    'set -e',
    'cd /data',
    'echo "index" > index.html && chmod 0644 index.html',
    'echo "secret" > secret.key && chmod 0600 secret.key && chown 1000:1000 secret.key',
    'mkdir -p nested/deeper empty && chmod 0750 nested && echo deep > nested/deeper/file.txt',
    'ln -s nested/deeper/file.txt link-to-file',
    'echo "héllo" > "ünïcode ✓.txt"',
    'dd if=/dev/urandom of=random.bin bs=1024 count=1536 2>/dev/null',
    'dd if=/dev/zero of=sparse.img bs=1M count=8 2>/dev/null && echo tail >> sparse.img',
    'chmod 0755 run.sh 2>/dev/null || (echo "#!/bin/sh" > run.sh && chmod 0755 run.sh)',
    'echo cached > /cache/c.txt && mkdir -p /cache/emptydir && chown -R 1000:1000 /cache/emptydir',
    'echo "changed in the container layer" > /etc/stowage-marker',
  ].join('\n');
  await execIn(WEB, ['sh', '-c', script]);
}

beforeAll(async () => {
  await requireTestImage();
  await removeByPrefix(RUN);
  dataDir = tempDir('stowage-e2e-');
  stowageProcess = new StowageProcess(dataDir);
  await makeWeb();
  await stowageProcess.start();
  // The agent reports its inventory on start and on container events.
  await stowageProcess.waitForTargets([`docker:${WEB}`]);
});

afterAll(async () => {
  await stowageProcess?.stop();
  await removeByPrefix(RUN);
  if (dataDir) removeDir(dataDir);
});

describe('docker journey through the CLI, the API, the state machines and the agent', () => {
  let pointId = '';
  let backupJobId = '';

  it('backs up a running container with volumes and lists the recovery point', async () => {
    const backup = stowage('backup', `docker:${WEB}`, '--wait');
    expect(backup.code, backup.stderr).toBe(0);
    const out = backup.json as { jobId: string; status: string; recoveryPointId: string };
    expect(out.status).toBe('SUCCEEDED');
    expect(out.recoveryPointId).toMatch(/^rp-/);
    pointId = out.recoveryPointId;
    backupJobId = out.jobId;

    const points = stowage('points', `docker:${WEB}`).json as Array<Record<string, unknown>>;
    expect(points).toHaveLength(1);
    expect(points[0]).toMatchObject({
      recoveryPointId: pointId,
      target: `docker:${WEB}`,
      status: 'COMPLETED',
    });
    expect(Number.isNaN(Date.parse(points[0]!.createdAt as string))).toBe(false);
    expect(points[0]!.bytesRead as number).toBeGreaterThan(8 * 1024 * 1024);

    const job = stowage('job', backupJobId).json as {
      status: string;
      kind: string;
      progress: { bytesDone: number };
    };
    expect(job).toMatchObject({ status: 'SUCCEEDED', kind: 'BACKUP' });
    expect(job.progress.bytesDone).toBe(points[0]!.bytesRead);

    const original = await docker.getContainer(WEB).inspect();
    expect(original.State.Running).toBe(true);
  });

  it('restores under a new name: same image state, same configuration, byte-identical volumes', async () => {
    const restore = stowage('restore', pointId, '--name', WEB2, '--wait');
    expect(restore.code, restore.stderr).toBe(0);
    expect(restore.json).toMatchObject({
      status: 'SUCCEEDED',
      kind: 'RESTORE',
      target: `docker:${WEB2}`,
    });

    const [a, b] = await Promise.all([
      docker.getContainer(WEB).inspect(),
      docker.getContainer(WEB2).inspect(),
    ]);
    expect(b.State.Running).toBe(true);
    expect(b.Config.Env).toEqual(a.Config.Env);
    expect(b.Config.Cmd).toEqual(a.Config.Cmd);
    expect(b.Config.Labels).toEqual(a.Config.Labels);
    expect(b.Config.WorkingDir).toBe(a.Config.WorkingDir);
    expect(await execIn(WEB2, ['cat', '/etc/stowage-marker'])).toBe(
      'changed in the container layer\n',
    );

    for (const dir of ['/data', '/cache']) {
      expect(await fingerprint(WEB2, dir), dir).toEqual(await fingerprint(WEB, dir));
    }
    // The restored volumes are new ones; the original's are still mounted by the original only.
    const sources = (c: typeof a) =>
      c.Mounts.filter((m) => m.Type === 'volume')
        .map((m) => m.Name)
        .sort();
    expect(sources(b)).not.toEqual(sources(a));
    for (const name of sources(b)) expect(sources(a)).not.toContain(name);
    expect(a.State.Running).toBe(true);
  });

  it('refuses bad input with a non-zero exit and a message that names the problem', () => {
    const missing = stowage('backup', `docker:${RUN}-nope`);
    expect(missing.code).toBe(2);
    expect(missing.json).toMatchObject({ error: 'TargetNotFound' });
    expect((missing.json as { message: string }).message).toContain(`docker:${RUN}-nope`);

    const unknownPlatform = stowage('backup', 'floppy:a');
    expect(unknownPlatform.code).toBe(2);
    expect((unknownPlatform.json as { message: string }).message).toContain(
      'unknown platform "floppy"',
    );

    const noPoint = stowage('restore', 'rp-does-not-exist', '--name', 'x');
    expect(noPoint.code).toBe(2);
    expect(noPoint.json).toMatchObject({ error: 'PointNotFound' });

    const taken = stowage('restore', pointId, '--name', WEB);
    expect(taken.code).toBe(2);
    expect(taken.json).toMatchObject({ error: 'NameTaken' });

    // None of the refused requests left an execution behind: every job is finished.
    const jobs = stowage('jobs').json as Array<{ status: string }>;
    expect(jobs.every((j) => ['SUCCEEDED', 'FAILED'].includes(j.status))).toBe(true);
    expect(jobs).toHaveLength(2);
  });

  it('keeps jobs and recovery points across a restart of stowage start, and restores after it', async () => {
    await stowageProcess.stop();
    await stowageProcess.start();
    const points = stowage('points').json as Array<{ recoveryPointId: string }>;
    expect(points.map((p) => p.recoveryPointId)).toContain(pointId);
    expect(stowage('job', backupJobId).json).toMatchObject({ status: 'SUCCEEDED' });

    const third = `${RUN}-web3`;
    const restore = stowage('restore', pointId, '--name', third, '--wait');
    expect(restore.code, restore.stderr).toBe(0);
    expect(await fingerprint(third, '/data')).toEqual(await fingerprint(WEB, '/data'));
  });

  it('rolls back an update that went wrong: image state and volume data as before, same names', async () => {
    const protect = stowage('protect-update', `docker:${WEB}`, '--wait');
    expect(protect.code, protect.stderr).toBe(0);
    const pointId = (protect.json as { recoveryPointId: string }).recoveryPointId;
    expect(
      (
        stowage('points', `docker:${WEB}`).json as Array<{
          recoveryPointId: string;
          label?: string;
        }>
      ).find((p) => p.recoveryPointId === pointId)?.label,
    ).toBe('pre-update');
    const before = {
      data: await fingerprint(WEB, '/data'),
      etc: await execIn(WEB, ['cat', '/etc/stowage-marker']),
    };
    const volumesBefore = (await docker.getContainer(WEB).inspect()).Mounts.map(
      (m) => m.Name,
    ).sort();

    // The "update": new files in the image's layer, changed and removed data in the volume.
    await execIn(WEB, [
      'sh',
      '-c',
      'echo v2 > /etc/stowage-marker && echo broken > /data/index.html && rm /data/secret.key',
    ]);

    const rollback = stowage('rollback', `docker:${WEB}`, '--wait');
    expect(rollback.code, rollback.stderr).toBe(0);
    expect(rollback.json).toMatchObject({
      status: 'SUCCEEDED',
      kind: 'RESTORE',
      target: `docker:${WEB}`,
    });
    const after = await docker.getContainer(WEB).inspect();
    expect(after.State.Running).toBe(true);
    expect(after.Mounts.map((m) => m.Name).sort()).toEqual(volumesBefore);
    expect(await execIn(WEB, ['cat', '/etc/stowage-marker'])).toBe(before.etc);
    expect(await fingerprint(WEB, '/data')).toEqual(before.data);
  });

  it('refuses a rollback of a target that has no pre-update point', () => {
    const none = stowage('rollback', `docker:${WEB2}`);
    expect(none.code).toBe(2);
    expect(none.json).toMatchObject({ error: 'PointNotFound' });
    expect((none.json as { message: string }).message).toContain('stowage protect-update');
  });
});
