/**
 * `lxd-server:AGENT`: the whole LXD server an agent runs next to, named after that agent
 * (agents/drivers/lxd, server*.ts). Its backup takes the instances' options; its restore only
 * `recover` (per-instance options belong to a point of that instance).
 */
import { z } from 'zod';
import { LXD_ENGINE, lxdBackupFlags, lxdBackupOptions } from './lxd';
import type { PlatformSpec } from './spec';

export const lxdServer = {
  name: 'lxd-server',
  noun: 'LXD server',
  example: 'lxd-server:host1',
  listed: true,
  namedAfterAgent: true,
  snapshots: false,
  backupOptions: lxdBackupOptions,
  restoreOptions: z.object({ recover: z.boolean().optional() }).strict(),
  engine: LXD_ENGINE,
  cli: {
    backup: lxdBackupFlags,
    restore: [
      {
        flags: '--recover',
        help: 'LXD servers: first bring back (LXD recover) instances and volumes whose storage survived',
        toBody: (value) => (value ? { recover: true } : {}),
      },
    ],
  },
} as const satisfies PlatformSpec<'lxd-server'>;
