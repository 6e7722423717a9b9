import { Rig, randomRigConfig } from './device-rig.js';
import { Rng } from './rng.js';
const c = randomRigConfig(new Rng(1), { sriov: true });
c.wanted |= (1n << 41n) | (1n << 37n);
const rig = new Rig(c);
rig.reopen();
console.log('features', rig.driver.features.toString(16), 'admin bit', (rig.driver.features >> 41n) & 1n);
const aq = rig.driver.pci.readCommon(0x3c, 2);
console.log('aq', aq, rig.driver.pci.readCommon(0x3e, 2));
try {
  rig.driver.pci.setupQueue(aq, { vector: 0 });
  console.log('admin queue enabled after DRIVER_OK');
} catch (e) {
  console.log('ERR', String(e));
}
