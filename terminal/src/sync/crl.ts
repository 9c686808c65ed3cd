/**
 * Revocation lists: verify (ledger signature, with the pinned trust store)
 * and install into the journal. A list that does not verify is refused and
 * the terminal keeps the one it has (fail closed: its age keeps growing and
 * the risk policy narrows, then stops, offline acceptance).
 *
 * @module
 */
import { createTrustStore, isDtError, verifySigned, type RevocationList } from '@dt/protocol';
import { TerminalError, TerminalErrorCode } from '../errors.ts';
import type { TerminalIdentity } from '../identity.ts';
import type { Journal } from '../journal/journal.ts';

/** Verifies a signed RevocationList with the ledger key of the terminal's trust store. */
export function verifyRevocationList(bytes: Uint8Array, identity: TerminalIdentity, now: number): RevocationList {
  try {
    const trust = createTrustStore({ root: identity.root, ledgerCert: identity.ledgerCert, at: now });
    return verifySigned('RevocationList', bytes, trust.ledgerKey).message;
  } catch (e) {
    throw new TerminalError(
      TerminalErrorCode.BAD_RESPONSE,
      `revocation list refused: ${isDtError(e) ? e.code : (e as Error).message}`,
      {},
      e,
    );
  }
}

/** Result of {@link installRevocationList}. */
export interface CrlInstallResult {
  /** True when the journal now holds this list (new or same version). */
  readonly installed: boolean;
  readonly version: number;
  readonly issued: number;
  readonly revoked: number;
}

/**
 * Verifies and installs a revocation list. A list from the future (beyond
 * a small clock skew) is refused: its age would read as fresh for too long.
 * An older version than the one held is ignored (never go back).
 */
export function installRevocationList(
  journal: Journal,
  bytes: Uint8Array,
  identity: TerminalIdentity,
  now: number,
  skewSeconds = 300,
): CrlInstallResult {
  const crl = verifyRevocationList(bytes, identity, now);
  if (crl.issued > now + skewSeconds) {
    throw new TerminalError(TerminalErrorCode.BAD_RESPONSE, 'revocation list issued in the future; check the terminal clock', {
      issued: crl.issued,
      now,
    });
  }
  const installed = journal.storeCrl({ version: crl.version, issued: crl.issued, bytes, revoked: crl.revoked });
  return { installed, version: crl.version, issued: crl.issued, revoked: crl.revoked.length };
}
