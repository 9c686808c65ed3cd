/**
 * The payment kernel: from "waiting for a card" to an outcome.
 *
 * ```text
 * WAITING_FOR_CARD -> SELECTING -> [risk] -> [PIN_ENTRY] -> PAYING -> VALIDATING -> COMMITTING -> APPROVED
 *        |               |            |           |            |            |
 *      END(NO_CARD)   END(NOT_DT)  ONLINE_REQ.  DECLINED   PRESENT_CARD   DECLINED
 *                                                           _AGAIN (torn)
 * ```
 *
 * It talks to cards only through a {@link CardReader} (any `ApduTransport`),
 * validates the handover with the protocol's `validateHandover` (SPEC.md
 * §7.4 steps 1-7; never re-implemented here), applies the terminal's risk policy,
 * and commits the payment to the journal BEFORE it returns APPROVED.
 *
 * Torn taps: the PAY attempt is journalled before the command leaves the
 * terminal. If no answer comes back (card pulled, timeout, crash), the
 * attempt is `torn` and the next tap of the same amount (from the same card,
 * when the card announced its id) names it in `retryOf`; the card then
 * returns the same handover instead of signing again, and the journal's
 * uniqueness on the transfer hash makes a second recording impossible.
 *
 * Failed exchanges are told apart by the error's type (the protocol's
 * `transportFailureOf`): a card removed, a broken link, a timeout or a reader
 * gone is a lost card (PRESENT CARD AGAIN, torn as above); a
 * `TransportBusyError` (an exchange raced another) or any untyped error is a
 * bug: END `INTERNAL_ERROR`, nothing approved, a PAY attempt kept torn.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import {
  bytesEqual,
  Capability,
  completeHistory,
  decodeMessage,
  encodeMessage,
  CardStatusError,
  Cvm,
  ErrorCode,
  exchange,
  getStatusCommand,
  HandoverCode,
  hasCapability,
  isDtError,
  isTransportError,
  LIMITS,
  MAX_SELECT_ANSWER,
  openSigned,
  parseApplicationInfo,
  parseLastNonce,
  parsePinResult,
  payCommand,
  selectCommand,
  signMessage,
  SW,
  swHex,
  toHex,
  transportFailureOf,
  validateHandover,
  verifyPinCommand,
  createTrustStore,
  type ApduTransport,
  type ApplicationInfo,
  type ExpectedRequest,
  type PaymentRequest,
  type TrustStore,
  type Verifier,
} from '@dt/protocol';
import { isTerminalError, TerminalErrorCode } from '../errors.ts';
import { AttemptState, type Journal, type AttemptRecord } from '../journal/journal.ts';
import { assessRisk, certifiedCrlMaxAge, effectiveMaxCrlAge, RiskReason, type RiskPolicy } from '../policy.ts';
import type { CardReader, CardSession } from '../transports/reader.ts';
import { deadline } from '../util/abort.ts';
import type { TerminalIdentity } from '../identity.ts';
import { DeclineReason, EndReason, type KernelState, type TapOutcome } from './outcome.ts';
import type { PinPad } from './pinpad.ts';

/**
 * Validation failures that damage in transit can cause (a flipped bit breaks the CBOR framing,
 * a certificate, token or transfer signature, or a hash link of the history). The first one of
 * an attempt chain (a fresh request) is answered PRESENT CARD AGAIN and the retry gets the same
 * handover back; a damaged answer to the retry is declined ({@link DeclineReason.CARD_ANSWER_INVALID}),
 * so a card that always answers garbage cannot keep the terminal retrying.
 */
const DAMAGE_CODES: ReadonlySet<string> = new Set([
  HandoverCode.HANDOVER_MALFORMED,
  HandoverCode.HANDOVER_CHAIN,
  HandoverCode.TOKEN_INVALID,
  HandoverCode.TRANSFER_SIGNATURE,
  HandoverCode.HISTORY_BROKEN,
]);

/**
 * Exchange errors that mean the card answered something no card may answer (no status word,
 * 61xx to GET RESPONSE without data, a response longer than a handover may be): handled like a
 * damaged answer, not like a card that left the field, so a card that always answers so is
 * declined after one retry instead of being asked to present itself again forever.
 */
