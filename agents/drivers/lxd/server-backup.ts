/**
 * Backup of a whole LXD server (`lxd-server:AGENT`): one recovery point whose metadata holds the
 * server's projects, storage pool definitions (driver, config, description), managed networks
 * and profiles, and whose streams are every image, every custom volume's export and every
 * instance's export, in that order, project by project (server.ts names them).
 *
 * The instances and volumes are backed up by the instance and volume code (backup.ts,
 * volume-backup.ts) with the options of the server backup (consistency, snapshots, optimized
 * storage): each instance is held (paused, stopped) only while its own export is made, and is
 * running after it if it ran. What is deleted between the listing and its export is recorded as
 * vanished rather than failing the whole server.
 */
import { TargetNotFound } from '../../../kernel/errors';
import type {
  BackupOptions,
  BackupOutcome,
  BackupSink,
  DriverContext,
  StoredStream,
} from '../../core/driver';
import { checkAborted } from '../../core/driver-streams';
import { backupInstance } from './backup';
import { exportImage, type LxdImage } from './image';
import type { Engine, LxdBackupMetadata, LxdInstance } from './instance';
import {
  SERVER_METADATA_FORMAT,
  engineFor,
  hasOwn,
  instanceStream,
  list,
  volumeStream,
  withoutVolatile,
  type LxdNetwork,
  type LxdPoolDefinition,
  type LxdProfileDefinition,
  type LxdProject,
  type LxdServerBackupMetadata,
} from './server';
import { listVolumes, type LxdVolumeBackupMetadata } from './volume';
import { backupVolume } from './volume-backup';

/**
 * A sink that stores the one stream a sub-backup writes under the server point's name for it
 * (`name`; undefined keeps the sub-backup's own) and counts its bytes.
 */
function renamed(
  sink: BackupSink,
  name: string | undefined,
  done: (s: StoredStream) => void,
): BackupSink {
  return {
    async writeStream(info, data) {
      const stored = await sink.writeStream({ ...info, name: name ?? info.name }, data);
      done(stored);
      return stored;
    },
  };
}

/**
 * A context whose byte estimate adds up the exports: each sub-backup announces only its own
 * size, and the job's progress wants the total so far.
 */
function summing(ctx: DriverContext, stored: () => number): DriverContext {
  return { ...ctx, expectBytes: (n) => ctx.expectBytes?.(stored() + n) };
}

