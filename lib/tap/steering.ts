/**
 * VIRTIO RSS (VIRTIO 1.3 §5.1.6.4.3) done by the kernel for a multiqueue tap: TapSteering loads the eBPF
 * steering program (lib/tap/steering-program.ts) with its configuration map through bpf(2)
 * (lib/host/bpf.ts) and attaches it with TUNSETSTEERINGEBPF, as QEMU does with ebpf/rss.bpf.c. tun runs
 * the program for every frame it is about to queue (`tun_select_queue`) and uses
 * `return value % attached queues` as the tap queue, so frames reach the queue pair the guest's RSS
 * configuration names and no copy between queues is needed. A new configuration rewrites the map; the
 * program is not reloaded.
 */
import {
  BPF_MAP_TYPE_ARRAY,
  BPF_PROG_TYPE_SOCKET_FILTER,
  bpfMapCreate,
  bpfMapUpdate,
  bpfProgLoad,
} from '../host/bpf.js';
import { BackendError } from '../errors.js';
import { errnoName, type Libc, libc } from '../host/libc.js';
import {
  ALL_HASH_TYPES,
  buildSteeringProgram,
  encodeSteeringConfig,
  RSS_MAX_KEY_SIZE,
  type RssSteeringConfig,
  STEERING_CONFIG_SIZE,
  STEERING_HASH_TYPES,
} from './steering-program.js';

export type { RssSteeringConfig } from './steering-program.js';

/** `_IOR('T', 224, int)` (include/uapi/linux/if_tun.h): the argument points to a prog fd, -1 detaches. */
export const TUNSETSTEERINGEBPF = 0x800454e0;

/** The steering program's license: it calls no GPL-only helper. */
const LICENSE = 'Apache-2.0';
/** Prefix of this module's bpf(2) errors. */
const WHO = 'TapSteering';

/**
 * Key 0 of the config map. Module-level on purpose: the kernel reads it through a bare address in
 * `bpf_attr`, so it must stay alive across the syscall (a temporary could be collected in between).
 */
const MAP_KEY_ZERO = new Uint8Array(4);

let supportCache: string | null | undefined;

/** Kernel RSS steering for a multiqueue tap: a loaded program, its config map, the taps it is attached to. */
export class TapSteering {
  private closed = false;

  private constructor(
    private readonly c: Libc,
    private mapFd: number,
    private progFd: number,
    /** The verifier's statistics line(s) for the loaded program ("processed N insns ..."). */
    readonly verifierStats: string,
    /** Instructions in the program. */
    readonly instructions: number,
  ) {}

  /**
   * Null when `load` can work here; otherwise why not (not Linux/root, no bpf(2), the kernel refuses
   * the program). Tries once and caches the answer.
   */
  static supported(): string | null {
    if (supportCache !== undefined) return supportCache;
    supportCache = probeSupport();
    return supportCache;
  }

  /** Creates the config map and loads the program. BackendError (with the verifier log) on failure. */
  static load(config: RssSteeringConfig): TapSteering {
    const value = encodeSteeringConfig(config);
    const c = libc();
    const mapFd = bpfMapCreate(
      {
        type: BPF_MAP_TYPE_ARRAY,
        keySize: 4,
        valueSize: STEERING_CONFIG_SIZE,
        maxEntries: 1,
        name: 'vnet_rss_cfg',
      },
      WHO,
    );
    try {
      bpfMapUpdate(mapFd, MAP_KEY_ZERO, value, undefined, WHO);
      const insns = buildSteeringProgram(mapFd);
      const prog = bpfProgLoad(
        { type: BPF_PROG_TYPE_SOCKET_FILTER, insns, license: LICENSE, name: 'vnet_rss' },
        WHO,
      );
      return new TapSteering(c, mapFd, prog.fd, prog.log, insns.length / 8);
    } catch (err) {
      c.close(mapFd);
      throw err;
    }
  }

  /** Hash-type bits of `hashTypes` the program does not compute: 0, it computes all nine (kept for callers that check). */
  static unsupportedHashTypes(hashTypes: number): number {
    return hashTypes & ALL_HASH_TYPES & ~STEERING_HASH_TYPES;
  }

  /** Same as the static `unsupportedHashTypes`. */
  unsupportedHashTypes(hashTypes: number): number {
    return TapSteering.unsupportedHashTypes(hashTypes);
  }

  /**
   * Replaces the configuration (one map update; the program stays loaded and attached). Validates as
   * `load` does. A frame steered during the update may see part of the old and part of the new value.
   */
  update(config: RssSteeringConfig): void {
    this.assertOpen('update');
    const value = encodeSteeringConfig(config);
    bpfMapUpdate(this.mapFd, MAP_KEY_ZERO, value, undefined, WHO);
  }

  /** Makes tun steer the tap of `tapFd` (any of its queue fds) with this program (TUNSETSTEERINGEBPF). */
  attach(tapFd: number): void {
    this.assertOpen('attach');
    this.setSteering(tapFd, this.progFd, 'attach');
  }

  /** Back to tun's own flow steering (TUNSETSTEERINGEBPF with -1). */
  detach(tapFd: number): void {
    this.setSteering(tapFd, -1, 'detach');
  }

  /**
   * Closes the map and program fds; idempotent. A tap the program is attached to keeps its own
   * reference to the program (and through it the map) until `detach` or the tap goes away.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.c.close(this.progFd);
    this.c.close(this.mapFd);
    this.progFd = -1;
    this.mapFd = -1;
  }

  private setSteering(tapFd: number, fd: number, what: string): void {
    const arg = Int32Array.of(fd);
    if (this.c.ioctlPtr(tapFd, TUNSETSTEERINGEBPF, arg) < 0) {
      const e = this.c.errno();
      throw new BackendError(
        `TapSteering.${what}: TUNSETSTEERINGEBPF on fd ${tapFd} failed: ${errnoName(e)} (${this.c.strerror(e)})`,
        e,
        errnoName(e),
      );
    }
  }

  private assertOpen(what: string): void {
    if (this.closed) throw new BackendError(`TapSteering.${what}: closed`);
  }
}

function probeSupport(): string | null {
  if (process.platform !== 'linux') return `needs Linux (this is ${process.platform})`;
  if (process.arch !== 'x64' && process.arch !== 'arm64')
    return `needs x86-64 or aarch64 (this is ${process.arch})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    return 'needs root (CAP_BPF and CAP_NET_ADMIN to load a socket filter with maps and attach it)';
  try {
    libc();
  } catch (err) {
    return (err as Error).message;
  }
  try {
    const s = TapSteering.load({
      key: new Uint8Array(RSS_MAX_KEY_SIZE),
      hashTypes: 0,
      table: [0],
      defaultQueue: 0,
    });
    s.close();
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}
