/**
 * Restore tests' sandboxes for containers. A sandbox is the ordinary restore under a new name
 * (restore.ts) with its create body isolated here: no network at all (`none`, so no published
 * ports either), no restart policy, no host directories or devices, and nothing shared with
 * another container (its network, pid or ipc namespace, its volumes). Its volumes are new copies,
 * as in any restore under a new name, so the original's are never written.
 *
 * The container and its volumes carry SANDBOX_LABEL = the sandbox's name; `removeSandbox`
 * removes only what carries it, so it never removes a container or volume someone else made
 * under that name. An image the restore had to load is named on the container
 * (SANDBOX_IMAGE_LABEL) and removed with it, when nothing else uses it.
 */
import type { Logger } from '../../../kernel/logger';
import type { DriverContext, ProbeResult } from '../../core/driver';
import type { InspectJson } from './config';
import { inspectByName, removeImageRef, type Engine } from './engine';
import { statusOf, translate } from './errors';
import { execWithTimeout } from './hooks';

export const SANDBOX_LABEL = 'io.stowage.sandbox';
export const SANDBOX_IMAGE_LABEL = 'io.stowage.sandbox.image';

/** Labels that would make the sandbox part of the original's Compose project. */
const COMPOSE_LABEL_PREFIX = 'com.docker.compose.';

/** Namespace modes that join the host's or another container's: `host`, `container:web`. */
const shared = (mode: unknown) => typeof mode === 'string' && mode !== '' && mode !== 'private';

/**
 * Isolates a container create body (planCreate's) in place: the sandbox named `name` reaches no
 * network and nothing of the host or of the original but its own restored volumes.
 */
export function isolate(body: Record<string, unknown>, name: string, loadedImage?: string): void {
  const host = (body.HostConfig ?? {}) as Record<string, unknown>;
  host.NetworkMode = 'none';
  delete body.NetworkingConfig;
  delete host.PortBindings;
  host.PublishAllPorts = false;
  delete host.Links;
  delete host.ExtraHosts;
  host.RestartPolicy = { Name: 'no' };
  // Named volumes only (the restore's own copies); a host path is the original's live data.
  if (Array.isArray(host.Binds)) {
    const binds = (host.Binds as string[]).filter((b) => !b.startsWith('/'));
    if (binds.length > 0) host.Binds = binds;
    else delete host.Binds;
  }
  if (Array.isArray(host.Mounts)) {
    const mounts = (host.Mounts as Array<Record<string, unknown>>).filter(
      (m) => m.Type === 'volume' || m.Type === 'tmpfs',
    );
    if (mounts.length > 0) host.Mounts = mounts;
    else delete host.Mounts;
  }
  delete host.Devices;
  delete host.DeviceRequests;
  delete host.VolumesFrom;
  for (const key of ['PidMode', 'IpcMode', 'UTSMode', 'UsernsMode']) {
    if (shared(host[key])) delete host[key];
  }
  // net.* sysctls need a network namespace of its own with interfaces; none has only lo.
  const sysctls = host.Sysctls as Record<string, string> | undefined;
  if (sysctls) {
    for (const key of Object.keys(sysctls)) if (key.startsWith('net.')) delete sysctls[key];
  }
  const labels = { ...((body.Labels ?? {}) as Record<string, string>) };
  for (const key of Object.keys(labels)) {
    if (key.startsWith(COMPOSE_LABEL_PREFIX)) delete labels[key];
  }
  labels[SANDBOX_LABEL] = name;
  if (loadedImage !== undefined) labels[SANDBOX_IMAGE_LABEL] = loadedImage;
  body.Labels = labels;
  body.HostConfig = host;
}

function labelsOf(inspect: InspectJson | undefined): Record<string, string> {
  const labels = inspect?.Config?.Labels;
  return labels && typeof labels === 'object' ? (labels as Record<string, string>) : {};
}

/** Runs `command` inside the running sandbox `name`. */
export async function probeSandbox(
  engine: Engine,
  name: string,
  command: string[],
  timeoutSeconds: number,
  ctx: DriverContext,
): Promise<ProbeResult> {
  const found = await inspectByName(engine, name);
  if (labelsOf(found)[SANDBOX_LABEL] !== name) {
    return { exitCode: null, output: '', error: `sandbox ${name} is not there` };
  }
  if (found?.State?.Running !== true) {
    return {
      exitCode: null,
      output: '',
      error: `sandbox ${name} is not running (${found?.State?.Status ?? 'unknown'}); it stopped after it started`,
    };
  }
  try {
    return await execWithTimeout(engine, found.Id, { command, timeoutSeconds }, ctx);
  } catch (err) {
    const e = translate(err, `running the probe in ${name}`, engine.socketPath);
    return { exitCode: null, output: '', error: e.message };
  }
}

/** Removes the sandbox container `name`, its volumes and an image it alone loaded. */
export async function removeSandbox(engine: Engine, name: string, log: Logger): Promise<void> {
  const found = await inspectByName(engine, name);
  const labels = labelsOf(found);
  if (found && labels[SANDBOX_LABEL] === name) {
    try {
      await engine.docker.getContainer(found.Id).remove({ force: true, v: false });
    } catch (err) {
      if (statusOf(err) !== 404)
        throw translate(err, `removing sandbox ${name}`, engine.socketPath);
    }
  }
  let volumes: Array<{ Name: string }> = [];
  try {
    const listed: { Volumes?: Array<{ Name: string }> | null } = await engine.docker.listVolumes({
      filters: { label: [`${SANDBOX_LABEL}=${name}`] },
    });
    volumes = listed.Volumes ?? [];
  } catch (err) {
    throw translate(err, `listing the volumes of sandbox ${name}`, engine.socketPath);
  }
  for (const volume of volumes) {
    try {
      await engine.docker.getVolume(volume.Name).remove();
    } catch (err) {
      if (statusOf(err) !== 404) {
        throw translate(
          err,
          `removing volume ${volume.Name} of sandbox ${name}`,
          engine.socketPath,
        );
      }
    }
  }
  const image = labels[SANDBOX_IMAGE_LABEL];
  if (found && labels[SANDBOX_LABEL] === name && image)
    await removeImageRef(engine, image, { log });
}
