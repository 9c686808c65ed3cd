/**
 * The DT message schemas (payloads of COSE_Sign1 objects and plain containers).
 * SPEC.md gives the same definitions in CDDL; `test/spec.test.ts` checks that
 * every key listed here appears there.
 *
 * @module
 */
import { ErrorCode } from '../errors.ts';
import {
  array,
  bool,
  bytes,
  bytesOneOf,
  bytesUpTo,
  constant,
  defineSchema,
  int,
  struct,
  text,
  uint,
  VERSION_1,
  MAX_UINT,
  type Infer,
} from './dsl.ts';

// ---------------------------------------------------------------- limits
/** Protocol-wide bounds; decoders reject anything beyond them. */
export const LIMITS = {
  /** Largest amount in minor units (tiyn): 2^53-1. */
  maxAmount: MAX_UINT,
  /** Certificates in a chain, leaf first, root excluded. */
  maxChainCerts: 3,
  /** Inputs of one transfer. */
  maxInputs: 16,
  /** Outputs of one transfer: the payee output, then at most one change output. */
  maxOutputs: 2,
  /** Offline transfers since the last sync carried in a handover or sync request. */
  maxHistory: 64,
  /** Confirmed tokens carried as provenance, or issued in one receipt. */
  maxTokens: 64,
  /** Issuing-bank key ids a PaymentRequest names as held by the terminal (`banks`). */
  maxHeldBanks: 16,
  /** Handovers in one terminal batch. */
  maxBatchHandovers: 1000,
  /** Adjustments (voids and refunds) in one terminal batch. */
  maxBatchAdjustments: 1000,
  /** Revoked key ids in one revocation list. */
  maxRevoked: 200_000,
  /** Merchant ids or categories in one mark. */
  maxMarkEntries: 16,
  /** Encoded sizes (bytes). */
  maxCertificateSize: 1024,
  maxTokenSize: 512,
  maxTransferSize: 2048,
  maxPaymentRequestSize: 4096,
  maxHandoverSize: 192 * 1024,
  maxBatchSize: 64 * 1024 * 1024,
  maxOutcomeSize: 8192,
  maxAdjustmentSize: 512,
  maxRevocationListSize: 4 * 1024 * 1024,
  maxSyncSize: 192 * 1024,
} as const;

const kid = bytes(16);
const hash32 = bytes(32);
const nonce = bytes(16);
const amount = uint(MAX_UINT);
const time = uint(MAX_UINT);
const currency = uint(999, 1);
const signedObject = (maxSize: number) => bytesUpTo(maxSize, 16);

// ---------------------------------------------------------------- certificates (CWT)
/** Roles certified by a DT certificate. */
export const Role = { ISSUER: 1, LEDGER: 2, BANK: 3, CARD: 4, TERMINAL: 5, ACQUIRER: 6 } as const;
export type Role = (typeof Role)[keyof typeof Role];

/** Bank permission bits (claim `perms`). */
export const BankPermission = { ISSUING: 1, ACQUIRING: 2 } as const;

/** COSE_Key (RFC 9052 §7) for an EC2 P-256 ES256 key, with its DT key id. */
export const CoseKeySchema = defineSchema({
  name: 'CoseKey',
  fields: [
    { key: 1, name: 'kty', type: constant(2, ErrorCode.BAD_KEY) }, // kty: EC2
    { key: 2, name: 'kid', type: kid },
    { key: 3, name: 'alg', type: constant(-7, ErrorCode.COSE_WRONG_ALGORITHM) }, // ES256
    { key: -1, name: 'crv', type: constant(1, ErrorCode.BAD_KEY) }, // P-256
    { key: -2, name: 'x', type: bytes(32) },
    { key: -3, name: 'y', type: bytes(32) },
  ],
});

/** RFC 8747 confirmation claim: proof-of-possession key. */
export const ConfirmationSchema = defineSchema({
  name: 'Confirmation',
  fields: [{ key: 1, name: 'coseKey', type: struct(CoseKeySchema) }],
});

/** Card limits certified by the issuing bank. */
export const CardLimitsSchema = defineSchema({
  name: 'CardLimits',
  fields: [
    { key: 1, name: 'perPayment', type: amount },
    { key: 2, name: 'offlineTotal', type: amount },
    { key: 3, name: 'offlineCount', type: uint(LIMITS.maxHistory, 1) },
    { key: 4, name: 'cvmLimit', type: amount },
  ],
});

