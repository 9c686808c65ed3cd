/**
 * The conformance `sync` case against a real ledger (in-process card, no pcscd): a sync moves no value of its
 * own, but the ledger's receipt may add some (here a bank load order waiting at the ledger), and the case then
 * expects the balance before plus what the receipt says, not an unchanged balance.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStorage, InProcessTransport, SimulatedCard } from '@dt/card-applet-sim';
import { signLoadOrder } from '@dt/ledger';
import { getStatus, selectApplet } from '@dt/protocol';
import { CardSyncClient, TransportReader } from '@dt/terminal';
import { createLabContext } from '../src/context.ts';
import { runSuites, streamProgress } from '../src/runner.ts';
import { SUITES } from '../src/suites/index.ts';
import { Writable } from 'node:stream';
import { nowSec, startLabWorld } from './helpers/lab-world.ts';

test('conformance sync: a pending bank load delivered by the sync is what the balance gains; the case passes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-lab-conf-sync-'));
  const world = await startLabWorld(dir, { load: 1_000_000 });
  const storage = FileStorage.open(world.stateFile);
  t.teardown(async () => {
    storage.close();
    await world.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const transport = new InProcessTransport(new SimulatedCard({ storage }));
  await selectApplet(transport);
  const before = await getStatus(transport);
  const order = signLoadOrder(
    { card: before.card!, amount: 25_000, id: new Uint8Array(randomBytes(16)), time: nowSec() },
    world.pki.bank.signer,
  );
  const submitted = await new CardSyncClient({ ledgerUrl: world.ledgerUrl }).submitLoadOrder(order);
  t.true(submitted.ok, JSON.stringify(submitted));

  const handle = await createLabContext({
    cardReader: new TransportReader('in-process card', transport),
    ledgerUrl: world.ledgerUrl,
    suites: ['conformance'],
    signal: new AbortController().signal,
    tool: 'dt-lab test',
  });
  try {
    const sink = new Writable({ write: (_c, _e, cb) => cb() }) as unknown as NodeJS.WriteStream;
    const run = await runSuites(handle.context, [SUITES.conformance], {
      outDir: join(dir, 'out'),
      recorder: handle.recorder,
      progress: streamProgress(sink, { tty: false }),
    });
    const sync = run.suites[0]!.cases.find((c) => c.name === 'sync')!;
    t.is(sync.status, 'passed', sync.message);
    t.like(sync.details, { loaded: 25_000, voided: 0, balance: before.balance + 25_000 });
  } finally {
    await handle.close();
  }
  await selectApplet(transport);
  t.is((await getStatus(transport)).balance, before.balance + 25_000, 'the card holds the load');
});
