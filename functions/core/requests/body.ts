/**
 * Request bodies, read strictly: an unknown or mistyped field is a ValidationError (400) that
 * names it. Backup and restore options are the platform's (kernel/platforms): a field no
 * platform takes is unknown; a field another platform takes is refused naming the platforms
 * that take it (the option matrix), both before any workflow starts.
 */
import { z } from 'zod';
import { ValidationError } from '../../../kernel/errors';
import { PLATFORM_SPECS, specOf, type Platform } from '../../../kernel/platforms';
import type { PlatformSpec } from '../../../kernel/platforms/spec';

/** Parses a request body, turning every problem into one ValidationError that names the fields. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => {
    // A record's bad key carries what is wrong with it one level down.
    const inner = 'issues' in i && Array.isArray(i.issues) ? i.issues : [];
    const nested = inner.map((n: { message?: unknown }) => String(n.message)).join(', ');
    const message = nested ? `${i.message} (${nested})` : i.message;
    return i.path.length ? `${i.path.join('.')}: ${message}` : message;
  });
  throw new ValidationError(`bad request body: ${problems.join('; ')}`);
}

export type OptionKind = 'backup' | 'restore';

const optionsOf = (spec: PlatformSpec, kind: OptionKind) =>
  kind === 'backup' ? spec.backupOptions : spec.restoreOptions;

/** Every option field some platform takes, each with the first such platform's schema. */
function anyPlatformShape(kind: OptionKind): z.ZodRawShape {
  const shape: Record<string, z.ZodType> = {};
  for (const spec of PLATFORM_SPECS) {
    for (const [field, schema] of Object.entries(optionsOf(spec, kind).shape)) {
      shape[field] ??= schema as z.ZodType;
    }
  }
  return shape;
}

/**
 * Reads a backup or restore body before its platform is known: the request's own `fields`
 * and any platform's options, strictly. Returns the fields and the options apart.
 */
export function parseRequestBody<F extends z.ZodRawShape>(
  kind: OptionKind,
  fields: F,
  body: unknown,
): { fields: z.infer<z.ZodObject<F>>; options: Record<string, unknown> } {
  const parsed = parseBody(
    z.object({ ...anyPlatformShape(kind), ...fields }).strict(),
    body,
  ) as Record<string, unknown>;
  const own: Record<string, unknown> = {};
  const options: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (value === undefined) continue;
    (key in fields ? own : options)[key] = value;
  }
  return { fields: own as z.infer<z.ZodObject<F>>, options };
}

/** `a`, `a and b`, `a, b and c`. */
function listed(items: string[]): string {
  return items.length <= 1
    ? (items[0] ?? '')
    : `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

/**
 * The options of a request for a target of `platform` (`what`: the point a restore reads, for
 * the message), checked against the platform's own strict schema. An option of other platforms
 * is refused naming them: "snapshots apply to LXD instances, ..., not to docker targets",
 * "\"pool\" applies to lxd and lxd-volume points, not to docker:web".
 */
export function platformOptions(
  kind: OptionKind,
  platform: Platform,
  options: Record<string, unknown>,
  what: string,
): Record<string, unknown> {
  const schema = optionsOf(specOf(platform), kind);
  const foreign = Object.keys(options).filter((field) => !(field in schema.shape));
  if (foreign.length > 0) {
    // Fields taken by the same platforms are named together.
    const groups = new Map<string, string[]>();
    for (const field of foreign) {
      const specs = PLATFORM_SPECS.filter((s) => field in optionsOf(s, kind).shape);
      const takers =
        kind === 'backup'
          ? listed(specs.map((s) => `${s.noun}s`))
          : `${listed(specs.map((s) => s.name))} points`;
      groups.set(takers, [...(groups.get(takers) ?? []), field]);
    }
    const refusals = [...groups].map(([takers, fields]) =>
      kind === 'backup'
        ? `${listed(fields)} apply to ${takers}`
        : `${listed(fields.map((f) => `"${f}"`))} ${fields.length > 1 ? 'apply' : 'applies'} to ${takers}`,
    );
    throw new ValidationError(
      `${refusals.join('; ')}, not to ${kind === 'backup' ? `${platform} targets` : what}`,
    );
  }
  const parsed = parseBody(schema, options) as Record<string, unknown>;
  return Object.fromEntries(Object.entries(parsed).filter(([, v]) => v !== undefined));
}
