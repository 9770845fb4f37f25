/**
 * What a Docker Compose project's recovery point holds, and the pure rules that order and rename
 * its parts. No dockerd calls here.
 *
 * A project is what `docker compose` leaves on the engine: containers, volumes and networks
 * labelled `com.docker.compose.project=<project>`. No compose file is needed to back it up or to
 * restore it: every container's inspect JSON already holds its compose labels.
 *
 * Restoring under a new project name `N` renames what carries the old project's prefix:
 * networks and volumes `<old>_<suffix>` → `N_<suffix>`, containers `<old>-<service>-<n>` (Compose
 * v2) or `<old>_<service>_<n>` (v1) → `N-...`/`N_...`; anything without the prefix gets `N_`
 * (volumes) or `N-` (containers) in front. The project label is rewritten to `N`; the
 * working-dir and config-files labels are left as they were.
 */
import { DriverError } from '../../../kernel/errors';
import type { Consistency, DockerBackupMetadata, HookRecordJson, InspectJson } from './config';
import type { VolumeRecord } from './config';

export const COMPOSE_METADATA_FORMAT = 'stowage.docker-compose/1';

export const PROJECT_LABEL = 'com.docker.compose.project';
export const SERVICE_LABEL = 'com.docker.compose.service';
export const NUMBER_LABEL = 'com.docker.compose.container-number';
export const DEPENDS_ON_LABEL = 'com.docker.compose.depends_on';
export const ONEOFF_LABEL = 'com.docker.compose.oneoff';

/** Compose's own rule for project names (`docker compose -p`). */
const PROJECT_RE = /^[a-z0-9][a-z0-9_-]*$/;

export function isValidProjectName(name: string): boolean {
  return PROJECT_RE.test(name);
}

/** A network the project created (labelled with its name), as recorded at backup time. */
export interface NetworkRecord {
  name: string;
  driver: string;
  options: Record<string, string>;
  labels: Record<string, string>;
  internal: boolean;
  attachable: boolean;
  enableIPv6: boolean;
  /**
   * IPAM driver and its options only. Subnets, gateways and ranges are left out: they belong to
   * this host's address plan, and a copy beside the original would overlap its pool.
   */
  ipam: { driver: string; options: Record<string, string> };
}

/** One `depends_on` entry (`service:condition:restart` in the label; older Compose omits parts). */
export interface DependsOn {
  service: string;
  condition: string;
  restart: boolean;
}

/** One container of the project: what a single-container backup records, plus its place in it. */
export interface ComposeContainerRecord extends DockerBackupMetadata {
  service: string;
  containerNumber: number;
  dependsOn: DependsOn[];
  /** Its image (and bind) streams are `<streamPrefix>image`, `<streamPrefix>bind/<i>`. */
  streamPrefix: string;
}

export interface ComposeBackupMetadata {
  format: typeof COMPOSE_METADATA_FORMAT;
  project: string;
  networks: NetworkRecord[];
  /** In dependency order (what they depend on first), the order they are restored and started. */
  containers: ComposeContainerRecord[];
  /** Every volume the containers mount, once; stream `volume/<name>` each. */
  volumes: VolumeRecord[];
  consistency: Consistency;
  /** The container the hooks ran in (the first in dependency order); absent without hooks. */
  hookContainer?: string;
  hooks: HookRecordJson[];
  label?: string;
}

export function parseComposeMetadata(raw: Record<string, unknown>): ComposeBackupMetadata {
  const m = raw as Partial<ComposeBackupMetadata>;
  const ok =
    m.format === COMPOSE_METADATA_FORMAT &&
    typeof m.project === 'string' &&
    Array.isArray(m.networks) &&
    Array.isArray(m.volumes) &&
    Array.isArray(m.containers) &&
    m.containers.every((c) => typeof c.service === 'string' && typeof c.image === 'string');
  if (!ok) {
    throw new DriverError(
      `the recovery point's metadata is not a docker-compose project backup (format ${String(m.format)}, ` +
        `expected ${COMPOSE_METADATA_FORMAT}); restore it with the driver of the platform that made it`,
    );
  }
  return m as ComposeBackupMetadata;
}

/** Parses `com.docker.compose.depends_on`; absent or empty means no dependencies. */
export function parseDependsOn(label: string | undefined): DependsOn[] {
  if (!label) return [];
  return label
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '')
    .map((entry) => {
      const [service = '', condition, restart] = entry.split(':');
      return {
        service,
        condition: condition || 'service_started',
        restart: restart === 'true',
      };
    })
    .filter((d) => d.service !== '');
}

interface Orderable {
  service: string;
  containerNumber: number;
  dependsOn: readonly DependsOn[];
}

/**
 * Dependencies first (Kahn's algorithm over services), ties broken by service name, then by
 * container number. Dependencies on services outside the project are ignored; services in a
 * cycle follow in service name order.
 */
