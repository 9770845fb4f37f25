/**
 * The docker driver's read of a dockerd stream straight into the sink (engine.ts writeEngineGet)
 * against a fake dockerd on a unix socket: the body is stored whole, and each way the answer can
 * fail is reported as what it is: dockerd's refusal with its message, a stream cut short (worth
 * a retry), an answer that is not HTTP (not worth one), the job's abandonment.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { writeEngineGet, type Engine } from '../../../../agents/drivers/docker/engine';
import { DriverError, TransientError } from '../../../../kernel/errors';
import { makeDriverContext, makeMemoryPoint } from '../../../fixtures/memory-point';

let dir: string;
let server: Server | undefined;
let engine: Engine;
let requests: string[];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'stowage-engine-get-'));
});
afterEach(async () => {
  await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
  server = undefined;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fake dockerd that answers every request with `answer`, then ends (unless `hold`). */
async function fakeDockerd(answer: Buffer, hold = false): Promise<void> {
  const socketPath = join(dir, `d${Math.random()}.sock`);
  requests = [];
  server = createServer((conn) => {
    conn.on('error', () => undefined);
    conn.once('data', (data) => {
      requests.push(data.toString('latin1').split('\r\n')[0]!);
      conn.write(answer);
      if (!hold) conn.end();
    });
  });
  await new Promise<void>((resolve) => server!.listen(socketPath, resolve));
  engine = { socketPath } as Engine;
}

function chunked(body: Buffer, end = '0\r\n\r\n'): Buffer {
  const parts: Buffer[] = [Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n')];
  for (let at = 0; at < body.length; at += 30_000) {
    const piece = body.subarray(at, at + 30_000);
    parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from(end));
  return Buffer.concat(parts);
}

const info = { name: 'volume/v', kind: 'volume-tar' };
const get = (point = makeMemoryPoint(), ctx = makeDriverContext()) =>
  writeEngineGet(
    engine,
    '/containers/h1/archive?path=%2Fmnt%2Fvol',
    point.sink,
    info,
    ctx,
    'backup of docker:app',
    'reading volume v',
  );

describe('writeEngineGet', () => {
  it("stores dockerd's chunked answer whole", async () => {
    const body = randomBytes(3 * 1024 * 1024 + 17);
    await fakeDockerd(chunked(body));
    const point = makeMemoryPoint();

    const stored = await get(point);

    expect(requests).toEqual(['GET /containers/h1/archive?path=%2Fmnt%2Fvol HTTP/1.1']);
    expect(stored).toMatchObject({ name: 'volume/v', size: body.length });
    expect(point.bytes.get('volume/v')!.equals(body)).toBe(true);
  });

  it("reports dockerd's refusal with its own message", async () => {
    const json = JSON.stringify({ message: 'Could not find the file /mnt/vol in container h1' });
    await fakeDockerd(
      Buffer.from(`HTTP/1.1 404 Not Found\r\nContent-Length: ${json.length}\r\n\r\n${json}`),
    );

    const err = await get().catch((e: unknown) => e);

    expect(err).toBeInstanceOf(DriverError);
    expect((err as Error).message).toBe(
      'reading volume v: dockerd refused (HTTP 404): Could not find the file /mnt/vol in container h1',
    );
  });

  it('reports a stream cut short as worth a retry, and one that is not HTTP as not', async () => {
    await fakeDockerd(chunked(randomBytes(100_000), ''));
    const cutShort = await get().catch((e: unknown) => e);
    expect(cutShort).toBeInstanceOf(TransientError);
    expect((cutShort as Error).message).toMatch(/reading volume v: dockerd's answer broke off/);
    await new Promise((resolve) => server!.close(resolve));

    await fakeDockerd(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'));
    const malformed = await get().catch((e: unknown) => e);
    expect(malformed).toBeInstanceOf(DriverError);
    expect(malformed).not.toBeInstanceOf(TransientError);
    expect((malformed as Error).message).toMatch(/is not valid HTTP \(not a chunk size: "zz"\)/);
  });

  it('reports a dockerd that is not there as unreachable', async () => {
    engine = { socketPath: join(dir, 'absent.sock') } as Engine;

    const err = await get().catch((e: unknown) => e);

    expect(err).toBeInstanceOf(TransientError);
    expect((err as Error).message).toMatch(/cannot reach dockerd at .*absent\.sock \(ENOENT\)/);
  });

  it('stops when the job is abandoned midway, and says so', async () => {
    await fakeDockerd(chunked(randomBytes(100_000), ''), true);
    const abandon = new AbortController();
    const point = makeMemoryPoint({ onChunk: () => abandon.abort() });

    const err = await get(point, makeDriverContext({ signal: abandon.signal })).catch(
      (e: unknown) => e,
    );

    expect(err).toBeInstanceOf(TransientError);
    expect((err as Error).message).toBe(
      'backup of docker:app stopped: the job was abandoned (heartbeat lost or agent draining)',
    );
  });
});
