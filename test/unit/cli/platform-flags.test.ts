import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import {
  addEngineFlags,
  addPlatformFlags,
  enginesOf,
  platformBody,
  platformFlags,
} from '../../../cli/platform-flags';
import { PLATFORM_SPECS } from '../../../kernel/platforms';

/** Parses `args` with a command that has the platforms' flags of `kind`, and returns its opts. */
function parsed(kind: 'backup' | 'restore', args: string[]): Record<string, unknown> {
  const command = addPlatformFlags(new Command('x').exitOverride(), kind);
  command.parse(args, { from: 'user' });
  return command.opts();
}

describe('the CLI flags of the platform registry', () => {
  it('offers every flag a platform declares, once', () => {
    for (const kind of ['backup', 'restore'] as const) {
      const declared = new Set(PLATFORM_SPECS.flatMap((s) => s.cli[kind].map((f) => f.flags)));
      const offered = platformFlags(kind).map((f) => f.flags);
      expect(new Set(offered)).toEqual(declared);
      expect(offered).toHaveLength(declared.size);
    }
  });

  it('makes a backup body of hooks with their timeout and policy, and LXD switches', () => {
    const opts = parsed('backup', [
      '--consistency',
      'stop',
      '--pre-hook',
      'sync',
      '--pre-hook',
      'true',
      '--post-hook',
      'echo done',
      '--hook-timeout',
      '30',
      '--hook-on-error',
      'continue',
      '--no-snapshots',
    ]);
    const hook = (command: string) => ({
      command: ['sh', '-c', command],
      timeoutSeconds: 30,
      onError: 'continue',
    });
    expect(platformBody('backup', opts)).toEqual({
      consistency: 'stop',
      hooks: { pre: [hook('sync'), hook('true')], post: [hook('echo done')] },
      snapshots: false,
    });
    expect(platformBody('backup', parsed('backup', []))).toEqual({});
  });

  it('makes a restore body with repeated device overrides merged by device', () => {
    const opts = parsed('restore', [
      '--device',
      'eth0,type=none',
      '--device',
      'eth0,name=x',
      '--device',
      'data,source=/srv',
      '--state',
      'stopped',
      '--port',
      '80=8080',
      '--pool',
      'fast',
    ]);
    expect(platformBody('restore', opts)).toEqual({
      devices: { eth0: { type: 'none', name: 'x' }, data: { source: '/srv' } },
      state: 'stopped',
      ports: { '80': '8080' },
      pool: 'fast',
    });
  });

  it('refuses a value a flag cannot take, naming the flag', () => {
    expect(() => platformBody('restore', parsed('restore', ['--port', '80']))).toThrow(/--port/);
    expect(() => parsed('backup', ['--consistency', 'frozen'])).toThrow();
  });

  it('turns the engine flags of `stowage agent` into engine settings by engine', () => {
    const command = addEngineFlags(new Command('agent').exitOverride());
    command.parse(['--lxd-socket', '/run/lxd.sock', '--lxd-project', 'p1'], { from: 'user' });
    expect(enginesOf(command.opts())).toEqual({
      lxd: { endpoint: '/run/lxd.sock', project: 'p1' },
    });
    expect(enginesOf({})).toEqual({});
  });

  it('gives vSphere its URL, user, password file and --vsphere-insecure as "true"', () => {
    const command = addEngineFlags(new Command('agent').exitOverride());
    command.parse(
      [
        '--vsphere-url',
        'https://vc/sdk',
        '--vsphere-user',
        'backup',
        '--vsphere-password-file',
        '/etc/pw',
        '--vsphere-insecure',
      ],
      { from: 'user' },
    );
    expect(enginesOf(command.opts()).vsphere).toEqual({
      endpoint: 'https://vc/sdk',
      user: 'backup',
      passwordFile: '/etc/pw',
      insecure: 'true',
    });
  });
});
