/**
 * Releasing the holds a killed (or failed) LXD job left in the agent's journal
 * (agents/core/holds.ts). Each record names the LXD socket and project it was taken on, and each
 * release looks at LXD first and does only what is still to do:
 *
 * - `lxd.state` (an instance frozen or stopped for a backup): thawed, or started, unless it runs
 *   (once a stop the killed agent asked for, which LXD carries on with, has ended).
 * - `lxd.backup` (LXD's backup file of an instance or volume): deleted. LXD may still be writing
 *   it (its operation outlives the agent) and refuses to delete it until then: the release waits
 *   a little, and a record that still fails stays for the next sweep.
 * - `lxd.import` (a restore's import): removed, or past an in-place swap's point of no return,
 *   the swap finished (restore.ts releaseImport).
 * - `lxd.sandbox` (a restore test's sandbox): removed, if it is one (sandbox.ts).
 */
import { DriverError } from '../../../kernel/errors';
import type { HoldRecord } from '../../core/holds';
import { LxdClient } from './client';
import { isNotFound, translate } from './errors';
import { changeState, getInstance, type Engine } from './instance';
import { releaseImport } from './restore';
import { removeSandbox } from './sandbox';

/** How long a release waits for LXD to finish writing a backup file before it gives up for now. */
const BACKUP_BUSY_WAIT_MS = 20_000;

function engineOf(base: Engine, data: Record<string, unknown>): Engine {
  const socketPath = typeof data.socketPath === 'string' ? data.socketPath : base.socketPath;
  const project = typeof data.project === 'string' ? data.project : base.project;
  if (socketPath === base.socketPath && project === base.project) return base;
  return { client: new LxdClient({ socketPath, project }), socketPath, project };
}

/** The id of a stop of this instance LXD is running (one the killed agent asked for), if any. */
async function runningStop(engine: Engine, name: string): Promise<string | undefined> {
  const operations = await engine.client.get<{
    running?: Array<{
      id: string;
      description?: string;
      resources?: Record<string, string[]> | null;
    }>;
  }>('/1.0/operations?recursion=1');
  return (operations.running ?? []).find(
    (op) =>
      /stop/i.test(op.description ?? '') &&
      Object.values(op.resources ?? {})
        .flat()
        .some((resource) => resource.split('?')[0]!.endsWith(`/instances/${name}`)),
  )?.id;
}

export async function releaseLxdHold(base: Engine, record: HoldRecord): Promise<void> {
  const engine = engineOf(base, record.data);
  const { data } = record;
  switch (record.kind) {
    case 'lxd.state': {
      const name = String(data.instance);
      let instance = await getInstance(engine, name);
      if (!instance) return;
      // LXD runs a stop the killed agent asked for to its end (its own timeout bounds it): an
      // instance seen running now may be stopped a moment later. Starting it only if it is
      // stopped must wait for that stop; a graceful stop that times out leaves it running.
      const stop =
        data.undo === 'start' && instance.status !== 'Stopped'
          ? await runningStop(engine, name)
          : undefined;
      if (stop) {
        await engine.client.wait(stop).catch(() => undefined);
        instance = await getInstance(engine, name);
        if (!instance) return;
      }
      if (instance.status === 'Frozen') await changeState(engine, name, 'unfreeze');
      else if (instance.status === 'Stopped' && data.undo === 'start') {
        await changeState(engine, name, 'start');
      }
      return;
    }
    case 'lxd.backup': {
      const path = String(data.path);
      const deadline = Date.now() + BACKUP_BUSY_WAIT_MS;
      for (;;) {
        try {
          await engine.client.run('DELETE', path);
          return;
        } catch (err) {
          if (isNotFound(err)) return;
          if (Date.now() > deadline)
            throw translate(err, `deleting backup ${path}`, engine.socketPath);
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    case 'lxd.import':
      await releaseImport(engine, data);
      return;
    case 'lxd.sandbox':
      await removeSandbox(engine, String(data.name));
      return;
    default:
      throw new DriverError(`unknown lxd hold ${record.kind}`);
  }
}
