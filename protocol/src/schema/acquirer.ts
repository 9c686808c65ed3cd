/**
 * The acquirer's terminal-facing wire objects (SPEC.md §7.7.1): the batch
 * acknowledgement, the page of outcomes, and the signed `DT-COSE`
 * authorization of terminal reads. They belong to the acquirer's HTTP API,
 * not to the card or ledger messages of {@link MESSAGES}, so they are kept
 * out of that table (and of the test vectors); both the acquirer
 * (`@dt/acquirer`) and the terminal (`@dt/terminal`) use these definitions,
 * so the two sides cannot drift apart.
 *
 * Pure: runs wherever the rest of the protocol package runs.
 *
 * @module
 */
import { fromBase64Url, toBase64Url } from '../bytes.ts';
import { decodeDeterministic, encodeDeterministic, type CborValue } from '../cbor/deterministic.ts';
import { coseSign1, decodeCoseSign1, type CoseSign1, type Signer } from '../cose/sign1.ts';
import { DtError, ErrorCode } from '../errors.ts';
import {
  array,
  bool,
  bytes,
  bytesUpTo,
  decodeStruct,
  defineSchema,
  encodeStruct,
  text,
  uint,
  MAX_UINT,
  VERSION_1,
  type Infer,
} from './dsl.ts';
import { LIMITS } from './messages.ts';

// ---------------------------------------------------------------- constants
/** Bounds of the acquirer wire objects; decoders reject anything beyond them. */
export const ACQUIRER_LIMITS = {
  /** Most outcomes in one {@link OutcomePage}. */
  maxOutcomePage: 10_000,
  /** Largest encoded {@link BatchAck} accepted by {@link decodeBatchAck}. */
  maxBatchAckSize: 256,
  /** Largest encoded {@link OutcomePage}: a full page of the largest outcomes plus overhead. */
  maxOutcomePageSize: 10_000 * (LIMITS.maxOutcomeSize + 32) + 64,
  /** Largest authorization COSE_Sign1, and largest payload in it (bytes). */
  maxAuthSize: 1024,
  /** Largest base64url token in an `Authorization: DT-COSE` header (characters). */
  maxAuthHeaderChars: 2048,
  /** Longest HTTP method in a {@link RequestAuth} (UTF-8 bytes). */
  maxAuthMethod: 16,
  /** Longest request target in a {@link RequestAuth} (UTF-8 bytes). */
  maxAuthTarget: 512,
  /** Default accepted distance between a {@link RequestAuth} time and the acquirer clock (seconds). */
  authSkewSeconds: 300,
  /** Most batches in one {@link SettleRequest}. */
  maxSettleBatches: 64,
  /** Largest signed {@link SettleRequest} (bytes): what the ledger accepts as one settle body. */
  maxSettleSize: 128 * 1024 * 1024,
  /** Default accepted distance between a {@link SettleRequest} time and the ledger clock (seconds). */
  settleSkewSeconds: 300,
} as const;

/** COSE content type of a signed {@link SettleRequest} (acquirer to ledger). */
export const SETTLE_CONTENT_TYPE = 'application/dt.settle+cbor';

/** COSE content type of a signed {@link RequestAuth}. */
export const ACQUIRER_AUTH_CONTENT_TYPE = 'application/dt.acq-auth+cbor';
/** Scheme name of the `Authorization` header of signed terminal reads. */
export const ACQUIRER_AUTH_SCHEME = 'DT-COSE';

/** HTTP media types of the acquirer API bodies. */
export const ACQUIRER_MEDIA_TYPES = {
  /** A signed object (COSE_Sign1): the body of `POST /v1/batches` and the answer of `GET /v1/crl`. */
  cose: 'application/cose',
  /** Plain deterministic CBOR: a {@link BatchAck} or an {@link OutcomePage} answer. */
  cbor: 'application/cbor',
} as const;

// ---------------------------------------------------------------- BatchAck
/** Schema of the answer to `POST /v1/batches` (a new batch or an identical resend). */
export const BatchAckSchema = defineSchema({
  name: 'BatchAck',
  fields: [
    { key: 1, name: 'terminal', type: bytes(16) },
    { key: 2, name: 'seq', type: uint(MAX_UINT, 1) },
    { key: 3, name: 'hash', type: bytes(32) },
    { key: 4, name: 'handovers', type: uint(LIMITS.maxBatchHandovers) },
    { key: 5, name: 'received', type: uint(MAX_UINT) },
    // Number of adjustments (voids, refunds) in the batch; absent when 0 (SPEC §7.7.1).
    { key: 6, name: 'adjustments', type: uint(LIMITS.maxBatchAdjustments), optional: true },
  ],
});
/**
 * A batch acknowledgement: terminal key id, batch seq, SHA-256 of the signed batch bytes, handover count,
 * storage time (s), and the adjustment count (absent = 0).
 */
