/**
 * One recovery point in the repository: the BackupSink a driver writes its streams to, and the
 * RestoreSource a driver reads them back from.
 *
 * A point is complete when its manifest exists. Chunks are stored first (in packs, with their
 * indexes), the sealed manifest last, so a crash in between leaves chunks that a retry re-uses
 * and no manifest that anything could mistake for a complete point.
 */
import type { Readable } from 'node:stream';
import type {
  BackupSink,
  ByteReader,
  ChunkWrite,
  RestoreSource,
  StoredStream,
  StreamInfo,
} from './driver';
import type { Repository, RepositoryWriter } from '../repo/repository';
import type { StreamRecord } from '../repo/types';
import { IntegrityError } from '../../kernel/errors';

export const MANIFEST_VERSION = 2;

export interface Manifest {
  version: number;
  recoveryPointId: string;
  jobId: string;
  target: string;
  agent: string;
  startedAt: string;
  completedAt: string;
  streams: StreamRecord[];
  metadata: Record<string, unknown>;
}

export class PointWriter implements BackupSink {
  readonly streams: StreamRecord[] = [];

  constructor(
    private readonly writer: RepositoryWriter,
    private readonly onBytes: (n: number) => void,
  ) {}

  writeStream(info: StreamInfo, data: Readable): Promise<StoredStream> {
    return this.add(info, () => this.writer.writeStream(info, data, this.onBytes));
  }

  writeFrom(info: StreamInfo, read: ByteReader): Promise<StoredStream> {
    return this.add(info, () => this.writer.writeFrom(info, read, this.onBytes));
  }

  private async add(info: StreamInfo, write: () => Promise<StreamRecord>): Promise<StoredStream> {
    if (this.streams.some((s) => s.name === info.name)) {
      throw new Error(`stream ${info.name} written twice in one recovery point`);
    }
    const record = await write();
    this.streams.push(record);
    return { name: record.name, kind: record.kind, size: record.size };
  }
}

export async function readManifest(repo: Repository, recoveryPointId: string): Promise<Manifest> {
  const manifest = await repo.loadManifest<Manifest>(recoveryPointId);
  if (manifest.version !== MANIFEST_VERSION || manifest.recoveryPointId !== recoveryPointId) {
    throw new IntegrityError(
      `manifest of ${recoveryPointId} is not a version ${MANIFEST_VERSION} manifest of that point`,
    );
  }
  return manifest;
}

export class PointReader implements RestoreSource {
  constructor(
    private readonly repo: Repository,
    readonly manifest: Manifest,
    private readonly onBytes: (n: number) => void,
  ) {}

  get streams(): readonly StoredStream[] {
    return this.manifest.streams.map((s) => ({ name: s.name, kind: s.kind, size: s.size }));
  }

  async openStream(name: string): Promise<Readable> {
    return this.repo.readStream(this.record(name), this.onBytes, this.context);
  }

  async forEachChunk(name: string, write: ChunkWrite): Promise<number> {
    const record = this.record(name);
    await this.repo.forEachChunk(record, write, this.onBytes, this.context);
    return record.size;
  }

  private get context(): string {
    return `recovery point ${this.manifest.recoveryPointId}, `;
  }

  private record(name: string): StreamRecord {
    const record = this.manifest.streams.find((s) => s.name === name);
    if (!record) {
      throw new IntegrityError(
        `recovery point ${this.manifest.recoveryPointId} has no stream ${name}`,
      );
    }
    return record;
  }
}
