/**
 * Publishes what this agent sees to the catalog, where the API checks targets before it starts
 * a workflow: at start, on every engine change the drivers signal, and every `intervalMs`.
 * Publishing is serialized and coalesced: a change during a publish causes one more publish.
 */
import type { Driver } from '../core/driver';
import type { Catalog } from '../../kernel/catalog';
import type { InventoryTarget } from '../../kernel/model';
import type { Logger } from '../../kernel/logger';
import { LogEvent } from '../../kernel/logger';
import { INVENTORY_INTERVAL_MS } from '../../kernel/resources';

export class InventoryPublisher {
  private timer?: NodeJS.Timeout;
  private unwatch: Array<() => void> = [];
  private running?: Promise<void>;
  private again = false;
  /** Each platform's last listing that succeeded, kept while its engine cannot be listed. */
  private readonly lastListed = new Map<string, InventoryTarget[]>();

  constructor(
    private readonly agent: string,
    private readonly drivers: ReadonlyMap<string, Driver>,
    private readonly catalog: Catalog,
    private readonly log: Logger,
    private readonly version: string,
    private readonly intervalMs = INVENTORY_INTERVAL_MS,
    /** Called after each publish that reached the catalog (the agent's heartbeat metric). */
    private readonly onPublished: () => void = () => undefined,
  ) {}

  async start(): Promise<void> {
    await this.publish();
    for (const driver of this.drivers.values()) {
      if (driver.watch) this.unwatch.push(driver.watch(() => void this.publish()));
    }
    this.timer = setInterval(() => void this.publish(), this.intervalMs);
    this.timer.unref?.();
  }

  stop(): void {
    clearInterval(this.timer);
    for (const off of this.unwatch) off();
    this.unwatch = [];
  }

  /** Publishes now (or right after the publish under way); resolves when it is written. */
  publish(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.publishOnce();
      } while (this.again);
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async publishOnce(): Promise<void> {
    const targets: InventoryTarget[] = [];
    for (const driver of this.drivers.values()) {
      try {
        const listed = await driver.listTargets();
        this.lastListed.set(driver.platform, listed);
        targets.push(...listed);
      } catch (err) {
        // An engine that cannot be listed for a moment (restarting, say) keeps the targets it
        // had, marked: a backup asked meanwhile reaches this agent, which reports the engine's
        // own error, instead of being refused as a target that does not exist.
        const kept = this.lastListed.get(driver.platform) ?? [];
        this.log.warn('agent.inventory.driver_failed', {
          platform: driver.platform,
          error: err,
          kept: kept.length,
        });
        const listing = `failed at ${new Date().toISOString()}: ${String((err as Error)?.message ?? err).slice(0, 160)}`;
        targets.push(...kept.map((t) => ({ ...t, details: { ...t.details, listing } })));
      }
    }
    try {
      await this.catalog.putAgent({
        agent: this.agent,
        platforms: [...this.drivers.keys()],
        targets,
        seenAt: new Date().toISOString(),
        version: this.version,
      });
      this.log.debug(LogEvent.inventoryPublished, { targets: targets.length });
      this.onPublished();
    } catch (err) {
      this.log.warn('agent.inventory.publish_failed', { error: err });
    }
  }
}
