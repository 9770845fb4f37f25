/**
 * LXD's disaster recovery API (what `lxd recover` calls): it scans storage pools for instances
 * and custom volumes whose storage is intact but whose database record is gone (the pool's
 * `backup.yaml` of each says what they were) and recreates the records.
 *
 * Protocol (LXD 5.0, internal endpoints, served under `/internal`, not `/1.0`):
 * - `POST /internal/recover/validate {pools: [...]}` answers `{UnknownVolumes, DependencyErrors}`:
 *   what it found, and what must exist first (a project, a profile, a network it references).
 * - `POST /internal/recover/import {pools: [...]}` recreates them; refused while there are
 *   dependency errors. Recovered instances come back stopped.
 * Each pool is `{name}` for a pool the server has, or a full definition (`name`, `driver`,
 * `config` with its `source`) for one whose record is gone too: LXD mounts it for the scan and
 * recreates its record if it finds anything there.
 */
import { DriverError } from '../../../kernel/errors';
import { translate } from './errors';
import type { Engine } from './instance';

export interface RecoverPool {
  name: string;
  driver?: string;
  description?: string;
  config?: Record<string, string>;
}

export interface RecoveredVolume {
  name: string;
  /** `container`, `virtual-machine`, or `volume` (a custom volume). */
  type: string;
  project: string;
  pool: string;
  snapshotCount: number;
}

interface ValidateAnswer {
  UnknownVolumes: RecoveredVolume[] | null;
  DependencyErrors: string[] | null;
}

/** What a scan of `pools` finds: the unknown volumes and what blocks their import. */
export async function scanForRecovery(
  engine: Engine,
  pools: RecoverPool[],
): Promise<{ found: RecoveredVolume[]; missing: string[] }> {
  try {
    const answer = await engine.client.request<ValidateAnswer>(
      'POST',
      '/internal/recover/validate',
      { body: { pools } },
    );
    return {
      found: answer.metadata.UnknownVolumes ?? [],
      missing: answer.metadata.DependencyErrors ?? [],
    };
  } catch (err) {
    throw translate(
      err,
      `scanning pools ${pools.map((p) => p.name).join(', ')} for lost instances and volumes`,
      engine.socketPath,
    );
  }
}

/**
 * Scans `pools` and brings back every instance and custom volume found; resolves with them
 * (none when there is nothing to recover). Dependency errors are refused before anything is
 * imported, with what to create first.
 */
export async function recoverLost(
  engine: Engine,
  pools: RecoverPool[],
): Promise<RecoveredVolume[]> {
  const { found, missing } = await scanForRecovery(engine, pools);
  if (missing.length > 0) {
    throw new DriverError(
      `LXD cannot recover ${found.map((v) => v.name).join(', ')} until these exist: ${missing.join('; ')} (create them, or restore a server point that has them)`,
    );
  }
  if (found.length === 0) return [];
  try {
    await engine.client.run('POST', '/internal/recover/import', { pools });
  } catch (err) {
    throw translate(
      err,
      `recovering ${found.map((v) => `${v.pool}/${v.name}`).join(', ')}`,
      engine.socketPath,
    );
  }
  return found;
}
