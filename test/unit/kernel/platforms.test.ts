import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../../kernel/errors';
import {
  PLATFORM_SPECS,
  PLATFORMS,
  specOf,
  type Platform,
  type PlatformSpec,
} from '../../../kernel/platforms';
import { isValidInstanceName, isValidPoolName } from '../../../kernel/platforms/lxd';
import { splitVolumeName } from '../../../kernel/platforms/lxd-volume';
import { checkTargetName, MAX_NAME_LENGTH, parseSelector } from '../../../kernel/targets';

/** A value each flag takes, as the CLI would hand it over (repeatable flags: an array). */
const FLAG_VALUES: Record<string, unknown> = {
  '--consistency <mode>': 'live',
  '--include-binds': true,
  '--pre-hook <command>': ['pg_dump > /data/dump.sql'],
  '--post-hook <command>': ['true'],
  '--hook-timeout <seconds>': 30,
  '--hook-on-error <policy>': 'continue',
  '--no-snapshots': false,
  '--optimized-storage': true,
  '--full-read': true,
  '--volume-name <old=new>': ['data=data2'],
  '--network <name>': 'backend',
  '--port <port=host>': ['80/tcp=8080', '443='],
  '--volume <name>': 'data',
  '--into <volume>': 'data-copy',
  '--pool <pool>': 'fast',
  '--device <name,key=value,...>': ['eth0,type=none', 'root,pool=fast'],
  '--state <state>': 'stopped',
  '--recover': true,
  '--include-disk <label>': ['Hard disk 1'],
  '--exclude-disk <label>': ['Hard disk 2'],
  '--folder <path>': 'DC0/vm/prod',
  '--resource-pool <path>': 'DC0/host/DC0_C0/Resources',
  '--datastore <name>': 'LocalDS_0',
  '--network-map <old=new>': ['VM Network=DVS-prod'],
  '--disk <label>': 'Hard disk 2',
  '--attach-to <vm>': 'vsphere:DC0/vm/other',
  '--controller <key>': 1000,
  '--unit <n>': 3,
  '--file <path>': ['etc/passwd', 'srv/www'],
  '--dest <dir>': '/tmp/restored',
  '--into-volume <volume>': 'data-copy',
};

const driven: PlatformSpec<Platform>[] = PLATFORM_SPECS.filter(
  (s) => !('planned' in s && s.planned),
);
const KINDS = ['backup', 'restore'] as const;
const schemaOf = (spec: PlatformSpec, kind: (typeof KINDS)[number]) =>
  kind === 'backup' ? spec.backupOptions : spec.restoreOptions;

/** The body a command with every flag of `spec` given would send (as cli/main.ts merges it). */
function bodyOfAllFlags(spec: PlatformSpec, kind: (typeof KINDS)[number]) {
  const flags = spec.cli[kind];
  const values = Object.fromEntries(flags.map((f) => [f.flags, FLAG_VALUES[f.flags]] as const));
  const byName: Record<string, unknown> = {
    hookTimeout: values['--hook-timeout <seconds>'],
    hookOnError: values['--hook-on-error <policy>'],
  };
  const body: Record<string, unknown> = {};
  for (const flag of flags) {
    for (const [key, value] of Object.entries(flag.toBody(values[flag.flags], byName))) {
      const merged =
        key === 'hooks' || key === 'disks'
          ? { ...(body[key] as object | undefined), ...(value as object) }
          : value;
      body[key] = merged;
    }
  }
  return body;
}

