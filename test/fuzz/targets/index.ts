/** Every fuzz target, by the name `npm run fuzz -- --target NAME` takes. */
import type { FuzzTarget } from '../engine.js';
import { backend } from './backend.js';
import { guestConfig } from './guest-config.js';
import { guestCtrl } from './guest-ctrl.js';
import { guestRings } from './guest-rings.js';
import { guestSnapshot } from './guest-snapshot.js';
import { steering } from './steering.js';
import { vfioUser } from './vfio-user.js';

// biome-ignore lint/suspicious/noExplicitAny: targets differ in state and step types
export const targets: Record<string, FuzzTarget<any, any>> = {
  [guestConfig.name]: guestConfig,
  [guestRings.name]: guestRings,
  [guestCtrl.name]: guestCtrl,
  [guestSnapshot.name]: guestSnapshot,
  [backend.name]: backend,
  [vfioUser.name]: vfioUser,
  [steering.name]: steering,
};
