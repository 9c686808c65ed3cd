/**
 * Issuance and PKI tooling: the issuer root, the ledger certificate, banks
 * with permissions, card, terminal and acquirer certificates. Used by the ledger CLI
 * (`dt-ledger init`), the tests of the ledger, acquirer and terminal, and the
 * demo. Keys come from the OS CSPRNG; secret keys are never printed.
 *
 * @example
 * const pki = createPki({ now });
 * const card = pki.issueCard({ limits });       // keys + [card cert, bank cert]
 * const term = pki.issueTerminal({ merchant: { id: 'shop-1', mcc: 5411, name: 'Shop' } });
 * const acq = pki.issueAcquirer();                // the acquirer's service key: signs its settle requests
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import {
  BankPermission,
  CURRENCY_KZT,
  generateKeyPair,
  issueCertificate,
  keyId,
  keyPairSigner,
  Role,
  type KeyPair,
  type Signer,
} from '@dt/protocol';

/** The OS CSPRNG as a protocol RandomSource. */
export const osRandom = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

/** A key pair with its signer, certificate and key id. */
export interface Identity {
  readonly keys: KeyPair;
  readonly signer: Signer;
  readonly kid: Uint8Array;
  /** The certificate of this identity. */
  readonly cert: Uint8Array;
  /** The chain to present (leaf first, root excluded): `[cert]` for banks and the ledger, `[cert, bank cert]` for cards, terminals and acquirers. */
  readonly chain: readonly Uint8Array[];
}

/** Card limits (the certificate's `limits` claim). */
export interface CardLimits {
  perPayment: number;
  offlineTotal: number;
  offlineCount: number;
  cvmLimit: number;
}

/** Merchant identity of a terminal certificate. */
export interface MerchantInfo {
  id: string;
  mcc: number;
  name: string;
}

/** Validity period in seconds. */
export interface Validity {
  nbf: number;
  exp: number;
}

const YEAR = 365 * 86400;

function make(
  role: number,
  sub: string,
  issuer: { signer: Signer; name: string } | null,
  validity: Validity,
  extra: Record<string, unknown>,
  keys?: KeyPair,
  iat?: number,
): { keys: KeyPair; signer: Signer; kid: Uint8Array; cert: Uint8Array } {
  const k = keys ?? generateKeyPair(osRandom);
  const signer = keyPairSigner(k);
  const cert = issueCertificate(
    {
      iss: issuer?.name ?? sub,
      sub,
      iat: iat ?? validity.nbf,
      nbf: validity.nbf,
      exp: validity.exp,
      role: role as never,
      publicKey: k.publicKey,
      ...extra,
    } as never,
    issuer?.signer ?? signer,
  );
  return { keys: k, signer, kid: keyId(k.publicKey), cert };
}

/** Creates the issuer root: a self-signed ISSUER certificate (the trust anchor). */
export function createIssuer(opts: { now: number; name?: string; validity?: Validity; keys?: KeyPair }): Identity & { name: string } {
  const name = opts.name ?? 'DT issuer';
  const v = opts.validity ?? { nbf: opts.now - 86400, exp: opts.now + 20 * YEAR };
  const id = make(Role.ISSUER, name, null, v, {}, opts.keys);
  return { ...id, chain: [id.cert], name };
}

/** Issues a certificate for an existing public key (e.g. a card key generated on the card). */
export interface ForKey {
  publicKey: Uint8Array;
}

