import { describe, expect, it } from 'vitest';
import { planDevices } from '../../../../../agents/drivers/lxd/restore';
import { checkOptimizedTarget, optimizedOn } from '../../../../../agents/drivers/lxd/export';

const point = {
  expandedDevices: {
    root: { type: 'disk', path: '/', pool: 'default' },
    eth0: { type: 'nic', network: 'lxdbr0', name: 'eth0' },
    data: { type: 'disk', source: '/srv/data', path: '/data', readonly: 'true' },
  },
};

describe('planDevices', () => {
  it('starts an override from the device the point has, as lxc config device override does', () => {
    expect(planDevices(point, { data: { source: '/srv/other', readonly: '' } })).toEqual({
      patch: { data: { type: 'disk', source: '/srv/other', path: '/data' } },
    });
  });

  it('masks a device with type=none and adds a new one that names its type', () => {
    expect(
      planDevices(point, {
        eth0: { type: 'none' },
        cache: { type: 'disk', path: '/c', source: '/x' },
      }),
    ).toEqual({
      patch: { eth0: { type: 'none' }, cache: { type: 'disk', path: '/c', source: '/x' } },
    });
  });

  it('takes the root disk pool as the import pool rather than a patch', () => {
    expect(planDevices(point, { root: { pool: 'fast' } })).toEqual({ pool: 'fast', patch: {} });
    expect(planDevices(point, { root: { pool: 'fast', size: '2GiB' } })).toEqual({
      pool: 'fast',
      patch: { root: { type: 'disk', path: '/', pool: 'fast', size: '2GiB' } },
    });
  });

  it('refuses a device the point lacks without a type, naming the devices it has', () => {
    expect(() => planDevices(point, { eth9: { network: 'x' } })).toThrow(
      /device eth9 is not in the recovery point \(it has: data, eth0, root\); give type=/,
    );
  });
});

describe('optimized storage', () => {
  it.each([
    [true, 'zfs', true],
    [true, 'btrfs', true],
    [true, 'dir', false],
    [true, 'lvm', false],
    [false, 'zfs', false],
    [undefined, 'btrfs', false],
    [true, undefined, false],
  ] as const)('asked %s on a %s pool: optimized %s', (asked, driver, expected) => {
    expect(optimizedOn(asked, driver)).toBe(expected);
  });

  it('refuses to import an optimized point into a pool of another driver', () => {
    expect(() => checkOptimizedTarget(true, 'zfs', 'slow', 'dir')).toThrow(
      /made with zfs optimized storage.*pool slow is dir/,
    );
    expect(() => checkOptimizedTarget(true, 'zfs', 'fast', 'zfs')).not.toThrow();
    expect(() => checkOptimizedTarget(false, 'zfs', 'slow', 'dir')).not.toThrow();
  });
});
