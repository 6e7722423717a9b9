import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../lib/vfio-user/client.js';
import { Command, encodeVersionBody, view } from '../lib/vfio-user/protocol.js';
import { StandInDevice } from '../lib/vfio-user/stand-in-device.js';
import { runCli } from './cli.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vfu-cli-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const version = () =>
  encodeVersionBody(0, 0, {
    maxMsgFds: 8,
    maxDataXferSize: 4096,
    pgsizes: 4096,
    maxDmaMaps: 16,
    writeMultiple: false,
  });
function readConfig(c: VfioUserClient, offset: number) {
  const b = new Uint8Array(16);
  const v = view(b);
  v.setBigUint64(0, BigInt(offset), true);
  v.setUint32(8, 7, true);
  v.setUint32(12, 4, true);
  return c.request(Command.REGION_READ, b).then((r) => view(r.body).getUint32(16, true));
}

describe('virtio-net-ts serve', () => {
  it('serves the chosen device with its -o options, and --once stops after the client leaves', async () => {
    const sock = join(dir, 's.sock');
    const out: string[] = [];
    let got: Record<string, string> = {};
    const run = await runCli(
      [
        'serve',
        '--socket',
        sock,
        '--device',
        'probe',
        '-o',
        'vectors=2',
        '-o',
        'mac=52:54:00:12:34:56',
        '--once',
      ],
      {
        out: (l) => out.push(l),
        handleSignals: false,
        factories: {
          probe: ({ memory, options }) => {
            got = options;
            return new StandInDevice({ memory, msixVectors: Number(options.vectors) });
          },
        },
      },
    );
    expect(out).toEqual([`listening ${sock}`]);
    expect(got).toEqual({ vectors: '2', mac: '52:54:00:12:34:56' });
    const c = VfioUserClient.connect(sock);
    await c.request(Command.VERSION, version());
    expect(await readConfig(c, 0)).toBe(0x7e571b36);
    c.close();
    await run.done;
    expect(existsSync(sock)).toBe(false);
  });

  it('refuses bad command lines with the reason', async () => {
    await expect(runCli([])).rejects.toThrow(/usage/);
    await expect(runCli(['serve'])).rejects.toThrow(/--socket is required/);
    await expect(runCli(['serve', '--socket', join(dir, 'x'), '--device', 'nope'])).rejects.toThrow(
      /unknown --device nope; available: stand-in/,
    );
    await expect(
      runCli(['serve', '--socket', join(dir, 'x'), '--device', 'stand-in', '-o', 'novalue']),
    ).rejects.toThrow(/key=value/);
    await expect(runCli(['serve', '--socket', join(dir, 'x'), '--bogus'])).rejects.toThrow();
  });

  it('runs as a program (stand-in device) and exits on SIGTERM', async () => {
    const sock = join(dir, 'p.sock');
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(import.meta.dirname, 'cli.ts'),
        'serve',
        '--socket',
        sock,
        '--device',
        'stand-in',
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const line = await new Promise<string>((resolve, reject) => {
      child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()));
      child.once('exit', (code) => reject(new Error(`exited ${code}`)));
    });
    expect(line).toBe(`listening ${sock}`);
    const c = VfioUserClient.connect(sock);
    await c.request(Command.VERSION, version());
    expect(await readConfig(c, 0x108)).toBe(0x53544e56);
    c.close();
    const code = await new Promise<number | null>((resolve) => {
      child.once('exit', (cd) => resolve(cd));
      child.kill('SIGTERM');
    });
    expect(code).toBe(0);
    expect(existsSync(sock)).toBe(false);
  }, 30_000);
});
