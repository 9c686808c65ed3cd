/**
 * Resumed chains (SPEC §7.7): the ledger records the chain state at a card's chain head when
 * it settles set-based, and validates a later handover that carries exactly that chain from
 * its head on. These tests hold it to the rule that resuming changes no answer: the outcomes
 * and the books are those of a ledger without any recorded state; a carried prefix that differs
 * by one byte, a handover that leaves out a token the prefix spent, a head without a state or
 * with a state it cannot read, all get the whole chain validated; a clone that replays the
 * recorded chain with its own tail is caught as a fork; on the worker pool as in this thread.
 */
import test from 'ava';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeMessage, encodeMessage, ErrorCode, OutcomeStatus, verifySigned, type Outcome } from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import { createTestLedger, type TestLedger } from '../src/testkit.ts';
import { Ledger } from '../src/ledger.ts';
import { nativeSigner } from '../src/native-signer.ts';
import { openSqliteStorage } from '../src/storage/sqlite.ts';
import { decodeChainState } from '../src/validation.ts';
import { outcomes, stateDigest } from './_helpers.ts';

/** Settles one batch of `handovers` at `shop`; its outcomes. */
async function settle(k: TestLedger, shop: ReturnType<TestLedger['newTerminal']>, handovers: Uint8Array[]): Promise<Outcome[]> {
  k.clock.now += 5;
  return outcomes((await k.ledger.settle([k.batch(shop, handovers)]))[0]!);
}

/** The chain state stored at `card`'s head, decoded (undefined when none). */
async function headState(k: TestLedger, card: Uint8Array) {
  const rows = await k.storage.transaction((tx) => tx.all('SELECT counter, state FROM chain_heads WHERE card = ?', [card]));
  const st = rows[0]?.state as Uint8Array | null | undefined;
  return { counter: rows[0] ? Number(rows[0].counter) : undefined, state: st ? decodeChainState(st) : undefined };
}

