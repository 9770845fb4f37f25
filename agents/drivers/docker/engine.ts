/**
 * What the backup and restore halves of the docker driver share: the dockerd connection, name
 * rules, lookups that tell "absent" from "failed", and the hand-over of a dockerd stream to the
 * sink with abort and clean-up wired in.
 */
import { checkAborted, consumeStream, writeFrom } from '../../core/driver-streams';
import {
  AnswerCutShort,
  getOverUnixSocket,
  MalformedAnswer,
  type HttpAnswer,
} from '../../core/http-answer';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import { DriverError, TransientError, isStowageError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type { BackupSink, DriverContext, StoredStream, StreamInfo } from '../../core/driver';
import type { InspectJson } from './config';
import { statusOf, translate } from './errors';
import type { HelperImage } from './helper';

/**
 * Seconds dockerd gives a container's processes to stop before it kills them (Docker's own
 * default, made explicit): a stop asked for by an agent that is then killed runs on in dockerd
 * for at most this long, and the hold's release waits that out before it decides (holds.ts).
 */
export const STOP_GRACE_S = 10;

export interface Engine {
  docker: Docker;
  socketPath: string;
  helperImage: HelperImage;
  /**
   * Whether the agent runs on dockerd's host and may read and write volumes' data there
   * (host-tree.ts); false: everything goes through the engine's API.
   */
  hostAccess: boolean;
}

/** dockerd's rule for container (and volume) names. */
const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export function isValidName(name: string): boolean {
  return NAME_RE.test(name);
}

/**
 * The container named exactly `name`, or undefined. dockerd resolves `GET /containers/X/json` by
 * name, then by id, then by id prefix; only an exact name match counts here, so `exists('abc')`
 * is not fooled by a container whose id starts with abc.
 */
export async function inspectByName(
  engine: Engine,
  name: string,
): Promise<InspectJson | undefined> {
  if (!isValidName(name)) return undefined;
  try {
    const inspect = (await engine.docker.getContainer(name).inspect()) as unknown as InspectJson;
    return inspect.Name === `/${name}` ? inspect : undefined;
  } catch (err) {
    if (statusOf(err) === 404) return undefined;
    throw translate(err, `inspecting container ${name}`, engine.socketPath);
  }
}

export async function volumeExists(engine: Engine, name: string): Promise<boolean> {
  try {
    await engine.docker.getVolume(name).inspect();
    return true;
  } catch (err) {
    if (statusOf(err) === 404) return false;
    throw translate(err, `inspecting volume ${name}`, engine.socketPath);
  }
}

export async function imageExists(engine: Engine, ref: string): Promise<boolean> {
  try {
    await engine.docker.getImage(ref).inspect();
    return true;
  } catch (err) {
    if (statusOf(err) === 404) return false;
    throw translate(err, `inspecting image ${ref}`, engine.socketPath);
  }
}

/**
 * Removes an image reference (the tag; the image too when nothing else refers to it). An image
 * still used by a container (409) or already gone (404) is left alone: both are fine outcomes.
 */
export async function removeImageRef(
  engine: Engine,
  ref: string,
  ctx: Pick<DriverContext, 'log'>,
): Promise<boolean> {
  try {
    await engine.docker.getImage(ref).remove();
    return true;
  } catch (err) {
    const status = statusOf(err);
    if (status === 409 || status === 404) return true;
    ctx.log.warn(LogEvent.driverStep, {
      step: 'remove image',
      image: ref,
      error: translate(err, `removing image ${ref}`, engine.socketPath),
    });
    return false;
  }
}

export { checkAborted, consumeStream };

export function writeToSink(
  sink: BackupSink,
  info: StreamInfo,
  stream: Readable,
  ctx: DriverContext,
  what: string,
): Promise<StoredStream> {
  return consumeStream(stream, ctx, what, (s) => sink.writeStream(info, s));
}

/** How much of an error answer's text is read for its message. */
const ERROR_TEXT_BYTES = 64 * 1024;

/**
 * Stores the body of dockerd's answer to `GET target` (an archive, an image), read from its
 * socket straight into the sink's memory (core/http-answer.ts: one copy, no Buffer per socket
 * read). An error answer becomes what `translate` makes of it, as dockerode's would; the job's
 * abandonment closes the connection and is reported as itself; an answer cut short is worth a
 * retry (TransientError) and a malformed one is not (DriverError).
 */
export async function writeEngineGet(
  engine: Engine,
  target: string,
  sink: BackupSink,
  info: StreamInfo,
  ctx: DriverContext,
  what: string,
  action: string,
): Promise<StoredStream> {
  checkAborted(ctx, what);
  let answer: HttpAnswer;
  try {
    answer = await getOverUnixSocket(engine.socketPath, target, ctx.signal);
  } catch (err) {
    checkAborted(ctx, what);
    throw failed(err, action, engine.socketPath);
  }
  try {
    if (answer.status !== 200) {
      const text = await answer.text(ERROR_TEXT_BYTES).catch(() => '');
      throw translate(answerError(answer.status, text), action, engine.socketPath);
    }
    const read = (into: Uint8Array) =>
      answer.read(into).catch((err: unknown) => {
        checkAborted(ctx, what);
        throw failed(err, action, engine.socketPath);
      });
    return await writeFrom(sink, info, read);
  } finally {
    answer.close();
  }
}

/** A failure of the exchange itself (not an error answer) as a StowageError. */
function failed(err: unknown, action: string, socketPath: string) {
  if (isStowageError(err)) return err;
  if (err instanceof AnswerCutShort) {
    return new TransientError(
      `${action}: dockerd's answer broke off midway (${err.message}); retry`,
      {
        cause: err,
      },
    );
  }
  if (err instanceof MalformedAnswer) {
    return new DriverError(`${action}: dockerd's answer is not valid HTTP (${err.message})`, {
      cause: err,
    });
  }
  return translate(err, action, socketPath);
}

/** An error answer shaped as dockerode's errors are (statusCode, json), for `translate`. */
function answerError(status: number, text: string): Error {
  let json: unknown = Buffer.from(text);
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON: the text itself is the message
  }
  return Object.assign(new Error(`(HTTP code ${status})`), { statusCode: status, json });
}
