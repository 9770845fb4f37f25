/**
 * The platform registry: every platform Stowage knows, in one list. The API validates targets
 * and options by it (functions/core), the agent builds its drivers from it (agents/drivers),
 * the CLI offers its flags (cli/main.ts). Adding a platform: README, "Adding a platform".
 */
import { docker } from './docker';
import { dockerCompose } from './docker-compose';
import { lxd } from './lxd';
import { lxdServer } from './lxd-server';
import { lxdVolume } from './lxd-volume';
import { path } from './path';
import { vapp } from './vapp';
import { vsphere } from './vsphere';
import type { PlatformSpec } from './spec';
import { planVappRestore, planVmRestore } from './vsphere-plan';

/** In the order `stowage targets` and the OpenAPI document list them. */
export const PLATFORM_SPECS = [
  docker,
  dockerCompose,
  lxd,
  lxdVolume,
  lxdServer,
  { ...vsphere, planRestore: planVmRestore },
  { ...vapp, planRestore: planVappRestore },
  path,
] as const;

type Spec = (typeof PLATFORM_SPECS)[number];
export type Platform = Spec['name'];
/** The platforms with a driver (not planned): each has a factory in agents/drivers/index.ts. */
export type DrivenPlatform = Exclude<Spec, { planned: true }>['name'];

export const PLATFORMS: readonly Platform[] = PLATFORM_SPECS.map((s) => s.name);

export function isPlatform(value: string): value is Platform {
  return (PLATFORMS as readonly string[]).includes(value);
}

const BY_NAME = new Map<string, PlatformSpec>(PLATFORM_SPECS.map((s) => [s.name, s]));

/** The spec of a platform (every Platform has one). */
export function specOf(platform: Platform): PlatformSpec<Platform> {
  return BY_NAME.get(platform) as PlatformSpec<Platform>;
}

export type { CliFlag, EngineFlag, EngineSpec, PlatformSpec, SelectorCapability } from './spec';
