/**
 * Releasing a restore test's sandbox hold (`docker.sandbox`, `lxd.sandbox`) that a killed agent
 * left, against the real dockerd and LXD: the sandbox and what its restore made for it (Docker:
 * its volumes) are removed, and a container, volume or instance of the same name that does not
 * carry the sandbox's mark is never touched. Releasing twice is fine.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HoldRecord } from '../../agents/core/holds';
import { createDockerDriver } from '../../agents/drivers/docker';
import { createLxdDriver } from '../../agents/drivers/lxd';
import { silentLogger } from '../../kernel/logger';
import { docker, removeByPrefix, requireTestImage, TEST_IMAGE } from '../fixtures/docker';
import { launchInstance, lxd, removeInstance } from '../fixtures/lxd';

const RUN = `stw-sbx-${randomBytes(3).toString('hex')}`;
const LABEL = 'io.stowage.sandbox';

const record = (platform: string, name: string): HoldRecord => ({
  id: `${Date.now()}-000001-abcdef01`,
  platform,
  kind: `${platform}.sandbox`,
  takenAt: new Date().toISOString(),
  jobId: 'job-killed',
  data: { name },
});

beforeAll(async () => {
  await requireTestImage();
  execFileSync('bash', ['local/engines/setup-lxd.sh'], { stdio: 'ignore' });
}, 120_000);

afterAll(async () => {
  await removeByPrefix(RUN);
  for (const name of [`${RUN}-lxd-sandbox`, `${RUN}-lxd-other`]) await removeInstance(name);
}, 120_000);

describe('a docker.sandbox hold', () => {
  const driver = createDockerDriver();

  it('removes the sandbox container and its volumes, and only them', async () => {
    const name = `${RUN}-sandbox`;
    await docker.createVolume({ Name: `${name}_data`, Labels: { [LABEL]: name } });
    await docker.createVolume({ Name: `${RUN}-kept`, Labels: { [LABEL]: `${RUN}-other` } });
    const sandbox = await docker.createContainer({
      name,
      Image: TEST_IMAGE,
      Cmd: ['sleep', '100000'],
      Labels: { [LABEL]: name },
      HostConfig: { NetworkMode: 'none', Binds: [`${name}_data:/data`] },
    });
    await sandbox.start();

    await driver.releaseHold!(record('docker', name), silentLogger);
    await driver.releaseHold!(record('docker', name), silentLogger);

    await expect(docker.getContainer(name).inspect()).rejects.toMatchObject({ statusCode: 404 });
    await expect(docker.getVolume(`${name}_data`).inspect()).rejects.toMatchObject({
      statusCode: 404,
    });
    expect((await docker.getVolume(`${RUN}-kept`).inspect()).Name).toBe(`${RUN}-kept`);
  });

  it('leaves a container of that name that is not a sandbox', async () => {
    const name = `${RUN}-not-sandbox`;
    const other = await docker.createContainer({ name, Image: TEST_IMAGE, Cmd: ['true'] });

    await driver.releaseHold!(record('docker', name), silentLogger);

    expect((await docker.getContainer(name).inspect()).Id).toBe(other.id);
  });
});

describe('an lxd.sandbox hold', () => {
  const driver = createLxdDriver();

  it('removes the running sandbox instance, and leaves an instance that is not one', async () => {
    const sandbox = `${RUN}-lxd-sandbox`;
    const other = `${RUN}-lxd-other`;
    await launchInstance(sandbox);
    await lxd.run('PATCH', `/1.0/instances/${sandbox}`, {
      config: { 'user.stowage.sandbox': sandbox },
    });
    await launchInstance(other);

    await driver.releaseHold!(record('lxd', sandbox), silentLogger);
    await driver.releaseHold!(record('lxd', sandbox), silentLogger);
    await driver.releaseHold!(record('lxd', other), silentLogger);

    const names = (await lxd.get<string[]>('/1.0/instances')).map((u) => u.split('/').pop());
    expect(names).not.toContain(sandbox);
    expect(names).toContain(other);
  });
});
