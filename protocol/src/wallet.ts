/**
 * The reference wallet: a plain, in-memory model of what a card does under
 * SPEC.md §7 (pay, torn-tap retry, sync; §7.4.2). Tests, the ledger and acquirer suites
 * and the demo use it to produce real signed Transfers and Handovers; the
 * firmware applet must produce byte-identical structures for the same state
 * and request (it adds PIN, persistence and the APDU layer on top).
 *
 * It is not a secure element: its state is a plain object (which makes
 * {@link ReferenceWallet.clone} possible, the "cloned card" of the
 * double-spend tests).
 *
 * @example
 * const w = new ReferenceWallet({ signer: keyPairSigner(cardKeys), chain: [cardCert, bankCert] });
 * const sync = w.beginSync(challenge);          // hand to the ledger
 * w.completeSync(receiptBytes, ledgerPublicKey); // tokens arrive
 * const { handover } = w.pay(paymentRequest, { cvm: Cvm.OFFLINE_PIN });
 *
 * @module
 */
import { DtError, ErrorCode } from './errors.ts';
import { bytesEqual, toHex } from './bytes.ts';
import { addAmounts, sumAmounts } from './amounts.ts';
import { GENESIS_PREV, outputId } from './ids.ts';
import { nobleVerifier, type Verifier } from './crypto/suite.ts';
import type { Signer } from './cose/sign1.ts';
import { encodeMessage, openSigned, payloadHash, signMessage, verifySigned } from './codec.ts';
import {
  CARD_TIME_AHEAD,
  Cvm,
  LIMITS,
  type CardLimitsSchema,
  type Handover,
  type Mark,
  type Output,
  type Token,
  type Transfer,
} from './schema/messages.ts';
import type { Infer } from './schema/dsl.ts';
import { payeeMark, type ExpectedRequest } from './handover.ts';
import { selectInputs } from './card/selection.ts';

/** Card limits as certified. */
export type CardLimits = Infer<typeof CardLimitsSchema>;

/** A spendable coin of the wallet: a token (with its signed bytes) or a change output. */
export interface WalletCoin {
  /** 16-byte token serial or 32-byte output id. */
  readonly id: Uint8Array;
  readonly value: number;
  readonly mark?: Mark;
  /**
   * Earliest expiry (seconds) of the ledger tokens the coin derives from, as the applet keeps
   * it (SPEC §10.7 step 11); input selection skips coins expired at the payment time.
   */
  readonly expires?: number;
}

/** The wallet's whole state (SPEC.md §7.2 "Card chain of transfers"). */
export interface WalletState {
  /** Last counter used (0 when personalized). */
  counter: number;
  /** `GENESIS_PREV`, or the hash of the last transfer or receipt. */
  prev: Uint8Array;
  /** Signed transfers since the last sync, in counter order. */
  history: Uint8Array[];
  /** Spendable coins. */
  holdings: WalletCoin[];
  /** Signed tokens received since (and including) the last sync, by serial hex: the provenance a handover carries. */
  tokens: Record<string, Uint8Array>;
  /** The last sync receipt (anchor of the chain). */
  receipt?: Uint8Array;
  /** A signed SyncRequest waiting for its receipt. */
  pendingSync?: Uint8Array;
  /** The last handover given out (for a torn-tap retry). */
  lastHandover?: Uint8Array;
  /** The last nonces signed (at most 64), hex. */
  nonces: string[];
  /**
   * Trusted time (seconds, SPEC §10.8): the personalization time, then the time of the last
   * applied receipt. `pay` refuses a request dated more than `CARD_TIME_AHEAD` after it.
   * Absent in a given state: the constructor fills it in (`personalizedAt`, else the card
   * certificate's `iat`).
   */
  trusted?: number;
  /**
   * Clock floor (seconds, SPEC §10.8), as the applet keeps it: the trusted time, raised to the
   * time of every request paid and every receipt applied. Coins expired at `max(request time,
   * floor)` are not spent. Absent in a given state: the constructor starts it at `trusted`.
   */
  floor?: number;
}

/** Options of {@link ReferenceWallet}. */
export interface ReferenceWalletOptions {
  /** The card key (its kid is the card id). */
  readonly signer: Signer;
  /** `[card certificate, issuing bank certificate]`. */
  readonly chain: readonly Uint8Array[];
  /** Starting state (default: freshly personalized, empty). */
  readonly state?: WalletState;
  /**
   * Personalization time (seconds): the trusted time of a state that has none (SPEC §10.8),
   * as WRITE CERTIFICATES gives it to the applet. Default: the card certificate's `iat`.
   */
  readonly personalizedAt?: number;
}

