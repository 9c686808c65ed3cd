/**
 * Generates the DT protocol test vectors (`protocol/vectors/*.json`).
 *
 * Everything is deterministic, so running the generator twice gives
 * byte-identical files and `test/vectors-fresh.test.ts` can prove that the
 * committed vectors are exactly what the current code produces:
 * - keys are derived from fixed labels: the private scalar is
 *   SHA-256("DT test vector key: " || label) (see {@link vectorKey});
 * - ES256 signatures use RFC 6979 deterministic nonces (noble);
 * - times, nonces and serials are fixed or derived from labels.
 *
 * The private keys are TEST KEYS, published on purpose so that foreign
 * implementations can re-create every signature. Never use them for anything else.
 *
 * Usage: `npm run vectors -w protocol` (writes the files), or
 * `node --import tsx scripts/gen-vectors.ts --check` (exits 1 when the
 * committed files differ from what would be generated).
 *
 * The JSON format is described in `protocol/vectors/README.md`.
 *
 * @module
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { VECTORS_DIR } from './vectors-lib.ts';
import {
  CertClaim,
  COSE_SIGN1_TAG,
  CURRENCY_KZT,
  Cvm,
  ErrorCode,
  GENESIS_PREV,
  LIMITS,
  MESSAGES,
  OutcomeStatus,
  AdjustmentKind,
  P256_N,
  Role,
  BankPermission,
  coseSign1,
  decodeDeterministic,
  encodeDeterministic,
  encodeMessage,
  encodeStruct,
  issueCertificate,
  keyId,
  keyPairSigner,
  openSigned,
  outputId,
  payloadHash,
  protectedHeader,
  publicKeyCoordinates,
  publicKeyOf,
  sha256,
  sign,
  sigStructure,
  signMessage,
  toHex,
  utf8,
  concatBytes,
  type CborMap,
  type CborValue,
  type MessageName,
  type MessageOf,
  type SignedMessageName,
  type Signer,
  type StructSchema,
} from '../src/index.ts';

// ------------------------------------------------------------------ keys

/** A published test key. */
export interface VectorKey {
  readonly name: string;
  readonly secretKey: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly kid: Uint8Array;
  readonly signer: Signer;
}

/** Label prefix of the key derivation; part of the vector format, never change it. */
export const KEY_LABEL_PREFIX = 'DT test vector key: ';

/** Derives the test key `name`: private scalar = SHA-256(prefix || name). */
export function vectorKey(name: string): VectorKey {
  const secretKey = sha256(utf8(KEY_LABEL_PREFIX + name));
  const publicKey = publicKeyOf(secretKey); // throws BAD_KEY for the (2^-128 likely) invalid scalar
  return { name, secretKey, publicKey, kid: keyId(publicKey), signer: keyPairSigner({ secretKey, publicKey }) };
}

/** Fixed 16 or 32 bytes derived from a label (nonces, serials, challenges). */
function fixedBytes(label: string, length: number): Uint8Array {
  return sha256(utf8('DT test vector bytes: ' + label)).slice(0, length);
}

function keyJson(k: VectorKey): Record<string, string> {
  const { x, y } = publicKeyCoordinates(k.publicKey);
  return {
    name: k.name,
    privateKey: toHex(k.secretKey),
    publicKey: toHex(k.publicKey),
    x: toHex(x),
    y: toHex(y),
    kid: toHex(k.kid),
  };
}

/** JSON form of a decoded message: bytes as lower-case hex, numbers as JSON numbers (all ≤ 2^53-1). */
export function toJsonValue(v: unknown): unknown {
  if (v instanceof Uint8Array) return toHex(v);
  if (Array.isArray(v)) return v.map(toJsonValue);
  if (typeof v === 'bigint') return '0x' + v.toString(16);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = toJsonValue(x);
    return out;
  }
  return v;
}

// ------------------------------------------------------------------ fixed scenario

/** 2026-01-01T00:00:00Z. */
export const T0 = 1_767_225_600;
const DAY = 86_400;
const YEAR = 365 * DAY;
/** Time of the payments in the vectors (2026-05-28T20:26:40Z), inside every certificate's validity. */
export const T_PAY = 1_780_000_000;

const keys = {
  root: vectorKey('issuer-root'),
  ledger: vectorKey('ledger'),
  issuingBank: vectorKey('issuing-bank'),
  acquiringBank: vectorKey('acquiring-bank'),
  card: vectorKey('card-1'),
  terminal: vectorKey('terminal-1'),
  // Only in invalid vectors:
  rogueRoot: vectorKey('rogue-root'),
  other: vectorKey('unrelated-key'),
  issuingBank2: vectorKey('issuing-bank-2'),
  card2: vectorKey('card-2'),
};

const rootTemplate = {
  iss: 'DT Issuer Root',
  sub: 'DT Issuer Root',
  nbf: T0,
  iat: T0,
  exp: T0 + 10 * YEAR,
  role: Role.ISSUER,
  currency: CURRENCY_KZT,
  publicKey: keys.root.publicKey,
};
const rootCert = issueCertificate(rootTemplate, keys.root.signer);
const ledgerCert = issueCertificate(
  {
    iss: 'DT Issuer Root',
    sub: 'DT Ledger 1',
    nbf: T0,
    iat: T0,
    exp: T0 + 5 * YEAR,
    role: Role.LEDGER,
    currency: CURRENCY_KZT,
    publicKey: keys.ledger.publicKey,
  },
  keys.root.signer,
);
const issuingBankCert = issueCertificate(
  {
    iss: 'DT Issuer Root',
    sub: 'Halyk Test Issuing',
    nbf: T0,
    iat: T0,
    exp: T0 + 5 * YEAR,
    role: Role.BANK,
    perms: BankPermission.ISSUING,
    currency: CURRENCY_KZT,
    publicKey: keys.issuingBank.publicKey,
  },
  keys.root.signer,
);
const acquiringBankCert = issueCertificate(
  {
    iss: 'DT Issuer Root',
    sub: 'Kaspi Test Acquiring',
    nbf: T0,
    iat: T0,
    exp: T0 + 5 * YEAR,
    role: Role.BANK,
    perms: BankPermission.ACQUIRING,
    currency: CURRENCY_KZT,
    publicKey: keys.acquiringBank.publicKey,
  },
  keys.root.signer,
);
const cardLimits = { perPayment: 5_000_000, offlineTotal: 20_000_000, offlineCount: 10, cvmLimit: 1_000_000 };
const cardTemplate = {
  iss: 'Halyk Test Issuing',
  sub: 'card 0001',
  nbf: T0 + DAY,
  iat: T0 + DAY,
  exp: T0 + 3 * YEAR,
  role: Role.CARD,
  limits: cardLimits,
  currency: CURRENCY_KZT,
  publicKey: keys.card.publicKey,
};
const cardCert = issueCertificate(cardTemplate, keys.issuingBank.signer);
const merchant = { id: 'KZ-ALM-000123', mcc: 5812, name: 'Canteen No. 5, Almaty' };
const terminalTemplate = {
  iss: 'Kaspi Test Acquiring',
  sub: 'POS 7',
  nbf: T0 + DAY,
  iat: T0 + DAY,
  exp: T0 + 3 * YEAR,
  role: Role.TERMINAL,
  merchant,
  currency: CURRENCY_KZT,
  publicKey: keys.terminal.publicKey,
};
const terminalCert = issueCertificate(terminalTemplate, keys.acquiringBank.signer);
const cardChain = [cardCert, issuingBankCert];
const terminalChain = [terminalCert, acquiringBankCert];

// ------------------------------------------------------------------ vector records

/** One valid vector. */
interface ValidVector {
  name: string;
  description: string;
  hex: string;
  signer?: Record<string, string>;
  protected?: string;
  payload?: string;
  signature?: string;
  sigStructure?: string;
  payloadHash?: string;
  outputIds?: string[];
  decoded: unknown;
}

/** One invalid vector. */
interface InvalidVector {
  name: string;
  description: string;
  call: 'decodeCbor' | 'decode' | 'verifySigned' | 'verifyRoot' | 'verifyChain';
  hex?: string;
  params: Record<string, unknown>;
  error: ErrorCode;
}

const FILE_OF: Record<MessageName, string> = {
  Certificate: 'certificate.json',
  Token: 'token.json',
  PaymentRequest: 'payment-request.json',
  Transfer: 'transfer.json',
  Handover: 'handover.json',
  Batch: 'batch.json',
  Outcome: 'outcome.json',
  RevocationList: 'revocation-list.json',
  SyncRequest: 'sync-request.json',
  SyncReceipt: 'sync-receipt.json',
  Adjustment: 'adjustment.json',
};

function signedValid<N extends SignedMessageName>(
  name: N,
  vname: string,
  description: string,
  value: MessageOf<N>,
  signerKey: VectorKey,
  bytes?: Uint8Array,
): ValidVector {
  const hex = bytes ?? signMessage(name, value, signerKey.signer);
  const { cose, message } = openSigned(name, hex);
  return {
    name: vname,
    description,
    hex: toHex(hex),
    signer: keyJson(signerKey),
    protected: toHex(cose.protectedBytes),
    payload: toHex(cose.payload),
    signature: toHex(cose.signature),
    sigStructure: toHex(sigStructure(cose.protectedBytes, cose.payload)),
    payloadHash: toHex(payloadHash(cose)),
    // Transfers: the ids of their outputs, outputId(payloadHash, index) (SHA-256("DT-OUTPUT-V1" || hash || index)).
    ...(name === 'Transfer'
      ? { outputIds: (message as MessageOf<'Transfer'>).outputs.map((_, i) => toHex(outputId(payloadHash(cose), i))) }
      : {}),
    decoded: toJsonValue(message),
  };
}

