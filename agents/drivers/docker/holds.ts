/**
 * Releasing the holds a killed (or failed) Docker job left in the agent's journal
 * (agents/core/holds.ts). Each release looks at dockerd first and does only what is still to
 * do, so it is safe for a hold that was only partly taken, or already released:
 *
 * - `docker.quiesce` (a container paused or stopped for a backup): unpaused, or started, if it
 *   is not running (once a stop the killed agent asked for has had time to end); paused again if
 *   its owner had it paused.
 * - `docker.helper`, `docker.image`, `docker.volume`, `docker.container`: removed, if they are
 *   ours (a helper's label, a volume's restore label, a container created after the record).
 * - `docker.aside` (an in-place restore's original, stopped and renamed): named back and
 *   started if it ran.
 * - `docker.swap` (an in-place restore past its point of no return): finished (finishSwap).
 * - `docker.sandbox` (a restore test's sandbox): removed with its volumes (sandbox.ts).
 */
import { DriverError } from '../../../kernel/errors';
import type { Logger } from '../../../kernel/logger';
import type { HoldRecord } from '../../core/holds';
import type { InspectJson } from './config';
import { inspectByName, removeImageRef, STOP_GRACE_S, type Engine } from './engine';
import { statusOf, translate } from './errors';
import { removeHelper } from './helper';
import { RESTORE_LABEL } from './restore';
import { finishSwap, type SwapPlan } from './restore-in-place';
import { removeSandbox } from './sandbox';

const str = (data: Record<string, unknown>, key: string): string => {
  const value = data[key];
  if (typeof value !== 'string' || value === '') {
    throw new DriverError(`the hold record has no ${key}`);
  }
  return value;
};

/**
 * The container as it is once a stop the killed agent may have asked for has run its course.
 * dockerd goes on with a stop after its client is gone, for up to the stop's grace period, so a
 * container seen running right after the kill may stop a few seconds later: deciding then ("it
 * runs, nothing to do") left it stopped, and the retried backup took the stop for its owner's.
 * So while it runs, look again until the grace (from the moment the record was written, before
 * the stop was asked for, plus a margin) has passed. (Asking dockerd's event log whether a stop
 * was under way instead missed it in two fault-suite runs out of four; waiting costs at most the
 * grace, and only for a hold taken within it.)
 */
async function settledAfterStop(
  engine: Engine,
  id: string,
  record: HoldRecord,
  log: Logger,
): Promise<InspectJson | undefined> {
  const grace = typeof record.data.stopGraceS === 'number' ? record.data.stopGraceS : STOP_GRACE_S;
  const until = Date.parse(record.takenAt) + (grace + STOP_SETTLE_MARGIN_S) * 1000;
  let found = await inspectId(engine, id);
  if (found?.State?.Running && !found.State.Paused && Date.now() < until) {
    log.info('agent.hold.docker_stop', {
      container: id.slice(0, 12),
      waitingUntil: new Date(until).toISOString(),
    });
  }
  while (found?.State?.Running && !found.State.Paused && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 250));
    found = await inspectId(engine, id);
  }
  return found;
}

/** Beyond the grace: dockerd's own kill and the container's exit. */
const STOP_SETTLE_MARGIN_S = 5;

async function inspectId(engine: Engine, id: string): Promise<InspectJson | undefined> {
  try {
    return (await engine.docker.getContainer(id).inspect()) as unknown as InspectJson;
  } catch (err) {
    if (statusOf(err) === 404) return undefined;
    throw translate(err, `inspecting container ${id}`, engine.socketPath);
  }
}

export async function releaseDockerHold(
  engine: Engine,
  record: HoldRecord,
  log: Logger,
): Promise<void> {
  const { data } = record;
  const ctx = {
    log,
    signal: new AbortController().signal,
    phase: () => undefined,
  };
  try {
    switch (record.kind) {
      case 'docker.quiesce': {
        const id = str(data, 'container');
        const state = (
          data.consistency === 'stop'
            ? await settledAfterStop(engine, id, record, log)
            : await inspectId(engine, id)
        )?.State;
        if (!state) return;
        const container = engine.docker.getContainer(str(data, 'container'));
        const action = state.Paused
          ? 'unpause'
          : !state.Running && data.consistency === 'stop'
            ? 'start'
            : 'none';
        log.info('agent.hold.docker', {
          container: data.name,
          running: state.Running === true,
          paused: state.Paused === true,
          action,
        });
        if (action === 'unpause') await container.unpause();
        else if (action === 'start') await container.start();
        if (data.ownerPaused === true && !state.Paused) await container.pause();
        // A start can race the end of the killed agent's stop: make sure it runs, or keep the
        // record for the next sweep rather than call the hold released.
        const after = data.consistency === 'stop' ? await inspectId(engine, id) : undefined;
        if (after && !after.State?.Running) {
          throw new DriverError(
            `container ${String(data.name)} did not run again after its stop for a backup: run \`docker start ${String(data.name)}\``,
          );
        }
        return;
      }
      case 'docker.helper':
        await removeHelper(engine.docker, str(data, 'name'), engine.socketPath);
        return;
      case 'docker.image':
        if (!(await removeImageRef(engine, str(data, 'ref'), ctx))) {
          throw new DriverError(`image ${str(data, 'ref')} could not be removed`);
        }
        return;
      case 'docker.volume': {
        const name = str(data, 'name');
        let labels: Record<string, string> | null | undefined;
        try {
          labels = (await engine.docker.getVolume(name).inspect()).Labels;
        } catch (err) {
          if (statusOf(err) === 404) return;
          throw err;
        }
        // Only the volume this restore made: one of that name made by anyone else stays.
        if (labels?.[RESTORE_LABEL] !== str(data, 'restoreId')) return;
        try {
          await engine.docker.getVolume(name).remove();
        } catch (err) {
          if (statusOf(err) !== 404) throw err;
        }
        return;
      }
      case 'docker.container': {
        const found = await inspectByName(engine, str(data, 'name'));
        const created = (found as { Created?: string } | undefined)?.Created;
        // Only one created after the record was written: the restore's, not a newer owner's.
        if (!found || !created || created < str(data, 'notBefore')) return;
        await engine.docker.getContainer(found.Id).remove({ force: true, v: false });
        return;
      }
      case 'docker.aside': {
        const found = await settledAfterStop(engine, str(data, 'container'), record, log);
        if (!found) return;
        const name = str(data, 'name');
        const container = engine.docker.getContainer(found.Id);
        if (found.Name === `/${str(data, 'old')}`) {
          if (await inspectByName(engine, name)) {
            throw new DriverError(
              `container ${found.Name.slice(1)} was set aside by an in-place restore, but ${name} exists now: rename one of them by hand`,
            );
          }
          await container.rename({ name });
        }
        if (data.ran === true && found.State?.Running !== true) {
          if (found.State?.Paused) await container.unpause();
          else await container.start();
        }
        return;
      }
      case 'docker.swap':
        await finishSwap(engine, data as unknown as SwapPlan, ctx);
        return;
      case 'docker.sandbox':
        await removeSandbox(engine, str(data, 'name'), log);
        return;
      default:
        throw new DriverError(`unknown docker hold ${record.kind}`);
    }
  } catch (err) {
    if (err instanceof DriverError) throw err;
    throw translate(err, `releasing ${record.kind}`, engine.socketPath);
  }
}
