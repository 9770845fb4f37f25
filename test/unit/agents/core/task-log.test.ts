import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  formatLogFields,
  maskSecrets,
  TaskLog,
  TASK_LOG_LIMITS,
} from '../../../../agents/core/task-log';
import { createLogger } from '../../../../kernel/logger';
import type { TaskLogBatch } from '../../../../kernel/model';

function makeTaskLog(
  overrides: { fail?: () => boolean; limits?: Partial<typeof TASK_LOG_LIMITS> } = {},
) {
  const written: TaskLogBatch[] = [];
  const errors: unknown[] = [];
  let tick = 0;
  const log = new TaskLog({
    claimId: 'claim-1',
    agent: 'site-a',
    target: 'docker:web',
    write: async (batch) => {
      if (overrides.fail?.()) throw new Error('the catalog is down');
      written.push(structuredClone(batch));
    },
    onWriteError: (err) => errors.push(err),
    limits: { flushMs: 60_000, ...overrides.limits },
    now: () => new Date(Date.UTC(2026, 11, 6, 12, 0, 0, tick++)),
  });
  return { log, written, errors };
}

describe('a task log line', () => {
  it('leads with the step, phase or reason, then the other fields as key=value', () => {
    expect(
      formatLogFields(
        { step: 'volume webdata', bytes: 1024, read: 'host', hostAccess: true, note: 'two words' },
        500,
      ),
    ).toBe('volume webdata bytes=1024 read=host hostAccess=true note="two words"');
  });

  it('leaves out the keys every line of the job repeats, and writes errors and objects readably', () => {
    const text = formatLogFields(
      {
        jobId: 'job-1',
        target: 'docker:web',
        kind: 'BACKUP',
        recoveryPointId: 'rp-1',
        error: new Error('no such container'),
        command: ['sh', '-c', 'sync'],
      },
      500,
    );
    expect(text).toBe('error="Error: no such container" command=["sh","-c","sync"]');
  });

  it('keeps a hook output of many lines on one line', () => {
    expect(formatLogFields({ output: 'one\ntwo\r\nthree' }, 500)).toBe(
      'output="one\\ntwo\\r\\nthree"',
    );
    expect(formatLogFields({ step: 'a\nb' }, 500)).toBe('a ⏎ b');
  });

  it('is cut at the limit, ending in an ellipsis', () => {
    const text = formatLogFields({ step: 'x'.repeat(1000) }, 500);
    expect(text).toHaveLength(500);
    expect(text.endsWith('…')).toBe(true);
  });

  it('masks the values of secret-named fields, at any depth', () => {
    const text = formatLogFields(
      {
        step: 'login',
        password: 'hunter2',
        taskToken: 'AAAAtoken',
        config: { url: 'https://vc', credentials: { user: 'u', secret: 's3cr3t' } },
        vspherePasswordFile: '/etc/pw',
      },
      500,
    );
    expect(text).not.toMatch(/hunter2|AAAAtoken|s3cr3t/);
    expect(text).toContain('password=***');
    expect(text).toContain('taskToken=***');
    expect(text).toContain('"credentials":"***"');
  });

  it('masks secrets that show in text by their form', () => {
    expect(maskSecrets('mysqldump --password hunter2 db')).toBe('mysqldump --password *** db');
    expect(maskSecrets('curl --token=abc123 x')).toBe('curl --token=*** x');
    expect(maskSecrets('PGPASSWORD=hunter2 pg_dump')).toBe('PGPASSWORD=*** pg_dump');
    expect(maskSecrets('{"secret": "s3cr3t"}')).toBe('{"secret": "***"}');
    expect(maskSecrets('GET https://admin:hunter2@vc.example/sdk')).toBe(
      'GET https://admin:***@vc.example/sdk',
    );
    expect(maskSecrets('Authorization: Bearer eyJhbGciOi.x.y')).toBe('Authorization: Bearer ***');
    // Words that only name a secret stay readable.
    expect(maskSecrets('the task token is gone (the job ended)')).toBe(
      'the task token is gone (the job ended)',
    );
  });

  it('never shows a secret given as password=..., whatever surrounds it and wherever the line is cut', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: fc.constantFrom(...'abc -"\':=\n'.split('')), maxLength: 600 }),
        fc.stringMatching(/^[A-Z0-9]{8,24}$/),
        fc.string({ unit: fc.constantFrom(...'abc -\n'.split('')), maxLength: 600 }),
        fc.constantFrom('password=', 'PASSWORD: ', '--password ', 'token=', 'secret: '),
        fc.integer({ min: 20, max: 700 }),
        (before, secret, after, label, maxChars) => {
          const text = formatLogFields(
            { step: 'hook', command: `${before}${label}${secret} ${after}` },
            maxChars,
          );
          // Any 8 characters of the secret would be a leak.
          expect(text).not.toContain(secret.slice(0, 8));
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('a task log', () => {
  it('keeps lines from info up in the order they were logged, and writes nothing before start', async () => {
    const { log, written } = makeTaskLog();
    const logger = log.logger(createLogger({ service: 'test', write: () => undefined }));
    logger.debug('agent.noise', { step: 'not kept' });
    logger.info('driver.step', { phase: 'volume data' });
    logger.child({ container: 'web' }).warn('driver.step', { step: 'hook failed, continuing' });

    await log.flush();
    expect(written).toEqual([]);

    log.start();
    await log.close();
    expect(written).toEqual([
      {
        claimId: 'claim-1',
        seq: 0,
        agent: 'site-a',
        target: 'docker:web',
        lines: [
          {
            at: '2026-12-06T12:00:00.000Z',
            level: 'info',
            event: 'driver.step',
            text: 'volume data',
          },
          {
            at: '2026-12-06T12:00:00.001Z',
            level: 'warn',
            event: 'driver.step',
            text: 'hook failed, continuing container=web',
          },
        ],
      },
    ]);
  });

  it('writes nothing when it is closed without having started (a task not claimed here)', async () => {
    const { log, written } = makeTaskLog();
    log.record('info', 'agent.task.received', {});
    await log.close();
    expect(written).toEqual([]);
  });

  it('keeps at most its cap of lines, in batches, and counts the rest', async () => {
    const { log, written } = makeTaskLog({ limits: { lines: 250, batchLines: 100 } });
    log.start();
    for (let i = 0; i < 400; i++) log.record('info', 'driver.step', { step: `line ${i}` });
    await log.close();

    expect(written.map((b) => [b.seq, b.lines.length, b.dropped ?? 0])).toEqual([
      [0, 100, 150],
      [1, 100, 150],
      [2, 50, 150],
    ]);
    expect(written.flatMap((b) => b.lines.map((l) => l.text))).toEqual(
      Array.from({ length: 250 }, (_, i) => `line ${i}`),
    );
  });

  it('writes the count of lines dropped after its last full batch', async () => {
    const { log, written } = makeTaskLog({ limits: { lines: 2 } });
    log.start();
    log.record('info', 'a', {});
    log.record('info', 'b', {});
    await log.flush();
    log.record('info', 'c', {});
    await log.close();
    expect(written.map((b) => [b.seq, b.lines.length, b.dropped ?? 0])).toEqual([
      [0, 2, 0],
      [1, 0, 1],
    ]);
  });

  it('retries a batch that failed as it was, and writes later lines after it', async () => {
    let failures = 2;
    const { log, written, errors } = makeTaskLog({ fail: () => failures-- > 0 });
    log.start();
    log.record('info', 'first', {});
    await log.flush(); // fails: the batch waits
    log.record('info', 'second', {});
    await log.flush(); // fails again
    log.record('info', 'third', {});
    await log.close();

    expect(errors).toHaveLength(2);
    expect(written.map((b) => [b.seq, b.lines.map((l) => l.event)])).toEqual([
      [0, ['first']],
      [1, ['second', 'third']],
    ]);
  });

  it('has every line logged before a flush written when the flush resolves, even with one under way', async () => {
    const { log, written } = makeTaskLog();
    log.start(); // starts a flush of nothing
    log.record('info', 'one', {});
    const first = log.flush();
    log.record('info', 'two', {});
    await log.flush();
    expect(written.flatMap((b) => b.lines.map((l) => l.event))).toEqual(['one', 'two']);
    await first;
    await log.close();
  });
});
