/**
 * One recovery point in the repository: the BackupSink a driver writes its streams to, and the
 * RestoreSource a driver reads them back from.
 *
 * A point is complete when its manifest exists. Chunks are stored first (in packs, with their
 * indexes), the sealed manifest last, so a crash in between leaves chunks that a retry re-uses
 * and no manifest that anything could mistake for a complete point.
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import type {
  Area,
  BackupSink,
  BlockSource,
  ByteReader,
  ChunkWrite,
  DriverContext,
  RestoreSource,
  StoredBlocks,
  StoredStream,
  StoredTree,
  StreamInfo,
} from './driver';
import { SMALL_FILE_MAX, type Repository, type RepositoryWriter } from '../repo/repository';
import type { ChunkRef, StreamRecord } from '../repo/types';
import { IntegrityError } from '../../kernel/errors';
import { LogEvent } from '../../kernel/logger';
import { discardIndex, walkTree, type ParentTree } from './tree/backup';
import {
  indexStreamName,
  readEntries,
  TREE_INDEX_KIND,
  TREE_KIND,
  type TreeEntry,
} from './tree/format';
import { restoreTreeInto, type TreeSource } from './tree/restore';
import { treeAsTar, treesAsTar } from './tree/tar';

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

/**
 * The previous point of the same target, whose tree indexes a backup merges against
 * (restic's parent snapshot): its streams and a way to read them.
 */
export interface ParentPoint {
  recoveryPointId: string;
  streams: readonly StreamRecord[];
  metadata: Record<string, unknown>;
  read(record: StreamRecord): Readable;
}

export class PointWriter implements BackupSink {
  readonly streams: StreamRecord[] = [];

  constructor(
    private readonly writer: RepositoryWriter,
    private readonly onBytes: (n: number) => void,
    private readonly parent?: ParentPoint,
  ) {}

  /** The parent's tree of the same stream name, if it has one. */
  private parentTree(name: string): ParentTree | undefined {
    const parent = this.parent;
    const data = parent?.streams.find((s) => s.name === name && s.kind === TREE_KIND);
    const index = parent?.streams.find(
      (s) => s.name === indexStreamName(name) && s.kind === TREE_INDEX_KIND,
    );
    if (!parent || !data || !index) return undefined;
    return { entries: readEntries(parent.read(index)), chunks: data.chunks };
  }

  async writeTree(info: { name: string }, root: string, ctx: DriverContext): Promise<StoredTree> {
    const indexName = indexStreamName(info.name);
    this.checkNew(info.name);
    this.checkNew(indexName);
    const parent = this.parentTree(info.name);
    const tree = this.writer.treeData(this.onBytes);
    let walked: Awaited<ReturnType<typeof walkTree>>;
    let chunks: ChunkRef[];
    try {
      walked = await walkTree(
        root,
        {
          file: (read) => tree.file(read),
          small: (read) => tree.small(read),
          smallFile: SMALL_FILE_MAX,
          reuse: (refs) => tree.reuse(refs),
          has: (refs: readonly ChunkRef[]) => refs.every((c) => this.writer.has(c.id)),
        },
        parent,
        ctx,
      );
    } catch (err) {
      await tree.abandon();
      throw err;
    }
    try {
      chunks = await tree.end();
    } catch (err) {
      await discardIndex(walked.indexFile);
      throw err;
    }
    try {
      const data: StreamRecord = {
        name: info.name,
        kind: TREE_KIND,
        size: walked.size,
        chunks,
      };
      const index = await this.writer.writeStream(
        { name: indexName, kind: TREE_INDEX_KIND },
        createReadStream(walked.indexFile),
      );
      // The index is made here, not read from the target: bytes read count the target's only.
      this.writer.stats.bytesRead -= index.size;
      this.streams.push(data, index);
    } finally {
      await discardIndex(walked.indexFile);
    }
    ctx.log.info(LogEvent.driverStep, {
      step: 'tree stored',
      stream: info.name,
      entries: walked.entries,
      filesRead: walked.filesRead,
      filesReused: walked.filesReused,
      bytesReused: walked.bytesReused,
      ...(parent ? { parent: this.parent!.recoveryPointId } : {}),
    });
    return {
      name: info.name,
      kind: TREE_KIND,
      size: walked.size,
      entries: walked.entries,
      skipped: walked.skipped,
      filesRead: walked.filesRead,
      filesReused: walked.filesReused,
      bytesReused: walked.bytesReused,
      ...(parent ? { parent: this.parent!.recoveryPointId } : {}),
      warnings: walked.warnings,
    };
  }

