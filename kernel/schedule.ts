/**
 * Schedule expressions in Amazon EventBridge Scheduler's syntax, so a policy means the same thing
 * in local mode (local/scheduler.ts fires it) and in AWS (one EventBridge Scheduler schedule per
 * policy):
 *
 *   cron(minutes hours day-of-month month day-of-week year)   six fields, in the policy's zone
 *   rate(value unit)                                          unit minute(s) | hour(s) | day(s)
 *   at(yyyy-mm-ddThh:mm:ss)                                   once, in the policy's zone
 *
 * cron follows EventBridge, not Unix cron: day-of-week is 1-7 = SUN-SAT, exactly one of
 * day-of-month and day-of-week is `?`, `L` (last), `W` (nearest weekday, day-of-month) and `#`
 * (nth weekday, day-of-week) are allowed, years are 1970-2199. Every expression is parsed here
 * field by field, so a bad one is refused with the field, the value and the allowed range, before
 * anything is stored; only a valid one is handed to croner (in Quartz weekday mode, with a seconds
 * field of 0) to compute fire times across time zones and DST.
 *
 * rate(): EventBridge Scheduler counts a rate from the schedule's start, which for a policy is
 * when it was created or last changed (`anchor`), so it first fires one interval after that.
 */
import { Cron } from 'croner';
import { ValidationError } from './errors';

export type ScheduleExpression =
  | { kind: 'cron'; expression: string; pattern: string }
  | { kind: 'rate'; expression: string; value: number; unit: RateUnit; intervalMs: number }
  | { kind: 'at'; expression: string; local: string };

export type RateUnit = 'minute' | 'hour' | 'day';

const UNIT_MS: Record<RateUnit, number> = {
  minute: 60_000,
  hour: 3_600_000,
  day: 86_400_000,
};

export const DEFAULT_TIMEZONE = 'UTC';

const HOW =
  'use cron(minutes hours day-of-month month day-of-week year), e.g. cron(0 3 * * ? *), rate(N minutes|hours|days), e.g. rate(6 hours), or at(yyyy-mm-ddThh:mm:ss)';

function invalid(expression: string, why: string): ValidationError {
  return new ValidationError(`schedule ${JSON.stringify(expression)} is not valid: ${why}`);
}

/** Parses and validates an expression; throws a ValidationError that says what is wrong. */
export function parseSchedule(expression: string): ScheduleExpression {
  const text = typeof expression === 'string' ? expression.trim() : '';
  const m = /^(cron|rate|at)\((.*)\)$/s.exec(text);
  if (!m) throw invalid(String(expression), HOW);
  const [, kind, body] = m as unknown as [string, 'cron' | 'rate' | 'at', string];
  if (kind === 'rate') return parseRate(text, body);
  if (kind === 'at') return parseAt(text, body);
  return { kind: 'cron', expression: text, pattern: parseCron(text, body) };
}

function parseRate(expression: string, body: string): ScheduleExpression {
  const m = /^\s*(\S+)\s+(\S+)\s*$/.exec(body);
  if (!m) throw invalid(expression, 'a rate is rate(value unit), e.g. rate(6 hours)');
  const [, valueText, unitText] = m as unknown as [string, string, string];
  if (!/^[1-9][0-9]{0,8}$/.test(valueText)) {
    throw invalid(expression, `the rate's value ${valueText} is not a positive whole number`);
  }
  const value = Number(valueText);
  const unit = unitText.replace(/s$/, '') as RateUnit;
  if (!(unit in UNIT_MS)) {
    throw invalid(expression, `the rate's unit ${unitText} is not minute(s), hour(s) or day(s)`);
  }
  // EventBridge itself refuses rate(1 minutes) and rate(5 minute).
  const want = value === 1 ? unit : `${unit}s`;
  if (unitText !== want) {
    throw invalid(expression, `write rate(${value} ${want}) (singular for 1, plural above)`);
  }
  return { kind: 'rate', expression, value, unit, intervalMs: value * UNIT_MS[unit] };
}

function parseAt(expression: string, body: string): ScheduleExpression {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})$/.exec(body.trim());
  if (!m) throw invalid(expression, 'a one-time schedule is at(yyyy-mm-ddThh:mm:ss)');
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const probe = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  if (
    probe.getUTCFullYear() !== y ||
    probe.getUTCMonth() !== mo - 1 ||
    probe.getUTCDate() !== d ||
    h > 23 ||
    mi > 59 ||
    s > 59
  ) {
    throw invalid(expression, `${body.trim()} is not a date and time that exists`);
  }
  return { kind: 'at', expression, local: body.trim() };
}

interface FieldSpec {
  name: string;
  min: number;
  max: number;
  names?: readonly string[];
  /** What the field's range means, for errors. */
  range: string;
}

const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];
const DAYS = ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'];

const FIELDS: readonly FieldSpec[] = [
  { name: 'minutes', min: 0, max: 59, range: '0-59' },
  { name: 'hours', min: 0, max: 23, range: '0-23' },
  { name: 'day-of-month', min: 1, max: 31, range: '1-31' },
  { name: 'month', min: 1, max: 12, names: MONTHS, range: '1-12 or JAN-DEC' },
  { name: 'day-of-week', min: 1, max: 7, names: DAYS, range: '1-7 or SUN-SAT (1 is Sunday)' },
  { name: 'year', min: 1970, max: 2199, range: '1970-2199' },
];

