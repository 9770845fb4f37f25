/**
 * vSphere's inventory changes as they happen, so a VM or vApp created, deleted, renamed, moved,
 * powered on or off, or snapshotted reaches the inventory within a second or two instead of at
 * the next 30 s listing (as Docker's and LXD's event streams do for theirs).
 *
 * The PropertyCollector's documented long poll: a collector of the watch's own
 * (CreatePropertyCollector, so its long poll never holds up the session's shared collector,
 * which a server may serve one call at a time), one filter over a ContainerView of the root
 * folder (VirtualMachine, VirtualApp and Folder: the properties a listing shows, and the
 * names and parents paths are made of), then WaitForUpdatesEx in a loop with the version each
 * answer gives. The first answer is the state as it is, and calls back once (a VM made between
 * the agent's first listing and this answer would otherwise wait for the next whole listing);
 * every later one that holds a change calls back, debounced. `maxWaitSeconds` bounds each poll so a dead connection
 * is found. Any failure (vCenter restarted, the session expired) starts over with backoff, and
 * the watch's first answer then calls back, since changes may have been missed meanwhile.
 *
 * The watch logs in with a session of its own (`vim`, a client the caller gives it and this
 * module logs out), so it outlives nothing the driver's jobs use.
 */
import type { Logger } from '../../../kernel/logger';
import { LogEvent } from '../../../kernel/logger';
import type { VimClient } from './vim';
import { child, list, moRef, optText, refXml, viewObjectSpec, type MoRef } from './xml';

/** What is watched: the properties the vsphere and vapp listings read, and the paths' parts. */
export const WATCHED: ReadonlyArray<{ type: string; paths: string[] }> = [
  {
    type: 'VirtualMachine',
    paths: [
      'name',
      'parent',
      'runtime.powerState',
      'snapshot',
      'config.template',
      'config.hardware.device',
    ],
  },
  { type: 'VirtualApp', paths: ['name', 'parent', 'vm'] },
  { type: 'Folder', paths: ['name', 'parent'] },
];

/** Each poll returns after this long at most, so a connection that died unnoticed is found. */
const MAX_WAIT_SECONDS = 60;
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;

export interface InventoryWatchOptions {
  vim: VimClient;
  log: Logger;
  debounceMs?: number;
}

export function watchInventory(options: InventoryWatchOptions, onChange: () => void): () => void {
  const { vim, log } = options;
  const debounceMs = options.debounceMs ?? 200;
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let retryMs = RETRY_MIN_MS;

  const changed = () => {
    if (abort.signal.aborted) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (!abort.signal.aborted) onChange();
    }, debounceMs);
  };

  /** One collector, polled until something fails; resolves only when stopped. */
  const follow = async (): Promise<void> => {
    const sc = await vim.service();
    const collector = moRef(
      await vim.call('CreatePropertyCollector', sc.propertyCollector, {}, abort.signal),
    );
    if (!collector) throw new Error('vSphere created no property collector');
    let view: MoRef | undefined;
    try {
      view = moRef(
        await vim.call(
          'CreateContainerView',
          sc.viewManager,
          {
            container: refXml(sc.rootFolder),
            type: WATCHED.map((w) => w.type),
            recursive: true,
          },
          abort.signal,
        ),
      );
      if (!view) throw new Error('vSphere created no container view');
      await vim.call(
        'CreateFilter',
        collector,
        {
          spec: {
            propSet: WATCHED.map((w) => ({ type: w.type, pathSet: w.paths })),
            objectSet: [viewObjectSpec(view)],
          },
          partialUpdates: false,
        },
        abort.signal,
      );
      let version = '';
      for (let first = true; !abort.signal.aborted;) {
        const set = await vim.call(
          'WaitForUpdatesEx',
          collector,
          { version, options: { maxWaitSeconds: MAX_WAIT_SECONDS } },
          abort.signal,
        );
        if (set === undefined) continue; // the wait ended with no change
        version = optText(set, 'version') ?? version;
        const changes = list(child(set, 'filterSet')).length > 0;
        if (first) {
          first = false;
          retryMs = RETRY_MIN_MS;
          // The state as it is now: whatever changed since the caller's own listing (made before
          // this watch was set up), or since a failure, would be missed without a call back.
          changed();
        } else if (changes) changed();
      }
    } finally {
      // Best effort (a server that restarted has forgotten them); once stopped, the logout
      // that follows ends the session and everything it made.
      if (!abort.signal.aborted) {
        await vim.call('DestroyPropertyCollector', collector).catch(() => undefined);
        if (view) await vim.call('DestroyView', view).catch(() => undefined);
      }
    }
  };

  void (async () => {
    while (!abort.signal.aborted) {
      try {
        await follow();
      } catch (err) {
        if (abort.signal.aborted) break;
        log.warn(LogEvent.driverStep, {
          step: 'vsphere inventory updates',
          retryInMs: retryMs,
          error: err instanceof Error ? err.message : String(err),
        });
        await new Promise((r) => setTimeout(r, retryMs).unref?.());
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      }
    }
    await vim.logout();
  })();

  return () => {
    clearTimeout(timer);
    abort.abort(new Error('the inventory watch stopped'));
  };
}