export function dependencyOrder<T extends Orderable>(
  items: readonly T[],
  depsOf: (item: T) => readonly DependsOn[] = (item) => item.dependsOn,
): T[] {
  const services = [...new Set(items.map((i) => i.service))].sort();
  const needs = new Map<string, Set<string>>();
  for (const service of services) needs.set(service, new Set());
  for (const item of items) {
    for (const dep of depsOf(item)) {
      if (needs.has(dep.service) && dep.service !== item.service) {
        needs.get(item.service)?.add(dep.service);
      }
    }
  }
  const ordered: string[] = [];
  const remaining = new Set(services);
  while (remaining.size > 0) {
    const ready = [...remaining].filter((s) =>
      [...(needs.get(s) ?? [])].every((d) => !remaining.has(d)),
    );
    const next = ready.length > 0 ? ready : [...remaining]; // a cycle: name order
    const first = next.sort()[0] as string;
    ordered.push(first);
    remaining.delete(first);
  }
  const rank = new Map(ordered.map((s, i) => [s, i]));
  return [...items].sort(
    (a, b) =>
      (rank.get(a.service) ?? 0) - (rank.get(b.service) ?? 0) ||
      a.containerNumber - b.containerNumber,
  );
}

/** A network or volume name under the new project: `<old>_x` → `<new>_x`, else `<new>_<name>`. */
export function renameResource(original: string, oldProject: string, newProject: string): string {
  const prefix = `${oldProject}_`;
  return original.startsWith(prefix)
    ? `${newProject}_${original.slice(prefix.length)}`
    : `${newProject}_${original}`;
}

/** A container name under the new project (Compose v2 `-`, v1 `_` separators). */
export function renameContainer(original: string, oldProject: string, newProject: string): string {
  for (const sep of ['-', '_']) {
    if (original.startsWith(oldProject + sep)) {
      return newProject + original.slice(oldProject.length);
    }
  }
  return `${newProject}-${original}`;
}

/** Rewrites the project label (only that one) in a label map. */
export function relabel(
  labels: Record<string, string> | null | undefined,
  project: string,
): Record<string, string> {
  const out = { ...(labels ?? {}) };
  if (out[PROJECT_LABEL] !== undefined) out[PROJECT_LABEL] = project;
  return out;
}

/**
 * What a `container:<id or name>` network mode (`network_mode: service:x`) points at, looked up
 * in `byRef` (original container id and name → value); a short id prefix matches too.
 */
export function networkModeParent<T>(
  inspect: InspectJson,
  byRef: ReadonlyMap<string, T>,
): T | undefined {
  const mode = inspect.HostConfig?.NetworkMode;
  if (!mode?.startsWith('container:')) return undefined;
  const ref = mode.slice('container:'.length).replace(/^\//, '');
  if (!ref) return undefined;
  const exact = byRef.get(ref);
  if (exact !== undefined) return exact;
  if (!/^[0-9a-f]{12,}$/.test(ref)) return undefined;
  return [...byRef].find(([key]) => key.startsWith(ref))?.[1];
}

/**
 * The inspect JSON of a container as it must look under the new project: project label
 * rewritten, attached to the renamed networks, with the service name among its aliases there,
 * and a `container:` network mode pointing at the restored copy of the member it names
 * (`containers`: original id and name → new container name). Id and Name stay the original's:
 * planCreate drops aliases naming the original, and the port check looks the original up by Id.
 */
export function inspectForProject(
  inspect: InspectJson,
  service: string,
  project: string,
  networks: ReadonlyMap<string, string>,
  containers: ReadonlyMap<string, string> = new Map(),
): InspectJson {
  const config = inspect.Config ?? {};
  const labels = relabel(config.Labels as Record<string, string> | undefined, project);
  const parent = networkModeParent(inspect, containers);
  const rawMode = inspect.HostConfig?.NetworkMode;
  const mode = parent !== undefined ? `container:${parent}` : rawMode;
  const attached = Object.entries(inspect.NetworkSettings?.Networks ?? {}).map(
    ([network, endpoint]) => {
      const renamed = networks.get(network);
      if (renamed === undefined) return [network, endpoint] as const;
      const aliases = endpoint?.Aliases ?? [];
      const withService = aliases.includes(service) ? aliases : [service, ...aliases];
      return [renamed, { ...(endpoint ?? {}), Aliases: withService }] as const;
    },
  );
  return {
    ...inspect,
    Config: { ...config, Labels: labels },
    HostConfig: {
      ...(inspect.HostConfig ?? {}),
      ...(mode !== undefined ? { NetworkMode: networks.get(mode) ?? mode } : {}),
    },
    NetworkSettings: {
      ...(inspect.NetworkSettings ?? {}),
      Networks: Object.fromEntries(attached),
    },
  };
}
