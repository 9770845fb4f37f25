/**
 * The data path's vocabulary. A repository is a set of content-addressed chunks packed into
 * larger objects, plus per-recovery-point manifests that list, per stream, the ordered chunks.
 *
 *   stream ─► chunker (content-defined, FastCDC) ─► chunk ─► SHA-256 id
 *          ─► already in the repository? skip : compress ─► encrypt ─► pack ─► store
 */

/** Content-defined chunking parameters. Fixed per repository (changing them defeats dedup). */
export interface ChunkingParams {
  minSize: number;
  avgSize: number;
  maxSize: number;
}

/**
 * 1 MiB average, within 256 KiB .. 4 MiB. The average trades stored bytes for index size: with
 * scattered 1 % changes a 1 MiB average re-stores about half a disk image's bytes, 512 KiB about
 * 30 % (shared/LOCAL-STACK.md); 1 MiB keeps a 1 TB disk at ~1 M chunks.
 */
export const DEFAULT_CHUNKING: ChunkingParams = {
  minSize: 256 * 1024,
  avgSize: 1024 * 1024,
  maxSize: 4 * 1024 * 1024,
};

/** One chunk of a stream: its id (hex SHA-256 of the plain bytes) and plain length. */
export interface ChunkRef {
  id: string;
  length: number;
}

export interface StreamRecord {
  name: string;
  kind: string;
  size: number;
  /** The stream is these chunks in order; each is verified against its id when read. */
  chunks: ChunkRef[];
  /**
   * Set on a block device's stream (a VM disk, core/points.ts writeBlocks): no chunk spans two
   * blocks of this many bytes, so a later backup may take any unchanged block's chunks from here.
   */
  blockBytes?: number;
  /**
   * What the stream was made from, in its driver's words (BackupSink.reuseParent): a later
   * backup whose driver finds the same source takes this stream's chunks without reading it.
   */
  source?: string;
}

/** Where a stored chunk lives: a pack object and the sealed blob's place in it. */
export interface BlobLocation {
  pack: string;
  offset: number;
  length: number;
  /** Plain (decompressed, decrypted) length. */
  rawLength: number;
}

/** Counters of one writer, for progress and the recovery point's sizes. */
export interface WriteStats {
  /** Bytes read from the sources. */
  bytesRead: number;
  /** Plain bytes of chunks the repository did not have. */
  bytesNew: number;
  /** Sealed (compressed, encrypted) bytes uploaded. */
  bytesStored: number;
  chunks: number;
  newChunks: number;
}
