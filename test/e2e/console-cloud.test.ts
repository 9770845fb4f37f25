/**
 * The web console in cloud mode, in headless Chromium: the same Vite build that local mode
 * serves, loaded from its CloudFront host name with a cloud config.json, signs in through
 * Cognito's hosted pages (code flow with PKCE, a TOTP code), trades the ID token at the identity
 * pool for credentials, and signs every API call with SigV4; the dashboard renders what the real
 * API handler answers. The AWS side is test/fixtures/cloud-fake.ts, reached under the real AWS
 * host names (Playwright routes those hosts to it), so the page's CSP and CORS rules apply as
 * they would in AWS.
 *
 * What this proves: the console finds cloud mode from config.json alone; the OAuth requests it
 * makes are those Cognito's documentation describes (authorize with S256 PKCE and state, token
 * exchange with the verifier, revoke and logout); it calls GetId and GetCredentialsForIdentity
 * with the user pool login; every API call carries a SigV4 signature that an independent check
 * (sigv4-verify.ts, from AWS's description) accepts for those credentials; the viewer role's
 * refusal and a user with no group are shown, not swallowed; nothing breaks the page's CSP.
 *
 * What only real AWS can prove (and this test does not): that Cognito's hosted UI, with MFA
 * required, takes a first-time user through the new password and the authenticator's set-up;
 * the real claims in Cognito's tokens and the identity pool's rule evaluation on cognito:groups;
 * STS's AssumeRoleWithWebIdentity under the roles' trust policies; API Gateway's own signature
 * check and IAM evaluation of the operator and viewer policies; CloudFront with Origin Access
 * Control serving the bucket and the response headers policy's headers; the real CORS
 * preflights (for routed requests Chromium's preflight is answered by Playwright itself, so the
 * MOCK OPTIONS methods are asserted on the template, test/cdk/web-console.test.ts, and the
 * headers and methods the page really sends are checked against the stack's CORS lists here); and the
 * BucketDeployment's substitution of the stack's values into config.json.
 */
import { request as httpRequest } from 'node:http';
import type { Browser, BrowserContext, Page, Route } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { API_CORS } from '../../cdk/constructs/api';
import { handlerWith } from '../../functions/api/handler';
import { buildConsole, launchChromium, pageErrors, screenshot } from '../fixtures/browser';
import { CloudFake, CONSOLE_ORIGIN, HOSTS, totp, type FakeUser } from '../fixtures/cloud-fake';
import { makeAgent, makeJob, makePoint } from '../fixtures/factories';
import { makeRequestDeps } from '../fixtures/fake-workflows';

const SUITE = 'console-cloud';
const AGENT = 'main';
const RUNNING_JOB = 'job-cloud-running';

const user = (username: string, groups: string[]): FakeUser => ({
  username,
  password: `Correct-Horse-${username}-9!`,
  email: `${username}@example.com`,
  groups,
  totpSecret: Buffer.from(`authenticator secret of ${username}`),
});
const OPERATOR = user('olivia', ['operators']);
const VIEWER = user('victor', ['viewers']);
const NOBODY = user('nora', []);

let fake: CloudFake;
let localFake: CloudFake;
let catalog: ReturnType<typeof makeRequestDeps>['catalog'];
let browser: Browser;

