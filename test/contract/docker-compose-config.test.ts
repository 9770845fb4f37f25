/**
 * The pure rules of the docker-compose driver: how a project's containers are ordered and how
 * its parts are renamed under a new project name. No dockerd needed.
 */
import { describe, expect, it } from 'vitest';
import {
  dependencyOrder,
  inspectForProject,
  parseComposeMetadata,
  parseDependsOn,
  renameContainer,
  renameResource,
  type DependsOn,
} from '../../agents/drivers/docker/compose-config';
import type { InspectJson } from '../../agents/drivers/docker/config';

interface Item {
  service: string;
  containerNumber: number;
  dependsOn: DependsOn[];
}

function makeItem(service: string, deps: string[] = [], containerNumber = 1): Item {
  return {
    service,
    containerNumber,
    dependsOn: deps.map((d) => ({ service: d, condition: 'service_started', restart: false })),
  };
}

/** A small deterministic PRNG, so a failing range case can be replayed. */
function prng(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state / 2 ** 31;
  };
}

function makeInspect(overrides: Partial<InspectJson> = {}): InspectJson {
  return {
    Id: 'a'.repeat(64),
    Name: '/shop-web-1',
    Config: {
      Image: 'busybox',
      Labels: {
        'com.docker.compose.project': 'shop',
        'com.docker.compose.service': 'web',
        'com.docker.compose.project.working_dir': '/srv/shop',
        'com.docker.compose.project.config_files': '/srv/shop/compose.yaml',
      },
    },
    HostConfig: { NetworkMode: 'shop_default' },
    NetworkSettings: {
      Networks: {
        shop_default: { Aliases: ['shop-web-1', 'web', 'aaaaaaaaaaaa'] },
        shop_backend: { Aliases: ['shop-web-1', 'frontend'] },
        external_net: { Aliases: ['web-ext'] },
      },
    },
    ...overrides,
  };
}

describe('compose depends_on label', () => {
  it.each([
    [undefined, []],
    ['', []],
    ['db:service_started:false', [{ service: 'db', condition: 'service_started', restart: false }]],
    [
      'db:service_healthy:true,cache:service_started:false',
      [
        { service: 'db', condition: 'service_healthy', restart: true },
        { service: 'cache', condition: 'service_started', restart: false },
      ],
    ],
    ['db:service_healthy', [{ service: 'db', condition: 'service_healthy', restart: false }]],
    ['db', [{ service: 'db', condition: 'service_started', restart: false }]],
    [
      ' db , ,api:service_started ',
      [
        { service: 'db', condition: 'service_started', restart: false },
        { service: 'api', condition: 'service_started', restart: false },
      ],
    ],
  ])('parses %j', (label, expected) => {
    expect(parseDependsOn(label)).toEqual(expected);
  });
});

describe('compose dependency order', () => {
  it('puts every container after what it depends on, whatever the input order, over random graphs', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const random = prng(seed);
      const count = 1 + Math.floor(random() * 8);
      const services = Array.from({ length: count }, (_, i) => `s${String(i).padStart(2, '0')}`);
      // Dependencies only on earlier-made services: acyclic by construction.
      const items = services.flatMap((service, i) => {
        const deps = services.slice(0, i).filter(() => random() < 0.4);
        const scale = 1 + Math.floor(random() * 2);
        return Array.from({ length: scale }, (_, n) => makeItem(service, deps, n + 1));
      });
      const shuffled = [...items].sort(() => random() - 0.5);

      const ordered = dependencyOrder(shuffled);

      expect(ordered).toEqual(dependencyOrder(items));
      expect(ordered).toHaveLength(items.length);
      const position = (service: string) => ordered.findIndex((o) => o.service === service);
      for (const [at, item] of ordered.entries()) {
        for (const dep of item.dependsOn) expect(position(dep.service)).toBeLessThan(at);
        const previous = ordered[at - 1];
        if (previous?.service === item.service) {
          expect(previous.containerNumber).toBeLessThan(item.containerNumber);
        }
      }
    }
  });

  it('orders unrelated services by name and ignores dependencies outside the project', () => {
    const ordered = dependencyOrder([
      makeItem('web', ['api', 'elsewhere']),
      makeItem('cache'),
      makeItem('api', ['db']),
      makeItem('db'),
    ]);

    expect(ordered.map((i) => i.service)).toEqual(['cache', 'db', 'api', 'web']);
  });

  it('falls back to service name order inside a cycle and keeps every container', () => {
    const ordered = dependencyOrder([
      makeItem('c', ['b']),
      makeItem('b', ['a']),
      makeItem('a', ['c']),
      makeItem('z', ['a']),
    ]);

    expect(ordered.map((i) => i.service)).toEqual(['a', 'b', 'c', 'z']);
  });

  it('orders by the dependencies a caller derives when it passes its own', () => {
    const items = [makeItem('agent'), makeItem('db')];

    const ordered = dependencyOrder(items, (i) =>
      i.service === 'agent' ? [{ service: 'db', condition: 'network_mode', restart: false }] : [],
    );

    expect(ordered.map((i) => i.service)).toEqual(['db', 'agent']);
  });
});

