/**
 * The Docker driver: containers as targets (`docker:<name>`), backed up as inspect JSON + the
 * committed image + one tar per volume (and per bind-mounted directory with includeBinds),
 * restored beside the original under a new name, or in place over it (restore-in-place.ts), with
 * volumes, network and ports remapped (remap.ts), or one volume alone (restore-volume.ts).
 * Talks to dockerd (API 1.41 and later) over its unix socket with dockerode; no dockerode type
 * leaves this folder.
 *
 * `createComposeDriver` is its sibling for Compose projects as targets (`docker-compose:<project>`,
 * compose.ts; in place over the project: compose-in-place.ts), built from the same pieces.
 */
import Docker from 'dockerode';
import { DriverError } from '../../../kernel/errors';
import { LogEvent, silentLogger, type Logger } from '../../../kernel/logger';
import type { DiscoveredTarget, Driver } from '../../core/driver';
import { backupContainer } from './backup';
import {
  COMPOSE_PLATFORM,
  backupProject,
  listProjects,
  projectExists,
  restoreProject,
} from './compose';
import { restoreProjectInPlace } from './compose-in-place';
import { inspectByName, type Engine } from './engine';
import { translate } from './errors';
import { HELPER_LABEL, HelperImage } from './helper';
import { restoreContainer } from './restore';
import { restoreInPlace } from './restore-in-place';
import { restoreSingleVolume } from './restore-volume';
import { restoreFilesIntoVolume } from './host-tree';
import { releaseDockerHold } from './holds';
import { SANDBOX_LABEL, probeSandbox, removeSandbox } from './sandbox';

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';

export interface DockerDriverOptions {
  /** dockerd's unix socket; default /var/run/docker.sock. */
  socketPath?: string;
  /** For what happens outside a job (the event watch); jobs log through their context. */
  log?: Logger;
  /** Quiet time after the last container event before `watch` calls back; default 200 ms. */
  watchDebounceMs?: number;
  /**
   * Whether volumes and bind mounts are read and written on this host, as tree streams
   * (host-tree.ts). Default true: the agent runs as root beside dockerd. False for an engine
   * on another host: everything goes through its API.
   */
  hostAccess?: boolean;
}

/** Container events that change the set of targets (not their state). */
const TARGET_EVENTS = ['create', 'destroy', 'rename'];
const WATCH_RETRY_MIN_MS = 1_000;
const WATCH_RETRY_MAX_MS = 30_000;

