/**
 * `docker-compose:PROJECT`: a Compose project as one target, every container and volume of it
 * in one point (agents/drivers/docker, compose*.ts). It takes a container's backup options; its
 * restore takes none of a container's remaps, which name one container.
 */
import { z } from 'zod';
import { ValidationError } from '../errors';
import { containerBackupFlags, containerBackupOptions, DOCKER_ENGINE } from './docker';
import {
  planBytes,
  ranAtBackup,
  streamSize,
  streamsUnder,
  type PlanInput,
  type PlatformPlan,
  type PlanStep,
} from './restore-plan';
import { treeRestoreFlags, treeRestoreShape } from './options';
import type { PlatformSpec } from './spec';

/**
 * A project restore (agents/drivers/docker compose.ts, compose-in-place.ts): under a new name,
 * networks, volumes (`<old>_x` becomes `<new>_x`) and containers in dependency order; in place,
 * every image loaded and volume read into a temporary volume first, then the containers stopped
 * (dependants first), set aside, and recreated over the volumes' replaced contents.
 */
function planProjectRestore(input: PlanInput): PlatformPlan {
  const { name, sourceName, inPlace } = input;
  const services = String(input.point.summary.services ?? '');
  const containers = Number(input.point.summary.containers ?? 0);
  const networks = Number(input.point.summary.networks ?? 0);
  const volumes = streamsUnder(input, 'volume');
  const renamed = (v: string) =>
    v.startsWith(`${sourceName}_`) ? `${name}_${v.slice(sourceName.length + 1)}` : `${name}_${v}`;
  const size = (v: string) => planBytes(streamSize(input, `volume/${v}`));
  const project = `project ${name}: ${containers} container(s)${services ? ` (services ${services})` : ''}`;
  const steps: PlanStep[] = [];
  if (inPlace && input.existing) {
    steps.push({
      action: 'read',
      what: `${volumes.length} temporary volume(s) and the images`,
      detail: 'every stream read first, while the project keeps running',
    });
    steps.push({
      action: 'stop',
      what: `the containers of project ${name}`,
      detail: 'dependants first',
    });
    steps.push({
      action: 'rename',
      what: `the containers of project ${name}`,
      detail: 'set aside, then removed',
    });
    for (const v of volumes) {
      steps.push({ action: 'replace', what: `volume ${v}`, detail: `its contents (${size(v)})` });
    }
    steps.push({
      action: 'create',
      what: 'missing networks',
      detail: `of the ${networks} recorded`,
    });
    steps.push({
      action: 'replace',
      what: project,
      detail: 'recreated with their compose labels and aliases',
    });
  } else {
    if (networks > 0) {
      steps.push({
        action: 'create',
        what: `${networks} network(s)`,
        detail: `named for project ${name}`,
      });
    }
    for (const v of volumes) {
      steps.push({
        action: 'create',
        what: `volume ${renamed(v)}`,
        detail: `copy of volume ${v} (${size(v)})`,
      });
    }
    steps.push({
      action: 'create',
      what: project,
      detail: 'in dependency order, from their committed images',
    });
  }
  if (ranAtBackup(input) || input.point.summary.state === 'partial') {
    steps.push({
      action: 'start',
      what: `the containers of project ${name} that ran at backup time`,
      detail: 'in dependency order',
    });
  }
  return { steps };
}

export const dockerCompose = {
  name: 'docker-compose',
  noun: 'Compose project',
  example: 'docker-compose:shop',
  /** Compose's rule for project names (compose-spec): lower case, digits, _ and -. */
  checkName(name: string): void {
    if (!/^[a-z0-9][a-z0-9_-]*$/.test(name)) {
      throw new ValidationError(
        `"${name}" is not a valid Compose project name (lower-case letters, digits, _ and -, starting with a letter or digit)`,
      );
    }
  },
  listed: true,
  snapshots: false,
  backupOptions: containerBackupOptions,
  restoreOptions: z.object(treeRestoreShape).strict(),
  engine: DOCKER_ENGINE,
  cli: { backup: containerBackupFlags, restore: treeRestoreFlags },
  planRestore: planProjectRestore,
} as const satisfies PlatformSpec<'docker-compose'>;