/** Validates the six fields and returns croner's 7-part pattern (seconds first). */
function parseCron(expression: string, body: string): string {
  const parts = body.trim().split(/\s+/);
  if (parts.length !== 6) {
    throw invalid(
      expression,
      `cron has 6 fields (minutes hours day-of-month month day-of-week year), not ${parts.length}; e.g. cron(0 3 * * ? *)`,
    );
  }
  const [dom, dow] = [parts[2]!, parts[4]!];
  if ((dom === '?') === (dow === '?')) {
    throw invalid(
      expression,
      'exactly one of day-of-month and day-of-week must be ?, e.g. cron(0 3 * * ? *) every day or cron(0 3 ? * MON-FRI *) on weekdays',
    );
  }
  const out = parts.map((text, i) => {
    const spec = FIELDS[i]!;
    if (text === '?') {
      if (i !== 2 && i !== 4)
        throw invalid(
          expression,
          `? is allowed only in day-of-month and day-of-week, not in ${spec.name}`,
        );
      return '*';
    }
    return text
      .split(',')
      .map((item) => parseItem(expression, spec, i, item))
      .join(',');
  });
  return `0 ${out.join(' ')}`;
}

function parseItem(expression: string, spec: FieldSpec, index: number, item: string): string {
  const bad = (why: string) => invalid(expression, `${spec.name} field: ${why}`);
  if (item === '') throw bad('an empty list item');
  const value = (text: string): number => {
    const upper = text.toUpperCase();
    const named = spec.names?.indexOf(upper) ?? -1;
    if (named >= 0) return named + 1;
    if (!/^\d+$/.test(text)) throw bad(`${text} is not a number (allowed: ${spec.range})`);
    const n = Number(text);
    if (n < spec.min || n > spec.max) throw bad(`${text} is out of range (allowed: ${spec.range})`);
    return n;
  };
  // The special forms: L and nW in day-of-month, L, nL and n#k in day-of-week.
  if (index === 2) {
    if (item === 'L') return 'L';
    const w = /^(\d+)W$/.exec(item);
    if (w) return `${value(w[1]!)}W`;
  }
  if (index === 4) {
    if (item === 'L') return '7'; // the last day of the week: Saturday
    const last = /^(\w+)L$/.exec(item);
    if (last) return `${value(last[1]!)}#L`;
    const nth = /^(\w+)#(\d+)$/.exec(item);
    if (nth) {
      const k = Number(nth[2]);
      if (k < 1 || k > 5) throw bad(`#${nth[2]} is not an occurrence in a month (1-5)`);
      return `${value(nth[1]!)}#${k}`;
    }
  }
  if (/[LW#]/i.test(item) && !spec.names) {
    throw bad(
      `${item}: L, W and # are allowed only in day-of-month (L, nW) and day-of-week (L, nL, n#k)`,
    );
  }
  const m = /^([^/-]+)(?:-([^/]+))?(?:\/(\d+))?$/.exec(item);
  if (!m) throw bad(`${item} is not a value, a range a-b, or a step */n, a/n or a-b/n`);
  const [, start, end, step] = m;
  if (step !== undefined && (Number(step) < 1 || Number(step) > spec.max)) {
    throw bad(`the step /${step} is out of range (1-${spec.max})`);
  }
  if (start === '*') {
    if (end !== undefined) throw bad(`${item}: * cannot start a range`);
    return step ? `*/${step}` : '*';
  }
  const a = value(start!);
  if (end !== undefined) {
    const b = value(end);
    if (b < a) throw bad(`the range ${item} runs backwards`);
    return step ? `${a}-${b}/${step}` : `${a}-${b}`;
  }
  // EventBridge's a/n means from a to the field's end, every n.
  return step ? `${a}-${spec.max}/${step}` : `${a}`;
}

/** Throws a ValidationError unless `timezone` is an IANA time zone name this runtime knows. */
export function checkTimezone(timezone: string): string {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    throw new ValidationError(
      `time zone ${JSON.stringify(timezone)} is not known: use an IANA name such as UTC, Europe/Paris or America/New_York`,
    );
  }
  return timezone;
}

/**
 * The first time the schedule fires strictly after `after`, or undefined when it never will
 * again (an at() in the past, a cron whose years have passed). `anchor` is when a rate() started
 * counting (the policy's creation or last change).
 */
export function nextFireTime(
  schedule: ScheduleExpression,
  options: { after: Date; timezone?: string; anchor?: Date },
): Date | undefined {
  const timezone = options.timezone ?? DEFAULT_TIMEZONE;
  const after = options.after;
  switch (schedule.kind) {
    case 'rate': {
      const anchor = (options.anchor ?? after).getTime();
      const elapsed = after.getTime() - anchor;
      const k = elapsed < 0 ? 1 : Math.floor(elapsed / schedule.intervalMs) + 1;
      return new Date(anchor + k * schedule.intervalMs);
    }
    case 'at': {
      const when = new Cron(schedule.local, { timezone, paused: true }).nextRun(new Date(0));
      return when && when.getTime() > after.getTime() ? when : undefined;
    }
    case 'cron': {
      const cron = new Cron(schedule.pattern, {
        timezone,
        paused: true,
        mode: '7-part',
        alternativeWeekdays: true,
        domAndDow: true,
      });
      return cron.nextRun(after) ?? undefined;
    }
  }
}
