import { describe, expect, it } from 'vitest';
import { checkTimezone, nextFireTime, parseSchedule } from '../../../kernel/schedule';

const at = (iso: string) => new Date(iso);
const next = (expr: string, after: string, timezone?: string, anchor?: string) =>
  nextFireTime(parseSchedule(expr), {
    after: at(after),
    ...(timezone ? { timezone } : {}),
    ...(anchor ? { anchor: at(anchor) } : {}),
  })?.toISOString();

/** A seeded generator, so the ranges below are the same on every run. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

describe('EventBridge Scheduler expressions', () => {
  it('fires a daily cron at its hour in UTC and in the policy time zone', () => {
    expect(next('cron(0 3 * * ? *)', '2026-12-06T12:00:00Z')).toBe('2026-12-07T03:00:00.000Z');
    expect(next('cron(0 3 * * ? *)', '2026-12-06T12:00:00Z', 'Europe/Paris')).toBe(
      '2026-12-07T02:00:00.000Z',
    );
    expect(next('cron(0 3 * * ? *)', '2026-07-06T12:00:00Z', 'Europe/Paris')).toBe(
      '2026-07-07T01:00:00.000Z',
    );
  });

  it('numbers the days of the week 1-7 from Sunday, as EventBridge does', () => {
    // 2026-12-06 is a Sunday.
    expect(next('cron(0 3 ? * 1 *)', '2026-12-06T12:00:00Z')).toBe('2026-12-13T03:00:00.000Z');
    expect(next('cron(0 3 ? * 2 *)', '2026-12-06T12:00:00Z')).toBe('2026-12-07T03:00:00.000Z');
    expect(next('cron(0 3 ? * SAT *)', '2026-12-06T12:00:00Z')).toBe('2026-12-12T03:00:00.000Z');
    expect(next('cron(0 3 ? * 7 *)', '2026-12-06T12:00:00Z')).toBe('2026-12-12T03:00:00.000Z');
    expect(next('cron(0 3 ? * MON-FRI *)', '2026-12-04T12:00:00Z')).toBe(
      '2026-12-07T03:00:00.000Z',
    );
  });

  it('knows L, W and #', () => {
    expect(next('cron(0 3 ? * 6L *)', '2026-12-06T12:00:00Z')).toBe('2026-12-25T03:00:00.000Z');
    expect(next('cron(0 3 ? * 2#1 *)', '2026-12-06T12:00:00Z')).toBe('2026-12-07T03:00:00.000Z');
    expect(next('cron(0 3 L * ? *)', '2027-02-01T00:00:00Z')).toBe('2027-02-28T03:00:00.000Z');
    // 2026-12-05 is a Saturday: its nearest weekday is Friday the 4th.
    expect(next('cron(0 3 5W * ? *)', '2026-12-01T00:00:00Z')).toBe('2026-12-04T03:00:00.000Z');
  });

  it('reads a/n as every n from a, and lists and ranges', () => {
    expect(next('cron(0/15 * * * ? *)', '2026-12-06T12:07:00Z')).toBe('2026-12-06T12:15:00.000Z');
    expect(next('cron(5/20 * * * ? *)', '2026-12-06T12:46:00Z')).toBe('2026-12-06T13:05:00.000Z');
    expect(next('cron(0 1,13 * * ? *)', '2026-12-06T12:00:00Z')).toBe('2026-12-06T13:00:00.000Z');
    expect(next('cron(0 3 1 JAN-MAR ? *)', '2026-12-06T12:00:00Z')).toBe(
      '2027-01-01T03:00:00.000Z',
    );
  });

  it('says when a cron or an at() will never fire again', () => {
    expect(next('cron(0 3 * * ? 2025)', '2026-12-06T12:00:00Z')).toBeUndefined();
    expect(next('at(2025-01-01T10:00:00)', '2026-12-06T12:00:00Z')).toBeUndefined();
    expect(next('at(2027-01-01T10:00:00)', '2026-12-06T12:00:00Z', 'America/New_York')).toBe(
      '2027-01-01T15:00:00.000Z',
    );
  });

  it('fires a daily cron once a day at its local hour across a year of DST changes', () => {
    const schedule = parseSchedule('cron(0 3 * * ? *)');
    let after = at('2026-01-01T00:00:00Z');
    const hours = new Set<string>();
    for (let i = 0; i < 365; i++) {
      const fire = nextFireTime(schedule, { after, timezone: 'Europe/Paris' })!;
      const gap = fire.getTime() - after.getTime();
      if (i > 0) expect([23, 24, 25]).toContain(gap / 3_600_000);
      hours.add(
        new Intl.DateTimeFormat('en-GB', {
          timeZone: 'Europe/Paris',
          hour: '2-digit',
          minute: '2-digit',
        }).format(fire),
      );
      after = fire;
    }
    expect([...hours]).toEqual(['03:00']);
  });

  it('counts a rate from its anchor: first one interval after it, then every interval', () => {
    expect(next('rate(1 minute)', '2026-12-06T12:00:00Z', undefined, '2026-12-06T12:00:00Z')).toBe(
      '2026-12-06T12:01:00.000Z',
    );
    expect(next('rate(6 hours)', '2026-12-06T12:00:30Z', undefined, '2026-12-06T00:00:00Z')).toBe(
      '2026-12-06T18:00:00.000Z',
    );
    const rand = lcg(13);
    for (let i = 0; i < 500; i++) {
      const value = 1 + Math.floor(rand() * 90);
      const unit = (['minute', 'hour', 'day'] as const)[Math.floor(rand() * 3)]!;
      const schedule = parseSchedule(`rate(${value} ${value === 1 ? unit : `${unit}s`})`);
      if (schedule.kind !== 'rate') throw new Error('not a rate');
      const anchor = Date.UTC(2026, 0, 1) + Math.floor(rand() * 1e10);
      const after = anchor + Math.floor((rand() - 0.1) * 1e10);
      const fire = nextFireTime(schedule, { after: new Date(after), anchor: new Date(anchor) })!;
      expect(fire.getTime()).toBeGreaterThan(after);
      expect(fire.getTime()).toBeGreaterThan(anchor);
      expect((fire.getTime() - anchor) % schedule.intervalMs).toBe(0);
      expect(fire.getTime() - Math.max(after, anchor)).toBeLessThanOrEqual(schedule.intervalMs);
    }
  });

  it('refuses what EventBridge refuses, saying which field and what is allowed', () => {
    const cases: Array<[string, RegExp]> = [
      ['every day', /use cron\(minutes hours/],
      ['cron(0 3 * *)', /6 fields .* not 4/],
      ['cron(0 3 * * * *)', /exactly one of day-of-month and day-of-week must be \?/],
      ['cron(0 3 ? * ? *)', /exactly one of day-of-month and day-of-week must be \?/],
      ['cron(0 24 * * ? *)', /hours field: 24 is out of range \(allowed: 0-23\)/],
      ['cron(60 3 * * ? *)', /minutes field: 60 is out of range/],
      ['cron(0 3 ? * 0 *)', /day-of-week field: 0 is out of range \(allowed: 1-7 or SUN-SAT/],
      ['cron(0 3 ? * 8 *)', /day-of-week field: 8 is out of range/],
      ['cron(0 3 32 * ? *)', /day-of-month field: 32 is out of range/],
      ['cron(0 3 * 13 ? *)', /month field: 13 is out of range/],
      ['cron(0 3 * FOO ? *)', /month field: FOO is not a number/],
      ['cron(0 3 * * ? 1969)', /year field: 1969 is out of range \(allowed: 1970-2199\)/],
      ['cron(? 3 * * ? *)', /\? is allowed only in day-of-month and day-of-week/],
      ['cron(0 5-3 * * ? *)', /hours field: the range 5-3 runs backwards/],
      ['cron(0 3 ? * 2#6 *)', /#6 is not an occurrence/],
      ['cron(0L 3 * * ? *)', /L, W and # are allowed only/],
      ['cron(0 3 1,,2 * ? *)', /an empty list item/],
      ['rate(1 minutes)', /write rate\(1 minute\)/],
      ['rate(5 minute)', /write rate\(5 minutes\)/],
      ['rate(0 hours)', /not a positive whole number/],
      ['rate(2 weeks)', /unit weeks is not minute\(s\), hour\(s\) or day\(s\)/],
      ['rate(6)', /rate\(value unit\)/],
      ['at(2026-02-30T00:00:00)', /not a date and time that exists/],
      ['at(tomorrow)', /at\(yyyy-mm-ddThh:mm:ss\)/],
    ];
    for (const [expr, message] of cases) {
      expect(() => parseSchedule(expr), expr).toThrow(message);
      expect(() => parseSchedule(expr)).toThrow(
        expect.objectContaining({ name: 'ValidationError' }),
      );
    }
  });

  it('accepts IANA time zones and refuses others', () => {
    expect(checkTimezone('Europe/Paris')).toBe('Europe/Paris');
    expect(checkTimezone('UTC')).toBe('UTC');
    expect(() => checkTimezone('Mars/Olympus')).toThrow(/not known: use an IANA name/);
  });
});
