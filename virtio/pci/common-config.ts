/**
 * The common configuration structure, `struct virtio_pci_common_cfg` (VIRTIO 1.3 §4.1.4.3; digest §2.3):
 * the offsets table and the register semantics over a `TransportCore`.
 *
 * Access widths follow QEMU 7.2 (hw/virtio/virtio-pci.c virtio_pci_common_read/write behind the memory
 * core's splitting, see region-access.ts): every piece is dispatched by its exact offset, so a piece
 * that does not start a field reads 0 and its write is dropped, and a narrower piece at a field's start
 * reads the field's low bytes / writes the whole field with the piece's value.
 */
import { featureWord, hasFeature, VIRTIO_F_RING_RESET, withFeatureWord } from '../features.js';
import type { PieceHandler } from './region-access.js';
import type { TransportCore } from './transport-core.js';
import { VIRTIO_MSI_NO_VECTOR } from './transport-registers.js';

/** Field offsets (Linux uapi VIRTIO_PCI_COMMON_*); 64-bit fields are two 32-bit halves. */
export const COMMON_CFG = {
  deviceFeatureSelect: 0x00, // le32 RW
  deviceFeature: 0x04, // le32 RO
  driverFeatureSelect: 0x08, // le32 RW
  driverFeature: 0x0c, // le32 RW
  configMsixVector: 0x10, // le16 RW
  numQueues: 0x12, // le16 RO
  deviceStatus: 0x14, // u8 RW
  configGeneration: 0x15, // u8 RO
  queueSelect: 0x16, // le16 RW
  queueSize: 0x18, // le16 RW
  queueMsixVector: 0x1a, // le16 RW
  queueEnable: 0x1c, // le16 RW
  queueNotifyOff: 0x1e, // le16 RO
  queueDescLo: 0x20, // le32 RW
  queueDescHi: 0x24,
  queueDriverLo: 0x28,
  queueDriverHi: 0x2c,
  queueDeviceLo: 0x30,
  queueDeviceHi: 0x34,
  queueNotifData: 0x38, // le16 RO (queue_notif_config_data, formerly queue_notify_data)
  queueReset: 0x3a, // le16 RW (VIRTIO_F_RING_RESET)
  adminQueueIndex: 0x3c, // le16 RO (VIRTIO_F_ADMIN_VQ)
  adminQueueNum: 0x3e, // le16 RO
} as const;

/** Size of the structure; QEMU maps a 4 KiB region and reads the rest as 0. */
export const COMMON_CFG_SIZE = 0x40;

/**
 * The common config as a region: reads and writes of one aligned piece. Feature windows: device_feature
 * for any select (0 where no bits are defined: QEMU 7.2 answers 0 for selects >= 2, and so do we beyond
 * the offered bits); driver_feature stores every window (words past 1 included, so features past 63
 * negotiate the same way). queue_notify_off reads the queue index (QEMU: notify address = 4 * index).
 */
export class CommonConfig implements PieceHandler {
  constructor(private readonly core: TransportCore) {}