  parentMetadata(): Record<string, unknown> | undefined {
    return this.parent?.metadata;
  }

  async reuseParent(
    info: StreamInfo,
    accept: (source: string) => boolean,
  ): Promise<(StoredStream & { source: string; parent: string }) | undefined> {
    this.checkNew(info.name);
    const parent = this.parent;
    const record = parent?.streams.find((s) => s.name === info.name && s.kind === info.kind);
    const source = record?.source;
    if (
      !parent ||
      !record ||
      source === undefined ||
      !accept(source) ||
      !record.chunks.every((c) => this.writer.has(c.id)) ||
      record.chunks.reduce((n, c) => n + c.length, 0) !== record.size
    ) {
      return undefined;
    }
    this.streams.push({
      name: info.name,
      kind: info.kind,
      size: record.size,
      chunks: [...record.chunks],
      source,
    });
    // Done without being read: the progress against the target's size counts it.
    this.onBytes(record.size);
    return {
      name: info.name,
      kind: info.kind,
      size: record.size,
      source,
      parent: parent.recoveryPointId,
    };
  }

  async writeBlocks(info: StreamInfo, source: BlockSource): Promise<StoredBlocks> {
    this.checkNew(info.name);
    const { size, blockBytes } = source;
    if (!Number.isSafeInteger(blockBytes) || blockBytes <= 0 || !(size >= 0)) {
      throw new RangeError(`blocks of ${blockBytes} bytes over ${size} bytes`);
    }
    const parent = this.parent?.streams.find(
      (s) => s.name === info.name && s.kind === info.kind && s.blockBytes === blockBytes,
    );
    const parentBlocks = parent && source.unchanged ? blocksOf(parent, blockBytes) : undefined;
    // Which blocks come from the parent (their chunks) and which are read (runs of them).
    const plan: Array<readonly ChunkRef[] | undefined> = [];
    const areas: Area[] = [];
    let bytesReused = 0;
    for (let start = 0; start < size; start += blockBytes) {
      const length = Math.min(blockBytes, size - start);
      const refs = parentBlocks?.[plan.length];
      if (
        refs &&
        refs.reduce((n, c) => n + c.length, 0) === length &&
        source.unchanged!(start, length) &&
        refs.every((c) => this.writer.has(c.id))
      ) {
        plan.push(refs);
        bytesReused += length;
        continue;
      }
      plan.push(undefined);
      const last = areas[areas.length - 1];
      if (last && last.start + last.length === start) last.length += length;
      else areas.push({ start, length });
    }
    const read = await source.open(areas);
    const blocks = this.writer.treeData(this.onBytes);
    const whole = blockBytes <= this.writer.maxChunkBytes;
    const readBefore = this.writer.stats.bytesRead;
    let chunks: ChunkRef[];
    try {
      for (let i = 0; i < plan.length; i++) {
        const refs = plan[i];
        if (refs) {
          await blocks.reuse(refs);
          // Done without being read: the progress against the disk's size counts it.
          this.onBytes(Math.min(blockBytes, size - i * blockBytes));
        } else {
          const block = limitedTo(read, Math.min(blockBytes, size - i * blockBytes));
          // A block that fits in a chunk is one, not scanned for cut points (TreeData.block).
          await (whole ? blocks.block(block) : blocks.file(block));
        }
      }
      chunks = await blocks.end();
    } catch (err) {
      await blocks.abandon();
      throw err;
    }
    const bytesRead = this.writer.stats.bytesRead - readBefore;
    if (bytesRead + bytesReused !== size) {
      throw new Error(
        `stream ${info.name}: ${bytesRead} bytes read and ${bytesReused} reused, not ${size}`,
      );
    }
    this.streams.push({ name: info.name, kind: info.kind, size, chunks, blockBytes });
    return {
      name: info.name,
      kind: info.kind,
      size,
      bytesRead,
      bytesReused,
      ...(bytesReused > 0 ? { parent: this.parent!.recoveryPointId } : {}),
    };
  }

