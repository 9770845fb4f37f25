/**
 * Extended attributes of tree entries: `user.*`, `security.capability` (file capabilities, on
 * binaries such as ping in container images), SELinux labels, and POSIX ACLs, which Linux keeps
 * as the xattrs `system.posix_acl_access` and `system.posix_acl_default` (so an ACL round-trips
 * as its raw value, owners inside it included). Stored in the index as name → base64 value.
 *
 * Through @napi-rs/xattr (Node has no xattr call), whose calls never follow a symlink on the
 * last component (lgetxattr, lsetxattr): a symlink's own attributes are read, not its target's.
 * Order on restore: after the owner (chown drops `security.capability`), before the mode (an
 * ACL's mask entry is the mode's group bits, which chmod then sets to the same value).
 */
import { getAttributeSync, listAttributesSync, setAttributeSync } from '@napi-rs/xattr';

/** errno of the library's errors, which carry it only in their message (`... (os error 95)`). */
function osError(err: unknown): number | undefined {
  const match = /\(os error (\d+)\)/.exec(err instanceof Error ? err.message : String(err));
  return match ? Number(match[1]) : undefined;
}

const ENOENT = 2;
const ENODATA = 61;
const EOPNOTSUPP = 95;

/**
 * The xattrs of `path` (not followed if a symlink), or undefined when it has none or its file
 * system keeps none. Throws on anything else (the caller warns and goes on).
 */
export function readXattrs(path: string): Record<string, string> | undefined {
  let names: string[];
  try {
    names = listAttributesSync(path);
  } catch (err) {
    const code = osError(err);
    if (code === EOPNOTSUPP || code === ENOENT) return undefined;
    throw err;
  }
  if (names.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const name of names.sort()) {
    let value: Buffer | null;
    try {
      value = getAttributeSync(path, name);
    } catch (err) {
      if (osError(err) === ENODATA) continue; // removed between the list and the read
      throw err;
    }
    if (value) out[name] = value.toString('base64');
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * Sets `xattrs` on `path` (not followed). Returns the names the destination's file system
 * refused as unsupported (the caller reports them); throws on any other failure.
 */
export function writeXattrs(path: string, xattrs: Record<string, string>): string[] {
  const refused: string[] = [];
  for (const [name, value] of Object.entries(xattrs)) {
    try {
      setAttributeSync(path, name, Buffer.from(value, 'base64'));
    } catch (err) {
      if (osError(err) === EOPNOTSUPP) refused.push(name);
      else throw new Error(`setting the extended attribute ${name} of ${path}: ${String(err)}`);
    }
  }
  return refused;
}
