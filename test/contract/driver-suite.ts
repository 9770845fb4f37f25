/**
 * The Driver contract (agents/core/driver.ts) as one suite every platform runs against its real
 * engine (restic's `internal/backend/test/suite.go` is the model, as for store-suite.ts): the
 * promises every driver makes are proven once, and a new platform's contract test is a fixture and
 * one call (docker-driver.test.ts, lxd-volume.test.ts, path-driver.test.ts are short examples):
 *
 *   describeDriverContract(
 *     'vsphere',
 *     async () => {
 *       const target = await makeVm(`${RUN}-vm`);            // powered on, a few MiB on its disks
 *       return {
 *         driver: createVsphereDriver({ url, user, password }),
 *         target,
 *         missing: `${RUN}-missing`,
 *         copyName: (label) => `${RUN}-${label}`,
 *         content: diskDigests,       // sha256 of each disk's bytes (and config that must come back)
 *         state: powerState,          // 'poweredOn'...
 *         leftovers: () => inventory(RUN), // VMs, snapshots, datastore files of the run
 *         change: writeToDisk,        // only with inPlace: true
 *       };
 *     },
 *     { inPlace: true, holds: [{ label: 'snapshot', options: {} }] },
 *   );
 *
 * THE CASES, in this order. They share ONE target and ONE good backup of it (taken in the
 * suite's beforeAll): every case but the last must leave the target as it found it, so sharing
 * it is itself a check, and the engine does one backup instead of five.
 * 1. A backup of `missing` rejects with TargetNotFound naming it and stores nothing; `exists`
 *    says false; nothing is left.
 * 2. A restore onto `target`'s own name, not in place, rejects with NameTaken naming it, and
 *    creates and changes nothing (not declared with `nameTaken: false`: a server restore merges).
 * 3. Per hold: the sink fails midway through the last stream (read while the most is held): the
 *    backup rejects with the sink's error; `state` matched the hold's `during` when it failed;
 *    afterwards `state` is as before (a workload that ran runs) and `leftovers` are as before
 *    (no helper, temporary image or volume, LXD backup file, snapshot...).
 * 4. Per hold: the job is abandoned (DriverContext.signal) midway through the first stream: a
 *    TransientError saying so, nothing stored from that stream on, state and leftovers as before.
 * 5. A restore under a new name whose source fails its integrity check midway through the last
 *    stream (everything before it was already created) rejects with that error, leaves
 *    `leftovers` as before and `exists(copy)` as before.
 * 6. A restore under a new name gives back `content` equal to the target's at backup time, in the
 *    same `state`, as `<platform>:<copy>`; the original's content and state are unchanged.
 * 7. With `inPlace: true`, last: after `change`, an in-place restore whose source breaks midway
 *    leaves the target with the changed content, in the same state, and nothing left.
 *
 * THE FIXTURE (`setup` runs once, in the suite's beforeAll, after the file's own beforeAll; every
 * name must carry the file's run prefix: the file's afterAll removes what the suite made):
 * - `driver`: made as the agent makes it. `restoreDriver`: where restores go when not `driver`
 *   (lxd-server restores onto a second daemon).
 * - `target`: a name the driver can back up now, made by `setup` (or by the file's beforeAll).
 *   It runs if the platform's targets run, and its streams hold a few MiB, so "midway" exists.
 * - `missing`: a name no target has. `copyName(label)`: a fresh name per label for what a restore
 *   creates (for a server: the one name it restores onto).
 * - `content(name)`: what must come back byte for byte (sha256 of volume files, files, disks,
 *   instance rootfs content, definitions), comparable with toEqual; equal for a faithful copy and
 *   its original, so key it by mount point or service, never by names that embed the target's.
 * - `state(name)`: how it runs ({Running, Paused}, a status, a power state; a constant where
 *   nothing runs).
 * - `leftovers()`: everything on the engine the run owns (with ids where identity matters: a
 *   failed in-place restore must not have replaced the container) and everything Stowage could
 *   leave behind anywhere (helpers, temporary images and volumes, backup files, snapshots).
 * - `change(name)`: changes content the way an update would (case 7). `cleanup()`: in afterAll.
 * THE OPTIONS (read when the cases are declared): `holds`, the backup options cases 3 and 4 run
 * under (default one run with none), each with a label and `during`, what `state` matches
 * (toMatchObject) while the hold is on; `inPlace`; `nameTaken: false`; `hints`, text the
 * TargetNotFound and NameTaken messages must contain besides the name; `breakIn`, the one stream
 * cases 3 to 5 interfere with instead of the defaults; `timeoutMs` per case.
 *
 * The return value hands the suite's good backup to the platform's own tests that follow it in
 * the same file (lxd-server looks at the backup and at the daemon case 6 restored onto).
 */
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type {
  BackupOptions,
  BackupOutcome,
  BackupSink,
  Driver,
  StreamInfo,
} from '../../agents/core/driver';
import { IntegrityError } from '../../kernel/errors';
import {
  breakingSource,
  makeDriverContext,
  makeMemoryPoint,
  type MemoryPoint,
} from '../fixtures/memory-point';

