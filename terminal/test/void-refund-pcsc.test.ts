/**
 * `dt-pos void` and `dt-pos refund` as processes, through a real pcscd (vpcd) with the simulated
 * card served by `dt-card serve --vpcd`, against the real acquirer and ledger: charge, void
 * (again: the same void), charge, sync, a refund of part refused before settling and accepted
 * after, `refund --tap` with the paying card on the reader, a retried reference refunds once,
 * too much is refused (exit 1), an unknown receipt is a usage error (exit 2), `--tap` without a
 * card ends (exit 4), another card on the reader is refused (exit 1); after the card's sync its balance has the voided and refunded value back.
 *
 * Needs root, pcscd and vsmartcard-vpcd (CI has them; never skipped).
 */
import test from 'ava';
import { join } from 'node:path';
import type { MemoryStorage } from '@dt/firmware';
import { FileStorage, InProcessTransport, SimulatedCard } from '@dt/card-applet-sim';
import { selectApplet } from '@dt/protocol';
import { CardSyncClient, readCardState } from '../src/index.ts';
import { dtPos, serveCard, startShop, type Shop, stopServedCards } from './helpers/serve.ts';
import { tempDir } from './helpers/fixtures.ts';
import { worldCard } from './helpers/world.ts';

let shop: Shop | undefined;
const tmp = tempDir('dt-pos-void-refund-');
test.after.always(async () => {
  await stopServedCards();
  await shop?.close();
  tmp.cleanup();
});

test('dt-pos void / refund over PC/SC: rules, idempotent references, --tap with the paying card, balances after the card sync', async (t) => {
  shop = await startShop(tmp.dir);
  const { env, dataDir, stateFile, world } = shop;
  const D = ['--data-dir', dataDir];
  const pos = async (args: string[], code: number): Promise<string> => {
    const r = await dtPos([...D, ...args], env);
    t.is(r.code, code, `dt-pos ${args.join(' ')}:\n${r.stdout}${r.stderr}`);
    return r.stdout + r.stderr;
  };
  const serve = (file: string) => serveCard(['--vpcd', '--port', String(shop!.pcscd.vpcdPort), file], env);
  let card = await serve(stateFile);
  let served = true;
  t.teardown(async () => {
    if (served) await card.stop();
  });

  t.regex(await pos(['charge', '40', '--timeout', '20'], 0), /APPROVED 40\.00 KZT {2}receipt #1/);
  t.regex(await pos(['void', '1'], 0), /VOIDED receipt #1 40\.00 KZT: pending ledger confirmation \(sent at the next sync\)/);
  t.regex(await pos(['void', '1'], 0), /VOIDED receipt #1 40\.00 KZT \(voided before\)/);
  t.regex(await pos(['charge', '90', '--timeout', '20'], 0), /receipt #2/);
  t.regex(await pos(['refund', '2', '--amount', '30'], 1), /REFUSED: receipt #2 is pending, not settled/);
  t.regex(await pos(['sync'], 0), /Sent 1 batch\(es\), 130\.00 KZT and 1 void\(s\)\/refund\(s\)/);
  await world.acquirer.forwardNow();
  t.regex(await pos(['sync'], 0), /Voids and refunds: 1 confirmed, 0 refused by the ledger/);
  t.regex(await pos(['receipt', '1'], 0), /void +40\.00 KZT .*: confirmed by the ledger/);
  t.regex(await pos(['void', '2'], 1), /settled to the merchant: refund it instead/);

  // Another card on the reader: refused before anything is recorded.
  const other = await worldCard(world, 100_000);
  const otherFile = join(tmp.dir, 'other.state');
  const fs = FileStorage.create(otherFile, { label: 'other' });
  for (const [slot, bytes] of (other.storage as MemoryStorage).snapshot()) fs.write(slot, bytes);
  fs.close();
  await card.stop();
  card = await serve(otherFile);
  t.regex(
    await pos(['refund', '2', '--amount', '30', '--tap', '--reader', `pcsc:${shop.reader}`, '--timeout', '20'], 1),
    /REFUSED: the card on the reader \([0-9a-f]{32}\) is not the card that paid receipt #2/,
  );
  await card.stop();
  card = await serve(stateFile);

  const tap = await dtPos(
    [...D, '--json', 'refund', '2', '--amount', '30', '--reference', 'r-1', '--tap', '--reader', `pcsc:${shop.reader}`, '--timeout', '20'],
    env,
  );
  t.is(tap.code, 0, tap.stdout + tap.stderr);
  const j = JSON.parse(tap.stdout) as {
    outcome: string;
    existing: boolean;
    refundable: number;
    adjustment: { amount: number; state: string };
  };
  t.like(j, { outcome: 'REFUNDED', existing: false, refundable: 6_000, adjustment: { amount: 3_000, state: 'pending' } });
  t.regex(
    await pos(['refund', '2', '--amount', '30', '--reference', 'r-1'], 0),
    /REFUNDED 30\.00 KZT of receipt #2 \(90\.00 KZT\) \(refunded before\)/,
  );
  t.regex(await pos(['refund', '2', '--amount', '30', '--reference', 'r-1', '--amount', '31'], 1), /REFUSED: reference r-1 names a refund/);
  t.regex(await pos(['refund', '2', '--amount', '60.01'], 1), /60\.01 KZT exceeds what is left to refund \(60\.00 KZT of 90\.00 KZT\)/);
  t.regex(await pos(['refund', '99'], 2), /no receipt #99/);
  t.regex(await pos(['refund', '2', '--amount', 'x'], 2), /not an amount/);

  await card.stop();
  served = false;
  t.regex(await pos(['refund', '2', '--amount', '1', '--tap', '--timeout', '2'], 4), /END: no card presented/);
  t.regex(await pos(['sync'], 0), /1 void\(s\)\/refund\(s\)/);
  await world.acquirer.forwardNow();
  t.regex(await pos(['sync'], 0), /1 confirmed/);
  t.regex(await pos(['report'], 0), /refunds: confirmed 30\.00 KZT \(1\)/);
  t.regex(await pos(['receipt', '2'], 0), /refund +30\.00 KZT \(r-1\).*credited to the card at its next sync/);

  // The card's next sync: 50,000 - 40 - 90 on the card, then the voided 40 and the refunded 30 back.
  const storage = FileStorage.open(stateFile);
  try {
    const tr = new InProcessTransport(new SimulatedCard({ storage }));
    await selectApplet(tr);
    t.is((await readCardState(tr)).balance, 5_000_000 - 13_000);
    const r = await new CardSyncClient({ ledgerUrl: world.ledgerServer.url }).sync(tr);
    t.true(r.ok, JSON.stringify(r));
    await selectApplet(tr);
    t.is((await readCardState(tr)).balance, 5_000_000 - 9_000 + 3_000);
  } finally {
    storage.close();
  }
  const merchants = await world.tl.ledger.merchantBalances();
  t.deepEqual(Object.values(merchants), [6_000]);
  const audit = await world.tl.ledger.audit();
  t.true(audit.ok);
  t.is(audit.difference, 0);
});
