/**
 * A full memory barrier between the plain typed-array stores before it and the loads after it.
 *
 * Shared-memory rings need it where a store-load reorder loses a wake-up: the device publishes the used
 * idx then reads the driver's used_event, while the driver (a vCPU on another thread or process) writes
 * used_event then reads the used idx; with both loads satisfied before the other side's store is visible
 * (x86 store buffer), neither side notifies and the queue stalls for good. QEMU puts smp_mb() at the same
 * places (virtio_should_notify, virtio_queue_set_notification). JavaScript has no fence primitive, but a
 * sequentially consistent store and load on a shared cell order the plain accesses around them
 * (xchg on x86-64, stlr + ldar on arm64).
 */
const FENCE_CELL = new Int32Array(new SharedArrayBuffer(4));

export function memoryFence(): void {
  Atomics.store(FENCE_CELL, 0, 0);
  Atomics.load(FENCE_CELL, 0);
}
