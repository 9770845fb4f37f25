import { describe, expect, it } from 'vitest';
import {
  fromLxdExpiry,
  nextSnapshotName,
  toLxdExpiry,
} from '../../../../agents/drivers/lxd/snapshots';

describe('nextSnapshotName', () => {
  it('counts from 0, one above the highest number in use, as LXD does', () => {
    expect(nextSnapshotName('snap%d', [])).toBe('snap0');
    expect(nextSnapshotName('snap%d', ['snap0', 'snap1'])).toBe('snap2');
    expect(nextSnapshotName('snap%d', ['snap7', 'snap2'])).toBe('snap8');
    expect(nextSnapshotName('d-%d.x', ['d-3.x', 'd-x.x', 'other9'])).toBe('d-4.x');
    expect(nextSnapshotName('before', ['before'])).toBe('before');
  });

  it('never returns a name in use', () => {
    for (let n = 0; n < 50; n++) {
      const taken = Array.from({ length: n }, (_, i) => `s${(i * 7) % 50}`);
      expect(taken).not.toContain(nextSnapshotName('s%d', taken));
    }
  });
});

describe('LXD expiry syntax', () => {
  it('maps minutes and hours to M and H and back', () => {
    expect(['15m', '12h', '7d', '2w'].map(toLxdExpiry)).toEqual(['15M', '12H', '7d', '2w']);
    expect(['15M', '12H', '7d', '2w'].map(fromLxdExpiry)).toEqual(['15m', '12h', '7d', '2w']);
    expect(fromLxdExpiry('1m 2d')).toBe('1m 2d');
    expect(() => toLxdExpiry('30s')).toThrow(/cannot take/);
  });
});
