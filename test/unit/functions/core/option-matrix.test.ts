import { readFileSync } from 'node:fs';
import { beforeEach, describe, expect, it } from 'vitest';
import { route, type ApiRequest } from '../../../../functions/api/routes';
import { backupFields, requestBackup } from '../../../../functions/core/requests/backup';
import type { RequestDeps } from '../../../../functions/core/requests/launch';
import { requestRestore, restoreFields } from '../../../../functions/core/requests/restore';
import { ValidationError } from '../../../../kernel/errors';
import { PLATFORM_SPECS, PLATFORMS, specOf, type Platform } from '../../../../kernel/platforms';
import { makeAgent, makePoint } from '../../../fixtures/factories';
import { makeRequestDeps, type FakeWorkflows } from '../../../fixtures/fake-workflows';
import type { MemoryCatalog } from '../../../fixtures/memory-catalog';

/** One target of each platform, all seen by agent site-1 (the server is named after it). */
const TARGETS: Record<Platform, string> = {
  docker: 'docker:web',
  'docker-compose': 'docker-compose:shop',
  lxd: 'lxd:c1',
  'lxd-volume': 'lxd-volume:default/data',
  'lxd-server': 'lxd-server:site-1',
  vsphere: 'vsphere:DC0/vm/a',
  vapp: 'vapp:DC0/vapp/shop',
  path: 'path:/srv/data',
};

/** A valid value of each option some platform takes (with what it needs beside it). */
const BACKUP_OPTIONS: Record<string, Record<string, unknown>> = {
  consistency: { consistency: 'live' },
  includeBinds: { includeBinds: true },
  hooks: { hooks: { pre: [{ command: ['true'] }] } },
  snapshots: { snapshots: false },
  optimizedStorage: { optimizedStorage: true },
  disks: { disks: { include: ['Hard disk 1'] } },
  fullRead: { fullRead: true },
};
const RESTORE_OPTIONS: Record<string, Record<string, unknown>> = {
  volumes: { volumes: { data: 'data2' } },
  network: { network: 'backend' },
  ports: { ports: { '80/tcp': '8080' } },
  volume: { volume: 'data' },
  intoVolume: { volume: 'data', intoVolume: 'copy' },
  pool: { pool: 'default' },
  devices: { devices: { eth0: { type: 'none' } } },
  state: { state: 'stopped' },
  recover: { recover: true },
  folder: { folder: 'DC0/vm/prod' },
  resourcePool: { resourcePool: 'DC0/host/DC0_C0/Resources' },
  datastore: { datastore: 'LocalDS_0' },
  networks: { networks: { 'VM Network': 'DVS-prod' } },
  disk: { disk: 'Hard disk 1', attachTo: 'vsphere:DC0/vm/a' },
  attachTo: { disk: 'Hard disk 1', attachTo: 'vsphere:DC0/vm/a' },
  controllerKey: { disk: 'Hard disk 1', attachTo: 'vsphere:DC0/vm/a', controllerKey: 1000 },
  unitNumber: { disk: 'Hard disk 1', attachTo: 'vsphere:DC0/vm/a', unitNumber: 3 },
  files: { files: ['etc/passwd'], dest: '/tmp/out' },
  dest: { files: ['etc/passwd'], dest: '/tmp/out' },
};

const takers = (field: string, kind: 'backup' | 'restore') =>
  PLATFORM_SPECS.filter(
    (s) => field in (kind === 'backup' ? s.backupOptions : s.restoreOptions).shape,
  ).map((s) => s.name);

let catalog: MemoryCatalog;
let workflows: FakeWorkflows;
let deps: RequestDeps;

beforeEach(async () => {
  ({ catalog, workflows, deps } = makeRequestDeps());
  await catalog.putAgent(
    makeAgent({
      agent: 'site-1',
      platforms: [...PLATFORMS],
      targets: Object.values(TARGETS),
    }),
  );
  for (const [platform, target] of Object.entries(TARGETS)) {
    await catalog.putPoint(
      makePoint({ recoveryPointId: `rp-${platform}`, target, agent: 'site-1' }),
    );
  }
});

function expectNothingStarted() {
  expect(workflows.backups).toEqual([]);
  expect(workflows.restores).toEqual([]);
}

