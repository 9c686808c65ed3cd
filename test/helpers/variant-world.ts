/**
 * A minimal copy of the story's setup (scripts/story.ts, steps 1 and 2) for
 * the story variants: issuer, bank, ledger (SQLite in a temp dir, HTTP on a
 * free loopback port), the acquirer (HTTP, free port, its own SQLite file so
 * that it can be stopped and restarted on the same database), terminals with
 * journals, and firmware cards personalized by the bank, registered and
 * loaded through the real ledger (LOAD BEGIN -> ledger.sync -> LOAD COMPLETE).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { CLA, INS, SYNC_P1, transmitOk, selectApplet } from '@dt/protocol';
import { MemoryStorage } from '@dt/firmware';
import { InProcessTransport, SimulatedCard, personalizeCard } from '@dt/card-applet-sim';
import {
  Ledger,
  createPki,
  nativeSigner,
  openSqliteStorage,
  signLoadOrder,
  startLedgerServer,
  type LedgerServer,
  type Pki,
} from '@dt/ledger';
import { startAcquirer, type RunningAcquirer } from '@dt/acquirer';
import { DEFAULT_POLICY, Journal, PaymentKernel, SyncClient, buildIdentity, type TerminalIdentity } from '@dt/terminal';

/** Seconds since the epoch (the ledger and the terminals run on the system clock). */
export const nowSec = (): number => Math.floor(Date.now() / 1000);
const rnd16 = (): Uint8Array => new Uint8Array(randomBytes(16));

/** Amounts of the variants, in tiyn (the story's). */
export const VARIANT = {
  allocation: 100_000_000,
  load: 5_000_000,
  limits: { perPayment: 1_000_000, offlineTotal: 4_000_000, offlineCount: 10, cvmLimit: 1_000_000 },
} as const;

/** The back office: ledger and acquirer on loopback. */
export interface BackOffice {
  readonly pki: Pki;
  readonly ledger: Ledger;
  readonly ledgerServer: LedgerServer;
  /** The running acquirer (replaced by {@link startAcquirer}). */
  acquirer: RunningAcquirer;
  /** Starts the acquirer again on the same database, on `port` (0: any free port). */
  startAcquirer(port?: number): Promise<RunningAcquirer>;
  /** Stops everything (idempotent). */
  close(): Promise<void>;
}

/** Starts the back office in `dir`; the bank gets the story's allocation. */
export async function startBackOffice(dir: string): Promise<BackOffice> {
  const pki = createPki({ now: nowSec() });
  const storage = openSqliteStorage(join(dir, 'ledger.db'));
  const ledger = await Ledger.open({
    storage,
    signer: nativeSigner(pki.ledger.keys),
    rootCert: pki.issuer.cert,
    ledgerCert: pki.ledger.cert,
    now: nowSec,
  });
  await ledger.registerBank(pki.bank.cert);
  await ledger.allocate(pki.bank.kid, VARIANT.allocation, rnd16());
  const ledgerServer = await startLedgerServer({ ledger, port: 0, host: '127.0.0.1' });
  // The acquirer's service key, certified by the bank: the ledger settles only what it signs.
  const acquirerId = pki.issueAcquirer();
  const start = (port = 0) =>
    startAcquirer({
      ledgerUrl: ledgerServer.url,
      root: pki.issuer.cert,
      bankCert: pki.bank.cert,
      ledgerCert: pki.ledger.cert,
      acquirerCert: acquirerId.cert,
      acquirerSigner: acquirerId.signer,
      dbFile: join(dir, 'acquirer.db'),
      port,
      host: '127.0.0.1',
      // The tests drive forwarding and list refreshes themselves.
      autoForward: false,
      crlRefreshMs: 3_600_000,
    });
  let closed = false;
  const bo: BackOffice = {
    pki,
    ledger,
    ledgerServer,
    acquirer: await start(),
    async startAcquirer(port?: number) {
      bo.acquirer = await start(port);
      await bo.acquirer.refreshCrl();
      return bo.acquirer;
    },
    async close() {
      if (closed) return;
      closed = true;
      await bo.acquirer.close().catch(() => {});
      await ledgerServer.close().catch(() => {});
      await storage.close();
    },
  };
  await bo.acquirer.refreshCrl();
  return bo;
}

/** A terminal certified by the bank; its key pair and chain for saving to a data dir. */
export function certifyTerminal(bo: BackOffice, merchant: string) {
  const cert = bo.pki.issueTerminal({ merchant: { id: merchant, mcc: 5411, name: merchant } });
  const identity: TerminalIdentity = buildIdentity(
    { keyPair: cert.keys, chain: [...cert.chain], root: bo.pki.issuer.cert, ledgerCert: bo.pki.ledger.cert },
    nowSec(),
  );
  return { cert, identity };
}

/** An in-process terminal: journal, kernel and a sync client against `acquirerUrl()`. */
export interface Terminal {
  readonly identity: TerminalIdentity;
  readonly journal: Journal;
  readonly kernel: PaymentKernel;
  sync(acquirerUrl?: string): ReturnType<SyncClient['sync']>;
}

/** Opens a terminal whose journal lives at `journalFile`; the caller closes the journal. */
export function openTerminal(bo: BackOffice, identity: TerminalIdentity, journalFile: string): Terminal {
  const journal = Journal.open(journalFile);
  const kernel = new PaymentKernel({ identity, journal, policy: DEFAULT_POLICY, timeouts: { cardMs: 10_000, tapMs: 15_000 } });
  return {
    identity,
    journal,
    kernel,
    sync: (url = bo.acquirer.url) =>
      new SyncClient({ identity, journal, acquirerUrl: url, retry: { attempts: 2, baseMs: 20, maxMs: 100, timeoutMs: 5000 } }).sync(),
  };
}

/** A firmware card personalized by the bank, registered and loaded with the story's load through the real ledger. */
export async function loadedCard(bo: BackOffice): Promise<{ card: SimulatedCard; transport: InProcessTransport; kid: Uint8Array }> {
  const card = new SimulatedCard({ storage: new MemoryStorage() });
  const transport = new InProcessTransport(card); // the bank's personalization station and the owner's app
  const pki = bo.pki;
  const p = await personalizeCard(
    transport,
    { signer: pki.bank.signer, cert: pki.bank.cert, root: pki.issuer.cert, ledgerCert: pki.ledger.cert },
    { pin: '1234', puk: '12345678', limits: VARIANT.limits },
  );
  await bo.ledger.registerCard([p.certificate, pki.bank.cert]);
  await bo.ledger.load(signLoadOrder({ card: p.cardKid, amount: VARIANT.load, id: rnd16(), time: nowSec() }, pki.bank.signer));
  await selectApplet(transport);
  const req = await transmitOk(transport, { cla: CLA.PROPRIETARY, ins: INS.LOAD, p1: SYNC_P1.BEGIN, p2: 0, data: rnd16(), le: 256 });
  const receipt = await bo.ledger.sync(req);
  await transmitOk(transport, { cla: CLA.PROPRIETARY, ins: INS.LOAD, p1: SYNC_P1.COMPLETE, p2: 0, data: receipt });
  return { card, transport, kid: p.cardKid };
}
