import { describe, expect, it } from 'vitest';
import {
  applyRetention,
  checkRetentionRules,
  type RetainedPoint,
  type RetentionPolicy,
  type RetentionRules,
} from '../../../../functions/core/retention';

const NOW = new Date('2026-12-06T12:00:00.000Z');
let n = 0;

function point(createdAt: string, overrides: Partial<RetainedPoint> = {}): RetainedPoint {
  return {
    recoveryPointId: `rp-${String(++n).padStart(4, '0')}`,
    target: 'docker:web',
    createdAt: new Date(createdAt).toISOString(),
    bytesRead: 1000,
    streams: [{}],
    ...overrides,
  };
}

function policy(rules: RetentionRules, overrides: Partial<RetentionPolicy> = {}): RetentionPolicy {
  return { name: 'nightly', targets: ['docker:web'], timezone: 'UTC', rules, ...overrides };
}

const kept = (points: RetainedPoint[], policies: RetentionPolicy[], now = NOW) =>
  applyRetention(points, policies, now)
    .filter((d) => d.keep)
    .map((d) => d.recoveryPointId)
    .sort();

/** One point every `hours` hours going back from `end`, oldest first. */
function series(count: number, hours: number, end = '2026-12-06T03:00:00Z', target = 'docker:web') {
  const last = Date.parse(end);
  return Array.from({ length: count }, (_, i) =>
    point(new Date(last - (count - 1 - i) * hours * 3_600_000).toISOString(), { target }),
  );
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

describe('retention with restic meaning', () => {
  it('keep-last keeps exactly the N newest points, over random histories', () => {
    const rand = lcg(7);
    for (let round = 0; round < 50; round++) {
      const count = 1 + Math.floor(rand() * 30);
      const points = Array.from({ length: count }, () =>
        point(new Date(Date.UTC(2026, 0, 1) + Math.floor(rand() * 3e10)).toISOString()),
      );
      const keepLast = 1 + Math.floor(rand() * 10);
      const newest = [...points]
        .sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1))
        .slice(0, keepLast)
        .map((p) => p.recoveryPointId)
        .sort();
      // Sizes vary by less than half, so no hold applies.
      expect(kept(points, [policy({ keepLast })])).toEqual(newest);
    }
  });

  it('keep-daily keeps the newest point of each of the last N days that have one', () => {
    const points = series(30, 8); // three a day
    const decisions = applyRetention(points, [policy({ keepDaily: 4 })], NOW);
    const keptPoints = decisions.filter((d) => d.keep);
    expect(keptPoints).toHaveLength(4);
    const days = keptPoints.map((d) =>
      points.find((p) => p.recoveryPointId === d.recoveryPointId)!.createdAt.slice(0, 10),
    );
    expect(new Set(days).size).toBe(4);
    // The newest of each day is the one kept.
    for (const d of keptPoints) {
      const p = points.find((x) => x.recoveryPointId === d.recoveryPointId)!;
      const sameDay = points.filter((x) => x.createdAt.slice(0, 10) === p.createdAt.slice(0, 10));
      expect(p.createdAt).toBe(
        sameDay
          .map((x) => x.createdAt)
          .sort()
          .at(-1),
      );
      expect(d.reasons.some((r) => /^policy nightly: daily \d\/4 2026-12-0\d$/.test(r))).toBe(true);
    }
  });

  it('counts only periods that have a point, as restic does', () => {
    const points = series(10, 48); // every other day
    const decisions = applyRetention(points, [policy({ keepDaily: 7 })], NOW);
    expect(decisions.filter((d) => d.keep)).toHaveLength(7);
  });

  it('buckets hours, ISO weeks, months and years', () => {
    const points = [
      point('2024-12-30T10:00:00Z'), // ISO week 2025-W01
      point('2025-01-05T10:00:00Z'), // still 2025-W01
      point('2025-01-06T10:00:00Z'), // 2025-W02
      point('2025-06-01T10:00:00Z'),
      point('2025-06-01T10:30:00Z'),
      point('2025-06-01T11:10:00Z'),
    ];
    const ids = points.map((p) => p.recoveryPointId);
    expect(kept(points, [policy({ keepWeekly: 3 })])).toEqual([ids[1], ids[2], ids[5]].sort());
    expect(kept(points, [policy({ keepHourly: 2 })])).toEqual([ids[4], ids[5]].sort());
    expect(kept(points, [policy({ keepMonthly: 3 })])).toEqual([ids[0], ids[2], ids[5]].sort());
    expect(kept(points, [policy({ keepYearly: 5 })])).toEqual([ids[0], ids[5]].sort());
  });

  it('buckets days in the policy time zone', () => {
    // 23:30 UTC on the 1st is the 2nd in Paris; 00:30 UTC on the 2nd too.
    const points = [point('2026-06-01T23:30:00Z'), point('2026-06-02T00:30:00Z')];
    expect(kept(points, [policy({ keepDaily: 5 })])).toHaveLength(2);
    expect(kept(points, [policy({ keepDaily: 5 }, { timezone: 'Europe/Paris' })])).toEqual([
      points[1]!.recoveryPointId,
    ]);
  });

  it('keep-within counts back from the newest point, not from now', () => {
    const points = series(10, 24, '2026-01-10T00:00:00Z'); // ended a year ago
    const ids = kept(points, [policy({ keepWithin: '2d' })]);
    expect(ids).toEqual(
      points
        .slice(-3)
        .map((p) => p.recoveryPointId)
        .sort(),
    );
    expect(kept(points, [policy({ keepWithin: '1m' })])).toHaveLength(10);
    expect(kept(points, [policy({ keepWithin: '1d12h' })])).toHaveLength(2);
  });

  it('keeps the union of rules and of policies, with every reason', () => {
    const points = series(10, 24);
    const decisions = applyRetention(
      points,
      [policy({ keepLast: 1, keepDaily: 3 }), policy({ keepLast: 5 }, { name: 'weekly' })],
      NOW,
    );
    expect(decisions.filter((d) => d.keep)).toHaveLength(5);
    const newest = decisions.find((d) => d.recoveryPointId === points.at(-1)!.recoveryPointId)!;
    expect(newest.reasons).toEqual([
      'policy nightly: last 1/1',
      'policy nightly: daily 1/3 2026-12-06',
      'policy weekly: last 1/5',
    ]);
    const gone = decisions.find((d) => d.recoveryPointId === points[0]!.recoveryPointId)!;
    expect(gone.keep).toBe(false);
    expect(gone.reasons).toEqual([
      'expired: no retention rule keeps it; the next prune deletes it',
    ]);
  });

  it('keeps every point of a target no policy protects, and of a policy without rules', () => {
    const points = series(5, 24, undefined, 'docker:db');
    expect(kept(points, [policy({ keepLast: 1 })])).toHaveLength(5);
    expect(applyRetention(points, [], NOW)[0]!.reasons).toEqual([
      'no policy protects docker:db: kept until deleted',
    ]);
    expect(kept(series(5, 24), [policy({})])).toHaveLength(5);
  });

  it('covers points a policy made of a target it reaches by selector', () => {
    const points = series(4, 24, undefined, 'docker:api').map((p) => ({ ...p, policy: 'shop' }));
    expect(kept(points, [policy({ keepLast: 2 }, { name: 'shop', targets: [] })])).toHaveLength(2);
  });
});