describe('the option matrix, enforced by the API before any workflow', () => {
  it('lists every option some platform takes in these tests', () => {
    const all = (kind: 'backup' | 'restore') =>
      [
        ...new Set(
          PLATFORM_SPECS.flatMap((s) =>
            Object.keys((kind === 'backup' ? s.backupOptions : s.restoreOptions).shape),
          ),
        ),
      ].sort();
    expect(Object.keys(BACKUP_OPTIONS).sort()).toEqual(all('backup'));
    expect(Object.keys(RESTORE_OPTIONS).sort()).toEqual(all('restore'));
  });

  for (const platform of PLATFORMS) {
    for (const [field, extra] of Object.entries(BACKUP_OPTIONS)) {
      const taken = field in specOf(platform).backupOptions.shape;
      it(`${taken ? 'passes on' : 'refuses'} ${field} in a backup of ${TARGETS[platform]}`, async () => {
        const attempt = requestBackup(deps, { target: TARGETS[platform], ...extra });

        if (taken) {
          await attempt;
          expect(workflows.backups[0]?.options).toEqual(extra);
        } else {
          await expect(attempt).rejects.toBeInstanceOf(ValidationError);
          await expect(attempt).rejects.toThrow(
            new RegExp(`${field} apply to .*, not to ${platform} targets`),
          );
          expect(await catalog.listJobs()).toEqual([]);
          expectNothingStarted();
        }
      });
    }

    for (const [field, extra] of Object.entries(RESTORE_OPTIONS)) {
      const taken = field in specOf(platform).restoreOptions.shape;
      it(`${taken ? 'passes on' : 'refuses'} ${field} in a restore of a ${platform} point`, async () => {
        const attempt = requestRestore(deps, {
          recoveryPointId: `rp-${platform}`,
          inPlace: true,
          ...extra,
        });

        if (taken) {
          await attempt;
          expect(workflows.restores[0]?.options).toEqual(extra);
        } else {
          const names = takers(field, 'restore');
          const list =
            names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names.at(-1)}` : names[0];
          await expect(attempt).rejects.toBeInstanceOf(ValidationError);
          await expect(attempt).rejects.toThrow(`"${field}"`);
          await expect(attempt).rejects.toThrow(` to ${list} points, not to ${TARGETS[platform]}`);
          expect(await catalog.listJobs()).toEqual([]);
          expectNothingStarted();
        }
      });
    }
  }

  it('refuses Docker options on an LXD point and LXD options on a Docker point', async () => {
    await expect(
      requestRestore(deps, { recoveryPointId: 'rp-lxd', name: 'c2', network: 'backend' }),
    ).rejects.toThrow('"network" applies to docker points, not to lxd:c1');
    await expect(
      requestBackup(deps, { target: 'lxd:c1', includeBinds: true, hooks: { pre: [] } }),
    ).rejects.toThrow(
      'includeBinds and hooks apply to Docker containers and Compose projects, not to lxd targets',
    );
    await expect(
      requestBackup(deps, { target: 'docker:web', optimizedStorage: true }),
    ).rejects.toThrow(
      'optimizedStorage apply to LXD instances, LXD custom volumes and LXD servers, not to docker targets',
    );
    expectNothingStarted();
  });

  it('refuses what the platform itself cannot do with a value another platform takes', async () => {
    await expect(
      requestBackup(deps, { target: TARGETS['lxd-volume'], consistency: 'stop' }),
    ).rejects.toThrow(/consistency: a custom volume is captured live/);
    await expect(
      requestRestore(deps, { recoveryPointId: 'rp-docker', name: 'w2', intoVolume: 'copy' }),
    ).rejects.toThrow(/intoVolume: "intoVolume" goes with "volume"/);
    expectNothingStarted();
  });
});

describe('strict request bodies', () => {
  const post = (path: string, body: unknown): ApiRequest => ({
    method: 'POST',
    path,
    query: {},
    body: JSON.stringify(body),
  });

  it.each<[string, string, unknown, RegExp]>([
    ['/restores', 'a misspelt field', { recoveryPointId: 'rp-docker', inplace: true }, /"inplace"/],
    [
      '/restores',
      'in place as a string',
      { recoveryPointId: 'rp-docker', inPlace: 'true' },
      /inPlace: "inPlace" is true or false/,
    ],
    [
      '/restores',
      'an option of the wrong type',
      { recoveryPointId: 'rp-lxd', inPlace: true, recover: 'yes' },
      /recover: /,
    ],
    [
      '/restores',
      'an unknown option',
      { recoveryPointId: 'rp-docker', compression: 1 },
      /"compression"/,
    ],
    [
      '/backups',
      'a misspelt option',
      { target: 'docker:web', includebinds: true },
      /"includebinds"/,
    ],
    ['/backups', 'a mistyped option', { target: 'lxd:c1', snapshots: 'no' }, /snapshots: /],
    ['/verifications', 'an unknown field', { recoveryPointId: 'rp-docker', deep: true }, /"deep"/],
  ])(
    'answers 400 to %s %s, naming the field, and starts nothing',
    async (path, _what, body, why) => {
      const res = await route(deps, post(path, body));

      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({
        error: 'ValidationError',
        message: expect.stringMatching(why),
      });
      expectNothingStarted();
      expect(workflows.verifies).toEqual([]);
    },
  );
});

describe('openapi.json', () => {
  const doc = JSON.parse(
    readFileSync(new URL('../../../../functions/api/openapi.json', import.meta.url), 'utf8'),
  ) as {
    paths: Record<
      string,
      { post: { requestBody: { content: Record<string, { schema: Record<string, unknown> }> } } }
    >;
  };
  const schemaOf = (path: string) =>
    doc.paths[path]!.post.requestBody.content['application/json']!.schema as {
      properties: Record<string, unknown>;
      additionalProperties?: boolean;
    };

  it.each([
    ['/backups', backupFields, BACKUP_OPTIONS],
    ['/restores', restoreFields, RESTORE_OPTIONS],
  ] as const)('documents exactly the fields %s reads, and no others', (path, fields, options) => {
    const schema = schemaOf(path);

    expect(Object.keys(schema.properties).sort()).toEqual(
      [...Object.keys(fields), ...Object.keys(options)].sort(),
    );
    expect(schema.additionalProperties).toBe(false);
  });

  it("documents a policy's options as exactly the backup options", () => {
    const components = (
      doc as unknown as {
        components: { schemas: Record<string, { properties: Record<string, unknown> }> };
      }
    ).components;
    const options = components.schemas.PolicyRequest!.properties.options as {
      properties: Record<string, unknown>;
      additionalProperties?: boolean;
    };
    expect(Object.keys(options.properties).sort()).toEqual(Object.keys(BACKUP_OPTIONS).sort());
    expect(options.additionalProperties).toBe(false);
  });
});
