/** The soak (test/soak/soak.ts) for 30 seconds: flat memory and fds, every frame accounted (root + /dev/net/tun). */
import { describe, expect, it } from 'vitest';
import { unavailable } from '../faults/rig.test-support.js';
import { runSoak } from './soak.js';

if (unavailable && process.env.CI) throw new Error(`soak cannot run in CI: ${unavailable}`);

describe.skipIf(unavailable !== null)(`soak, 30 s${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  it('traffic both ways, RSS reconfigured, link flaps, VF Enable toggled: memory and fds flat, frames accounted', {
    timeout: 90_000,
  }, async () => {
    const r = await runSoak({ seconds: 30 });
    expect(r.failures).toEqual([]);
    expect(r.rssUpdates).toBeGreaterThanOrEqual(10);
    expect(r.flaps).toBeGreaterThanOrEqual(8);
    expect(r.vfToggles).toBeGreaterThanOrEqual(6);
    expect(r.rxPackets).toBeGreaterThan(1000);
    expect(r.txPackets).toBeGreaterThan(1000);
  });
});
