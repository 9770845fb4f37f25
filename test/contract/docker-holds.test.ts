/**
 * Releasing a stop hold that a killed agent left, against the real dockerd. The agent asked for a
 * stop and was killed; dockerd carries on with the stop for up to its grace period. The sweep of
 * the restarted agent runs while the container still runs: it must wait for the stop to end and
 * then start the container, not decide "it runs, nothing to do" and leave it to stop a moment
 * later (which the retried backup then took for its owner's choice: the fault suite saw it).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createDockerDriver } from '../../agents/drivers/docker';
import type { HoldRecord } from '../../agents/core/holds';
import { silentLogger } from '../../kernel/logger';
import { docker, requireTestImage, TEST_IMAGE } from '../fixtures/docker';

const NAME = `stowage-hold-${randomBytes(4).toString('hex')}`;
const driver = createDockerDriver();
let id: string;

beforeAll(async () => {
  await requireTestImage();
  // busybox `sleep` as PID 1 ignores SIGTERM: a stop takes its whole grace period.
  const container = await docker.createContainer({
    name: NAME,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
  });
  id = container.id;
  await container.start();
}, 60_000);

afterAll(async () => {
  await docker
    .getContainer(NAME)
    .remove({ force: true })
    .catch(() => undefined);
});

const running = async () => (await docker.getContainer(id).inspect()).State.Running;

it.each([
  ['docker.quiesce', { container: '', name: NAME, consistency: 'stop', ownerPaused: false }],
  ['docker.aside', { container: '', name: NAME, old: `${NAME}-stowage-old-x`, ran: true }],
])(
  'a %s hold released while the killed agent’s stop still runs starts the container once it stopped',
  async (kind, data) => {
    const record: HoldRecord = {
      id: `${Date.now()}-0-test`,
      platform: 'docker',
      kind,
      takenAt: new Date().toISOString(),
      data: { ...data, container: id, stopGraceS: 2 },
    };
    // The killed agent's stop, outliving it: another client asks dockerd, and is gone.
    const stop = spawn('docker', ['stop', '-t', '2', id], { stdio: 'ignore' });
    const stopped = new Promise((r) => stop.once('exit', r));
    await new Promise((r) => setTimeout(r, 300));
    expect(await running()).toBe(true);

    await driver.releaseHold!(record, silentLogger);
    await stopped;
    expect(await running()).toBe(true);
    // And it stays so: nothing was left to stop it afterwards.
    await new Promise((r) => setTimeout(r, 1000));
    expect(await running()).toBe(true);
  },
  30_000,
);
