/**
 * Fault injection for the simulated card: power cuts at a storage write
 * (optionally torn), before or after an APDU, dropped or corrupted frames and
 * response delays. One {@link FaultPlan} describes the faults; a
 * {@link FaultInjector} counts events and decides when each fault fires.
 *
 * Counting is 1-based everywhere ("the 3rd write", "the 2nd APDU") so that
 * the CLI flags read naturally. Every fault fires once: after the card has
 * lost power and come back, it works normally, which is what a tearing test
 * needs to check recovery.
 *
 * @module
 */

import type { Storage } from '@dt/firmware';
import { CardRemovedError } from '@dt/protocol';

/**
 * The error a simulated power cut throws. Whoever drives the card treats it
 * like a card pulled from the field: the command in flight gets no answer and
 * the card must be powered on again. It is the protocol's
 * `CardRemovedError` (code `CARD_REMOVED`), so a terminal that meets it
 * through an in-process transport sees a lost card, as through a reader.
 */
export class PowerCutError extends CardRemovedError {
  /** Where the power was cut, e.g. `write 3 (slot 1)` or `before APDU 2`. */
  readonly where: string;

  /** Builds the error; `where` is a short human description of the cut point. */
  constructor(where: string) {
    super(`simulated power cut: ${where}`, { where });
    this.name = 'PowerCutError';
    this.where = where;
  }
}

/** True for a {@link PowerCutError} (also across module copies, by name). */
export function isPowerCut(e: unknown): e is PowerCutError {
  return e instanceof PowerCutError || (e instanceof CardRemovedError && e.name === 'PowerCutError');
}

/** Selects APDUs by position (1-based count of APDUs received) or by instruction byte. */
export interface ApduSelector {
  /** The N-th APDU the card receives after the plan was armed (1-based). */
  index?: number;
  /** Every APDU whose INS equals this byte (the first one only, since faults fire once). */
  ins?: number;
}

/** A set of faults to inject. Every field is optional; an empty plan injects nothing. */
export interface FaultPlan {
  /**
   * Cut the power during the N-th storage write (1-based, counted from when
   * the plan was armed). By default the write does not happen at all.
   */
  cutAtWrite?: number;
  /**
   * Tear the cut write: `true` keeps a random-length prefix of the new bytes,
   * a number keeps exactly that many bytes; the rest of the slot keeps its old
   * bytes (or 0xFF, erased flash, where there were none).
   */
  torn?: boolean | number;
  /** Cut the power when this APDU arrives, before the applet sees it. */
  cutBeforeApdu?: ApduSelector;
  /** Let the applet process this APDU, then cut the power before the response leaves. */
  cutAfterApdu?: ApduSelector;
  /** Drop the N-th frame the card sends (1-based: serial frames, vpcd R-APDUs, HID messages). */
  dropFrame?: number;
  /** Corrupt (flip one byte of) the N-th frame the card sends. */
  corruptFrame?: number;
  /** Delay every response by this many milliseconds. */
  delayMs?: number;
  /**
   * Seed (0 .. 2^32-1) of the randomness of this plan (a torn write's length,
   * a corrupted byte's position and value): the same plan with the same seed
   * on the same card state does exactly the same thing, so a recorded lab
   * case that armed it replays byte for byte. Without it the randomness is
   * fresh.
   */
  seed?: number;
}

/** What happened, for logs and test assertions. */
export interface FaultEvent {
  /** Kind of fault that fired. */
  kind: 'cut-at-write' | 'cut-before-apdu' | 'cut-after-apdu' | 'drop-frame' | 'corrupt-frame';
  /** Human description of where. */
  where: string;
}

/**
 * Counts storage writes, APDUs and outgoing frames and fires the faults of a
 * {@link FaultPlan}, each once.
 */
export class FaultInjector {
  #plan: FaultPlan;
  #writes = 0;
  #apdus = 0;
  #frames = 0;
  #fired = new Set<FaultEvent['kind']>();
  #random: (n: number) => Uint8Array;
  /** Every fault that fired, in order. */
  readonly events: FaultEvent[] = [];

  /**
   * @param plan the faults to inject.
   * @param random randomness for torn-write lengths and corrupted bytes
   *   (any source; this is fault simulation, not cryptography).
   */
  constructor(plan: FaultPlan = {}, random: (n: number) => Uint8Array = defaultRandom) {
    checkPlan(plan);
    this.#plan = { ...plan };
    this.#fresh = random;
    this.#random = plan.seed !== undefined ? seededRandom(plan.seed) : random;
  }