export interface DriverFixture {
  driver: Driver;
  /** Where restores go, when not through `driver` (default: `driver`). */
  restoreDriver?: Driver;
  target: string;
  missing: string;
  copyName(label: string): string;
  content(name: string): Promise<unknown>;
  state(name: string): Promise<unknown>;
  leftovers(): Promise<unknown>;
  change?(name: string): Promise<void>;
  cleanup?(): Promise<void>;
}

export interface DriverHold {
  /** Shown in the case's title. */
  label: string;
  options: BackupOptions;
  /** What `state(target)` must match (toMatchObject) while the backup holds it. */
  during?: unknown;
}

export interface DriverContractOptions {
  holds?: DriverHold[];
  /** Whether a restore onto an existing target's name is refused (false: it merges, a server). */
  nameTaken?: boolean;
  /** Whether an in-place restore applies: the fixture then gives `change`, and case 7 runs. */
  inPlace?: boolean;
  /** Text the error messages must contain besides the name (how to go on). */
  hints?: { targetNotFound?: string; nameTaken?: string };
  /**
   * The one stream, from the good backup's stream names, that the failing cases interfere with
   * (default: the last stream for a failing sink and a broken restore, the first for an abandoned
   * job; each the first or last of several pieces, so that there is a midway).
   */
  breakIn?: (streams: string[]) => string;
  timeoutMs?: number;
}

/** What the suite hands back to the platform's own tests, once its beforeAll has run. */
export interface DriverContract {
  /** The suite's good backup of the target: its outcome and the point it wrote. */
  readonly backup: { outcome: BackupOutcome; point: MemoryPoint };
}

/**
 * Where a case interferes with a backup: `act` runs once `bytes` of `stream` have been handed on
 * (after the piece that reaches them). Bytes, not pieces: a stream read from a socket comes in
 * pieces of whatever size each read found, so a midway counted in pieces of the good backup may
 * lie past the end of the same stream in fewer, larger pieces (a backup that then was not
 * abandoned at all, as happened once in CI).
 */
interface Interference {
  stream: string;
  bytes: number;
  act: () => Promise<void>;
}

/**
 * A memory point whose sink runs `at.act` midway through one stream (what it throws fails the
 * stream, as a store that went away does), and that counts each stream's pieces.
 */
function makePoint(at?: Interference): MemoryPoint & { pieces: Map<string, number> } {
  const pieces = new Map<string, number>();
  const point = makeMemoryPoint({ onChunk: (info, piece) => pieces.set(info.name, piece) });
  const sink: BackupSink = {
    writeStream(info: StreamInfo, data: Readable) {
      if (!at || info.name !== at.stream) return point.sink.writeStream(info, data);
      async function* interfered() {
        let bytes = 0;
        let acted = false;
        for await (const chunk of data) {
          yield chunk as Buffer;
          bytes += (chunk as Buffer).length;
          if (!acted && bytes >= at!.bytes) {
            acted = true;
            await at!.act();
          }
        }
      }
      return point.sink.writeStream(info, Readable.from(interfered(), { objectMode: false }));
    },
  };
  return { ...point, sink, pieces };
}

/**
 * The stream to interfere with and where: half way through the first (or last) one of several
 * pieces in the good backup, by its size there.
 */