describe('the platform registry', () => {
  it('lists every platform once, in the order of the target grammar', () => {
    expect(PLATFORMS).toEqual([
      'docker',
      'docker-compose',
      'lxd',
      'lxd-volume',
      'lxd-server',
      'vsphere',
      'vapp',
      'path',
    ]);
    for (const platform of PLATFORMS) expect(specOf(platform).name).toBe(platform);
  });

  it('lists every platform in inventories but paths', () => {
    expect(PLATFORMS.filter((p) => !specOf(p).listed)).toEqual(['path']);
  });

  it('gives local snapshots to LXD instances and vSphere VMs, and label selectors to Docker containers only', () => {
    expect(PLATFORMS.filter((p) => specOf(p).snapshots)).toEqual(['lxd', 'vsphere']);
    expect(PLATFORMS.filter((p) => specOf(p).selector)).toEqual(['docker']);
  });

  it('gives the platforms of one engine the same default endpoint', () => {
    const endpoints = new Map<string, string | undefined>();
    for (const spec of driven) {
      if (!spec.engine) continue;
      if (endpoints.has(spec.engine.id)) {
        expect(spec.engine.defaultEndpoint, spec.name).toBe(endpoints.get(spec.engine.id));
      }
      endpoints.set(spec.engine.id, spec.engine.defaultEndpoint);
    }
    expect(Object.fromEntries(endpoints)).toEqual({
      docker: '/var/run/docker.sock',
      lxd: '/var/lib/lxd/unix.socket',
    });
  });

  describe.each(KINDS)('%s option schemas', (kind) => {
    it.each(PLATFORMS)('%s refuses an unknown field, naming it', (platform) => {
      const parsed = schemaOf(specOf(platform), kind).safeParse({ inplace: true });

      expect(parsed.success).toBe(false);
      expect(JSON.stringify(parsed.error?.issues)).toContain('inplace');
    });

    it.each(driven.map((s) => s.name))(
      '%s takes what its CLI flags send, and every field it has is set by one of them',
      (platform) => {
        const spec = specOf(platform);
        const body = bodyOfAllFlags(spec, kind);

        expect(schemaOf(spec, kind).safeParse(body).error?.issues ?? []).toEqual([]);
        expect(Object.keys(body).sort()).toEqual(Object.keys(schemaOf(spec, kind).shape).sort());
      },
    );
  });

  it('maps each CLI flag the way the request body reads it', () => {
    const docker = specOf('docker');
    const flag = (spec: PlatformSpec, kind: 'backup' | 'restore', name: string) =>
      spec.cli[kind].find((f) => f.flags.startsWith(name))!;

    expect(
      flag(docker, 'backup', '--pre-hook').toBody(['echo hi'], {
        hookTimeout: 5,
        hookOnError: 'continue',
      }),
    ).toEqual({
      hooks: {
        pre: [{ command: ['sh', '-c', 'echo hi'], timeoutSeconds: 5, onError: 'continue' }],
      },
    });
    expect(flag(docker, 'restore', '--port').toBody(['80=8080', '53/udp='], {})).toEqual({
      ports: { '80': '8080', '53/udp': '' },
    });
    expect(
      flag(specOf('lxd'), 'restore', '--device').toBody(['eth0,type=none', 'eth0,name=x'], {}),
    ).toEqual({
      devices: { eth0: { type: 'none', name: 'x' } },
    });
    expect(flag(specOf('lxd'), 'backup', '--no-snapshots').toBody(true, {})).toEqual({});
    expect(() => flag(docker, 'restore', '--port').toBody(['80'], {})).toThrow(
      /--port takes KEY=VALUE \(got "80"\)/,
    );
    expect(() => flag(specOf('lxd'), 'restore', '--device').toBody(['eth0'], {})).toThrow(
      ValidationError,
    );
  });
});

describe('LXD name rules', () => {
  it.each([
    ['c1', true],
    ['web-2', true],
    ['a'.repeat(63), true],
    ['a'.repeat(64), false],
    ['1web', false],
    ['web-', false],
    ['we_b', false],
    ['', false],
  ])('instance name %j is valid: %s', (name, valid) => {
    expect(isValidInstanceName(name)).toBe(valid);
    if (valid) expect(() => checkTargetName({ platform: 'lxd', name })).not.toThrow();
    else expect(() => checkTargetName({ platform: 'lxd', name })).toThrow(ValidationError);
  });

  it.each([
    ['default', true],
    ['fast.ssd_1', true],
    ['-x', false],
    ['a/b', false],
    ['a b', false],
    ['', false],
  ])('pool name %j is valid: %s', (pool, valid) => {
    expect(isValidPoolName(pool)).toBe(valid);
  });

  it('splits a custom volume target into its pool and volume, and refuses what LXD would', () => {
    expect(splitVolumeName('default/data')).toEqual({ pool: 'default', volume: 'data' });
    expect(() => splitVolumeName('data')).toThrow(/names no pool/);
    expect(() => splitVolumeName('default/..')).toThrow(/not a valid LXD custom volume name/);
    expect(() => checkTargetName({ platform: 'lxd-volume', name: 'default/a/b' })).toThrow(
      ValidationError,
    );
  });

  it('takes vApps as DC/vapp/NAME and names a restored one in its datacenter', () => {
    expect(() => checkTargetName({ platform: 'vapp', name: 'F/DC0/vapp/shop' })).not.toThrow();
    for (const bad of ['shop', 'DC0/vm/shop', 'DC0/vapp/', 'DC0/vapp/a/b']) {
      expect(() => checkTargetName({ platform: 'vapp', name: bad })).toThrow(ValidationError);
    }
    const vapp = specOf('vapp') as PlatformSpec & {
      restoreName: NonNullable<PlatformSpec['restoreName']>;
    };
    expect(vapp.restoreName('DC0/vapp/shop', 'shop2', {})).toBe('DC0/vapp/shop2');
    expect(vapp.restoreName('DC0/vapp/shop', 'DC1/vapp/shop', {})).toBe('DC1/vapp/shop');
  });
});

