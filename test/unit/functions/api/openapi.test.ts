import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ROUTES } from '../../../../functions/api/routes';
import { PLATFORMS } from '../../../../kernel/targets';

const doc = JSON.parse(
  readFileSync(new URL('../../../../functions/api/openapi.json', import.meta.url), 'utf8'),
) as {
  paths: Record<string, Record<string, unknown>>;
  components: { schemas: Record<string, { enum?: string[] }> };
};

describe('openapi.json', () => {
  it('describes exactly the routes the handler serves', () => {
    const documented = Object.entries(doc.paths)
      .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
      .sort();
    const served = ROUTES.map(([method, path]) => `${method} ${path}`).sort();
    expect(documented).toEqual(served);
  });

  it('lists the platforms the target parser accepts', () => {
    expect(doc.components.schemas.Platform?.enum).toEqual([...PLATFORMS]);
  });
});
