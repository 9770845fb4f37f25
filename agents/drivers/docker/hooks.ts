/**
 * Backup hooks: commands run with `exec` inside the container around a backup (a database dump
 * before it is paused or stopped, a cache warm-up after it runs again).
 *
 * A hook runs with a deadline. On timeout the exec'd process is killed when the agent can see it
 * (dockerd reports its host pid; the agent usually runs on the host as root); in any case the
 * driver stops waiting and the hook counts as failed. Its combined stdout+stderr is kept up to
 * OUTPUT_CAP (the tail, where errors usually are) for the job log; the recovery point's metadata
 * keeps a shorter tail.
 */
import { Writable } from 'node:stream';
import { DriverError, isStowageError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type { BackupHook, DriverContext } from '../../core/driver';
import type { HookRecordJson, InspectJson } from './config';
import type { Engine } from './engine';
import { translate } from './errors';

/** What the job log keeps of one hook's output: 64 KiB is a screenful of errors many times over. */
export const OUTPUT_CAP = 64 * 1024;
/** What the metadata keeps: enough for the last lines, small enough for every manifest. */
export const METADATA_TAIL = 4 * 1024;
/** What an error message quotes. */
const ERROR_TAIL = 1024;
export const DEFAULT_HOOK_TIMEOUT_SECONDS = 60;
/** The job-log event of a hook run (`{ phase, command, exitCode, output }`). */
export const HOOK_EVENT = 'driver.hook';

export type HookPhase = 'pre' | 'post';

/** One hook as run, recorded in the metadata. `exitCode` is null when it did not finish. */
export type HookRecord = HookRecordJson;

/** Keeps the last `cap` bytes written to it. */
class TailBuffer extends Writable {
  private chunks: Buffer[] = [];
  private size = 0;
  truncated = false;

  constructor(private readonly cap: number) {
    super();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    if (this.size > 2 * this.cap) this.compact();
    done();
  }

  private compact(): void {
    const all = Buffer.concat(this.chunks);
    if (all.length > this.cap) this.truncated = true;
    const kept = all.subarray(Math.max(0, all.length - this.cap));
    this.chunks = [kept];
    this.size = kept.length;
  }

  text(): string {
    this.compact();
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

function tail(text: string, max: number): string {
  return text.length <= max ? text : text.slice(text.length - max);
}

export interface ExecResult {
  exitCode: number | null;
  output: string;
  error?: string;
}

export async function execWithTimeout(
  engine: Engine,
  containerId: string,
  hook: BackupHook,
  ctx: DriverContext,
): Promise<ExecResult> {
  const timeoutMs = (hook.timeoutSeconds ?? DEFAULT_HOOK_TIMEOUT_SECONDS) * 1000;
  const container = engine.docker.getContainer(containerId);
  const exec = await container.exec({
    Cmd: hook.command,
    AttachStdout: true,
    AttachStderr: true,
  });
  const stream = await exec.start({ hijack: true, stdin: false });
  const output = new TailBuffer(OUTPUT_CAP);
  engine.docker.modem.demuxStream(stream, output, output);
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const finished = new Promise<'done'>((resolve, reject) => {
    stream.on('end', () => resolve('done'));
    stream.on('close', () => resolve('done'));
    stream.on('error', reject);
  });
  const timedOut = new Promise<'timeout' | 'aborted'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
    onAbort = () => resolve('aborted');
    ctx.signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    const how = await Promise.race([finished, timedOut]);
    if (how !== 'done') {
      await killExec(exec, ctx);
      const error =
        how === 'timeout'
          ? `timed out after ${timeoutMs / 1000} s`
          : 'the job was abandoned while it ran';
      return { exitCode: null, output: output.text(), error };
    }
    const { ExitCode } = (await exec.inspect()) as { ExitCode: number | null };
    return { exitCode: ExitCode, output: output.text() };
  } finally {
    clearTimeout(timer);
    if (onAbort) ctx.signal.removeEventListener('abort', onAbort);
    stream.destroy();
  }
}

/** Kills a hook that overran, by its host pid; only logs when the agent cannot. */
async function killExec(exec: { inspect(): Promise<unknown> }, ctx: DriverContext): Promise<void> {
  try {
    const { Pid, Running } = (await exec.inspect()) as { Pid?: number; Running?: boolean };
    if (Running && Pid && Pid > 0) process.kill(Pid, 'SIGKILL');
  } catch (err) {
    ctx.log.warn(LogEvent.driverStep, {
      step: 'kill hook',
      error: err instanceof Error ? err.message : String(err),
    });
  }
}

/**
 * Runs one hook inside `inspect`'s container (which must be running). Returns its record; throws
 * DriverError (naming the hook, its exit code and its last output) when it fails and its
 * `onError` is `fail`. Every hook, failed or not, is logged as `driver.hook`.
 */
export async function runHook(
  engine: Engine,
  inspect: InspectJson,
  phase: HookPhase,
  hook: BackupHook,
  ctx: DriverContext,
): Promise<HookRecord> {
  const name = inspect.Name.replace(/^\//, '');
  const command = hook.command;
  const started = Date.now();
  let result: ExecResult;
  if (!Array.isArray(command) || command.length === 0) {
    result = { exitCode: null, output: '', error: 'the hook has no command' };
  } else {
    try {
      const state = (await engine.docker.getContainer(inspect.Id).inspect()) as unknown as
        InspectJson | undefined;
      if (state?.State?.Running !== true || state.State.Paused === true) {
        result = {
          exitCode: null,
          output: '',
          error: `container ${name} is not running (${state?.State?.Status ?? 'unknown'}); hooks run inside a running container`,
        };
      } else {
        result = await execWithTimeout(engine, inspect.Id, hook, ctx);
      }
    } catch (err) {
      const e = isStowageError(err) ? err : translate(err, 'running the hook', engine.socketPath);
      result = { exitCode: null, output: '', error: e.message };
    }
  }
  const durationMs = Date.now() - started;
  const record: HookRecord = {
    phase,
    command,
    exitCode: result.exitCode,
    durationMs,
    outputTail: tail(result.output, METADATA_TAIL),
    ...(result.error ? { error: result.error } : {}),
  };
  const failed = result.error !== undefined || result.exitCode !== 0;
  ctx.log.info(HOOK_EVENT, {
    phase,
    command,
    exitCode: result.exitCode,
    durationMs,
    output: result.output,
    ...(result.error ? { error: result.error } : {}),
  });
  if (failed) {
    const why = result.error ?? `exited with code ${String(result.exitCode)}`;
    const last = tail(result.output.trim(), ERROR_TAIL);
    const message =
      `${phase} hook \`${command.join(' ')}\` in container ${name} failed: ${why}` +
      (last ? `; its last output: ${last}` : '; it wrote nothing');
    if ((hook.onError ?? 'fail') === 'fail') throw new DriverError(message);
    ctx.log.warn(LogEvent.driverStep, { step: `${phase} hook failed, continuing`, error: message });
  }
  return record;
}

/** Runs hooks in order; stops at the first that fails with `onError: fail`. */
export async function runHooks(
  engine: Engine,
  inspect: InspectJson,
  phase: HookPhase,
  hooks: readonly BackupHook[] | undefined,
  records: HookRecord[],
  ctx: DriverContext,
): Promise<void> {
  for (const hook of hooks ?? []) {
    ctx.phase(`${phase} hook`);
    records.push(await runHook(engine, inspect, phase, hook, ctx));
  }
}