/** Options of {@link ReferenceWallet.pay}. */
export interface PayOptions {
  /** Cardholder verification done for this payment (default `Cvm.NONE`). */
  readonly cvm?: number;
  /**
   * Refuse payments above the certified limits and requests dated beyond the time bound
   * (SPEC §10.7 step 2a), as a real card does (default true). Tests turn it off to build
   * what only a broken or cloned card signs: over-limit or far-future-dated transfers.
   */
  readonly enforceLimits?: boolean;
  /** Use exactly these coins (ids) as inputs instead of the automatic selection. */
  readonly inputs?: readonly Uint8Array[];
}

/** What {@link ReferenceWallet.pay} returns. */
export interface PayResult {
  /** Signed Transfer bytes. */
  readonly transfer: Uint8Array;
  readonly transferHash: Uint8Array;
  /** Encoded Handover (what the card sends the terminal). */
  readonly handover: Uint8Array;
  /** True when this was a torn-tap retry answered with the stored handover. */
  readonly retried: boolean;
}

const MAX_NONCES = 64;

/** A fresh, empty wallet state. */
export function emptyWalletState(): WalletState {
  return { counter: 0, prev: GENESIS_PREV, history: [], holdings: [], tokens: {}, nonces: [] };
}

function copyState(s: WalletState): WalletState {
  return {
    counter: s.counter,
    prev: s.prev.slice(),
    history: s.history.map((b) => b.slice()),
    holdings: s.holdings.map((c) => ({ ...c, id: c.id.slice() })),
    tokens: Object.fromEntries(Object.entries(s.tokens).map(([k, v]) => [k, v.slice()])),
    ...(s.receipt ? { receipt: s.receipt.slice() } : {}),
    ...(s.pendingSync ? { pendingSync: s.pendingSync.slice() } : {}),
    ...(s.lastHandover ? { lastHandover: s.lastHandover.slice() } : {}),
    nonces: [...s.nonces],
    ...(s.trusted !== undefined ? { trusted: s.trusted } : {}),
    ...(s.floor !== undefined ? { floor: s.floor } : {}),
  };
}

/** The holding a verified token gives: its serial, value, mark and expiry. */
function coinOf(t: Token): WalletCoin {
  return { id: t.serial, value: t.value, ...(t.mark ? { mark: t.mark } : {}), ...(t.expires !== undefined ? { expires: t.expires } : {}) };
}

/** The reference wallet (see the module documentation). */
export class ReferenceWallet {
  /** The card key id. */
  readonly kid: Uint8Array;
  /** The certified limits read from the card certificate. */
  readonly limits: CardLimits;
  readonly chain: readonly Uint8Array[];
  /** Key id of the issuing bank: the `kid` header of the card certificate (its signer). */
  readonly bankKid: Uint8Array;
  #signer: Signer;
  #state: WalletState;

  constructor(opts: ReferenceWalletOptions) {
    this.#signer = opts.signer;
    this.kid = opts.signer.kid;
    this.chain = opts.chain;
    const opened = openSigned('Certificate', opts.chain[0]!);
    const leaf = opened.message;
    this.bankKid = opened.cose.kid;
    if (!leaf.limits) throw new DtError(ErrorCode.CERT_WRONG_ROLE, 'the first certificate is not a card certificate');
    if (!bytesEqual(leaf.cnf.coseKey.kid, this.kid))
      throw new DtError(ErrorCode.KEY_MISMATCH, 'the card certificate certifies another key');
    this.limits = leaf.limits;
    this.#state = opts.state ? copyState(opts.state) : emptyWalletState();
    this.#state.trusted ??= opts.personalizedAt ?? leaf.iat;
    this.#state.floor ??= this.#state.trusted;
  }

