/** The vfio-user socket file: who may connect is set by its mode and group (docs/vfio-user.md). */
import { chmodSync, lchownSync, lstatSync, readFileSync } from 'node:fs';

/** A group id from a number, a numeric string or a name in /etc/group; throws for an unknown group. */
function groupId(group: string | number): number {
  if (typeof group === 'number' || /^\d+$/.test(group)) {
    const gid = Number(group);
    if (!Number.isSafeInteger(gid) || gid < 0 || gid > 0xfffffffe)
      throw new RangeError(`bad group id ${group}`);
    return gid;
  }
  let text = '';
  try {
    text = readFileSync('/etc/group', 'utf8');
  } catch {
    // no /etc/group: the name is unknown
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === group && f[2] !== undefined && /^\d+$/.test(f[2])) return Number(f[2]);
  }
  throw new Error(`unknown group ${group} (give its numeric id if it is not in /etc/group)`);
}

/** Sets the socket file's group and mode and checks them; throws when it cannot (listen refuses to start). */
export function secureSocketFile(path: string, mode: number, group: string | number | undefined): void {
  const gid = group === undefined ? undefined : groupId(group);
  if (!lstatSync(path).isSocket()) throw new Error(`${path} is not the socket just bound`);
  try {
    if (gid !== undefined) lchownSync(path, -1, gid);
    chmodSync(path, mode);
  } catch (e) {
    throw new Error(`cannot set the permissions of ${path}: ${(e as Error).message}`);
  }
  const st = lstatSync(path);
  if (!st.isSocket() || (st.mode & 0o7777) !== mode || (gid !== undefined && st.gid !== gid)) {
    throw new Error(
      `${path} did not take mode ${mode.toString(8)}${gid === undefined ? '' : ` group ${gid}`}`,
    );
  }
}