  readPiece(offset: number, size: 1 | 2 | 4): number {
    const c = this.core;
    const q = c.selected();
    switch (offset) {
      case COMMON_CFG.deviceFeatureSelect:
        return c.deviceFeatureSelect;
      case COMMON_CFG.deviceFeature:
        return featureWord(c.modernOffered, c.deviceFeatureSelect);
      case COMMON_CFG.driverFeatureSelect:
        return c.driverFeatureSelect;
      case COMMON_CFG.driverFeature:
        return featureWord(c.driverFeatures, c.driverFeatureSelect);
      case COMMON_CFG.configMsixVector:
        return c.configVector;
      case COMMON_CFG.numQueues:
        return c.numQueues();
      case COMMON_CFG.deviceStatus:
        return c.status;
      case COMMON_CFG.configGeneration:
        return c.configGeneration;
      case COMMON_CFG.queueSelect:
        return c.queueSelect;
      case COMMON_CFG.queueSize:
        return q ? q.size : 0;
      case COMMON_CFG.queueMsixVector:
        return q ? q.vector : VIRTIO_MSI_NO_VECTOR;
      case COMMON_CFG.queueEnable:
        return q?.enabled ? 1 : 0;
      case COMMON_CFG.queueNotifyOff:
        return c.queueSelect;
      case COMMON_CFG.queueDescLo:
        return q ? q.descLo : 0;
      case COMMON_CFG.queueDescHi:
        return q ? q.descHi : 0;
      case COMMON_CFG.queueDriverLo:
        return q ? q.driverLo : 0;
      case COMMON_CFG.queueDriverHi:
        return q ? q.driverHi : 0;
      case COMMON_CFG.queueDeviceLo:
        return q ? q.deviceLo : 0;
      case COMMON_CFG.queueDeviceHi:
        return q ? q.deviceHi : 0;
      case COMMON_CFG.queueNotifData:
        // No VIRTIO_F_NOTIF_CONFIG_DATA offered: the value is unused; QEMU 7.2 reads 0.
        return 0;
      case COMMON_CFG.queueReset:
        // Queue reset completes synchronously, so it never reads 1 (§4.1.4.3.2: 0 once done).
        return 0;
      // §4.1.4.3: first admin queue index and count; 0/0 unless VIRTIO_F_ADMIN_VQ is offered (group owner).
      case COMMON_CFG.adminQueueIndex:
        return c.adminQueueIndex;
      case COMMON_CFG.adminQueueNum:
        return c.adminQueueNum;
      default:
        void size;
        return 0;
    }
  }

  writePiece(offset: number, size: 1 | 2 | 4, value: number): void {
    const c = this.core;
    switch (offset) {
      case COMMON_CFG.deviceFeatureSelect:
        c.deviceFeatureSelect = value >>> 0;
        return;
      case COMMON_CFG.driverFeatureSelect:
        c.driverFeatureSelect = value >>> 0;
        return;
      case COMMON_CFG.driverFeature:
        if (c.driverFeatureSelect < 4) {
          c.writeDriverFeatures(withFeatureWord(c.driverFeatures, c.driverFeatureSelect, value));
        }
        return;
      case COMMON_CFG.configMsixVector:
        c.configVector = c.mapVector(value & 0xffff);
        return;
      case COMMON_CFG.deviceStatus:
        c.writeStatus(value & 0xff);
        return;
      case COMMON_CFG.queueSelect:
        c.selectQueue(value & 0xffff);
        return;
      case COMMON_CFG.queueSize:
        c.writeQueueSize(value & 0xffff);
        return;
      case COMMON_CFG.queueMsixVector: {
        const q = c.selected();
        if (q) c.setQueueVector(q, value & 0xffff);
        return;
      }
      case COMMON_CFG.queueEnable:
        c.writeQueueEnable(value & 0xffff);
        return;
      case COMMON_CFG.queueReset:
        if (value === 1 && hasFeature(c.driverFeatures, VIRTIO_F_RING_RESET) && c.selected()) {
          c.resetQueue(c.queueSelect);
        }
        return;
      case COMMON_CFG.queueDescLo:
      case COMMON_CFG.queueDescHi:
      case COMMON_CFG.queueDriverLo:
      case COMMON_CFG.queueDriverHi:
      case COMMON_CFG.queueDeviceLo:
      case COMMON_CFG.queueDeviceHi: {
        const q = c.selected();
        // An enabled queue's addresses are fixed until reset (§4.1.4.3.2 driver rule; writes dropped).
        if (!q || q.enabled) return;
        const v = value >>> 0;
        if (offset === COMMON_CFG.queueDescLo) q.descLo = v;
        else if (offset === COMMON_CFG.queueDescHi) q.descHi = v;
        else if (offset === COMMON_CFG.queueDriverLo) q.driverLo = v;
        else if (offset === COMMON_CFG.queueDriverHi) q.driverHi = v;
        else if (offset === COMMON_CFG.queueDeviceLo) q.deviceLo = v;
        else q.deviceHi = v;
        return;
      }
      default:
        void size;
        return; // read-only fields and the gaps between fields
    }
  }
}
