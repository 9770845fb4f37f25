/**
 * PAX records (core/tree/tar.ts paxRecords): each record's leading length counts the whole
 * record in bytes, its own digits included, whatever the value (binary, multi-byte UTF-8, at a
 * length where the count gains a digit), so a reader that skips record by record finds them all.
 */
import { describe, expect, it } from 'vitest';
import { paxRecords } from '../../../../agents/core/tree/tar';

/** Reads records back the way tar readers do: by their lengths, not by newlines. */
function parse(buf: Buffer): Array<[string, Buffer]> {
  const out: Array<[string, Buffer]> = [];
  for (let at = 0; at < buf.length;) {
    const space = buf.indexOf(0x20, at);
    const length = Number(buf.subarray(at, space).toString('ascii'));
    const record = buf.subarray(space + 1, at + length);
    expect(record[record.length - 1]).toBe(0x0a);
    const eq = record.indexOf(0x3d);
    out.push([record.subarray(0, eq).toString('utf8'), record.subarray(eq + 1, record.length - 1)]);
    at += length;
  }
  return out;
}

describe('PAX records', () => {
  it('round-trips binary, UTF-8 and values at every length where the count gains a digit', () => {
    const records: Array<[string, Buffer]> = [
      ['SCHILY.xattr.security.capability', Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0xff, 0x0a])],
      ['path', Buffer.from('données/é/ü')],
      ['SCHILY.xattr.user.empty', Buffer.alloc(0)],
    ];
    for (let n = 80; n < 1010; n++) records.push(['path', Buffer.alloc(n, 0x61)]);
    expect(parse(paxRecords(records))).toEqual(records);
  });
});
