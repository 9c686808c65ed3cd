/**
 * Test kit: a ledger with a PKI, funded cards (reference wallets) and
 * terminals that sign batches. For the tests of the ledger, the acquirer and
 * the terminal, and for the demo. Everything is real: real keys, real
 * signatures, real storage.
 *
 * @example
 * const k = await createTestLedger();
 * const card = await k.fundCard(10_000);
 * const shop = k.newTerminal('shop-1');
 * const { handover } = card.wallet.pay(k.request(shop, 500));
 * const [outcomes] = await k.ledger.settle([k.batch(shop, [handover])]);
 * // Over HTTP the batches travel in the acquirer's signed envelope (SPEC §7.7.2):
 * await fetch(`${url}/v1/settle`, { method: 'POST', headers: { 'content-type': 'application/cose' }, body: k.settleRequest([k.batch(shop, [handover])]) });
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import {
  CURRENCY_KZT,
  ReferenceWallet,
  signAdjustment,
  signMessage,
  signSettleRequest,
  type AdjustmentKind,
  type ExpectedRequest,
  type PaymentRequest,
} from '@dt/protocol';
import { Ledger, type LedgerOptions } from './ledger.ts';
import { createPki, DEFAULT_CARD_LIMITS, type CardLimits, type Identity, type Pki } from './pki.ts';
import { signLoadOrder } from './load.ts';
import { openSqliteStorage } from './storage/sqlite.ts';
import { nativeSigner } from './native-signer.ts';
import type { LedgerStorage } from './storage/types.ts';
import { createValidatorPool, type ValidatorPool } from './pool.ts';

/** A card of the test kit: its identity (keys, chain) and its reference wallet. */
export interface TestCard {
  readonly identity: Identity;
  readonly wallet: ReferenceWallet;
}
/**
 * Signs a settle request (SPEC §7.7.2) for `batches` with an acquirer identity (chain `[acquirer, bank]`,
 * e.g. `pki.issueAcquirer()`): what `POST /v1/settle` takes as `application/cose`. A fresh random nonce
 * unless `nonce` is given; `time` in seconds (the ledger accepts ±300 s of its clock).
 */
export function signSettle(acquirer: Identity, batches: readonly Uint8Array[], opts: { time: number; nonce?: Uint8Array }): Uint8Array {
  return signSettleRequest(
    { chain: [...acquirer.chain], time: opts.time, nonce: opts.nonce ?? new Uint8Array(randomBytes(16)), batches: [...batches] },
    acquirer.signer,
  );
}

/** A terminal of the test kit. */
export interface TestTerminal extends Identity {
  readonly merchant: string;
  readonly mcc: number;
  seq: number;
}

/** What {@link createTestLedger} returns. */
export interface TestLedger {
  readonly pki: Pki;
  readonly ledger: Ledger;
  readonly storage: LedgerStorage;
  /** The settable clock (seconds) the ledger uses. */
  readonly clock: { now: number };
  /** The acquirer of the default bank (role ACQUIRER, chain `[acquirer, bank]`): signs settle requests. */
  readonly acquirer: Identity;
  /** A settle request for `batches` signed by {@link acquirer} (or `opts.acquirer`), time = clock, fresh nonce unless given. */
  settleRequest(batches: readonly Uint8Array[], opts?: { acquirer?: Identity; time?: number; nonce?: Uint8Array }): Uint8Array;
  /** Issues and registers a card, loads `amount` through the bank and syncs it (0: no load, no sync). */
  fundCard(amount: number, opts?: { limits?: CardLimits }): Promise<TestCard>;
  /** Issues a terminal certificate for a merchant. */
  newTerminal(merchant?: string, mcc?: number): TestTerminal;
  /** A payment request of `terminal` (fresh random nonce, time = clock). */
  request(terminal: TestTerminal, amount: number): ExpectedRequest & Pick<PaymentRequest, 'chain'>;
  /** A signed Batch of `terminal` (seq increments unless given), with `adjustments` (SignedAdjustments) when given. */
  batch(
    terminal: TestTerminal,
    handovers: readonly Uint8Array[],
    opts?: { seq?: number; crlVersion?: number; time?: number; adjustments?: readonly Uint8Array[] },
  ): Uint8Array;
  /**
   * A void or refund signed by `terminal` (SPEC §7.7.3): of the transfer `transfer` (payload hash) paid by `card`;
   * fresh random id unless given, currency KZT, time = clock.
   */
  adjustment(
    terminal: TestTerminal,
    a: {
      kind: AdjustmentKind;
      transfer: Uint8Array;
      card: Uint8Array;
      amount: number;
      id?: Uint8Array;
      currency?: number;
      reference?: string;
      time?: number;
    },
  ): Uint8Array;
  /** Loads value onto a card and syncs it (bank load order + sync). */
  topUp(card: TestCard, amount: number): Promise<Uint8Array>;
  /** Syncs a card (returns the receipt bytes). */
  sync(card: TestCard): Promise<Uint8Array>;
  /** The validator pool, when `workers` was given. */
  readonly pool?: ValidatorPool;
  /** Closes the pool (if any) and the storage. */
  close(): Promise<void>;
}

