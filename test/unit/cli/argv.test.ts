import { describe, expect, it } from 'vitest';
import { commandWord, needsRegistry } from '../../../cli/argv';

describe('commandWord', () => {
  it.each<[string[], string | undefined]>([
    [['jobs'], 'jobs'],
    [['--json', 'jobs', '--limit', '5'], 'jobs'],
    [['--api', 'http://127.0.0.1:1', 'restore', 'rp-1'], 'restore'],
    [['--api=http://127.0.0.1:1', 'points'], 'points'],
    [['--version'], undefined],
    [[], undefined],
  ])('finds the command in %j', (argv, word) => {
    expect(commandWord(argv)).toBe(word);
  });
});

describe('needsRegistry', () => {
  it('loads the platform registry for the commands that take its flags and for help', () => {
    for (const word of [
      'backup',
      'restore',
      'protect-update',
      'policy',
      'start',
      'agent',
      'help',
    ]) {
      expect(needsRegistry(word)).toBe(true);
    }
  });

  it('leaves it unloaded for --version, --help and the commands that only read the API', () => {
    expect(needsRegistry(undefined)).toBe(false);
    for (const word of [
      'jobs',
      'job',
      'points',
      'targets',
      'agents',
      'verify',
      'snapshot',
      'prune',
    ]) {
      expect(needsRegistry(word)).toBe(false);
    }
  });
});