/** Sends a routed browser request to `to` under its own Host name, and fulfils it with the answer. */
function forwardTo(to: () => CloudFake, asHost?: string) {
  return async (route: Route) => {
    const req = route.request();
    const url = new URL(req.url());
    const headers = Object.fromEntries(
      Object.entries(await req.allHeaders()).filter(([name]) => !name.startsWith(':')),
    );
    const body = req.postDataBuffer() ?? Buffer.alloc(0);
    const { port } = new URL(to().base);
    const answer = await new Promise<{
      status: number;
      headers: Record<string, string>;
      body: Buffer;
    }>((resolve, reject) => {
      const out = httpRequest(
        {
          host: '127.0.0.1',
          port,
          method: req.method(),
          path: `${url.pathname}${url.search}`,
          headers: {
            ...headers,
            host: asHost ?? url.host,
            'content-length': String(body.length),
          },
        },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (p: Buffer) => parts.push(p));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 502,
              headers: Object.fromEntries(
                Object.entries(res.headers).map(([k, v]) => [k, [v].flat().join(', ')]),
              ),
              body: Buffer.concat(parts),
            }),
          );
          res.on('error', reject);
        },
      );
      out.on('error', reject);
      out.end(body);
    });
    const location = answer.headers.location;
    if (answer.status >= 300 && answer.status < 400 && location && req.isNavigationRequest()) {
      // Chromium follows a redirect that a route fulfilled without routing the next request
      // (it would go to the real host), so the page is sent on by a refresh instead: the same
      // GET of the same URL, from a page of the host that redirected.
      await route.fulfill({
        status: 200,
        contentType: 'text/html',
        body: `<meta http-equiv="refresh" content="0;url=${location.replace(/"/g, '&quot;')}">`,
      });
      return;
    }
    await route.fulfill(answer);
  };
}

const AWS_HOSTS = new Set<string>(Object.values(HOSTS));
/** Every context a test opened, closed after it whatever happened (a page keeps polling). */
const contexts: BrowserContext[] = [];

async function newContext(): Promise<{ context: BrowserContext; page: Page; errors: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  // Nothing leaves the machine: the AWS host names go to the fake, everything else fails.
  await context.route(
    (url) => AWS_HOSTS.has(url.hostname),
    forwardTo(() => fake),
  );
  // The same build with a config.json that says local, served as the distribution would be.
  await context.route(
    'https://local-mode.test/**',
    forwardTo(() => localFake, HOSTS.console),
  );
  contexts.push(context);
  const page = await context.newPage();
  // The dashboard's Cancel asks for a confirmation.
  page.on('dialog', (d) => void d.accept());
  return { context, page, errors: pageErrors(page) };
}

/** Through Cognito's sign-in form, as a person would. */
async function signIn(page: Page, who: FakeUser): Promise<void> {
  await page.goto(`${CONSOLE_ORIGIN}/#/`);
  await page.locator('#sign-in').click();
  await page.waitForURL(`https://${HOSTS.auth}/oauth2/authorize?**`);
  await page.locator('#signInFormUsername').fill(who.username);
  await page.locator('#signInFormPassword').fill(who.password);
  await page.locator('#totpCode').fill(totp(who.totpSecret));
  await page.locator('button[name=signInSubmitButton]').click();
  await page.waitForURL(`${CONSOLE_ORIGIN}/#/`);
}

beforeAll(async () => {
  buildConsole();
  const made = makeRequestDeps();
  ({ catalog } = made);
  await catalog.putAgent(makeAgent({ agent: AGENT, targets: ['docker:web', 'docker:db'] }));
  await catalog.putPoint(
    makePoint({ recoveryPointId: 'rp-cloud-1', target: 'docker:web', agent: AGENT }),
  );
  await catalog.createJob(
    makeJob({
      jobId: RUNNING_JOB,
      target: 'docker:db',
      agent: AGENT,
      status: 'RUNNING',
      executionArn: 'arn:aws:states:eu-west-1:123456789012:execution:backup:job-cloud-running',
      progress: {
        phase: 'volume data',
        bytesDone: 512 * 1024 * 1024,
        bytesTotal: 1024 * 1024 * 1024,
        rate: 50 * 1024 * 1024,
        updatedAt: new Date().toISOString(),
      },
    }),
  );
  fake = new CloudFake(handlerWith(made.deps));
  for (const u of [OPERATOR, VIEWER, NOBODY]) fake.addUser(u);
  await fake.start();
  localFake = new CloudFake(handlerWith(made.deps), { mode: 'local' });
  await localFake.start();
  browser = await launchChromium();
}, 120_000);

