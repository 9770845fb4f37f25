/**
 * A restore after a deletion, as a user runs it: a plan first (nothing changes), a restore with
 * neither --name nor --in-place refused while the container exists, then, once it is deleted,
 * restored under its original name with its data; and `stowage agent --check` against this
 * `stowage start`, with the real dockerd and LXD and with a Docker socket that answers nothing.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { docker, execIn, removeByPrefix, requireTestImage, TEST_IMAGE } from '../fixtures/docker';
import { removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw-plan-${process.pid}`;
const WEB = `${RUN}-web`;

let dataDir: string;
let stowageProcess: StowageProcess;
const stowage = (...args: string[]) => stowageProcess.cli(...args);

interface Plan {
  target: string;
  bytesRead: number;
  steps: Array<{ action: string; what: string }>;
}

beforeAll(async () => {
  await requireTestImage();
  await removeByPrefix(RUN);
  dataDir = tempDir('stowage-plan-');
  stowageProcess = new StowageProcess(dataDir);
  await docker.createVolume({ Name: `${RUN}-data` });
  const c = await docker.createContainer({
    name: WEB,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    HostConfig: { Binds: [`${RUN}-data:/data`] },
  });
  await c.start();
  await execIn(WEB, ['sh', '-c', 'echo kept > /data/f']);
  await stowageProcess.start();
  await stowageProcess.waitForTargets([`docker:${WEB}`]);
});

afterAll(async () => {
  await stowageProcess?.stop();
  await removeByPrefix(RUN);
  if (dataDir) removeDir(dataDir);
});

describe('restore plans and restores under the original name', () => {
  let pointId = '';

  it('plans a restore without changing anything, and restores under the original name once it is gone', async () => {
    const backup = stowage('backup', `docker:${WEB}`, '--wait');
    expect(backup.code, backup.stderr).toBe(0);
    pointId = (backup.json as { recoveryPointId: string }).recoveryPointId;

    const plan = stowage('restore', pointId, '--in-place', '--plan');
    expect(plan.code, plan.stderr).toBe(0);
    expect((plan.json as Plan).steps.map((s) => s.action)).toEqual([
      'read',
      'stop',
      'rename',
      'replace',
      'replace',
      'start',
    ]);
    expect((plan.json as Plan).bytesRead).toBeGreaterThan(0);
    expect((await docker.getContainer(WEB).inspect()).State.Running).toBe(true);
    expect((stowage('jobs').json as Array<{ kind: string }>).map((j) => j.kind)).toEqual([
      'BACKUP',
    ]);

    const refused = stowage('restore', pointId);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/still exists .* --name NEW .* or --in-place/);

    await docker.getContainer(WEB).remove({ force: true });
    const gone = async () =>
      !(stowage('targets').json as Array<{ target: string }>).some(
        (t) => t.target === `docker:${WEB}`,
      );
    for (let i = 0; i < 60 && !(await gone()); i++) await new Promise((r) => setTimeout(r, 500));
    const planned = stowage('restore', pointId, '--plan').json as Plan;
    expect(planned.target).toBe(`docker:${WEB}`);
    expect(planned.steps.map((s) => `${s.action} ${s.what}`)).toContain(`create container ${WEB}`);

    const restore = stowage('restore', pointId, '--wait');
    expect(restore.code, restore.stderr).toBe(0);
    expect(restore.json).toMatchObject({ status: 'SUCCEEDED', target: `docker:${WEB}` });
    expect(await execIn(WEB, ['cat', '/data/f'])).toBe('kept\n');
  });

  it('agent --check finds the queue, catalog, store and engines of this stowage start, and says what to fix for a dead socket', () => {
    const ready = stowage('agent', '--check', '--site', `${RUN}-check`);
    const dead = join(dataDir, 'dead.sock');
    writeFileSync(dead, '');
    const broken = stowage('agent', '--check', '--site', `${RUN}-check`, '--docker-socket', dead);

    type Checks = { ok: boolean; checks: Array<{ check: string; status: string; fix?: string }> };
    const status = (r: Checks) => Object.fromEntries(r.checks.map((c) => [c.check, c.status]));
    expect(ready.code, ready.stdout).toBe(0);
    expect(status(ready.json as Checks)).toMatchObject({
      queue: 'ok',
      catalog: 'ok',
      store: 'ok',
      key: 'ok',
      'engine docker': 'ok',
    });
    expect(broken.code).toBe(1);
    expect((broken.json as Checks).checks.find((c) => c.check === 'engine docker')).toMatchObject({
      status: 'failed',
      fix: expect.stringMatching(/nothing answers on it/),
    });
  });
});
