/**
 * Volume access through a helper container that is created but never started.
 *
 * `GET/PUT /containers/{id}/archive` work on a created container: dockerd mounts its rootfs and
 * volumes just for the copy. So a helper that mounts a volume at /mnt/vol streams the volume as a
 * tar (owners, modes, symlinks intact) 8-10x faster than running `tar` inside a container and
 * reading it over attach. The helper's image only has to exist: a 0-byte image holding one empty
 * directory, imported on demand (no registry is needed). Helpers carry the label
 * `io.stowage.helper=1` so inventories skip them and leftovers can be found.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type Docker from 'dockerode';
import tar from 'tar-stream';
import { DriverError } from '../../../kernel/errors';
import { LogEvent, type Logger } from '../../../kernel/logger';
import { takeHold, type HoldTaker } from '../../core/holds';
import { statusOf, translate } from './errors';

export const HELPER_IMAGE_REPO = 'stowage/helper';
export const HELPER_IMAGE_TAG = '1';
export const HELPER_IMAGE = `${HELPER_IMAGE_REPO}:${HELPER_IMAGE_TAG}`;
export const HELPER_LABEL = 'io.stowage.helper';
/** Which target a helper serves, for diagnosing leftovers. */
export const HELPER_TARGET_LABEL = 'io.stowage.helper.target';
/**
 * Where a helper mounts its volume. A volume stream is `GET archive?path=/mnt/vol`: one
 * top-level `vol/` entry (the volume root's own owner, mode and times) and everything under it.
 * It is restored with `PUT archive?path=/mnt`, where `vol/` lands on the mount point and dockerd
 * applies its metadata to the volume root. (Streaming `/mnt/vol/.` instead and putting it into
 * `/mnt/vol` loses the root's owner and mode: dockerd's untar skips a `./` entry whose target
 * directory exists; a database volume whose root must be 0700 would not come back usable.)
 */
export const HELPER_MOUNT = '/mnt/vol';
/** The directory a volume stream is extracted into (HELPER_MOUNT's parent). */
export const HELPER_MOUNT_PARENT = '/mnt';

/** A tar holding only `mnt/`: the whole filesystem of the helper image. */
async function helperRootfs(): Promise<Buffer> {
  const pack = tar.pack();
  pack.entry({ name: 'mnt/', type: 'directory', mode: 0o755, mtime: new Date(0) });
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * Reads a JSON-lines progress answer (`/images/create`, `/images/load`) to its end. dockerd
 * answers those with 200 and reports failures inside the stream as `{"error": ...}`.
 */
export async function readProgress(
  stream: NodeJS.ReadableStream,
  action: string,
): Promise<Array<Record<string, unknown>>> {
  let text = '';
  for await (const chunk of stream as Readable) text += chunk.toString();
  const events: Array<Record<string, unknown>> = [];
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim()) continue;
    try {
      events.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      events.push({ stream: line });
    }
  }
  const failed = events.find((e) => e.error !== undefined || e.errorDetail !== undefined);
  if (failed) {
    const detail = failed.errorDetail as { message?: string } | undefined;
    const said = String(failed.error ?? detail?.message ?? 'unknown error');
    throw new DriverError(`${action}: dockerd reported: ${said}`);
  }
  return events;
}

/** Makes sure the helper image exists; concurrent callers share one import. */
export class HelperImage {
  private ready: Promise<void> | undefined;

  constructor(
    private readonly docker: Docker,
    private readonly socketPath: string,
  ) {}

  /** Forgets that the image was made (someone pruned it); the next `ensure` checks again. */
  invalidate(): void {
    this.ready = undefined;
  }

  ensure(): Promise<void> {
    this.ready ??= this.create().catch((err: unknown) => {
      this.ready = undefined;
      throw err;
    });
    return this.ready;
  }

