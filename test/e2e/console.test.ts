/**
 * The web console in headless Chromium against a real `stowage start` and dockerd, as an
 * operator uses it: sign in through the `console:` link, watch a backup's progress move on the
 * dashboard, restore from the form (a bad value gets its message next to its field; the restored
 * bytes equal the original's), read the job's log and workflow states, manage a policy, look at
 * the plots. Every page is saved as a screenshot under test-artifacts/console/.
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConsole, launchChromium, pageErrors, screenshot } from '../fixtures/browser';
import {
  docker,
  execIn,
  fingerprint,
  removeByPrefix,
  requireTestImage,
  TEST_IMAGE,
} from '../fixtures/docker';
import { eventually, removeDir, tempDir } from '../fixtures/local-plane';
import { StowageProcess } from '../fixtures/stowage-process';

const RUN = `stw-console-${process.pid}`;
const WEB = `${RUN}-web`;
const VOLUME = `${RUN}-data`;
/** Random (incompressible) data, so the backup takes seconds and its progress can be seen moving. */
const BIG_MIB = 1024;
const SUITE = 'console';

let dataDir: string;
let stowage: StowageProcess;
let browser: Browser;
let page: Page;
let errors: string[];
let pointId: string;

const cli = (...args: string[]) => stowage.cli(...args);

interface JobJson {
  status: string;
  recoveryPointId?: string;
  items?: Array<{ recoveryPointId: string }>;
}

async function waitForJob(jobId: string, timeoutMs = 240_000): Promise<JobJson> {
  return eventually(
    async () => {
      const job = cli('job', jobId).json as JobJson | undefined;
      return job && !['PENDING', 'RUNNING'].includes(job.status) ? job : undefined;
    },
    `job ${jobId} to end`,
    timeoutMs,
  );
}

async function go(hash: string): Promise<void> {
  await page.goto(`http://127.0.0.1:${stowage.port}/${hash}`);
}

beforeAll(async () => {
  await requireTestImage();
  await removeByPrefix(RUN);
  buildConsole();
  await docker.createVolume({ Name: VOLUME });
  const c = await docker.createContainer({
    name: WEB,
    Image: TEST_IMAGE,
    Cmd: ['sleep', '100000'],
    HostConfig: { Binds: [`${VOLUME}:/data`] },
  });
  await c.start();
  await execIn(WEB, [
    'sh',
    '-c',
    `echo ${WEB} > /data/whoami && mkdir -p /data/sub && ln -s ../whoami /data/sub/link && dd if=/dev/urandom of=/data/big.bin bs=1M count=${BIG_MIB} 2>/dev/null`,
  ]);
  dataDir = tempDir('stowage-console-');
  // The local S3 server (about 95 MiB/s here) keeps the 1 GiB backup running for seconds, long
  // enough for the dashboard's polls to see its progress move; the directory store, local mode's
  // default, ends it between two polls.
  stowage = new StowageProcess(dataDir, ['--s3-store']);
  await stowage.start();
  await stowage.waitForTargets([`docker:${WEB}`]);
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  errors = pageErrors(page);
  page.on('dialog', (d) => void d.accept());
}, 600_000);

afterAll(async () => {
  await browser?.close();
  await stowage?.stop();
  await removeByPrefix(RUN);
  if (dataDir) removeDir(dataDir);
});