/** Merchant identity certified in a terminal certificate. */
export const MerchantSchema = defineSchema({
  name: 'Merchant',
  fields: [
    { key: 1, name: 'id', type: text(64) },
    { key: 2, name: 'mcc', type: uint(9999) },
    { key: 3, name: 'name', type: text(64) },
  ],
});

/** Private claim keys of DT certificates (private-use range of the CWT claims registry, < -65536). */
export const CertClaim = {
  VERSION: -65537,
  ROLE: -65538,
  PERMS: -65539,
  LIMITS: -65540,
  MERCHANT: -65541,
  CURRENCY: -65542,
  CRL_MAX_AGE: -65543,
} as const;

/**
 * Largest age (seconds) of the revocation list a terminal may accept offline payments
 * with, when its certificate does not say (`crlMaxAge` claim absent): 3 days.
 * The ledger believes a terminal's declared CRL version only within this policy (SPEC §7.7).
 */
export const DEFAULT_TERMINAL_CRL_MAX_AGE = 3 * 86_400;

/**
 * How far (seconds) a payment request's time may run ahead of the card's last trusted
 * time (its personalization or its last applied sync receipt, both ledger- or bank-made)
 * before the card refuses to pay: 30 days (SPEC §10.8). A card must sync at least that often.
 */
export const CARD_TIME_AHEAD = 30 * 86_400;

/** A certificate: the claims set of a CWT (RFC 8392) signed as COSE_Sign1. */
export const CertificateSchema = defineSchema({
  name: 'Certificate',
  fields: [
    { key: 1, name: 'iss', type: text(64) },
    { key: 2, name: 'sub', type: text(64) },
    { key: 4, name: 'exp', type: time },
    { key: 5, name: 'nbf', type: time },
    { key: 6, name: 'iat', type: time },
    { key: 8, name: 'cnf', type: struct(ConfirmationSchema) },
    { key: CertClaim.VERSION, name: 'v', type: VERSION_1 },
    { key: CertClaim.ROLE, name: 'role', type: uint(6, 1) },
    { key: CertClaim.PERMS, name: 'perms', type: uint(3, 1), optional: true },
    { key: CertClaim.LIMITS, name: 'limits', type: struct(CardLimitsSchema), optional: true },
    { key: CertClaim.MERCHANT, name: 'merchant', type: struct(MerchantSchema), optional: true },
    { key: CertClaim.CURRENCY, name: 'currency', type: currency, optional: true },
    // Terminals only: the acquiring bank certifies the terminal's revocation-list age policy.
    { key: CertClaim.CRL_MAX_AGE, name: 'crlMaxAge', type: uint(365 * 86_400, 60), optional: true },
  ],
});
export type Certificate = Infer<typeof CertificateSchema>;

// ---------------------------------------------------------------- value
/** Purpose binding of value (DT "marking"). */
export const MarkSchema = defineSchema({
  name: 'Mark',
  fields: [
    { key: 1, name: 'merchants', type: array(text(64), LIMITS.maxMarkEntries, 1), optional: true },
    { key: 2, name: 'mccs', type: array(uint(9999), LIMITS.maxMarkEntries, 1), optional: true },
    { key: 3, name: 'hops', type: uint(255) },
  ],
});
export type Mark = Infer<typeof MarkSchema>;

/** A confirmed token, signed by the ledger. */
export const TokenSchema = defineSchema({
  name: 'Token',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'serial', type: bytes(16) },
    { key: 2, name: 'value', type: uint(MAX_UINT, 1) },
    { key: 3, name: 'currency', type: currency },
    { key: 4, name: 'owner', type: kid },
    { key: 5, name: 'issued', type: time },
    { key: 6, name: 'expires', type: time, optional: true },
    { key: 7, name: 'mark', type: struct(MarkSchema), optional: true },
  ],
});
export type Token = Infer<typeof TokenSchema>;

/** An output of a transfer. Its id is derived (see `outputId`). */
export const OutputSchema = defineSchema({
  name: 'Output',
  fields: [
    { key: 1, name: 'value', type: uint(MAX_UINT, 1) },
    { key: 2, name: 'owner', type: kid },
    { key: 3, name: 'mark', type: struct(MarkSchema), optional: true },
  ],
});
export type Output = Infer<typeof OutputSchema>;