/** A PKI in memory: the issuer, the ledger and one default bank (ISSUING and ACQUIRING), with issuance helpers. */
export interface Pki {
  readonly now: number;
  readonly issuer: Identity & { name: string };
  readonly ledger: Identity;
  readonly bank: Identity;
  /** Certifies a ledger key under the issuer. */
  createLedger(opts?: { name?: string; validity?: Validity; keys?: KeyPair }): Identity;
  /** Certifies a bank with permissions (`BankPermission` bits). */
  createBank(opts: { name: string; perms: number; validity?: Validity; keys?: KeyPair }): Identity;
  /** Issues a card certificate from `bank` (default: the default bank); generates the card key unless `keys` is given. */
  issueCard(opts?: { limits?: CardLimits; bank?: Identity; validity?: Validity; keys?: KeyPair; name?: string }): Identity;
  /**
   * Issues a terminal certificate from `bank` (default: the default bank). `crlMaxAge`:
   * the certified revocation-list age policy in seconds (claim absent: 3 days, SPEC §3.3).
   */
  issueTerminal(opts: { merchant: MerchantInfo; bank?: Identity; validity?: Validity; keys?: KeyPair; crlMaxAge?: number }): Identity;
  /**
   * Issues an acquirer certificate (role ACQUIRER, chain `[acquirer, bank]`) from `bank` (default: the
   * default bank; it must have ACQUIRING): the service key whose signed settle requests the ledger accepts (SPEC §7.7.2).
   */
  issueAcquirer(opts?: { bank?: Identity; validity?: Validity; keys?: KeyPair; name?: string }): Identity;
}

/** Default card limits for tests and the demo: 50,000.00 KZT per payment, 100,000.00 offline, 10 payments, PIN above 10,000.00. */
export const DEFAULT_CARD_LIMITS: CardLimits = { perPayment: 5_000_000, offlineTotal: 10_000_000, offlineCount: 10, cvmLimit: 1_000_000 };

/** Builds a PKI (issuer, ledger, default bank) valid around `now`. */
export function createPki(opts: { now: number; issuerKeys?: KeyPair; ledgerKeys?: KeyPair; bankKeys?: KeyPair; validity?: Validity }): Pki {
  const now = opts.now;
  const validity = opts.validity ?? { nbf: now - 86400, exp: now + 10 * YEAR };
  const issuer = createIssuer({ now, ...(opts.issuerKeys ? { keys: opts.issuerKeys } : {}) });
  const iss = { signer: issuer.signer, name: issuer.name };
  const createLedger: Pki['createLedger'] = (o = {}) => {
    const id = make(Role.LEDGER, o.name ?? 'DT ledger', iss, o.validity ?? validity, {}, o.keys);
    return { ...id, chain: [id.cert] };
  };
  const createBank: Pki['createBank'] = (o) => {
    const id = make(Role.BANK, o.name, iss, o.validity ?? validity, { perms: o.perms }, o.keys);
    return { ...id, chain: [id.cert] };
  };
  const ledger = createLedger(opts.ledgerKeys ? { keys: opts.ledgerKeys } : {});
  const bank = createBank({
    name: 'DT bank',
    perms: BankPermission.ISSUING | BankPermission.ACQUIRING,
    ...(opts.bankKeys ? { keys: opts.bankKeys } : {}),
  });
  let cards = 0;
  const issueCard: Pki['issueCard'] = (o = {}) => {
    const b = o.bank ?? bank;
    const id = make(
      Role.CARD,
      o.name ?? `card-${++cards}`,
      { signer: b.signer, name: 'bank' },
      o.validity ?? validity,
      { limits: o.limits ?? DEFAULT_CARD_LIMITS, currency: CURRENCY_KZT },
      o.keys,
    );
    return { ...id, chain: [id.cert, b.cert] };
  };
  const issueTerminal: Pki['issueTerminal'] = (o) => {
    const b = o.bank ?? bank;
    const id = make(Role.TERMINAL, o.merchant.id, { signer: b.signer, name: 'bank' }, o.validity ?? validity, terminalClaims(o), o.keys);
    return { ...id, chain: [id.cert, b.cert] };
  };
  let acquirers = 0;
  // (Named apart from the module's issueAcquirer, which it calls.)
  const newAcquirer: Pki['issueAcquirer'] = (o = {}) =>
    issueAcquirer(o.bank ?? bank, {
      validity: o.validity ?? validity,
      name: o.name ?? `acquirer-${++acquirers}`,
      ...(o.keys ? { keys: o.keys } : {}),
    });
  return { now, issuer, ledger, bank, createLedger, createBank, issueCard, issueTerminal, issueAcquirer: newAcquirer };
}