  writeStream(info: StreamInfo, data: Readable): Promise<StoredStream> {
    return this.add(info, () => this.writer.writeStream(info, data, this.onBytes));
  }

  writeFrom(info: StreamInfo, read: ByteReader): Promise<StoredStream> {
    return this.add(info, () => this.writer.writeFrom(info, read, this.onBytes));
  }

  /** Each stream name once in a point. */
  private checkNew(name: string): void {
    if (this.streams.some((s) => s.name === name)) {
      throw new Error(`stream ${name} written twice in one recovery point`);
    }
  }

  private async add(info: StreamInfo, write: () => Promise<StreamRecord>): Promise<StoredStream> {
    this.checkNew(info.name);
    const record = await write();
    if (info.source !== undefined) record.source = info.source;
    this.streams.push(record);
    return { name: record.name, kind: record.kind, size: record.size };
  }
}

/**
 * The chunks of each block of a stream written by writeBlocks, or undefined when a chunk spans
 * two blocks (then nothing of it can be taken block by block).
 */
function blocksOf(record: StreamRecord, blockBytes: number): ChunkRef[][] | undefined {
  const blocks: ChunkRef[][] = [];
  let offset = 0;
  for (const chunk of record.chunks) {
    const block = Math.floor(offset / blockBytes);
    if (Math.floor((offset + chunk.length - 1) / blockBytes) !== block) return undefined;
    (blocks[block] ??= []).push(chunk);
    offset += chunk.length;
  }
  return offset === record.size ? blocks : undefined;
}

/** `read`, ending after `length` bytes (a block of a device read as runs of blocks). */
function limitedTo(read: ByteReader, length: number): ByteReader {
  let left = length;
  return async (into) => {
    if (left === 0) return 0;
    const n = await read(into.length > left ? into.subarray(0, left) : into);
    if (n === 0) throw new Error(`the device's reader ended ${left} bytes before a block's end`);
    left -= n;
    return n;
  };
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

  /** A tree stream's index entries, in walk order. */
  treeEntries(name: string): AsyncIterable<TreeEntry> {
    return readEntries(
      this.repo.readStream(this.record(indexStreamName(name)), () => undefined, this.context, {
        lean: true,
      }),
    );
  }

  private treeSource(name: string): TreeSource {
    const record = this.record(name);
    return {
      entries: () => this.treeEntries(name),
      forEachChunk: async (write, spans) => {
        if (!spans) {
          await this.repo.forEachChunk(record, write, this.onBytes, this.context);
          return;
        }
        // The spans' chunks are read as one stream; each piece is handed on with its offset in
        // the data stream, split where a span ends.
        const chunks: ChunkRef[] = [];
        const placed: Array<{ from: number; at: number; length: number }> = [];
        let at = 0;
        let next = 0;
        let from = 0;
        for (const [first, count] of spans) {
          for (; next < first; next++) at += record.chunks[next]!.length;
          let length = 0;
          for (; next < first + count; next++) {
            const chunk = record.chunks[next]!;
            chunks.push(chunk);
            length += chunk.length;
          }
          placed.push({ from, at, length });
          from += length;
          at += length;
        }
        let k = 0;
        await this.repo.forEachChunk(
          { ...record, chunks, size: from },
          async (bytes, offset, zero) => {
            for (let done = 0; done < bytes.length;) {
              const p = offset + done;
              while (p >= placed[k]!.from + placed[k]!.length) k++;
              const span = placed[k]!;
              const n = Math.min(bytes.length - done, span.from + span.length - p);
              await write(bytes.subarray(done, done + n), span.at + (p - span.from), zero);
              done += n;
            }
          },
          this.onBytes,
          this.context,
        );
      },
    };
  }

  restoreTree(
    name: string,
    root: string,
    ctx: DriverContext,
    options: { paths?: readonly string[] } = {},
  ): ReturnType<typeof restoreTreeInto> {
    return restoreTreeInto(this.treeSource(name), root, ctx, options);
  }

  treeAsTar(name: string, prefix: string): Readable {
    return treeAsTar(this.treeSource(name), prefix);
  }

  treesAsTar(
    parts: ReadonlyArray<{ file: string; content: Buffer } | { stream: string; prefix: string }>,
  ): Readable {
    return treesAsTar(
      parts.map((p) => ('file' in p ? p : { tree: this.treeSource(p.stream), prefix: p.prefix })),
    );
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
