import { describe, expect, it } from 'vitest';
import { withCors } from '../../../../functions/api/handler';

const CONSOLE = 'https://d111111abcdef8.cloudfront.net';
const answer = { statusCode: 200, headers: { 'content-type': 'application/json' }, body: '[]' };

describe("the API function's CORS header", () => {
  it("names the console's origin when the request comes from it, whatever the header's case", () => {
    for (const name of ['origin', 'Origin', 'ORIGIN']) {
      expect(withCors(answer, { headers: { [name]: CONSOLE } }, CONSOLE).headers).toEqual({
        'content-type': 'application/json',
        'access-control-allow-origin': CONSOLE,
        vary: 'Origin',
      });
    }
  });

  it('names no origin for any other origin, or for a request without one', () => {
    for (const headers of [
      { origin: 'https://evil.example' },
      { origin: `${CONSOLE}.evil.example` },
      { origin: 'null' },
      {},
    ]) {
      const out = withCors(answer, { headers }, CONSOLE);
      expect(out.headers).not.toHaveProperty('access-control-allow-origin');
      expect(out.headers).toHaveProperty('vary', 'Origin');
      expect(out.body).toBe(answer.body);
    }
  });

  it('changes nothing where no console origin is configured (local mode)', () => {
    expect(withCors(answer, { headers: { origin: CONSOLE } }, undefined)).toBe(answer);
  });
});