// ------------------------------------------------------------------ raw (evil) CBOR

/** A CBOR head with the argument forced to `width` extra bytes (0 = in the initial byte). */
function head(major: number, value: number | bigint, width?: 0 | 1 | 2 | 4 | 8): Uint8Array {
  const v = BigInt(value);
  const w = width ?? (v < 24n ? 0 : v < 256n ? 1 : v < 65536n ? 2 : v < 4294967296n ? 4 : 8);
  if (w === 0) return Uint8Array.of((major << 5) | Number(v));
  const out = new Uint8Array(1 + w);
  out[0] = (major << 5) | { 1: 24, 2: 25, 4: 26, 8: 27 }[w];
  for (let i = 0; i < w; i++) out[w - i] = Number((v >> BigInt(8 * i)) & 255n);
  return out;
}

/** A map from already encoded keys and values, in the given order (no sorting, duplicates kept). */
function rawMap(entries: ReadonlyArray<readonly [Uint8Array, Uint8Array]>): Uint8Array {
  return concatBytes(head(5, entries.length), ...entries.flatMap(([k, v]) => [k, v]));
}

function enc(v: CborValue): Uint8Array {
  return encodeDeterministic(v);
}

/** The canonical entries of a map, encoded and sorted as deterministic encoding sorts them. */
function canonicalEntries(m: CborMap): Array<[Uint8Array, Uint8Array]> {
  const sorted = decodeDeterministic(enc(m)) as CborMap;
  return [...sorted].map(([k, v]) => [enc(k), enc(v)]);
}

function float64(x: number): Uint8Array {
  const out = new Uint8Array(9);
  out[0] = 0xfb;
  new DataView(out.buffer).setFloat64(1, x);
  return out;
}

/** Builds a tagged COSE_Sign1 from parts without any checks (for invalid vectors). */
function rawSign1(prot: Uint8Array, unprot: Uint8Array, payload: Uint8Array, signature: Uint8Array, tag = COSE_SIGN1_TAG): Uint8Array {
  return concatBytes(
    head(6, tag),
    head(4, 4),
    head(2, prot.length),
    prot,
    unprot,
    head(2, payload.length),
    payload,
    head(2, signature.length),
    signature,
  );
}

/** Signs arbitrary payload bytes with a valid ES256 header (the payload may be invalid on purpose). */
function signRaw(payload: Uint8Array, contentType: string | number, k: VectorKey): Uint8Array {
  return coseSign1(payload, contentType, k.signer);
}

// ------------------------------------------------------------------ generic invalid vectors for signed messages

interface SignedSpec<N extends SignedMessageName> {
  readonly name: N;
  /** The valid message the mutations start from. */
  readonly base: MessageOf<N>;
  readonly signer: VectorKey;
  /** A required non-constant field key to delete, a uint field to break. */
  readonly missingKey: number;
  readonly uintKey: number;
  /** A change that leaves the types right but a value out of its range. */
  readonly outOfRange: readonly [number, CborValue, string];
  /** Whether an oversize vector is small enough to publish. */
  readonly oversize: boolean;
}

function versionKey(name: MessageName): number {
  return name === 'Certificate' ? CertClaim.VERSION : 0;
}