for (const workers of [0, 2]) {
  const where = workers ? 'on the worker pool' : 'in this thread';

  test(`${where}: a card's next handovers are validated from its recorded head; outcomes and books are those without the state`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'dt-resume-'));
    const file = join(dir, 'ledger.db');
    const k = await createTestLedger({ storage: openSqliteStorage(file), ...(workers ? { workers } : {}) });
    try {
      const shop = k.newTerminal('shop-a');
      const card = await k.fundCard(20_000);
      const kid = card.identity.kid;
      t.like(await settle(k, shop, [card.wallet.pay(k.request(shop, 1_000)).handover]), [{ status: OutcomeStatus.SETTLED }]);
      t.is(k.ledger.stats.resumedChains, 0, 'nothing to resume from yet');
      // The card synced once (its receipt is the anchor): the first payment is the one after it.
      const h1 = await headState(k, kid);
      const anchor = h1.counter! - 1;
      t.like(h1.state, { count: 1, counter: anchor + 1, anchorCounter: anchor, amounts: 1_000 });
      t.like(await settle(k, shop, [card.wallet.pay(k.request(shop, 2_000)).handover]), [{ status: OutcomeStatus.SETTLED }]);
      t.is(k.ledger.stats.resumedChains, 1);
      t.like((await headState(k, kid)).state, { count: 2, counter: anchor + 2, amounts: 3_000 });

      // The same payment to a copy of this database whose head has no state: the same outcome and books.
      const p3 = card.wallet.pay(k.request(shop, 3_000)).handover;
      const batch = k.batch(shop, [p3]);
      const copyFile = join(dir, 'copy.db');
      // The file and its write-ahead log, between transactions: a consistent copy.
      copyFileSync(file, copyFile);
      if (existsSync(`${file}-wal`)) copyFileSync(`${file}-wal`, `${copyFile}-wal`);
      const copyStorage = openSqliteStorage(copyFile);
      await copyStorage.transaction((tx) => tx.run('UPDATE chain_heads SET state = NULL'));
      const copy = await Ledger.open({
        storage: copyStorage,
        signer: nativeSigner(k.pki.ledger.keys),
        rootCert: k.pki.issuer.cert,
        ledgerCert: k.pki.ledger.cert,
        now: () => k.clock.now,
      });
      try {
        k.clock.now += 5;
        const [a] = await k.ledger.settle([batch]);
        const [b] = await copy.settle([batch]);
        const key = k.pki.ledger.keys.publicKey;
        const content = (o: Uint8Array) => verifySigned('Outcome', o, key, nativeVerifier).message;
        t.deepEqual(a!.map(content), b!.map(content));
        t.like(content(a![0]!), { status: OutcomeStatus.SETTLED, amount: 3_000 });
        t.is(k.ledger.stats.resumedChains, 2);
        t.is(copy.stats.resumedChains, 0, 'the copy had no state: it validated the whole chain');
        t.is(await stateDigest(k.storage), await stateDigest(copyStorage));
        t.true((await k.ledger.audit()).ok);
        // The copy recorded a state now: its next handover resumes too.
        t.like(await headState({ ...k, storage: copyStorage } as TestLedger, kid), {
          counter: anchor + 3,
          state: { count: 3, amounts: 6_000 },
        });
      } finally {
        await copyStorage.close();
      }
    } finally {
      await k.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('a carried prefix that differs by one byte from the recorded chain is validated whole: INVALID at the changed transfer', async (t) => {
  const k = await createTestLedger();
  try {
    const shop = k.newTerminal('shop-a');
    const card = await k.fundCard(20_000);
    await settle(k, shop, [card.wallet.pay(k.request(shop, 1_000)).handover]);
    await settle(k, shop, [card.wallet.pay(k.request(shop, 1_000)).handover]);
    const h = decodeMessage('Handover', card.wallet.pay(k.request(shop, 1_000)).handover);
    // A flipped bit in the signature of the first recorded transfer: same payload hash, other bytes.
    const first = h.history[0]!.slice();
    first[first.length - 1]! ^= 1;
    const [o] = await settle(k, shop, [encodeMessage('Handover', { ...h, history: [first, ...h.history.slice(1)] })]);
    t.like(o, { status: OutcomeStatus.INVALID, code: ErrorCode.TRANSFER_SIGNATURE });
    t.is(k.ledger.stats.resumedChains, 1, 'only the untouched second payment resumed');
    // The honest handover still settles, from the head.
    const [ok] = await settle(k, shop, [encodeMessage('Handover', h)]);
    t.like(ok, { status: OutcomeStatus.SETTLED });
    t.is(k.ledger.stats.resumedChains, 2);
    t.true((await k.ledger.audit()).ok);
  } finally {
    await k.close();
  }
});

test('a handover that leaves out the token the recorded prefix spent is validated whole: INVALID VALUE_NOT_CONSERVED', async (t) => {
  const k = await createTestLedger();
  try {
    const shop = k.newTerminal('shop-a');
    const card = await k.fundCard(20_000);
    await settle(k, shop, [card.wallet.pay(k.request(shop, 1_000)).handover]);
    const h = decodeMessage('Handover', card.wallet.pay(k.request(shop, 1_000)).handover);
    t.true((h.tokens?.length ?? 0) + (h.receiptTokens?.length ?? 0) > 0);
    const { tokens: _t, receiptTokens: _r, ...rest } = h;
    const [o] = await settle(k, shop, [encodeMessage('Handover', rest)]);
    t.like(o, { status: OutcomeStatus.INVALID, code: ErrorCode.VALUE_NOT_CONSERVED });
    t.is(k.ledger.stats.resumedChains, 0);
    t.like(await settle(k, shop, [encodeMessage('Handover', h)]), [{ status: OutcomeStatus.SETTLED }]);
    t.is(k.ledger.stats.resumedChains, 1);
  } finally {
    await k.close();
  }
});

test('a clone that replays the recorded chain with its own next transfer is caught as a fork when the card’s own one arrives', async (t) => {
  const k = await createTestLedger();
  try {
    const a = k.newTerminal('shop-a');
    const b = k.newTerminal('shop-b');
    const card = await k.fundCard(20_000);
    await settle(k, a, [card.wallet.pay(k.request(a, 1_000)).handover]);
    await settle(k, a, [card.wallet.pay(k.request(a, 1_000)).handover]);
    const clone = card.wallet.clone();
    // Both sign counter 3 on the recorded chain; the clone's reaches the ledger first and resumes from the head.
    const own = card.wallet.pay(k.request(a, 500)).handover;
    const forged = clone.pay(k.request(b, 700)).handover;
    t.like(await settle(k, b, [forged]), [{ status: OutcomeStatus.SETTLED }]);
    t.is(k.ledger.stats.resumedChains, 2);
    const [o] = await settle(k, a, [own]);
    t.like(o, { status: OutcomeStatus.DOUBLE_SPEND, code: 'COUNTER_REUSED' });
    t.is(o!.proof?.length, 2);
    t.is((await k.storage.transaction((tx) => tx.all('SELECT card FROM revocations'))).length, 1);
    t.true((await k.ledger.audit()).ok);
  } finally {
    await k.close();
  }
});

test('a head without a state, or with one the ledger cannot read, gets the whole chain validated and a state recorded', async (t) => {
  const k = await createTestLedger();
  try {
    const shop = k.newTerminal('shop-a');
    const card = await k.fundCard(20_000);
    await settle(k, shop, [card.wallet.pay(k.request(shop, 1_000)).handover]);
    const anchor = (await headState(k, card.identity.kid)).counter! - 1;
    for (const [i, state] of [null, new Uint8Array([0xff, 0x00]), new Uint8Array([0x82, 0x02, 0x00])].entries()) {
      await k.storage.transaction((tx) => tx.run('UPDATE chain_heads SET state = ?', [state]));
      t.like(await settle(k, shop, [card.wallet.pay(k.request(shop, 100)).handover]), [{ status: OutcomeStatus.SETTLED }], `state ${i}`);
      t.is(k.ledger.stats.resumedChains, 0, `state ${i}: validated whole`);
      t.like(await headState(k, card.identity.kid), { counter: anchor + i + 2, state: { count: i + 2 } });
    }
    t.like(await settle(k, shop, [card.wallet.pay(k.request(shop, 100)).handover]), [{ status: OutcomeStatus.SETTLED }]);
    t.is(k.ledger.stats.resumedChains, 1);
    t.true((await k.ledger.audit()).ok);
  } finally {
    await k.close();
  }
});
