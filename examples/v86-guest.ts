/**
 * Boots v86 (npm `v86`, an optional peer dependency) in this process with Debian's SeaBIOS, Debian's i386
 * kernel and a busybox initramfs (the kit test/v86/prepare.sh caches), virtio-net-ts attached as its only
 * NIC, and collects the guest's `RESULT key=value` lines from its serial console. The guest runs the
 * shell script it is given as /init.sh, behind a two-line wrapper that installs busybox's applets. Used
 * by `npm run demo -- --v86`, the v86 guest test and the v86 bench.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { V86 } from 'v86';
import { attachToV86, type V86Attachment, type V86AttachOptions } from '../devices/v86/attach.js';
import type { V86Emulator } from '../devices/v86/v86-types.js';

export const KIT = process.env.VNT_V86_KIT ?? '/var/cache/virtio-net-ts/v86-kit';
const require = createRequire(import.meta.url);

/** Why the v86 guest test cannot run here, or null. */
export function v86UnavailableReason(): string | null {
  for (const f of ['vmlinuz', 'bios.bin', 'busybox', 'mods/virtio_net.ko', 'host/busybox']) {
    if (!existsSync(join(KIT, f)))
      return `v86 kit incomplete (${join(KIT, f)}): run test/v86/prepare.sh as root`;
  }
  try {
    require.resolve('v86/build/v86.wasm');
  } catch {
    return 'the v86 package is not installed (npm install)';
  }
  return null;
}

// ---- initramfs ------------------------------------------------------------------------------------

interface CpioEntry {
  name: string;
  mode: number;
  data?: Uint8Array;
  rdev?: [number, number];
}

/** A newc ("070701") cpio archive, as the kernel's initramfs unpacker reads it. */
function cpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  for (const e of [...entries, { name: 'TRAILER!!!', mode: 0 }] as CpioEntry[]) {
    const data = e.data ?? new Uint8Array(0);
    const name = Buffer.from(`${e.name}\0`);
    const f = [
      ino++,
      e.mode,
      0,
      0,
      1,
      0,
      data.length,
      0,
      0,
      e.rdev?.[0] ?? 0,
      e.rdev?.[1] ?? 0,
      name.length,
      0,
    ];
    const head = Buffer.from(`070701${f.map((v) => v.toString(16).padStart(8, '0')).join('')}`);
    parts.push(head, name, pad(head.length + name.length), Buffer.from(data), pad(data.length));
  }
  return Buffer.concat(parts);
}

/** The guest's initramfs: busybox, the virtio modules, `initSh` behind an applet-installing /init. */
export function buildInitrd(initSh: string | Uint8Array): Buffer {
  const dir = 0o040755;
  const file = 0o100755;
  const entries: CpioEntry[] = [
    'bin',
    'sbin',
    'usr',
    'usr/bin',
    'usr/sbin',
    'dev',
    'proc',
    'sys',
    'tmp',
    'mods',
  ].map((name) => ({ name, mode: dir }));
  entries.push({ name: 'dev/console', mode: 0o020600, rdev: [5, 1] });
  entries.push({ name: 'bin/busybox', mode: file, data: readFileSync(join(KIT, 'busybox')) });
  const init = '#!/bin/busybox sh\n/bin/busybox --install -s\nexec /bin/sh /init.sh\n';
  entries.push({ name: 'init', mode: file, data: Buffer.from(init) });
  entries.push({
    name: 'init.sh',
    mode: file,
    data: typeof initSh === 'string' ? Buffer.from(initSh) : initSh,
  });
  for (const m of readdirSync(join(KIT, 'mods'))) {
    entries.push({ name: `mods/${m}`, mode: 0o100644, data: readFileSync(join(KIT, 'mods', m)) });
  }
  return gzipSync(cpio(entries), { level: 1 });
}

// ---- boot -----------------------------------------------------------------------------------------

export interface V86BootOptions {
  /** The guest's /init.sh (busybox sh); it prints `RESULT key=value` lines and ends with `RESULT done=1`. */
  initSh: string | Uint8Array;
  /** Our device (attachToV86's options), or v86's own NIC (`{ v86Nic: … }`, for comparisons). */
  device: V86AttachOptions | { v86Nic: 'virtio' | 'ne2k' };
  /** v86's ACPI (and with it the local APIC and I/O APIC); without it the guest stays on the PIC. */
  acpi: boolean;
  /** init.sh parameters (vnt.KEY=VALUE). */
  params: Record<string, string | number>;
  /** Extra kernel parameters. */
  cmdline?: string;
  memoryMiB?: number;
  /** Called for each console line. */
  onLine?: (line: string) => void;
  /** Called for each RESULT pair as it arrives. */
  onResult?: (key: string, value: string) => void;
}

