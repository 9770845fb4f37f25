/**
 * LXD's event stream (`GET /1.0/events?type=lifecycle`, a WebSocket on the unix socket), so an
 * instance or custom volume created, deleted, renamed, started, stopped or snapshotted reaches
 * the inventory within a second instead of at the next 30 s listing.
 *
 * LXD serves events only over a WebSocket and Node 20 has no client, so this is the small part
 * of RFC 6455 a reader needs: the upgrade, unmasked frames from the server (fragmented or not),
 * close, and pings answered with masked pongs. Nothing is ever sent but pongs.
 *
 * `watchLxdEvents` calls back once events have been quiet for the debounce time; a dropped
 * stream (LXD restarted) is reopened with backoff, and reopening calls back too, since events may
 * have been missed meanwhile.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../../../kernel/logger';
import { LogEvent } from '../../../kernel/logger';

/** Lifecycle actions that change what the inventory lists (instances, volumes, snapshots). */
const WATCHED = /^(instance|storage-volume)-/;
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;

export interface LxdEventsOptions {
  socketPath: string;
  project: string;
  log: Logger;
  debounceMs?: number;
}

export function watchLxdEvents(options: LxdEventsOptions, onChange: () => void): () => void {
  const debounceMs = options.debounceMs ?? 200;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let retry: NodeJS.Timeout | undefined;
  let socket: Socket | undefined;
  let retryMs = RETRY_MIN_MS;

  const changed = () => {
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (!stopped) onChange();
    }, debounceMs);
  };
  /** One connection: it ends once (error, close, refusal), and then a new one is tried. */
  const open = (isRetry: boolean) => {
    let ended = false;
    const end = (reason: unknown) => {
      if (ended || stopped) return;
      ended = true;
      socket?.destroy();
      socket = undefined;
      options.log.warn(LogEvent.driverStep, {
        step: 'lxd events',
        retryInMs: retryMs,
        error: reason instanceof Error ? reason.message : String(reason),
      });
      retry = setTimeout(() => open(true), retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    };
    const req = http.request({
      socketPath: options.socketPath,
      path: `/1.0/events?type=lifecycle&project=${encodeURIComponent(options.project)}`,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
      },
    });
    req.on('error', end);
    req.on('response', (res) => {
      res.resume();
      end(new Error(`LXD answered the event stream with HTTP ${res.statusCode}`));
    });
    req.on('upgrade', (_res, upgraded: Socket, head: Buffer) => {
      if (stopped) {
        upgraded.destroy();
        return;
      }
      socket = upgraded;
      retryMs = RETRY_MIN_MS;
      if (isRetry) changed();
      const reader = new FrameReader(upgraded, (text) => {
        try {
          const event = JSON.parse(text) as { metadata?: { action?: string } };
          if (WATCHED.test(event.metadata?.action ?? '')) changed();
        } catch {
          // not an event: ignore
        }
      });
      const take = (chunk: Buffer) => {
        if (!reader.push(chunk)) end(new Error('LXD closed the event stream'));
      };
      upgraded.on('data', take);
      upgraded.on('error', end);
      upgraded.on('close', () => end(new Error('the event stream closed')));
      if (head.length > 0) take(head);
    });
    req.end();
  };
  open(false);
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(retry);
    socket?.destroy();
  };
}

/** Reads server frames; answers pings. `push` returns false once the server closed. */
class FrameReader {
  private buffer = Buffer.alloc(0);
  private fragments: Buffer[] = [];

  constructor(
    private readonly socket: Socket,
    private readonly onText: (text: string) => void,
  ) {}

  push(chunk: Buffer): boolean {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (this.buffer.length < 2) return true;
      const fin = (this.buffer[0]! & 0x80) !== 0;
      const opcode = this.buffer[0]! & 0x0f;
      const masked = (this.buffer[1]! & 0x80) !== 0;
      let length = this.buffer[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return true;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return true;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      const mask = masked ? this.buffer.subarray(offset, offset + 4) : undefined;
      if (masked) offset += 4;
      if (this.buffer.length < offset + length) return true;
      const payload = Buffer.from(this.buffer.subarray(offset, offset + length));
      if (mask) for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i % 4]!;
      this.buffer = this.buffer.subarray(offset + length);
      if (opcode === 0x8) return false;
      if (opcode === 0x9) this.pong(payload);
      if (opcode === 0x0 || opcode === 0x1 || opcode === 0x2) {
        this.fragments.push(payload);
        if (fin) {
          this.onText(Buffer.concat(this.fragments).toString('utf8'));
          this.fragments = [];
        }
      }
    }
  }

  /** A client's frames are masked (RFC 6455 5.3). */
  private pong(payload: Buffer): void {
    const mask = randomBytes(4);
    const body = Buffer.from(payload.subarray(0, 125));
    for (let i = 0; i < body.length; i++) body[i]! ^= mask[i % 4]!;
    this.socket.write(Buffer.concat([Buffer.from([0x8a, 0x80 | body.length]), mask, body]));
  }
}
