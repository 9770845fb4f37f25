/**
 * The agent's inventory publisher (agents/worker/inventory.ts): what it writes to the catalog when
 * a driver's listing fails for a moment (an engine restarting).
 */
import { describe, expect, it } from 'vitest';
import type { Driver } from '../../../../agents/core/driver';
import { InventoryPublisher } from '../../../../agents/worker/inventory';
import { silentLogger } from '../../../../kernel/logger';
import { MemoryCatalog } from '../../../fixtures/memory-catalog';

describe('the inventory publisher', () => {
  it("keeps a platform's last targets, marked, while its engine cannot be listed, and lists it again once it can", async () => {
    let down = false;
    let names = ['c1', 'c2'];
    const lxd = {
      platform: 'lxd',
      listTargets: () =>
        down
          ? Promise.reject(new Error('cannot reach lxd at /var/lib/lxd/unix.socket (ENOENT)'))
          : Promise.resolve(
              names.map((n) => ({
                target: `lxd:${n}`,
                platform: 'lxd',
                name: n,
                state: 'running',
              })),
            ),
    } as unknown as Driver;
    const catalog = new MemoryCatalog();
    const publisher = new InventoryPublisher(
      'a1',
      new Map([['lxd', lxd]]),
      catalog,
      silentLogger,
      'v',
    );
    const listed = async () => (await catalog.getAgent('a1'))!.targets;

    await publisher.publish();
    expect((await listed()).map((t) => [t.target, t.details])).toEqual([
      ['lxd:c1', undefined],
      ['lxd:c2', undefined],
    ]);

    down = true;
    await publisher.publish();
    const kept = await listed();
    expect(kept.map((t) => t.target)).toEqual(['lxd:c1', 'lxd:c2']);
    for (const t of kept) {
      expect(t.state).toBe('running');
      expect(t.details?.listing).toMatch(/^failed at .*cannot reach lxd/);
    }

    // Listed again: what the engine says now, unmarked (a target gone while it was down is gone).
    down = false;
    names = ['c2'];
    await publisher.publish();
    expect((await listed()).map((t) => [t.target, t.details])).toEqual([['lxd:c2', undefined]]);
    publisher.stop();
  });

  it('publishes nothing for a platform whose engine has never been listed', async () => {
    const broken = {
      platform: 'docker',
      listTargets: () => Promise.reject(new Error('no dockerd')),
    } as unknown as Driver;
    const catalog = new MemoryCatalog();
    const publisher = new InventoryPublisher(
      'a2',
      new Map([['docker', broken]]),
      catalog,
      silentLogger,
      'v',
    );
    await publisher.publish();
    expect((await catalog.getAgent('a2'))!.targets).toEqual([]);
    publisher.stop();
  });
});
