/**
 * A job's agent log as a user reads it: `stowage start` in its own process, a real dockerd, a
 * backup whose pre-hook prints a password and then waits, and the lines its agent logged read
 * through the API (`GET /jobs/{id}/log`) while the job runs and after, and through `stowage job
 * ID --log`: in the order they were logged, the driver's steps and the hook among them, the
 * password masked everywhere.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Job, JobLog } from '../../kernel/model';
import { docker, execIn, removeByPrefix, requireTestImage, TEST_IMAGE } from '../fixtures/docker';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw-joblog-${process.pid}`;
const WEB = `${RUN}-web`;
const SECRET = 'hunter2-7c1f';
const BIN = new URL('../../cli/bin.mjs', import.meta.url).pathname;

let dataDir: string;
let stowage: StowageProcess;

async function api<T>(path: string): Promise<T> {
  const get = () =>
    fetch(`http://127.0.0.1:${stowage.port}${path}`, { headers: stowage.apiHeaders() });
  // A kept-alive connection the server has just timed out fails once ("other side closed").
  const res = await get().catch(get);
  expect(res.status, path).toBe(200);
  return (await res.json()) as T;
}

beforeAll(async () => {
  await requireTestImage();
  await removeByPrefix(RUN);
  dataDir = tempDir('stowage-job-log-');
  await docker.createVolume({ Name: `${WEB}-data` });
  const c = await docker.createContainer({
    name: WEB,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    HostConfig: { Binds: [`${WEB}-data:/data`] },
  });
  await c.start();
  await execIn(WEB, ['sh', '-c', 'echo hello > /data/index.html']);
  stowage = new StowageProcess(dataDir);
  await stowage.start();
  await stowage.waitForTargets([`docker:${WEB}`]);
}, 180_000);

afterAll(async () => {
  await stowage?.stop();
  await removeByPrefix(RUN);
  if (dataDir) removeDir(dataDir);
});

describe("a job's agent log", () => {
  let jobId: string;

  it("shows the agent's lines while the backup runs", async () => {
    const started = stowage.cli(
      'backup',
      `docker:${WEB}`,
      '--pre-hook',
      `echo dumping with --password ${SECRET}; sleep 4`,
    );
    expect(started.code, started.stderr).toBe(0);
    jobId = (started.json as { jobId: string }).jobId;

    // While the hook sleeps, the job runs and its agent has said it took the task.
    const live = await eventually(async () => {
      const [job, log] = await Promise.all([
        api<Job>(`/jobs/${jobId}`),
        api<JobLog>(`/jobs/${jobId}/log`),
      ]);
      return log.lines.some((l) => l.event === 'agent.task.received') ? { job, log } : undefined;
    }, 'the agent to log that it took the task');
    expect(live.job.status).toBe('RUNNING');
    expect(live.log.lines[0]).toMatchObject({
      level: 'info',
      event: 'agent.task.received',
      agent: 'local',
      target: `docker:${WEB}`,
      claimId: expect.any(String),
    });
  });

  it('has every line in the order logged once the job ended, the hook among them, its password masked', async () => {
    const done = stowage.cli('job', jobId, '--follow');
    expect(done.code, done.stderr).toBe(0);

    const log = await api<JobLog>(`/jobs/${jobId}/log`);
    const events = log.lines.map((l) => `${l.event} ${l.text}`);
    const at = (pattern: RegExp) => {
      const i = events.findIndex((e) => pattern.test(e));
      expect(i, `${pattern} in\n${events.join('\n')}`).toBeGreaterThanOrEqual(0);
      return i;
    };
    const received = at(/^agent\.task\.received/);
    const hook = at(/^driver\.hook pre /);
    const volume = at(new RegExp(`^driver\\.step volume ${WEB}-data`));
    const succeeded = at(/^agent\.task\.succeeded/);
    expect(received).toBeLessThan(hook);
    expect(hook).toBeLessThan(volume);
    expect(volume).toBeLessThan(succeeded);
    expect(events[hook]).toContain('--password ***');
    expect(JSON.stringify(log)).not.toContain(SECRET);
    const times = log.lines.map((l) => l.at);
    expect(times).toEqual([...times].sort());
    expect(log).toMatchObject({ jobId, dropped: 0, omitted: 0 });
    expect(new Set(log.lines.map((l) => l.claimId)).size).toBe(1);
  });

  it('prints them with `stowage job ID --log`, and as one JSON document with --json', async () => {
    const human = stowage.cli('job', jobId, '--log');
    expect(human.code, human.stderr).toBe(0);
    const json = human.json as JobLog;
    expect(json.lines.length).toBeGreaterThan(3);

    const text = spawnSync(process.execPath, [BIN, 'job', jobId, '--log'], {
      env: stowage.userEnv,
      encoding: 'utf8',
    });
    expect(text.status, text.stderr).toBe(0);
    const printed = text.stdout.trim().split('\n');
    expect(printed).toHaveLength(json.lines.length);
    expect(printed[0]).toMatch(
      new RegExp(`^\\S+Z INFO  docker:${WEB} \\(local\\) agent\\.task\\.received`),
    );
    expect(text.stdout).toContain('--password ***');
    expect(text.stdout).not.toContain(SECRET);
  });

  it('is a 404 for a job that does not exist', async () => {
    const res = await fetch(`http://127.0.0.1:${stowage.port}/jobs/job-nope/log`, {
      headers: stowage.apiHeaders(),
    });
    expect(res.status).toBe(404);
  });
});
