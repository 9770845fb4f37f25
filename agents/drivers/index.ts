/**
 * The agent's side of the platform registry (kernel/platforms): how each platform with a driver
 * is made, from the settings of its engine. `detectDrivers` walks the registry, so a platform
 * added there and here is served by every agent whose host has its engine; nothing else in the
 * agent names a platform.
 */
import { existsSync } from 'node:fs';
import { PLATFORM_SPECS, type DrivenPlatform } from '../../kernel/platforms';
import { ValidationError } from '../../kernel/errors';
import type { Logger } from '../../kernel/logger';
import type { Driver } from '../core/driver';
import { createComposeDriver, createDockerDriver } from './docker';
import { createLxdDriver, createLxdServerDriver, createLxdVolumeDriver } from './lxd';
import { createPathDriver } from './path';
import { createVappDriver, createVsphereDriver } from './vsphere';

/**
 * An engine's settings (EngineSpec.flags: `endpoint` and the settings the driver reads, e.g.
 * LXD's `project`), as given to `stowage agent`, else the registry's defaults.
 */
export type EngineSettings = { readonly endpoint: string } & Readonly<Record<string, string>>;

interface FactoryContext {
  readonly site: string;
  readonly log: Logger;
  /** The trees `path:` targets are limited to (`--paths`); undefined: every path. */
  readonly paths?: readonly string[] | undefined;
}

/** Every platform with a driver (not planned), and how its driver is made. */
export const DRIVER_FACTORIES: {
  readonly [P in DrivenPlatform]: (engine: EngineSettings, ctx: FactoryContext) => Driver;
} = {
  docker: (engine, { log }) => createDockerDriver({ socketPath: engine.endpoint, log }),
  'docker-compose': (engine, { log }) => createComposeDriver({ socketPath: engine.endpoint, log }),
  lxd: (engine, { log }) =>
    createLxdDriver({ socketPath: engine.endpoint, project: engine.project ?? 'default', log }),
  'lxd-volume': (engine, { log }) =>
    createLxdVolumeDriver({
      socketPath: engine.endpoint,
      project: engine.project ?? 'default',
      log,
    }),
  // The whole server, every project: named after the agent (`lxd-server:<site>`).
  'lxd-server': (engine, { log, site }) =>
    createLxdServerDriver({ socketPath: engine.endpoint, project: 'default', site, log }),
  // With --paths, only those trees are backed up and restored (and they are what it lists).
  path: (_engine, { log, paths }) =>
    createPathDriver({ log, ...(paths ? { allowed: [...paths], roots: [...paths] } : {}) }),
  // Only with --vsphere-url (no default endpoint): user and password file are required then.
  vsphere: (engine, { log }) => createVsphereDriver(vsphereOptions(engine, log)),
  vapp: (engine, { log }) => {
    if (engine.vcdUrl && (!engine.vcdUser || !engine.vcdPasswordFile)) {
      throw new ValidationError(
        '--vcd-url needs --vcd-user USER@ORG and --vcd-password-file FILE (a file holding the password)',
      );
    }
    return createVappDriver({
      ...vsphereOptions(engine, log),
      ...(engine.vcdUrl
        ? {
            vcd: {
              url: engine.vcdUrl,
              user: engine.vcdUser!,
              passwordFile: engine.vcdPasswordFile!,
              ...(engine.insecure === 'true' ? { insecure: true } : {}),
            },
          }
        : {}),
    });
  },
};

function vsphereOptions(engine: EngineSettings, log: Logger) {
  if (!engine.user || !engine.passwordFile) {
    throw new ValidationError(
      '--vsphere-url needs --vsphere-user USER and --vsphere-password-file FILE (a file holding the password)',
    );
  }
  return {
    url: engine.endpoint,
    user: engine.user,
    passwordFile: engine.passwordFile,
    ...(engine.insecure === 'true' ? { insecure: true } : {}),
    log,
  };
}

/**
 * Whether the engine is there to be served: a unix socket that exists (an engine on this host
 * that is not installed is simply not served). An address of another kind (a URL) is taken as
 * given: the driver's own calls say what is wrong with it.
 */
function engineHere(endpoint: string): boolean {
  return endpoint.startsWith('/') ? existsSync(endpoint) : true;
}

/**
 * The drivers this host can run: for each platform of the registry with a driver, its engine's
 * settings (`engines[id]`, else the registry's default endpoint); a platform without an engine
 * (paths: this host's own file system, limited to `config.paths` when given) is always there.
 */
export function detectDrivers(
  config: {
    site: string;
    engines?: Readonly<Record<string, Readonly<Record<string, string>>>>;
    paths?: readonly string[] | undefined;
  },
  log: Logger,
): Map<string, Driver> {
  const drivers = new Map<string, Driver>();
  for (const spec of PLATFORM_SPECS) {
    if ('planned' in spec && spec.planned) continue;
    const platform = spec.name as DrivenPlatform;
    const engine = 'engine' in spec ? spec.engine : undefined;
    const given = engine ? (config.engines?.[engine.id] ?? {}) : {};
    const endpoint = given.endpoint ?? engine?.defaultEndpoint ?? '';
    if (engine && (!endpoint || !engineHere(endpoint))) continue;
    drivers.set(
      platform,
      DRIVER_FACTORIES[platform](
        { ...given, endpoint },
        { site: config.site, log, paths: config.paths },
      ),
    );
  }
  return drivers;
}
