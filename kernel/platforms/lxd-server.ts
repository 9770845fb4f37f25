/**
 * `lxd-server:AGENT`: the whole LXD server an agent runs next to, named after that agent
 * (agents/drivers/lxd, server*.ts). Its backup takes the instances' options; its restore only
 * `recover` (per-instance options belong to a point of that instance).
 */
import { z } from 'zod';
import { LXD_ENGINE, lxdBackupFlags, lxdBackupOptions } from './lxd';
import {
  planBytes,
  streamSize,
  type PlanInput,
  type PlatformPlan,
  type PlanStep,
} from './restore-plan';
import type { PlatformSpec } from './spec';

/**
 * A whole server restore (agents/drivers/lxd server-restore.ts): it never clobbers. Projects,
 * pools, networks and profiles first, then images, custom volumes and instances; whatever the
 * destination has already is skipped. The instances and volumes its agent lists are known to be
 * skipped here; the rest (other projects, image fingerprints) the agent finds out.
 */
function planServerRestore(input: PlanInput): PlatformPlan {
  const { name, options, point, agentTargets } = input;
  const listed = new Set(agentTargets.map((t) => t.target));
  const count = (key: string) => Number(point.summary[key] ?? 0);
  const steps: PlanStep[] = [];
  const streams: string[] = [];
  for (const [key, noun] of [
    ['projects', 'project'],
    ['pools', 'storage pool'],
    ['networks', 'network'],
    ['profiles', 'profile'],
  ] as const) {
    if (count(key) > 0) {
      steps.push({
        action: 'create',
        what: `${count(key)} ${noun}(s)`,
        detail: `those server ${name} lacks${key === 'profiles' ? ' (an empty existing profile is filled in)' : ''}`,
      });
    }
  }
  if (options.recover === true) {
    steps.push({
      action: 'read',
      what: 'the storage pools',
      detail:
        "LXD's recover brings back the instances and custom volumes whose storage survived, with their current data; only what is still missing comes from the point",
    });
  }
  for (const s of point.streams) {
    const [kind, project, ...rest] = s.name.split('/');
    const size = planBytes(streamSize(input, s.name));
    if (kind === 'image') {
      streams.push(s.name);
      steps.push({
        action: 'create',
        what: `image ${rest.join('/')} (project ${project})`,
        detail: `unless the server has it (${size})`,
      });
    } else if (kind === 'volume' || kind === 'instance') {
      const target = kind === 'volume' ? `lxd-volume:${rest.join('/')}` : `lxd:${rest.join('/')}`;
      const what = `${kind === 'volume' ? 'custom volume' : 'instance'} ${rest.join('/')} (project ${project})`;
      if (project === 'default' && listed.has(target)) {
        steps.push({ action: 'skip', what, detail: `server ${name} has it` });
      } else {
        streams.push(s.name);
        steps.push({
          action: 'create',
          what,
          detail: `${size}${kind === 'instance' ? ', started if it ran' : ''}`,
        });
      }
    }
  }
  return {
    steps,
    streams,
    notes: [
      'whatever exists on the destination is skipped and listed in the job log, never replaced',
    ],
  };
}

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
  planRestore: planServerRestore,
} as const satisfies PlatformSpec<'lxd-server'>;
