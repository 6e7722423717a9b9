/**
 * Error types shared by every layer. Errors for the embedding VMM say what to do; errors caused by the
 * guest never escape the device: they become an error status, a counted drop or DEVICE_NEEDS_RESET.
 */

/** Base class: every error this library throws is a `VirtioNetError`. */
export class VirtioNetError extends Error {
  override name = 'VirtioNetError';
}

/** A guest-memory access fell outside every region (or overflowed the 64-bit address space). */
export class GuestMemoryError extends VirtioNetError {
  override name = 'GuestMemoryError';
  constructor(
    message: string,
    readonly address: number | bigint,
    readonly length: number,
  ) {
    super(message);
  }
}

/** The embedding VMM passed an invalid option; the message names the option and the accepted values. */
export class OptionsError extends VirtioNetError {
  override name = 'OptionsError';
}

/** A host-side backend failed (tap open, ioctl, socket); `errno` is set when the kernel gave one. */
export class BackendError extends VirtioNetError {
  override name = 'BackendError';
  constructor(
    message: string,
    readonly errno?: number,
    readonly code?: string,
  ) {
    super(message);
  }
}