  readonly #fresh: (n: number) => Uint8Array;

  /** The current plan. */
  get plan(): Readonly<FaultPlan> {
    return this.#plan;
  }

  /** Storage writes seen since the plan was armed. */
  get writes(): number {
    return this.#writes;
  }

  /** APDUs seen since the plan was armed. */
  get apdus(): number {
    return this.#apdus;
  }

  /** Outgoing frames seen since the plan was armed. */
  get frames(): number {
    return this.#frames;
  }

  /** Replaces the plan and restarts every count from zero. */
  arm(plan: FaultPlan): void {
    checkPlan(plan);
    this.#plan = { ...plan };
    this.#random = plan.seed !== undefined ? seededRandom(plan.seed) : this.#fresh;
    this.#writes = 0;
    this.#apdus = 0;
    this.#frames = 0;
    this.#fired.clear();
  }

  /** Clears the plan (no more faults) without resetting the counters. */
  disarm(): void {
    this.#plan = {};
  }

  /** Response delay in milliseconds (0 when none). */
  get delayMs(): number {
    return this.#plan.delayMs ?? 0;
  }

  /**
   * Called for every storage write. Returns `undefined` to let the write
   * happen, or the bytes to store before the power is cut (`null`: store
   * nothing). The caller stores them and throws a {@link PowerCutError}.
   */
  onWrite(slot: number, data: Uint8Array, old: Uint8Array | undefined): { torn: Uint8Array | null; where: string } | undefined {
    this.#writes++;
    if (this.#plan.cutAtWrite === undefined || this.#plan.cutAtWrite !== this.#writes || this.#once('cut-at-write')) {
      return undefined;
    }
    const where = `write ${this.#writes} (slot ${slot})`;
    const torn = this.#plan.torn;
    if (torn === undefined || torn === false) {
      this.#record('cut-at-write', where);
      return { torn: null, where };
    }
    const keep =
      typeof torn === 'number' ? Math.min(Math.max(0, Math.floor(torn)), data.length) : randomBelow(this.#random, data.length + 1);
    const out = new Uint8Array(data.length).fill(0xff);
    if (old !== undefined) out.set(old.subarray(0, Math.min(old.length, data.length)));
    out.set(data.subarray(0, keep));
    this.#record('cut-at-write', `${where}, torn after ${keep} of ${data.length} bytes`);
    return { torn: out, where: `${where}, torn after ${keep} of ${data.length} bytes` };
  }

  /**
   * Called when an APDU arrives. Returns `'before'` when the power must be
   * cut before processing, `'after'` when it must be cut after processing
   * (the response is lost), `undefined` otherwise.
   */
  onApdu(apdu: Uint8Array): 'before' | 'after' | undefined {
    this.#apdus++;
    const ins = apdu.length >= 2 ? apdu[1]! : -1;
    const matches = (s: ApduSelector | undefined): boolean =>
      s !== undefined && (s.index === undefined || s.index === this.#apdus) && (s.ins === undefined || s.ins === ins);
    if (matches(this.#plan.cutBeforeApdu) && !this.#once('cut-before-apdu')) {
      this.#record('cut-before-apdu', `before APDU ${this.#apdus} (INS ${hexByte(ins)})`);
      return 'before';
    }
    if (matches(this.#plan.cutAfterApdu) && !this.#once('cut-after-apdu')) {
      this.#record('cut-after-apdu', `after APDU ${this.#apdus} (INS ${hexByte(ins)})`);
      return 'after';
    }
    return undefined;
  }

  /**
   * Called for every frame the card sends. Returns the bytes to send
   * (possibly corrupted) or `null` to drop the frame.
   */
  onOutgoingFrame(frame: Uint8Array): Uint8Array | null {
    this.#frames++;
    if (this.#plan.dropFrame === this.#frames && !this.#once('drop-frame')) {
      this.#record('drop-frame', `frame ${this.#frames} dropped`);
      return null;
    }
    if (this.#plan.corruptFrame === this.#frames && !this.#once('corrupt-frame') && frame.length > 0) {
      const copy = frame.slice();
      const at = randomBelow(this.#random, copy.length);
      // XOR with a non-zero value so the byte really changes.
      copy[at] = copy[at]! ^ (1 + randomBelow(this.#random, 255));
      this.#record('corrupt-frame', `frame ${this.#frames} corrupted at byte ${at}`);
      return copy;
    }
    return frame;
  }

  /** Returns true when `kind` already fired, and marks it fired otherwise. */
  #once(kind: FaultEvent['kind']): boolean {
    if (this.#fired.has(kind)) return true;
    this.#fired.add(kind);
    return false;
  }

  #record(kind: FaultEvent['kind'], where: string): void {
    this.events.push({ kind, where });
  }
}

/**
 * A {@link Storage} wrapper that counts writes and, when the plan says so,
 * cuts the power during one: it stores nothing (or the torn bytes) and throws
 * a {@link PowerCutError}. Reads pass through.
 */
export class FaultInjectingStorage implements Storage {
  readonly #inner: Storage;
  readonly #faults: FaultInjector;
  #cut: PowerCutError | undefined;

  /** Wraps `inner`; `faults` decides when to cut. */
  constructor(inner: Storage, faults: FaultInjector) {
    this.#inner = inner;
    this.#faults = faults;
  }

  /** The wrapped storage. */
  get inner(): Storage {
    return this.#inner;
  }

  /** Reads a slot from the wrapped storage. */
  read(slot: number): Uint8Array | undefined {
    return this.#inner.read(slot);
  }

  /**
   * The power cut that hit this storage since the last {@link revive}, if
   * any. The card checks it after every command: an applet that catches the
   * error and answers anyway must not get its answer out.
   */
  get cut(): PowerCutError | undefined {
    return this.#cut;
  }

  /** Power is back: writes reach the storage again. */
  revive(): void {
    this.#cut = undefined;
  }

  /**
   * Writes a slot, or cuts the power as planned. After a cut every write is
   * refused with the same error until {@link revive}: without power nothing
   * more reaches the memory, whatever the code still running tries.
   */
  write(slot: number, data: Uint8Array): void {
    if (this.#cut !== undefined) throw this.#cut;
    const cut = this.#faults.onWrite(slot, data, this.#inner.read(slot));
    if (cut === undefined) {
      this.#inner.write(slot, data);
      return;
    }
    if (cut.torn !== null) this.#inner.write(slot, cut.torn);
    this.#cut = new PowerCutError(cut.where);
    throw this.#cut;
  }
}

function checkPlan(plan: FaultPlan): void {
  if (plan.seed !== undefined && (!Number.isInteger(plan.seed) || plan.seed < 0 || plan.seed > 0xffffffff))
    throw new RangeError('seed must be an integer from 0 to 2^32-1');
  const positive = (n: number | undefined, name: string): void => {
    if (n !== undefined && (!Number.isInteger(n) || n < 1)) throw new RangeError(`${name} must be a positive integer (1-based)`);
  };
  positive(plan.cutAtWrite, 'cutAtWrite');
  positive(plan.dropFrame, 'dropFrame');
  positive(plan.corruptFrame, 'corruptFrame');
  positive(plan.cutBeforeApdu?.index, 'cutBeforeApdu.index');
  positive(plan.cutAfterApdu?.index, 'cutAfterApdu.index');
  for (const [name, s] of [
    ['cutBeforeApdu', plan.cutBeforeApdu],
    ['cutAfterApdu', plan.cutAfterApdu],
  ] as const) {
    if (s !== undefined && s.index === undefined && s.ins === undefined) throw new RangeError(`${name} needs an index or an INS`);
    if (s?.ins !== undefined && (!Number.isInteger(s.ins) || s.ins < 0 || s.ins > 0xff)) throw new RangeError(`${name}.ins must be a byte`);
  }
  if (plan.delayMs !== undefined && (!Number.isFinite(plan.delayMs) || plan.delayMs < 0)) throw new RangeError('delayMs must be >= 0');
  if (typeof plan.torn === 'number' && (!Number.isInteger(plan.torn) || plan.torn < 0))
    throw new RangeError('torn must be a byte count >= 0');
}

function randomBelow(random: (n: number) => Uint8Array, n: number): number {
  if (n <= 1) return 0;
  const b = random(4);
  const v = ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
  return v % n;
}

function hexByte(b: number): string {
  return b < 0 ? '--' : b.toString(16).toUpperCase().padStart(2, '0');
}

/**
 * A deterministic byte source from a 32-bit seed (mulberry32): fault
 * simulation only, never cryptography. Same seed, same bytes.
 */
function seededRandom(seed: number): (n: number) => Uint8Array {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return (n) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = next() & 0xff;
    return out;
  };
}

function defaultRandom(n: number): Uint8Array {
  // Fault positions need no cryptographic quality; crypto.getRandomValues is
  // available in Node 20 as a global and keeps this module free of imports.
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}
