/**
 * vfio-user wire format: constants and the message codec (QEMU docs/interop/vfio-user.rst; the body layouts
 * are the `struct vfio_*` of linux/vfio.h). Every field is little-endian; each layout is an offset table read
 * and written through a DataView in this one place.
 */

/** Header: u16 msg_id, u16 command, u32 size (header included), u32 flags, u32 error. */
export const HEADER_SIZE = 16;
export const HDR = { id: 0, command: 2, size: 4, flags: 8, error: 12 } as const;

/** Commands (vfio-user.rst "Commands"). */
export const Command = {
  VERSION: 1,
  DMA_MAP: 2,
  DMA_UNMAP: 3,
  DEVICE_GET_INFO: 4,
  DEVICE_GET_REGION_INFO: 5,
  DEVICE_GET_REGION_IO_FDS: 6,
  DEVICE_GET_IRQ_INFO: 7,
  DEVICE_SET_IRQS: 8,
  REGION_READ: 9,
  REGION_WRITE: 10,
  DMA_READ: 11,
  DMA_WRITE: 12,
  DEVICE_RESET: 13,
  DIRTY_PAGES: 14,
  REGION_WRITE_MULTI: 15,
  DEVICE_FEATURE: 16,
  MIG_DATA_READ: 17,
  MIG_DATA_WRITE: 18,
} as const;

const COMMAND_NAMES = new Map<number, string>(Object.entries(Command).map(([k, v]) => [v, k]));
/** The command's name for logs and stats ("CMD_<n>" when unknown). */
export function commandName(command: number): string {
  return COMMAND_NAMES.get(command) ?? `CMD_${command}`;
}

/** Header flags: the low nibble is the message type. */
export const MsgFlag = { TYPE_MASK: 0xf, REQUEST: 0x0, REPLY: 0x1, NO_REPLY: 0x10, ERROR: 0x20 } as const;

/** PCI region indexes (VFIO_PCI_*_REGION_INDEX). */
export const Region = { BAR0: 0, BAR5: 5, ROM: 6, CONFIG: 7, VGA: 8, COUNT: 9 } as const;
/** PCI irq indexes (VFIO_PCI_*_IRQ_INDEX). */
export const Irq = { INTX: 0, MSI: 1, MSIX: 2, ERR: 3, REQ: 4, COUNT: 5 } as const;

/** vfio_device_info.flags */
export const DeviceFlag = { RESET: 1, PCI: 2 } as const;
/** vfio_region_info.flags */
export const RegionFlag = { READ: 1, WRITE: 2, MMAP: 4, CAPS: 8 } as const;
/** vfio_irq_info.flags */
export const IrqInfoFlag = { EVENTFD: 1, MASKABLE: 2, AUTOMASKED: 4, NORESIZE: 8 } as const;
/** vfio_irq_set.flags: one DATA_* and one ACTION_* bit. */
export const IrqSetFlag = {
  DATA_NONE: 1,
  DATA_BOOL: 2,
  DATA_EVENTFD: 4,
  ACTION_MASK: 8,
  ACTION_UNMASK: 16,
  ACTION_TRIGGER: 32,
  DATA_MASK: 7,
  ACTION_MASK_ALL: 56,
} as const;
/** vfio_iommu_type1_dma_map.flags / dma_unmap.flags */
export const DmaMapFlag = { READ: 1, WRITE: 2 } as const;
export const DmaUnmapFlag = { GET_DIRTY_BITMAP: 1, ALL: 2, VADDR: 4 } as const;

/** Linux errno values carried in the header's error field. */
export const Errno = {
  ENOENT: 2,
  EIO: 5,
  E2BIG: 7,
  EBADF: 9,
  ENOMEM: 12,
  EFAULT: 14,
  EEXIST: 17,
  EINVAL: 22,
  ENOSPC: 28,
  ENOSYS: 38,
  ENOTSUP: 95,
} as const;

/** Body layouts (offsets inside the body, i.e. after the 16-byte header) and their minimum sizes. */
export const VERSION = { major: 0, minor: 2, caps: 4, size: 4 } as const;
export const DMA_MAP = { argsz: 0, flags: 4, offset: 8, address: 16, size: 24, SIZE: 32 } as const;
export const DMA_UNMAP = { argsz: 0, flags: 4, address: 8, size: 16, SIZE: 24 } as const;
export const DEVICE_INFO = { argsz: 0, flags: 4, numRegions: 8, numIrqs: 12, SIZE: 16 } as const;
export const REGION_INFO = {
  argsz: 0,
  flags: 4,
  index: 8,
  capOffset: 12,
  size: 16,
  offset: 24,
  SIZE: 32,
  REQUEST_SIZE: 16,
} as const;
export const IRQ_INFO = { argsz: 0, flags: 4, index: 8, count: 12, SIZE: 16 } as const;
export const IRQ_SET = { argsz: 0, flags: 4, index: 8, start: 12, count: 16, SIZE: 20 } as const;
export const REGION_RW = { offset: 0, region: 8, count: 12, data: 16, SIZE: 16 } as const;
/** REGION_WRITE_MULTI: u64 wr_cnt, then wr_cnt entries of {u64 offset, u32 region, u32 count, u8 data[8]}. */
export const WRITE_MULTI = {
  count: 0,
  entries: 8,
  entrySize: 24,
  entryOffset: 0,
  entryRegion: 8,
  entryCount: 12,
  entryData: 16,
  maxData: 8,
  maxEntries: 200,
} as const;