/** Certifies a bank under an existing issuer identity. */
export function issueBank(issuer: Identity, opts: { name: string; perms: number; validity: Validity; keys?: KeyPair }): Identity {
  const id = make(Role.BANK, opts.name, { signer: issuer.signer, name: 'issuer' }, opts.validity, { perms: opts.perms }, opts.keys);
  return { ...id, chain: [id.cert] };
}

/** Issues a card certificate from an existing bank identity (the card key is generated unless `keys` is given). */
export function issueCard(bank: Identity, opts: { validity: Validity; limits?: CardLimits; keys?: KeyPair; name?: string }): Identity {
  const id = make(
    Role.CARD,
    opts.name ?? 'card',
    { signer: bank.signer, name: 'bank' },
    opts.validity,
    { limits: opts.limits ?? DEFAULT_CARD_LIMITS, currency: CURRENCY_KZT },
    opts.keys,
  );
  return { ...id, chain: [id.cert, bank.cert] };
}

/** The claims of a terminal certificate: its merchant, and its CRL-age policy when given. */
function terminalClaims(o: { merchant: MerchantInfo; crlMaxAge?: number }): Record<string, unknown> {
  return { merchant: o.merchant, ...(o.crlMaxAge !== undefined ? { crlMaxAge: o.crlMaxAge } : {}) };
}

/** Issues a terminal certificate from an existing bank identity (`crlMaxAge` as in {@link Pki.issueTerminal}). */
export function issueTerminal(
  bank: Identity,
  opts: { validity: Validity; merchant: MerchantInfo; keys?: KeyPair; crlMaxAge?: number },
): Identity {
  const id = make(Role.TERMINAL, opts.merchant.id, { signer: bank.signer, name: 'bank' }, opts.validity, terminalClaims(opts), opts.keys);
  return { ...id, chain: [id.cert, bank.cert] };
}

/**
 * Issues an acquirer certificate (role ACQUIRER) from an existing bank identity with ACQUIRING:
 * the key the acquirer signs its settle requests with (SPEC §7.7.2). Chain `[acquirer, bank]`.
 */
export function issueAcquirer(bank: Identity, opts: { validity: Validity; name?: string; keys?: KeyPair }): Identity {
  const id = make(Role.ACQUIRER, opts.name ?? 'acquirer', { signer: bank.signer, name: 'bank' }, opts.validity, {}, opts.keys);
  return { ...id, chain: [id.cert, bank.cert] };
}

/** An identity from its key pair and certificate chain (e.g. read back from a key file). */
export function identityFrom(keys: KeyPair, chain: readonly Uint8Array[]): Identity {
  return { keys, signer: keyPairSigner(keys), kid: keyId(keys.publicKey), cert: chain[0]!, chain };
}

/** Certifies a ledger key under an existing issuer identity. */
export function issueLedgerCert(issuer: Identity, opts: { validity: Validity; name?: string; keys?: KeyPair }): Identity {
  const id = make(Role.LEDGER, opts.name ?? 'DT ledger', { signer: issuer.signer, name: 'issuer' }, opts.validity, {}, opts.keys);
  return { ...id, chain: [id.cert] };
}

/**
 * Certifies a terminal key the bank does not hold (the public key of a verified certificate
 * request, `openCertificateRequest`): the TERMINAL certificate under an acquiring bank, with its
 * merchant and, when given, its CRL-age policy. Returns the certificate bytes.
 */
export function certifyTerminalKey(
  bank: { signer: Signer; name: string },
  opts: { publicKey: Uint8Array; merchant: MerchantInfo; validity: Validity; crlMaxAge?: number; iat?: number },
): Uint8Array {
  return issueCertificate(
    {
      iss: bank.name,
      sub: opts.merchant.id,
      iat: opts.iat ?? opts.validity.nbf,
      nbf: opts.validity.nbf,
      exp: opts.validity.exp,
      role: Role.TERMINAL,
      publicKey: opts.publicKey,
      currency: CURRENCY_KZT,
      ...terminalClaims(opts),
    } as never,
    bank.signer,
  );
}