// ---------------------------------------------------------------- payment
/** The terminal's signed payment request. */
export const PaymentRequestSchema = defineSchema({
  name: 'PaymentRequest',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'amount', type: uint(MAX_UINT, 1) },
    { key: 2, name: 'currency', type: currency },
    { key: 3, name: 'terminal', type: kid },
    { key: 4, name: 'merchant', type: text(64) },
    { key: 5, name: 'mcc', type: uint(9999) },
    { key: 6, name: 'nonce', type: nonce },
    { key: 7, name: 'time', type: time },
    { key: 8, name: 'chain', type: array(signedObject(LIMITS.maxCertificateSize), LIMITS.maxChainCerts, 1) },
    { key: 9, name: 'retryOf', type: nonce, optional: true },
    // Issuing banks whose certificates the terminal holds, verified under its root (SPEC §3.6):
    // a card of one of them leaves its bank's certificate out of the Handover chain.
    { key: 10, name: 'banks', type: array(kid, LIMITS.maxHeldBanks, 1), optional: true },
    // The newest transfer of this card the terminal holds with its whole chain (SPEC §3.6, §3.8):
    // the card then leaves it and the history before it out of the Handover.
    { key: 11, name: 'held', type: hash32, optional: true },
  ],
});
export type PaymentRequest = Infer<typeof PaymentRequestSchema>;

/** Cardholder verification performed for a transfer. */
export const Cvm = { NONE: 0, OFFLINE_PIN: 1, ON_DEVICE: 2 } as const;

/** The card's signed transfer. */
export const TransferSchema = defineSchema({
  name: 'Transfer',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'card', type: kid },
    { key: 2, name: 'counter', type: uint(MAX_UINT, 1) },
    { key: 3, name: 'prev', type: hash32 },
    { key: 4, name: 'inputs', type: array(bytesOneOf(16, 32), LIMITS.maxInputs, 1) },
    { key: 5, name: 'outputs', type: array(struct(OutputSchema), LIMITS.maxOutputs, 1) },
    { key: 6, name: 'amount', type: uint(MAX_UINT, 1) },
    { key: 7, name: 'currency', type: currency },
    { key: 8, name: 'payee', type: kid },
    { key: 9, name: 'merchant', type: text(64) },
    { key: 10, name: 'mcc', type: uint(9999) },
    { key: 11, name: 'nonce', type: nonce },
    { key: 12, name: 'time', type: time },
    { key: 13, name: 'cvm', type: uint(2) },
  ],
});
export type Transfer = Infer<typeof TransferSchema>;

/** What the card gives the terminal (unsigned container of signed objects). */
export const HandoverSchema = defineSchema({
  name: 'Handover',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'transfer', type: signedObject(LIMITS.maxTransferSize) },
    { key: 2, name: 'chain', type: array(signedObject(LIMITS.maxCertificateSize), LIMITS.maxChainCerts, 1) },
    // Provenance tokens the receipt does not carry (SPEC §3.8); absent when the receipt carries them all.
    { key: 3, name: 'tokens', type: array(signedObject(LIMITS.maxTokenSize), LIMITS.maxTokens, 1), optional: true },
    { key: 4, name: 'history', type: array(signedObject(LIMITS.maxTransferSize), LIMITS.maxHistory) },
    { key: 5, name: 'receipt', type: signedObject(LIMITS.maxSyncSize), optional: true },
    // Provenance tokens the receipt carries: their indexes in `receipt.tokens`, not the tokens again.
    { key: 6, name: 'receiptTokens', type: array(uint(LIMITS.maxTokens - 1), LIMITS.maxTokens, 1), optional: true },
    // History left out (SPEC §3.8): the payload hash of the last transfer omitted; `history` holds those after it.
    { key: 7, name: 'after', type: hash32, optional: true },
  ],
});
export type Handover = Infer<typeof HandoverSchema>;

