/**
 * Atomic persistent state over torn-write storage: two shadow pages.
 *
 * The whole committed state lives in ONE record, written to one of two slots
 * (A = 0, B = 1) in turn. A commit writes the slot that does NOT hold the
 * current record, with the next sequence number; the current record is never
 * touched. After a power cut at any point of that single write (before it, in
 * the middle with the slot torn into any mix of old, new and garbage bytes, or
 * after it), the reader finds:
 *
 * - the new record valid (write completed): the new state; or
 * - the new record invalid (hash fails) or absent: the old record, still
 *   intact in the other slot: the old state.
 *
 * There is no third outcome, because validity of a record is decided by a
 * SHA-256 over its header and body, and the two candidate records never share
 * a slot. Record layout (big-endian):
 *
 * ```text
 * offset 0   4  magic "DTS1"
 * offset 4   4  sequence number (u32), +1 per commit
 * offset 8   4  body length n (u32)
 * offset 12 32  SHA-256 over bytes 0..11 and the body
 * offset 44  n  body (deterministic CBOR of the card state)
 * ```
 *
 * @module
 */
import { bytesEqual, concatBytes, sha256 } from '@dt/protocol';
import type { Storage } from './hal.ts';

/** Slots used by the journal. */
export const JOURNAL_SLOTS = [0, 1] as const;

const MAGIC = Uint8Array.of(0x44, 0x54, 0x53, 0x31); // "DTS1"
const HEADER = 12;
const HASH = 32;
const MAX_SEQ = 0xffffffff;

/** What {@link ShadowJournal.load} found. */
export type JournalLoad =
  /** A valid record: its body. */
  | { kind: 'state'; body: Uint8Array; seq: number }
  /** Nothing committed yet (a blank card, or its first commit was cut). */
  | { kind: 'blank' }
  /** Both slots hold bytes and neither is a valid record: storage was damaged outside a commit. */
  | { kind: 'corrupt' };

function u32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

function u32be(n: number): Uint8Array {
  return Uint8Array.of((n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);
}

/** Parses a slot; `undefined` when it is not a complete, intact record. */
function parseRecord(raw: Uint8Array | undefined): { seq: number; body: Uint8Array } | undefined {
  if (raw === undefined || raw.length < HEADER + HASH) return undefined;
  if (!bytesEqual(raw.subarray(0, 4), MAGIC)) return undefined;
  const seq = u32(raw, 4);
  const length = u32(raw, 8);
  if (raw.length !== HEADER + HASH + length) return undefined;
  const body = raw.subarray(HEADER + HASH);
  const digest = sha256(concatBytes(raw.subarray(0, HEADER), body));
  // Public integrity check, not a secret comparison: plain equality is fine.
  if (!bytesEqual(digest, raw.subarray(HEADER, HEADER + HASH))) return undefined;
  return { seq, body: body.slice() };
}

/**
 * The two-slot shadow journal. Not thread-safe (a card runs one command at a
 * time). `commit` performs exactly one `Storage.write`.
 */
export class ShadowJournal {
  readonly #storage: Storage;
  /** Slot holding the current record, or -1 when none. */
  #slot = -1;
  #seq = 0;

  /** Wraps `storage`; call {@link load} before the first commit. */
  constructor(storage: Storage) {
    this.#storage = storage;
  }

  /** Reads both slots and returns the newest intact record. */
  load(): JournalLoad {
    const raws = JOURNAL_SLOTS.map((s) => this.#storage.read(s));
    const recs = raws.map(parseRecord);
    let best = -1;
    for (let i = 0; i < recs.length; i++) {
      const r = recs[i];
      if (r && (best < 0 || r.seq > recs[best]!.seq)) best = i;
    }
    if (best < 0) {
      this.#slot = -1;
      this.#seq = 0;
      // Only the first commit of a card's life can leave one damaged slot and
      // no intact one; two non-empty slots without a valid record mean the
      // storage was damaged some other way: fail closed, do not re-blank.
      const written = raws.filter((r) => r !== undefined && r.length > 0).length;
      return written >= 2 ? { kind: 'corrupt' } : { kind: 'blank' };
    }
    this.#slot = JOURNAL_SLOTS[best]!;
    this.#seq = recs[best]!.seq;
    return { kind: 'state', body: recs[best]!.body, seq: this.#seq };
  }

  /**
   * Durably replaces the state with `body`. When this returns, the new state
   * is the one {@link load} finds; if it throws (power cut), either state may
   * be found, never anything else.
   */
  commit(body: Uint8Array): void {
    if (this.#seq >= MAX_SEQ) throw new Error('journal sequence exhausted');
    const seq = this.#seq + 1;
    const target = this.#slot === JOURNAL_SLOTS[0] ? JOURNAL_SLOTS[1] : JOURNAL_SLOTS[0];
    const header = concatBytes(MAGIC, u32be(seq), u32be(body.length));
    const record = concatBytes(header, sha256(concatBytes(header, body)), body);
    this.#storage.write(target, record);
    this.#slot = target;
    this.#seq = seq;
  }

  /** Sequence number of the current record (0 before the first commit). */
  get seq(): number {
    return this.#seq;
  }
}
