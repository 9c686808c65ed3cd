/**
 * A lab world for the tests: a ledger (SQLite in a temp dir, HTTP on a free
 * loopback port) with issuer, bank and ledger PKI; a card STATE FILE
 * personalized by the bank, registered and loaded through the ledger's HTTP
 * API (LOAD BEGIN -> POST /v1/sync -> LOAD COMPLETE); a dt-pos terminal data
 * directory certified by the bank. Everything is real code of the packages.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { selectApplet, getStatus } from '@dt/protocol';
import { FileStorage, InProcessTransport, SimulatedCard, personalizeCard } from '@dt/card-applet-sim';
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
import { CardSyncClient, saveIdentity, saveTerminalKey } from '@dt/terminal';

export const nowSec = (): number => Math.floor(Date.now() / 1000);
const rnd16 = (): Uint8Array => new Uint8Array(randomBytes(16));

/** The lab card's PIN (a test card: the value is no secret). */
export const LAB_PIN = '4821';

export interface LabWorld {
  readonly pki: Pki;
  readonly ledgerUrl: string;
  readonly stateFile: string;
  readonly terminalDir: string;
  readonly loaded: number;
  close(): Promise<void>;
}

/** Builds the world in `dir`. */
export async function startLabWorld(
  dir: string,
  o: { load?: number; limits?: { perPayment: number; offlineTotal: number; offlineCount: number; cvmLimit: number } } = {},
): Promise<LabWorld> {
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
  const load = o.load ?? 5_000_000;
  await ledger.allocate(pki.bank.kid, 100_000_000, rnd16());
  const server: LedgerServer = await startLedgerServer({ ledger, port: 0, host: '127.0.0.1' });

  // The card: a state file personalized by the bank, registered and loaded online.
  const stateFile = join(dir, 'lab.card');
  const fs = FileStorage.create(stateFile, { label: 'lab card' });
  try {
    const card = new SimulatedCard({ storage: fs });
    const t = new InProcessTransport(card);
    const bank = { signer: pki.bank.signer, cert: pki.bank.cert, root: pki.issuer.cert, ledgerCert: pki.ledger.cert };
    const p = await personalizeCard(t, bank, {
      pin: LAB_PIN,
      puk: '73914862',
      limits: o.limits ?? { perPayment: 1_000_000, offlineTotal: 4_000_000, offlineCount: 16, cvmLimit: 500_000 },
    });
    const ledgerApi = new CardSyncClient({ ledgerUrl: server.url });
    const reg = await ledgerApi.registerCard([p.certificate, pki.bank.cert]);
    if (!reg.ok) throw new Error(`registration refused: HTTP ${reg.status} ${reg.code}`);
    await selectApplet(t);
    const r = await ledgerApi.load(t, signLoadOrder({ card: p.cardKid, amount: load, id: rnd16(), time: nowSec() }, pki.bank.signer));
    if (!r.ok) throw new Error(`LOAD refused at the ${r.step}: ${r.code}`);
    const st = await getStatus(t);
    if (st.balance !== load) throw new Error(`loaded ${st.balance}, expected ${load}`);
  } finally {
    fs.close();
  }

  // The terminal: a dt-pos data directory certified by the bank.
  const terminalDir = join(dir, 'terminal');
  mkdirSync(terminalDir, { recursive: true });
  const term = pki.issueTerminal({ merchant: { id: 'KZ-LAB-1', mcc: 5999, name: 'DT Lab' } });
  saveTerminalKey(terminalDir, term.keys);
  saveIdentity(terminalDir, { chain: [...term.chain], root: pki.issuer.cert, ledgerCert: pki.ledger.cert });

  return {
    pki,
    ledgerUrl: server.url,
    stateFile,
    terminalDir,
    loaded: load,
    async close() {
      await server.close().catch(() => {});
      await storage.close();
    },
  };
}
