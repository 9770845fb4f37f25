/**
 * `vapp:DC/vapp/NAME`: a vSphere vApp with every child VM in one point (agents/drivers/vsphere,
 * vapp.ts), on the vSphere engine. Its backup takes a VM's disk choice (applied to every child);
 * its restore the VM restore's placement remaps and the power state afterwards.
 */
import { z } from 'zod';
import { ValidationError } from '../errors';
import { stateFlag, stateOption } from './options';
import type { PlatformSpec } from './spec';
import {
  placementFlags,
  placementOptions,
  vmBackupFlags,
  vmBackupOptions,
  VSPHERE_ENGINE,
} from './vsphere';

/** `DC/vapp/NAME` (a datacenter in folders: `F/DC/vapp/NAME`). */
export function splitVappPath(name: string): { datacenter: string; vapp: string } {
  const parts = name.split('/');
  const at = parts.length - 2;
  if (parts.some((p) => p.length === 0) || at < 1 || parts[at] !== 'vapp') {
    throw new ValidationError(
      `"${name}" is not a vApp: write DATACENTER/vapp/NAME (for example vapp:DC0/vapp/shop)`,
    );
  }
  const vapp = parts[at + 1]!;
  if (vapp.length > 80 || /[%\\]/.test(vapp)) {
    throw new ValidationError(`"${vapp}" is not a usable vApp name (1-80 characters, no % or \\)`);
  }
  return { datacenter: parts.slice(0, at).join('/'), vapp };
}

export const vapp = {
  name: 'vapp',
  noun: 'vSphere vApp',
  example: 'vapp:DC0/vapp/shop',
  checkName: (name: string) => void splitVappPath(name),
  listed: true,
  snapshots: false,
  backupOptions: vmBackupOptions,
  restoreOptions: z.object({ ...placementOptions, state: stateOption.optional() }).strict(),
  /** `--name NEW` is vApp NEW in the original's datacenter; a path `DC/vapp/NEW` as it is. */
  restoreName(source: string, name: string | undefined) {
    if (name === undefined || name.includes('/')) return name;
    return `${splitVappPath(source).datacenter}/vapp/${name}`;
  },
  engine: VSPHERE_ENGINE,
  cli: { backup: vmBackupFlags, restore: [...placementFlags, stateFlag] },
} as const satisfies PlatformSpec<'vapp'>;