export interface V86Guest {
  emulator: V86Emulator;
  /** Null when the guest has v86's own NIC. */
  attachment: V86Attachment | null;
  lines: string[];
  results: Record<string, string>;
  pairs: [string, string][];
  /** When the guest printed `RESULT init=1` (its /init ran), in ms after the emulator started. */
  bootMs: number | null;
  /** Resolves when the guest printed `RESULT done=1` (or rejects at the timeout). */
  done(timeoutMs: number): Promise<void>;
  /** Stops the emulator, detaches the device (closing its backend) and frees v86. */
  destroy(): Promise<void>;
}

type V86Ctor = new (
  options: Record<string, unknown>,
) => V86Emulator & {
  run(): Promise<void>;
  destroy(): Promise<void>;
};

/** Boots v86 with our device attached; resolves once the emulator runs. */
export async function bootV86(o: V86BootOptions): Promise<V86Guest> {
  const read = (f: string) => {
    const b = readFileSync(join(KIT, f));
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
  };
  const initrd = buildInitrd(o.initSh);
  const ownNic = 'v86Nic' in o.device ? o.device.v86Nic : null;
  const params = Object.entries(o.params)
    .map(([k, v]) => `vnt.${k}=${v}`)
    .join(' ');
  const emulator = new (V86 as unknown as V86Ctor)({
    wasm_path: require.resolve('v86/build/v86.wasm'),
    bios: { buffer: read('bios.bin') },
    bzimage: { buffer: read('vmlinuz') },
    initrd: { buffer: initrd.buffer.slice(initrd.byteOffset, initrd.byteOffset + initrd.byteLength) },
    cmdline: `console=ttyS0 mitigations=off ${o.cmdline ?? ''} ${params}`,
    memory_size: (o.memoryMiB ?? 128) << 20,
    acpi: o.acpi,
    net_device: { type: ownNic ?? 'none' },
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
  });
  const lines: string[] = [];
  const results: Record<string, string> = {};
  const pairs: [string, string][] = [];
  let partial = '';
  let started = 0;
  let bootMs: number | null = null;
  let finished = false;
  let onDone = () => {};
  emulator.add_listener('serial0-output-byte', (byte: number) => {
    if (byte === 10) {
      const line = partial.replace(/\r$/, '');
      partial = '';
      lines.push(line);
      o.onLine?.(line);
      const m = /^RESULT (.*)$/.exec(line);
      if (!m) return;
      for (const kv of m[1]!.split(' ')) {
        const eq = kv.indexOf('=');
        if (eq <= 0) continue;
        const [k, v] = [kv.slice(0, eq), kv.slice(eq + 1)];
        results[k] = v;
        pairs.push([k, v]);
        if (k === 'init' && bootMs === null) bootMs = performance.now() - started;
        o.onResult?.(k, v);
        if (k === 'done') {
          finished = true;
          onDone();
        }
      }
    } else if (byte !== 0) partial += String.fromCharCode(byte);
  });
  const device = o.device;
  const attachment = await new Promise<V86Attachment | null>((resolve, reject) => {
    emulator.add_listener('emulator-loaded', () => {
      try {
        resolve('v86Nic' in device ? null : attachToV86(emulator, device));
      } catch (e) {
        reject(e);
      }
    });
  });
  started = performance.now();
  await emulator.run();
  let destroyed = false;
  return {
    emulator,
    attachment,
    lines,
    results,
    pairs,
    get bootMs() {
      return bootMs;
    },
    done: (timeoutMs) =>
      new Promise<void>((resolve, reject) => {
        if (finished) return resolve();
        const t = setTimeout(
          () => reject(new Error(`guest not done after ${timeoutMs} ms:\n${lines.slice(-60).join('\n')}`)),
          timeoutMs,
        );
        onDone = () => {
          clearTimeout(t);
          resolve();
        };
      }),
    destroy: async () => {
      if (destroyed) return;
      destroyed = true;
      await emulator.destroy();
      attachment?.detach();
    },
  };
}