const BROKEN_ANSWER_CODES: ReadonlySet<string> = new Set([ErrorCode.APDU_MALFORMED, ErrorCode.TOO_LARGE]);

/**
 * Cards remembered with the time of their last damaged answer (see `#damaged`). A bound, so
 * that cards announcing a new id at every tap cannot grow the kernel's memory.
 */
const MAX_DAMAGED_CARDS = 256;

/** Chained command data the kernel sends to an applet that announces no (valid) `maxCommand`. */
const DEFAULT_MAX_COMMAND = 255 * 16;
/** The most the kernel chains whatever the applet announces (the protocol's short-APDU chain bound). */
const MAX_COMMAND = 65535;

/** Time limits of one tap, in milliseconds. */
export interface KernelTimeouts {
  /** Waiting for a card to be presented. */
  readonly cardMs: number;
  /** The whole card conversation once the card is detected (the contactless budget, generous for PIN entry). */
  readonly tapMs: number;
  /** One PIN entry on the PIN pad. */
  readonly pinMs: number;
}

/** Defaults: 60 s to present a card, 10 s for the card conversation, 60 s per PIN entry. */
export const DEFAULT_TIMEOUTS: KernelTimeouts = { cardMs: 60_000, tapMs: 10_000, pinMs: 60_000 };

/** Construction options of {@link PaymentKernel}. */
export interface KernelOptions {
  readonly identity: TerminalIdentity;
  readonly journal: Journal;
  readonly policy: RiskPolicy;
  readonly timeouts?: Partial<KernelTimeouts>;
  /** The PIN pad; without one, a tap that needs a PIN is declined (NO_PIN_PAD). */
  readonly pinPad?: PinPad;
  /** Clock in seconds (terminal time, copied into requests). */
  readonly now?: () => number;
  /** CSPRNG for nonces (default `node:crypto` randomBytes). Never a counter or the time. */
  readonly random?: (n: number) => Uint8Array;
  /** Signature verifier (default noble; a server-grade terminal may pass `nativeVerifier`). */
  readonly verifier?: Verifier;
  /** PIN entries allowed per tap before declining (default 3). */
  readonly maxPinEntries?: number;
}

/** Options of one {@link PaymentKernel.charge}. */
export interface ChargeOptions {
  readonly signal?: AbortSignal;
  /** Progress callback (for a display): never receives secrets. */
  readonly onProgress?: (state: KernelState, info?: Record<string, string | number>) => void;
}

const nodeRandom = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

/** Facts from SELECT (read with the protocol's {@link parseApplicationInfo}). */
interface Selected {
  readonly info: ApplicationInfo;
  readonly card: Uint8Array | undefined;
  readonly maxCommand: number;
}

class Outcome extends Error {
  constructor(readonly outcome: TapOutcome) {
    super(outcome.kind);
  }
}

const stop = (o: TapOutcome): never => {
  throw new Outcome(o);
};

/** A stable, non-secret code for an error (diagnostics in outcomes). */
function errorCode(e: unknown): string {
  if (isTerminalError(e) || isDtError(e) || isTransportError(e)) return e.code;
  const c = (e as { code?: unknown })?.code;
  return typeof c === 'string' ? c : e instanceof Error ? e.name : 'UNKNOWN';
}

/**
 * What a failed exchange means, by the error's type:
 * - `lost`: the card is gone or did not answer (usably): a typed transport failure (card
 *   removed, link failed, timed out, reader gone) or a protocol error about the bytes that
 *   came back (a frame or APDU that does not decode): PRESENT CARD AGAIN, a PAY attempt stays torn;
 * - `internal`: a bug, not the card: `TransportBusyError` (a second exchange raced this one)
 *   or any other error: END `INTERNAL_ERROR`, nothing approved.
 */
function exchangeFailure(e: unknown): 'lost' | 'internal' {
  const failure = transportFailureOf(e);
  if (failure !== undefined) return failure === 'busy' ? 'internal' : 'lost';
  if (isDtError(e) && !(e instanceof CardStatusError)) return 'lost';
  return 'internal';
}

/** The END outcome of a bug met during a tap (see {@link exchangeFailure}). */
function internalError(e: unknown): TapOutcome {
  return { kind: 'END', reason: EndReason.INTERNAL_ERROR, detail: errorCode(e) };
}

