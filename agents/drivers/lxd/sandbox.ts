/**
 * Restore tests' sandboxes for LXD instances. A sandbox is the ordinary import under a new name
 * (restore.ts) with every device but the root disk masked (`type: none`, the instance's own and
 * its profiles'): no network card, no custom volume or host directory of the original, no
 * passed-through device, and proxy devices (published ports) gone with the rest. It never
 * autostarts with the daemon, and carries SANDBOX_KEY = its name, so `removeSandbox` removes only
 * an instance this restore made.
 *
 * The probe runs through LXD's exec API with its output recorded (`record-output`), so no
 * websocket is needed; its logs are read back and deleted.
 */
import type { Logger } from '../../../kernel/logger';
import type { DriverContext, ProbeResult } from '../../core/driver';
import type { LxdOperation } from './client';
import { translate } from './errors';
import { getInstance, instancePath, removeInstance, type Engine } from './instance';

/** A user key of the instance's config: the sandbox's own name. */
export const SANDBOX_KEY = 'user.stowage.sandbox';

type Devices = Record<string, Record<string, string>>;

/** The device overrides that isolate a sandbox: every device but the root disk masked. */
export function sandboxDevices(expanded: Devices | undefined): Devices {
  const masked: Devices = {};
  for (const [name, device] of Object.entries(expanded ?? {})) {
    if (device.type === 'disk' && device.path === '/') continue;
    masked[name] = { type: 'none' };
  }
  return masked;
}

/** The config keys a sandbox gets on top of the point's. */
export function sandboxConfig(name: string): Record<string, string> {
  return { [SANDBOX_KEY]: name, 'boot.autostart': 'false' };
}

const POLL_S = 1;
const OUTPUT_CAP = 64 * 1024;

/** Runs `command` inside the running sandbox `name` (LXD's exec, output recorded). */
export async function probeSandbox(
  engine: Engine,
  name: string,
  command: string[],
  timeoutSeconds: number,
  ctx: DriverContext,
): Promise<ProbeResult> {
  const instance = await getInstance(engine, name);
  if (instance?.config?.[SANDBOX_KEY] !== name) {
    return { exitCode: null, output: '', error: `sandbox ${name} is not there` };
  }
  if (instance.status !== 'Running') {
    return {
      exitCode: null,
      output: '',
      error: `sandbox ${name} is not running (${instance.status}); it stopped after it started`,
    };
  }
  let operation: string;
  try {
    const answer = await engine.client.request('POST', `${instancePath(name)}/exec`, {
      body: {
        command,
        'wait-for-websocket': false,
        interactive: false,
        'record-output': true,
        environment: {},
      },
    });
    operation = answer.operation;
  } catch (err) {
    return {
      exitCode: null,
      output: '',
      error: translate(err, 'starting the probe', engine.socketPath).message,
    };
  }
  const id = operation.split('/').pop() ?? operation;
  const deadline = Date.now() + timeoutSeconds * 1000;
  let op: LxdOperation | undefined;
  while (Date.now() < deadline && !ctx.signal.aborted) {
    try {
      const now = await engine.client.get<LxdOperation>(
        `/1.0/operations/${encodeURIComponent(id)}/wait?timeout=${POLL_S}`,
      );
      if (now.status_code === 200 || now.status_code >= 400) {
        op = now;
        break;
      }
    } catch (err) {
      return {
        exitCode: null,
        output: '',
        error: translate(err, 'waiting for the probe', engine.socketPath).message,
      };
    }
  }
  if (!op) {
    // The instance is force-stopped and deleted next, which ends the process with it.
    const why = ctx.signal.aborted
      ? 'the job was abandoned while it ran'
      : `timed out after ${timeoutSeconds} s`;
    return { exitCode: null, output: '', error: why };
  }
  const meta = (op.metadata ?? {}) as { return?: number; output?: Record<string, string> };
  const output = await readOutput(engine, meta.output ?? {});
  if (op.status_code >= 400) {
    return { exitCode: null, output, error: op.err || 'the probe could not run' };
  }
  return { exitCode: typeof meta.return === 'number' ? meta.return : null, output };
}

/** stdout then stderr of an exec whose output LXD recorded; the logs are deleted after. */
async function readOutput(engine: Engine, logs: Record<string, string>): Promise<string> {
  let text = '';
  for (const fd of ['1', '2']) {
    const path = logs[fd];
    if (!path) continue;
    try {
      const { stream } = await engine.client.download(path);
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      text += Buffer.concat(chunks).toString('utf8');
      await engine.client.request('DELETE', path).catch(() => undefined);
    } catch {
      // the output is a courtesy; the exit code is the verdict
    }
  }
  return text.length > OUTPUT_CAP ? text.slice(text.length - OUTPUT_CAP) : text;
}

/** Removes the sandbox instance `name`, if it is one (its SANDBOX_KEY says so). */
export async function removeSandbox(engine: Engine, name: string, _log?: Logger): Promise<void> {
  const instance = await getInstance(engine, name);
  if (!instance || instance.config?.[SANDBOX_KEY] !== name) return;
  await removeInstance(engine, name);
}
