import { describe, expect, it } from 'vitest';
import {
  checkPattern,
  checkSchedule,
  checkScheduleExpiry,
  expiresAt,
  isExpired,
  listedSnapshots,
  parseExpiry,
  parseSnapshotId,
  snapshotId,
} from '../../../kernel/snapshots';
import { makeAgent, makeTarget } from '../../fixtures/factories';

const NOW = new Date('2026-01-01T00:00:00.000Z');

describe('snapshot ids', () => {
  it('splits TARGET/NAME at the last slash and keeps @AGENT out of the name', () => {
    expect(parseSnapshotId('lxd:web/snap0')).toEqual({
      target: { platform: 'lxd', name: 'web' },
      name: 'snap0',
    });
    expect(parseSnapshotId('lxd:web/snap0@site-1')).toEqual({
      target: { platform: 'lxd', name: 'web', agent: 'site-1' },
      name: 'snap0',
    });
    expect(parseSnapshotId('lxd-volume:default/data/daily-3')).toEqual({
      target: { platform: 'lxd-volume', name: 'default/data' },
      name: 'daily-3',
    });
  });

  it('round-trips every generated id', () => {
    for (const instance of ['a', 'web-1', 'x'.repeat(63)]) {
      for (const name of ['s', 'snap0', 'pre.upgrade_2', 'a-'.repeat(20)]) {
        const id = snapshotId(`lxd:${instance}`, name);
        const ref = parseSnapshotId(id);
        expect(snapshotId(`lxd:${ref.target.name}`, ref.name)).toBe(id);
      }
    }
  });

  it.each(['lxd:web', 'lxd:web/', 'lxd:/snap0', 'lxd:web/has space', 'web/snap0'])(
    'refuses %s with how to write an id',
    (text) => {
      expect(() => parseSnapshotId(text)).toThrow(/TARGET\/SNAPSHOT|PLATFORM:NAME/);
    },
  );
});

describe('expiry', () => {
  it('reads never, durations of each unit and ISO times', () => {
    expect(parseExpiry('never')).toEqual({ kind: 'never' });
    expect(expiresAt('never', NOW)).toBeNull();
    const cases: Array<[string, number]> = [
      ['30s', 30_000],
      ['15m', 900_000],
      ['12h', 43_200_000],
      ['7d', 604_800_000],
      ['2w', 1_209_600_000],
    ];
    for (const [text, ms] of cases) {
      expect(expiresAt(text, NOW)?.getTime()).toBe(NOW.getTime() + ms);
    }
    expect(expiresAt('2026-12-01T00:00:00Z', NOW)?.toISOString()).toBe('2026-12-01T00:00:00.000Z');
  });

  it.each(['', '7', 'd7', '7days', '0d', '1y', '2026-13-45T00:00:00Z', 'soon'])(
    'refuses "%s" and says what it takes',
    (text) => {
      expect(() => parseExpiry(text)).toThrow(/`never`, a duration .*ISO 8601|zero/);
    },
  );

  it('judges expiry at the instant itself as expired', () => {
    expect(isExpired({ expiresAt: NOW.toISOString() }, NOW)).toBe(true);
    expect(isExpired({ expiresAt: '2026-01-01T00:00:00.001Z' }, NOW)).toBe(false);
    expect(isExpired({ expiresAt: null }, NOW)).toBe(false);
  });

  it('takes schedule expiries in minutes or more, as the engine counts', () => {
    expect(checkScheduleExpiry('7d')).toBe('7d');
    expect(checkScheduleExpiry(' 15m')).toBe('15m');
    expect(checkScheduleExpiry('never')).toBe('never');
    expect(() => checkScheduleExpiry('30s')).toThrow(/minutes or more/);
    expect(() => checkScheduleExpiry('2026-12-01T00:00:00Z')).toThrow(/minutes or more/);
  });
});

describe('patterns and schedules', () => {
  it('accepts names with at most one %d', () => {
    for (const p of ['snap%d', 'before-upgrade', '%d', 'daily-%d.bak']) {
      expect(checkPattern(p)).toBe(p);
    }
    for (const p of ['a%d%d', 'has space', '-x', 'a/b', 'x@y', 'z'.repeat(57)]) {
      expect(() => checkPattern(p)).toThrow(/at most one %d/);
    }
  });

  it("accepts LXD's aliases, five-field cron and none", () => {
    expect(checkSchedule('@daily')).toBe('@daily');
    expect(checkSchedule('none')).toBe('none');
    expect(checkSchedule(' 0  3 * * 1-5 ')).toBe('0 3 * * 1-5');
    for (const bad of ['daily', '@fortnightly', '0 3 * *', '0 3 * * * *', '0 3 * * ;rm']) {
      expect(() => checkSchedule(bad)).toThrow(/cron expression of five fields/);
    }
  });
});

describe('listedSnapshots', () => {
  it('lists every agent snapshot newest first, without those past their expiry', () => {
    const agent = makeAgent({
      agent: 'site-1',
      targets: [
        makeTarget('lxd:a', {
          snapshots: [
            { name: 's0', createdAt: '2025-12-01T00:00:00.000Z', expiresAt: null, stateful: false },
            {
              name: 'old',
              createdAt: '2025-12-02T00:00:00.000Z',
              expiresAt: '2025-12-31T00:00:00.000Z',
              stateful: false,
            },
          ],
        }),
        makeTarget('lxd:b', {
          snapshots: [
            {
              name: 's1',
              createdAt: '2025-12-03T00:00:00.000Z',
              expiresAt: '2026-02-01T00:00:00.000Z',
              stateful: true,
            },
          ],
        }),
        makeTarget('docker:web'),
      ],
    });
    expect(listedSnapshots([agent], NOW).map((s) => s.snapshotId)).toEqual([
      'lxd:b/s1',
      'lxd:a/s0',
    ]);
    expect(listedSnapshots([agent], NOW, 'lxd:a')).toEqual([
      {
        tier: 'snapshot',
        snapshotId: 'lxd:a/s0',
        target: 'lxd:a',
        agent: 'site-1',
        name: 's0',
        createdAt: '2025-12-01T00:00:00.000Z',
        expiresAt: null,
        stateful: false,
        status: 'AVAILABLE',
      },
    ]);
  });
});