function midway(
  streams: string[],
  good: { pieces: Map<string, number>; bytes: Map<string, Buffer> },
  which: 'first' | 'last',
  chosen?: string,
): { stream: string; bytes: number } {
  const long = streams.filter((s) => (good.pieces.get(s) ?? 0) >= 2);
  const candidates = long.length > 0 ? long : streams;
  const stream = chosen ?? ((which === 'first' ? candidates[0] : candidates.at(-1)) as string);
  return { stream, bytes: Math.max(1, Math.ceil((good.bytes.get(stream)?.length ?? 0) / 2)) };
}

/** `healthy` with `stream` failing its integrity check midway (64 KiB pieces: memory-point). */
function breakMidway(point: MemoryPoint, stream: string) {
  const integrity = new IntegrityError(`a chunk of ${stream} failed its integrity check`);
  const at = Math.max(1, Math.ceil((point.bytes.get(stream)?.length ?? 0) / 65536 / 2));
  return { integrity, source: breakingSource(point.source(), (s) => s === stream, integrity, at) };
}

export function describeDriverContract(
  platform: string,
  setup: () => Promise<DriverFixture>,
  options: DriverContractOptions = {},
): DriverContract {
  const holds: DriverHold[] = options.holds ?? [{ label: 'default', options: {} }];
  const timeout = options.timeoutMs ?? 60_000;
  const contract = {} as { backup: DriverContract['backup'] };

  describe(`Driver contract (${platform})`, () => {
    let f: DriverFixture;
    let restorer: Driver;
    let good: MemoryPoint;
    let outcome: BackupOutcome;
    let streams: string[];
    let pieces: Map<string, number>;
    let chosen: string | undefined;
    let atBackup: { content: unknown; state: unknown };

    const metadata = () => JSON.parse(JSON.stringify(outcome.metadata)) as Record<string, unknown>;

    beforeAll(async () => {
      f = await setup();
      restorer = f.restoreDriver ?? f.driver;
      const point = makePoint();
      outcome = await f.driver.backup(f.target, point.sink, makeDriverContext());
      good = point;
      pieces = point.pieces;
      streams = point.stored.map((s) => s.name);
      chosen = options.breakIn?.(streams);
      contract.backup = { outcome, point };
      atBackup = { content: await f.content(f.target), state: await f.state(f.target) };
    }, timeout * 2);

    afterAll(async () => {
      await f?.cleanup?.();
    }, timeout);

    it(
      'rejects a backup of an unknown target with TargetNotFound naming it, storing nothing',
      async () => {
        // Arrange
        const point = makePoint();
        const before = await f.leftovers();

        // Act
        const attempt = f.driver.backup(f.missing, point.sink, makeDriverContext());

        // Assert
        await expect(attempt).rejects.toMatchObject({
          name: 'TargetNotFound',
          message: expect.stringContaining(f.missing),
        });
        if (options.hints?.targetNotFound) {
          await expect(attempt).rejects.toThrow(options.hints.targetNotFound);
        }
        expect(point.stored).toEqual([]);
        expect(await f.driver.exists(f.missing)).toBe(false);
        expect(await f.leftovers()).toEqual(before);
      },
      timeout,
    );

    if (options.nameTaken !== false) {
      it(
        'refuses with NameTaken to restore onto the name of an existing target, creating and changing nothing',
        async () => {
          // Arrange
          const before = { leftovers: await f.leftovers(), state: await f.state(f.target) };

          // Act
          const attempt = restorer.restore(
            metadata(),
            good.source(),
            { name: f.target, inPlace: false },
            makeDriverContext(),
          );

          // Assert
          await expect(attempt).rejects.toMatchObject({
            name: 'NameTaken',
            message: expect.stringContaining(f.target),
          });
          if (options.hints?.nameTaken) {
            await expect(attempt).rejects.toThrow(options.hints.nameTaken);
          }
          expect(await f.leftovers()).toEqual(before.leftovers);
          expect(await f.state(f.target)).toEqual(before.state);
          expect(await f.content(f.target)).toEqual(atBackup.content);
        },
        timeout,
      );
    }

    for (const hold of holds) {
      it(
        `releases what it held (${hold.label}) and leaves nothing behind when the sink fails midway`,
        async () => {
          // Arrange
          const before = { leftovers: await f.leftovers(), state: await f.state(f.target) };
          const where = midway(streams, { pieces, bytes: good.bytes }, 'last', chosen);
          const broke = new Error(`the store went away while storing ${where.stream}`);
          let during: unknown;
          const point = makePoint({
            ...where,
            act: async () => {
              during = await f.state(f.target);
              throw broke;
            },
          });

          // Act
          const attempt = f.driver.backup(f.target, point.sink, makeDriverContext(), hold.options);

          // Assert
          await expect(attempt).rejects.toThrow(broke.message);
          if (hold.during !== undefined) expect(during).toMatchObject(hold.during as object);
          expect(await f.state(f.target)).toEqual(before.state);
          expect(await f.leftovers()).toEqual(before.leftovers);
        },
        timeout,
      );

      it(
        `stops a backup whose job is abandoned midway (${hold.label}), releasing what it held and leaving nothing behind`,
        async () => {
          // Arrange
          const before = { leftovers: await f.leftovers(), state: await f.state(f.target) };
          const where = midway(streams, { pieces, bytes: good.bytes }, 'first', chosen);
          const abandon = new AbortController();
          let during: unknown;
          const point = makePoint({
            ...where,
            act: async () => {
              during = await f.state(f.target);
              abandon.abort();
            },
          });

          // Act
          const attempt = f.driver.backup(
            f.target,
            point.sink,
            makeDriverContext({ signal: abandon.signal }),
            hold.options,
          );

          // Assert
          await expect(attempt).rejects.toMatchObject({
            name: 'TransientError',
            message: expect.stringContaining('abandoned'),
          });
          if (hold.during !== undefined) expect(during).toMatchObject(hold.during as object);
          expect(point.stored.map((s) => s.name)).toEqual(
            streams.slice(0, streams.indexOf(where.stream)),
          );
          expect(await f.state(f.target)).toEqual(before.state);
          expect(await f.leftovers()).toEqual(before.leftovers);
        },
        timeout,
      );
    }

    it(
      'removes everything it created when a stream breaks midway through a restore under a new name',
      async () => {
        // Arrange
        const copy = f.copyName('broken');
        const { integrity, source } = breakMidway(good, chosen ?? (streams.at(-1) as string));
        const before = { leftovers: await f.leftovers(), exists: await restorer.exists(copy) };

        // Act
        const attempt = restorer.restore(
          metadata(),
          source,
          { name: copy, inPlace: false },
          makeDriverContext(),
        );

        // Assert
        await expect(attempt).rejects.toThrow(integrity.message);
        expect(await restorer.exists(copy)).toBe(before.exists);
        expect(await f.leftovers()).toEqual(before.leftovers);
      },
      timeout,
    );

    it(
      'restores what it backed up byte for byte under a new name, leaving the original as it was',
      async () => {
        // Arrange
        const copy = f.copyName('copy');

        // Act
        const result = await restorer.restore(
          metadata(),
          good.source(),
          { name: copy, inPlace: false },
          makeDriverContext(),
        );

        // Assert
        expect(result).toEqual({ restoredTarget: `${restorer.platform}:${copy}` });
        expect(await restorer.exists(copy)).toBe(true);
        expect(await f.content(copy)).toEqual(atBackup.content);
        expect(await f.state(copy)).toEqual(atBackup.state);
        expect(await f.content(f.target)).toEqual(atBackup.content);
        expect(await f.state(f.target)).toEqual(atBackup.state);
      },
      timeout,
    );

    // Last: it leaves the target changed.
    if (options.inPlace) {
      it(
        'leaves the target as it was, running as before, when a stream breaks midway through an in-place restore',
        async () => {
          // Arrange
          await f.change!(f.target);
          const changed = {
            content: await f.content(f.target),
            state: await f.state(f.target),
            leftovers: await f.leftovers(),
          };
          expect(changed.content).not.toEqual(atBackup.content);
          const { integrity, source } = breakMidway(good, chosen ?? (streams.at(-1) as string));

          // Act
          const attempt = restorer.restore(
            metadata(),
            source,
            { name: f.target, inPlace: true },
            makeDriverContext(),
          );

          // Assert
          await expect(attempt).rejects.toThrow(integrity.message);
          expect(await f.content(f.target)).toEqual(changed.content);
          expect(await f.state(f.target)).toEqual(changed.state);
          expect(await f.leftovers()).toEqual(changed.leftovers);
        },
        timeout,
      );
    }
  });
  return contract;
}