/**
 * The payment kernel. One instance per terminal; `charge` runs one tap at a
 * time (the reader lock refuses a second concurrent tap).
 *
 * @example
 * const kernel = new PaymentKernel({ identity, journal, policy, pinPad });
 * const outcome = await kernel.charge(reader, 1500, { signal });
 * if (outcome.kind === 'APPROVED') printReceipt(outcome.payment);
 */
export class PaymentKernel {
  readonly #o: KernelOptions;
  readonly #timeouts: KernelTimeouts;
  readonly #now: () => number;
  readonly #random: (n: number) => Uint8Array;
  /** The revocation-list age this terminal's certificate allows (SPEC §7.7 cover rule 2). */
  readonly #certifiedCrlMaxAge: number;
  /**
   * Card id (hex; `''` for cards that announce none) to the time of its last damaged answer.
   * Within the retry window a card gets PRESENT CARD AGAIN for a damaged answer once: a card
   * that answers garbage whatever the terminal asks (even one that reports a last nonce that
   * never matches, so that every tap looks like a fresh attempt) is then declined. Cleared by
   * an approval for the card. In memory: a restart allows one more retry, nothing else.
   */
  readonly #damaged = new Map<string, number>();

  /** Creates the kernel; torn attempts left `sent` by a crash are marked torn now. */
  constructor(options: KernelOptions) {
    this.#o = options;
    this.#certifiedCrlMaxAge = certifiedCrlMaxAge(options.identity.chain[0]!);
    this.#timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.#now = options.now ?? (() => Math.floor(Date.now() / 1000));
    this.#random = options.random ?? nodeRandom;
    options.journal.markSentAttemptsTorn();
  }

