/**
 * Writing and reading one recovery point in the object store.
 *
 * A point is complete when its manifest exists: streams are stored first, the manifest last,
 * so a crash in between leaves objects with no manifest that no restore will ever read (and the
 * catalog never lists, since commit-point checks the manifest). Reading verifies each stream's
 * SHA-256 as it flows and fails at the end of a stream whose bytes differ, naming the point,
 * the stream and the offset reached, rather than hand on silently wrong bytes.
 */
import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import type { ObjectStore } from '../store/store';
import type { BackupSink, RestoreSource, StoredStream, StreamInfo } from './driver';
import { MeteredStream } from './streams';
import { manifestKey, pointPrefix, streamKey } from '../../functions/core/object-layout';
import { IntegrityError } from '../../functions/shared/errors';

/** Readers of points catch this one; it is the shared error class. */
export { IntegrityError };

export const MANIFEST_VERSION = 1;

export interface ManifestStream extends StoredStream {
  key: string;
}

export interface Manifest {
  version: number;
  recoveryPointId: string;
  jobId: string;
  target: string;
  agent: string;
  startedAt: string;
  completedAt: string;
  streams: ManifestStream[];
  metadata: Record<string, unknown>;
}

export class PointWriter implements BackupSink {
  readonly streams: ManifestStream[] = [];
  bytesStored = 0;

  constructor(
    private readonly store: ObjectStore,
    private readonly recoveryPointId: string,
    private readonly onBytes: (n: number) => void,
  ) {}

  async writeStream(info: StreamInfo, data: Readable): Promise<StoredStream> {
    if (this.streams.some((s) => s.name === info.name)) {
      throw new Error(`stream ${info.name} written twice in point ${this.recoveryPointId}`);
    }
    const key = streamKey(this.recoveryPointId, this.streams.length);
    const meter = new MeteredStream(this.onBytes);
    const body = new PassThrough({ highWaterMark: 1024 * 1024 });
    await Promise.all([pipeline(data, meter, body), this.store.put(key, body)]);
    const stored: ManifestStream = { ...info, key, size: meter.bytes, sha256: meter.digest() };
    this.streams.push(stored);
    this.bytesStored += stored.size;
    return { name: stored.name, kind: stored.kind, size: stored.size, sha256: stored.sha256 };
  }

  async commit(
    manifest: Omit<Manifest, 'version' | 'streams' | 'recoveryPointId'>,
  ): Promise<string> {
    const key = manifestKey(this.recoveryPointId);
    const full: Manifest = {
      version: MANIFEST_VERSION,
      recoveryPointId: this.recoveryPointId,
      ...manifest,
      streams: this.streams,
    };
    await this.store.put(key, Buffer.from(JSON.stringify(full)));
    return key;
  }

  /** Removes whatever this point stored: used when the backup fails before its manifest. */
  async discard(): Promise<void> {
    await this.store.deletePrefix(pointPrefix(this.recoveryPointId));
  }
}

export async function readManifest(store: ObjectStore, recoveryPointId: string): Promise<Manifest> {
  const body = await store.get(manifestKey(recoveryPointId));
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  const manifest = JSON.parse(Buffer.concat(chunks).toString()) as Manifest;
  if (manifest.version !== MANIFEST_VERSION || manifest.recoveryPointId !== recoveryPointId) {
    throw new IntegrityError(
      `manifest of ${recoveryPointId} is not a version ${MANIFEST_VERSION} manifest of that point`,
    );
  }
  return manifest;
}

class VerifyingStream extends Transform {
  private readonly hash = createHash('sha256');
  private bytes = 0;
  constructor(
    private readonly pointId: string,
    private readonly expected: ManifestStream,
    private readonly onBytes: (n: number) => void,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.expected.size) {
      done(this.fail(`more bytes than the ${this.expected.size} recorded`));
      return;
    }
    this.hash.update(chunk);
    this.onBytes(chunk.length);
    done(null, chunk);
  }
  override _flush(done: TransformCallback): void {
    if (this.bytes !== this.expected.size) {
      done(this.fail(`stream ends early (${this.expected.size} bytes recorded)`));
      return;
    }
    const digest = this.hash.digest('hex');
    done(
      digest === this.expected.sha256 ? null : this.fail('SHA-256 differs from the recorded one'),
    );
  }
  private fail(why: string): IntegrityError {
    return new IntegrityError(
      `recovery point ${this.pointId}, stream ${this.expected.name}, offset ${this.bytes}: ${why}`,
    );
  }
}

export class PointReader implements RestoreSource {
  constructor(
    private readonly store: ObjectStore,
    readonly manifest: Manifest,
    private readonly onBytes: (n: number) => void,
  ) {}

  get streams(): readonly StoredStream[] {
    return this.manifest.streams;
  }

  async openStream(name: string): Promise<Readable> {
    const stream = this.manifest.streams.find((s) => s.name === name);
    if (!stream) {
      throw new IntegrityError(
        `recovery point ${this.manifest.recoveryPointId} has no stream ${name}`,
      );
    }
    const body = await this.store.get(stream.key);
    const verify = new VerifyingStream(this.manifest.recoveryPointId, stream, this.onBytes);
    body.on('error', (err) => verify.destroy(err));
    return body.pipe(verify);
  }
}
