/**
 * `lxd-volume:POOL/NAME`: an LXD custom storage volume (agents/drivers/lxd, volume*.ts).
 */
import { z } from 'zod';
import { ValidationError } from '../errors';
import {
  hasTree,
  isValidPoolName,
  LXD_ENGINE,
  lxdBackupFlags,
  poolFlag,
  poolOption,
  treeBytes,
} from './lxd';
import {
  planBytes,
  runsNow,
  streamSize,
  type PlanInput,
  type PlatformPlan,
  type PlanStep,
} from './restore-plan';
import type { PlatformSpec } from './spec';

/**
 * A custom volume restore (agents/drivers/lxd volume-restore.ts): imported whole; in place under
 * a temporary name first, then the instances that use it stopped, the import swapped in, and
 * those instances started again.
 */
function planVolumeRestore(input: PlanInput): PlatformPlan {
  const { name, inPlace, point } = input;
  const snapshots = Number(point.summary.snapshots ?? 0);
  const stream = point.streams[0]?.name ?? 'volume-export';
  const made = hasTree(input)
    ? `created empty, then filled in its pool's directory from the point's trees (${planBytes(treeBytes(input))})`
    : `imported from the export (${planBytes(streamSize(input, stream))})`;
  const imported = `${made}${snapshots ? ` with its ${snapshots} snapshot(s)` : ''}`;
  const volume = `custom volume ${name}`;
  const steps: PlanStep[] = [];
  if (inPlace && input.existing) {
    steps.push({
      action: 'create',
      what: 'a custom volume under a temporary name',
      detail: imported,
    });
    if (runsNow(input)) {
      steps.push({ action: 'stop', what: `the instances that use ${name}` });
    }
    steps.push({
      action: 'replace',
      what: volume,
      detail: 'the import swapped in; their devices keep pointing at it',
    });
    if (runsNow(input)) {
      steps.push({
        action: 'start',
        what: `the instances that use ${name}`,
        detail: 'those that ran',
      });
    }
    return { steps, notes: ['refused if a profile attaches the volume'] };
  }
  steps.push({ action: 'create', what: volume, detail: imported });
  return { steps };
}

const EXAMPLE = 'for example lxd-volume:default/data';

/**
 * LXD's rule for a custom volume name: not empty, no slash or white space, not `.` or `..`
 * (LXD's storage/drivers ValidVolumeName; its snapshots are `NAME/SNAP`, hence no slash).
 */
export function isValidVolumeName(volume: string): boolean {
  return volume.length > 0 && volume !== '.' && volume !== '..' && !/[/\s]/.test(volume);
}

/** The pool and the volume of a custom volume target's name, `POOL/NAME`. */
export function splitVolumeName(name: string): { pool: string; volume: string } {
  const slash = name.indexOf('/');
  if (slash < 0) {
    throw new ValidationError(
      `lxd-volume target "${name}" names no pool: write POOL/NAME (${EXAMPLE})`,
    );
  }
  const pool = name.slice(0, slash);
  const volume = name.slice(slash + 1);
  if (!isValidPoolName(pool)) {
    throw new ValidationError(
      `"${pool}" is not a valid LXD storage pool name (no slash or white space, not starting with -; ${EXAMPLE})`,
    );
  }
  if (!isValidVolumeName(volume)) {
    throw new ValidationError(
      `"${volume}" is not a valid LXD custom volume name (not empty, no slash or white space, not . or ..; ${EXAMPLE})`,
    );
  }
  return { pool, volume };
}

export const lxdVolume = {
  name: 'lxd-volume',
  noun: 'LXD custom volume',
  example: 'lxd-volume:default/data',
  checkName: (name: string) => void splitVolumeName(name),
  listed: true,
  snapshots: false,
  backupOptions: z
    .object({
      consistency: z
        .literal('live', {
          error:
            'a custom volume is captured live; pause and stop apply to instances (back up the instance that uses the volume with it)',
        })
        .optional(),
      snapshots: z.boolean().optional(),
      optimizedStorage: z.boolean().optional(),
    })
    .strict(),
  restoreOptions: z.object({ pool: poolOption.optional() }).strict(),
  /**
   * A custom volume is restored as `POOL/NAME`; a bare `--name NEW` means NEW in `--pool`, else
   * in the point's own pool, so `--name data2` stays beside the original; `--pool P` alone keeps
   * the volume's name in pool P.
   */
  restoreName(source: string, name: string | undefined, options: { pool?: unknown }) {
    const pool = typeof options.pool === 'string' ? options.pool : undefined;
    if (name === undefined)
      return pool !== undefined ? `${pool}/${splitVolumeName(source).volume}` : undefined;
    if (!name.includes('/')) return `${pool ?? splitVolumeName(source).pool}/${name}`;
    const named = splitVolumeName(name).pool;
    if (pool !== undefined && named !== pool) {
      throw new ValidationError(
        `--name ${name} is in pool ${named} but --pool says ${pool}; give the pool once`,
      );
    }
    return name;
  },
  engine: LXD_ENGINE,
  cli: { backup: lxdBackupFlags, restore: [poolFlag] },
  planRestore: planVolumeRestore,
} as const satisfies PlatformSpec<'lxd-volume'>;
