/**
 * In-memory {@link Storage} for tests, the simulator and QuickJS hosts.
 *
 * @module
 */
import type { Storage } from './hal.ts';

/** A snapshot of every slot of a {@link MemoryStorage}: slot number to bytes (copies). */
export type StorageSnapshot = Map<number, Uint8Array>;

/**
 * Slots in a `Map`. Reads and writes copy the bytes, so nobody can change a
 * slot behind the applet's back (as with real EEPROM). Writes never tear
 * here; fault-injecting wrappers (the simulator's, the tests') do that.
 */
export class MemoryStorage implements Storage {
  #slots = new Map<number, Uint8Array>();

  /** Starts empty, or with a copy of `snapshot`. */
  constructor(snapshot?: StorageSnapshot) {
    if (snapshot) this.restore(snapshot);
  }

  /** {@inheritDoc Storage.read} */
  read(slot: number): Uint8Array | undefined {
    const v = this.#slots.get(slot);
    return v === undefined ? undefined : v.slice();
  }

  /** {@inheritDoc Storage.write} */
  write(slot: number, data: Uint8Array): void {
    if (!Number.isInteger(slot) || slot < 0) throw new RangeError('slot must be a non-negative integer');
    this.#slots.set(slot, data.slice());
  }

  /** A deep copy of every slot (for cloning a card or comparing states in tests). */
  snapshot(): StorageSnapshot {
    const out: StorageSnapshot = new Map();
    for (const [k, v] of this.#slots) out.set(k, v.slice());
    return out;
  }

  /** Replaces every slot with a deep copy of `snapshot`. */
  restore(snapshot: StorageSnapshot): void {
    this.#slots = new Map();
    for (const [k, v] of snapshot) this.#slots.set(k, v.slice());
  }

  /** Slot numbers in use, ascending. */
  slots(): number[] {
    return [...this.#slots.keys()].sort((a, b) => a - b);
  }
}