  /**
   * Runs one tap for `amount` (tiyn) on `reader` and returns its outcome.
   * Never throws for card, reader or validation problems: those are outcomes.
   */
  async charge(reader: CardReader, amount: number, options: ChargeOptions = {}): Promise<TapOutcome> {
    const progress = options.onProgress ?? (() => {});
    if (!Number.isSafeInteger(amount) || amount <= 0 || amount > LIMITS.maxAmount) {
      return { kind: 'END', reason: 'INVALID_AMOUNT' };
    }
    // Terminal risk management before any card is involved (EMV pre-processing).
    const journal = this.#o.journal;
    // Torn attempts past the retry window can no longer be named: close them, so what a
    // card can leave behind in the journal stays bounded (the ledger voids the orphans).
    journal.closeStaleTornAttempts(this.#o.policy.retryWindow);
    const crl = journal.crl();
    const risk = assessRisk(this.#o.policy, {
      amount,
      pending: journal.pendingSummary().amount,
      crlIssued: crl?.issued,
      now: this.#now(),
      certifiedCrlMaxAge: this.#certifiedCrlMaxAge,
    });
    if (!risk.offline) return { kind: 'ONLINE_REQUIRED', reason: risk.reason };
    // The terminal's own trust anchors are checked before any card is touched: if they
    // cannot verify, no handover could, and a card must not sign a transfer for nothing.
    let trust: TrustStore;
    try {
      trust = this.#trustStore(this.#now());
    } catch (e) {
      return { kind: 'END', reason: EndReason.TERMINAL_TRUST, detail: errorCode(e) };
    }

    progress('WAITING_FOR_CARD', { amount });
    let session: CardSession;
    try {
      session = await reader.waitForCard({ ...(options.signal ? { signal: options.signal } : {}), timeoutMs: this.#timeouts.cardMs });
    } catch (e) {
      if (options.signal?.aborted) return { kind: 'END', reason: EndReason.CANCELLED };
      if (isTerminalError(e, TerminalErrorCode.TIMEOUT)) return { kind: 'END', reason: EndReason.NO_CARD };
      // The reader is busy with another tap, or gone.
      if (isTransportError(e) || isTerminalError(e)) return { kind: 'END', reason: EndReason.READER, detail: e.code };
      return internalError(e);
    }
    progress('CARD_DETECTED', { reader: session.reader });
    const tap = deadline(options.signal, this.#timeouts.tapMs, 'tap');
    try {
      return await this.#tap(session, amount, risk.pinRequired, crl!.issued, trust, tap.signal, options.signal, progress);
    } catch (e) {
      if (e instanceof Outcome) return e.outcome;
      throw e;
    } finally {
      tap.dispose();
      await session.release().catch(() => {});
      progress('DONE');
    }
  }

  /** The trust store of a tap: the terminal's pinned root and ledger certificate, verified at `at`. Throws when they do not verify. */
  #trustStore(at: number): TrustStore {
    const { identity } = this.#o;
    return createTrustStore({
      root: identity.root,
      ledgerCert: identity.ledgerCert,
      at,
      ...(this.#o.verifier ? { verifier: this.#o.verifier } : {}),
    });
  }

  async #tap(
    session: CardSession,
    amount: number,
    terminalWantsPin: boolean,
    crlIssued: number,
    trust: TrustStore,
    signal: AbortSignal,
    cancel: AbortSignal | undefined,
    progress: NonNullable<ChargeOptions['onProgress']>,
  ): Promise<TapOutcome> {
    const { identity, journal } = this.#o;
    // ---- SELECT: is this a DT card?
    progress('SELECTING');
    const selected = await this.#select(session, signal, cancel);
    if (!hasCapability(selected.info, Capability.PAY))
      stop({ kind: 'END', reason: EndReason.CARD_NOT_USABLE, detail: 'no PAY capability' });

    // ---- a torn attempt of this card for the same amount is retried (retryOf).
    const { torn, unrecoverable } = await this.#pickTorn(session, selected, amount, signal, cancel);

    // ---- PIN (terminal CVM limit) before PAY; the card may still ask (6982).
    let pinDone = false;
    // Also before a torn-tap retry: if the card never got the first PAY, it signs anew and needs the PIN.
    if (terminalWantsPin) {
      await this.#verifyPin(session, amount, signal, cancel, progress);
      pinDone = true;
    }

    for (;;) {
      const now = this.#now();
      const banks = journal.heldBanks(now, LIMITS.maxHeldBanks);
      // The newest transfer of this card we hold with its chain: the card leaves that history out (SPEC §3.6 held).
      const held = selected.card ? journal.newestTransferOf(selected.card) : undefined;
      // The list must still be young enough at the request's own time (a PIN entry may have
      // taken a while): the transfer is dated `now`, and the ledger judges the list by it.
      if (now - crlIssued > effectiveMaxCrlAge(this.#o.policy, this.#certifiedCrlMaxAge)) {
        stop({ kind: 'ONLINE_REQUIRED', reason: RiskReason.REVOCATION_LIST_TOO_OLD });
      }
      const req: PaymentRequest = {
        amount,
        currency: identity.currency,
        terminal: identity.kid,
        merchant: identity.merchant.id,
        mcc: identity.merchant.mcc,
        nonce: this.#random(16),
        time: now,
        chain: identity.chain,
        ...(torn ? { retryOf: torn.nonce } : {}),
        // The issuing banks whose certificates we hold (verified under our root): their cards
        // leave the bank certificate out of the handover (SPEC §3.6, §3.8).
        ...(banks.length > 0 ? { banks } : {}),
        ...(held ? { held } : {}),
      };
      const signed = signMessage('PaymentRequest', req, identity.signer);
      // Journalled BEFORE the command leaves: a crash from here on leaves a torn attempt.
      journal.recordAttempt({
        nonce: req.nonce,
        amount,
        time: now,
        ...(selected.card ? { card: selected.card } : {}),
        ...(torn ? { retryOf: torn.nonce } : {}),
        request: signed,
      });
      progress('PAYING');
      let response: { data: Uint8Array; sw: number };
      try {
        response = await exchange(session, payCommand(signed), {
          signal,
          maxResponse: LIMITS.maxHandoverSize,
          maxCommand: selected.maxCommand,
        });
      } catch (e) {
        if (!signal.aborted && !cancel?.aborted && isDtError(e) && BROKEN_ANSWER_CODES.has(e.code)) {
          // The card did answer, but not with an APDU answer the protocol allows (no status word,
          // 61xx without data, more than a handover may be): its answer, not the field. Treated as
          // a damaged answer: one PRESENT CARD AGAIN per card and retry window, then declined.
          return this.#damagedAnswer(selected.card, req, torn, e.code);
        }
        // No (usable) answer: the card may have signed. Leave the attempt torn for a retry.
        journal.setAttemptState(req.nonce, AttemptState.TORN);
        if (cancel?.aborted)
          stop({ kind: 'END', reason: EndReason.CANCELLED, detail: 'payment interrupted; present the card again to complete it' });
        if (signal.aborted || exchangeFailure(e) === 'lost')
          stop({ kind: 'PRESENT_CARD_AGAIN', reason: 'NO_ANSWER', detail: errorCode(e), tornAttempt: toHex(req.nonce) });
        // A bug, not the card. The attempt stays torn in the journal: PAY may have reached the card.
        return stop(internalError(e));
      }
      if (response.sw === SW.SECURITY_NOT_SATISFIED && !pinDone) {
        // The card's own CVM limit: nothing was signed; verify the PIN and ask again with a fresh nonce.
        journal.setAttemptState(req.nonce, AttemptState.DECLINED);
        await this.#verifyPin(session, amount, signal, cancel, progress);
        pinDone = true;
        continue;
      }
      if (response.sw !== SW.OK) {
        journal.setAttemptState(req.nonce, AttemptState.DECLINED);
        return this.#cardRefused(response.sw);
      }
      return this.#validateAndCommit(response.data, req, selected.card, torn, unrecoverable, trust, progress);
    }
  }

  /**
   * Chooses the torn attempt to retry. With the card's id and its GET STATUS
   * `lastNonce` (the nonce of its last signed transfer), the choice is exact:
   * only the attempt the card can still answer is named. Without them (an
   * applet that does not say), the most recent torn attempt for this amount.
   */
  async #pickTorn(
    session: ApduTransport,
    selected: Selected,
    amount: number,
    signal: AbortSignal,
    cancel: AbortSignal | undefined,
  ): Promise<{ torn: AttemptRecord | undefined; unrecoverable: Uint8Array[] }> {
    const journal = this.#o.journal;
    if (!hasCapability(selected.info, Capability.RETRY)) return { torn: undefined, unrecoverable: [] };
    const candidates = journal.tornAttempts().filter((a) => a.created >= this.#now() - this.#o.policy.retryWindow);
    const mine = selected.card ? candidates.filter((a) => a.card !== undefined && toHex(a.card) === toHex(selected.card!)) : [];
    if (mine.length === 0) return { torn: journal.findTornAttempt(amount, selected.card, this.#o.policy.retryWindow), unrecoverable: [] };
    let lastNonce: Uint8Array | undefined;
    try {
      const st = await exchange(session, getStatusCommand(), { signal, maxResponse: 4096 });
      // Read leniently: a later applet may add keys to CardStatus.
      if (st.sw === SW.OK) lastNonce = parseLastNonce(st.data, 4096);
    } catch (e) {
      if (cancel?.aborted) stop({ kind: 'END', reason: EndReason.CANCELLED });
      if (signal.aborted || exchangeFailure(e) === 'lost') stop({ kind: 'PRESENT_CARD_AGAIN', reason: 'NO_ANSWER', detail: errorCode(e) });
      return stop(internalError(e));
    }
    if (lastNonce === undefined)
      return { torn: journal.findTornAttempt(amount, selected.card, this.#o.policy.retryWindow), unrecoverable: [] };
    const answerable = mine.find((a) => toHex(a.nonce) === toHex(lastNonce!));
    const unrecoverable = mine.filter((a) => a !== answerable).map((a) => a.nonce);
    // The card says its last transfer is another one: these can never be retried. Close them
    // now (not only with the next approval), so a card that never lets a tap finish cannot
    // pile up torn attempts; if the card signed them, the ledger voids those orphans.
    for (const n of unrecoverable) journal.setAttemptState(n, AttemptState.CLOSED);
    if (answerable && answerable.amount === amount) return { torn: answerable, unrecoverable };
    // The card's last transfer answers a torn attempt of another amount: keep that attempt
    // open (the next tap for that amount recovers it) and pay this amount normally.
    return { torn: undefined, unrecoverable };
  }

  async #select(session: ApduTransport, signal: AbortSignal, cancel: AbortSignal | undefined): Promise<Selected> {
    const select = async (): Promise<{ data: Uint8Array; sw: number }> => {
      try {
        return await exchange(session, selectCommand(), { signal, maxResponse: MAX_SELECT_ANSWER });
      } catch (e) {
        if (cancel?.aborted) stop({ kind: 'END', reason: EndReason.CANCELLED });
        if (signal.aborted || exchangeFailure(e) === 'lost')
          stop({ kind: 'PRESENT_CARD_AGAIN', reason: 'NO_ANSWER', detail: errorCode(e) });
        return stop(internalError(e));
      }
    };
    let r = await select();
    // 6883: the card was in the middle of a command chain an earlier session left unfinished
    // (a terminal killed mid-PAY while the card stayed powered) and has discarded it (SPEC
    // §9.3). The card is idle now: SELECT once more.
    if (r.sw === SW.CHAIN_EXPECTED) r = await select();
    if (r.sw !== SW.OK) stop({ kind: 'END', reason: EndReason.NOT_DT_CARD, detail: swHex(r.sw) });
    // Read leniently (parseApplicationInfo): later applet versions may add keys, which must
    // not turn a DT card into "not a DT card".
    let info: ApplicationInfo;
    try {
      info = parseApplicationInfo(r.data, MAX_SELECT_ANSWER);
    } catch (e) {
      const noCapabilities = isDtError(e) && e.details.field === 'capabilities';
      return stop({
        kind: 'END',
        reason: EndReason.NOT_DT_CARD,
        detail: noCapabilities ? 'no capabilities' : 'SELECT answer is not a DT applet answer',
      });
    }
    if (!info.locked) stop({ kind: 'END', reason: EndReason.CARD_NOT_USABLE, detail: 'card not personalized' });
    return {
      info,
      card: info.card,
      maxCommand: info.maxCommand !== undefined ? Math.min(info.maxCommand, MAX_COMMAND) : DEFAULT_MAX_COMMAND,
    };
  }

  async #verifyPin(
    session: ApduTransport,
    amount: number,
    signal: AbortSignal,
    cancel: AbortSignal | undefined,
    progress: NonNullable<ChargeOptions['onProgress']>,
  ): Promise<void> {
    const pad = this.#o.pinPad;
    if (!pad) stop({ kind: 'DECLINED', reason: DeclineReason.NO_PIN_PAD });
    const max = this.#o.maxPinEntries ?? 3;
    let triesLeft: number | undefined;
    for (let entry = 0; entry < max; entry++) {
      progress('PIN_ENTRY', triesLeft === undefined ? {} : { triesLeft });
      const pinDeadline = deadline(signal, this.#timeouts.pinMs, 'pin');
      let pin: Uint8Array | null;
      try {
        pin = await pad!.requestPin(
          { amount, currency: this.#o.identity.currency, ...(triesLeft !== undefined ? { triesLeft } : {}) },
          pinDeadline.signal,
        );
      } catch (e) {
        if (cancel?.aborted) stop({ kind: 'END', reason: EndReason.CANCELLED });
        if (pinDeadline.signal.aborted) stop({ kind: 'DECLINED', reason: DeclineReason.PIN_CANCELLED, detail: 'PIN entry timed out' });
        throw e;
      } finally {
        pinDeadline.dispose();
      }
      if (pin === null) stop({ kind: 'DECLINED', reason: DeclineReason.PIN_CANCELLED });
      let sw: number;
      try {
        sw = (await exchange(session, verifyPinCommand(pin!), { signal, maxResponse: 0 })).sw;
      } catch (e) {
        if (cancel?.aborted) stop({ kind: 'END', reason: EndReason.CANCELLED });
        if (signal.aborted || exchangeFailure(e) === 'lost')
          stop({ kind: 'PRESENT_CARD_AGAIN', reason: 'NO_ANSWER', detail: errorCode(e) });
        return stop(internalError(e));
      } finally {
        // The PIN goes to the card and nowhere else: wipe our copy at once.
        pin!.fill(0);
      }
      const result = parsePinResult(sw);
      if (result.kind === 'verified') return;
      if (result.kind === 'blocked') stop({ kind: 'DECLINED', reason: DeclineReason.PIN_BLOCKED });
      if (result.kind === 'wrong') {
        triesLeft = result.remaining;
        if (triesLeft === 0) stop({ kind: 'DECLINED', reason: DeclineReason.PIN_BLOCKED });
        continue;
      }
      stop({ kind: 'DECLINED', reason: DeclineReason.CARD_ERROR, detail: swHex(sw) });
    }
    stop({ kind: 'DECLINED', reason: DeclineReason.WRONG_PIN });
  }

  #cardRefused(sw: number): TapOutcome {
    switch (sw) {
      case SW.CONDITIONS_NOT_SATISFIED:
        // Card limits reached, sync pending, no coins for this amount: the card must sync first.
        return { kind: 'ONLINE_REQUIRED', reason: 'CARD_LIMITS' };
      case SW.DATA_INVALID:
        return { kind: 'DECLINED', reason: DeclineReason.NONCE_REPLAY };
      case SW.PIN_BLOCKED:
        return { kind: 'DECLINED', reason: DeclineReason.PIN_BLOCKED };
      case SW.SECURITY_NOT_SATISFIED:
        return { kind: 'DECLINED', reason: DeclineReason.WRONG_PIN, detail: 'card still requires cardholder verification' };
      case SW.WRONG_DATA:
        return { kind: 'DECLINED', reason: DeclineReason.CARD_REFUSED, detail: swHex(sw) };
      default:
        return { kind: 'DECLINED', reason: DeclineReason.CARD_ERROR, detail: swHex(sw) };
    }
  }

  /** Remembers a damaged answer of `card`; true when it already gave one within the retry window. */
  #damagedBefore(card: Uint8Array | undefined, now: number): boolean {
    const key = card ? toHex(card) : '';
    const last = this.#damaged.get(key);
    this.#damaged.delete(key);
    this.#damaged.set(key, now);
    if (this.#damaged.size > MAX_DAMAGED_CARDS) this.#damaged.delete(this.#damaged.keys().next().value!);
    return last !== undefined && now - last <= this.#o.policy.retryWindow;
  }

  /**
   * A damaged answer (it does not decode, or a signature or link does not verify, or it is no
   * APDU answer at all). Once per attempt chain, and once per card within the retry window, the
   * attempt is left torn and the holder is asked to present the card again; a damaged answer to
   * a retry, or a second one from the same card, is the card's own (or a link that always breaks
   * it): declined then (fail closed), and the chain is given up.
   */
  #damagedAnswer(card: Uint8Array | undefined, req: PaymentRequest, torn: AttemptRecord | undefined, detail: string): TapOutcome {
    const { journal } = this.#o;
    const again = this.#damagedBefore(card, this.#now());
    if (torn === undefined && !again) {
      journal.setAttemptState(req.nonce, AttemptState.TORN);
      return { kind: 'PRESENT_CARD_AGAIN', reason: 'DAMAGED_ANSWER', detail: detail.split(':')[0]!, tornAttempt: toHex(req.nonce) };
    }
    journal.setAttemptState(req.nonce, AttemptState.DECLINED);
    if (torn) journal.setAttemptState(torn.nonce, AttemptState.CLOSED);
    return { kind: 'DECLINED', reason: DeclineReason.CARD_ANSWER_INVALID, detail };
  }

  /** The signed chain (history, then transfer) of the journalled payment whose transfer hash is `hash`. */
  #heldChain(hash: Uint8Array): Uint8Array[] | undefined {
    const p = this.#o.journal.getPaymentByTransfer(hash);
    if (!p) return undefined;
    const h = decodeMessage('Handover', p.handover);
    return [...h.history, h.transfer];
  }

  #validateAndCommit(
    handoverBytes: Uint8Array,
    req: PaymentRequest,
    selectedCard: Uint8Array | undefined,
    torn: AttemptRecord | undefined,
    unrecoverable: readonly Uint8Array[],
    trust: TrustStore,
    progress: NonNullable<ChargeOptions['onProgress']>,
  ): TapOutcome {
    const { journal } = this.#o;
    progress('VALIDATING');
    const now = this.#now();
    const expected: ExpectedRequest[] = [req];
    if (torn) {
      // The interrupted request is ours (we signed and journalled it): its fields are what the old transfer must copy.
      expected.push(openSigned('PaymentRequest', torn.request).message);
    }
    // Only the banks and the history we named may be left out (a card that omits anything else fails closed).
    const asked = [req, ...(torn ? [openSigned('PaymentRequest', torn.request).message] : [])];
    const named = asked.flatMap((r) => r.banks ?? []);
    const heldNamed = asked.flatMap((r) => (r.held ? [r.held] : []));
    const result = validateHandover(handoverBytes, {
      trust,
      request: expected,
      bankCertificate: (kid) => (named.some((b) => bytesEqual(b, kid)) ? journal.bankCertificate(kid) : undefined),
      heldHistory: (hash) => (heldNamed.some((h) => bytesEqual(h, hash)) ? this.#heldChain(hash) : undefined),
      isRevoked: (kid) => journal.isRevoked(kid),
      // A transfer dated after our own clock cannot answer our request.
      notAfter: now,
      ...(this.#o.verifier ? { verifier: this.#o.verifier } : {}),
    });
    // Torn attempts this card can no longer answer (its last transfer is another one) are closed
    // with this approval: if the card did sign them, the ledger voids those orphans and returns the value.
    const attemptNonces = [req.nonce, ...(torn ? [torn.nonce] : []), ...unrecoverable];
    if (!result.ok) {
      if (DAMAGE_CODES.has(result.code)) {
        // The answer may have been damaged on the way: a flipped bit breaks the CBOR framing, a
        // signature or a hash link. The card has signed, so get the same handover again (retryOf)
        // rather than decline and leave its value tied up in an orphan until its next sync.
        return this.#damagedAnswer(selectedCard, req, torn, result.detail ? `${result.code}: ${result.detail}` : result.code);
      }
      journal.setAttemptState(req.nonce, AttemptState.DECLINED);
      return { kind: 'DECLINED', reason: result.code, ...(result.detail ? { detail: result.detail } : {}) };
    }
    // The issuing bank's certificate, verified up to our root with the card chain: keep it (or mark
    // it used), so that the next card of this bank need not carry it (SPEC §3.6 banks).
    const bank = result.cardChain[1]!;
    if (result.handover.chain.length > 1)
      journal.storeBankCertificate({ kid: bank.kid, cert: bank.bytes, nbf: bank.claims.nbf, exp: bank.claims.exp });
    else journal.touchBankCertificate(bank.kid);
    const t = result.transfer;
    if (t.cvm === Cvm.NONE && t.amount > this.#o.policy.cvmLimit) {
      // Our own CVM rule: the PIN must be inside the signed transfer (no CVM bypass).
      journal.setAttemptState(req.nonce, AttemptState.DECLINED);
      return { kind: 'DECLINED', reason: HandoverCode.CVM_REQUIRED, detail: 'terminal CVM limit' };
    }
    const recovered = torn !== undefined && toHex(t.nonce) === toHex(torn.nonce);
    progress('COMMITTING');
    // Durable commit BEFORE anyone is told "approved".
    const r = journal.recordApproval(
      {
        transferHash: result.transferHash,
        card: result.cardKid,
        counter: t.counter,
        amount: t.amount,
        currency: t.currency,
        nonce: t.nonce,
        time: t.time,
        approvedAt: now,
        cvm: t.cvm,
        merchant: t.merchant,
        mcc: t.mcc,
        // With the history the card left out put back: the ledger (and a later audit) gets the whole handover.
        handover: result.handover.after ? encodeMessage('Handover', completeHistory(result)) : handoverBytes,
        inputs: result.inputs.map((c) => c.id),
      },
      attemptNonces,
    );
    if (r.kind === 'conflict') {
      journal.setAttemptState(req.nonce, AttemptState.DECLINED);
      return {
        kind: 'DECLINED',
        reason: DeclineReason.DOUBLE_SPEND_DETECTED,
        detail: `conflicts with receipt ${r.existing.id} (${r.reason})`,
      };
    }
    this.#damaged.delete(selectedCard ? toHex(selectedCard) : '');
    return { kind: 'APPROVED', payment: r.payment, alreadyRecorded: r.kind === 'duplicate', recovered };
  }
}