describe('the web console', () => {
  it('signs in through the console: link that stowage start prints, keeping the token out of the address bar', async () => {
    expect(stowage.consoleUrl).toBe(`http://127.0.0.1:${stowage.port}/#token=${stowage.token}`);
    await page.goto(stowage.consoleUrl!);
    await page.getByRole('heading', { name: 'Agents' }).waitFor();
    expect(page.url()).toBe(`http://127.0.0.1:${stowage.port}/#/`);
    expect(await page.evaluate(() => sessionStorage.getItem('stowage.token'))).toBe(stowage.token);
    // The agent's row comes from the API, which answered the token.
    await page.locator('td', { hasText: 'docker' }).first().waitFor();
    await screenshot(page, SUITE, '01-dashboard-idle');
  });

  it("shows a running backup's progress moving on the dashboard, with its rate", async () => {
    const started = cli('backup', `docker:${WEB}`).json as {
      jobId: string;
      recoveryPointId: string;
    };
    expect(started.jobId).toMatch(/^job-/);
    await go('#/');
    const row = page.locator(`tr[data-job="${started.jobId}"]`);
    const seen: number[] = [];
    let shot = false;
    const deadline = Date.now() + 180_000;
    while (Date.now() < deadline) {
      if ((await row.count()) === 0 && seen.length) break; // it ended
      // Read in one step: a bar looked up, then read, may be gone in between (the job ended),
      // and the read would wait its 30 s for it.
      const bar = await row
        .locator('.progress')
        .evaluateAll((els) =>
          els[0]
            ? { done: els[0].getAttribute('data-bytes-done'), text: els[0].textContent }
            : null,
        );
      if (bar) {
        const done = Number(bar.done);
        if (done > 0 && done !== seen.at(-1)) seen.push(done);
        if (!shot && seen.length >= 2) {
          expect(bar.text).toMatch(/\/s/);
          await screenshot(page, SUITE, '02-dashboard-backup-running');
          shot = true;
        }
      }
      await page.waitForTimeout(250);
    }
    // Different byte counts, each larger than the last: the bar moved.
    expect(seen.length, `byte counts seen: ${seen.join(', ')}`).toBeGreaterThanOrEqual(2);
    expect([...seen].sort((a, b) => a - b)).toEqual(seen);
    const job = await waitForJob(started.jobId);
    expect(job.status).toBe('SUCCEEDED');
    pointId = (job.recoveryPointId ?? job.items?.[0]?.recoveryPointId)!;
    expect(pointId).toMatch(/^rp-/);
    // The dashboard then lists the target's last result with its point.
    await page.locator(`tr[data-target="docker:${WEB}"]`, { hasText: pointId }).waitFor();
    await page.locator(`tr[data-target="docker:${WEB}"] .status-succeeded`).waitFor();
    await screenshot(page, SUITE, '03-dashboard-after-backup');
  }, 300_000);

  it('cancels a running backup from the dashboard: it ends CANCELLED with no point, the container running', async () => {
    const before = (cli('points', `docker:${WEB}`).json as unknown[]).length;
    // A pre-hook holds the backup RUNNING long enough to be cancelled by hand.
    const started = cli('backup', `docker:${WEB}`, '--pre-hook', 'sleep 60').json as {
      jobId: string;
    };
    await go('#/');
    const row = page.locator(`tr[data-job="${started.jobId}"]`);
    await row.locator('.status-running').waitFor({ timeout: 60_000 });
    // While it runs, its page shows its agent's lines as they come (the hook still sleeps).
    await go(`#/jobs/${started.jobId}`);
    await page.locator('.log div.log-agent', { hasText: 'agent.task.received' }).waitFor();
    expect(await page.locator('#job').textContent()).toContain('RUNNING');
    await screenshot(page, SUITE, '03-job-page-running');
    await go('#/');
    await row.locator('.status-running').waitFor();
    await screenshot(page, SUITE, '03a-dashboard-before-cancel');
    await row.getByRole('button', { name: 'Cancel' }).click();
    const job = await waitForJob(started.jobId, 60_000);
    expect(job.status).toBe('CANCELLED');
    await row.waitFor({ state: 'detached' });
    // Settled: the agent's task for it ended too (it aborted and released its holds).
    await eventually(
      async () => {
        const res = await fetch(
          `http://127.0.0.1:${stowage.port}/jobs/${started.jobId}/cancellation`,
          { headers: stowage.apiHeaders() },
        );
        const body = (await res.json()) as { settled?: boolean };
        return body.settled ? true : undefined;
      },
      'the cancelled task to end on the agent',
      60_000,
    );
    expect((cli('points', `docker:${WEB}`).json as unknown[]).length).toBe(before);
    expect((await docker.getContainer(WEB).inspect()).State.Running).toBe(true);
    await page.locator(`tr[data-target="docker:${WEB}"] .status-cancelled`).waitFor();
    await screenshot(page, SUITE, '03b-dashboard-cancelled');
  }, 180_000);

  it("lists the target's points with size, new bytes, duration and why each is kept", async () => {
    await go(`#/targets/${encodeURIComponent(`docker:${WEB}`)}`);
    const row = page.locator(`tr[data-point="${pointId}"]`);
    await row.waitFor();
    const text = (await row.textContent()) ?? '';
    expect(text).toMatch(/offsite/);
    expect(text).toMatch(/GiB|MiB/);
    expect(text).toMatch(/kept until deleted/);
    await screenshot(page, SUITE, '04-target-points');
  });

  it("puts a bad value's message next to its field, then restores from the form byte for byte", async () => {
    await page.locator(`tr[data-point="${pointId}"] a`, { hasText: 'Restore' }).click();
    await page.getByRole('heading', { name: `Restore ${pointId}` }).waitFor();
    const submit = page.locator('form.restore-form button[type="submit"]');

    // Checked in the page by the API's own rules: the message sits in the field's own label.
    await page.locator('input[name="name"]').fill('bad name!');
    await page.locator(`input[name="volumes.${VOLUME}"]`).fill('no good');
    await submit.click();
    const nameError = page.locator('[data-field="name"] .field-error');
    await nameError.waitFor();
    expect(await nameError.textContent()).toMatch(/not a valid Docker container name/);
    expect(await page.locator('input[name="name"]').getAttribute('aria-invalid')).toBe('true');
    expect(
      await page.locator(`[data-field="volumes.${VOLUME}"] .field-error`).textContent(),
    ).toMatch(/not a valid Docker name/);
    await screenshot(page, SUITE, '05-restore-form-field-errors');

    // Refused by the API: the name is taken; its message goes next to the name too.
    await page.locator('input[name="name"]').fill(WEB);
    await page.locator(`input[name="volumes.${VOLUME}"]`).fill('');
    await submit.click();
    await eventually(
      async () => ((await nameError.textContent()) ?? '').match(/exist|taken/i) ?? undefined,
      'the API refusal next to the name',
      30_000,
    );
    expect(await page.locator('.started').count()).toBe(0);
    await screenshot(page, SUITE, '06-restore-form-name-taken');

    await page.locator('input[name="name"]').fill(`${WEB}2`);
    await page.locator(`input[name="volumes.${VOLUME}"]`).fill(`${VOLUME}2`);
    expect(await page.locator('[data-plan]').textContent()).toContain(`creates docker:${WEB}2`);
    expect(await submit.textContent()).toBe('Plan');
    const jobsBefore = (cli('jobs').json as unknown[]).length;
    await submit.click();
    // The API's plan, before anything runs: what is created, and the bytes read.
    const plan = page.locator('[data-restore-plan]');
    await plan.waitFor();
    expect(await page.locator('.field-error').count()).toBe(0);
    expect(await plan.textContent()).toContain(`${VOLUME}2`);
    expect(await plan.locator('li[data-action="create"]').count()).toBeGreaterThan(0);
    expect(await plan.textContent()).toMatch(/GiB/);
    expect(cli('jobs').json).toHaveLength(jobsBefore);
    await screenshot(page, SUITE, '07-restore-plan');
    expect(await submit.textContent()).toBe('Restore');
    await submit.click();
    const link = page.locator('.started a').first();
    await link.waitFor();
    const jobId = ((await link.textContent()) ?? '').trim();
    expect(jobId).toMatch(/^job-/);
    await screenshot(page, SUITE, '08-restore-started');
    expect((await waitForJob(jobId)).status).toBe('SUCCEEDED');

    const restoredVolume = await docker.getVolume(`${VOLUME}2`).inspect();
    expect(restoredVolume.Name).toBe(`${VOLUME}2`);
    expect(await fingerprint(`${WEB}2`, '/data')).toEqual(await fingerprint(WEB, '/data'));

    // The job's page: its log lines and the workflow's states.
    await go(`#/jobs/${jobId}`);
    await page.locator('.log div', { hasText: 'job ended SUCCEEDED' }).waitFor();
    // Its agent's own lines among them: the task taken, the restore's steps, the task's end.
    await page.locator('.log div.log-agent', { hasText: 'agent.task.succeeded' }).waitFor();
    expect(
      await page.locator('.log div.log-agent', { hasText: 'agent.task.received' }).count(),
    ).toBe(1);
    const states = page.locator('table.states tbody tr');
    await eventually(async () => ((await states.count()) >= 3 ? true : undefined), 'states');
    expect(await page.locator('table.states').textContent()).toMatch(/succeeded/);
    await screenshot(page, SUITE, '09-job-page');
  }, 300_000);

  it('creates, edits, runs and deletes a policy, with a bad schedule refused next to its field', async () => {
    const name = `${RUN}-nightly`;
    await go('#/policies');
    await page.getByRole('heading', { name: 'New policy' }).waitFor();
    await page.locator('input[name="name"]').fill(name);
    await page.locator('input[name="targets"]').fill(`docker:${WEB}`);
    await page.locator('input[name="schedule"]').fill('cron(99 3 * * ? *)');
    await page.getByRole('button', { name: 'Create policy' }).click();
    const scheduleError = page.locator('[data-field="schedule"] .field-error');
    await scheduleError.waitFor();
    expect(await scheduleError.textContent()).toMatch(/minute|0-59|99/i);
    await screenshot(page, SUITE, '10-policy-bad-schedule');

    await page.locator('input[name="schedule"]').fill('cron(0 3 * * ? *)');
    await page.getByRole('button', { name: 'Create policy' }).click();
    const row = page.locator(`tr[data-policy="${name}"]`);
    await row.waitFor();
    await row.getByRole('button', { name: 'Edit' }).click();
    await page.locator('input[name="keepDaily"]').fill('3');
    await page.getByRole('button', { name: 'Save' }).click();
    await row.locator('td', { hasText: 'daily=3' }).waitFor();
    expect(
      (cli('policy', 'show', name).json as { retention: { keepDaily: number } }).retention
        .keepDaily,
    ).toBe(3);

    await row.getByRole('button', { name: 'Run now' }).click();
    const runLink = page.locator('.note a').first();
    await runLink.waitFor();
    const runJob = ((await runLink.textContent()) ?? '').trim();
    await screenshot(page, SUITE, '11-policies');
    expect((await waitForJob(runJob)).status).toBe('SUCCEEDED');

    await row.getByRole('button', { name: 'Delete' }).click();
    await row.waitFor({ state: 'detached' });
    expect(cli('policy', 'show', name).code).not.toBe(0);
  }, 300_000);

  it('plots bytes protected and stored, and job durations', async () => {
    await go('#/plots');
    await page.locator('#plot-bytes .uplot canvas').waitFor();
    await page.locator('#plot-durations .uplot canvas').waitFor();
    await screenshot(page, SUITE, '12-plots');
  });

  it('ran every page without a script error or a CSP violation', () => {
    // Chromium logs every non-2xx answer as "Failed to load resource" (the form's refusals).
    expect(errors.filter((e) => !/Failed to load resource/.test(e))).toEqual([]);
  });
});
