/**
 * virtio-net-ts/v86: virtio-net-ts as the NIC of a v86 emulator (docs/v86.md). v86 is an optional peer
 * dependency: nothing here imports it; `attachToV86` takes the emulator object.
 */
export {
  attachToV86,
  type V86Attachment,
  type V86AttachmentStats,
  type V86AttachOptions,
} from './attach.js';
export type { V86Emulator } from './v86-types.js';
