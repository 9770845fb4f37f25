/**
 * The CLI's --json contract while it waits: stdout holds exactly one JSON document, and the
 * progress of the job it follows goes to stderr. The CLI runs as a process against a stub API.
 */
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Job } from '../../../kernel/model';
import { makeJob } from '../../fixtures/factories';

const BIN = new URL('../../../cli/bin.mjs', import.meta.url).pathname;
const MiB = 1024 * 1024;

let server: Server;
let api: string;
let polls = 0;

/** The job as the API shows it: running with progress on the first poll, then done. */
function jobAt(poll: number): Job {
  return makeJob({
    jobId: 'job-1',
    recoveryPointId: 'rp-1',
    ...(poll === 0
      ? {
          status: 'RUNNING',
          progress: {
            phase: 'volume data',
            bytesDone: MiB,
            bytesTotal: 4 * MiB,
            rate: MiB,
            etaSeconds: 3,
            updatedAt: new Date().toISOString(),
          },
        }
      : { status: 'SUCCEEDED', progress: undefined }),
  });
}

beforeAll(async () => {
  server = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.method === 'POST' && req.url === '/backups') {
      res.writeHead(202).end(
        JSON.stringify({
          jobId: 'job-1',
          kind: 'BACKUP',
          status: 'PENDING',
          target: 'docker:web',
          agent: 'site-1',
          recoveryPointId: 'rp-1',
          executionArn: 'arn:x',
        }),
      );
    } else if (req.method === 'GET' && req.url === '/jobs/job-1') {
      res.writeHead(200).end(JSON.stringify(jobAt(polls++)));
    } else {
      res.writeHead(404).end('{"error":"NotFound","message":"stub"}');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => server.close());

function stowage(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...process.env, STOWAGE_API: api } },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
    );
  });
}

describe('--json while waiting', () => {
  it('prints only the one JSON document on stdout, and the progress on stderr', async () => {
    polls = 0;

    const run = await stowage('backup', 'docker:web', '--wait', '--json');

    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({
      jobId: 'job-1',
      status: 'SUCCEEDED',
      recoveryPointId: 'rp-1',
    });
    expect(run.stderr).toContain('backup of docker:web started as job-1');
    expect(run.stderr).toContain('job-1 running: volume data, 1.0 MiB of 4.0 MiB');
  }, 30_000);

  it('keeps stdout to the job document when following a job', async () => {
    polls = 0;

    const run = await stowage('job', 'job-1', '--follow', '--json');

    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ jobId: 'job-1', status: 'SUCCEEDED' });
    expect(run.stderr).toContain('job-1 running: volume data');
  }, 30_000);
});