export type BatchAck = Infer<typeof BatchAckSchema>;

/** Encodes a batch acknowledgement (deterministic CBOR). */
export function encodeBatchAck(a: BatchAck): Uint8Array {
  return encodeDeterministic(encodeStruct(BatchAckSchema, a));
}

/** Decodes a batch acknowledgement (bounded by {@link ACQUIRER_LIMITS}.maxBatchAckSize). */
export function decodeBatchAck(b: Uint8Array): BatchAck {
  return decodeStruct(BatchAckSchema, decodeDeterministic(b, ACQUIRER_LIMITS.maxBatchAckSize));
}

// ---------------------------------------------------------------- OutcomePage
/** Schema of the answer to `GET /v1/terminals/:kid/outcomes`. */
export const OutcomePageSchema = defineSchema({
  name: 'OutcomePage',
  fields: [
    { key: 1, name: 'outcomes', type: array(bytesUpTo(LIMITS.maxOutcomeSize), ACQUIRER_LIMITS.maxOutcomePage) },
    { key: 2, name: 'cursor', type: uint(MAX_UINT) },
    { key: 3, name: 'refs', type: array(array(uint(MAX_UINT), 2, 2), ACQUIRER_LIMITS.maxOutcomePage) },
    { key: 4, name: 'more', type: bool() },
  ],
});

/** A page of outcomes for one terminal. */
export interface OutcomePage {
  /** Ledger-signed Outcome objects, oldest first (not verified by the decoder). */
  readonly outcomes: Uint8Array[];
  /** Cursor to pass as `?after=` next time. */
  readonly cursor: number;
  /**
   * For each outcome: [batch seq, i]: i < the batch's handover count names handover i,
   * i = handovers + j names adjustment j (SPEC §7.7.1).
   */
  readonly refs: Array<[number, number]>;
  /** True when more outcomes wait (ask again at once). */
  readonly more: boolean;
}

function checkRefs(p: { outcomes: readonly unknown[]; refs: readonly unknown[] }): void {
  if (p.refs.length !== p.outcomes.length)
    throw new DtError(ErrorCode.SCHEMA_OUT_OF_RANGE, 'outcome page: refs and outcomes differ in length');
}

/** Encodes a page of outcomes (deterministic CBOR); refuses refs that do not pair with the outcomes. */
export function encodeOutcomePage(p: OutcomePage): Uint8Array {
  checkRefs(p);
  return encodeDeterministic(
    encodeStruct(OutcomePageSchema, { outcomes: p.outcomes, cursor: p.cursor, refs: p.refs, more: p.more }) as CborValue,
  );
}

/** Decodes a page of outcomes (bounded; the outcomes themselves are still unverified). */
export function decodeOutcomePage(b: Uint8Array): OutcomePage {
  const v = decodeStruct(OutcomePageSchema, decodeDeterministic(b, ACQUIRER_LIMITS.maxOutcomePageSize));
  checkRefs(v);
  return { outcomes: v.outcomes, cursor: v.cursor, refs: v.refs.map((r) => [r[0]!, r[1]!] as [number, number]), more: v.more };
}

// ---------------------------------------------------------------- RequestAuth (DT-COSE)
/** Schema of the signed authorization payload of a terminal read. */
export const RequestAuthSchema = defineSchema({
  name: 'RequestAuth',
  fields: [
    { key: 1, name: 'method', type: text(ACQUIRER_LIMITS.maxAuthMethod) },
    { key: 2, name: 'target', type: text(ACQUIRER_LIMITS.maxAuthTarget) },
    { key: 3, name: 'time', type: uint(MAX_UINT) },
    { key: 4, name: 'nonce', type: bytes(16) },
  ],
});
/** What a terminal signs to authorize one request: method, target (path and query as sent), time (s), 16-byte nonce. */
export type RequestAuth = Infer<typeof RequestAuthSchema>;

/**
 * Builds the `Authorization` header value (`DT-COSE <base64url(COSE_Sign1)>`)
 * for one terminal request. Use a fresh random nonce for every request,
 * retries included: the acquirer refuses a nonce it has seen.
 *
 * @example
 * const header = signAcquirerRequest(terminalSigner, 'GET', `/v1/terminals/${kidHex}/outcomes?after=0`, nowSeconds, randomNonce16);
 */
