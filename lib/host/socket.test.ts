// OS errors name the errno and its text, and the path the call was about (issue 19):
// "bind(/x/sock) failed: ENOENT (No such file or directory)", not "errno 2".
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { describeErrno, errnoName } from './libc.js';
import { bindUnix, close, connectUnix, SysError } from './socket.js';

const dir = mkdtempSync(join(tmpdir(), 'vnt-sock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('errno names', () => {
  it('names any errno with its text', () => {
    expect(describeErrno(2)).toBe('ENOENT (No such file or directory)');
    expect(describeErrno(13)).toBe('EACCES (Permission denied)');
    expect(describeErrno(98)).toBe('EADDRINUSE (Address already in use)'); // not in our own table
    expect(errnoName(111)).toBe('ECONNREFUSED');
  });
});

describe('AF_UNIX socket errors name the call, the path and the errno', () => {
  it('bind in a directory that does not exist', () => {
    const path = join(dir, 'missing', 'nic.sock');
    expect(() => bindUnix(path)).toThrow(SysError);
    expect(() => bindUnix(path)).toThrow(`bind(${path}) failed: ENOENT (No such file or directory)`);
  });

  it('bind over an existing file', () => {
    const path = join(dir, 'file');
    writeFileSync(path, '');
    expect(() => bindUnix(path)).toThrow(`bind(${path}) failed: EADDRINUSE (Address already in use)`);
  });

  it('connect to nothing, and to a socket nobody listens on', () => {
    const none = join(dir, 'none.sock');
    expect(() => connectUnix(none)).toThrow(`connect(${none}) failed: ENOENT (No such file or directory)`);
    const bound = join(dir, 'bound.sock');
    const fd = bindUnix(bound);
    try {
      expect(() => connectUnix(bound)).toThrow(`connect(${bound}) failed: ECONNREFUSED (Connection refused)`);
    } finally {
      close(fd);
    }
  });

  it('a path longer than sockaddr_un holds', () => {
    const path = join(dir, 'x'.repeat(120));
    expect(() => bindUnix(path)).toThrow(
      /^sockaddr_un\(.*\) \(\d+ bytes, max 107\) failed: ENAMETOOLONG \(File name too long\)$/,
    );
  });
});
