/**
 * `docker-compose:PROJECT`: a Compose project as one target, every container and volume of it
 * in one point (agents/drivers/docker, compose*.ts). It takes a container's backup options; its
 * restore takes none of a container's remaps, which name one container.
 */
import { z } from 'zod';
import { ValidationError } from '../errors';
import { containerBackupFlags, containerBackupOptions, DOCKER_ENGINE } from './docker';
import type { PlatformSpec } from './spec';

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
  restoreOptions: z.object({}).strict(),
  engine: DOCKER_ENGINE,
  cli: { backup: containerBackupFlags, restore: [] },
} as const satisfies PlatformSpec<'docker-compose'>;
