/**
 * The issuing bank's certificate by reference (SPEC §3.8): a Handover whose chain is `[card]`
 * settles with the registered bank's certificate; a bank the ledger has not registered fails closed.
 */
import test from 'ava';
import { BankPermission, decodeMessage, encodeMessage, ReferenceWallet, signMessage, toHex } from '@dt/protocol';
import { createTestLedger } from '../src/testkit.ts';
import { outcomes, STATUS_NAME } from './_helpers.ts';

test('a [card] chain settles with the registered bank; the same payment of an unregistered bank is INVALID HANDOVER_CHAIN', async (t) => {
  const k = await createTestLedger();
  try {
    const card = await k.fundCard(10_000);
    const shop = k.newTerminal('shop');
    const p1 = card.wallet.pay({ ...k.request(shop, 1_000), banks: [k.pki.bank.kid] });
    t.is(decodeMessage('Handover', p1.handover).chain.length, 1);
    // The same card again, carrying the bank (the older form): both settle.
    const p2 = card.wallet.pay(k.request(shop, 500));
    t.is(decodeMessage('Handover', p2.handover).chain.length, 2);
    const [o] = await k.ledger.settle([k.batch(shop, [p1.handover, p2.handover])]);
    t.deepEqual(
      outcomes(o!).map((x) => STATUS_NAME[x.status]),
      ['SETTLED', 'SETTLED'],
    );
    t.is((await k.ledger.merchantBalances())[toHex(shop.kid)], 1_500);

    // A card of a bank certified by the root but never registered with this ledger: by reference,
    // the ledger has nothing to complete the chain with.
    const stranger = k.pki.createBank({ name: 'unregistered bank', perms: BankPermission.ISSUING });
    const id = k.pki.issueCard({ bank: stranger });
    const wallet = new ReferenceWallet({ signer: id.signer, chain: id.chain, personalizedAt: k.clock.now - 10 });
    const token = signMessage(
      'Token',
      { serial: new Uint8Array(16).fill(7), value: 5_000, currency: 398, owner: id.kid, issued: k.clock.now - 5 },
      k.pki.ledger.signer,
    );
    wallet.holdTokens([token], k.pki.ledger.keys.publicKey);
    const p3 = wallet.pay({ ...k.request(shop, 700), banks: [stranger.kid] });
    const h3 = decodeMessage('Handover', p3.handover);
    t.is(h3.chain.length, 1);
    const [o3] = await k.ledger.settle([k.batch(shop, [p3.handover])]);
    t.like(outcomes(o3!)[0], { status: 4, code: 'HANDOVER_CHAIN' });
  } finally {
    await k.storage.close();
  }
});

test('a Batch handover that leaves history out (after) is INVALID HISTORY_BROKEN: the ledger judges complete handovers only', async (t) => {
  const k = await createTestLedger();
  try {
    const card = await k.fundCard(10_000);
    const shop = k.newTerminal('shop');
    const p1 = card.wallet.pay(k.request(shop, 1_000));
    const p2 = card.wallet.pay({ ...k.request(shop, 500), held: p1.transferHash });
    const h2 = decodeMessage('Handover', p2.handover);
    t.is(h2.history.length, 0);
    const [o] = await k.ledger.settle([k.batch(shop, [p1.handover, p2.handover])]);
    t.like(outcomes(o!)[1], { status: 4, code: 'HISTORY_BROKEN' });
    // The complete form of the same payment (what a terminal forwards) settles.
    const { after, ...rest } = h2;
    t.deepEqual(after, p1.transferHash);
    const full = encodeMessage('Handover', { ...rest, history: [p1.transfer] });
    const [o2] = await k.ledger.settle([k.batch(shop, [full])]);
    t.like(outcomes(o2!)[0], { status: 1 });
  } finally {
    await k.storage.close();
  }
});
