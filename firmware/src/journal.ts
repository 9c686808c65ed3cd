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
 * - the new record invalid (check fails) or absent: the old record, still
 *   intact in the other slot: the old state.
 *
 * There is no third outcome, because validity of a record is decided by a
 * 64-bit check over its header and body (CRC-32C and CRC-32, two independent
 * polynomials: a torn record passes both with a probability of about 2^-64),
 * and the two candidate records never share a slot. Record layout
 * (big-endian):
 *
 * ```text
 * offset 0   4  magic "DTS2"
 * offset 4   4  sequence number (u32), +1 per commit
 * offset 8   4  body length n (u32)
 * offset 12  4  CRC-32C (Castagnoli) over bytes 0..11 and the body
 * offset 16  4  CRC-32 (ISO-HDLC, as zlib's) over bytes 0..11 and the body
 * offset 20  n  body (deterministic CBOR of the card state)
 * ```
 *
 * Why a CRC pair and not a hash: the check detects torn writes, which are
 * physics, not an adversary (whoever can write the card's storage can write a
 * matching SHA-256 as easily), and the card computes it over its whole state
 * at every commit: in QuickJS SHA-256 over a 9 KB state took about 8 ms of a
 * PAY, the CRC pair (`crc-32`, slicing by 16) about a tenth of that. Records
 * of the first layout, "DTS1" (offset 12: 32-byte SHA-256 over bytes 0..11 and
 * the body; body at 44), written by earlier firmware, are still read; the next
 * commit writes "DTS2".
 *
 * @module
 */
import crc32 from 'crc-32';
import crc32c from 'crc-32/crc32c.js';
import { bytesEqual, concatBytes, sha256 } from '@dt/protocol';
import type { Storage } from './hal.ts';

/** Slots used by the journal. */
export const JOURNAL_SLOTS = [0, 1] as const;

const MAGIC = Uint8Array.of(0x44, 0x54, 0x53, 0x32); // "DTS2"
/** The first layout's magic (SHA-256 check), read but no longer written. */
const MAGIC_V1 = Uint8Array.of(0x44, 0x54, 0x53, 0x31); // "DTS1"
const HEADER = 12;
/** Length of the check: CRC-32C then CRC-32, 4 bytes each. */
const CHECK = 8;
/** Length of the first layout's check (SHA-256). */
const HASH_V1 = 32;
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

/** The 8-byte check of a record: CRC-32C then CRC-32 (big-endian) over `header` then `body`. */
export function recordCheck(header: Uint8Array, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(CHECK);
  const view = new DataView(out.buffer);
  view.setUint32(0, crc32c.buf(body, crc32c.buf(header)) >>> 0);
  view.setUint32(4, crc32.buf(body, crc32.buf(header)) >>> 0);
  return out;
}

/** Parses a slot; `undefined` when it is not a complete, intact record (of either layout). */
function parseRecord(raw: Uint8Array | undefined): { seq: number; body: Uint8Array } | undefined {
  if (raw === undefined || raw.length < HEADER) return undefined;
  const magic = raw.subarray(0, 4);
  const v2 = bytesEqual(magic, MAGIC);
  if (!v2 && !bytesEqual(magic, MAGIC_V1)) return undefined;
  const check = v2 ? CHECK : HASH_V1;
  const seq = u32(raw, 4);
  const length = u32(raw, 8);
  if (raw.length !== HEADER + check + length) return undefined;
  const header = raw.subarray(0, HEADER);
  const body = raw.subarray(HEADER + check);
  const expected = v2 ? recordCheck(header, body) : sha256(concatBytes(header, body));
  // Public integrity check, not a secret comparison: plain equality is fine.
  if (!bytesEqual(expected, raw.subarray(HEADER, HEADER + check))) return undefined;
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
    const record = concatBytes(header, recordCheck(header, body), body);
    this.#storage.write(target, record);
    this.#slot = target;
    this.#seq = seq;
  }

  /** Sequence number of the current record (0 before the first commit). */
  get seq(): number {
    return this.#seq;
  }
}
