/**
 * A real back office for integration tests: the reference ledger (SQLite,
 * HTTP) and the acquirer bridge (HTTP), with firmware cards registered and
 * loaded through the real ledger (LOAD BEGIN -> ledger.sync -> LOAD COMPLETE).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { MemoryStorage } from '@dt/firmware';
import { InProcessTransport, personalizeCard, SimulatedCard } from '@dt/card-applet-sim';
import { openSqliteStorage, signLoadOrder, startLedgerServer, type LedgerServer } from '@dt/ledger';
import { createTestLedger, type TestLedger } from '@dt/ledger/testkit';
import { startAcquirer, type RunningAcquirer } from '@dt/acquirer';
import { CLA, INS, SYNC_P1, transmitOk, selectApplet } from '@dt/protocol';
import { buildIdentity, type TerminalIdentity } from '../../src/index.ts';
import { nowSec, TEST_LIMITS, type TestCard } from './fixtures.ts';

/** Ledger + acquirer running on free ports. */
export interface World {
  readonly tl: TestLedger;
  readonly ledgerServer: LedgerServer;
  acquirer: RunningAcquirer;
  readonly dir: string;
  /** Restarts the acquirer on the same database (and returns its new URL). */
  startAcquirer(port?: number): Promise<RunningAcquirer>;
  close(): Promise<void>;
}

const rnd16 = (): Uint8Array => new Uint8Array(randomBytes(16));

/** Starts the world in `dir`. The ledger clock follows the system clock. */
export async function startWorld(dir: string): Promise<World> {
  const tl = await createTestLedger({ now: nowSec(), storage: openSqliteStorage(join(dir, 'ledger.db')) });
  // The test ledger's clock is settable; keep it on real time (the terminal uses real time).
  const timer = setInterval(() => (tl.clock.now = nowSec()), 200);
  timer.unref();
  const ledgerServer = await startLedgerServer({ ledger: tl.ledger, port: 0 });
  const start = (port = 0) =>
    startAcquirer({
      ledgerUrl: ledgerServer.url,
      root: tl.pki.issuer.cert,
      bankCert: tl.pki.bank.cert,
      ledgerCert: tl.pki.ledger.cert,
      acquirerCert: tl.acquirer.cert,
      acquirerSigner: tl.acquirer.signer,
      dbFile: join(dir, 'acquirer.db'),
      port,
      autoForward: false,
      crlRefreshMs: 3_600_000,
    });
  const world: World = {
    tl,
    ledgerServer,
    acquirer: await start(),
    dir,
    async startAcquirer(port?: number) {
      world.acquirer = await start(port);
      return world.acquirer;
    },
    async close() {
      clearInterval(timer);
      await world.acquirer.close().catch(() => {});
      await ledgerServer.close();
    },
  };
  await world.acquirer.refreshCrl();
  return world;
}

/** A terminal certified by the world's bank. */
export function worldTerminal(w: World, merchant = 'shop-1'): TerminalIdentity {
  const t = w.tl.pki.issueTerminal({ merchant: { id: merchant, mcc: 5411, name: merchant } });
  return buildIdentity({ keyPair: t.keys, chain: [...t.chain], root: w.tl.pki.issuer.cert, ledgerCert: w.tl.pki.ledger.cert }, nowSec());
}

/** A firmware card personalized by the world's bank, registered and loaded with `amount` through the real ledger. */
export async function worldCard(w: World, amount: number, limits = TEST_LIMITS, storage = new MemoryStorage()): Promise<TestCard> {
  const card = new SimulatedCard({ storage });
  const transport = new InProcessTransport(card);
  const pki = w.tl.pki;
  const p = await personalizeCard(
    transport,
    { signer: pki.bank.signer, cert: pki.bank.cert, root: pki.issuer.cert, ledgerCert: pki.ledger.cert },
    { pin: '1234', puk: '12345678', limits },
  );
  await w.tl.ledger.registerCard([p.certificate, pki.bank.cert]);
  await w.tl.ledger.load(signLoadOrder({ card: p.cardKid, amount, id: rnd16(), time: nowSec() }, pki.bank.signer));
  await selectApplet(transport);
  const req = await transmitOk(transport, { cla: CLA.PROPRIETARY, ins: INS.LOAD, p1: SYNC_P1.BEGIN, p2: 0, data: rnd16(), le: 256 });
  const receipt = await w.tl.ledger.sync(req);
  await transmitOk(transport, { cla: CLA.PROPRIETARY, ins: INS.LOAD, p1: SYNC_P1.COMPLETE, p2: 0, data: receipt });
  return { card, storage, transport, kid: p.cardKid, pin: '1234' };
}
