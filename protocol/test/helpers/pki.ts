/**
 * A deterministic test PKI: issuer root, ledger, an issuing bank, an
 * acquiring bank, a card and a terminal, with real P-256 keys derived from
 * fixed seeds (so every run signs the same bytes) and real signatures.
 *
 * Not a test file: ava only runs `test/**\/*.test.ts`.
 */
import {
  BankPermission,
  concatBytes,
  CURRENCY_KZT,
  generateKeyPair,
  issueCertificate,
  keyPairSigner,
  Role,
  sha256,
  u32be,
  utf8,
  verifyRoot,
  type CertificateTemplate,
  type KeyPair,
  type RandomSource,
  type Signer,
  type VerifiedCertificate,
} from '../../src/index.ts';

/** 2026-01-01T00:00:00Z, the reference "now" of the test PKI. */
export const T0 = 1_767_225_600;
/** One day in seconds. */
export const DAY = 86_400;

/** A reproducible byte source: SHA-256(seed ‖ counter) blocks. For tests only, never for real keys. */
export function seededRandom(seed: string): RandomSource {
  let counter = 0;
  return (length) => {
    const out = new Uint8Array(length);
    for (let off = 0; off < length; off += 32) {
      const block = sha256(concatBytes(utf8(seed), u32be(counter++)));
      out.set(block.subarray(0, Math.min(32, length - off)), off);
    }
    return out;
  };
}

/** A party of the test PKI. */
export interface Party {
  readonly keys: KeyPair;
  readonly signer: Signer;
  /** Its certificate (the root's is self-signed). */
  readonly cert: Uint8Array;
}

/** Key pair derived from a name. */
export function keysFor(name: string): KeyPair {
  return generateKeyPair(seededRandom(`dt-test-key:${name}`));
}

/** A certificate template valid from T0 − 1 day to T0 + 365 days, with the claims its role needs. */
export function template(role: number, publicKey: Uint8Array, extra: Partial<CertificateTemplate> = {}): CertificateTemplate {
  const base: CertificateTemplate = {
    iss: 'DT test issuer',
    sub: `test subject role ${role}`,
    exp: T0 + 365 * DAY,
    nbf: T0 - DAY,
    iat: T0 - DAY,
    role,
    publicKey,
  };
  if (role === Role.BANK) base.perms = BankPermission.ISSUING | BankPermission.ACQUIRING;
  if (role === Role.CARD) base.limits = { perPayment: 50_000_00, offlineTotal: 200_000_00, offlineCount: 10, cvmLimit: 10_000_00 };
  if (role === Role.TERMINAL) base.merchant = { id: 'M-0001', mcc: 5411, name: 'Canteen 1' };
  if (role === Role.CARD || role === Role.TERMINAL) base.currency = CURRENCY_KZT;
  return { ...base, ...extra };
}

/** Creates a party whose certificate `issuer` signs (or that signs its own, for the root). */
export function party(name: string, role: number, issuer: Signer | 'self', extra: Partial<CertificateTemplate> = {}): Party {
  const keys = keysFor(name);
  const signer = keyPairSigner(keys);
  const cert = issueCertificate(template(role, keys.publicKey, extra), issuer === 'self' ? signer : issuer);
  return { keys, signer, cert };
}

/** The whole test PKI. */
export interface Pki {
  readonly issuer: Party;
  readonly ledger: Party;
  /** Bank with ISSUING only. */
  readonly issuingBank: Party;
  /** Bank with ACQUIRING only. */
  readonly acquiringBank: Party;
  readonly card: Party;
  readonly terminal: Party;
  /** The verified root (trust anchor) at T0. */
  readonly root: VerifiedCertificate;
  readonly cardChain: Uint8Array[];
  readonly terminalChain: Uint8Array[];
}

let cached: Pki | undefined;

/** Builds (once per test file) the standard test PKI. */
export function pki(): Pki {
  if (cached) return cached;
  const issuer = party('issuer', Role.ISSUER, 'self', { iss: 'DT issuer', sub: 'DT issuer' });
  const ledger = party('ledger', Role.LEDGER, issuer.signer);
  const issuingBank = party('issuing-bank', Role.BANK, issuer.signer, { perms: BankPermission.ISSUING });
  const acquiringBank = party('acquiring-bank', Role.BANK, issuer.signer, { perms: BankPermission.ACQUIRING });
  const card = party('card', Role.CARD, issuingBank.signer);
  const terminal = party('terminal', Role.TERMINAL, acquiringBank.signer);
  const root = verifyRoot(issuer.cert, T0, issuer.signer.kid);
  cached = {
    issuer,
    ledger,
    issuingBank,
    acquiringBank,
    card,
    terminal,
    root,
    cardChain: [card.cert, issuingBank.cert],
    terminalChain: [terminal.cert, acquiringBank.cert],
  };
  return cached;
}