  /** A deep copy of the current state (safe to persist or inspect). */
  get state(): WalletState {
    return copyState(this.#state);
  }

  /** Sum of the holdings. */
  get balance(): number {
    return sumAmounts(this.#state.holdings.map((c) => c.value));
  }

  /** A second wallet with the same key and state: a cloned secure element (for double-spend tests). */
  clone(): ReferenceWallet {
    return new ReferenceWallet({ signer: this.#signer, chain: this.chain, state: this.#state });
  }

  /**
   * Adds ledger-signed tokens to the holdings without a sync (a personalization
   * shortcut for tests that have no ledger). Verifies each token against the
   * ledger key and its owner.
   */
  holdTokens(tokens: readonly Uint8Array[], ledgerKey: Uint8Array, verifier: Verifier = nobleVerifier): void {
    for (const b of tokens) {
      const t = verifySigned('Token', b, ledgerKey, verifier).message;
      if (!bytesEqual(t.owner, this.kid)) throw new DtError(ErrorCode.TOKEN_INVALID, 'token owned by another key');
      const k = toHex(t.serial);
      if (this.#state.tokens[k]) throw new DtError(ErrorCode.TOKEN_INVALID, 'token already held');
      this.#state.tokens[k] = b.slice();
      this.#state.holdings.push(coinOf(t));
    }
  }

  /**
   * Chooses the inputs with the applet's own rule ({@link selectInputs}, SPEC §10.7): coins not
   * expired at `max(time, floor)` of one mark class allowed for the payee, largest first; marked
   * (purpose) coins are preferred where they are allowed.
   */
  #select(amount: number, merchant: string, mcc: number, time: number): WalletCoin[] {
    const picked = selectInputs(this.#state.holdings, amount, merchant, mcc, Math.max(time, this.#state.floor!));
    if (!picked) throw new DtError(ErrorCode.VALUE_NOT_CONSERVED, 'insufficient funds for this payee', { amount });
    return picked;
  }

  /**
   * PAY: signs a Transfer answering `request` and returns it with the
   * Handover. A retry (`retryOf` naming the last transfer's nonce, same
   * payee) returns the stored handover and signs nothing. Throws a
   * {@link DtError} when the card would refuse: `TRANSFER_TIME` for a request
   * dated more than `CARD_TIME_AHEAD` after the trusted time (SPEC §10.7 step
   * 2a; checked first, retries included), then nonce reused, sync pending,
   * limits, funds.
   */
  pay(
    request: ExpectedRequest & { retryOf?: Uint8Array; banks?: readonly Uint8Array[]; held?: Uint8Array },
    opts: PayOptions = {},
  ): PayResult {
    const s = this.#state;
    if ((opts.enforceLimits ?? true) && request.time > s.trusted! + CARD_TIME_AHEAD) {
      throw new DtError(ErrorCode.TRANSFER_TIME, "request dated too far after the card's trusted time: sync first", {
        time: request.time,
        trusted: s.trusted!,
        ahead: CARD_TIME_AHEAD,
      });
    }
    if (s.pendingSync) throw new DtError(ErrorCode.LIMIT_EXCEEDED, 'a sync is pending');
    if (request.retryOf && s.lastHandover && s.history.length > 0) {
      const last = openSigned('Transfer', s.history[s.history.length - 1]!);
      if (bytesEqual(last.message.nonce, request.retryOf) && bytesEqual(last.message.payee, request.terminal)) {
        return {
          transfer: s.history[s.history.length - 1]!,
          transferHash: payloadHash(last.cose),
          handover: s.lastHandover,
          retried: true,
        };
      }
    }
    if (s.nonces.includes(toHex(request.nonce))) throw new DtError(ErrorCode.REQUEST_MISMATCH, 'nonce already signed');
    const cvm = opts.cvm ?? Cvm.NONE;
    if (opts.enforceLimits ?? true) {
      const total = sumAmounts(s.history.map((b) => openSigned('Transfer', b).message.amount)) + request.amount;
      if (request.amount > this.limits.perPayment || total > this.limits.offlineTotal || s.history.length + 1 > this.limits.offlineCount) {
        throw new DtError(ErrorCode.LIMIT_EXCEEDED, 'card limit exceeded');
      }
      if (request.amount > this.limits.cvmLimit && cvm === Cvm.NONE)
        throw new DtError(ErrorCode.CVM_REQUIRED, 'cardholder verification required');
    }
    if (s.history.length >= LIMITS.maxHistory) throw new DtError(ErrorCode.LIMIT_EXCEEDED, 'history full: sync needed');
    let coins: WalletCoin[];
    if (opts.inputs) {
      coins = opts.inputs.map((id) => {
        const c = s.holdings.find((h) => bytesEqual(h.id, id));
        if (!c) throw new DtError(ErrorCode.VALUE_NOT_CONSERVED, 'input not held');
        return c;
      });
    } else {
      coins = this.#select(request.amount, request.merchant, request.mcc, request.time);
    }
    const inSum = sumAmounts(coins.map((c) => c.value));
    const mark = coins[0]?.mark;
    const pm = payeeMark(mark);
    const outputs: Output[] = [{ value: request.amount, owner: request.terminal, ...(pm ? { mark: pm } : {}) }];
    if (inSum > request.amount) outputs.push({ value: inSum - request.amount, owner: this.kid, ...(mark ? { mark } : {}) });
    const transfer: Transfer = {
      card: this.kid,
      counter: s.counter + 1,
      prev: s.prev,
      inputs: coins.map((c) => c.id),
      outputs,
      amount: request.amount,
      currency: request.currency,
      payee: request.terminal,
      merchant: request.merchant,
      mcc: request.mcc,
      nonce: request.nonce,
      time: request.time,
      cvm,
    };
    const signed = signMessage('Transfer', transfer, this.#signer);
    const hash = payloadHash(openSigned('Transfer', signed).cose);
    // The terminal holds the issuing bank's certificate: the chain gives the card certificate alone (SPEC §3.8).
    const bankHeld = request.banks?.some((b) => bytesEqual(b, this.bankKid)) ?? false;
    // The terminal holds this card's chain up to `held` (SPEC §3.6, §3.8): the history up to it is left out.
    const heldAt = request.held ? s.history.findIndex((b) => bytesEqual(payloadHash(openSigned('Transfer', b).cose), request.held!)) : -1;
    const handover = this.#handover(
      signed,
      [...s.history, signed],
      bankHeld,
      heldAt >= 0 ? { after: request.held!, count: heldAt + 1 } : undefined,
    );
    // Commit the new state only after everything was built (a real card journals this atomically).
    const spent = new Set(coins.map((c) => toHex(c.id)));
    s.holdings = s.holdings.filter((c) => !spent.has(toHex(c.id)));
    // The change coin keeps the inputs' mark and the earliest expiry among them, as on the card.
    const expiries = coins.map((c) => c.expires).filter((e): e is number => e !== undefined);
    if (outputs[1]) {
      s.holdings.push({
        id: outputId(hash, 1),
        value: outputs[1].value,
        ...(mark ? { mark } : {}),
        ...(expiries.length > 0 ? { expires: Math.min(...expiries) } : {}),
      });
    }
    s.floor = Math.max(s.floor!, request.time);
    s.counter = transfer.counter;
    s.prev = hash;
    s.history.push(signed);
    s.lastHandover = handover;
    s.nonces.push(toHex(request.nonce));
    if (s.nonces.length > MAX_NONCES) s.nonces.shift();
    return { transfer: signed, transferHash: hash, handover, retried: false };
  }

  /** Builds the handover of `transfer`: every token its chain derives from, the history before it, the receipt. */
  #handover(
    transfer: Uint8Array,
    chain: readonly Uint8Array[],
    bankHeld: boolean,
    held?: { readonly after: Uint8Array; readonly count: number },
  ): Uint8Array {
    const s = this.#state;
    // A token the receipt carries is named by its index there (SPEC §3.8); any other is carried.
    const inReceipt = new Map<string, number>();
    if (s.receipt) openSigned('SyncReceipt', s.receipt).message.tokens.forEach((b, i) => inReceipt.set(toHex(b), i));
    const tokens: Uint8Array[] = [];
    const receiptTokens: number[] = [];
    const seen = new Set<string>();
    for (const b of chain) {
      for (const id of openSigned('Transfer', b).message.inputs) {
        const k = toHex(id);
        const tb = s.tokens[k];
        if (tb && !seen.has(k)) {
          seen.add(k);
          const ix = inReceipt.get(toHex(tb));
          if (ix !== undefined) receiptTokens.push(ix);
          else tokens.push(tb);
        }
      }
    }
    const h: Handover = {
      transfer,
      chain: bankHeld ? [this.chain[0]!] : [...this.chain],
      ...(tokens.length > 0 ? { tokens } : {}),
      history: chain.slice(held?.count ?? 0, -1),
      ...(s.receipt ? { receipt: s.receipt } : {}),
      ...(receiptTokens.length > 0 ? { receiptTokens } : {}),
      ...(held ? { after: held.after } : {}),
    };
    return encodeMessage('Handover', h);
  }

  /**
   * SYNC BEGIN: signs a SyncRequest (counter + 1, current prev, full history,
   * holdings, balance, the host's challenge) and keeps it pending. A repeated
   * call returns the same pending request.
   */
  beginSync(challenge: Uint8Array): Uint8Array {
    const s = this.#state;
    if (s.pendingSync) return s.pendingSync;
    const req = signMessage(
      'SyncRequest',
      {
        card: this.kid,
        counter: s.counter + 1,
        prev: s.prev,
        history: [...s.history],
        holdings: s.holdings.map((c) => c.id),
        balance: sumAmounts(s.holdings.map((c) => c.value)),
        challenge,
      },
      this.#signer,
    );
    s.counter += 1;
    s.pendingSync = req;
    return req;
  }

  /**
   * SYNC COMPLETE: checks the receipt against the pending request (ledger
   * signature, card, counter, request hash, tokens owned by the card and new,
   * total + redeemed = balance + loaded + refunded + voided value, SPEC §7.6) and then replaces the holdings.
   */
  completeSync(receiptBytes: Uint8Array, ledgerKey: Uint8Array, verifier: Verifier = nobleVerifier): void {
    const s = this.#state;
    if (!s.pendingSync) throw new DtError(ErrorCode.HISTORY_BROKEN, 'no sync pending');
    const pending = openSigned('SyncRequest', s.pendingSync);
    const r = verifySigned('SyncReceipt', receiptBytes, ledgerKey, verifier);
    const rc = r.message;
    if (!bytesEqual(rc.card, this.kid) || rc.counter !== pending.message.counter || !bytesEqual(rc.request, payloadHash(pending.cose))) {
      throw new DtError(ErrorCode.HISTORY_BROKEN, 'receipt does not answer the pending request');
    }
    const held = new Set(s.holdings.map((c) => toHex(c.id)));
    const holdings: WalletCoin[] = [];
    const tokens: Record<string, Uint8Array> = {};
    for (const b of rc.tokens) {
      const t = verifySigned('Token', b, ledgerKey, verifier).message;
      const k = toHex(t.serial);
      if (!bytesEqual(t.owner, this.kid) || held.has(k) || tokens[k])
        throw new DtError(ErrorCode.TOKEN_INVALID, 'receipt token not owned by the card or not new');
      tokens[k] = b.slice();
      holdings.push(coinOf(t));
    }
    // Voided orphans of the history this request handed in have a known
    // amount; an orphan of an earlier chain (voided after the sync that
    // reported it) only has to bring some value back (SPEC §7.6).
    const known = new Map(
      pending.message.history.map((b) => {
        const o = openSigned('Transfer', b);
        return [toHex(payloadHash(o.cose)), o.message.amount] as const;
      }),
    );
    // Merchant refunds (SPEC §7.7.3) come back as value the ledger credits: `refunded` absent counts as 0.
    let expected = addAmounts(addAmounts(pending.message.balance, rc.loaded), rc.refunded ?? 0);
    let unknown = 0;
    const seen = new Set<string>();
    for (const v of rc.voided) {
      const k = toHex(v);
      if (seen.has(k)) throw new DtError(ErrorCode.VALUE_NOT_CONSERVED, 'receipt voids a transfer twice');
      seen.add(k);
      const amount = known.get(k);
      if (amount === undefined) unknown++;
      else expected = addAmounts(expected, amount);
    }
    // Value the ledger moved to the issuing bank (revoked card) leaves the card:
    // compare tokens + redeemed with what came in, so nothing is subtracted.
    const total = addAmounts(sumAmounts(holdings.map((c) => c.value)), rc.redeemed ?? 0);
    if (unknown === 0 ? total !== expected : total <= expected) {
      throw new DtError(ErrorCode.VALUE_NOT_CONSERVED, 'receipt tokens + redeemed do not add up to balance + loaded + refunded + voided');
    }
    s.holdings = holdings;
    s.tokens = tokens;
    s.history = [];
    s.prev = payloadHash(r.cose);
    s.receipt = receiptBytes.slice();
    // The ledger's signed time is the new trusted time (SPEC §10.8); it never goes back.
    s.trusted = Math.max(s.trusted!, rc.time);
    s.floor = Math.max(s.floor!, rc.time);
    delete s.pendingSync;
    delete s.lastHandover;
  }
}
