/**
 * What a docker recovery point's metadata holds, and how a container's inspect JSON becomes the
 * body of `POST /containers/create` for its restored copy. Pure functions: no dockerd calls.
 *
 * The restored container must not collide with the original, which may still be running beside
 * it: it gets new volumes (`<new name>_<old volume>`), no hostname, IP or MAC of its own choosing,
 * no network alias that names the original, and (when the original still holds them) no host
 * ports. Everything else that shapes behaviour is carried over.
 */
import { DriverError } from '../../../kernel/errors';
import type { ReadPath } from './host-tree';

export const METADATA_FORMAT = 'stowage.docker/1';

/** One named volume the container mounted, as recorded at backup time. */
export interface VolumeRecord {
  name: string;
  destination: string;
  driver: string;
  labels: Record<string, string>;
  options: Record<string, string>;
  /**
   * How the backup read it: on the host as a tree stream (kind `tree`, with its index), or
   * through dockerd's archive API as a tar (kind `volume-tar`). Absent in older points (tar).
   */
  read?: ReadPath;
}

/** How the backup treated the running container (BackupOptions.consistency). */
export type Consistency = 'live' | 'pause' | 'stop';

/** A bind-mounted host directory captured with `includeBinds`, as stream `bind/<index>`. */
export interface BindRecord {
  index: number;
  /** The host directory. A restore never writes to it. */
  source: string;
  /** Where the container sees it. */
  destination: string;
  readOnly: boolean;
  /** As VolumeRecord.read (a tree stream, or a `bind-tar`). */
  read?: ReadPath;
}

/** A hook as run around the backup (see hooks.ts). */
export interface HookRecordJson {
  phase: 'pre' | 'post';
  command: string[];
  exitCode: number | null;
  durationMs: number;
  outputTail: string;
  error?: string;
}

export interface DockerBackupMetadata {
  format: typeof METADATA_FORMAT;
  /** The container's name without the leading `/`. */
  name: string;
  /** The full `GET /containers/{id}/json` answer at backup time. */
  container: InspectJson;
  /** The committed image as saved in the `image` stream (`stowage/<name>:<id>`). */
  image: string;
  imageId: string;
  /**
   * The earlier point whose `image` stream this one took whole, the container's writable layer
   * being unchanged since (layer.ts); `image` and `imageId` are then that point's.
   */
  imageFrom?: string;
  /** `Config.Image` of the container: the image it was created from. */
  originalImage: string;
  volumes: VolumeRecord[];
  /** Whether it was running when the backup began (before any stop or pause of its own). */
  wasRunning: boolean;
  /** Absent in points made before the option existed: those were `live`. */
  consistency?: Consistency;
  /** Bind-mounted directories captured (only with includeBinds); absent or empty otherwise. */
  binds?: BindRecord[];
  hooks?: HookRecordJson[];
  label?: string;
}

/** The parts of an inspect answer this driver reads; the rest is carried along untouched. */
export interface InspectJson {
  Id: string;
  Name: string;
  State?: { Status?: string; Running?: boolean; Paused?: boolean };
  Config?: Record<string, unknown> & { Image?: string };
  HostConfig?: Record<string, unknown> & {
    Binds?: string[] | null;
    Mounts?: Array<Record<string, unknown>> | null;
    PortBindings?: Record<string, Array<{ HostIp?: string; HostPort?: string }> | null> | null;
    NetworkMode?: string;
  };
  Mounts?: InspectMount[];
  NetworkSettings?: { Networks?: Record<string, { Aliases?: string[] | null } | null> | null };
  [key: string]: unknown;
}

export interface InspectMount {
  Type?: string;
  Name?: string;
  Source?: string;
  Destination?: string;
  Driver?: string;
  RW?: boolean;
}

/** Narrows a manifest's metadata; throws DriverError when it is not a docker backup's. */
export function parseMetadata(raw: Record<string, unknown>): DockerBackupMetadata {
  const m = raw as Partial<DockerBackupMetadata>;
  const ok =
    m.format === METADATA_FORMAT &&
    typeof m.name === 'string' &&
    typeof m.image === 'string' &&
    typeof m.wasRunning === 'boolean' &&
    Array.isArray(m.volumes) &&
    !!m.container &&
    typeof m.container.Id === 'string';
  if (!ok) {
    throw new DriverError(
      `the recovery point's metadata is not a docker container backup (format ${String(m.format)}, ` +
        `expected ${METADATA_FORMAT}); restore it with the driver of the platform that made it`,
    );
  }
  return m as DockerBackupMetadata;
}

/** The name a restored copy of `volume` gets when the container is restored as `container`. */
export function restoredVolumeName(container: string, volume: string): string {
  return `${container}_${volume}`;
}

/**
 * Host ports the container publishes (`PortBindings[*][*].HostPort`, empty = random, skipped).
 */