function invalidSigned<N extends SignedMessageName>(spec: SignedSpec<N>): InvalidVector[] {
  const { name, signer } = spec;
  const def = MESSAGES[name];
  const ct = def.contentFormat;
  const pk = toHex(signer.publicKey);
  const base = encodeStruct(def.schema as StructSchema, spec.base as never);
  const good = signMessage(name, spec.base, signer.signer);
  const goodCose = openSigned(name, good).cose;
  const out: InvalidVector[] = [];
  const vs = (vname: string, description: string, bytes: Uint8Array, error: ErrorCode, publicKey = pk) =>
    out.push({ name: vname, description, call: 'verifySigned', hex: toHex(bytes), params: { message: name, publicKey }, error });
  const dec = (vname: string, description: string, bytes: Uint8Array, error: ErrorCode) =>
    out.push({ name: vname, description, call: 'decode', hex: toHex(bytes), params: { message: name }, error });
  const withMap = (f: (m: CborMap) => void): Uint8Array => {
    const m: CborMap = new Map(base);
    f(m);
    return signRaw(enc(m), ct, signer);
  };
  const entries = canonicalEntries(base);
  const idx = (key: number) => entries.findIndex(([k]) => toHex(k) === toHex(enc(key)));
  const replaceValue = (key: number, value: Uint8Array) => {
    const e = entries.map(([k, v]) => [k, v] as [Uint8Array, Uint8Array]);
    const i = idx(key);
    if (i < 0) throw new Error(`${name}: no key ${key}`);
    e[i] = [e[i]![0], value];
    return signRaw(rawMap(e), ct, signer);
  };
  const uintValue = base.get(spec.uintKey);
  if (typeof uintValue !== 'number') throw new Error(`${name}: key ${spec.uintKey} is not a uint`);

  // --- CBOR level, inside a correctly signed payload: the payload is judged before the signature.
  vs(
    'payload-unsorted-keys',
    'payload map keys in reverse order (signed correctly)',
    signRaw(rawMap([...entries].reverse()), ct, signer),
    ErrorCode.CBOR_NON_DETERMINISTIC,
  );
  vs(
    'payload-non-shortest-int',
    `payload key ${spec.uintKey} written with an 8-byte argument`,
    replaceValue(spec.uintKey, head(0, uintValue, 8)),
    ErrorCode.CBOR_NON_DETERMINISTIC,
  );
  vs(
    'payload-indefinite-map',
    'payload map with indefinite length (0xbf ... 0xff)',
    signRaw(concatBytes(Uint8Array.of(0xbf), ...entries.flat(), Uint8Array.of(0xff)), ct, signer),
    ErrorCode.CBOR_NON_DETERMINISTIC,
  );
  {
    const last = entries[entries.length - 1]!;
    vs(
      'payload-duplicate-key',
      'payload map repeats its last key with the same value',
      signRaw(concatBytes(head(5, entries.length + 1), ...entries.flat(), ...last), ct, signer),
      ErrorCode.CBOR_DUPLICATE_KEY,
    );
    vs(
      'payload-duplicate-key-non-shortest',
      'payload map repeats its first key, the copy written non-shortest',
      signRaw(
        concatBytes(head(5, entries.length + 1), ...entries.flat(), rewriteKeyNonShortest(entries[0]![0]), entries[0]![1]),
        ct,
        signer,
      ),
      ErrorCode.CBOR_DUPLICATE_KEY,
    );
  }
  vs(
    'payload-float',
    `payload key ${spec.uintKey} written as a float64 of the same value`,
    replaceValue(spec.uintKey, float64(uintValue)),
    ErrorCode.CBOR_FORBIDDEN_TYPE,
  );
  vs(
    'payload-forbidden-tag',
    `payload key ${spec.uintKey} wrapped in tag 1 (epoch time)`,
    replaceValue(spec.uintKey, concatBytes(head(6, 1), enc(uintValue))),
    ErrorCode.CBOR_FORBIDDEN_TYPE,
  );
  vs('payload-null', `payload key ${spec.uintKey} is null`, replaceValue(spec.uintKey, Uint8Array.of(0xf6)), ErrorCode.CBOR_FORBIDDEN_TYPE);
  // --- schema level
  vs(
    'unknown-version',
    'version claim 2',
    withMap((m) => m.set(versionKey(name), 2)),
    ErrorCode.UNSUPPORTED_VERSION,
  );
  vs(
    'missing-version',
    'version claim absent',
    withMap((m) => m.delete(versionKey(name))),
    ErrorCode.UNSUPPORTED_VERSION,
  );
  vs(
    'unknown-version-with-new-field',
    'version 2 with an extra key 99 (a future version): the version is checked before unknown keys',
    withMap((m) => m.set(versionKey(name), 2).set(99, 0)),
    ErrorCode.UNSUPPORTED_VERSION,
  );
  vs(
    'wrong-type',
    `key ${spec.uintKey} is a text string instead of an unsigned integer`,
    withMap((m) => m.set(spec.uintKey, String(uintValue))),
    ErrorCode.SCHEMA_WRONG_TYPE,
  );
  vs(
    'negative-int',
    `key ${spec.uintKey} is negative`,
    withMap((m) => m.set(spec.uintKey, -1)),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  vs(
    'unknown-field',
    'extra key 99',
    withMap((m) => m.set(99, 0)),
    ErrorCode.SCHEMA_UNKNOWN_FIELD,
  );
  vs(
    'missing-field',
    `required key ${spec.missingKey} absent`,
    withMap((m) => m.delete(spec.missingKey)),
    ErrorCode.SCHEMA_MISSING_FIELD,
  );
  vs(
    'out-of-range',
    spec.outOfRange[2],
    withMap((m) => m.set(spec.outOfRange[0], spec.outOfRange[1])),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  vs('payload-not-a-map', 'payload is an array', signRaw(enc([1, 2]), ct, signer), ErrorCode.SCHEMA_WRONG_TYPE);
  // --- COSE level
  {
    const prot = enc(
      new Map<number, CborValue>([
        [1, -35],
        [3, ct],
        [4, signer.kid],
      ]),
    );
    const sig = sign(sigStructure(prot, goodCose.payload), signer.secretKey);
    vs(
      'wrong-algorithm-es384',
      'protected header alg -35 (ES384), otherwise valid and signed',
      rawSign1(prot, enc(new Map()), goodCose.payload, sig),
      ErrorCode.COSE_WRONG_ALGORITHM,
    );
    const protNoAlg = enc(
      new Map<number, CborValue>([
        [3, ct],
        [4, signer.kid],
      ]),
    );
    vs(
      'missing-algorithm',
      'protected header without alg',
      rawSign1(protNoAlg, enc(new Map()), goodCose.payload, sign(sigStructure(protNoAlg, goodCose.payload), signer.secretKey)),
      ErrorCode.COSE_WRONG_ALGORITHM,
    );
  }
  {
    const otherName = name === 'Token' ? 'Transfer' : 'Token';
    vs(
      'wrong-content-type',
      `signed with the content type of a ${otherName}`,
      signRaw(goodCose.payload, MESSAGES[otherName].contentFormat, signer),
      ErrorCode.COSE_WRONG_CONTENT_TYPE,
    );
  }
  vs('key-mismatch', 'verified with a key the kid does not name', good, ErrorCode.KEY_MISMATCH, toHex(keys.other.publicKey));
  vs(
    'signed-by-other-key',
    'kid names the expected key but another key made the signature',
    (() => {
      const prot = protectedHeader(ct, signer.kid);
      return rawSign1(prot, enc(new Map()), goodCose.payload, sign(sigStructure(prot, goodCose.payload), keys.other.secretKey));
    })(),
    ErrorCode.BAD_SIGNATURE,
  );
  {
    const bad = goodCose.signature.slice();
    bad[63] ^= 1;
    vs(
      'bad-signature',
      'last bit of s flipped',
      rawSign1(goodCose.protectedBytes, enc(new Map()), goodCose.payload, bad),
      ErrorCode.BAD_SIGNATURE,
    );
    vs(
      'high-s-signature',
      's replaced by n - s (the same signature in its malleable high-S form)',
      rawSign1(goodCose.protectedBytes, enc(new Map()), goodCose.payload, highS(goodCose.signature)),
      ErrorCode.BAD_SIGNATURE,
    );
    vs(
      'zero-signature',
      'r = s = 0',
      rawSign1(goodCose.protectedBytes, enc(new Map()), goodCose.payload, new Uint8Array(64)),
      ErrorCode.BAD_SIGNATURE,
    );
    const otherPayload = enc(new Map(base).set(spec.uintKey, uintValue + 1));
    vs(
      'payload-swapped',
      `payload changed after signing (key ${spec.uintKey} + 1)`,
      rawSign1(goodCose.protectedBytes, enc(new Map()), otherPayload, goodCose.signature),
      ErrorCode.BAD_SIGNATURE,
    );
  }
  dec('untagged', 'COSE_Sign1 array without tag 18', good.subarray(1), ErrorCode.COSE_MALFORMED);
  dec('cose-sign-tag', 'tag 98 (COSE_Sign) instead of 18', concatBytes(head(6, 98), good.subarray(1)), ErrorCode.CBOR_FORBIDDEN_TYPE);
  dec(
    'unprotected-not-empty',
    'kid repeated in the unprotected header',
    rawSign1(goodCose.protectedBytes, enc(new Map([[4, signer.kid]])), goodCose.payload, goodCose.signature),
    ErrorCode.COSE_MALFORMED,
  );
  dec(
    'short-signature',
    '63-byte signature',
    rawSign1(goodCose.protectedBytes, enc(new Map()), goodCose.payload, goodCose.signature.subarray(0, 63)),
    ErrorCode.COSE_MALFORMED,
  );
  dec(
    'short-kid',
    '15-byte kid',
    (() => {
      const prot = enc(
        new Map<number, CborValue>([
          [1, -7],
          [3, ct],
          [4, signer.kid.subarray(0, 15)],
        ]),
      );
      return rawSign1(prot, enc(new Map()), goodCose.payload, sign(sigStructure(prot, goodCose.payload), signer.secretKey));
    })(),
    ErrorCode.COSE_MALFORMED,
  );
  dec(
    'protected-unsorted',
    'protected header keys unsorted',
    (() => {
      const prot = rawMap([
        [enc(4), enc(signer.kid)],
        [enc(3), enc(ct)],
        [enc(1), enc(-7)],
      ]);
      return rawSign1(prot, enc(new Map()), goodCose.payload, sign(sigStructure(prot, goodCose.payload), signer.secretKey));
    })(),
    ErrorCode.CBOR_NON_DETERMINISTIC,
  );
  dec(
    'detached-payload',
    'payload is nil (detached content is not used by DT)',
    concatBytes(
      head(6, 18),
      head(4, 4),
      head(2, goodCose.protectedBytes.length),
      goodCose.protectedBytes,
      enc(new Map()),
      Uint8Array.of(0xf6),
      head(2, 64),
      goodCose.signature,
    ),
    ErrorCode.CBOR_FORBIDDEN_TYPE,
  );
  dec('truncated-last-byte', 'valid object without its last byte', good.subarray(0, good.length - 1), ErrorCode.CBOR_MALFORMED);
  dec('truncated-half', 'valid object cut in half', good.subarray(0, good.length >> 1), ErrorCode.CBOR_MALFORMED);
  dec('trailing-byte', 'valid object followed by 0x00', concatBytes(good, Uint8Array.of(0)), ErrorCode.CBOR_MALFORMED);
  dec('empty', 'zero bytes', new Uint8Array(0), ErrorCode.CBOR_MALFORMED);
  if (spec.oversize) {
    const payload = enc(
      new Map<number, CborValue>([
        [0, 1],
        [1, new Uint8Array(def.maxSize)],
      ]),
    );
    dec('oversize', `COSE_Sign1 larger than the ${def.maxSize}-byte limit of a ${name}`, signRaw(payload, ct, signer), ErrorCode.TOO_LARGE);
  }
  return out;
}

/** Re-encodes an integer key with a one-byte argument (non-shortest for |k| < 24). */
function rewriteKeyNonShortest(key: Uint8Array): Uint8Array {
  const k = decodeDeterministic(key) as number;
  return k >= 0 ? head(0, k, 8) : head(1, -1 - k, 8);
}

/** The high-S twin of a low-S signature: (r, n - s). */
function highS(sig: Uint8Array): Uint8Array {
  let s = 0n;
  for (let i = 32; i < 64; i++) s = (s << 8n) | BigInt(sig[i]!);
  let t = P256_N - s;
  const out = sig.slice();
  for (let i = 63; i >= 32; i--) {
    out[i] = Number(t & 255n);
    t >>= 8n;
  }
  return out;
}

// ------------------------------------------------------------------ messages of the scenario

const serialA = fixedBytes('token serial A', 16);
const serialB = fixedBytes('token serial B', 16);
const serialC = fixedBytes('token serial C (marked)', 16);

const tokenA: MessageOf<'Token'> = { serial: serialA, value: 50_000, currency: CURRENCY_KZT, owner: keys.card.kid, issued: T0 + 2 * DAY };
const tokenB: MessageOf<'Token'> = {
  serial: serialB,
  value: 25_000,
  currency: CURRENCY_KZT,
  owner: keys.card.kid,
  issued: T0 + 2 * DAY,
  expires: T0 + 2 * YEAR,
};
const tokenC: MessageOf<'Token'> = {
  serial: serialC,
  value: 120_000,
  currency: CURRENCY_KZT,
  owner: keys.card.kid,
  issued: T0 + 3 * DAY,
  expires: T0 + YEAR,
  mark: { merchants: ['KZ-ALM-000123', 'KZ-AST-000042'], mccs: [5812, 5814], hops: 1 },
};
const tokenMax: MessageOf<'Token'> = {
  serial: fixedBytes('token serial max', 16),
  value: LIMITS.maxAmount,
  currency: CURRENCY_KZT,
  owner: keys.card2.kid,
  issued: 0,
};
const signedTokenA = signMessage('Token', tokenA, keys.ledger.signer);

const nonce1 = fixedBytes('terminal nonce 1', 16);
const nonce2 = fixedBytes('terminal nonce 2', 16);
const nonce3 = fixedBytes('terminal nonce 3', 16);

const request1: MessageOf<'PaymentRequest'> = {
  amount: 12_000,
  currency: CURRENCY_KZT,
  terminal: keys.terminal.kid,
  merchant: merchant.id,
  mcc: merchant.mcc,
  nonce: nonce1,
  time: T_PAY,
  chain: terminalChain,
};
const request3: MessageOf<'PaymentRequest'> = { ...request1, amount: 38_000, nonce: nonce3, time: T_PAY + 60, retryOf: nonce2 };
// A terminal that holds the issuing bank's certificate names it (SPEC §3.6 banks): the card leaves it out (§3.8).
const requestBanks: MessageOf<'PaymentRequest'> = {
  ...request1,
  nonce: fixedBytes('terminal nonce banks', 16),
  banks: [keys.issuingBank.kid, keys.issuingBank2.kid],
};

// Transfer 1: token A (50 000) pays 12 000, change 38 000.
const transfer1: MessageOf<'Transfer'> = {
  card: keys.card.kid,
  counter: 1,
  prev: GENESIS_PREV,
  inputs: [serialA],
  outputs: [
    { value: 12_000, owner: keys.terminal.kid },
    { value: 38_000, owner: keys.card.kid },
  ],
  amount: 12_000,
  currency: CURRENCY_KZT,
  payee: keys.terminal.kid,
  merchant: merchant.id,
  mcc: merchant.mcc,
  nonce: nonce1,
  time: T_PAY,
  cvm: Cvm.NONE,
};
const signedTransfer1 = signMessage('Transfer', transfer1, keys.card.signer);
const t1Hash = payloadHash(openSigned('Transfer', signedTransfer1).cose);
// Transfer 2: the change of transfer 1 pays 38 000 exactly, after a torn tap (nonce 3, retry of nonce 2), PIN verified.
const transfer2: MessageOf<'Transfer'> = {
  card: keys.card.kid,
  counter: 2,
  prev: t1Hash,
  inputs: [outputId(t1Hash, 1)],
  outputs: [{ value: 38_000, owner: keys.terminal.kid }],
  amount: 38_000,
  currency: CURRENCY_KZT,
  payee: keys.terminal.kid,
  merchant: merchant.id,
  mcc: merchant.mcc,
  nonce: nonce3,
  time: T_PAY + 60,
  cvm: Cvm.OFFLINE_PIN,
};
const signedTransfer2 = signMessage('Transfer', transfer2, keys.card.signer);
// A conflicting transfer (same counter and input as transfer 1): the double-spend proof.
const transfer1b: MessageOf<'Transfer'> = { ...transfer1, nonce: fixedBytes('other terminal nonce', 16), time: T_PAY + 5 };
const signedTransfer1b = signMessage('Transfer', transfer1b, keys.card.signer);

const handover1: MessageOf<'Handover'> = { transfer: signedTransfer1, chain: cardChain, tokens: [signedTokenA], history: [] };
// The first payment again, to a terminal whose request named the issuing bank: the chain is [card] (SPEC §3.8).
const handoverBankByReference: MessageOf<'Handover'> = { ...handover1, chain: [cardCert] };
const handover2: MessageOf<'Handover'> = {
  transfer: signedTransfer2,
  chain: cardChain,
  tokens: [signedTokenA],
  history: [signedTransfer1],
};

// The second payment to a terminal that holds the first (its request named it: held): the card
// leaves the history up to it out (after), the terminal puts it back before it validates (SPEC §3.8).
const requestHeld: MessageOf<'PaymentRequest'> = { ...request1, amount: 38_000, nonce: nonce3, time: T_PAY + 60, held: t1Hash };
const handoverHistoryHeld: MessageOf<'Handover'> = { ...handover2, history: [], after: t1Hash };
const batch1: MessageOf<'Batch'> = {
  terminal: keys.terminal.kid,
  seq: 1,
  time: T_PAY + 3600,
  chain: terminalChain,
  handovers: [encodeMessage('Handover', handover1), encodeMessage('Handover', handover2)],
  crlVersion: 7,
};
const emptyBatch: MessageOf<'Batch'> = {
  terminal: keys.terminal.kid,
  seq: 2,
  time: T_PAY + 7200,
  chain: terminalChain,
  handovers: [],
  crlVersion: 7,
};

// Voids and refunds (SPEC §3.9.1, §7.7.3): the terminal voids transfer 2 and refunds part of transfer 1.
const t2Hash = payloadHash(openSigned('Transfer', signedTransfer2).cose);
const voidAdjustment: MessageOf<'Adjustment'> = {
  kind: AdjustmentKind.VOID,
  id: fixedBytes('adjustment id void', 16),
  terminal: keys.terminal.kid,
  transfer: t2Hash,
  card: keys.card.kid,
  amount: transfer2.amount,
  currency: CURRENCY_KZT,
  time: T_PAY + 1800,
};
const refundAdjustment: MessageOf<'Adjustment'> = {
  kind: AdjustmentKind.REFUND,
  id: fixedBytes('adjustment id refund', 16),
  terminal: keys.terminal.kid,
  transfer: t1Hash,
  card: keys.card.kid,
  amount: 2_000,
  currency: CURRENCY_KZT,
  time: T_PAY + 2 * DAY,
  reference: 'ECR-RF-0001',
};
const signedVoid = signMessage('Adjustment', voidAdjustment, keys.terminal.signer);
const signedRefund = signMessage('Adjustment', refundAdjustment, keys.terminal.signer);
const batchAdjust: MessageOf<'Batch'> = {
  terminal: keys.terminal.kid,
  seq: 3,
  time: T_PAY + 2 * DAY + 60,
  chain: terminalChain,
  handovers: [encodeMessage('Handover', handover2)],
  crlVersion: 7,
  adjustments: [signedVoid, signedRefund],
};

const outcomeSettled: MessageOf<'Outcome'> = {
  transfer: t1Hash,
  status: OutcomeStatus.SETTLED,
  covered: true,
  time: T_PAY + 4000,
  card: keys.card.kid,
  terminal: keys.terminal.kid,
  amount: 12_000,
};
const outcomeDouble: MessageOf<'Outcome'> = {
  transfer: payloadHash(openSigned('Transfer', signedTransfer1b).cose),
  status: OutcomeStatus.DOUBLE_SPEND,
  covered: true,
  proof: [signedTransfer1, signedTransfer1b],
  time: T_PAY + 4001,
  card: keys.card.kid,
  terminal: keys.terminal.kid,
  amount: 12_000,
};
const outcomeInvalid: MessageOf<'Outcome'> = {
  transfer: fixedBytes('some transfer', 32),
  status: OutcomeStatus.INVALID,
  covered: false,
  code: 'CERT_EXPIRED',
  time: T_PAY + 4002,
  card: keys.card2.kid,
  terminal: keys.terminal.kid,
  amount: 0,
};

const outcomeRefunded: MessageOf<'Outcome'> = {
  transfer: t1Hash,
  status: OutcomeStatus.REFUNDED,
  covered: false,
  time: T_PAY + 2 * DAY + 100,
  card: keys.card.kid,
  terminal: keys.terminal.kid,
  amount: refundAdjustment.amount,
  adjustment: refundAdjustment.id,
};
const outcomeMerchantVoid: MessageOf<'Outcome'> = {
  transfer: t2Hash,
  status: OutcomeStatus.VOIDED,
  covered: false,
  code: 'MERCHANT_VOID',
  time: T_PAY + 2 * DAY + 100,
  card: keys.card.kid,
  terminal: keys.terminal.kid,
  amount: transfer2.amount,
  adjustment: voidAdjustment.id,
};

const crlEmpty: MessageOf<'RevocationList'> = { version: 0, issued: T0, revoked: [] };
const crl7: MessageOf<'RevocationList'> = {
  version: 7,
  issued: T_PAY - DAY,
  nextUpdate: T_PAY + 6 * DAY,
  revoked: [keys.card2.kid, fixedBytes('revoked 2', 16), fixedBytes('revoked 3', 16)].sort((a, b) => (toHex(a) < toHex(b) ? -1 : 1)),
};

const syncRequest: MessageOf<'SyncRequest'> = {
  card: keys.card.kid,
  counter: 3,
  prev: payloadHash(openSigned('Transfer', signedTransfer2).cose),
  history: [signedTransfer1, signedTransfer2],
  holdings: [serialB],
  balance: 25_000,
  challenge: fixedBytes('sync challenge', 16),
};
const signedSyncRequest = signMessage('SyncRequest', syncRequest, keys.card.signer);
const freshToken1 = signMessage(
  'Token',
  { serial: fixedBytes('fresh serial 1', 16), value: 20_000, currency: CURRENCY_KZT, owner: keys.card.kid, issued: T_PAY + DAY },
  keys.ledger.signer,
);
const freshToken2 = signMessage(
  'Token',
  { serial: fixedBytes('fresh serial 2', 16), value: 105_000, currency: CURRENCY_KZT, owner: keys.card.kid, issued: T_PAY + DAY },
  keys.ledger.signer,
);
const syncReceipt: MessageOf<'SyncReceipt'> = {
  card: keys.card.kid,
  counter: 3,
  request: payloadHash(openSigned('SyncRequest', signedSyncRequest).cose),
  tokens: [freshToken1, freshToken2],
  time: T_PAY + DAY,
  loaded: 100_000,
  voided: [],
};
const signedSyncReceipt = signMessage('SyncReceipt', syncReceipt, keys.ledger.signer);
// The first payment after that sync: it spends fresh token 2, which the handover names by its index in the receipt.
const transferAfterSync: MessageOf<'Transfer'> = {
  card: keys.card.kid,
  counter: 4,
  prev: payloadHash(openSigned('SyncReceipt', signedSyncReceipt).cose),
  inputs: [fixedBytes('fresh serial 2', 16)],
  outputs: [
    { value: 5_000, owner: keys.terminal.kid },
    { value: 100_000, owner: keys.card.kid },
  ],
  amount: 5_000,
  currency: CURRENCY_KZT,
  payee: keys.terminal.kid,
  merchant: merchant.id,
  mcc: merchant.mcc,
  nonce: fixedBytes('after sync nonce', 16),
  time: T_PAY + DAY + 60,
  cvm: Cvm.NONE,
};
const handoverAfterSync: MessageOf<'Handover'> = {
  transfer: signMessage('Transfer', transferAfterSync, keys.card.signer),
  chain: cardChain,
  history: [],
  receipt: signedSyncReceipt,
  receiptTokens: [1],
};
const syncRequestFirst: MessageOf<'SyncRequest'> = {
  card: keys.card2.kid,
  counter: 1,
  prev: GENESIS_PREV,
  history: [],
  holdings: [],
  balance: 0,
  challenge: fixedBytes('first sync challenge', 16),
};
const syncReceiptLoad: MessageOf<'SyncReceipt'> = {
  card: keys.card2.kid,
  counter: 1,
  request: payloadHash(openSigned('SyncRequest', signMessage('SyncRequest', syncRequestFirst, keys.card2.signer)).cose),
  tokens: [],
  time: T_PAY,
  loaded: 0,
  voided: [fixedBytes('orphan transfer', 32)],
};

// A sync after a refund: the card holds fresh token 2 (105 000), and 2 000 come back refunded.
const syncRequestRefund: MessageOf<'SyncRequest'> = {
  card: keys.card.kid,
  counter: 4,
  prev: payloadHash(openSigned('SyncReceipt', signedSyncReceipt).cose),
  history: [],
  holdings: [fixedBytes('fresh serial 2', 16)],
  balance: 105_000,
  challenge: fixedBytes('refund sync challenge', 16),
};
const syncReceiptRefunded: MessageOf<'SyncReceipt'> = {
  card: keys.card.kid,
  counter: 4,
  request: payloadHash(openSigned('SyncRequest', signMessage('SyncRequest', syncRequestRefund, keys.card.signer)).cose),
  tokens: [
    signMessage(
      'Token',
      { serial: fixedBytes('fresh serial 3', 16), value: 107_000, currency: CURRENCY_KZT, owner: keys.card.kid, issued: T_PAY + 3 * DAY },
      keys.ledger.signer,
    ),
  ],
  time: T_PAY + 3 * DAY,
  loaded: 0,
  voided: [],
  refunded: 2_000,
};

// ------------------------------------------------------------------ files

interface VectorFile {
  description: string;
  message?: MessageName;
  contentType?: string | null;
  contentFormat?: number | null;
  maxSize?: number;
  keys?: Record<string, Record<string, string>>;
  valid: ValidVector[];
  validChains?: unknown[];
  invalid: InvalidVector[];
}

function fileHeader(
  name: MessageName,
  description: string,
): Pick<VectorFile, 'description' | 'message' | 'contentType' | 'contentFormat' | 'maxSize'> {
  return {
    description,
    message: name,
    contentType: MESSAGES[name].contentType,
    contentFormat: MESSAGES[name].contentFormat,
    maxSize: MESSAGES[name].maxSize,
  };
}

function certificateFile(): VectorFile {
  const c = (vname: string, description: string, bytes: Uint8Array, issuer: VectorKey) =>
    signedValid('Certificate', vname, description, openSigned('Certificate', bytes).message, issuer, bytes);
  const rootHex = toHex(rootCert);
  const chainVector = (
    vname: string,
    description: string,
    chain: Uint8Array[],
    at: number,
    leafRole: number,
    error: ErrorCode,
    root = rootCert,
  ): InvalidVector => ({
    name: vname,
    description,
    call: 'verifyChain',
    params: { chain: chain.map(toHex), root: toHex(root), at, leafRole },
    error,
  });
  const cardAt = T_PAY;
  // Certificates made only to be rejected.
  const expiredCard = issueCertificate({ ...cardTemplate, sub: 'card expired', exp: T_PAY - DAY }, keys.issuingBank.signer);
  const futureCard = issueCertificate({ ...cardTemplate, sub: 'card future', nbf: T_PAY + DAY }, keys.issuingBank.signer);
  const cardByAcquirer = issueCertificate(cardTemplate, keys.acquiringBank.signer);
  const terminalByIssuer = issueCertificate(terminalTemplate, keys.issuingBank.signer);
  const cardByRoot = issueCertificate(cardTemplate, keys.root.signer);
  const issuingBank2Cert = issueCertificate(
    {
      iss: 'DT Issuer Root',
      sub: 'Other Test Issuing',
      nbf: T0,
      iat: T0,
      exp: T0 + 5 * YEAR,
      role: Role.BANK,
      perms: BankPermission.ISSUING | BankPermission.ACQUIRING,
      currency: CURRENCY_KZT,
      publicKey: keys.issuingBank2.publicKey,
    },
    keys.root.signer,
  );
  const rogueRoot = issueCertificate({ ...rootTemplate, publicKey: keys.rogueRoot.publicKey }, keys.rogueRoot.signer);
  const rogueBank = issueCertificate(
    {
      iss: 'DT Issuer Root',
      sub: 'Halyk Test Issuing',
      nbf: T0,
      iat: T0,
      exp: T0 + 5 * YEAR,
      role: Role.BANK,
      perms: BankPermission.ISSUING,
      currency: CURRENCY_KZT,
      publicKey: keys.issuingBank.publicKey,
    },
    keys.rogueRoot.signer,
  );
  const cardAsRoot = issueCertificate({ ...rootTemplate, role: Role.ISSUER, publicKey: keys.card.publicKey }, keys.issuingBank.signer);
  const cardWithMerchant = (() => {
    // A card certificate carrying a merchant claim: checkRoleClaims refuses it. issueCertificate would refuse to
    // make it too, so it is signed from its claims directly.
    const { x, y } = publicKeyCoordinates(keys.card.publicKey);
    const { publicKey: _pk, ...rest } = cardTemplate;
    void _pk;
    return signMessage('Certificate', { ...rest, merchant, cnf: { coseKey: { kid: keys.card.kid, x, y } } }, keys.issuingBank.signer);
  })();
  const cnfKidMismatch = (() => {
    const { x, y } = publicKeyCoordinates(keys.card.publicKey);
    const { publicKey: _pk, ...rest } = cardTemplate;
    void _pk;
    return signMessage('Certificate', { ...rest, cnf: { coseKey: { kid: keys.card2.kid, x, y } } }, keys.issuingBank.signer);
  })();
  const invalid: InvalidVector[] = [
    ...invalidSigned({
      name: 'Certificate',
      base: openSigned('Certificate', cardCert).message,
      signer: keys.issuingBank,
      missingKey: 4,
      uintKey: 4,
      outOfRange: [CertClaim.ROLE, 7, 'role 7 (roles are 1..6)'],
      oversize: true,
    }),
    chainVector(
      'chain-card-expired',
      'card certificate expired before the verification time',
      [expiredCard, issuingBankCert],
      cardAt,
      Role.CARD,
      ErrorCode.CERT_EXPIRED,
    ),
    chainVector(
      'chain-card-not-yet-valid',
      'card certificate nbf after the verification time',
      [futureCard, issuingBankCert],
      cardAt,
      Role.CARD,
      ErrorCode.CERT_NOT_YET_VALID,
    ),
    chainVector(
      'chain-after-bank-expiry',
      'valid card chain verified after the bank certificate expired (the bank expires first walking down from the root)',
      cardChain,
      T0 + 5 * YEAR + 1,
      Role.CARD,
      ErrorCode.CERT_EXPIRED,
    ),
    chainVector(
      'chain-before-card-valid',
      'valid card chain verified before the card certificate nbf',
      cardChain,
      T0 + 1,
      Role.CARD,
      ErrorCode.CERT_NOT_YET_VALID,
    ),
    chainVector(
      'chain-wrong-leaf-role',
      'valid card chain where a terminal is expected',
      cardChain,
      cardAt,
      Role.TERMINAL,
      ErrorCode.CERT_WRONG_ROLE,
    ),
    chainVector(
      'chain-card-with-merchant-claim',
      'card certificate that also carries a merchant claim',
      [cardWithMerchant, issuingBankCert],
      cardAt,
      Role.CARD,
      ErrorCode.CERT_WRONG_ROLE,
    ),
    chainVector(
      'chain-issuer-role-in-chain',
      'an issuer-role certificate inside a chain',
      [cardAsRoot, issuingBankCert],
      cardAt,
      Role.CARD,
      ErrorCode.CERT_WRONG_ROLE,
    ),
    chainVector(
      'chain-card-by-acquiring-bank',
      'card certified by a bank without the ISSUING permission',
      [cardByAcquirer, acquiringBankCert],
      cardAt,
      Role.CARD,
      ErrorCode.CERT_NOT_PERMITTED,
    ),
    chainVector(
      'chain-terminal-by-issuing-bank',
      'terminal certified by a bank without the ACQUIRING permission',
      [terminalByIssuer, issuingBankCert],
      cardAt,
      Role.TERMINAL,
      ErrorCode.CERT_NOT_PERMITTED,
    ),
    chainVector(
      'chain-wrong-issuer',
      'card certificate signed by the issuing bank, followed by the certificate of another issuing bank',
      [cardCert, issuingBank2Cert],
      cardAt,
      Role.CARD,
      ErrorCode.CERT_CHAIN_BROKEN,
    ),
    chainVector(
      'chain-issuer-not-a-bank',
      'card certificate followed by the ledger certificate',
      [cardCert, ledgerCert],
      cardAt,
      Role.CARD,
      ErrorCode.CERT_CHAIN_BROKEN,
    ),
    chainVector(
      'chain-card-under-root',
      'card certificate signed directly by the issuer root',
      [cardByRoot],
      cardAt,
      Role.CARD,
      ErrorCode.CERT_CHAIN_BROKEN,
    ),
    chainVector(
      'chain-bank-from-rogue-root',
      'bank certificate signed by a root that is not the pinned one',
      [cardCert, rogueBank],
      cardAt,
      Role.CARD,
      ErrorCode.CERT_CHAIN_BROKEN,
    ),
    chainVector('chain-empty', 'empty chain', [], cardAt, Role.CARD, ErrorCode.CERT_CHAIN_BROKEN),
    chainVector(
      'chain-too-long',
      `more than ${LIMITS.maxChainCerts} certificates`,
      [cardCert, issuingBankCert, issuingBankCert, issuingBankCert],
      cardAt,
      Role.CARD,
      ErrorCode.CERT_CHAIN_BROKEN,
    ),
    chainVector(
      'chain-cnf-kid-mismatch',
      'card certificate whose cnf kid does not name its cnf key',
      [cnfKidMismatch, issuingBankCert],
      cardAt,
      Role.CARD,
      ErrorCode.KEY_MISMATCH,
    ),
    chainVector(
      'chain-bad-signature',
      'card certificate with one signature bit flipped',
      [flipLastByte(cardCert), issuingBankCert],
      cardAt,
      Role.CARD,
      ErrorCode.BAD_SIGNATURE,
    ),
    {
      name: 'root-untrusted',
      description: 'a self-signed issuer root that is not the pinned one',
      call: 'verifyRoot',
      hex: toHex(rogueRoot),
      params: { at: cardAt, expectedKid: toHex(keys.root.kid) },
      error: ErrorCode.CERT_UNTRUSTED_ROOT,
    },
    {
      name: 'root-not-issuer',
      description: 'a bank certificate offered as the root',
      call: 'verifyRoot',
      hex: toHex(issuingBankCert),
      params: { at: cardAt, expectedKid: toHex(keys.root.kid) },
      error: ErrorCode.CERT_WRONG_ROLE,
    },
    {
      name: 'root-expired',
      description: 'the pinned root verified after its expiry',
      call: 'verifyRoot',
      hex: rootHex,
      params: { at: T0 + 10 * YEAR + 1, expectedKid: toHex(keys.root.kid) },
      error: ErrorCode.CERT_EXPIRED,
    },
    {
      name: 'root-bad-signature',
      description: 'the pinned root with one signature bit flipped',
      call: 'verifyRoot',
      hex: toHex(flipLastByte(rootCert)),
      params: { at: cardAt, expectedKid: toHex(keys.root.kid) },
      error: ErrorCode.BAD_SIGNATURE,
    },
  ];
  return {
    ...fileHeader('Certificate', 'DT certificates (CWT claims in a COSE_Sign1, RFC 8392 with RFC 8747 cnf): the whole test PKI.'),
    keys: Object.fromEntries(Object.values(keys).map((k) => [k.name, keyJson(k)])),
    valid: [
      c('issuer-root', 'self-signed issuer root (trust anchor)', rootCert, keys.root),
      c('ledger', 'ledger notary, certified by the issuer root', ledgerCert, keys.root),
      c('issuing-bank', 'issuing bank (perms ISSUING), certified by the issuer root', issuingBankCert, keys.root),
      c('acquiring-bank', 'acquiring bank (perms ACQUIRING), certified by the issuer root', acquiringBankCert, keys.root),
      c('card', 'card with limits, certified by the issuing bank', cardCert, keys.issuingBank),
      c('terminal', 'terminal with merchant identity, certified by the acquiring bank', terminalCert, keys.acquiringBank),
    ],
    validChains: [
      {
        name: 'card-chain',
        chain: cardChain.map(toHex),
        root: rootHex,
        rootKid: toHex(keys.root.kid),
        at: T_PAY,
        leafRole: Role.CARD,
        leafKid: toHex(keys.card.kid),
      },
      {
        name: 'terminal-chain',
        chain: terminalChain.map(toHex),
        root: rootHex,
        rootKid: toHex(keys.root.kid),
        at: T_PAY,
        leafRole: Role.TERMINAL,
        leafKid: toHex(keys.terminal.kid),
      },
      {
        name: 'ledger-chain',
        chain: [toHex(ledgerCert)],
        root: rootHex,
        rootKid: toHex(keys.root.kid),
        at: T_PAY,
        leafRole: Role.LEDGER,
        leafKid: toHex(keys.ledger.kid),
      },
      {
        name: 'card-chain-at-nbf',
        chain: cardChain.map(toHex),
        root: rootHex,
        rootKid: toHex(keys.root.kid),
        at: T0 + DAY,
        leafRole: Role.CARD,
        leafKid: toHex(keys.card.kid),
      },
      {
        name: 'card-chain-at-exp',
        chain: cardChain.map(toHex),
        root: rootHex,
        rootKid: toHex(keys.root.kid),
        at: T0 + 3 * YEAR,
        leafRole: Role.CARD,
        leafKid: toHex(keys.card.kid),
      },
    ],
    invalid,
  };
}

function flipLastByte(b: Uint8Array): Uint8Array {
  const out = b.slice();
  out[out.length - 1]! ^= 1;
  return out;
}

function handoverFile(): VectorFile {
  const h = (vname: string, description: string, v: MessageOf<'Handover'>): ValidVector => {
    const bytes = encodeMessage('Handover', v);
    return { name: vname, description, hex: toHex(bytes), decoded: toJsonValue(v) };
  };
  const base = encodeStruct(MESSAGES.Handover.schema as StructSchema, handover2 as never);
  const entries = canonicalEntries(base);
  const dec = (vname: string, description: string, bytes: Uint8Array, error: ErrorCode): InvalidVector => ({
    name: vname,
    description,
    call: 'decode',
    hex: toHex(bytes),
    params: { message: 'Handover' },
    error,
  });
  const withMap = (f: (m: CborMap) => void) => {
    const m: CborMap = new Map(base);
    f(m);
    return enc(m);
  };
  const good = enc(base);
  return {
    ...fileHeader('Handover', 'Handover: the unsigned container a card gives the terminal (signed objects inside).'),
    valid: [
      h('first-payment', 'first offline payment: one token, no history', handover1),
      h('second-payment', 'second offline payment: spends the change of the first, which is in the history', handover2),
      h(
        'after-sync',
        "first payment after a sync: the token it spends is the receipt's second, named by its index (receiptTokens), not repeated",
        handoverAfterSync,
      ),
      h(
        'bank-by-reference',
        "the first payment to a terminal whose request named the card's issuing bank (banks): the chain is [card], the validator completes it with the bank certificate it holds",
        handoverBankByReference,
      ),
      h(
        'history-held',
        'the second payment to a terminal whose request named the first transfer (held): the history up to it is left out (after), the validator re-inserts the chain it holds',
        handoverHistoryHeld,
      ),
    ],
    invalid: [
      dec('unsorted-keys', 'map keys in reverse order', rawMap([...entries].reverse()), ErrorCode.CBOR_NON_DETERMINISTIC),
      dec(
        'duplicate-key',
        'version key repeated',
        concatBytes(head(5, entries.length + 1), ...entries.flat(), ...entries[0]!),
        ErrorCode.CBOR_DUPLICATE_KEY,
      ),
      dec(
        'non-shortest-length',
        'transfer byte string length written with a 4-byte argument',
        rawMap(
          entries.map(([k, v]) =>
            toHex(k) === '01' ? [k, concatBytes(head(2, handover2.transfer.length, 4), handover2.transfer)] : [k, v],
          ),
        ),
        ErrorCode.CBOR_NON_DETERMINISTIC,
      ),
      dec(
        'indefinite-array',
        'chain as an indefinite-length array',
        rawMap(
          entries.map(([k, v]) =>
            toHex(k) === '02' ? [k, concatBytes(Uint8Array.of(0x9f), ...cardChain.map((c) => enc(c)), Uint8Array.of(0xff))] : [k, v],
          ),
        ),
        ErrorCode.CBOR_NON_DETERMINISTIC,
      ),
      dec(
        'unknown-version',
        'version 2',
        withMap((m) => m.set(0, 2)),
        ErrorCode.UNSUPPORTED_VERSION,
      ),
      dec(
        'wrong-type',
        'transfer is a text string',
        withMap((m) => m.set(1, 'transfer')),
        ErrorCode.SCHEMA_WRONG_TYPE,
      ),
      dec(
        'missing-field',
        'no history',
        withMap((m) => m.delete(4)),
        ErrorCode.SCHEMA_MISSING_FIELD,
      ),
      dec(
        'unknown-field',
        'extra key 99',
        withMap((m) => m.set(99, true)),
        ErrorCode.SCHEMA_UNKNOWN_FIELD,
      ),
      dec(
        'empty-tokens',
        'tokens is an empty array (at least one is required)',
        withMap((m) => m.set(3, [])),
        ErrorCode.SCHEMA_OUT_OF_RANGE,
      ),
      dec(
        'empty-receipt-tokens',
        'receiptTokens is an empty array (absent when nothing is named)',
        withMap((m) => m.set(6, [])),
        ErrorCode.SCHEMA_OUT_OF_RANGE,
      ),
      dec(
        'receipt-token-index-too-large',
        `receiptTokens names index ${LIMITS.maxTokens} (a receipt holds at most ${LIMITS.maxTokens} tokens)`,
        withMap((m) => m.set(6, [LIMITS.maxTokens])),
        ErrorCode.SCHEMA_OUT_OF_RANGE,
      ),
      dec(
        'too-many-chain-certs',
        `chain with ${LIMITS.maxChainCerts + 1} certificates`,
        withMap((m) => m.set(2, [cardCert, issuingBankCert, issuingBankCert, issuingBankCert])),
        ErrorCode.TOO_LARGE,
      ),
      dec(
        'float',
        'version as float64 1.0',
        rawMap(entries.map(([k, v]) => (toHex(k) === '00' ? [k, float64(1)] : [k, v]))),
        ErrorCode.CBOR_FORBIDDEN_TYPE,
      ),
      dec(
        'forbidden-tag',
        'transfer wrapped in tag 24 (embedded CBOR)',
        rawMap(entries.map(([k, v]) => (toHex(k) === '01' ? [k, concatBytes(head(6, 24), v)] : [k, v]))),
        ErrorCode.CBOR_FORBIDDEN_TYPE,
      ),
      dec('truncated', 'valid handover without its last byte', good.subarray(0, good.length - 1), ErrorCode.CBOR_MALFORMED),
    ],
  };
}

function signedFile<N extends SignedMessageName>(
  name: N,
  description: string,
  valid: ValidVector[],
  spec: Omit<SignedSpec<N>, 'name'>,
): VectorFile {
  return { ...fileHeader(name, description), valid, invalid: invalidSigned({ name, ...spec }) };
}

function cborInvalidFile(): VectorFile {
  const d = (name: string, description: string, hex: string, error: ErrorCode, maxSize = 65536): InvalidVector => ({
    name,
    description,
    call: 'decodeCbor',
    hex,
    params: { maxSize },
    error,
  });
  const deep = (n: number) => '81'.repeat(n) + '00';
  const deepValue = (n: number): CborValue => (n === 0 ? 0 : [deepValue(n - 1)]);
  const validCases: Array<[string, CborValue]> = [
    ['uint-0', 0],
    ['uint-23', 23],
    ['uint-24', 24],
    ['uint-255', 255],
    ['uint-256', 256],
    ['uint-65535', 65535],
    ['uint-65536', 65536],
    ['uint-2^32-1', 4294967295],
    ['uint-2^32', 4294967296],
    ['uint-2^53-1', Number.MAX_SAFE_INTEGER],
    ['nint-minus-1', -1],
    ['nint-minus-24', -24],
    ['nint-minus-25', -25],
    ['nint-minus-2^32-1', -4294967297],
    ['nint-minus-2^53+1', -Number.MAX_SAFE_INTEGER],
    ['bytes-empty', new Uint8Array(0)],
    ['bytes-24', new Uint8Array(24).fill(7)],
    ['text-utf8', 'Digital \u20b8 \u{1f4b3}'],
    ['true', true],
    ['false', false],
    ['array-empty', []],
    ['map-empty', new Map()],
    [
      'map-sorted',
      new Map<number, CborValue>([
        [-1, 'a'],
        [24, 'b'],
        [0, 'c'],
        [-25, 'd'],
        [23, 'e'],
        [256, 'f'],
        [-256, 'g'],
      ]),
    ],
    ['tag-18', { tag: 18, value: [new Uint8Array(0), new Map(), new Uint8Array(0), Uint8Array.of(0)] }],
    ['depth-16', deepValue(16)],
  ];
  return {
    description:
      'Generic DT CBOR (RFC 8949 core deterministic encoding, DT data model): call decodeCbor(hex, maxSize). Maps in "decoded" are arrays of [key, value] pairs in encoded order.',
    valid: validCases.map(([name, value]) => ({
      name,
      description: 'decodes, and re-encodes to the same bytes',
      hex: toHex(enc(value)),
      decoded: cborJson(decodeDeterministic(enc(value))),
    })),
    invalid: [
      d('empty', 'zero bytes', '', ErrorCode.CBOR_MALFORMED),
      d('truncated-uint', '1-byte argument missing', '18', ErrorCode.CBOR_MALFORMED),
      d('truncated-uint64', '8-byte argument cut short', '1b000000', ErrorCode.CBOR_MALFORMED),
      d('truncated-bytes', 'byte string shorter than its length', '4401', ErrorCode.CBOR_MALFORMED),
      d('truncated-array', 'array with 2 items, 1 present', '8201', ErrorCode.CBOR_MALFORMED),
      d('truncated-map', 'map with a key and no value', 'a101', ErrorCode.CBOR_MALFORMED),
      d('huge-array-count', 'array claims 2^64-1 items (must not be allocated)', '9bffffffffffffffff', ErrorCode.CBOR_MALFORMED),
      d('huge-bytes-length', 'byte string claims 2^32-1 bytes', '5affffffff00', ErrorCode.CBOR_MALFORMED),
      d('reserved-ai-28', 'additional information 28 is reserved', '1c', ErrorCode.CBOR_MALFORMED),
      d('reserved-ai-30', 'additional information 30 is reserved', '5e', ErrorCode.CBOR_MALFORMED),
      d('stray-break', 'break outside an indefinite item', 'ff', ErrorCode.CBOR_MALFORMED),
      d('indefinite-uint', 'indefinite length on major type 0', '1f', ErrorCode.CBOR_MALFORMED),
      d('trailing-bytes', 'two items', '0001', ErrorCode.CBOR_MALFORMED),
      d('simple-two-byte-low', 'two-byte simple value below 32 (not well-formed)', 'f814', ErrorCode.CBOR_MALFORMED),
      d('invalid-utf8', 'text string with a lone continuation byte', '6180', ErrorCode.CBOR_MALFORMED),
      d('utf8-surrogate', 'text string encoding U+D800', '63eda080', ErrorCode.CBOR_MALFORMED),
      d('utf8-overlong', 'overlong encoding of "/"', '62c0af', ErrorCode.CBOR_MALFORMED),
      d('unsorted-keys', 'map {2: 0, 1: 0}', 'a202000100', ErrorCode.CBOR_NON_DETERMINISTIC),
      d(
        'unsorted-negative-keys',
        'map {-1: 0, 1: 0} (negative keys sort after positive ones)',
        'a220000100',
        ErrorCode.CBOR_NON_DETERMINISTIC,
      ),
      d('non-shortest-uint-1', '0 written with a 1-byte argument', '1800', ErrorCode.CBOR_NON_DETERMINISTIC),
      d('non-shortest-uint-2', '255 written with a 2-byte argument', '1900ff', ErrorCode.CBOR_NON_DETERMINISTIC),
      d('non-shortest-uint-4', '65535 written with a 4-byte argument', '1a0000ffff', ErrorCode.CBOR_NON_DETERMINISTIC),
      d('non-shortest-uint-8', '2^32-1 written with an 8-byte argument', '1b00000000ffffffff', ErrorCode.CBOR_NON_DETERMINISTIC),
      d('non-shortest-nint', '-1 written with a 1-byte argument', '3800', ErrorCode.CBOR_NON_DETERMINISTIC),
      d('non-shortest-length', 'empty byte string with a 1-byte length', '5800', ErrorCode.CBOR_NON_DETERMINISTIC),
      d('non-shortest-array-count', 'one-item array with a 1-byte count', '980100', ErrorCode.CBOR_NON_DETERMINISTIC),
      d('non-shortest-map-key', 'map key 1 written with a 1-byte argument', 'a1180100', ErrorCode.CBOR_NON_DETERMINISTIC),
      d('indefinite-array', 'indefinite-length array [0]', '9f00ff', ErrorCode.CBOR_NON_DETERMINISTIC),
      d('indefinite-map', 'indefinite-length map {1: 0}', 'bf0100ff', ErrorCode.CBOR_NON_DETERMINISTIC),
      d('indefinite-bytes', 'indefinite-length byte string', '5f4101ff', ErrorCode.CBOR_NON_DETERMINISTIC),
      d('indefinite-text', 'indefinite-length text string', '7f6161ff', ErrorCode.CBOR_NON_DETERMINISTIC),
      d('duplicate-key', 'map {1: 0, 1: 0}', 'a201000100', ErrorCode.CBOR_DUPLICATE_KEY),
      d('duplicate-key-different-values', 'map {1: 0, 1: 1}', 'a201000101', ErrorCode.CBOR_DUPLICATE_KEY),
      d('duplicate-key-non-shortest', 'map {1: 0, 1 (as 0x1801): 0}', 'a20100180100', ErrorCode.CBOR_DUPLICATE_KEY),
      d('duplicate-key-nested', 'duplicate key in a nested map', '81a201000100', ErrorCode.CBOR_DUPLICATE_KEY),
      d('float16-integral', 'half float 1.0', 'f93c00', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('float16-nan', 'half float NaN', 'f97e00', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('float32', 'single float 1.5', 'fa3fc00000', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('float64', 'double 1.1', 'fb3ff199999999999a', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('null', 'null', 'f6', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('undefined', 'undefined', 'f7', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('simple-16', 'simple(16)', 'f0', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('simple-255', 'simple(255)', 'f8ff', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('tag-0', 'tag 0 (date/time string)', 'c06a323032362d30312d3031', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('tag-1', 'tag 1 (epoch time)', 'c11a6955b900', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('tag-2-bignum', 'tag 2 (bignum)', 'c249010000000000000000', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('tag-24', 'tag 24 (embedded CBOR)', 'd8184100', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('tag-55799', 'self-described CBOR tag', 'd9d9f700', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('text-key', 'map with a text key', 'a1616100', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('bytes-key', 'map with a byte string key', 'a1410100', ErrorCode.CBOR_FORBIDDEN_TYPE),
      d('uint-2^53', 'integer 2^53 (beyond the exact range)', '1b0020000000000000', ErrorCode.SCHEMA_OUT_OF_RANGE),
      d('uint-2^64-1', 'integer 2^64-1', '1bffffffffffffffff', ErrorCode.SCHEMA_OUT_OF_RANGE),
      d('nint-minus-2^53', 'integer -2^53', '3b001fffffffffffff', ErrorCode.SCHEMA_OUT_OF_RANGE),
      d('too-deep', 'arrays nested 17 deep (limit 16)', deep(17), ErrorCode.TOO_LARGE),
      d('oversize', 'five bytes where maxSize is 4', '4400000000', ErrorCode.TOO_LARGE, 4),
    ],
  };
}

/** JSON form of a generic CBOR value: maps as arrays of [key, value] pairs, tags as {tag, value}. */
export function cborJson(v: CborValue): unknown {
  if (v instanceof Uint8Array) return toHex(v);
  if (Array.isArray(v)) return v.map(cborJson);
  if (v instanceof Map) return [...v].map(([k, x]) => [k, cborJson(x)]);
  if (typeof v === 'object') return { tag: v.tag, value: cborJson(v.value) };
  return v;
}

/** Generates every vector file: file name → JSON text (2-space indent, final newline). */
export function generateVectors(): Map<string, string> {
  const files: Array<[string, VectorFile]> = [
    [FILE_OF.Certificate, certificateFile()],
    [
      FILE_OF.Token,
      signedFile(
        'Token',
        'Token: a confirmed coin signed by the ledger.',
        [
          signedValid('Token', 'plain', 'unmarked token without expiry', tokenA, keys.ledger),
          signedValid('Token', 'with-expiry', 'token with an expiry time', tokenB, keys.ledger),
          signedValid('Token', 'marked', 'purpose-bound token: two merchants, two MCCs, one hop', tokenC, keys.ledger),
          signedValid('Token', 'max-value', 'value 2^53-1 (the largest amount), issued at time 0', tokenMax, keys.ledger),
          signedValid(
            'Token',
            'text-content-type',
            'the plain token signed with the text content type, as before content formats: verifiers accept it (SPEC §4.1)',
            tokenA,
            keys.ledger,
            signRaw(encodeMessage('Token', tokenA), MESSAGES.Token.contentType, keys.ledger),
          ),
        ],
        {
          base: tokenA,
          signer: keys.ledger,
          missingKey: 1,
          uintKey: 2,
          outOfRange: [3, 1000, 'currency 1000 (codes are 1..999)'],
          oversize: true,
        },
      ),
    ],
    [
      FILE_OF.PaymentRequest,
      signedFile(
        'PaymentRequest',
        'PaymentRequest: signed by the terminal, carries its certificate chain.',
        [
          signedValid('PaymentRequest', 'request', 'a payment request for 120.00 KZT', request1, keys.terminal),
          signedValid(
            'PaymentRequest',
            'retry',
            'a request that names the nonce of an interrupted attempt (retryOf)',
            request3,
            keys.terminal,
          ),
          signedValid(
            'PaymentRequest',
            'held',
            'a request naming the newest transfer of the card the terminal holds with its chain (held): the card leaves that history out',
            requestHeld,
            keys.terminal,
          ),
          signedValid(
            'PaymentRequest',
            'banks',
            'a request naming the issuing banks whose certificates the terminal holds (banks): their cards leave the bank certificate out',
            requestBanks,
            keys.terminal,
          ),
        ],
        { base: request1, signer: keys.terminal, missingKey: 6, uintKey: 1, outOfRange: [1, 0, 'amount 0 (at least 1)'], oversize: true },
      ),
    ],
    [
      FILE_OF.Transfer,
      signedFile(
        'Transfer',
        'Transfer: signed by the card.',
        [
          signedValid('Transfer', 'first', 'counter 1 from genesis: a token pays 120.00 KZT, change 380.00 KZT', transfer1, keys.card),
          signedValid(
            'Transfer',
            'text-content-type',
            'the first transfer signed with the text content type, as a card with older firmware signs it (SPEC §4.1)',
            transfer1,
            keys.card,
            signRaw(encodeMessage('Transfer', transfer1), MESSAGES.Transfer.contentType, keys.card),
          ),
          signedValid(
            'Transfer',
            'second',
            'counter 2: the change of the first pays 380.00 KZT exactly, PIN verified',
            transfer2,
            keys.card,
          ),
          signedValid(
            'Transfer',
            'conflicting',
            'a second transfer with counter 1 spending the same token (double spend)',
            transfer1b,
            keys.card,
          ),
        ],
        { base: transfer1, signer: keys.card, missingKey: 3, uintKey: 2, outOfRange: [13, 3, 'cvm 3 (0..2)'], oversize: true },
      ),
    ],
    [FILE_OF.Handover, handoverFile()],
    [
      FILE_OF.Batch,
      signedFile(
        'Batch',
        'Batch: signed by the terminal, carries handovers to the acquirer.',
        [
          signedValid('Batch', 'two-handovers', 'sequence 1 with both handovers', batch1, keys.terminal),
          signedValid('Batch', 'empty', 'sequence 2 with no handovers', emptyBatch, keys.terminal),
          signedValid(
            'Batch',
            'with-adjustments',
            'sequence 3: one handover, a void of transfer 2 and a partial refund of transfer 1',
            batchAdjust,
            keys.terminal,
          ),
        ],
        { base: emptyBatch, signer: keys.terminal, missingKey: 5, uintKey: 2, outOfRange: [2, 0, 'seq 0 (at least 1)'], oversize: false },
      ),
    ],
    [
      FILE_OF.Outcome,
      signedFile(
        'Outcome',
        "Outcome: the ledger's signed verdict on one transfer.",
        [
          signedValid('Outcome', 'settled', 'transfer 1 settled, merchant covered', outcomeSettled, keys.ledger),
          signedValid(
            'Outcome',
            'double-spend',
            'the conflicting transfer, with both signed transfers as proof',
            outcomeDouble,
            keys.ledger,
          ),
          signedValid('Outcome', 'invalid', 'invalid transfer with a stable code', outcomeInvalid, keys.ledger),
          signedValid('Outcome', 'refunded', 'the partial refund of transfer 1 accepted (its adjustment id)', outcomeRefunded, keys.ledger),
          signedValid('Outcome', 'merchant-void', 'the void of transfer 2 accepted (code MERCHANT_VOID)', outcomeMerchantVoid, keys.ledger),
        ],
        { base: outcomeSettled, signer: keys.ledger, missingKey: 3, uintKey: 2, outOfRange: [2, 7, 'status 7 (1..6)'], oversize: true },
      ),
    ],
    [
      FILE_OF.RevocationList,
      signedFile(
        'RevocationList',
        "RevocationList: the ledger's signed list of revoked card key ids.",
        [
          signedValid('RevocationList', 'empty', 'version 0, nothing revoked', crlEmpty, keys.ledger),
          signedValid('RevocationList', 'three-revoked', 'version 7 with three revoked cards and a next-update time', crl7, keys.ledger),
        ],
        {
          base: crl7,
          signer: keys.ledger,
          missingKey: 3,
          uintKey: 1,
          outOfRange: [3, [new Uint8Array(15)], 'a revoked kid of 15 bytes'],
          oversize: false,
        },
      ),
    ],
    [
      FILE_OF.SyncRequest,
      signedFile(
        'SyncRequest',
        'SyncRequest: signed by the card when it goes online.',
        [
          signedValid(
            'SyncRequest',
            'after-two-payments',
            'counter 3 with two offline transfers and one token left',
            syncRequest,
            keys.card,
          ),
          signedValid(
            'SyncRequest',
            'first',
            "a fresh card's first sync: counter 1 from genesis, nothing held",
            syncRequestFirst,
            keys.card2,
          ),
        ],
        {
          base: syncRequest,
          signer: keys.card,
          missingKey: 7,
          uintKey: 2,
          outOfRange: [7, new Uint8Array(15), 'challenge of 15 bytes'],
          oversize: false,
        },
      ),
    ],
    [
      FILE_OF.SyncReceipt,
      signedFile(
        'SyncReceipt',
        'SyncReceipt: signed by the ledger; fresh tokens for the card.',
        [
          signedValid(
            'SyncReceipt',
            'with-load',
            'receipt for the sync request: 25 000 kept + 100 000 loaded as two fresh tokens',
            syncReceipt,
            keys.ledger,
          ),
          signedValid('SyncReceipt', 'voided', 'receipt that voids an orphan transfer', syncReceiptLoad, keys.ledger),
          signedValid(
            'SyncReceipt',
            'refunded',
            'receipt that credits a merchant refund: 105 000 kept + 2 000 refunded as one fresh token',
            syncReceiptRefunded,
            keys.ledger,
          ),
        ],
        {
          base: syncReceipt,
          signer: keys.ledger,
          missingKey: 3,
          uintKey: 6,
          outOfRange: [2, 0, 'counter 0 (at least 1)'],
          oversize: false,
        },
      ),
    ],
    [
      FILE_OF.Adjustment,
      signedFile(
        'Adjustment',
        "Adjustment: a terminal's signed void or refund of one of its own payments (SPEC §3.9.1, §7.7.3).",
        [
          signedValid('Adjustment', 'void', 'void of transfer 2 (its full amount)', voidAdjustment, keys.terminal),
          signedValid(
            'Adjustment',
            'refund',
            'partial refund of 20.00 KZT of transfer 1, with a register reference',
            refundAdjustment,
            keys.terminal,
          ),
        ],
        {
          base: refundAdjustment,
          signer: keys.terminal,
          missingKey: 4,
          uintKey: 6,
          outOfRange: [1, 3, 'kind 3 (1..2)'],
          oversize: true,
        },
      ),
    ],
    ['cbor-invalid.json', cborInvalidFile()],
  ];
  return new Map(files.map(([f, v]) => [f, JSON.stringify({ format: 'dt-vectors-1', ...v }, null, 2) + '\n']));
}

function main(): void {
  const check = process.argv.includes('--check');
  mkdirSync(VECTORS_DIR, { recursive: true });
  let stale = 0;
  for (const [file, text] of generateVectors()) {
    const path = join(VECTORS_DIR, file);
    if (check) {
      let old = '';
      try {
        old = readFileSync(path, 'utf8');
      } catch {
        // missing counts as stale
      }
      if (old !== text) {
        stale++;
        process.stderr.write(`stale: ${file}\n`);
      }
    } else {
      writeFileSync(path, text);
      process.stderr.write(`wrote ${path} (${text.length} bytes)\n`);
    }
  }
  if (check && stale > 0) process.exitCode = 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) main();
