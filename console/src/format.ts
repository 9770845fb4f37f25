/** How the console writes sizes, rates, durations and times: pure, so unit tests cover them. */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '-';
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${UNITS[u]}`;
}

/**
 * Labels for a byte axis: one unit for all (from the largest) and as many decimals as the step
 * between ticks needs, so close values do not all read `1.0 GiB`.
 */
export function axisBytes(values: readonly number[]): string[] {
  const max = Math.max(0, ...values.map(Math.abs));
  let u = 0;
  while (max >= 1024 ** (u + 1) && u < UNITS.length - 1) u++;
  const scale = 1024 ** u;
  const step = values.length > 1 ? Math.abs(values[1]! - values[0]!) / scale : 1;
  const decimals =
    step > 0 ? Math.min(6, Math.max(u === 0 ? 0 : 1, Math.ceil(-Math.log10(step)))) : 1;
  return values.map((v) => `${(v / scale).toFixed(u === 0 ? 0 : decimals)} ${UNITS[u]}`);
}

export function rate(bytesPerSecond: number | undefined): string {
  return bytesPerSecond === undefined ? '-' : `${bytes(Math.round(bytesPerSecond))}/s`;
}

/** 75 → `1m 15s`, 3725 → `1h 2m`; a duration a person reads at a glance. */
export function duration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '-';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`;
}

/** Fraction done from 0 to 1, or undefined when the total is unknown. */
export function fraction(done: number, total: number | undefined): number | undefined {
  if (!total || total <= 0) return undefined;
  return Math.min(1, Math.max(0, done / total));
}

export function time(iso: string | undefined): string {
  if (!iso) return '-';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** `3 min ago` style, from `now` (ms). */
export function ago(iso: string | undefined, now = Date.now()): string {
  if (!iso) return '-';
  const s = (now - Date.parse(iso)) / 1000;
  if (!Number.isFinite(s)) return iso;
  if (s < 0) return `in ${duration(-s)}`;
  return `${duration(s)} ago`;
}

/** Seconds between two ISO times (or until `now` when the end is missing). */
export function between(start: string | undefined, end: string | undefined, now = Date.now()) {
  if (!start) return undefined;
  return ((end ? Date.parse(end) : now) - Date.parse(start)) / 1000;
}
