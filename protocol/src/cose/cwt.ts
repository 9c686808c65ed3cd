/**
 * DT certificates: CWTs (RFC 8392) signed as COSE_Sign1 whose `cnf` claim
 * (RFC 8747) carries the subject's COSE_Key, plus private claims for role,
 * bank permissions, card limits, merchant identity and currency.
 *
 * Trust model (SPEC.md §5): the issuer root is a self-signed certificate
 * pinned by every party. The root certifies ledgers and banks; a bank with
 * the ISSUING permission certifies cards; a bank with the ACQUIRING
 * permission certifies terminals and its acquirer service. Chains are given leaf first, root excluded.
 *
 * @module
 */
import { DtError, ErrorCode } from '../errors.ts';
import { bytesEqual } from '../bytes.ts';
import { keyId, nobleVerifier, publicKeyCoordinates, publicKeyFromCoordinates, type Verifier } from '../crypto/suite.ts';
import { openSigned, signMessage } from '../codec.ts';
import { verifyCoseSign1, type Signer } from './sign1.ts';
import { BankPermission, LIMITS, Role, type Certificate } from '../schema/messages.ts';

/** What an issuer fills in; `cnf` is built from `publicKey`. */
export type CertificateTemplate = Omit<Certificate, 'cnf'> & { publicKey: Uint8Array };

/** A certificate whose signature, validity and issuer have been checked. */
export interface VerifiedCertificate {
  readonly bytes: Uint8Array;
  readonly claims: Certificate;
  readonly publicKey: Uint8Array;
  readonly kid: Uint8Array;
}

/** Which role may certify which, and the permission the issuer needs. */
const PARENT: Record<number, { role: Role; perm?: number }> = {
  [Role.LEDGER]: { role: Role.ISSUER },
  [Role.BANK]: { role: Role.ISSUER },
  [Role.CARD]: { role: Role.BANK, perm: BankPermission.ISSUING },
  [Role.TERMINAL]: { role: Role.BANK, perm: BankPermission.ACQUIRING },
  // The acquirer's service key: it signs the settle requests the ledger accepts (SPEC §7.7.2).
  [Role.ACQUIRER]: { role: Role.BANK, perm: BankPermission.ACQUIRING },
};

function checkRoleClaims(c: Certificate): void {
  // Role-specific claims must be present exactly where they mean something.
  const need = (ok: boolean, what: string) => {
    if (!ok) throw new DtError(ErrorCode.CERT_WRONG_ROLE, `certificate claims do not fit its role: ${what}`, { role: c.role });
  };
  need((c.role === Role.BANK) === (c.perms !== undefined), 'perms only and always for banks');
  need((c.role === Role.CARD) === (c.limits !== undefined), 'limits only and always for cards');
  need((c.role === Role.TERMINAL) === (c.merchant !== undefined), 'merchant only and always for terminals');
  need(c.crlMaxAge === undefined || c.role === Role.TERMINAL, 'crlMaxAge only for terminals');
  need(c.nbf <= c.exp, 'nbf after exp');
}

/** Issues (signs) a certificate. The signer is the issuer's key. */
export function issueCertificate(t: CertificateTemplate, issuer: Signer): Uint8Array {
  const { publicKey, ...rest } = t;
  const { x, y } = publicKeyCoordinates(publicKey);
  const claims: Certificate = { ...rest, cnf: { coseKey: { kid: keyId(publicKey), x, y } } };
  checkRoleClaims(claims);
  return signMessage('Certificate', claims, issuer);
}

/** The subject public key of a certificate, checking that the COSE_Key's kid matches the key. */
export function subjectKey(claims: Certificate): { publicKey: Uint8Array; kid: Uint8Array } {
  const k = claims.cnf.coseKey;
  const publicKey = publicKeyFromCoordinates(k.x, k.y);
  const kid = keyId(publicKey);
  if (!bytesEqual(kid, k.kid)) throw new DtError(ErrorCode.KEY_MISMATCH, 'cnf kid does not match the key');
  return { publicKey, kid };
}

function checkTime(claims: Certificate, at: number, index: number): void {
  if (at < claims.nbf) throw new DtError(ErrorCode.CERT_NOT_YET_VALID, 'certificate not yet valid', { index, nbf: claims.nbf, at });
  if (at > claims.exp) throw new DtError(ErrorCode.CERT_EXPIRED, 'certificate expired', { index, exp: claims.exp, at });
}

/**
 * Verifies the self-signed issuer root. Parties pin the root by its kid (or
 * bytes); `expectedKid`, when given, must match.
 */
