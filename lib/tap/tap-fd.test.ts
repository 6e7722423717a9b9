import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { BackendOffloads } from '../net/backend.js';
import {
  offloadBits,
  TUN_F_CSUM,
  TUN_F_TSO_ECN,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_UDP_TUNNEL_GSO,
  TUN_F_UDP_TUNNEL_GSO_CSUM,
  TUN_F_UFO,
  TUN_F_USO4,
  TUN_F_USO6,
} from './tap-fd.js';

const offloads = fc.record<BackendOffloads>({
  csum: fc.boolean(),
  tso4: fc.boolean(),
  tso6: fc.boolean(),
  ecn: fc.boolean(),
  ufo: fc.boolean(),
  uso4: fc.boolean(),
  uso6: fc.boolean(),
  tunnel: fc.boolean(),
  tunnelCsum: fc.boolean(),
});
const ALL: BackendOffloads = {
  csum: true,
  tso4: true,
  tso6: true,
  ecn: true,
  ufo: true,
  uso4: true,
  uso6: true,
};

describe('offloadBits (TUNSETOFFLOAD argument)', () => {
  it('maps each offload to its TUN_F_* bit', () => {
    expect(offloadBits(ALL, ALL)).toBe(
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO | TUN_F_USO4 | TUN_F_USO6,
    );
    expect(offloadBits({ ...ALL, tso6: false, ecn: false, ufo: false, uso4: false, uso6: false }, ALL)).toBe(
      TUN_F_CSUM | TUN_F_TSO4,
    );
  });

  it('UDP tunnel GSO (TUN_F_UDP_TUNNEL_GSO 0x80, _CSUM 0x100): only over a TSO or USO, its csum only with it', () => {
    const all = { ...ALL, tunnel: true, tunnelCsum: true };
    expect(offloadBits(all, all)).toBe(
      TUN_F_CSUM |
        TUN_F_TSO4 |
        TUN_F_TSO6 |
        TUN_F_TSO_ECN |
        TUN_F_UFO |
        TUN_F_USO4 |
        TUN_F_USO6 |
        TUN_F_UDP_TUNNEL_GSO |
        TUN_F_UDP_TUNNEL_GSO_CSUM,
    );
    expect([TUN_F_UDP_TUNNEL_GSO, TUN_F_UDP_TUNNEL_GSO_CSUM]).toEqual([0x80, 0x100]);
    const noPlain = { ...all, tso4: false, tso6: false, uso4: false, uso6: false };
    expect(offloadBits(noPlain, all)).toBe(TUN_F_CSUM | TUN_F_UFO);
    expect(offloadBits({ ...all, tunnel: false }, all) & 0x180).toBe(0);
    expect(offloadBits(all, { ...all, tunnelCsum: false }) & 0x180).toBe(TUN_F_UDP_TUNNEL_GSO);
  });

  it('property: only combinations the kernel accepts, within what the tap can do and the guest wants', () => {
    fc.assert(
      fc.property(offloads, offloads, (want, can) => {
        const bits = offloadBits(want, can);
        const has = (b: number) => (bits & b) !== 0;
        // Nothing without csum (tun.c: every segmentation offload sits under TUN_F_CSUM).
        if (!has(TUN_F_CSUM)) expect(bits).toBe(0);
        // ECN only with a TSO; USO4 and USO6 only together.
        if (has(TUN_F_TSO_ECN)) expect(has(TUN_F_TSO4) || has(TUN_F_TSO6)).toBe(true);
        expect(has(TUN_F_USO4)).toBe(has(TUN_F_USO6));
        // Tunnel GSO only over a plain GSO; its csum only with it.
        if (has(TUN_F_UDP_TUNNEL_GSO))
          expect(has(TUN_F_TSO4) || has(TUN_F_TSO6) || has(TUN_F_USO4)).toBe(true);
        if (has(TUN_F_UDP_TUNNEL_GSO_CSUM)) expect(has(TUN_F_UDP_TUNNEL_GSO)).toBe(true);
        const map: [keyof BackendOffloads, number][] = [
          ['csum', TUN_F_CSUM],
          ['tso4', TUN_F_TSO4],
          ['tso6', TUN_F_TSO6],
          ['ecn', TUN_F_TSO_ECN],
          ['ufo', TUN_F_UFO],
          ['uso4', TUN_F_USO4],
          ['uso6', TUN_F_USO6],
          ['tunnel', TUN_F_UDP_TUNNEL_GSO],
          ['tunnelCsum', TUN_F_UDP_TUNNEL_GSO_CSUM],
        ];
        for (const [k, b] of map) if (has(b)) expect(want[k] && can[k]).toBe(true);
        // Maximal: with csum wanted and possible, every single offload wanted and possible is on.
        if (want.csum && can.csum)
          for (const k of ['tso4', 'tso6', 'ufo'] as const)
            expect(has(map.find((m) => m[0] === k)?.[1] as number)).toBe(want[k] && can[k]);
      }),
    );
  });
});
