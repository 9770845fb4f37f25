import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  DirHoldJournal,
  journaled,
  type HoldRecord,
  type HoldReleaser,
} from '../../../../agents/core/holds';
import { silentLogger } from '../../../../kernel/logger';
import { removeDir, tempDir } from '../../../fixtures/local-plane';

const dirs: string[] = [];
const journals: DirHoldJournal[] = [];

function openJournal(dir = tempDir('stowage-holds-')): DirHoldJournal {
  dirs.push(dir);
  const journal = DirHoldJournal.open(dir);
  journals.push(journal);
  return journal;
}

/** What an agent killed mid-job leaves: the directory, with its records, and no owner alive. */
function killed(journal: DirHoldJournal): string {
  journal.close();
  return journal.dir;
}

const records = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.json'));

afterEach(() => {
  for (const j of journals.splice(0)) j.close();
  for (const d of dirs.splice(0)) removeDir(d);
});

describe('the hold journal', () => {
  it('has a hold on disk before it is taken and none after its release', async () => {
    const journal = openJournal();
    const seen: string[][] = [];

    const release = await journaled(
      journal.taker('job-1'),
      'docker',
      'docker.quiesce',
      { container: 'abc' },
      () => {
        seen.push(records(journal.dir));
        return Promise.resolve(() => {
          seen.push(records(journal.dir));
          return Promise.resolve();
        });
      },
    );
    await release();

    expect(seen.map((s) => s.length)).toEqual([1, 1]);
    expect(records(journal.dir)).toEqual([]);
  });

  it('keeps the record of a release that failed and hands it to the next sweep', async () => {
    const journal = openJournal();
    const release = await journaled(journal.taker('job-1'), 'docker', 'docker.quiesce', {}, () =>
      Promise.resolve(() => Promise.reject(new Error('dockerd is down'))),
    );

    await expect(release()).rejects.toThrow('dockerd is down');

    expect(journal.pending().map((r) => r.kind)).toEqual(['docker.quiesce']);
  });

  it('never sweeps a hold a running task still has in hand', async () => {
    const journal = openJournal();
    await journal.take('docker', 'docker.helper', { name: 'h' }, 'job-1');
    const released: string[] = [];

    const outcome = await journal.sweep(
      new Map([['docker', (r: HoldRecord) => Promise.resolve(void released.push(r.kind))]]),
      silentLogger,
    );

    expect(outcome).toEqual({ released: 0, kept: 0 });
    expect(released).toEqual([]);
  });

  it('releases what a killed agent left, newest first, and clears each record once released', async () => {
    const first = openJournal();
    for (const kind of ['docker.volume', 'docker.aside', 'docker.swap']) {
      await first.take('docker', kind, { kind }, 'job-1');
    }
    await first.take('lxd', 'lxd.state', { instance: 'c1' }, 'job-2');
    const dir = killed(first);
    const order: string[] = [];
    const release: HoldReleaser = (r) => Promise.resolve(void order.push(r.kind));

    const next = openJournal(dir);
    const outcome = await next.sweep(
      new Map([
        ['docker', release],
        ['lxd', release],
      ]),
      silentLogger,
    );

    expect(order).toEqual(['lxd.state', 'docker.swap', 'docker.aside', 'docker.volume']);
    expect(outcome).toEqual({ released: 4, kept: 0 });
    expect(records(dir)).toEqual([]);
  });

  it("keeps a job's older holds when a newer one of it cannot be released, and the other jobs' are released", async () => {
    const first = openJournal();
    await first.take('docker', 'docker.volume', {}, 'job-1');
    await first.take('docker', 'docker.swap', {}, 'job-1');
    await first.take('docker', 'docker.helper', {}, 'job-2');
    const dir = killed(first);
    const released: string[] = [];

    const next = openJournal(dir);
    const outcome = await next.sweep(
      new Map<string, HoldReleaser>([
        [
          'docker',
          (r) =>
            r.kind === 'docker.swap'
              ? Promise.reject(new Error('dockerd is down'))
              : Promise.resolve(void released.push(r.kind)),
        ],
      ]),
      silentLogger,
    );

    expect(released).toEqual(['docker.helper']);
    expect(outcome).toEqual({ released: 1, kept: 2 });
    expect(next.pending().map((r) => r.kind)).toEqual(['docker.swap', 'docker.volume']);
  });

  it('keeps the holds of a platform this agent has no driver for', async () => {
    const first = openJournal();
    await first.take('lxd', 'lxd.backup', { path: '/1.0/x' }, 'job-1');
    const next = openJournal(killed(first));

    const outcome = await next.sweep(new Map(), silentLogger);

    expect(outcome).toEqual({ released: 0, kept: 1 });
  });

  it('rewrites a record durably when the hold changes', async () => {
    const journal = openJournal();
    const hold = await journal.take('lxd', 'lxd.import', { phase: 'import' }, 'job-1');

    await hold.update({ phase: 'swap' });

    const [file] = records(journal.dir);
    expect(JSON.parse(readFileSync(join(journal.dir, file!), 'utf8'))).toMatchObject({
      kind: 'lxd.import',
      jobId: 'job-1',
      data: { phase: 'swap' },
    });
  });

  it('refuses a directory another live agent owns, and one already open in this process', () => {
    const journal = openJournal();
    writeFileSync(join(journal.dir, 'owner.pid'), '1\n'); // init: always alive

    expect(() => DirHoldJournal.open(journal.dir)).toThrow(/already open in this process/);
    journal.close();
    writeFileSync(join(journal.dir, 'owner.pid'), '1\n');
    expect(() => DirHoldJournal.open(journal.dir)).toThrow(/another agent \(pid 1\)/);
  });

  it('drops a record whose take never returned, and sets aside one it cannot read', () => {
    const dir = tempDir('stowage-holds-');
    dirs.push(dir);
    writeFileSync(join(dir, '.1700000000000-000001-abcdef01.json.tmp'), '{"half');
    writeFileSync(join(dir, '1700000000000-000002-abcdef02.json'), 'not json');

    const journal = openJournal(dir);

    expect(journal.pending()).toEqual([]);
    expect(existsSync(join(dir, '.1700000000000-000001-abcdef01.json.tmp'))).toBe(false);
    expect(existsSync(join(dir, '1700000000000-000002-abcdef02.json.bad'))).toBe(true);
  });
});