export function verifyRoot(
  bytes: Uint8Array,
  at: number,
  expectedKid?: Uint8Array,
  verifier: Verifier = nobleVerifier,
): VerifiedCertificate {
  const { cose, message } = openSigned('Certificate', bytes);
  if (message.role !== Role.ISSUER) throw new DtError(ErrorCode.CERT_WRONG_ROLE, 'root must have the issuer role');
  checkRoleClaims(message);
  const { publicKey, kid } = subjectKey(message);
  if (expectedKid && !bytesEqual(kid, expectedKid)) throw new DtError(ErrorCode.CERT_UNTRUSTED_ROOT, 'root is not the pinned issuer');
  verifyCoseSign1(cose, publicKey, verifier);
  checkTime(message, at, 0);
  return { bytes, claims: message, publicKey, kid };
}

/** Options for {@link verifyChain}. */
export interface ChainOptions {
  /** The verified issuer root (trust anchor). */
  readonly root: VerifiedCertificate;
  /** Time (seconds) at which every certificate must be valid. */
  readonly at: number;
  /** Role the leaf must have. */
  readonly leafRole: Role;
  readonly verifier?: Verifier;
  /**
   * Certificate signatures verified earlier (a card's small persistent cache, SPEC §10.7):
   * a certificate `known` under its issuer's key id skips its signature verification; every
   * other check (roles, permissions, issuer key id, validity at `at`) still runs. Each
   * certificate whose signature is verified now is passed to `verified`.
   */
  readonly memo?: CertificateMemo;
}

/** See {@link ChainOptions.memo}. Keyed by the certificate's full bytes and the issuer's key id. */
export interface CertificateMemo {
  /** True when `bytes` (the whole certificate, signature included) verified under the key `issuerKid` before. */
  known(issuerKid: Uint8Array, bytes: Uint8Array): boolean;
  /** Called after `bytes` verified under the key `issuerKid`. */
  verified(issuerKid: Uint8Array, bytes: Uint8Array): void;
}

/**
 * Verifies a chain (leaf first, root excluded) up to the root: every
 * signature, validity period, role relation and bank permission.
 * Returns the verified certificates, leaf first.
 */
export function verifyChain(chain: readonly Uint8Array[], opts: ChainOptions): VerifiedCertificate[] {
  if (chain.length === 0 || chain.length > LIMITS.maxChainCerts) {
    throw new DtError(ErrorCode.CERT_CHAIN_BROKEN, 'chain length out of range', { length: chain.length });
  }
  const verifier = opts.verifier ?? nobleVerifier;
  const opened = chain.map((b) => openSigned('Certificate', b));
  const out: VerifiedCertificate[] = new Array(chain.length);
  let parent: VerifiedCertificate = opts.root;
  // Walk from the certificate the root signed down to the leaf.
  for (let i = chain.length - 1; i >= 0; i--) {
    const { cose, message } = opened[i]!;
    checkRoleClaims(message);
    const rule = PARENT[message.role];
    if (!rule) throw new DtError(ErrorCode.CERT_WRONG_ROLE, 'role cannot appear in a chain', { index: i, role: message.role });
    if (parent.claims.role !== rule.role)
      throw new DtError(ErrorCode.CERT_CHAIN_BROKEN, 'issuer has the wrong role for this subject', { index: i });
    if (rule.perm !== undefined && ((parent.claims.perms ?? 0) & rule.perm) === 0) {
      throw new DtError(ErrorCode.CERT_NOT_PERMITTED, 'issuing bank lacks the permission for this role', { index: i, role: message.role });
    }
    if (!bytesEqual(cose.kid, parent.kid))
      throw new DtError(ErrorCode.CERT_CHAIN_BROKEN, 'certificate not signed by the next one in the chain', { index: i });
    if (!opts.memo?.known(parent.kid, chain[i]!)) {
      verifyCoseSign1(cose, parent.publicKey, verifier);
      opts.memo?.verified(parent.kid, chain[i]!);
    }
    checkTime(message, opts.at, i);
    const { publicKey, kid } = subjectKey(message);
    parent = { bytes: chain[i]!, claims: message, publicKey, kid };
    out[i] = parent;
  }
  if (out[0]!.claims.role !== opts.leafRole) {
    throw new DtError(ErrorCode.CERT_WRONG_ROLE, 'leaf has the wrong role', { expected: opts.leafRole, actual: out[0]!.claims.role });
  }
  return out;
}