export async function backupServer(
  engine: Engine,
  server: string,
  name: string,
  sink: BackupSink,
  ctx: DriverContext,
  options: BackupOptions = {},
): Promise<BackupOutcome> {
  if (name !== server) {
    throw new TargetNotFound(
      `lxd-server:${name} not found: this agent's LXD server is lxd-server:${server} (a server target is named after its agent)`,
    );
  }
  ctx.phase('reading server definitions');
  const info = await engine.client.get<{ environment?: { server_version?: string } }>('/1.0');
  const projects = (await list<LxdProject>(engine, '/1.0/projects?recursion=1', 'projects')).map(
    (p) => ({ name: p.name, description: p.description, config: withoutVolatile(p.config) }),
  );
  const pools = (
    await list<LxdPoolDefinition>(engine, '/1.0/storage-pools?recursion=1', 'storage pools')
  ).map((p) => ({ name: p.name, driver: p.driver, description: p.description, config: p.config }));
  const metadata: LxdServerBackupMetadata = {
    format: SERVER_METADATA_FORMAT,
    server,
    ...(info.environment?.server_version ? { lxdVersion: info.environment.server_version } : {}),
    projects,
    pools,
    networks: [],
    profiles: [],
    images: [],
    volumes: [],
    instances: [],
    vanished: [],
  };
  let storedBytes = 0;
  const sub = summing(ctx, () => storedBytes);
  const count = (s: StoredStream) => (storedBytes += s.size);

  for (const project of projects) {
    const at = engineFor(engine, project.name);
    if (hasOwn(project, 'networks')) {
      const networks = await list<LxdNetwork>(at, '/1.0/networks?recursion=1', 'networks');
      for (const n of networks.filter((n) => n.managed)) {
        metadata.networks.push({
          project: project.name,
          name: n.name,
          type: n.type,
          description: n.description,
          managed: true,
          config: withoutVolatile(n.config),
        });
      }
    }
    if (hasOwn(project, 'profiles')) {
      const profiles = await list<LxdProfileDefinition>(
        at,
        '/1.0/profiles?recursion=1',
        'profiles',
      );
      for (const p of profiles) {
        metadata.profiles.push({
          project: project.name,
          name: p.name,
          description: p.description,
          config: p.config ?? {},
          devices: p.devices ?? {},
        });
      }
    }
  }

  for (const project of projects.filter((p) => hasOwn(p, 'images'))) {
    const at = engineFor(engine, project.name);
    for (const image of await list<LxdImage>(at, '/1.0/images?recursion=1', 'images')) {
      checkAborted(ctx, `backup of lxd-server:${server}`);
      const record = await vanishes(
        () => exportImage(at, image, renamed(sink, undefined, count), sub),
        metadata,
        `image ${image.fingerprint}`,
      );
      if (record) metadata.images.push(record);
    }
  }

  for (const project of projects.filter((p) => hasOwn(p, 'storage.volumes'))) {
    const at = engineFor(engine, project.name);
    for (const { pool, volume } of await listVolumes(at)) {
      checkAborted(ctx, `backup of lxd-server:${server}`);
      const stream = volumeStream(project.name, pool.name, volume.name);
      ctx.phase(`volume ${project.name}/${pool.name}/${volume.name}`);
      const outcome = await vanishes(
        () =>
          backupVolume(at, `${pool.name}/${volume.name}`, renamed(sink, stream, count), sub, {
            ...(options.snapshots !== undefined ? { snapshots: options.snapshots } : {}),
            ...(options.optimizedStorage ? { optimizedStorage: true } : {}),
          }),
        metadata,
        `custom volume ${project.name}/${pool.name}/${volume.name}`,
      );
      if (outcome) {
        const volumeMetadata = outcome.metadata as unknown as LxdVolumeBackupMetadata;
        metadata.volumes.push({ project: project.name, stream, metadata: volumeMetadata });
      }
    }
  }

  for (const project of projects) {
    const at = engineFor(engine, project.name);
    const instances = await list<LxdInstance>(at, '/1.0/instances?recursion=1', 'instances');
    for (const instance of instances.sort((a, b) => a.name.localeCompare(b.name))) {
      checkAborted(ctx, `backup of lxd-server:${server}`);
      const stream = instanceStream(project.name, instance.name);
      ctx.phase(`instance ${project.name}/${instance.name}`);
      const outcome = await vanishes(
        () => backupInstance(at, instance.name, renamed(sink, stream, count), sub, options),
        metadata,
        `instance ${project.name}/${instance.name}`,
      );
      if (outcome) {
        const instanceMetadata = outcome.metadata as unknown as LxdBackupMetadata;
        metadata.instances.push({ project: project.name, stream, metadata: instanceMetadata });
      }
    }
  }

  ctx.phase('done');
  return {
    metadata: metadata as unknown as Record<string, unknown>,
    summary: {
      projects: metadata.projects.length,
      pools: metadata.pools.length,
      networks: metadata.networks.length,
      profiles: metadata.profiles.length,
      images: metadata.images.length,
      volumes: metadata.volumes.length,
      instances: metadata.instances.length,
      vanished: metadata.vanished.length,
      bytes: storedBytes,
    },
  };
}

/**
 * Runs one sub-backup; one whose object was deleted since the listing (TargetNotFound) is
 * recorded as vanished and skipped. Any other failure fails the server backup.
 */
async function vanishes<T>(
  backup: () => Promise<T>,
  metadata: LxdServerBackupMetadata,
  what: string,
): Promise<T | undefined> {
  try {
    return await backup();
  } catch (err) {
    if (!(err instanceof TargetNotFound)) throw err;
    metadata.vanished.push(what);
    return undefined;
  }
}
