/**
 * LXD images of a server point: exported whole through the data path and imported back.
 *
 * Export: `GET /1.0/images/{fingerprint}/export` answers with the image file as LXD stores it: a
 * unified tarball (`application/octet-stream`), or for a split image a multipart body holding the
 * metadata and rootfs files. Its Content-Type is recorded, and the import replays the body with
 * it: `POST /1.0/images` takes either form, so both kinds come back with the same fingerprint.
 * The aliases, properties, `public` and `auto_update` are set again afterwards.
 */
import { DriverError } from '../../../kernel/errors';
import type { BackupSink, DriverContext, RestoreSource } from '../../core/driver';
import { consumeStream } from '../../core/driver-streams';
import { isNotFound, translate } from './errors';
import { abortCheck, type Engine } from './instance';
import { IMAGE_KIND, getOrNone, imagePath, imageStream, type LxdImageRecord } from './server';

/** The parts of `GET /1.0/images/{fingerprint}` the server backup reads. */
export interface LxdImage {
  fingerprint: string;
  aliases: Array<{ name: string; description: string }> | null;
  properties: Record<string, string> | null;
  public: boolean;
  auto_update: boolean;
  type: string;
  cached: boolean;
}

/** Streams one image into the sink; resolves with what the point records of it. */
export async function exportImage(
  engine: Engine,
  image: LxdImage,
  sink: BackupSink,
  ctx: DriverContext,
): Promise<LxdImageRecord> {
  const stream = imageStream(engine.project, image.fingerprint);
  const what = `image ${image.fingerprint.slice(0, 12)}`;
  ctx.phase(`exporting ${what}`);
  const download = await engine.client
    .download(`${imagePath(image.fingerprint)}/export`)
    .catch((err: unknown) => {
      throw translate(err, `exporting ${what}`, engine.socketPath);
    });
  if (download.size !== undefined) ctx.expectBytes?.(download.size);
  await consumeStream(download.stream, ctx, `export of ${what}`, (s) =>
    sink.writeStream({ name: stream, kind: IMAGE_KIND }, s),
  );
  return {
    project: engine.project,
    fingerprint: image.fingerprint,
    stream,
    contentType: download.contentType ?? 'application/octet-stream',
    aliases: (image.aliases ?? []).map((a) => ({ name: a.name, description: a.description })),
    properties: image.properties ?? {},
    public: image.public,
    autoUpdate: image.auto_update,
    type: image.type,
  };
}

/**
 * Imports one image unless the server has it (same fingerprint), then creates the aliases it
 * lacks (an alias the server already has, pointing anywhere, is left as it is). Resolves with
 * whether the image was imported (so a failed restore knows what to delete) and the aliases made.
 */
export async function importImage(
  engine: Engine,
  record: LxdImageRecord,
  source: RestoreSource,
  ctx: DriverContext,
): Promise<{ imported: boolean; aliases: string[] }> {
  const what = `image ${record.fingerprint.slice(0, 12)}`;
  let imported = false;
  if (!(await getOrNone(engine, imagePath(record.fingerprint), what))) {
    const stored = source.streams.find((s) => s.name === record.stream);
    if (!stored) throw new DriverError(`the recovery point has no ${record.stream} stream`);
    ctx.phase(`importing ${what}`);
    const body = await source.openStream(record.stream);
    const answer = await consumeStream(body, ctx, `import of ${what}`, (s) =>
      engine.client.upload('/1.0/images', s, {
        'Content-Type': record.contentType,
        'Content-Length': stored.size,
        'X-LXD-public': record.public ? '1' : '0',
      }),
    ).catch((err: unknown) => {
      throw translate(err, `importing ${what}`, engine.socketPath);
    });
    imported = true;
    try {
      await engine.client.wait(answer.operation, abortCheck(ctx, `import of ${what}`));
      await engine.client.run('PATCH', imagePath(record.fingerprint), {
        properties: record.properties,
        public: record.public,
        auto_update: record.autoUpdate,
      });
    } catch (err) {
      await removeImage(engine, record.fingerprint).catch(() => undefined);
      throw translate(err, `importing ${what}`, engine.socketPath);
    }
  }
  const aliases: string[] = [];
  for (const alias of record.aliases) {
    const path = `/1.0/images/aliases/${encodeURIComponent(alias.name)}`;
    if (await getOrNone(engine, path, `image alias ${alias.name}`)) continue;
    try {
      await engine.client.run('POST', '/1.0/images/aliases', {
        name: alias.name,
        description: alias.description,
        target: record.fingerprint,
      });
    } catch (err) {
      throw translate(err, `creating image alias ${alias.name}`, engine.socketPath);
    }
    aliases.push(alias.name);
  }
  return { imported, aliases };
}

/** Deletes an image (its aliases go with it); one already gone is fine. */
export async function removeImage(engine: Engine, fingerprint: string): Promise<void> {
  try {
    await engine.client.run('DELETE', imagePath(fingerprint));
  } catch (err) {
    if (isNotFound(err)) return;
    throw translate(err, `deleting image ${fingerprint.slice(0, 12)}`, engine.socketPath);
  }
}
