/**
 * The card's persistent state: its schema (data, like every DT message), its
 * encoding into the journal body, and the volatile facts derived from it.
 *
 * @module
 */
import {
  array,
  bool,
  bytes,
  bytesOneOf,
  bytesUpTo,
  CardLimitsSchema,
  decodeDeterministic,
  decodeStruct,
  defineSchema,
  encodeDeterministic,
  encodeStruct,
  LIMITS,
  MarkSchema,
  openSigned,
  struct,
  uint,
  MAX_UINT,
  VERSION_1,
  type Infer,
} from '@dt/protocol';

/** How many signed terminal nonces the card remembers besides its history (SPEC.md §7.5: 64). */
export const NONCE_MEMORY = 64;

/**
 * How many verified certificate signatures the card remembers (SPEC §10.7 step 2): enough for
 * the acquiring banks and terminals of a holder's usual shops (a bank certificate and a terminal
 * certificate per terminal).
 */
export const CERT_MEMO_SIZE = 8;

/** Longest PIN / unblock code, in bytes. Stored right-padded with 0xFF to this length. */
export const PIN_FIELD = 16;

const signed = (max: number) => bytesUpTo(max, 16);

/** A spendable coin: a ledger token (16-byte serial) or a change output of the card's own transfer (32-byte id). */
export const CoinSchema = defineSchema({
  name: 'Coin',
  fields: [
    { key: 1, name: 'id', type: bytesOneOf(16, 32) },
    { key: 2, name: 'value', type: uint(MAX_UINT, 1) },
    { key: 3, name: 'mark', type: struct(MarkSchema), optional: true },
    // Earliest expiry of the ledger tokens the coin derives from.
    { key: 4, name: 'expires', type: uint(MAX_UINT), optional: true },
  ],
});
export type Coin = Infer<typeof CoinSchema>;

/** The last handover, kept for a torn-tap retry. */
export const LastPaymentSchema = defineSchema({
  name: 'LastPayment',
  fields: [
    { key: 1, name: 'nonce', type: bytes(16) },
    { key: 2, name: 'payee', type: bytes(16) },
    { key: 3, name: 'handover', type: bytesUpTo(LIMITS.maxHandoverSize) },
  ],
});

/** Everything the card keeps across power cycles. Committed only as a whole (journal.ts). */
export const CardStateSchema = defineSchema({
  name: 'CardState',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    // ---- personalization
    { key: 1, name: 'locked', type: bool() },
    { key: 2, name: 'secretKey', type: bytes(32), optional: true },
    { key: 3, name: 'publicKey', type: bytes(65), optional: true },
    { key: 4, name: 'chain', type: array(signed(LIMITS.maxCertificateSize), LIMITS.maxChainCerts, 1), optional: true },
    { key: 5, name: 'root', type: signed(LIMITS.maxCertificateSize), optional: true },
    { key: 6, name: 'ledger', type: signed(LIMITS.maxCertificateSize), optional: true },
    { key: 7, name: 'pin', type: bytes(PIN_FIELD), optional: true },
    { key: 8, name: 'pinMax', type: uint(15, 1) },
    { key: 9, name: 'pinTries', type: uint(15) },
    { key: 10, name: 'puk', type: bytes(PIN_FIELD), optional: true },
    { key: 11, name: 'pukMax', type: uint(15, 1) },
    { key: 12, name: 'pukTries', type: uint(15) },
    { key: 13, name: 'confirm', type: uint(1) },
    { key: 14, name: 'configured', type: bool() },
    // ---- clock floor (seconds), only ever raised
    { key: 20, name: 'floor', type: uint(MAX_UINT) },
    // ---- trusted time (seconds, SPEC §10.8): the latest time the issuing bank (personalization)
    // or the ledger (an applied SyncReceipt) gave; a PaymentRequest may be dated at most
    // CARD_TIME_AHEAD after it. Absent in records written before it existed (see decodeState).
    { key: 30, name: 'trusted', type: uint(MAX_UINT), optional: true },
    // ---- chain of signatures
    { key: 21, name: 'counter', type: uint(MAX_UINT) },
    { key: 22, name: 'prev', type: bytes(32) },
    { key: 23, name: 'history', type: array(signed(LIMITS.maxTransferSize), LIMITS.maxHistory) },
    { key: 24, name: 'coins', type: array(struct(CoinSchema), LIMITS.maxTokens) },
    { key: 25, name: 'tokens', type: array(signed(LIMITS.maxTokenSize), LIMITS.maxTokens) },
    { key: 26, name: 'receipt', type: signed(LIMITS.maxSyncSize), optional: true },
    { key: 27, name: 'nonces', type: array(bytes(16), NONCE_MEMORY) },
    { key: 28, name: 'last', type: struct(LastPaymentSchema), optional: true },
    { key: 29, name: 'pending', type: signed(LIMITS.maxSyncSize), optional: true },
    // ---- certificate signatures verified by an earlier PAY (SPEC §10.7 step 2), least recently
    // used first: SHA-256 over the issuer's key id and the whole certificate. Absent in records
    // written before it existed (nothing remembered).
    { key: 31, name: 'certMemo', type: array(bytes(32), CERT_MEMO_SIZE), optional: true },
  ],
});

/** The persistent card state. */
export type CardState = Infer<typeof CardStateSchema>;

/** Upper bound of an encoded state (history, tokens, receipt and last handover at their limits). */
export const MAX_STATE_SIZE = 1024 * 1024;

/** Encodes the state for the journal. */
export function encodeState(s: CardState): Uint8Array {
  return encodeDeterministic(encodeStruct(CardStateSchema, s));
}

/**
 * Decodes a journal body; throws a DtError when it is not a valid state.
 *
 * A record written before the trusted time existed (no key 30) but with certificates gets
 * {@link legacyTrustedTime}: the card adopts it and commits it with its next state change.
 */
export function decodeState(body: Uint8Array): CardState {
  const s = decodeStruct(CardStateSchema, decodeDeterministic(body, MAX_STATE_SIZE));
  if (s.trusted !== undefined || !s.chain) return s;
  return { ...s, trusted: legacyTrustedTime(s) };
}

/**
 * The trusted time of a record that predates it (SPEC §10.10): the time of the kept
 * SyncReceipt when the card has synced, else the card certificate's `iat` (both signed by a
 * party the card trusts with time). Never the clock floor: the floor may have been moved by
 * a terminal's request time, which is exactly what the trusted time must not follow.
 * A card whose migrated trusted time is more than 30 days old must sync before it pays.
 */
export function legacyTrustedTime(s: CardState): number {
  const issued = s.chain ? openSigned('Certificate', s.chain[0]!).message.iat : 0;
  const synced = s.receipt ? openSigned('SyncReceipt', s.receipt).message.time : 0;
  return Math.max(issued, synced);
}

/** The state of a card fresh from the factory (nothing personalized). */
export function blankState(): CardState {
  return {
    locked: false,
    pinMax: 3,
    pinTries: 3,
    pukMax: 10,
    pukTries: 10,
    confirm: 1,
    configured: false,
    floor: 0,
    counter: 0,
    prev: new Uint8Array(32),
    history: [],
    coins: [],
    tokens: [],
    nonces: [],
  };
}

/** Card limits as certified (re-exported shape for status responses). */
export type CardLimits = Infer<typeof CardLimitsSchema>;
