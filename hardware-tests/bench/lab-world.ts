/**
 * A complete little DT world in one process, for the benchmark and the
 * timing tests: issuer/bank/ledger PKI, the reference ledger (SQLite in a
 * temporary directory, HTTP on a free loopback port) for card LOAD and
 * SYNC, a simulated firmware card personalized by the bank, registered and
 * loaded online through its own APDUs, and a lab terminal (bank-certified
 * identity, fresh journal holding the ledger's revocation list, payment
 * kernel). Everything is real code of the packages; nothing is stubbed.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Verifier, getStatus, selectApplet } from '@dt/protocol';
import { MemoryStorage } from '@dt/firmware';
import { InProcessTransport, SimulatedCard, personalizeCard, type CardLimits } from '@dt/card-applet-sim';
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
import { DEFAULT_POLICY, Journal, PaymentKernel, buildIdentity, installRevocationList, syncCard } from '@dt/terminal';
import type { LabTerminal } from '../src/suite.ts';

const nowSec = (): number => Math.floor(Date.now() / 1000);
const rnd16 = (): Uint8Array => new Uint8Array(randomBytes(16));

/** Options of {@link startLabWorld}. */
export interface LabWorldOptions {
  /** Limits the bank certifies for the card. */
  readonly limits: CardLimits;
  /** Value loaded onto the card online, tiyn. */
  readonly load: number;
  /** Bank allocation at the ledger (default 10x the load). */
  readonly allocation?: number;
}

/** A simulated card, personalized and loaded. */
export interface LabCard {
  readonly card: SimulatedCard;
  /** The owner's own link to the card (personalization station, app): not the lab reader. */
  readonly owner: InProcessTransport;
  readonly kid: Uint8Array;
  /** The card's balance, read through the owner's link (SELECT + GET STATUS). */
  balance(): Promise<number>;
}

/** The running world. */
export interface LabWorld {
  readonly dir: string;
  readonly pki: Pki;
  readonly ledger: Ledger;
  readonly ledgerServer: LedgerServer;
  readonly ledgerUrl: string;
  /** Personalizes, registers and loads a new card with `limits` (default: the world's). */
  newCard(limits?: CardLimits, load?: number): Promise<LabCard>;
  /** A new lab terminal with its own journal (closed by {@link close}); `verifier` defaults to the kernel's (noble). */
  newTerminal(name: string, verifier?: Verifier): LabTerminal;
  /** Stops the ledger, closes journals and removes the directory (idempotent). */
  close(): Promise<void>;
}

/** Starts the world; the caller must {@link LabWorld.close} it. */
export async function startLabWorld(opts: LabWorldOptions): Promise<LabWorld> {
  const dir = mkdtempSync(join(tmpdir(), 'dt-lab-world-'));
  const closers: (() => unknown)[] = [() => rmSync(dir, { recursive: true, force: true })];
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const c of closers.reverse()) {
      try {
        await c();
      } catch {
        // keep closing the rest
      }
    }
  };
  try {
    const pki = createPki({ now: nowSec() });
    const storage = openSqliteStorage(join(dir, 'ledger.db'));
    closers.push(() => storage.close());
    const ledger = await Ledger.open({
      storage,
      signer: nativeSigner(pki.ledger.keys),
      rootCert: pki.issuer.cert,
      ledgerCert: pki.ledger.cert,
      now: nowSec,
    });
    await ledger.registerBank(pki.bank.cert);
    await ledger.allocate(pki.bank.kid, opts.allocation ?? opts.load * 10, rnd16());
    const ledgerServer = await startLedgerServer({ ledger, port: 0, host: '127.0.0.1' });
    closers.push(() => ledgerServer.close());
    const crl = await ledger.crl();
    let terminals = 0;

    const newCard = async (limits: CardLimits = opts.limits, load: number = opts.load): Promise<LabCard> => {
      const card = new SimulatedCard({ storage: new MemoryStorage() });
      const owner = new InProcessTransport(card);
      const bank = { signer: pki.bank.signer, cert: pki.bank.cert, root: pki.issuer.cert, ledgerCert: pki.ledger.cert };
      const p = await personalizeCard(owner, bank, { pin: '1234', puk: '12345678', limits });
      await ledger.registerCard([p.certificate, pki.bank.cert]);
      await ledger.load(signLoadOrder({ card: p.cardKid, amount: load, id: rnd16(), time: nowSec() }, pki.bank.signer));
      await selectApplet(owner);
      const r = await syncCard(owner, ledgerServer.url, { load: true });
      if (!r.ok) throw new Error(`LOAD refused by the ledger: ${r.code}`);
      return {
        card,
        owner,
        kid: p.cardKid,
        async balance() {
          await selectApplet(owner);
          return (await getStatus(owner)).balance;
        },
      };
    };

    const newTerminal = (name: string, verifier?: Verifier): LabTerminal => {
      const cert = pki.issueTerminal({ merchant: { id: `LAB-${name}`, mcc: 5411, name: `Lab ${name}` } });
      const identity = buildIdentity(
        { keyPair: cert.keys, chain: [...cert.chain], root: pki.issuer.cert, ledgerCert: pki.ledger.cert },
        nowSec(),
      );
      const journal = Journal.open(join(dir, `terminal-${++terminals}-${name.replace(/[^A-Za-z0-9_-]/g, '_')}.sqlite`));
      closers.push(() => journal.close());
      // Offline acceptance needs a fresh revocation list (risk policy): the ledger's, verified.
      installRevocationList(journal, crl, identity, nowSec());
      const kernel = new PaymentKernel({
        identity,
        journal,
        policy: DEFAULT_POLICY,
        timeouts: { cardMs: 10_000, tapMs: 15_000 },
        ...(verifier ? { verifier } : {}),
      });
      return { identity, journal, kernel };
    };

    return { dir, pki, ledger, ledgerServer, ledgerUrl: ledgerServer.url, newCard, newTerminal, close };
  } catch (e) {
    await close();
    throw e;
  }
}
