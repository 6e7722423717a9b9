/**
 * The Toeplitz hash of Microsoft RSS, as VIRTIO 1.3 §5.1.6.4.3 uses it ("Verifying the RSS Hash
 * Calculation"): for every input bit i (MSB first, bytes in order) that is set, XOR into the result the
 * 32 key bits starting at key bit i. Key bits past the end of the key count as zero.
 *
 * `ToeplitzKey` precomputes, for each input byte position, the XOR of the key windows of all 256 byte
 * values (one Int32Array of keyLength*256 entries, rebuilt only when the key changes), so hashing costs one
 * table lookup per input byte and allocates nothing.
 */

/** A Toeplitz key with per-byte-position lookup tables. */
export class ToeplitzKey {
  /** table[pos * 256 + byte] = hash contribution of `byte` at input byte position `pos`. */
  private table = new Int32Array(0);
  private keyBytes = new Uint8Array(0);
  /** Input bytes the key covers: input at or past this position contributes nothing. */
  private positions = 0;

  constructor(key?: Uint8Array) {
    if (key) this.setKey(key);
  }

  /** The current key (a private copy). */
  get key(): Uint8Array {
    return this.keyBytes;
  }

  /** Replaces the key; tables are rebuilt only when the bytes differ from the current key. */
  setKey(key: Uint8Array): void {
    if (sameBytes(key, this.keyBytes)) return;
    this.keyBytes = Uint8Array.from(key);
    const n = key.length;
    this.positions = n;
    this.table = new Int32Array(n * 256);
    const windows = new Int32Array(8);
    for (let pos = 0; pos < n; pos++) {
      // 40 key bits starting at byte pos: window for bit j is bits [8*pos + j, 8*pos + j + 32).
      const hi =
        ((key[pos] ?? 0) << 24) |
        ((key[pos + 1] ?? 0) << 16) |
        ((key[pos + 2] ?? 0) << 8) |
        (key[pos + 3] ?? 0);
      const next = key[pos + 4] ?? 0;
      for (let j = 0; j < 8; j++) windows[j] = j === 0 ? hi : (hi << j) | (next >>> (8 - j));
      const base = pos * 256;
      const t = this.table;
      // Fill by doubling from the low bit up: entry v | mask (mask = 0x80 >> j, v < mask) = entry v ^ window j.
      for (let j = 7; j >= 0; j--) {
        const mask = 0x80 >>> j;
        const w = windows[j]!;
        for (let v = 0; v < mask; v++) t[base + (v | mask)] = t[base + v]! ^ w;
      }
    }
  }

  /**
   * The hash contribution of `length` bytes of `bytes` from `offset`, placed at input byte position
   * `inputPos`. XOR the parts of a split input (address, address, ports) for the whole hash. Returns a
   * signed 32-bit value; `>>> 0` for the unsigned hash.
   */
  partial(bytes: Uint8Array, offset: number, length: number, inputPos: number): number {
    const t = this.table;
    let end = length;
    if (inputPos + end > this.positions) end = this.positions - inputPos;
    let h = 0;
    let base = inputPos * 256;
    for (let i = 0; i < end; i++) {
      h ^= t[base + bytes[offset + i]!]!;
      base += 256;
    }
    return h;
  }

  /** Unsigned 32-bit Toeplitz hash of `length` bytes of `bytes` from `offset`. */
  hash(bytes: Uint8Array, offset = 0, length = bytes.length - offset): number {
    return this.partial(bytes, offset, length, 0) >>> 0;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const cachedKey = new ToeplitzKey();

/**
 * Unsigned 32-bit Toeplitz hash of `input` under `key` (VIRTIO 1.3 §5.1.6.4.3). Uses a cached
 * `ToeplitzKey`, so repeated calls with the same key do not rebuild tables.
 */
export function toeplitzHash(key: Uint8Array, input: Uint8Array): number {
  cachedKey.setKey(key);
  return cachedKey.hash(input, 0, input.length);
}
