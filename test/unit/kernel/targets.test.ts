import { describe, expect, it } from 'vitest';
import {
  matchesSelector,
  parseSelector,
  parseTargetKey,
  formatTarget,
  parseTarget,
  platformOf,
  PLATFORMS,
  targetKey,
  type TargetRef,
} from '../../../kernel/targets';
import { ValidationError } from '../../../kernel/errors';

/** Deterministic PRNG (mulberry32) so a failing generated case is the same on every run. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function thrownBy(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the call to throw');
}

const ALNUM = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const NAME_INNER = `${ALNUM}/:._- `;
const AGENT_INNER = `${ALNUM}_.-`;

function pick(next: () => number, chars: string, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += chars[Math.floor(next() * chars.length)];
  return out;
}

/** A canonical target text: no surrounding spaces, `@` in the name only when an agent follows. */
function makeTargetText(next: () => number): { text: string; ref: TargetRef } {
  const platform = PLATFORMS[Math.floor(next() * PLATFORMS.length)]!;
  const withAgent = next() < 0.5;
  const inner = withAgent ? `${NAME_INNER}@` : NAME_INNER;
  const length = 1 + Math.floor(next() * 40);
  const name =
    length === 1
      ? pick(next, ALNUM, 1)
      : pick(next, ALNUM, 1) + pick(next, inner, length - 2) + pick(next, ALNUM, 1);
  if (!withAgent) return { text: `${platform}:${name}`, ref: { platform, name } };
  const agent = pick(next, ALNUM, 1) + pick(next, AGENT_INNER, Math.floor(next() * 63));
  return { text: `${platform}:${name}@${agent}`, ref: { platform, name, agent } };
}

describe('parseTarget', () => {
  it.each(PLATFORMS)('parses a target of platform %s', (platform) => {
    const ref = parseTarget(`${platform}:thing`);

    expect(ref).toEqual({ platform, name: 'thing' });
  });

  it('splits the agent after the last @', () => {
    const ref = parseTarget('docker:web@site-1');

    expect(ref).toEqual({ platform: 'docker', name: 'web', agent: 'site-1' });
  });

  it('leaves the agent out when the target names none', () => {
    const ref = parseTarget('docker:web');

    expect(ref).not.toHaveProperty('agent');
  });

  it.each([
    ['lxd-volume:default/data', { platform: 'lxd-volume', name: 'default/data' }],
    [
      'vsphere:DC0/vm/appliance@site-2',
      { platform: 'vsphere', name: 'DC0/vm/appliance', agent: 'site-2' },
    ],
    ['path:/srv/data', { platform: 'path', name: '/srv/data' }],
    ['path:C:/backups/db', { platform: 'path', name: 'C:/backups/db' }],
    ['vapp:DC0/vApp:1@site.eu', { platform: 'vapp', name: 'DC0/vApp:1', agent: 'site.eu' }],
    ['docker:user@host@site_3', { platform: 'docker', name: 'user@host', agent: 'site_3' }],
  ])('keeps colons, slashes and earlier @ in the name: %s', (text, expected) => {
    const ref = parseTarget(text);

    expect(ref).toEqual(expected);
  });

  it('tells docker-compose and lxd-server apart from the platforms they start with', () => {
    expect(parseTarget('docker-compose:stack').platform).toBe('docker-compose');
    expect(parseTarget('lxd-server:host').platform).toBe('lxd-server');
  });

  it('ignores spaces around the target', () => {
    const ref = parseTarget('  docker:web@site-1\n');

    expect(ref).toEqual({ platform: 'docker', name: 'web', agent: 'site-1' });
  });

  it('accepts an agent name of up to 63 characters', () => {
    const agent = `a${'b'.repeat(62)}`;

    expect(parseTarget(`docker:web@${agent}`).agent).toBe(agent);
  });

  describe('refuses with a ValidationError that names the problem', () => {
    it.each([
      ['an empty target', ''],
      ['a blank target', '   '],
      ['a target with no colon', 'web'],
      ['a target with nothing before the colon', ':web'],
    ])('%s', (_case, text) => {
      const err = thrownBy(() => parseTarget(text));

      expect(err).toBeInstanceOf(ValidationError);
      expect(err.message).toContain('is not of the form PLATFORM:NAME');
      expect(err.message).toContain(`"${text}"`);
    });

    it.each(['podman:web', 'Docker:web', 'k8s:ns/pod'])('an unknown platform: %s', (text) => {
      const err = thrownBy(() => parseTarget(text));

      expect(err).toBeInstanceOf(ValidationError);
      expect(err.message).toContain(`unknown platform "${text.split(':')[0]}"`);
      expect(err.message).toContain(PLATFORMS.join(', '));
    });

    it.each(['docker:', 'lxd-volume:@site-1'])('an empty name: %s', (text) => {
      const err = thrownBy(() => parseTarget(text));

      expect(err).toBeInstanceOf(ValidationError);
      expect(err.message).toMatch(/has no name after "(docker|lxd-volume):"/);
    });

    it.each([
      ['docker:web@', ''],
      ['docker:web@-site', '-site'],
      ['docker:web@.site', '.site'],
      ['docker:web@si te', 'si te'],
      ['docker:web@site/2', 'site/2'],
      ['docker:web@site:2', 'site:2'],
      [`docker:web@a${'b'.repeat(63)}`, `a${'b'.repeat(63)}`],
    ])('a bad agent: %s', (text, agent) => {
      const err = thrownBy(() => parseTarget(text));

      expect(err).toBeInstanceOf(ValidationError);
      expect(err.message).toContain(`agent "${agent}"`);
      expect(err.message).toContain('not a valid agent name');
    });
  });
});