describe('retention beyond restic', () => {
  it('never expires the newest point that passed verify', () => {
    const points = series(6, 24);
    points[1] = { ...points[1]!, verifiedAt: '2026-12-02T00:00:00Z' };
    points[2] = { ...points[2]!, verifiedAt: '2026-12-03T00:00:00Z' };
    const decisions = applyRetention(points, [policy({ keepLast: 2 })], NOW);
    expect(
      decisions
        .filter((d) => d.keep)
        .map((d) => d.recoveryPointId)
        .sort(),
    ).toEqual([points[2]!, points[4]!, points[5]!].map((p) => p.recoveryPointId).sort());
    expect(decisions[2]!.reasons).toEqual(['the newest point that passed verify']);
    expect(decisions[1]!.keep).toBe(false);
  });

  it('holds expiry when the newest point has no streams or shrank by more than half', () => {
    const empty = series(5, 24);
    empty[4] = { ...empty[4]!, streams: [] };
    const decisions = applyRetention(empty, [policy({ keepLast: 2 })], NOW);
    expect(decisions.every((d) => d.keep)).toBe(true);
    expect(decisions[0]!.reasons[0]).toMatch(
      /^expiry held: the newest point rp-\d+ has no streams$/,
    );

    const shrunk = series(5, 24);
    shrunk[4] = { ...shrunk[4]!, bytesRead: 400 };
    const held = applyRetention(shrunk, [policy({ keepLast: 2 })], NOW);
    expect(held.every((d) => d.keep)).toBe(true);
    expect(held[0]!.reasons[0]).toMatch(/is 60 % smaller than rp-\d+ before it$/);

    const fine = series(5, 24);
    fine[4] = { ...fine[4]!, bytesRead: 500 }; // exactly half: no hold
    expect(kept(fine, [policy({ keepLast: 2 })])).toHaveLength(2);
  });

  it('keeps a pre-update point until 7 days after the next backup of its target', () => {
    const before = point('2026-11-20T10:00:00Z', { label: 'pre-update' });
    const alone = applyRetention([before], [policy({ keepLast: 1 })], NOW);
    expect(alone[0]!.keep).toBe(true);

    const later = series(3, 24, '2026-12-02T10:00:00Z'); // next backup on 11-30
    const decisions = applyRetention([before, ...later], [policy({ keepLast: 1 })], NOW);
    const d = decisions[0]!;
    expect(d.keep).toBe(true);
    expect(d.keptUntil).toBe('2026-12-07T10:00:00.000Z');
    expect(d.reasons[0]).toMatch(
      /^pre-update: kept until 2026-12-07T10:00:00.000Z \(7 days after rp-/,
    );

    const expired = applyRetention(
      [before, ...later],
      [policy({ keepLast: 1 })],
      new Date('2026-12-07T10:00:01Z'),
    );
    expect(expired[0]!.keep).toBe(false);
  });

  it('validates rules with the flag to fix', () => {
    expect(() => checkRetentionRules({ keepLast: 0 })).toThrow(
      /--keep-last must be a whole number of 1 or more/,
    );
    expect(() => checkRetentionRules({ keepDaily: 1.5 })).toThrow(/--keep-daily/);
    expect(() => checkRetentionRules({ keepWithin: '7 days' })).toThrow(
      /--keep-within "7 days" is not a duration/,
    );
    expect(checkRetentionRules({ keepWithin: '1y2m3d4h', keepLast: 3 })).toEqual({
      keepWithin: '1y2m3d4h',
      keepLast: 3,
    });
  });
});
