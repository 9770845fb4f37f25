/**
 * Which agent a request goes to: the one that sees its target (agents publish their inventory
 * to the catalog), the one named with @AGENT, or every one whose targets match a selector.
 * Platforms whose targets are not listed (paths) are placed by the platforms an agent serves.
 */
import type { Catalog } from '../../../kernel/catalog';
import { AgentUnavailable, TargetNotFound, ValidationError } from '../../../kernel/errors';
import type { AgentRecord } from '../../../kernel/model';
import { specOf } from '../../../kernel/platforms';
import {
  matchesSelector,
  targetKey,
  type LabelSelector,
  type TargetRef,
} from '../../../kernel/targets';

/**
 * The most targets one backup job takes: the Map's items travel in the execution input, which
 * Step Functions limits to 256 KiB (~300 bytes an item, with room for the options).
 */
export const MAX_BACKUP_ITEMS = 200;

function seenFor(agent: AgentRecord, now: string): string {
  const seconds = Math.max(0, Math.round((Date.parse(now) - Date.parse(agent.seenAt)) / 1000));
  return `agent ${agent.agent}, last report ${seconds}s ago`;
}

/** The agent named with @AGENT; AgentUnavailable when it never reported. */
async function namedAgent(catalog: Catalog, name: string): Promise<AgentRecord> {
  const agent = await catalog.getAgent(name);
  if (!agent) {
    throw new AgentUnavailable(
      `no agent named "${name}" has reported to this Stowage; start one with \`stowage agent --site ${name}\``,
    );
  }
  return agent;
}

/** Every agent that serves the platform; AgentUnavailable when none does. */
async function servingAgents(catalog: Catalog, platform: string): Promise<AgentRecord[]> {
  const serving = (await catalog.listAgents()).filter((a) => a.platforms.includes(platform));
  if (serving.length === 0) {
    throw new AgentUnavailable(
      `no agent serves platform "${platform}"; start an agent on a host that runs it`,
    );
  }
  return serving;
}

/** Finds the one agent that sees `ref` (or checks the one named with @AGENT). */
export async function agentSeeing(
  catalog: Catalog,
  ref: TargetRef,
  now: string,
): Promise<AgentRecord> {
  const key = targetKey(ref);
  const { listed } = specOf(ref.platform);
  if (ref.agent) {
    const agent = await namedAgent(catalog, ref.agent);
    if (!listed) {
      if (!agent.platforms.includes(ref.platform)) {
        throw new AgentUnavailable(`agent ${ref.agent} does not serve platform "${ref.platform}"`);
      }
      return agent;
    }
    if (!agent.targets.some((t) => t.target === key)) {
      throw new TargetNotFound(
        `${key} is not among the targets ${seenFor(agent, now)} sees; \`stowage targets\` lists them`,
      );
    }
    return agent;
  }
  const serving = await servingAgents(catalog, ref.platform);
  if (!listed) {
    // Nothing lists every path: the agent finds out whether it exists.
    if (serving.length > 1) {
      throw new ValidationError(
        `${key} could be on any of ${serving.map((a) => a.agent).join(', ')}; name the host's agent as ${key}@AGENT`,
      );
    }
    return serving[0]!;
  }
  const seeing = serving.filter((a) => a.targets.some((t) => t.target === key));
  if (seeing.length === 0) {
    throw new TargetNotFound(
      `${key} does not exist: it is not among the targets the agents see (${serving
        .map((a) => seenFor(a, now))
        .join('; ')}); \`stowage targets\` lists them`,
    );
  }
  if (seeing.length > 1) {
    throw new ValidationError(
      `${key} is seen by several agents (${seeing.map((a) => a.agent).join(', ')}); name one as ${key}@AGENT`,
    );
  }
  return seeing[0]!;
}

/**
 * Every target whose labels match the selector, on the named agent or on every agent that
 * serves the platform, in a stable order (agent, then name). No match is an error that says what
 * was looked at.
 */
export async function resolveSelector(
  catalog: Catalog,
  sel: LabelSelector,
  now: string,
): Promise<Array<{ target: string; agent: string }>> {
  const agents = sel.agent
    ? [await namedAgent(catalog, sel.agent)]
    : await servingAgents(catalog, sel.platform);
  const matches = agents.flatMap((a) =>
    a.targets
      .filter((t) => t.platform === sel.platform && matchesSelector(sel, t.labels))
      .map((t) => ({ target: t.target, agent: a.agent, name: t.name }))
      .sort((x, y) => x.name.localeCompare(y.name)),
  );
  const noun = specOf(sel.platform).selector?.noun ?? 'target';
  if (matches.length === 0) {
    throw new TargetNotFound(
      `no ${noun} matches the selector ${sel.text}${sel.agent ? `@${sel.agent}` : ''} (${agents
        .map((a) => seenFor(a, now))
        .join(
          '; ',
        )}); every label must match exactly: ${specOf(sel.platform).selector?.hint ?? ''}`,
    );
  }
  if (matches.length > MAX_BACKUP_ITEMS) {
    throw new ValidationError(
      `the selector ${sel.text} matches ${matches.length} ${noun}s, more than the ${MAX_BACKUP_ITEMS} one backup job takes; add a label to narrow it, or name an agent with @AGENT`,
    );
  }
  return matches.map(({ target, agent }) => ({ target, agent }));
}
