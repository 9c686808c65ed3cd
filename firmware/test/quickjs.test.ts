/**
 * The esbuild bundle inside QuickJS: built here, loaded with a 16 MiB heap
 * limit, driven through a host-side HAL. A card life (personalization, LOAD,
 * PIN, PAY with chaining and GET RESPONSE, SYNC, a torn-tap retry) is run on
 * Node and recorded; the same commands are replayed into the QuickJS card
 * with the same seeded randomness, and every response APDU must be identical
 * byte for byte (no leftover or missing exchange).
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createTrustStore, decodeResponse, openSigned, toHex, validateHandover } from '@dt/protocol';
import { Applet, MemoryStorage } from '../src/index.ts';
import { buildBundle } from '../scripts/build.ts';
import { QuickJsCard } from '../scripts/quickjs-card.ts';
import { Host, Ledger, PIN, T0, load, makePki, paymentRequest, personalize, seededRandom } from './fixtures.ts';

/** Builds the bundle into a temporary directory (removed once its text is read) and returns the text. */
async function bundleText(): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), 'dt-fw-'));
  try {
    return await buildBundle(path.join(dir, 'firmware.js'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Exchange {
  command: Uint8Array;
  response: Uint8Array;
}

test('the bundle runs in QuickJS under a 16 MiB limit and answers every APDU exactly as on Node', async (t) => {
  const bundle = await bundleText();
  t.false(/\bnode:|\brequire\(/.test(bundle), 'no Node built-ins in the bundle');

  // 1. Record a life on Node.
  const pki = makePki('quickjs');
  const ledger = new Ledger(pki);
  const trust = createTrustStore({ root: pki.root.cert, ledgerCert: pki.ledger.cert, at: T0 });
  const nodeApplet = new Applet({ storage: new MemoryStorage(), random: seededRandom('qjs-card') });
  const transcript: Exchange[] = [];
  const host = new Host({
    process: async (command: Uint8Array) => {
      const response = await nodeApplet.process(command);
      transcript.push({ command, response });
      return response;
    },
  } as unknown as Applet);
  await personalize(host, pki);
  await load(host, ledger, 80_000, { values: [50_000, 20_000, 10_000] });
  const req1 = paymentRequest(pki, pki.terminal, { amount: 12_345 });
  t.is((await host.pay(req1)).sw, 0x6982, 'PIN needed above the CVM limit');
  t.is((await host.verifyPin(PIN)).sw, 0x9000);
  const p1 = await host.pay(req1);
  t.is(p1.sw, 0x9000);
  t.true(validateHandover(p1.data, { trust, request: openSigned('PaymentRequest', req1).message }).ok);
  const retry = paymentRequest(pki, pki.terminal, { amount: 12_345, retryOf: openSigned('PaymentRequest', req1).message.nonce });
  t.is(toHex((await host.pay(retry)).data), toHex(p1.data), 'torn-tap retry');
  const req2 = paymentRequest(pki, pki.canteen, { amount: 700 });
  t.is((await host.pay(req2)).sw, 0x9000);
  const begin = await host.syncBegin(new Uint8Array(16).fill(7));
  t.is((await host.syncComplete(ledger.receipt(begin.data))).sw, 0x9000);
  t.is((await host.status()).sw, 0x9000);
  t.true(
    transcript.some((e) => (decodeResponse(e.response).sw & 0xff00) === 0x6100),
    'long responses went through 61xx',
  );
  t.true(
    transcript.some((e) => (e.command[0]! & 0x10) !== 0),
    'long commands were chained',
  );

  // 2. Replay into QuickJS with the same seed.
  const qjsStorage = new MemoryStorage();
  const card = await QuickJsCard.create({ bundle, storage: qjsStorage, random: seededRandom('qjs-card') });
  let peak = 0;
  let mismatches = 0;
  try {
    for (const [i, e] of transcript.entries()) {
      const got = await card.process(e.command);
      if (toHex(got) !== toHex(e.response)) {
        mismatches++;
        t.fail(`exchange ${i}: QuickJS answered ${toHex(got).slice(0, 80)}… instead of ${toHex(e.response).slice(0, 80)}…`);
        break;
      }
      peak = Math.max(peak, card.memory().usedBytes);
    }
    // Power-on inside QuickJS reloads the same committed state.
    card.powerOn();
  } finally {
    card.dispose();
  }
  t.is(mismatches, 0);
  // The persistent state written by QuickJS is the one written on Node.
  t.is(
    toHex(new Applet({ storage: qjsStorage, random: seededRandom('x') }).committedState.secretKey!),
    toHex(nodeApplet.committedState.secretKey!),
  );
  t.true(peak > 0 && peak < 16 * 1024 * 1024);
  const msg = `QuickJS: ${transcript.length} APDU exchanges identical to Node; peak heap ${peak} bytes of 16 MiB; bundle ${bundle.length} bytes`;
  t.log(msg);
});

test('the prepared terminal key needs no larger heap: under the smallest limit at which one PAY succeeds, four PAYs at one terminal succeed (the second prepares the key, the later ones use it)', async (t) => {
  const bundle = await bundleText();
  const pki = makePki('qjs-heap');
  const ledger = new Ledger(pki);
  /** Personalizes and loads a card inside QuickJS under `limit` bytes, then makes `pays` PAYs at one terminal; their status words, or undefined when the card failed. */
  const life = async (limit: number, pays: number): Promise<number[] | undefined> => {
    let card: QuickJsCard | undefined;
    try {
      card = await QuickJsCard.create({ bundle, storage: new MemoryStorage(), random: seededRandom('qjs-heap'), memoryLimit: limit });
      const c = card;
      const host = new Host({ process: (a: Uint8Array) => c.process(a) } as unknown as Applet);
      await personalize(host, pki);
      await load(host, ledger, 100_000, { values: [60_000, 40_000] });
      const sws: number[] = [];
      for (let i = 0; i < pays; i++) sws.push((await host.pay(paymentRequest(pki, pki.terminal, { amount: 100 + i, time: T0 + i }))).sw);
      return sws;
    } catch {
      return undefined;
    } finally {
      try {
        card?.dispose();
      } catch {
        // A runtime that hit its limit may not free cleanly; it is dropped anyway.
      }
    }
  };
  // The smallest limit (8 KiB steps) under which one PAY succeeds (the first PAY's three verifications are the peak).
  let lo = 64 * 1024;
  let hi = 16 * 1024 * 1024;
  while (hi - lo > 8192) {
    const mid = Math.floor((lo + hi) / 2 / 8192) * 8192;
    if ((await life(mid, 1))?.[0] === 0x9000) hi = mid;
    else lo = mid;
  }
  t.deepEqual(await life(hi, 4), [0x9000, 0x9000, 0x9000, 0x9000], `four PAYs at one terminal under ${hi} bytes`);
  t.log(`smallest heap limit for one PAY: ${hi} bytes; four PAYs at one terminal succeed under it`);
});
