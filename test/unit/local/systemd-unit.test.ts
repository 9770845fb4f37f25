/**
 * The agent's systemd unit (local/systemd/stowage-agent.service): what the README promises of it,
 * read from the file, and systemd's own verdict (systemd-analyze verify).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ENTRIES } from '../../../cli/build';

const UNIT = new URL('../../../local/systemd/stowage-agent.service', import.meta.url).pathname;
const text = readFileSync(UNIT, 'utf8');

/** Every active `Key=value` of the unit (comments left out), values of repeated keys in order. */
function directives(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

describe('the agent unit', () => {
  const d = directives();

  it('restarts the agent when it fails and keeps its hold journal in the state directory', () => {
    expect(d.get('Restart')).toEqual(['on-failure']);
    expect(d.get('StateDirectory')).toEqual(['stowage']);
    expect(d.get('Environment')).toContain('STOWAGE_DATA_DIR=/var/lib/stowage');
  });

  it('runs the built bundle as stowage agent, with a check whose failure does not stop it', () => {
    expect(ENTRIES.stowage).toBe('cli/main.ts');
    expect(d.get('ExecStart')).toEqual(['/usr/bin/node /opt/stowage/dist/stowage.mjs agent']);
    expect(d.get('ExecStartPre')).toEqual([
      '-/usr/bin/node /opt/stowage/dist/stowage.mjs agent --check',
    ]);
  });

  it('hands the credentials over with LoadCredential and the configuration in an environment file', () => {
    expect(d.get('EnvironmentFile')).toEqual(['/etc/stowage/agent.env']);
    expect(d.get('LoadCredential')?.length).toBeGreaterThan(0);
    expect(d.get('LoadCredential')!.every((c) => c.includes(':/etc/stowage/'))).toBe(true);
  });

  it('is hardened without what would break the agent', () => {
    expect(d.get('NoNewPrivileges')).toEqual(['yes']);
    expect(d.get('RestrictAddressFamilies')?.[0]).toMatch(/AF_UNIX/);
    // V8's JIT writes executable memory; a path restore brings setuid files back.
    expect(d.has('MemoryDenyWriteExecute')).toBe(false);
    expect(d.has('RestrictSUIDSGID')).toBe(false);
  });

  it('passes systemd-analyze verify (Debian 12 has systemd 252)', () => {
    const run = spawnSync('systemd-analyze', ['verify', '--man=no', UNIT], { encoding: 'utf8' });

    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });
});
