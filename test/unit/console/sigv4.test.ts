/**
 * The cloud console's request signing (console/src/cloud/sigv4.ts) against known SigV4 results
 * from AWS's documentation, and against an independent server-side check
 * (test/fixtures/sigv4-verify.ts) over generated API requests: what the page signs is what
 * API Gateway's IAM auth would accept, and a changed path, query or body is refused.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { signRequest } from '../../../console/src/cloud/sigv4';
import { verifySigV4 } from '../../fixtures/sigv4-verify';

/** AWS's example credentials and time (the SigV4 test suite and the IAM example). */
const EXAMPLE = {
  credentials: {
    accessKeyId: 'AKIDEXAMPLE',
    secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
  },
  date: new Date('2015-08-30T12:36:00Z'),
};

const KNOWN = [
  {
    name: "the test suite's get-vanilla",
    request: { method: 'GET', url: 'https://example.amazonaws.com/' },
    region: 'us-east-1',
    service: 'service',
    authorization:
      'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, ' +
      'SignedHeaders=host;x-amz-date, ' +
      'Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31',
  },
  {
    name: "the signing guide's IAM ListUsers",
    request: {
      method: 'GET',
      url: 'https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08',
      headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
    },
    region: 'us-east-1',
    service: 'iam',
    authorization:
      'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, ' +
      'SignedHeaders=content-type;host;x-amz-date, ' +
      'Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7',
  },
];

const API = 'https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com';
const SESSION = {
  accessKeyId: 'ASIAEXAMPLECONSOLE',
  secretAccessKey: 'c2VjcmV0IGtleSBvZiB0aGUgY29uc29sZSB0ZXN0',
  sessionToken: 'IQoJb3JpZ2luX2VjE/session+token==',
};
const secretOf = (id: string) => (id === SESSION.accessKeyId ? SESSION : undefined);

/** The request as API Gateway would see it arrive: what fetch sends for `url`. */
function arrived(url: string, method: string, headers: Record<string, string>, body = '') {
  const u = new URL(url);
  return {
    method,
    path: u.pathname,
    query: u.search.replace(/^\?/, ''),
    headers: Object.fromEntries([
      ['host', u.host],
      ...Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]),
    ]),
    body,
  };
}

describe('SigV4 request signing in the cloud console', () => {
  it.each(KNOWN)("gives AWS's documented signature for $name", async (known) => {
    const headers = await signRequest(known.request, {
      credentials: EXAMPLE.credentials,
      region: known.region,
      service: known.service,
      date: EXAMPLE.date,
    });
    expect(headers.authorization).toBe(known.authorization);
    expect(headers['x-amz-date']).toBe('20150830T123600Z');
  });

  it.each(KNOWN)('has a server-side check that accepts $name as documented', (known) => {
    const req = arrived(known.request.url, known.request.method, {
      ...(known.request.headers ?? {}),
      'x-amz-date': '20150830T123600Z',
      authorization: known.authorization,
    });
    const verdict = verifySigV4(req, () => EXAMPLE.credentials, {
      region: known.region,
      service: known.service,
      now: EXAMPLE.date,
    });
    expect(verdict).toEqual(expect.objectContaining({ ok: true }));
    const other = {
      ...req,
      headers: { ...req.headers, authorization: known.authorization.replace(/.$/, '0') },
    };
    expect(
      verifySigV4(other, () => EXAMPLE.credentials, {
        region: known.region,
        service: known.service,
        now: EXAMPLE.date,
      }).ok,
    ).toBe(false);
  });

  it('signs the session token and sends no host or payload-hash header', async () => {
    const headers = await signRequest(
      { method: 'GET', url: `${API}/prod/jobs?limit=100` },
      { credentials: SESSION, region: 'eu-west-1' },
    );
    expect(Object.keys(headers).sort()).toEqual([
      'authorization',
      'x-amz-date',
      'x-amz-security-token',
    ]);
    expect(headers['x-amz-security-token']).toBe(SESSION.sessionToken);
    expect(headers.authorization).toContain('/eu-west-1/execute-api/aws4_request');
    expect(headers.authorization).toContain('SignedHeaders=host;x-amz-date;x-amz-security-token,');
  });

  // Ids and query values of every kind the console puts in a path: its API client escapes them
  // with encodeURIComponent (console/src/api.ts).
  const text = fc.string({ unit: 'binary', minLength: 1, maxLength: 40 });
  const q = encodeURIComponent;

  it('makes signatures the server-side check accepts, for any id, query and body, and only for them', async () => {
    await fc.assert(
      fc.asyncProperty(
        text,
        text,
        fc.constantFrom('GET', 'POST', 'PATCH', 'DELETE'),
        fc.option(fc.json(), { nil: undefined }),
        async (id, target, method, json) => {
          const url = `${API}/prod/policies/${q(id)}?limit=7&target=${q(target)}`;
          const body = json === undefined ? undefined : json;
          const sent: Record<string, string> =
            body === undefined ? {} : { 'content-type': 'application/json' };
          const headers = await signRequest(
            { method, url, headers: sent, ...(body !== undefined ? { body } : {}) },
            { credentials: SESSION, region: 'eu-west-1' },
          );
          const req = arrived(url, method, { ...sent, ...headers }, body ?? '');
          const check = (r: typeof req) =>
            verifySigV4(r, secretOf, { region: 'eu-west-1', service: 'execute-api' });
          expect(check(req)).toEqual(expect.objectContaining({ ok: true }));
          // Anything changed on the way is refused.
          expect(check({ ...req, path: `${req.path}x` }).ok).toBe(false);
          expect(check({ ...req, query: req.query.replace('limit=7', 'limit=8') }).ok).toBe(false);
          expect(check({ ...req, body: `${req.body} ` }).ok).toBe(false);
          expect(check({ ...req, method: method === 'GET' ? 'DELETE' : 'GET' }).ok).toBe(false);
          expect(
            check({ ...req, headers: { ...req.headers, 'x-amz-security-token': 'other' } }).ok,
          ).toBe(false);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('is refused in another region, for another service, or ten minutes late', async () => {
    const url = `${API}/prod/agents`;
    const date = new Date('2026-01-02T03:04:05Z');
    const headers = await signRequest(
      { method: 'GET', url },
      { credentials: SESSION, region: 'eu-west-1', date },
    );
    const req = arrived(url, 'GET', headers);
    const check = (region: string, service: string, now: Date) =>
      verifySigV4(req, secretOf, { region, service, now }).ok;
    expect(check('eu-west-1', 'execute-api', date)).toBe(true);
    expect(check('us-east-1', 'execute-api', date)).toBe(false);
    expect(check('eu-west-1', 's3', date)).toBe(false);
    expect(check('eu-west-1', 'execute-api', new Date(date.getTime() + 10 * 60_000))).toBe(false);
  });
});
