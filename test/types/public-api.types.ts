/**
 * Compile-time checks of the public types (run by `tsc --noEmit -p .`, part of `npm test`): each
 * `@ts-expect-error` line must be a type error, or tsc fails with "Unused '@ts-expect-error' directive".
 */
import {
  createVirtioNetPci,
  GuestMemory,
  MemoryBackend,
  parseQemuDevice,
  type VirtioNetInterrupts,
  type VirtioNetPciOptions,
} from '../../index.js';

const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(4096) }]);
const backend = new MemoryBackend();

// Accepted shapes.
export const ok: VirtioNetPciOptions[] = [
  { memory, backend, interrupts: { msi: () => {} } },
  { memory, backend, interrupts: { vector: () => {}, intx: () => {} } },
  {
    memory,
    backend,
    interrupts: { msi: () => {}, vector: () => {} },
    mq: true,
    queues: 2,
    'disable-legacy': 'auto',
  },
  { memory, backend, interrupts: { msi: () => {} }, ...parseQemuDevice('virtio-net-pci,mq=on') },
];

export function rejected(): void {
  // @ts-expect-error interrupts needs msi or vector
  createVirtioNetPci({ memory, backend, interrupts: {} });
  // @ts-expect-error only intx is not enough either
  const onlyIntx: VirtioNetInterrupts = { intx: () => {} };
  // @ts-expect-error memory, backend and interrupts are required
  createVirtioNetPci({ mq: true });
  // @ts-expect-error booleans are booleans here; "on" is parseQemuDevice's spelling
  createVirtioNetPci({ memory, backend, interrupts: { msi: () => {} }, mq: 'on' });
  // @ts-expect-error an unknown option
  createVirtioNetPci({ memory, backend, interrupts: { msi: () => {} }, nosuch: 1 });
  // @ts-expect-error bus is 'pcie' or 'pci'
  createVirtioNetPci({ memory, backend, interrupts: { msi: () => {} }, bus: 'pcie.0' });
  void onlyIntx;
}