describe('targetKey', () => {
  it('is platform:name and never carries the agent', () => {
    expect(targetKey({ platform: 'vsphere', name: 'DC0/vm/appliance' })).toBe(
      'vsphere:DC0/vm/appliance',
    );
    expect(targetKey(parseTarget('vsphere:DC0/vm/appliance@site-2'))).toBe(
      'vsphere:DC0/vm/appliance',
    );
  });
});

describe('formatTarget', () => {
  it('appends the agent only when there is one', () => {
    expect(formatTarget({ platform: 'docker', name: 'web' })).toBe('docker:web');
    expect(formatTarget({ platform: 'docker', name: 'web', agent: 'site-1' })).toBe(
      'docker:web@site-1',
    );
  });
});

describe('platformOf', () => {
  it.each(PLATFORMS)('returns %s for a target of that platform', (platform) => {
    expect(platformOf(`${platform}:a/b:c`)).toBe(platform);
  });

  it('refuses a target that does not parse', () => {
    expect(() => platformOf('nonsense')).toThrow(ValidationError);
  });
});

describe('round trip', () => {
  const next = random(20250301);
  const cases = Array.from({ length: 500 }, () => makeTargetText(next));

  it('formatTarget(parseTarget(text)) gives back every canonical target text', () => {
    for (const { text } of cases) {
      expect(formatTarget(parseTarget(text)), text).toBe(text);
    }
  });

  it('parseTarget(formatTarget(ref)) gives back every ref, and targetKey drops only the agent', () => {
    for (const { ref } of cases) {
      const parsed = parseTarget(formatTarget(ref));

      expect(parsed, formatTarget(ref)).toEqual(ref);
      expect(targetKey(parsed)).toBe(`${ref.platform}:${ref.name}`);
    }
  });

  // A canonical key is `platform:name` with no agent: reading it back must not take what
  // follows an @ in the name for an agent (a vSphere VM `ann@corp`, a path `/home/ann@corp`).
  it('reads every canonical key back to its own platform and name, even when the name has an @', () => {
    const keys = [
      ...cases.map(({ ref }) => ref),
      { platform: 'vsphere', name: 'DC0/vm/ann@corp' } as const,
      { platform: 'path', name: '/home/ann@corp/docs' } as const,
    ];
    for (const ref of keys) {
      const key = targetKey(ref);

      expect(() => platformOf(key), key).not.toThrow();
      expect(platformOf(key), key).toBe(ref.platform);
      expect(parseTargetKey(key), key).toEqual({ platform: ref.platform, name: ref.name });
    }
  });

  it('generates names with colons, slashes and agents, so the range is the interesting one', () => {
    expect(cases.some(({ ref }) => ref.name.includes(':'))).toBe(true);
    expect(cases.some(({ ref }) => ref.name.includes('/'))).toBe(true);
    expect(cases.some(({ ref }) => ref.name.includes('@'))).toBe(true);
    expect(cases.some(({ ref }) => ref.agent === undefined)).toBe(true);
    expect(new Set(cases.map(({ ref }) => ref.platform)).size).toBe(PLATFORMS.length);
  });
});

describe('label selectors', () => {
  it('reads pairs, the agent and a canonical text without the agent', () => {
    expect(parseSelector(' docker:app=shop,tier=web@site-2 ')).toEqual({
      platform: 'docker',
      labels: { app: 'shop', tier: 'web' },
      agent: 'site-2',
      text: 'docker:app=shop,tier=web',
    });
    // A value may hold "=" and be empty; dotted and slashed keys are common on labels.
    expect(parseSelector('docker:com.example/role=a=b,empty=').labels).toEqual({
      'com.example/role': 'a=b',
      empty: '',
    });
  });

  it('takes any label key, constructor and __proto__ included, and matches it only when present', () => {
    const sel = parseSelector('docker:constructor=x,__proto__=y');

    expect(Object.keys(sel.labels)).toEqual(['constructor', '__proto__']);
    expect(matchesSelector(sel, {})).toBe(false);
    expect(matchesSelector(sel, JSON.parse('{"constructor":"x","__proto__":"y"}'))).toBe(true);
  });

  it.each([
    ['docker:', /"" is not KEY=VALUE/],
    ['docker:app=x,', /"" is not KEY=VALUE/],
    ['lxd:app=x', /only docker containers/],
    ['docker-compose:app=x', /only docker containers/],
    ['app=x', /not of the form/],
    ['docker:app=x@', /agent ""/],
  ])('refuses %s with a ValidationError that shows the form', (text, why) => {
    const err = thrownBy(() => parseSelector(text));
    expect(err).toBeInstanceOf(ValidationError);
    expect(err.message).toMatch(why);
  });

  it('matches a target only when it carries every pair with exactly that value, over generated label sets', () => {
    const next = random(4);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)]!;
    const keys = ['app', 'tier', 'env', 'com.example/owner'] as const;
    const values = ['a', 'b', 'A', 'a ', ''] as const;
    for (let i = 0; i < 500; i++) {
      const selector: Record<string, string> = {};
      const labels: Record<string, string> = {};
      for (const key of keys) {
        if (next() < 0.5) selector[key] = pick(values);
        if (next() < 0.6) labels[key] = pick(values);
      }
      if (Object.keys(selector).length === 0) selector.app = pick(values);
      const expected = Object.entries(selector).every(
        ([k, v]) => Object.prototype.hasOwnProperty.call(labels, k) && labels[k] === v,
      );

      expect(
        matchesSelector({ labels: selector }, labels),
        JSON.stringify({ selector, labels }),
      ).toBe(expected);
      // Extra labels never stop a match; a target without labels matches nothing.
      expect(matchesSelector({ labels: selector }, { ...labels, zz: 'x' })).toBe(expected);
      expect(matchesSelector({ labels: selector }, undefined)).toBe(false);
    }
  });
});