afterEach(async () => {
  await Promise.all(contexts.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await browser?.close();
  await fake?.stop();
  await localFake?.stop();
});

describe('the web console in cloud mode', () => {
  it('signs in through Cognito with PKCE and a TOTP code, and shows the dashboard from signed API calls', async () => {
    const { page, errors } = await newContext();
    await page.goto(`${CONSOLE_ORIGIN}/#/`);
    // Signed out, the page asks nothing of the API.
    await page.locator('#sign-in').waitFor();
    expect(fake.calls).toEqual([]);
    await screenshot(page, SUITE, '01-signed-out');

    await signIn(page, OPERATOR);
    // The code and state are gone from the address bar.
    expect(page.url()).toBe(`${CONSOLE_ORIGIN}/#/`);
    await page.locator('td', { hasText: AGENT }).first().waitFor();
    await page.locator(`tr[data-job="${RUNNING_JOB}"]`).waitFor();
    await expect
      .poll(() => page.locator('#signed-in-as').textContent())
      .toBe('olivia@example.com (operators)');
    await screenshot(page, SUITE, '02-dashboard');

    expect(fake.tokenExchanges).toEqual([
      { grant: 'authorization_code', pkce: true, user: OPERATOR.username },
    ]);
    // Every API call the dashboard made was signed with the operator's identity-pool
    // credentials and answered by the API.
    expect(fake.calls.length).toBeGreaterThanOrEqual(4);
    for (const call of fake.calls) {
      expect(call).toMatchObject({ signed: true, role: 'operators', user: OPERATOR.username });
      expect(call.status).toBe(200);
    }
    expect(new Set(fake.calls.map((c) => c.path.split('?')[0]))).toEqual(
      new Set(['/jobs', '/points', '/policies', '/agents']),
    );

    // A signed POST with a body: the operator cancels the running job.
    const before = fake.calls.length;
    await page.locator(`tr[data-job="${RUNNING_JOB}"] button.cancel`).click();
    await expect.poll(async () => (await catalog.getJob(RUNNING_JOB))?.status).toBe('CANCELLED');
    const post = fake.calls.slice(before).find((c) => c.method === 'POST')!;
    expect(post).toMatchObject({
      path: `/jobs/${RUNNING_JOB}/cancellation`,
      signed: true,
      role: 'operators',
      status: 202,
    });
    // Chromium's preflights are answered by Playwright for routed requests, so the stack's CORS
    // rules are checked here instead against what the page really sent: every header a preflight
    // must allow (set by the page, not CORS-safelisted) and every method are in API_CORS.
    const byBrowser =
      /^(host|connection|content-length|origin|referer|user-agent|accept-encoding|accept-language|sec-.*)$/;
    const safelisted = /^(accept|content-language)$/;
    const needed = new Set(
      fake.calls.flatMap((c) => c.headers.filter((h) => !byBrowser.test(h) && !safelisted.test(h))),
    );
    expect([...needed].sort()).toEqual([
      'authorization',
      'content-type',
      'x-amz-date',
      'x-amz-security-token',
    ]);
    const allowed = API_CORS.allowHeaders.map((h) => h.toLowerCase());
    for (const header of needed) expect(allowed).toContain(header);
    for (const method of new Set(fake.calls.map((c) => c.method))) {
      expect(['GET', ...API_CORS.allowMethods]).toContain(method);
    }
    expect(errors).toEqual([]);
  });

  it('lets a viewer look, and shows API Gateway refusing the viewer a POST', async () => {
    const job = makeJob({
      jobId: 'job-cloud-viewer',
      target: 'docker:web',
      agent: AGENT,
      status: 'RUNNING',
      executionArn: 'arn:aws:states:eu-west-1:123456789012:execution:backup:job-cloud-viewer',
    });
    await catalog.createJob(job);
    const { page, errors } = await newContext();
    fake.calls.length = 0;
    await signIn(page, VIEWER);
    const row = page.locator(`tr[data-job="${job.jobId}"]`);
    await row.waitFor();
    await row.locator('button.cancel').click();
    await row.locator('[role=alert]').waitFor();
    expect(await row.locator('[role=alert]').textContent()).toContain(
      'is not authorized to perform: execute-api:Invoke',
    );
    await screenshot(page, SUITE, '03-viewer-refused');
    expect(fake.calls.filter((c) => c.method === 'GET').every((c) => c.status === 200)).toBe(true);
    expect(fake.calls.filter((c) => c.method === 'POST')).toEqual([
      expect.objectContaining({ signed: true, role: 'viewers', status: 403 }),
    ]);
    expect((await catalog.getJob(job.jobId))?.status).toBe('RUNNING');
    // The refusal is the only error the page logged (the browser reports a 403 it fetched).
    expect(errors.filter((e) => !/status of 403/.test(e))).toEqual([]);
  });

  it('tells someone in neither group that they have no role, and calls nothing', async () => {
    const { page } = await newContext();
    fake.calls.length = 0;
    await signIn(page, NOBODY);
    const alert = page.locator('[role=alert]').first();
    await alert.waitFor();
    expect(await alert.textContent()).toMatch(/operators or viewers group/);
    expect(fake.calls).toEqual([]);
    await screenshot(page, SUITE, '04-no-group');
  });

  it('signs out: revokes the refresh token, signs out at Cognito and comes back signed out', async () => {
    const { page } = await newContext();
    await signIn(page, OPERATOR);
    await page.locator('td', { hasText: AGENT }).first().waitFor();
    const revokedBefore = fake.revoked.size;
    await page.getByText('Sign out').click();
    await page.waitForURL(`${CONSOLE_ORIGIN}/`);
    await page.locator('#sign-in').waitFor();
    expect(fake.revoked.size).toBe(revokedBefore + 1);
    expect(await page.evaluate(() => Object.keys(sessionStorage))).toEqual([]);
  });

  it('keeps the API-token sign-in when config.json says local, calling no Cognito host', async () => {
    const { page, errors } = await newContext();
    const seen: string[] = [];
    page.on('request', (r) => seen.push(new URL(r.url()).hostname));
    await page.goto('https://local-mode.test/#/');
    await page.locator('#signed-out').waitFor();
    expect(await page.locator('#signed-out').textContent()).toContain('console:');
    expect(await page.locator('#sign-in').count()).toBe(0);
    expect(seen.filter((h) => h !== 'local-mode.test')).toEqual([]);
    expect(errors.filter((e) => !/status of 4\d\d/.test(e))).toEqual([]);
  });

  it("refuses API calls that are unsigned, signed by someone unknown, or changed after signing (the fake's check is not a rubber stamp)", async () => {
    const apiUrl = `/prod/agents`;
    const send = (headers: Record<string, string>, path = apiUrl) =>
      fake.handle({ method: 'GET', host: HOSTS.api, url: path, headers, body: '' });
    expect((await send({})).status).toBe(403);
    const amzDate = new Date().toISOString().replace(/[-:]|\.\d{3}/g, '');
    const forged = (date: string) => ({
      authorization:
        `AWS4-HMAC-SHA256 Credential=ASIAUNKNOWN/${date.slice(0, 8)}/eu-west-1/execute-api/aws4_request, ` +
        `SignedHeaders=host;x-amz-date, Signature=${'0'.repeat(64)}`,
      'x-amz-date': date,
    });
    expect((await send(forged(amzDate))).status).toBe(403);
    expect((await send(forged('20200101T000000Z'))).status).toBe(403);
    expect((await send(forged(amzDate), '/agents')).status).toBe(403);
    expect(fake.calls.slice(-4).map((c) => c.reason ?? c.status)).toEqual([
      'no SigV4 Authorization header',
      'unknown access key',
      'signature expired or from the future',
      403,
    ]);
  });
});
