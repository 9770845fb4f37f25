/**
 * The restore form's model: what the user typed, checked field by field with the very rules the
 * API applies (the platform registry's name rules and restore option schemas from the shared
 * kernel), so a bad value gets its message next to its field before anything is sent; and the
 * POST /restores body it becomes. An API refusal that names a field is put next to that field.
 */
import { isPlatform, specOf } from '../../kernel/platforms';

export type RestoreMode = 'name' | 'inPlace' | 'agent';

export interface RestoreForm {
  mode: RestoreMode;
  /** The new name (mode name), or the name on the other agent (mode agent; empty: the same). */
  name: string;
  /** Mode agent: the agent (site) to restore on. */
  agent: string;
  /** Docker: a volume of the point → its new name (empty: the default). */
  volumes: Record<string, string>;
  /** Docker: the network to attach instead. */
  network: string;
  /** Docker: `80/tcp=8081 443=` (container port = host port, empty drops it). */
  ports: string;
  /** LXD: the storage pool. */
  pool: string;
  /** LXD: the power state afterwards (empty: as at backup time). */
  state: '' | 'running' | 'stopped';
}

export type FieldErrors = Partial<Record<string, string>>;

export const emptyForm = (): RestoreForm => ({
  mode: 'name',
  name: '',
  agent: '',
  volumes: {},
  network: '',
  ports: '',
  pool: '',
  state: '',
});

/** `docker:web` → `['docker', 'web']` (a target key never holds `@AGENT`). */
export function splitTarget(target: string): [string, string] {
  const i = target.indexOf(':');
  return [target.slice(0, i), target.slice(i + 1)];
}

/** The platform options the form has fields for (docker: remaps; lxd: pool, state). */
export function optionFields(platform: string): string[] {
  switch (platform) {
    case 'docker':
      return ['volumes', 'network', 'ports'];
    case 'lxd':
      return ['pool', 'state'];
    case 'lxd-volume':
      return ['pool'];
    default:
      return [];
  }
}

function parsePorts(text: string): { ports: Record<string, string>; bad?: string } {
  const ports: Record<string, string> = {};
  for (const pair of text.split(/[\s,]+/).filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq <= 0)
      return { ports, bad: `write each port as CONTAINER=HOST, e.g. 80/tcp=8081 (got "${pair}")` };
    ports[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return { ports };
}

/** The options object for the point's platform (only what was filled in). */
function optionsOf(
  form: RestoreForm,
  platform: string,
): { options: Record<string, unknown>; errors: FieldErrors } {
  const fields = optionFields(platform);
  const options: Record<string, unknown> = {};
  const errors: FieldErrors = {};
  if (fields.includes('volumes')) {
    const volumes = Object.fromEntries(
      Object.entries(form.volumes)
        .filter(([, v]) => v.trim() !== '')
        .map(([k, v]) => [k, v.trim()]),
    );
    if (Object.keys(volumes).length) options.volumes = volumes;
  }
  if (fields.includes('network') && form.network.trim()) options.network = form.network.trim();
  if (fields.includes('ports') && form.ports.trim()) {
    const { ports, bad } = parsePorts(form.ports);
    if (bad) errors.ports = bad;
    else options.ports = ports;
  }
  if (fields.includes('pool') && form.pool.trim()) options.pool = form.pool.trim();
  if (fields.includes('state') && form.state) options.state = form.state;
  return { options, errors };
}

/** Every field's problem, by field (`name`, `agent`, `volumes.<old>`, `network`, `ports`, ...). */
export function validate(form: RestoreForm, target: string): FieldErrors {
  const [platform] = splitTarget(target);
  const errors: FieldErrors = {};
  const name = form.name.trim();
  if (form.mode === 'name' && name === '') {
    errors.name = platform === 'path' ? 'give the destination path' : 'give the new name';
  }
  if (form.mode === 'agent' && form.agent === '') errors.agent = 'choose the agent to restore on';
  if (name !== '' && form.mode !== 'inPlace' && isPlatform(platform)) {
    try {
      specOf(platform).checkName?.(name);
    } catch (err) {
      errors.name = (err as Error).message;
    }
  }
  const { options, errors: optionErrors } = optionsOf(form, platform);
  Object.assign(errors, optionErrors);
  if (isPlatform(platform)) {
    const parsed = specOf(platform).restoreOptions.safeParse(options);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        const [first, second] = issue.path.map(String);
        const key =
          first === 'volumes' && second !== undefined ? `volumes.${second}` : (first ?? 'form');
        errors[key] ??= issue.message;
      }
    }
  }
  return errors;
}

/** The POST /restores body (call `validate` first). */
export function toBody(
  form: RestoreForm,
  recoveryPointId: string,
  target: string,
): Record<string, unknown> {
  const [platform, sourceName] = splitTarget(target);
  const { options } = optionsOf(form, platform);
  const name = form.name.trim();
  const body: Record<string, unknown> = { recoveryPointId, ...options };
  if (form.mode === 'inPlace') body.inPlace = true;
  if (form.mode === 'name') body.name = name;
  if (form.mode === 'agent') body.to = `${platform}:${name || sourceName}@${form.agent}`;
  return body;
}

/**
 * Which field an API refusal is about: a name that is taken or refused goes next to the name
 * (or the agent, for a restore elsewhere), an option next to that option; else the whole form.
 */
export function fieldOfRefusal(error: string, message: string, form: RestoreForm): string {
  // A body problem reads `bad request body: volumes.data: not a valid Docker name`.
  const m = /\b(volumes|network|ports|pool|state)(?:\.([^:\s]+))?:/.exec(message);
  if (m) return m[1] === 'volumes' && m[2] ? `volumes.${m[2]}` : m[1]!;
  if (error === 'AgentUnavailable') return form.mode === 'agent' ? 'agent' : 'form';
  if (error === 'NameTaken' || /\bname\b/i.test(message)) {
    return form.mode === 'inPlace' ? 'form' : 'name';
  }
  return 'form';
}

/** One sentence saying what the restore will do, shown before it runs. */
export function describe(form: RestoreForm, recoveryPointId: string, target: string): string {
  const [platform, sourceName] = splitTarget(target);
  const name = form.name.trim();
  const where =
    form.mode === 'inPlace'
      ? `replaces ${target} (the original) with the point's contents`
      : form.mode === 'agent'
        ? `creates ${platform}:${name || sourceName} on agent ${form.agent || '?'}`
        : `creates ${platform}:${name || '?'} beside the original, which is not touched`;
  const { options } = optionsOf(form, platform);
  const extra = Object.entries(options).map(
    ([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`,
  );
  return `Restoring ${recoveryPointId} ${where}${extra.length ? `; ${extra.join('; ')}` : ''}.`;
}
