import { describe, expect, it } from 'vitest';
import { hasOwn, portablePoolConfig } from '../../../../../agents/drivers/lxd/server';

describe('portablePoolConfig', () => {
  it('drops a source at LXD’s default place and volatile keys, keeps a chosen source', () => {
    expect(
      portablePoolConfig({
        name: 'default',
        driver: 'dir',
        description: '',
        config: { source: '/var/lib/lxd/storage-pools/default', 'volatile.initial_source': '/x' },
      }),
    ).toEqual({});
    expect(
      portablePoolConfig({
        name: 'fast',
        driver: 'zfs',
        description: '',
        config: { source: '/var/lib/lxd/disks/fast.img', size: '5GiB', 'zfs.pool_name': 'fast' },
      }),
    ).toEqual({ size: '5GiB', 'zfs.pool_name': 'fast' });
    expect(
      portablePoolConfig({
        name: 'big',
        driver: 'dir',
        description: 'on the array',
        config: { source: '/srv/lxd-big' },
      }),
    ).toEqual({ source: '/srv/lxd-big' });
  });
});

describe('hasOwn', () => {
  it('lists a feature in the default project and in projects that have it of their own', () => {
    expect(hasOwn({ name: 'default', description: '', config: {} }, 'profiles')).toBe(true);
    expect(
      hasOwn({ name: 'p', description: '', config: { 'features.profiles': 'true' } }, 'profiles'),
    ).toBe(true);
    expect(hasOwn({ name: 'p', description: '', config: {} }, 'networks')).toBe(false);
  });
});
