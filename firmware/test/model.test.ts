/**
 * Property test: random lives (payments of random amounts to two merchants,
 * with or without PIN, torn-tap retries, syncs) run on the firmware through
 * APDUs and on the protocol's ReferenceWallet with the same key. Both must
 * accept and refuse the same payments and produce byte-identical handovers and
 * sync requests; every handover passes validateHandover; value is conserved.
 */
import test from 'ava';
import fc from 'fast-check';
import {
  createTrustStore,
  Cvm,
  isDtError,
  keyPairSigner,
  openSigned,
  ReferenceWallet,
  sumAmounts,
  toHex,
  validateHandover,
  completeHistory,
  type Mark,
  CardStatusSchema,
  decodeFormat,
} from '@dt/protocol';
import { MemoryStorage } from '../src/index.ts';
import { Ledger, PIN, T0, makePki, newCard, paymentRequest, personalize } from './fixtures.ts';

const pki = makePki('model');
const ledger = new Ledger(pki);
const trust = createTrustStore({ root: pki.root.cert, ledgerCert: pki.ledger.cert, at: T0 });
const meal: Mark = { mccs: [5814], hops: 1 };

type Op = { kind: 'pay'; amount: number; canteen: boolean; pin: boolean } | { kind: 'retry'; canteen: boolean } | { kind: 'sync' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('pay' as const),
      amount: fc.integer({ min: 1, max: 30_000 }),
      canteen: fc.boolean(),
      pin: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('retry' as const), canteen: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('sync' as const) }) },
);

const tokensArb = fc.array(fc.record({ value: fc.integer({ min: 1, max: 40_000 }), marked: fc.boolean() }), { minLength: 1, maxLength: 5 });

test('firmware and ReferenceWallet agree on random lives', async (t) => {
  let lives = 0;
  let payments = 0;
  await fc.assert(
    fc.asyncProperty(tokensArb, fc.array(opArb, { minLength: 1, maxLength: 10 }), async (tokens, ops) => {
      try {
        lives++;
        const { host, applet } = newCard(new MemoryStorage(), `model-${lives}`);
        await personalize(host, pki);
        const st = applet.committedState;
        const wallet = new ReferenceWallet({
          signer: keyPairSigner({ secretKey: st.secretKey!, publicKey: st.publicKey! }),
          chain: st.chain!,
        });
        const total = sumAmounts(tokens.map((x) => x.value));
        const challenge = new Uint8Array(16).fill(lives & 255);
        const sync = async (loaded: number) => {
          const begin = await host.syncBegin(challenge, loaded > 0);
          if (begin.sw !== 0x9000) throw new Error(`begin ${begin.sw.toString(16)}`);
          if (toHex(begin.data) !== toHex(wallet.beginSync(challenge))) throw new Error('sync requests differ');
          const bal = openSigned('SyncRequest', begin.data).message.balance;
          const receipt =
            loaded > 0
              ? ledger.receipt(begin.data, {
                  loaded,
                  values: tokens.map((x) => x.value),
                  marks: tokens.map((x) => (x.marked ? meal : undefined)),
                })
              : ledger.receipt(begin.data, bal > 0 ? { values: [bal] } : { values: [] });
          if ((await host.syncComplete(receipt, loaded > 0)).sw !== 0x9000) throw new Error('complete');
          wallet.completeSync(receipt, pki.ledger.keys.publicKey);
        };
        await sync(total);
        const loaded = total;
        let paidOut = 0;
        let last: { nonce: Uint8Array; amount: number; request: ReturnType<typeof openSigned<'PaymentRequest'>>['message'] } | undefined;
        let time = T0;
        // What the canteen terminal holds of this card (its journal): transfer hash -> chain.
        const canteenJournal = new Map<string, Uint8Array[]>();
        let canteenNewest: Uint8Array | undefined;
        for (const op of ops) {
          time += 10;
          if (op.kind === 'sync') {
            // The ledger settles the history: its value has left the card.
            await sync(0);
            continue;
          }
          const terminal = op.canteen ? pki.canteen : pki.terminal;
          const amount = op.kind === 'retry' ? (last?.amount ?? 1) : op.amount;
          const retryOf = op.kind === 'retry' ? last?.nonce : undefined;
          // The canteen holds the issuing bank's certificate (SPEC §3.6 banks): both leave it out of the chain.
          const banks = op.canteen ? [pki.issuing.signer.kid] : undefined;
          // It also names the newest transfer of the card it accepted (SPEC §3.6 held): both leave the history up to it out.
          const held = op.canteen ? canteenNewest : undefined;
          const req = paymentRequest(pki, terminal, {
            amount,
            time,
            ...(retryOf ? { retryOf } : {}),
            ...(banks ? { banks } : {}),
            ...(held ? { held } : {}),
          });
          const pin = op.kind === 'pay' && op.pin;
          if (pin && (await host.verifyPin(PIN)).sw !== 0x9000) throw new Error('pin');
          const card = await host.pay(req);
          let ref: Uint8Array | undefined;
          let retried = false;
          try {
            const r = wallet.pay({ ...openSigned('PaymentRequest', req).message }, { cvm: pin ? Cvm.OFFLINE_PIN : Cvm.NONE });
            ref = r.handover;
            retried = r.retried;
          } catch (e) {
            if (!isDtError(e)) throw e;
          }
          if ((card.sw === 0x9000) !== (ref !== undefined))
            throw new Error(`card ${card.sw.toString(16)} vs wallet ${ref ? 'paid' : 'refused'} (${JSON.stringify(op)})`);
          if (!ref) continue;
          if (toHex(card.data) !== toHex(ref)) throw new Error('handovers differ');
          const reqs = [openSigned('PaymentRequest', req).message];
          // A retry is checked against the interrupted request, as a terminal does.
          if (retryOf && last) reqs.push(last.request);
          const bankCertificate = (kid: Uint8Array) => (toHex(kid) === toHex(pki.issuing.signer.kid) ? pki.issuing.cert : undefined);
          const heldHistory = (h: Uint8Array) => canteenJournal.get(toHex(h));
          const v = validateHandover(card.data, { trust, request: reqs, bankCertificate, heldHistory });
          if (!v.ok) throw new Error(`invalid handover ${v.code}`);
          if (op.canteen) {
            const full = completeHistory(v);
            canteenJournal.set(toHex(v.transferHash), [...full.history, full.transfer]);
            canteenNewest = v.transferHash;
          }
          if (!retried) {
            paidOut += amount;
            payments++;
            last = { nonce: openSigned('PaymentRequest', req).message.nonce, amount, request: openSigned('PaymentRequest', req).message };
          }
        }
        const status = decodeFormat(CardStatusSchema, (await host.status()).data);
        if (status.balance + paidOut !== loaded) throw new Error(`balance ${status.balance} + paid ${paidOut} != loaded ${loaded}`);
        if (status.balance !== wallet.balance) throw new Error('balances differ');
      } catch (e) {
        t.log(`life ${lives}: ${(e as Error).message}`);
        throw e;
      }
    }),
    { numRuns: 25, seed: 20261123, endOnFailure: true },
  );
  t.log(`${lives} lives, ${payments} payments compared`);
  t.true(payments > 10);
});