export function publishedHostPorts(hostConfig: InspectJson['HostConfig']): Set<string> {
  const ports = new Set<string>();
  for (const bindings of Object.values(hostConfig?.PortBindings ?? {})) {
    for (const b of bindings ?? []) if (b.HostPort) ports.add(b.HostPort);
  }
  return ports;
}

export interface CreatePlan {
  /** The body of `POST /containers/create` (without `name`). */
  body: Record<string, unknown>;
  /** Networks beyond the first to connect before start (API 1.41 takes one at create). */
  extraNetworks: Array<{ network: string; aliases: string[] }>;
}

export interface CreatePlanOptions {
  /** The image reference the restored container runs (the loaded committed image). */
  image: string;
  /** Original volume name → restored volume name. */
  volumes: ReadonlyMap<string, string>;
  /**
   * Leave out the PortBindings of the ports `ports` does not remap (the original still holds
   * those host ports).
   */
  dropPortBindings: boolean;
  /** Container port (`80/tcp`) → host port, `''` to drop it (RestoreOptions.ports, checked). */
  ports?: Readonly<Record<string, string>>;
  /** Attach to this network alone instead of the recorded ones (RestoreOptions.network). */
  network?: string;
  /**
   * Bind destination → volume that replaces the host directory there (restored bind data).
   * Binds not listed stay references to their host paths.
   */
  bindVolumes?: ReadonlyMap<string, string>;
}

const CONFIG_KEYS = [
  'Cmd',
  'Entrypoint',
  'Env',
  'Labels',
  'ExposedPorts',
  'WorkingDir',
  'User',
  'Tty',
  'OpenStdin',
  'StdinOnce',
  'AttachStdin',
  'AttachStdout',
  'AttachStderr',
  'StopSignal',
  'StopTimeout',
  'Healthcheck',
] as const;

const HOST_CONFIG_KEYS = [
  'RestartPolicy',
  'NetworkMode',
  'Memory',
  'MemorySwap',
  'MemoryReservation',
  'NanoCpus',
  'CpuShares',
  'CpuQuota',
  'CpuPeriod',
  'CapAdd',
  'CapDrop',
  'ExtraHosts',
  'LogConfig',
  'Init',
  'Privileged',
  'Tmpfs',
  'ShmSize',
  'Dns',
  'DnsSearch',
  'DnsOptions',
  'SecurityOpt',
  'Sysctls',
  'Ulimits',
] as const;

/** Networks whose endpoints take no user aliases and need no explicit endpoint config. */
const BUILTIN_NETWORKS = new Set(['bridge', 'host', 'none', 'default']);

/** The user-defined networks the container is attached to or names in NetworkMode. */
export function userNetworks(inspect: InspectJson): string[] {
  const names = new Set(Object.keys(inspect.NetworkSettings?.Networks ?? {}));
  const mode = inspect.HostConfig?.NetworkMode;
  if (mode && !mode.startsWith('container:')) names.add(mode);
  return [...names].filter((n) => !BUILTIN_NETWORKS.has(n));
}

function pick(source: Record<string, unknown> | undefined, keys: readonly string[]) {
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    const value = source?.[key];
    if (value !== undefined && value !== null) out[key] = value;
  }
  return out;
}

/** `src:dst[:opts]` with `src` a volume name (not an absolute host path) gets the new name. */
function remapBind(bind: string, volumes: ReadonlyMap<string, string>): string {
  const colon = bind.indexOf(':');
  if (colon <= 0) return bind;
  const source = bind.slice(0, colon);
  if (source.startsWith('/')) return bind;
  const renamed = volumes.get(source);
  return renamed === undefined ? bind : renamed + bind.slice(colon);
}

type PortBindings = NonNullable<NonNullable<InspectJson['HostConfig']>['PortBindings']>;

/**
 * The recorded bindings (all, or none with dropPortBindings) of ports not remapped, plus each
 * remapped port on its new host port, on the host addresses it was bound to.
 */
function planPortBindings(
  inspect: InspectJson,
  options: CreatePlanOptions,
): PortBindings | undefined {
  const recorded = inspect.HostConfig?.PortBindings;
  const ports = options.ports ?? {};
  if (!recorded && Object.keys(ports).length === 0) return undefined;
  const out: PortBindings = {};
  if (!options.dropPortBindings) {
    for (const [port, bindings] of Object.entries(recorded ?? {})) {
      if (!(port in ports)) out[port] = bindings;
    }
  }
  for (const [port, hostPort] of Object.entries(ports)) {
    if (hostPort === '') continue;
    const hostIps = [...new Set((recorded?.[port] ?? []).map((b) => b.HostIp ?? ''))];
    out[port] = (hostIps.length > 0 ? hostIps : ['']).map((HostIp) => ({
      HostIp,
      HostPort: hostPort,
    }));
  }
  return out;
}