/** A terminal's signed batch of handovers. */
export const BatchSchema = defineSchema({
  name: 'Batch',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'terminal', type: kid },
    { key: 2, name: 'seq', type: uint(MAX_UINT, 1) },
    { key: 3, name: 'time', type: time },
    { key: 4, name: 'chain', type: array(signedObject(LIMITS.maxCertificateSize), LIMITS.maxChainCerts, 1) },
    { key: 5, name: 'handovers', type: array(bytesUpTo(LIMITS.maxHandoverSize), LIMITS.maxBatchHandovers) },
    { key: 6, name: 'crlVersion', type: uint(MAX_UINT) },
    // Voids and refunds of the terminal's own payments (SPEC §7.7.3); absent when there are none.
    {
      key: 7,
      name: 'adjustments',
      type: array(signedObject(LIMITS.maxAdjustmentSize), LIMITS.maxBatchAdjustments, 1),
      optional: true,
    },
  ],
});
export type Batch = Infer<typeof BatchSchema>;

/** Kinds of {@link Adjustment}. */
export const AdjustmentKind = { VOID: 1, REFUND: 2 } as const;
export type AdjustmentKind = (typeof AdjustmentKind)[keyof typeof AdjustmentKind];

/**
 * A terminal's signed void or refund of one of its own payments (SPEC §3.10, §7.7.3),
 * carried in a {@link BatchSchema | Batch} to the ledger, which answers it with an Outcome.
 */
export const AdjustmentSchema = defineSchema({
  name: 'Adjustment',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'kind', type: uint(2, 1) },
    { key: 2, name: 'id', type: bytes(16) },
    { key: 3, name: 'terminal', type: kid },
    { key: 4, name: 'transfer', type: hash32 },
    { key: 5, name: 'card', type: kid },
    { key: 6, name: 'amount', type: uint(MAX_UINT, 1) },
    { key: 7, name: 'currency', type: currency },
    { key: 8, name: 'time', type: time },
    { key: 9, name: 'reference', type: text(64), optional: true },
  ],
});
export type Adjustment = Infer<typeof AdjustmentSchema>;

/** Outcome status codes. */
export const OutcomeStatus = { SETTLED: 1, ALREADY_SETTLED: 2, DOUBLE_SPEND: 3, INVALID: 4, VOIDED: 5, REFUNDED: 6 } as const;
export type OutcomeStatus = (typeof OutcomeStatus)[keyof typeof OutcomeStatus];

/** The ledger's signed verdict on one transfer. */
export const OutcomeSchema = defineSchema({
  name: 'Outcome',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'transfer', type: hash32 },
    { key: 2, name: 'status', type: uint(6, 1) },
    { key: 3, name: 'covered', type: bool() },
    { key: 4, name: 'code', type: text(64), optional: true },
    { key: 5, name: 'proof', type: array(signedObject(LIMITS.maxTransferSize), 2, 2), optional: true },
    { key: 6, name: 'time', type: time },
    { key: 7, name: 'card', type: kid },
    { key: 8, name: 'terminal', type: kid },
    { key: 9, name: 'amount', type: uint(MAX_UINT) },
    // Set on the outcome of an Adjustment (SPEC §7.7.3): that adjustment's id.
    { key: 10, name: 'adjustment', type: bytes(16), optional: true },
  ],
});
export type Outcome = Infer<typeof OutcomeSchema>;

/** The ledger's signed list of revoked card keys. */
export const RevocationListSchema = defineSchema({
  name: 'RevocationList',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'version', type: uint(MAX_UINT) },
    { key: 2, name: 'issued', type: time },
    { key: 3, name: 'revoked', type: array(kid, LIMITS.maxRevoked) },
    { key: 4, name: 'nextUpdate', type: time, optional: true },
  ],
});
export type RevocationList = Infer<typeof RevocationListSchema>;

/** The card's signed sync request (online only). Consumes one counter value. */
export const SyncRequestSchema = defineSchema({
  name: 'SyncRequest',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'card', type: kid },
    { key: 2, name: 'counter', type: uint(MAX_UINT, 1) },
    { key: 3, name: 'prev', type: hash32 },
    { key: 4, name: 'history', type: array(signedObject(LIMITS.maxTransferSize), LIMITS.maxHistory) },
    { key: 5, name: 'holdings', type: array(bytesOneOf(16, 32), LIMITS.maxTokens) },
    { key: 6, name: 'balance', type: amount },
    { key: 7, name: 'challenge', type: nonce },
  ],
});
export type SyncRequest = Infer<typeof SyncRequestSchema>;