  private async create(): Promise<void> {
    try {
      await this.docker.getImage(HELPER_IMAGE).inspect();
      return;
    } catch (err) {
      if (statusOf(err) !== 404)
        throw translate(err, `inspecting ${HELPER_IMAGE}`, this.socketPath);
    }
    try {
      const rootfs = Readable.from([await helperRootfs()]);
      const answer = await this.docker.importImage(rootfs, {
        repo: HELPER_IMAGE_REPO,
        tag: HELPER_IMAGE_TAG,
      });
      await readProgress(answer, `importing the volume helper image ${HELPER_IMAGE}`);
    } catch (err) {
      throw translate(err, `importing the volume helper image ${HELPER_IMAGE}`, this.socketPath);
    }
  }
}

export interface HelperOptions {
  /** The volume to mount; with `bindSource`, only a name for messages. */
  volume: string;
  /**
   * A host directory to bind-mount (read-only) instead of a volume: how bind-mounted data is
   * read with the same archive approach as volumes.
   */
  bindSource?: string;
  /** Mount the volume read-only (backups never write to what they protect). */
  readOnly: boolean;
  /** The target this helper works for (a label, for leftovers). */
  target: string;
  log: Logger;
  /** The job's hold journal: the helper is recorded before it is created (`docker.helper`). */
  holds?: HoldTaker | undefined;
}

/**
 * Creates a helper mounting `volume` at /mnt/vol, runs `use` with it, and removes it whatever
 * happens. The volume itself is never removed here.
 */
export async function withVolumeHelper<T>(
  docker: Docker,
  image: HelperImage,
  socketPath: string,
  options: HelperOptions,
  use: (helper: Docker.Container) => Promise<T>,
): Promise<T> {
  const name = `stowage-helper-${randomBytes(6).toString('hex')}`;
  const create = () =>
    docker.createContainer({
      name,
      Image: HELPER_IMAGE,
      Cmd: ['/nonexistent'],
      Labels: { [HELPER_LABEL]: '1', [HELPER_TARGET_LABEL]: options.target },
      NetworkDisabled: true,
      HostConfig: {
        NetworkMode: 'none',
        Mounts: [
          options.bindSource !== undefined
            ? {
                Type: 'bind',
                Source: options.bindSource,
                Target: HELPER_MOUNT,
                ReadOnly: true,
              }
            : {
                Type: 'volume',
                Source: options.volume,
                Target: HELPER_MOUNT,
                ReadOnly: options.readOnly,
                // An empty new volume must not be seeded from the image's /mnt/vol.
                VolumeOptions: { NoCopy: true } as Docker.MountSettings['VolumeOptions'],
              },
        ],
      },
    });
  let helper: Docker.Container;
  const hold = await takeHold(options.holds, 'docker', 'docker.helper', { name });
  try {
    await image.ensure();
    try {
      helper = await create();
    } catch (err) {
      // The image was made earlier but has since been removed (`docker image prune -a`).
      if (statusOf(err) !== 404 || !/image/i.test(String(err))) throw err;
      image.invalidate();
      await image.ensure();
      helper = await create();
    }
  } catch (err) {
    hold?.abandon(); // dockerd may have made it all the same: the sweep looks
    throw translate(err, `creating a helper container for volume ${options.volume}`, socketPath);
  }
  try {
    return await use(helper);
  } finally {
    // v: false: the helper owns no volume; the one it mounts is the user's or the restore's.
    await helper.remove({ force: true, v: false }).then(
      () => hold?.clear(),
      (err: unknown) => {
        hold?.abandon();
        options.log.warn(LogEvent.driverStep, {
          step: 'remove helper',
          helper: helper.id,
          error: translate(err, `removing helper container ${helper.id}`, socketPath),
        });
      },
    );
  }
}

/** Removes a helper a killed job left (HoldRecord `docker.helper`); one already gone is fine. */
export async function removeHelper(docker: Docker, name: string, socketPath: string) {
  try {
    const info = (await docker.getContainer(name).inspect()) as {
      Name?: string;
      Config?: { Labels?: Record<string, string> };
    };
    // Only our own helper: a container that merely took the name since is left alone.
    if (info.Name !== `/${name}` || info.Config?.Labels?.[HELPER_LABEL] !== '1') return;
    await docker.getContainer(name).remove({ force: true, v: false });
  } catch (err) {
    if (statusOf(err) === 404) return;
    throw translate(err, `removing helper container ${name}`, socketPath);
  }
}
