/**
 * Admission checks for a terminal's signed Batch: what the acquirer verifies
 * before it stores anything. Deep validation of the handovers (card chains,
 * tokens, conservation, limits) is the ledger's job at settlement; here every
 * handover is only decoded within the protocol's size limits and its transfer
 * opened, so that a batch the ledger could not even parse is refused at the
 * door instead of poisoning the forwarding queue.
 *
 * @module
 */
import {
  BankPermission,
  bytesEqual,
  DtError,
  ErrorCode,
  decodeMessage,
  encodeDeterministic,
  isDtError,
  openSigned,
  payloadHash,
  Role,
  sha256,
  verifyChain,
  verifyCoseSign1,
  type Batch,
  type OpenedMessage,
  type Verifier,
  type VerifiedCertificate,
} from '@dt/protocol';
import { AcquirerError, AcquirerErrorCode } from './errors.ts';

/** Who this acquirer is and whom it trusts. */
export interface TrustConfig {
  /** The pinned, verified issuer root. */
  readonly root: VerifiedCertificate;
  /** This acquirer's bank certificate, verified against the root, with ACQUIRING permission. */
  readonly bank: VerifiedCertificate;
  readonly verifier: Verifier;
}

/** A batch that passed admission. */
export interface AdmittedBatch {
  readonly batch: Batch;
  /** SHA-256 of the exact signed bytes (what an idempotent resend must match). */
  readonly hash: Uint8Array;
  /** Payload hash of each handover's transfer, in handover order. */
  readonly transferHashes: Uint8Array[];
  /** The transfer hash each adjustment (void, refund) names, in adjustment order. */
  readonly adjustmentTransfers: Uint8Array[];
  readonly terminal: VerifiedCertificate;
  /** The terminal's chain as deterministic CBOR (remembered to authenticate its later requests). */
  readonly chainBytes: Uint8Array;
}

/**
 * Verifies a terminal chain at `at` (seconds) up to the pinned root and checks
 * that the acquiring bank is this acquirer's bank. Maps protocol certificate
 * errors to stable acquirer codes.
 */
export function verifyTerminalChain(chain: readonly Uint8Array[], trust: TrustConfig, at: number): VerifiedCertificate {
  let certs: VerifiedCertificate[];
  try {
    certs = verifyChain(chain, { root: trust.root, at, leafRole: Role.TERMINAL, verifier: trust.verifier });
  } catch (e) {
    if (isDtError(e, ErrorCode.CERT_EXPIRED) || isDtError(e, ErrorCode.CERT_NOT_YET_VALID)) {
      throw new AcquirerError(AcquirerErrorCode.TERMINAL_EXPIRED, 'terminal certificate chain is not valid now', {
        cause: (e as DtError).code,
      });
    }
    if (isDtError(e))
      throw new AcquirerError(AcquirerErrorCode.TERMINAL_UNKNOWN, 'terminal certificate chain does not lead to the pinned issuer root', {
        cause: e.code,
      });
    throw e;
  }
  // verifyChain proved the bank is certified by the root with ACQUIRING; it must also be *our* bank.
  const bank = certs[1];
  if (bank === undefined || !bytesEqual(bank.kid, trust.bank.kid)) {
    throw new AcquirerError(AcquirerErrorCode.TERMINAL_WRONG_BANK, 'terminal is certified by another acquiring bank');
  }
  if (((bank.claims.perms ?? 0) & BankPermission.ACQUIRING) === 0) {
    throw new AcquirerError(AcquirerErrorCode.TERMINAL_WRONG_BANK, 'bank lacks the acquiring permission');
  }
  return certs[0]!;
}

function malformed(code: AcquirerErrorCode, message: string, e: unknown, extra: Record<string, number> = {}): never {
  const cause = isDtError(e) ? e.code : 'UNKNOWN';
  throw new AcquirerError(code, message, { cause, ...extra });
}

/**
 * Admits a signed batch: parse (bounded), verify the terminal's chain at `at`
 * (seconds), the batch signature, that the batch names its signer, and that
 * every handover decodes and its transfer pays this terminal. Throws an
 * {@link AcquirerError}; returns what the store needs. `alreadyOpened` is
 * `openSigned('Batch', bytes)` when the caller parsed it already.
 */
export function admitBatch(
  bytes: Uint8Array,
  trust: TrustConfig,
  at: number,
  isRevoked: (kid: Uint8Array) => boolean,
  alreadyOpened?: OpenedMessage<'Batch'>,
): AdmittedBatch {
  let opened = alreadyOpened;
  if (opened === undefined) {
    try {
      opened = openSigned('Batch', bytes);
    } catch (e) {
      malformed(AcquirerErrorCode.BATCH_MALFORMED, 'body is not a well-formed signed Batch', e);
    }
  }
  const { cose, message: batch } = opened;
  const terminal = verifyTerminalChain(batch.chain, trust, at);
  // The batch must be signed by the terminal it names, with the key the chain certifies.
  if (!bytesEqual(batch.terminal, terminal.kid) || !bytesEqual(cose.kid, terminal.kid)) {
    throw new AcquirerError(AcquirerErrorCode.BATCH_BAD_SIGNATURE, 'batch is not signed by the terminal it names');
  }
  try {
    verifyCoseSign1(cose, terminal.publicKey, trust.verifier);
  } catch (e) {
    if (isDtError(e)) throw new AcquirerError(AcquirerErrorCode.BATCH_BAD_SIGNATURE, 'batch signature does not verify', { cause: e.code });
    throw e;
  }
  if (isRevoked(terminal.kid)) throw new AcquirerError(AcquirerErrorCode.TERMINAL_REVOKED, 'terminal is revoked');

  const transferHashes: Uint8Array[] = [];
  batch.handovers.forEach((hb, index) => {
    let transferCose;
    let payee: Uint8Array;
    try {
      const h = decodeMessage('Handover', hb);
      const t = openSigned('Transfer', h.transfer);
      transferCose = t.cose;
      payee = t.message.payee;
    } catch (e) {
      malformed(AcquirerErrorCode.HANDOVER_MALFORMED, 'a handover does not decode', e, { index });
    }
    if (!bytesEqual(payee, terminal.kid)) {
      throw new AcquirerError(AcquirerErrorCode.HANDOVER_WRONG_PAYEE, 'a handover does not pay the submitting terminal', { index });
    }
    transferHashes.push(payloadHash(transferCose));
  });
  // Voids and refunds (SPEC §7.7.3): each must at least decode as a SignedAdjustment; its signature and
  // what it names are the ledger's to judge (an adjustment the ledger refuses gets an INVALID outcome).
  const adjustmentTransfers: Uint8Array[] = [];
  (batch.adjustments ?? []).forEach((ab, adjustment) => {
    try {
      adjustmentTransfers.push(openSigned('Adjustment', ab).message.transfer);
    } catch (e) {
      malformed(AcquirerErrorCode.BATCH_MALFORMED, 'an adjustment does not decode', e, { adjustment });
    }
  });
  return { batch, hash: sha256(bytes), transferHashes, adjustmentTransfers, terminal, chainBytes: encodeDeterministic([...batch.chain]) };
}