/** Builds the create body for a copy of `inspect` that coexists with the original. */
export function planCreate(inspect: InspectJson, options: CreatePlanOptions): CreatePlan {
  const config: Record<string, unknown> = {
    ...pick(inspect.Config, CONFIG_KEYS),
    Image: options.image,
  };
  const hostConfig: Record<string, unknown> = pick(inspect.HostConfig, HOST_CONFIG_KEYS);

  const bindVolumes = options.bindVolumes ?? new Map<string, string>();
  // A host path bound at a destination whose data was restored into a volume is dropped here
  // and mounted as that volume below.
  const replacedBind = (bind: string) =>
    bind.startsWith('/') && bindVolumes.has(bind.split(':')[1] ?? '');
  const binds = (inspect.HostConfig?.Binds ?? [])
    .filter((b) => !replacedBind(b))
    .map((b) => remapBind(b, options.volumes));
  if (binds.length > 0) hostConfig.Binds = binds;

  const mounts: Array<Record<string, unknown>> = (inspect.HostConfig?.Mounts ?? [])
    .filter((m) => !(m.Type === 'bind' && bindVolumes.has(String(m.Target ?? ''))))
    .map((m) => {
      const source = typeof m.Source === 'string' ? m.Source : undefined;
      if (m.Type !== 'volume' || source === undefined) return { ...m };
      return { ...m, Source: options.volumes.get(source) ?? source };
    });
  for (const [destination, volume] of bindVolumes) {
    const original = (inspect.Mounts ?? []).find(
      (m) => m.Type === 'bind' && m.Destination === destination,
    );
    mounts.push({
      Type: 'volume',
      Source: volume,
      Target: destination,
      ReadOnly: original?.RW === false,
    });
  }
  // Volumes neither in Binds nor in Mounts (the image's VOLUME, `-v /path`) were anonymous; their
  // restored copies are named, so they must be mounted explicitly or dockerd makes empty ones.
  const covered = new Set<string>([
    ...binds.map((b) => b.split(':')[1] ?? ''),
    ...mounts.map((m) => String(m.Target ?? '')),
  ]);
  for (const m of inspect.Mounts ?? []) {
    if (m.Type !== 'volume' || !m.Name || !m.Destination || covered.has(m.Destination)) continue;
    const renamed = options.volumes.get(m.Name);
    if (renamed === undefined) continue;
    mounts.push({
      Type: 'volume',
      Source: renamed,
      Target: m.Destination,
      ReadOnly: m.RW === false,
    });
  }
  if (mounts.length > 0) hostConfig.Mounts = mounts;

  const portBindings = planPortBindings(inspect, options);
  if (portBindings) hostConfig.PortBindings = portBindings;
  const remapped = Object.entries(options.ports ?? {}).filter(([, hostPort]) => hostPort !== '');
  if (remapped.length > 0) {
    const exposed = config.ExposedPorts;
    config.ExposedPorts = {
      ...(exposed && typeof exposed === 'object' ? exposed : {}),
      ...Object.fromEntries(remapped.map(([port]) => [port, {}])),
    };
  }

  // Aliases minus the original's short id and name: dockerd adds the new container's own, and
  // keeping the original's would make its DNS name answer with two addresses.
  const shortId = inspect.Id.slice(0, 12);
  const originalName = inspect.Name.replace(/^\//, '');
  const networks = Object.entries(inspect.NetworkSettings?.Networks ?? {})
    .filter(([network]) => !BUILTIN_NETWORKS.has(network))
    .map(([network, endpoint]) => ({
      network,
      aliases: (endpoint?.Aliases ?? []).filter((a) => a !== shortId && a !== originalName),
    }));
  if (options.network !== undefined) {
    // One network instead of the recorded ones: it takes every alias they gave the container.
    hostConfig.NetworkMode = options.network;
    const body: Record<string, unknown> = { ...config, HostConfig: hostConfig };
    const aliases = [...new Set(networks.flatMap((n) => n.aliases))];
    if (!BUILTIN_NETWORKS.has(options.network)) {
      body.NetworkingConfig = {
        EndpointsConfig: { [options.network]: aliases.length > 0 ? { Aliases: aliases } : {} },
      };
    }
    return { body, extraNetworks: [] };
  }
  const mode = String(inspect.HostConfig?.NetworkMode ?? '');
  const primary = networks.find((n) => n.network === mode);
  const body: Record<string, unknown> = { ...config, HostConfig: hostConfig };
  if (primary) {
    body.NetworkingConfig = {
      EndpointsConfig: {
        [primary.network]: primary.aliases.length > 0 ? { Aliases: primary.aliases } : {},
      },
    };
  }
  return { body, extraNetworks: networks.filter((n) => n !== primary) };
}