/** The ledger's signed sync receipt: fresh tokens; the card's chain restarts from its hash. */
export const SyncReceiptSchema = defineSchema({
  name: 'SyncReceipt',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'card', type: kid },
    { key: 2, name: 'counter', type: uint(MAX_UINT, 1) },
    { key: 3, name: 'request', type: hash32 },
    { key: 4, name: 'tokens', type: array(signedObject(LIMITS.maxTokenSize), LIMITS.maxTokens) },
    { key: 5, name: 'time', type: time },
    { key: 6, name: 'loaded', type: amount },
    { key: 7, name: 'voided', type: array(hash32, LIMITS.maxHistory) },
    // Set only when the ledger moved the card's value to its issuing bank (revoked card):
    // the card's key is not trusted with fresh tokens, the owner is paid out by the bank.
    { key: 8, name: 'redeemed', type: uint(MAX_UINT, 1), optional: true },
    // Value credited back by merchant refunds (SPEC §7.7.3), included in the tokens; absent when none.
    { key: 9, name: 'refunded', type: uint(MAX_UINT, 1), optional: true },
  ],
});
export type SyncReceipt = Infer<typeof SyncReceiptSchema>;

/**
 * Every top-level message with its COSE content type (signed) or none (container).
 * `contentFormat` is what a signer puts in the protected header (SPEC §4.1): an unsigned
 * integer from the CoAP Content-Format range for experimental use (65000..65535), 3 bytes
 * instead of the 25..30 of the text `contentType`. A verifier accepts either for the message,
 * so objects signed with the text form before (certificates, tokens, receipts) stay valid.
 */
export const MESSAGES = {
  Certificate: {
    schema: CertificateSchema,
    contentType: 'application/dt.cert+cwt',
    contentFormat: 65001,
    maxSize: LIMITS.maxCertificateSize,
  },
  Token: { schema: TokenSchema, contentType: 'application/dt.token+cbor', contentFormat: 65002, maxSize: LIMITS.maxTokenSize },
  PaymentRequest: {
    schema: PaymentRequestSchema,
    contentType: 'application/dt.payreq+cbor',
    contentFormat: 65003,
    maxSize: LIMITS.maxPaymentRequestSize,
  },
  Transfer: { schema: TransferSchema, contentType: 'application/dt.transfer+cbor', contentFormat: 65004, maxSize: LIMITS.maxTransferSize },
  Handover: { schema: HandoverSchema, contentType: null, contentFormat: null, maxSize: LIMITS.maxHandoverSize },
  Batch: { schema: BatchSchema, contentType: 'application/dt.batch+cbor', contentFormat: 65005, maxSize: LIMITS.maxBatchSize },
  Outcome: { schema: OutcomeSchema, contentType: 'application/dt.outcome+cbor', contentFormat: 65006, maxSize: LIMITS.maxOutcomeSize },
  RevocationList: {
    schema: RevocationListSchema,
    contentType: 'application/dt.crl+cbor',
    contentFormat: 65007,
    maxSize: LIMITS.maxRevocationListSize,
  },
  SyncRequest: { schema: SyncRequestSchema, contentType: 'application/dt.syncreq+cbor', contentFormat: 65008, maxSize: LIMITS.maxSyncSize },
  SyncReceipt: {
    schema: SyncReceiptSchema,
    contentType: 'application/dt.syncrcpt+cbor',
    contentFormat: 65009,
    maxSize: LIMITS.maxSyncSize,
  },
  Adjustment: {
    schema: AdjustmentSchema,
    contentType: 'application/dt.adjustment+cbor',
    contentFormat: 65010,
    maxSize: LIMITS.maxAdjustmentSize,
  },
} as const;
export type MessageName = keyof typeof MESSAGES;
/** Messages that are signed (COSE_Sign1). */
export type SignedMessageName = { [K in MessageName]: (typeof MESSAGES)[K]['contentType'] extends string ? K : never }[MessageName];
/** The TypeScript type of message `N`. */
export type MessageOf<N extends MessageName> = Infer<(typeof MESSAGES)[N]['schema']>;

/** Currency code of the Digital Tenge (ISO 4217 KZT). */
export const CURRENCY_KZT = 398;
export { int };
