/**
 * What the backup and restore of a whole LXD server (`lxd-server:AGENT`) share: the metadata a
 * recovery point records, how the server's definitions (projects, storage pools, networks,
 * profiles, images) are read, and the engine of each project.
 *
 * A server point is the server's definitions as metadata plus one stream per image, custom
 * volume and instance, made and restored by the image, volume and instance code itself
 * (image.ts, volume-backup.ts, backup.ts and their restores): the server code only walks the
 * projects and renames the streams, `image/PROJECT/FINGERPRINT`, `volume/PROJECT/POOL/NAME`,
 * `instance/PROJECT/NAME`.
 *
 * Images are streamed whole (not only their fingerprints and aliases): a server restored onto an
 * empty daemon with no image server in reach (the case this exists for) could otherwise launch
 * nothing new, and the chunk store deduplicates them against the instances' root file systems.
 */
import { LxdClient } from './client';
import { isNotFound, translate } from './errors';
import type { Engine, LxdBackupMetadata } from './instance';
import type { LxdVolumeBackupMetadata } from './volume';

export const SERVER_METADATA_FORMAT = 'stowage-lxd-server/1';
export const IMAGE_KIND = 'lxd-image';

export interface LxdProject {
  name: string;
  description: string;
  config: Record<string, string>;
}

export interface LxdPoolDefinition {
  name: string;
  driver: string;
  description: string;
  config: Record<string, string>;
}

export interface LxdNetwork {
  name: string;
  type: string;
  description: string;
  managed: boolean;
  config: Record<string, string>;
}

export interface LxdProfileDefinition {
  project: string;
  name: string;
  description: string;
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
}

export interface LxdImageRecord {
  project: string;
  fingerprint: string;
  /** The stream holding the image file as LXD exports it. */
  stream: string;
  /** The export's Content-Type: a unified tarball, or multipart for a split image. */
  contentType: string;
  aliases: Array<{ name: string; description: string }>;
  properties: Record<string, string>;
  public: boolean;
  autoUpdate: boolean;
  type: string;
}

/** What a recovery point of a whole LXD server records besides its streams. */
export interface LxdServerBackupMetadata {
  format: typeof SERVER_METADATA_FORMAT;
  /** The agent whose server this is (`lxd-server:AGENT`). */
  server: string;
  lxdVersion?: string;
  projects: LxdProject[];
  pools: LxdPoolDefinition[];
  networks: Array<LxdNetwork & { project: string }>;
  profiles: LxdProfileDefinition[];
  images: LxdImageRecord[];
  /** Each custom volume's own point metadata, with the stream that holds its export. */
  volumes: Array<{ project: string; stream: string; metadata: LxdVolumeBackupMetadata }>;
  /** Each instance's own point metadata, with the stream that holds its export. */
  instances: Array<{ project: string; stream: string; metadata: LxdBackupMetadata }>;
  /** What vanished between listing and export (deleted meanwhile), so is not in the point. */
  vanished: string[];
}

export function imageStream(project: string, fingerprint: string): string {
  return `image/${project}/${fingerprint}`;
}

export function volumeStream(project: string, pool: string, volume: string): string {
  return `volume/${project}/${pool}/${volume}`;
}

export function instanceStream(project: string, name: string): string {
  return `instance/${project}/${name}`;
}

/** The same server seen through another project (every path carries `project=`). */
export function engineFor(engine: Engine, project: string): Engine {
  if (project === engine.project) return engine;
  return {
    client: new LxdClient({ socketPath: engine.socketPath, project }),
    socketPath: engine.socketPath,
    project,
    hostAccess: engine.hostAccess,
  };
}

/**
 * Whether a project has its own set of `feature` (profiles, networks, images,
 * storage.volumes); one without shares the default project's, which is listed once, there.
 */
export function hasOwn(project: LxdProject, feature: string): boolean {
  return project.name === 'default' || project.config[`features.${feature}`] === 'true';
}

/** Keys LXD sets itself, which a create request refuses or a restore must not carry over. */
function isVolatile(key: string): boolean {
  return key.startsWith('volatile.');
}

/**
 * A pool's config as it can be recreated on another daemon: without LXD's own `volatile.*` keys,
 * and without `source` when it is where LXD puts a pool by default (`…/storage-pools/NAME` for a
 * dir pool, `…/disks/NAME.img` for a loop file), so the new pool goes where that daemon keeps
 * its own, never into the old daemon's directory. A `source` the operator chose (a device, a
 * mount point) is kept: LXD refuses it if it is in use or, for dir, not empty.
 */
export function portablePoolConfig(pool: LxdPoolDefinition): Record<string, string> {
  const config: Record<string, string> = {};
  for (const [key, value] of Object.entries(pool.config ?? {})) {
    if (isVolatile(key)) continue;
    if (key === 'source' && isDefaultSource(pool.name, value)) continue;
    config[key] = value;
  }
  return config;
}

function isDefaultSource(pool: string, source: string): boolean {
  return source.endsWith(`/storage-pools/${pool}`) || source.endsWith(`/disks/${pool}.img`);
}

/** A network's or project's config without LXD's own keys. */
export function withoutVolatile(config: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(config ?? {}).filter(([k]) => !isVolatile(k)));
}

/** `GET path`, or undefined when LXD says it does not exist. */
export async function getOrNone<T>(
  engine: Engine,
  path: string,
  what: string,
): Promise<T | undefined> {
  try {
    return await engine.client.get<T>(path);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw translate(err, `reading ${what}`, engine.socketPath);
  }
}

/** `GET path` of a list, translated. */
export async function list<T>(engine: Engine, path: string, what: string): Promise<T[]> {
  try {
    return (await engine.client.get<T[] | null>(path)) ?? [];
  } catch (err) {
    throw translate(err, `listing ${what}`, engine.socketPath);
  }
}

export function projectPath(name: string): string {
  return `/1.0/projects/${encodeURIComponent(name)}`;
}

export function networkPath(name: string): string {
  return `/1.0/networks/${encodeURIComponent(name)}`;
}

export function profilePath(name: string): string {
  return `/1.0/profiles/${encodeURIComponent(name)}`;
}

export function imagePath(fingerprint: string): string {
  return `/1.0/images/${encodeURIComponent(fingerprint)}`;
}
