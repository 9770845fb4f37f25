/**
 * The policy form of the console: a policy as the form shows it, and the body of the POST
 * /policies or PATCH /policies/{name} request it sends (test/cdk/api-models.test.ts validates
 * these bodies against API Gateway's models).
 */
import type { Policy } from '../../kernel/model';

export interface PolicyForm {
  name: string;
  targets: string;
  schedule: string;
  timezone: string;
  keepLast: string;
  keepDaily: string;
  keepWeekly: string;
  keepMonthly: string;
  verifyEvery: string;
}

export const blank: PolicyForm = {
  name: '',
  targets: '',
  schedule: 'cron(0 3 * * ? *)',
  timezone: 'UTC',
  keepLast: '',
  keepDaily: '7',
  keepWeekly: '4',
  keepMonthly: '',
  verifyEvery: '',
};

export function formOf(p: Policy): PolicyForm {
  const n = (v: number | undefined) => (v === undefined ? '' : String(v));
  return {
    name: p.name,
    targets: p.targets.join(' '),
    schedule: p.schedule,
    timezone: p.timezone,
    keepLast: n(p.retention.keepLast),
    keepDaily: n(p.retention.keepDaily),
    keepWeekly: n(p.retention.keepWeekly),
    keepMonthly: n(p.retention.keepMonthly),
    verifyEvery: n(p.verifyEvery),
  };
}

export function bodyOf(f: PolicyForm, creating: boolean): Record<string, unknown> {
  const retention: Record<string, number> = {};
  const num = (k: string, v: string) => {
    if (v.trim() !== '') retention[k] = Number(v);
  };
  num('keepLast', f.keepLast);
  num('keepDaily', f.keepDaily);
  num('keepWeekly', f.keepWeekly);
  num('keepMonthly', f.keepMonthly);
  return {
    ...(creating ? { name: f.name.trim() } : {}),
    targets: f.targets.split(/[\s,]+/).filter(Boolean),
    schedule: f.schedule.trim(),
    timezone: f.timezone.trim() || 'UTC',
    retention,
    ...(f.verifyEvery.trim() ? { verifyEvery: Number(f.verifyEvery) } : {}),
  };
}

/** The field an API refusal of a policy is about, from the words of its message. */
export function policyField(message: string): keyof PolicyForm | 'form' {
  const m = message.toLowerCase();
  if (/policy name|a policy of that name|policy .* exists/.test(m)) return 'name';
  if (/keep-?last|keeplast/.test(m)) return 'keepLast';
  if (/keep-?daily|keepdaily/.test(m)) return 'keepDaily';
  if (/keep-?weekly|keepweekly/.test(m)) return 'keepWeekly';
  if (/keep-?monthly|keepmonthly/.test(m)) return 'keepMonthly';
  if (/verifyevery|verify-every/.test(m)) return 'verifyEvery';
  if (/time ?zone/.test(m)) return 'timezone';
  if (/cron|rate\(|at\(|schedule|minute|hour|day-of|month|year/.test(m)) return 'schedule';
  if (/target|selector|platform/.test(m)) return 'targets';
  return 'form';
}