/** Default start time of the test clock: 2027-01-15. */
export const TEST_T0 = 1_800_000_000;

/** Creates a ledger on `storage` (default: SQLite in memory) with a fresh PKI and a bank holding `allocation`. */
export async function createTestLedger(
  opts: { storage?: LedgerStorage; now?: number; allocation?: number; workers?: number } & Partial<
    Pick<LedgerOptions, 'voidWindow' | 'validator' | 'verifier'>
  > = {},
): Promise<TestLedger> {
  const clock = { now: opts.now ?? TEST_T0 };
  const pki = createPki({ now: clock.now });
  const storage = opts.storage ?? openSqliteStorage(':memory:');
  const pool = opts.workers
    ? await createValidatorPool({ rootCert: pki.issuer.cert, ledgerCert: pki.ledger.cert, at: clock.now, workers: opts.workers })
    : undefined;
  const ledger = await Ledger.open({
    storage,
    signer: nativeSigner(pki.ledger.keys),
    rootCert: pki.issuer.cert,
    ledgerCert: pki.ledger.cert,
    now: () => clock.now,
    ...(opts.voidWindow !== undefined ? { voidWindow: opts.voidWindow } : {}),
    ...(opts.validator ? { validator: opts.validator } : pool ? { validator: pool } : {}),
    ...(opts.verifier ? { verifier: opts.verifier } : {}),
  });
  await ledger.registerBank(pki.bank.cert);
  await ledger.allocate(pki.bank.kid, opts.allocation ?? 1_000_000_000_000, new Uint8Array(randomBytes(16)));
  const sync = async (card: TestCard) => {
    const req = card.wallet.beginSync(new Uint8Array(randomBytes(16)));
    const receipt = await ledger.sync(req);
    card.wallet.completeSync(receipt, pki.ledger.keys.publicKey);
    return receipt;
  };
  const topUp = async (card: TestCard, amount: number) => {
    await ledger.load(
      signLoadOrder({ card: card.identity.kid, amount, id: new Uint8Array(randomBytes(16)), time: clock.now }, pki.bank.signer),
    );
    return sync(card);
  };
  const acquirer = pki.issueAcquirer({ name: 'DT acquirer' });
  return {
    pki,
    ledger,
    storage,
    clock,
    sync,
    topUp,
    acquirer,
    settleRequest(batches, o = {}) {
      return signSettle(o.acquirer ?? acquirer, batches, { time: o.time ?? clock.now, ...(o.nonce ? { nonce: o.nonce } : {}) });
    },
    ...(pool ? { pool } : {}),
    async close() {
      await pool?.close();
      await storage.close();
    },
    async fundCard(amount, o = {}) {
      const identity = pki.issueCard({ limits: o.limits ?? DEFAULT_CARD_LIMITS });
      await ledger.registerCard(identity.chain);
      const card = { identity, wallet: new ReferenceWallet({ signer: identity.signer, chain: identity.chain }) };
      if (amount > 0) await topUp(card, amount);
      return card;
    },
    newTerminal(merchant = `shop-${Math.random().toString(36).slice(2, 8)}`, mcc = 5411) {
      return { ...pki.issueTerminal({ merchant: { id: merchant, mcc, name: merchant } }), merchant, mcc, seq: 0 };
    },
    request(t, amount) {
      return {
        amount,
        currency: CURRENCY_KZT,
        terminal: t.kid,
        merchant: t.merchant,
        mcc: t.mcc,
        nonce: new Uint8Array(randomBytes(16)),
        time: clock.now,
        chain: [...t.chain],
      };
    },
    batch(t, handovers, o = {}) {
      const seq = o.seq ?? ++t.seq;
      return signMessage(
        'Batch',
        {
          terminal: t.kid,
          seq,
          time: o.time ?? clock.now,
          chain: [...t.chain],
          handovers: [...handovers],
          crlVersion: o.crlVersion ?? 0,
          ...(o.adjustments && o.adjustments.length > 0 ? { adjustments: [...o.adjustments] } : {}),
        },
        t.signer,
      );
    },
    adjustment(t, a) {
      return signAdjustment(
        {
          kind: a.kind,
          id: a.id ?? new Uint8Array(randomBytes(16)),
          terminal: t.kid,
          transfer: a.transfer,
          card: a.card,
          amount: a.amount,
          currency: a.currency ?? CURRENCY_KZT,
          time: a.time ?? clock.now,
          ...(a.reference !== undefined ? { reference: a.reference } : {}),
        },
        t.signer,
      );
    },
  };
}
