/**
 * What a restore may change about the container it rebuilds (RestoreOptions.volumes, .network,
 * .ports, .volume): each option checked against the recovery point before anything is created,
 * so a typo fails with the names that would have been valid instead of half a restore.
 * Pure functions: no dockerd calls.
 */
import { DriverError } from '../../../kernel/errors';
import { isValidName } from './engine';
import {
  restoredVolumeName,
  type DockerBackupMetadata,
  type InspectJson,
  type VolumeRecord,
} from './config';

/** The point's volume names for messages (`(none)` when it has none). */
function pointVolumes(meta: DockerBackupMetadata): string {
  return meta.volumes.map((v) => v.name).join(', ') || '(none)';
}

/** The recorded volume `name`; DriverError naming the point's volumes when it has no such one. */
export function pointVolume(meta: DockerBackupMetadata, name: string): VolumeRecord {
  const record = meta.volumes.find((v) => v.name === name);
  if (!record) {
    throw new DriverError(
      `the recovery point has no volume ${name}; its volumes are: ${pointVolumes(meta)}`,
    );
  }
  return record;
}

/**
 * Original volume name → the name its restored copy gets: `remap[original]` when given, else
 * `fallback(original)`. Refuses unknown originals, invalid names and two volumes sent to one name.
 */
export function restoredVolumeNames(
  meta: DockerBackupMetadata,
  remap: Readonly<Record<string, string>> | undefined,
  fallback: (original: string) => string,
): Map<string, string> {
  for (const original of Object.keys(remap ?? {})) pointVolume(meta, original);
  const names = new Map(meta.volumes.map((v) => [v.name, remap?.[v.name] ?? fallback(v.name)]));
  const seen = new Map<string, string>();
  for (const [original, renamed] of names) {
    if (!isValidName(renamed)) {
      throw new DriverError(
        `"${renamed}" (for volume ${original}) is not a valid docker volume name; use letters, ` +
          'digits, "_", "." and "-", starting with a letter or digit',
      );
    }
    const other = seen.get(renamed);
    if (other !== undefined) {
      throw new DriverError(
        `volumes ${other} and ${original} would both be restored as ${renamed}; give each its own name`,
      );
    }
    seen.set(renamed, original);
  }
  return names;
}

/** `<container>_<volume>` unless remapped: the names a restore under a new name creates. */
export function newVolumeNames(
  meta: DockerBackupMetadata,
  container: string,
  remap: Readonly<Record<string, string>> | undefined,
): Map<string, string> {
  return restoredVolumeNames(meta, remap, (v) => restoredVolumeName(container, v));
}

/** The container ports the point records: published (PortBindings) or only exposed. */
export function recordedPorts(inspect: InspectJson): string[] {
  const exposed = inspect.Config?.ExposedPorts;
  return [
    ...new Set([
      ...Object.keys(inspect.HostConfig?.PortBindings ?? {}),
      ...Object.keys(exposed && typeof exposed === 'object' ? exposed : {}),
    ]),
  ].sort();
}

/**
 * RestoreOptions.ports checked and normalised: keys `80` become `80/tcp` (dockerd's default
 * protocol), values are a host port 1-65535 or `''` (drop). Unknown container ports fail with the
 * recorded ones.
 */
export function checkPorts(
  inspect: InspectJson,
  ports: Readonly<Record<string, string>> | undefined,
): Record<string, string> | undefined {
  if (ports === undefined) return undefined;
  const recorded = recordedPorts(inspect);
  const out: Record<string, string> = {};
  for (const [raw, hostPort] of Object.entries(ports)) {
    const port = raw.includes('/') ? raw : `${raw}/tcp`;
    if (!recorded.includes(port)) {
      throw new DriverError(
        `container port ${raw} is not one the container published or exposed; ` +
          `its ports are: ${recorded.join(', ') || '(none)'}`,
      );
    }
    const n = Number(hostPort);
    if (hostPort !== '' && !(/^\d+$/.test(hostPort) && n >= 1 && n <= 65535)) {
      throw new DriverError(
        `host port "${hostPort}" for ${port} is not a port number (1-65535), nor "" to drop it`,
      );
    }
    out[port] = hostPort;
  }
  return out;
}

/** Refuses option combinations a single-volume restore cannot honour. */
export function checkSingleVolumeOptions(options: {
  volumes?: Record<string, string>;
  network?: string;
  ports?: Record<string, string>;
}): void {
  const extra = (['volumes', 'network', 'ports'] as const).filter((k) => options[k] !== undefined);
  if (extra.length > 0) {
    throw new DriverError(
      `a single-volume restore creates no container, so ${extra.join(', ')} cannot apply; ` +
        'leave them out, or restore the whole container',
    );
  }
}