/**
 * DEVICE_GET_REGION_IO_FDS (vfio-user.rst): request {argsz, flags, index, count} (flags and count zero),
 * reply the same header then `count` sub-regions, each {u64 offset, u64 size, u32 fd_index, u32 type,
 * u32 flags, u32 padding, u64 datamatch}; the descriptors ride in the reply's SCM_RIGHTS.
 */
export const REGION_IO_FDS = { argsz: 0, flags: 4, index: 8, count: 12, subRegions: 16, SIZE: 16 } as const;
export const IO_FD_SUB_REGION = {
  offset: 0,
  size: 8,
  fdIndex: 16,
  type: 20,
  flags: 24,
  datamatch: 32,
  SIZE: 40,
} as const;
/** Sub-region types; only IOEVENTFD is served. */
export const IoFdType = { IOEVENTFD: 0, IOREGIONFD: 1, IOEVENTFD_SHADOW: 2 } as const;
/** Sub-region flags for an ioeventfd (KVM_IOEVENTFD_FLAG_*). */
export const IoEventfdFlag = { DATAMATCH: 1, PIO: 2 } as const;

/** A decoded message header. */
export interface MessageHeader {
  id: number;
  command: number;
  size: number;
  flags: number;
  error: number;
}

/** Decodes the 16-byte header at the start of `bytes` (which must hold at least 16 bytes). */
export function decodeHeader(bytes: Uint8Array): MessageHeader {
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  return {
    id: v.getUint16(HDR.id, true),
    command: v.getUint16(HDR.command, true),
    size: v.getUint32(HDR.size, true),
    flags: v.getUint32(HDR.flags, true),
    error: v.getUint32(HDR.error, true),
  };
}

/** Writes a header into the first 16 bytes of `out`. */
export function encodeHeader(out: Uint8Array, h: MessageHeader): void {
  const v = new DataView(out.buffer, out.byteOffset, HEADER_SIZE);
  v.setUint16(HDR.id, h.id & 0xffff, true);
  v.setUint16(HDR.command, h.command & 0xffff, true);
  v.setUint32(HDR.size, h.size >>> 0, true);
  v.setUint32(HDR.flags, h.flags >>> 0, true);
  v.setUint32(HDR.error, h.error >>> 0, true);
}

/** A whole message: header plus `body`. */
export function encodeMessage(
  h: Omit<MessageHeader, 'size'>,
  body: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + body.length);
  encodeHeader(out, { ...h, size: out.length });
  out.set(body, HEADER_SIZE);
  return out;
}

/** A reply to request `req`: same id and command, REPLY type. */
export function encodeReply(req: { id: number; command: number }, body?: Uint8Array): Uint8Array {
  return encodeMessage({ id: req.id, command: req.command, flags: MsgFlag.REPLY, error: 0 }, body);
}

/** An error reply (header only, ERROR flag, positive errno). */
export function encodeErrorReply(req: { id: number; command: number }, errno: number): Uint8Array {
  return encodeMessage({
    id: req.id,
    command: req.command,
    flags: MsgFlag.REPLY | MsgFlag.ERROR,
    error: errno,
  });
}

/** Little-endian field access on a body. */
export function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Builds a body of `size` bytes by calling `fill` on its DataView. */
export function body(size: number, fill: (v: DataView) => void): Uint8Array {
  const out = new Uint8Array(size);
  fill(view(out));
  return out;
}

/** The capabilities object a server states in its VERSION reply. */
export interface ServerCapabilities {
  maxMsgFds: number;
  maxDataXferSize: number;
  pgsizes: number;
  maxDmaMaps: number;
  writeMultiple: boolean;
}

/** VERSION reply body: major, minor, NUL-terminated JSON capabilities (QEMU checks the NUL). */
export function encodeVersionBody(major: number, minor: number, caps: ServerCapabilities): Uint8Array {
  const json = JSON.stringify({
    capabilities: {
      max_msg_fds: caps.maxMsgFds,
      max_data_xfer_size: caps.maxDataXferSize,
      pgsizes: caps.pgsizes,
      max_dma_maps: caps.maxDmaMaps,
      ...(caps.writeMultiple ? { write_multiple: true } : {}),
    },
  });
  const text = new TextEncoder().encode(json);
  const out = new Uint8Array(VERSION.size + text.length + 1);
  const v = view(out);
  v.setUint16(VERSION.major, major, true);
  v.setUint16(VERSION.minor, minor, true);
  out.set(text, VERSION.caps);
  return out;
}

/** Parses a VERSION body: null when it is too short or its capabilities are not NUL-terminated JSON. */
export function decodeVersionBody(b: Uint8Array): { major: number; minor: number; caps: unknown } | null {
  if (b.length < VERSION.size) return null;
  const v = view(b);
  const major = v.getUint16(VERSION.major, true);
  const minor = v.getUint16(VERSION.minor, true);
  if (b.length === VERSION.size) return { major, minor, caps: {} };
  const nul = b.indexOf(0, VERSION.caps);
  if (nul < 0) return null;
  const text = new TextDecoder('utf-8', { fatal: false }).decode(b.subarray(VERSION.caps, nul));
  if (text.length === 0) return { major, minor, caps: {} };
  try {
    return { major, minor, caps: JSON.parse(text) as unknown };
  } catch {
    return null;
  }
}