describe('compose renaming', () => {
  it.each([
    ['shop_data', 'shop', 'copy', 'copy_data'],
    ['shop_shop_data', 'shop', 'copy', 'copy_shop_data'],
    ['shopdata', 'shop', 'copy', 'copy_shopdata'],
    ['external-vol', 'shop', 'copy', 'copy_external-vol'],
  ])('renames volume or network %s of %s under %s as %s', (name, old, project, expected) => {
    expect(renameResource(name, old, project)).toBe(expected);
  });

  it.each([
    ['shop-web-1', 'shop', 'copy', 'copy-web-1'],
    ['shop_web_1', 'shop', 'copy', 'copy_web_1'],
    ['shopping-web-1', 'shop', 'copy', 'copy-shopping-web-1'],
    ['custom-name', 'shop', 'copy', 'copy-custom-name'],
  ])('renames container %s of %s under %s as %s', (name, old, project, expected) => {
    expect(renameContainer(name, old, project)).toBe(expected);
  });

  it('rewrites only the project label, moves endpoints to the renamed networks and keeps the service alias', () => {
    const networks = new Map([
      ['shop_default', 'copy_default'],
      ['shop_backend', 'copy_backend'],
    ]);

    const out = inspectForProject(makeInspect(), 'web', 'copy', networks);

    expect(out.Config?.Labels).toEqual({
      'com.docker.compose.project': 'copy',
      'com.docker.compose.service': 'web',
      'com.docker.compose.project.working_dir': '/srv/shop',
      'com.docker.compose.project.config_files': '/srv/shop/compose.yaml',
    });
    expect(out.HostConfig?.NetworkMode).toBe('copy_default');
    expect(out.NetworkSettings?.Networks).toEqual({
      copy_default: { Aliases: ['shop-web-1', 'web', 'aaaaaaaaaaaa'] },
      copy_backend: { Aliases: ['web', 'shop-web-1', 'frontend'] },
      external_net: { Aliases: ['web-ext'] },
    });
    expect([out.Id, out.Name]).toEqual([makeInspect().Id, makeInspect().Name]);
  });

  it.each([
    [`container:${'b'.repeat(64)}`],
    [`container:${'b'.repeat(12)}`],
    ['container:shop-db-1'],
  ])('points network mode %s at the restored copy of that member', (mode) => {
    const inspect = makeInspect({ HostConfig: { NetworkMode: mode }, NetworkSettings: {} });
    const copies = new Map([
      ['b'.repeat(64), 'copy-db-1'],
      ['shop-db-1', 'copy-db-1'],
    ]);

    const out = inspectForProject(inspect, 'agent', 'copy', new Map(), copies);

    expect(out.HostConfig?.NetworkMode).toBe('container:copy-db-1');
  });

  it('leaves a container network mode naming something outside the project as it is', () => {
    const inspect = makeInspect({ HostConfig: { NetworkMode: 'container:elsewhere' } });

    const out = inspectForProject(inspect, 'agent', 'copy', new Map(), new Map());

    expect(out.HostConfig?.NetworkMode).toBe('container:elsewhere');
  });
});

describe('compose metadata', () => {
  it('refuses a single-container docker point with a DriverError naming both formats', () => {
    expect(() =>
      parseComposeMetadata({ format: 'stowage.docker/1', name: 'web', image: 'x' }),
    ).toThrow(
      expect.objectContaining({
        name: 'DriverError',
        message: expect.stringContaining('stowage.docker-compose/1'),
      }),
    );
  });
});