describe('vSphere', () => {
  const vsphere = specOf('vsphere') as PlatformSpec & {
    restoreName: NonNullable<PlatformSpec['restoreName']>;
    restoresInto: NonNullable<PlatformSpec['restoresInto']>;
  };

  it('takes inventory paths DC/vm/NAME with folders, and refuses other names', () => {
    for (const good of ['DC0/vm/a', 'F/DC0/vm/prod/web', 'DC0/vm/a b']) {
      expect(() => checkTargetName({ platform: 'vsphere', name: good })).not.toThrow();
    }
    for (const bad of ['a', 'DC0/a', 'DC0/vm/', 'vm/a', 'DC0//vm/a', 'DC0/vm/a%b']) {
      expect(() => checkTargetName({ platform: 'vsphere', name: bad })).toThrow(ValidationError);
    }
  });

  it("names a restored VM in the original's folder, in --folder, or by its whole path", () => {
    expect(vsphere.restoreName('DC0/vm/prod/web', 'web2', {})).toBe('DC0/vm/prod/web2');
    expect(vsphere.restoreName('DC0/vm/web', 'web2', { folder: 'DC0/vm/dr' })).toBe(
      'DC0/vm/dr/web2',
    );
    expect(vsphere.restoreName('DC0/vm/web', 'DC1/vm/web', {})).toBe('DC1/vm/web');
    expect(vsphere.restoreName('DC0/vm/web', undefined, {})).toBeUndefined();
  });

  it('restores one disk into the VM it is attached to, which is never "taken"', () => {
    const options = { disk: 'Hard disk 2', attachTo: 'vsphere:DC0/vm/other' };
    expect(vsphere.restoreName('DC0/vm/web', undefined, options)).toBe('DC0/vm/other');
    expect(vsphere.restoresInto(options)).toBe(true);
    expect(() => vsphere.restoreName('DC0/vm/web', 'x', options)).toThrow(/--disk attaches/);
    expect(vsphere.restoreOptions.safeParse({ disk: 'Hard disk 2' }).success).toBe(false);
    expect(vsphere.restoreOptions.safeParse({ ...options, unitNumber: 2 }).success).toBe(true);
    expect(vsphere.restoreOptions.safeParse({ unitNumber: 2 }).success).toBe(false);
  });
});

describe('label selectors by platform', () => {
  it('names the platforms that take a selector when another is given', () => {
    expect(() => parseSelector('lxd:app=x')).toThrow(
      /only docker containers can be chosen by label \(not "lxd"\)/,
    );
    expect(() => parseSelector('vsphere:app=x')).toThrow(/only docker containers/);
  });
});

describe('name rules, each in its platform spec, checked before any workflow', () => {
  const refused = (platform: Platform, name: string) => () => checkTargetName({ platform, name });

  it('refuses a name longer than MAX_NAME_LENGTH on every platform', () => {
    for (const platform of PLATFORMS) {
      expect(refused(platform, 'a'.repeat(MAX_NAME_LENGTH + 1))).toThrow(/at most 1536/);
      // Counted in bytes: 600 three-byte characters are 1,800 bytes.
      expect(refused(platform, '€'.repeat(600))).toThrow(/1800 bytes/);
    }
  });

  it('refuses control characters in a name on every platform', () => {
    for (const platform of PLATFORMS) {
      for (const c of ['\u0000', '\n', '\u001f', '\u007f']) {
        expect(refused(platform, `a${c}b`)).toThrow(/control characters/);
      }
    }
  });

  it("takes Docker's container names and refuses the others", () => {
    expect(refused('docker', 'web_1.a-b')).not.toThrow();
    for (const bad of ['_web', '.web', 'we b', 'web/1', 'wéb']) {
      expect(refused('docker', bad)).toThrow(/not a valid Docker container name/);
    }
  });

  it("takes Compose's project names and refuses the others", () => {
    expect(refused('docker-compose', 'shop_2-b')).not.toThrow();
    for (const bad of ['Shop', '-shop', 'shop.1', 'sh op']) {
      expect(refused('docker-compose', bad)).toThrow(/not a valid Compose project name/);
    }
  });

  it('takes absolute paths without . or .. segments as path targets', () => {
    expect(refused('path', '/srv/data')).not.toThrow();
    expect(refused('path', '/srv/..data/x.')).not.toThrow();
    expect(refused('path', 'srv/data')).toThrow(/not an absolute path/);
    for (const bad of ['/srv/../etc', '/srv/./data', '/..', '/srv/data/.']) {
      expect(refused('path', bad)).toThrow(/"\." or "\.\." segments/);
    }
  });
});