/** The container's own name: `Names` also lists link aliases (`/other/alias`). */
function primaryName(names: string[] | undefined): string | undefined {
  const own = names?.find((n) => n.lastIndexOf('/') === 0) ?? names?.[0];
  return own?.replace(/^\//, '');
}

/** Our own helpers come and go with every volume copied; they are not targets. */
function isHelperEvent(line: string): boolean {
  try {
    const event = JSON.parse(line) as { Actor?: { Attributes?: Record<string, string> } };
    return event.Actor?.Attributes?.[HELPER_LABEL] === '1';
  } catch {
    return false;
  }
}

export function createDockerDriver(options: DockerDriverOptions = {}): Driver {
  const socketPath = options.socketPath ?? DEFAULT_DOCKER_SOCKET;
  const log = options.log ?? silentLogger;
  const docker = new Docker({ socketPath });
  const engine: Engine = {
    docker,
    socketPath,
    helperImage: new HelperImage(docker, socketPath),
    hostAccess: options.hostAccess ?? true,
  };

  async function listTargets(): Promise<DiscoveredTarget[]> {
    let containers: Docker.ContainerInfo[];
    try {
      containers = await docker.listContainers({ all: true });
    } catch (err) {
      throw translate(err, 'listing containers', socketPath);
    }
    const targets: DiscoveredTarget[] = [];
    for (const c of containers) {
      // Helpers and restore tests' sandboxes come and go within a job: they are not targets.
      if (c.Labels?.[HELPER_LABEL] === '1' || c.Labels?.[SANDBOX_LABEL]) continue;
      const name = primaryName(c.Names);
      if (!name) continue;
      const volumes = (c.Mounts ?? [])
        .filter((m) => m.Type === 'volume' && m.Name)
        .map((m) => m.Name as string);
      targets.push({
        target: `docker:${name}`,
        platform: 'docker',
        name,
        state: c.State,
        details: { image: c.Image, volumes: volumes.join(','), status: c.Status },
        labels: { ...c.Labels },
      });
    }
    return targets.sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Follows `GET /events` for container create/destroy/rename and volume create/destroy, and
   * calls back once things have been quiet for the debounce time. A dropped event stream
   * (dockerd restarted) is reopened with backoff, and reopening calls back too, since events
   * may have been missed.
   */
  function watch(onChange: () => void): () => void {
    const debounceMs = options.watchDebounceMs ?? 200;
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    let retry: NodeJS.Timeout | undefined;
    let stream: NodeJS.ReadableStream | undefined;
    let retryMs = WATCH_RETRY_MIN_MS;

    const changed = () => {
      if (stopped) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (!stopped) onChange();
      }, debounceMs);
    };

    const reopen = (reason: unknown) => {
      if (stopped) return;
      stream = undefined;
      log.warn(LogEvent.driverStep, {
        step: 'docker events',
        retryInMs: retryMs,
        error: translate(reason, 'following docker events', socketPath),
      });
      retry = setTimeout(() => {
        open(true);
      }, retryMs);
      retryMs = Math.min(retryMs * 2, WATCH_RETRY_MAX_MS);
    };

    const open = (isRetry: boolean) => {
      docker
        .getEvents({ filters: { type: ['container', 'volume'], event: TARGET_EVENTS } })
        .then((events) => {
          if (stopped) {
            (events as unknown as { destroy(): void }).destroy();
            return;
          }
          stream = events;
          retryMs = WATCH_RETRY_MIN_MS;
          if (isRetry) changed();
          let gone = false;
          const lost = (reason: unknown) => {
            if (gone) return;
            gone = true;
            reopen(reason);
          };
          // One JSON event per line; chunks may split or join lines.
          let pending = '';
          events.on('data', (chunk: Buffer) => {
            const lines = (pending + chunk.toString('utf8')).split('\n');
            pending = lines.pop() ?? '';
            if (lines.some((line) => line.trim() && !isHelperEvent(line))) changed();
          });
          events.on('error', lost);
          events.on('end', () => lost(new Error('the event stream ended')));
          events.on('close', () => lost(new Error('the event stream closed')));
        })
        .catch(reopen);
    };

    open(false);
    return () => {
      stopped = true;
      clearTimeout(timer);
      clearTimeout(retry);
      (stream as unknown as { destroy(): void } | undefined)?.destroy();
    };
  }

  return {
    platform: 'docker',
    listTargets,
    exists: async (name) => (await inspectByName(engine, name)) !== undefined,
    backup: (name, sink, ctx, backupOptions) =>
      backupContainer(engine, name, sink, ctx, backupOptions),
    restore: (metadata, source, restoreOptions, ctx) => {
      if (restoreOptions.files && restoreOptions.intoVolume !== undefined) {
        const target = `docker:${restoreOptions.name}`;
        const { files, intoVolume } = restoreOptions;
        return restoreFilesIntoVolume(engine, source, files, intoVolume, target, ctx);
      }
      if (restoreOptions.volume !== undefined)
        return restoreSingleVolume(engine, metadata, source, restoreOptions, ctx);
      if (restoreOptions.intoVolume !== undefined) {
        const message = `intoVolume (${restoreOptions.intoVolume}) only applies with volume: name the point's volume to restore into it`;
        return Promise.reject(new DriverError(message));
      }
      return restoreOptions.inPlace
        ? restoreInPlace(engine, metadata, source, restoreOptions, ctx)
        : restoreContainer(engine, metadata, source, restoreOptions, ctx);
    },
    sandbox: {
      probe: (name, command, timeoutSeconds, ctx) =>
        probeSandbox(engine, name, command, timeoutSeconds, ctx),
      remove: (name, removeLog) => removeSandbox(engine, name, removeLog),
    },
    watch,
    // The Compose driver records its holds as `docker` too: this one releases them all.
    releaseHold: (record, holdLog) => releaseDockerHold(engine, record, holdLog),
  };
}

/**
 * The docker-compose driver: a Compose project (its containers, volumes and networks, found by
 * their `com.docker.compose.*` labels) as one target. No compose binary or file is needed.
 */
export function createComposeDriver(options: DockerDriverOptions = {}): Driver {
  const socketPath = options.socketPath ?? DEFAULT_DOCKER_SOCKET;
  const docker = new Docker({ socketPath });
  const engine: Engine = {
    docker,
    socketPath,
    helperImage: new HelperImage(docker, socketPath),
    hostAccess: options.hostAccess ?? true,
  };
  return {
    platform: COMPOSE_PLATFORM,
    listTargets: () => listProjects(engine),
    exists: (name) => projectExists(engine, name),
    backup: (name, sink, ctx, backupOptions) =>
      backupProject(engine, name, sink, ctx, backupOptions),
    restore: (metadata, source, restoreOptions, ctx) =>
      restoreOptions.inPlace
        ? restoreProjectInPlace(engine, metadata, source, restoreOptions, ctx)
        : restoreProject(engine, metadata, source, restoreOptions, ctx),
  };
}