export function signAcquirerRequest(signer: Signer, method: string, target: string, time: number, nonce: Uint8Array): string {
  const payload = encodeDeterministic(encodeStruct(RequestAuthSchema, { method, target, time, nonce }));
  return `${ACQUIRER_AUTH_SCHEME} ${toBase64Url(coseSign1(payload, ACQUIRER_AUTH_CONTENT_TYPE, signer))}`;
}

/** A parsed, NOT yet verified authorization. */
export interface ParsedAcquirerAuth {
  /** The COSE_Sign1 (kid names the claimed terminal; the signature is not checked yet). */
  readonly cose: CoseSign1;
  /** Its decoded payload. */
  readonly auth: RequestAuth;
}

/**
 * Parses an `Authorization` header value; throws a {@link DtError} on anything
 * malformed. Does not verify the signature, the terminal, the request match,
 * the time or the nonce: SPEC.md §7.7.1 lists what the acquirer checks next.
 */
export function parseAcquirerAuth(header: string): ParsedAcquirerAuth {
  const m = /^DT-COSE ([A-Za-z0-9_-]+)$/.exec(header);
  if (!m || m[1]!.length > ACQUIRER_LIMITS.maxAuthHeaderChars) throw new DtError(ErrorCode.COSE_MALFORMED, 'not a DT-COSE authorization');
  const cose = decodeCoseSign1(fromBase64Url(m[1]!), ACQUIRER_LIMITS.maxAuthSize);
  if (cose.contentType !== ACQUIRER_AUTH_CONTENT_TYPE)
    throw new DtError(ErrorCode.COSE_WRONG_CONTENT_TYPE, `expected ${ACQUIRER_AUTH_CONTENT_TYPE}`);
  const auth = decodeStruct(RequestAuthSchema, decodeDeterministic(cose.payload, ACQUIRER_LIMITS.maxAuthSize));
  return { cose, auth };
}

// ---------------------------------------------------------------- SettleRequest (acquirer -> ledger)
/**
 * Schema of the acquirer's signed settle request (SPEC.md §7.7.2): the ledger settles only
 * batches that an acquirer certified by the terminals' acquiring bank signed for.
 */
export const SettleRequestSchema = defineSchema({
  name: 'SettleRequest',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'chain', type: array(bytesUpTo(LIMITS.maxCertificateSize, 16), LIMITS.maxChainCerts, 1) },
    { key: 2, name: 'time', type: uint(MAX_UINT) },
    { key: 3, name: 'nonce', type: bytes(16) },
    { key: 4, name: 'batches', type: array(bytesUpTo(LIMITS.maxBatchSize, 16), ACQUIRER_LIMITS.maxSettleBatches, 1) },
  ],
});
/** An acquirer's settle request: its chain `[acquirer cert, bank cert]`, time (s), a fresh 16-byte nonce, the signed batches. */
export type SettleRequest = Infer<typeof SettleRequestSchema>;

/**
 * Signs a settle request with the acquirer's key (COSE_Sign1, ES256, `kid` = the acquirer's key id).
 *
 * @example
 * const body = signSettleRequest({ chain: [acquirerCert, bankCert], time: nowSeconds, nonce: random16, batches }, acquirerSigner);
 */
export function signSettleRequest(r: SettleRequest, signer: Signer): Uint8Array {
  const payload = encodeDeterministic(encodeStruct(SettleRequestSchema, r));
  return coseSign1(payload, SETTLE_CONTENT_TYPE, signer);
}

/** A parsed, NOT yet verified settle request. */
export interface ParsedSettleRequest {
  readonly cose: CoseSign1;
  readonly request: SettleRequest;
}

/**
 * Parses a signed settle request (bounded by {@link ACQUIRER_LIMITS}.maxSettleSize); throws a
 * {@link DtError} on anything malformed. Verifies nothing: the ledger checks the acquirer's chain,
 * the signature, the time, the nonce and each batch's bank (SPEC.md §7.7.2).
 */
export function parseSettleRequest(bytes: Uint8Array): ParsedSettleRequest {
  const cose = decodeCoseSign1(bytes, ACQUIRER_LIMITS.maxSettleSize);
  if (cose.contentType !== SETTLE_CONTENT_TYPE) throw new DtError(ErrorCode.COSE_WRONG_CONTENT_TYPE, `expected ${SETTLE_CONTENT_TYPE}`);
  const request = decodeStruct(SettleRequestSchema, decodeDeterministic(cose.payload, ACQUIRER_LIMITS.maxSettleSize));
  return { cose, request };
}

/** The acquirer wire schemas (outside {@link MESSAGES}: not signed protocol messages), for tooling and SPEC checks. */
export const ACQUIRER_SCHEMAS = [BatchAckSchema, OutcomePageSchema, RequestAuthSchema, SettleRequestSchema] as const;
