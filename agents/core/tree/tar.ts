/**
 * A tree stream as a POSIX tar, for restores that go through an engine's API (a volume the agent
 * cannot see on its host: a remote engine, a volume driver that is not `local`). The archive is
 * what the engine's own export would have been: `<prefix>/` with the root's attributes, then
 * every entry below it, hard links as `link` entries, numeric owners, PAX records where ustar
 * cannot say it. Built while the data is read: memory stays at the pipe's buffers.
 */
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { IntegrityError } from '../../../kernel/errors';
import { deviceNumbers, type TreeEntry } from './format';
import type { TreeSource } from './restore';

type Pack = ReturnType<typeof tar.pack>;
type EntrySink = ReturnType<Pack['entry']>;
type Header = Parameters<Pack['entry']>[0] & { pax?: Record<string, string> };

/** The ustar size field holds 8 GiB - 1; ids 7 octal digits; tar-stream's mtime 32 bits. */
const USTAR_MAX_SIZE = 0o77777777777;
const USTAR_MAX_ID = 0o7777777;
const USTAR_MAX_MTIME = 2 ** 31 - 1;

function headerOf(entry: TreeEntry, name: string, prefix: string): Header {
  const type =
    entry.type === 'dir'
      ? 'directory'
      : entry.type === 'hardlink'
        ? 'link'
        : entry.type === 'char'
          ? 'character-device'
          : entry.type === 'block'
            ? 'block-device'
            : entry.type;
  const seconds = Math.floor(Number(BigInt(entry.mtime) / 1_000_000n) / 1000);
  const header: Header = {
    name,
    type,
    mode: entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    size: entry.type === 'file' ? (entry.size ?? 0) : 0,
    mtime: new Date(Math.min(Math.max(seconds, 0), USTAR_MAX_MTIME) * 1000),
  };
  const pax: Record<string, string> = {};
  if ((header.size ?? 0) > USTAR_MAX_SIZE) pax.size = String(header.size);
  if (entry.uid > USTAR_MAX_ID) pax.uid = String(entry.uid);
  if (entry.gid > USTAR_MAX_ID) pax.gid = String(entry.gid);
  if (seconds < 0 || seconds > USTAR_MAX_MTIME) pax.mtime = String(seconds);
  if (Object.keys(pax).length > 0) header.pax = pax;
  if (entry.link !== undefined) {
    header.linkname = entry.type === 'hardlink' ? `${prefix}/${entry.link}` : entry.link;
  }
  if (entry.type === 'char' || entry.type === 'block') {
    const { major, minor } = deviceNumbers(entry.rdev ?? 0);
    header.devmajor = major;
    header.devminor = minor;
  }
  return header;
}

async function write(sink: EntrySink, chunk: Buffer): Promise<void> {
  if (sink.write(chunk)) return;
  await new Promise<void>((resolve, reject) => {
    const onDrain = () => {
      sink.off('close', onClose);
      resolve();
    };
    const onClose = () => {
      sink.off('drain', onDrain);
      reject(new Error('the tar stream was closed'));
    };
    sink.once('drain', onDrain);
    sink.once('close', onClose);
  });
}

function entryDone(pack: Pack, header: Header): { sink: EntrySink; done: Promise<void> } {
  let settle!: { resolve: () => void; reject: (err: Error) => void };
  const done = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
  done.catch(() => undefined);
  const sink = pack.entry(header, (err?: Error | null) =>
    err ? settle.reject(err) : settle.resolve(),
  );
  sink.on('error', () => undefined);
  return { sink, done };
}

/** The tree under `prefix/` as a tar stream (`prefix` without slashes at either end). */
export function treeAsTar(source: TreeSource, prefix: string): Readable {
  const pack = tar.pack();
  const index = source.entries()[Symbol.asyncIterator]();
  let current: { sink: EntrySink; done: Promise<void>; left: number; path: string } | undefined;
  const nameOf = (entry: TreeEntry) =>
    entry.path === '' ? `${prefix}/` : `${prefix}/${entry.path}${entry.type === 'dir' ? '/' : ''}`;
  const nextDataFile = async () => {
    for (;;) {
      const next = await index.next();
      if (next.done) return undefined;
      const entry = next.value;
      const { sink, done } = entryDone(pack, headerOf(entry, nameOf(entry), prefix));
      const size = entry.type === 'file' ? (entry.size ?? 0) : 0;
      if (size > 0) return { sink, done, left: size, path: entry.path };
      sink.end(undefined);
      await done;
    }
  };
  const produce = async () => {
    await source.forEachChunk(async (bytes) => {
      let at = 0;
      while (at < bytes.length) {
        current ??= await nextDataFile();
        if (!current) throw new IntegrityError("the tree's data outlasts its index");
        const n = Math.min(current.left, bytes.length - at);
        // The bytes are valid only until this write resolves; the archive keeps what it is given.
        await write(current.sink, Buffer.from(bytes.subarray(at, at + n)));
        current.left -= n;
        at += n;
        if (current.left === 0) {
          current.sink.end(undefined);
          await current.done;
          current = undefined;
        }
      }
    });
    if (current) throw new IntegrityError(`the tree's data ends inside ${current.path}`);
    const last = await nextDataFile();
    if (last) throw new IntegrityError(`the tree's data ends before ${last.path}`);
    pack.finalize();
  };
  produce().catch((err: unknown) =>
    pack.destroy(err instanceof Error ? err : new Error(String(err))),
  );
  return Readable.from(pack, { objectMode: false });
}
