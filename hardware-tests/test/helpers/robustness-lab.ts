/**
 * An in-process lab for the robustness and endurance suite tests: a real
 * ledger (SQLite in a temp dir, HTTP on a free loopback port) with its PKI,
 * a firmware card personalized by the bank, registered and loaded through
 * the ledger (LOAD APDUs), lab terminals (journal + kernel, the way
 * `dt-lab`'s context builds them), and a reader + card control pair that
 * behave like the simulated card served through vpcd:
 *
 * - {@link SimReader}: a `CardReader` whose card can leave the field. A power
 *   cut or a dropped frame pulls the card (it comes back by itself shortly,
 *   powered down, like `VpcdClient`); a removal through the control stays
 *   until `insert`. A session survives a removal and reinsertion (as a PC/SC
 *   session does): its next command reaches a freshly powered applet. The
 *   card's outgoing frames go through its fault injector (corrupt/drop).
 * - {@link SimControl}: the lab's `CardControl` over that reader and the
 *   card's fault injector; `status()` reads the committed memory with the
 *   simulator's `readCardStatus` (what `dt-card serve --control` answers).
 *
 * And a minimal {@link CaseRunner} that keeps verdicts, so a test can run a
 * suite without the `dt-lab` runner.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CLA,
  CardRemovedError,
  ExchangeGuard,
  TransportBusyError,
  INS,
  SYNC_P1,
  transmitOk,
  type TransmitOptions,
  selectApplet,
} from '@dt/protocol';
import { Applet, MemoryStorage, type Storage } from '@dt/firmware';
import {
  CardControlError,
  InProcessTransport,
  SimulatedCard,
  UNREADABLE_CARD_STATE,
  isPowerCut,
  isUnreadableCardAnswer,
  parseFaultPlan,
  personalizeCard,
  readCardStatus,
  type AppletFactory,
  type FaultEvent,
  type FaultPlan,
} from '@dt/card-applet-sim';
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
import {
  DEFAULT_POLICY,
  Journal,
  PaymentKernel,
  TerminalError,
  TerminalErrorCode,
  buildIdentity,
  installRevocationList,
  type CardReader,
  type CardSession,
  type TerminalIdentity,
  type WaitOptions,
} from '@dt/terminal';
import { runCaseBody } from '../../src/runner.ts';
import type { CaseRunner, CardControl, CardControlStatus, LabContext, LabOptions, LabTerminal } from '../../src/suite.ts';
import type { CaseStatus } from '../../src/model.ts';

export const nowSec = (): number => Math.floor(Date.now() / 1000);
const rnd16 = (): Uint8Array => new Uint8Array(randomBytes(16));

/** Card limits of the lab card: small offline count so endurance rounds are short. */
export const LAB_LIMITS = { perPayment: 1_000_000, offlineTotal: 4_000_000, offlineCount: 4, cvmLimit: 1_000_000 } as const;
/** Value loaded onto the lab card. */
export const LAB_LOAD = 5_000_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A card in a reader, with the vpcd semantics (see the module doc). */
export class SimReader implements CardReader {
  readonly name: string;
  readonly card: SimulatedCard;
  readonly #reinsertDelayMs: number;
  #heldOut = false;
  #pulledUntil = 0;
  #generation = 0;
  readonly #sessions: ExchangeGuard;

  constructor(name: string, card: SimulatedCard, options: { reinsertDelayMs?: number } = {}) {
    this.name = name;
    this.card = card;
    this.#sessions = new ExchangeGuard(name);
    this.#reinsertDelayMs = options.reinsertDelayMs ?? 40;
  }

  /** True while the card is in the field. */
  get present(): boolean {
    return !this.#heldOut && Date.now() >= this.#pulledUntil;
  }

  /** Out of the field until {@link insert} (the control's `remove`). */
  remove(): void {
    this.#heldOut = true;
    this.#leave();
  }

  /** Back in the field. */
  insert(): void {
    this.#heldOut = false;
  }

  /** A power cut or dropped frame: the card leaves the field and comes back by itself. */
  #pull(): void {
    this.#pulledUntil = Date.now() + this.#reinsertDelayMs;
    this.#leave();
  }

  #leave(): void {
    this.#generation++;
    this.card.powerOff();
  }

  #removed(): CardRemovedError {
    return new CardRemovedError(`card left the field of ${this.name}`, { reader: this.name });
  }

  async #transmit(apdu: Uint8Array, o: TransmitOptions): Promise<Uint8Array> {
    if (!this.present) throw this.#removed();
    if (!this.card.powered) {
      try {
        this.card.powerOn();
      } catch (e) {
        if (isPowerCut(e)) {
          this.#pull();
          throw this.#removed();
        }
        throw e;
      }
    }
    const generation = this.#generation;
    let response: Uint8Array;
    try {
      response = await this.card.transmit(apdu, o.signal ? { signal: o.signal } : {});
    } catch (e) {
      if (isPowerCut(e)) {
        this.#pull();
        throw this.#removed();
      }
      throw e;
    }
    // Taken out while it processed the command: the answer is lost.
    if (generation !== this.#generation || !this.present) throw this.#removed();
    const out = this.card.faults.onOutgoingFrame(response);
    if (out === null) {
      this.#pull();
      throw this.#removed();
    }
    return out;
  }

  async waitForCard(options: WaitOptions = {}): Promise<CardSession> {
    if (this.#sessions.held) throw new TransportBusyError(this.name);
    const until = Date.now() + (options.timeoutMs ?? 60_000);
    while (!this.present) {
      if (options.signal?.aborted) throw options.signal.reason;
      if (Date.now() > until) throw new TerminalError(TerminalErrorCode.TIMEOUT, `no card in ${this.name}`, { reader: this.name });
      await sleep(10);
    }
    this.#sessions.acquire();
    let open = true;
    const exchanges = new ExchangeGuard(this.name);
    return {
      reader: this.name,
      transmit: async (apdu, o = {}) => {
        if (!open) throw this.#removed();
        return exchanges.run(() => this.#transmit(apdu, o));
      },
      release: async () => {
        if (!open) return;
        open = false;
        this.#sessions.release();
      },
    };
  }

  async close(): Promise<void> {}
}

/** The lab's card control over a {@link SimReader} and its card. */
export class SimControl implements CardControl {
  readonly #reader: SimReader;
  readonly #snapshot: () => Map<number, Uint8Array>;
  readonly #timers = new Set<NodeJS.Timeout>();
  /** Requests seen (the tests check the suites disarm). */
  readonly log: string[] = [];

  constructor(reader: SimReader, snapshot: () => Map<number, Uint8Array>) {
    this.#reader = reader;
    this.#snapshot = snapshot;
  }

  async remove(reinsertAfterMs?: number): Promise<void> {
    this.log.push('remove');
    this.#reader.remove();
    if (reinsertAfterMs !== undefined) {
      const t = setTimeout(() => {
        this.#timers.delete(t);
        this.#reader.insert();
      }, reinsertAfterMs);
      this.#timers.add(t);
    }
  }

  async insert(): Promise<void> {
    this.log.push('insert');
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    this.#reader.insert();
  }

  async arm(plan: FaultPlan): Promise<void> {
    this.log.push(`arm ${JSON.stringify(plan)}`);
    // The same validation as the control socket.
    this.#reader.card.faults.arm(parseFaultPlan(JSON.parse(JSON.stringify(plan))));
  }

  async disarm(): Promise<void> {
    this.log.push('disarm');
    this.#reader.card.faults.disarm();
  }

  async events(): Promise<FaultEvent[]> {
    return this.#reader.card.faults.events.map((e) => ({ ...e }));
  }

  /** As the control channel's client: a card whose state cannot be read (it answers 6F00) rejects with `CARD_UNREADABLE`. */
  async status(): Promise<CardControlStatus> {
    try {
      return { ...(await readCardStatus(this.#snapshot())), inReader: this.#reader.present };
    } catch (e) {
      if (isUnreadableCardAnswer(e)) throw new CardControlError('CARD_UNREADABLE', UNREADABLE_CARD_STATE);
      throw e;
    }
  }

  async close(): Promise<void> {
    for (const t of this.#timers) clearTimeout(t);
  }
}

/** The back office and a loaded card. */
export interface LabWorld {
  readonly dir: string;
  readonly pki: Pki;
  readonly ledger: Ledger;
  readonly server: LedgerServer;
  readonly identity: TerminalIdentity;
  readonly card: SimulatedCard;
  readonly storage: MemoryStorage;
  readonly reader: SimReader;
  readonly control: SimControl;
  readonly journals: Journal[];
  /** A fresh lab terminal (own journal, revocation list installed). */
  terminal(): LabTerminal;
  close(): Promise<void>;
}

/**
 * Starts a ledger and a card loaded with {@link LAB_LOAD} through it. With
 * `createApplet`, the card runs that applet (e.g. a broken wrapper of the
 * real one) once personalized and loaded by the genuine applet. With
 * `storage` (a state file), the card is made in it instead, for a card
 * served by `dt-card serve` (the world's in-process card is then unused).
 */
export async function startLabWorld(
  options: {
    createApplet?: AppletFactory;
    limits?: { perPayment: number; offlineTotal: number; offlineCount: number; cvmLimit: number };
    load?: number;
    storage?: Storage;
  } = {},
): Promise<LabWorld> {
  const dir = mkdtempSync(join(tmpdir(), 'dt-lab-test-'));
  const pki = createPki({ now: nowSec() });
  const ledgerStorage = openSqliteStorage(join(dir, 'ledger.db'));
  const ledger = await Ledger.open({
    storage: ledgerStorage,
    signer: nativeSigner(pki.ledger.keys),
    rootCert: pki.issuer.cert,
    ledgerCert: pki.ledger.cert,
    now: nowSec,
  });
  await ledger.registerBank(pki.bank.cert);
  await ledger.allocate(pki.bank.kid, 100_000_000, rnd16());
  const server = await startLedgerServer({ ledger, port: 0, host: '127.0.0.1' });

  // Personalized and loaded by the genuine applet (the bank's station and the owner's app).
  const storage = new MemoryStorage();
  {
    // The card's memory: in-process, or a state file for `dt-card serve`.
    const setup = new SimulatedCard({ storage: options.storage ?? storage });
    const t = new InProcessTransport(setup);
    const p = await personalizeCard(
      t,
      { signer: pki.bank.signer, cert: pki.bank.cert, root: pki.issuer.cert, ledgerCert: pki.ledger.cert },
      { pin: '1234', puk: '12345678', limits: options.limits ?? LAB_LIMITS },
    );
    await ledger.registerCard([p.certificate, pki.bank.cert]);
    await ledger.load(signLoadOrder({ card: p.cardKid, amount: options.load ?? LAB_LOAD, id: rnd16(), time: nowSec() }, pki.bank.signer));
    await selectApplet(t);
    const req = await transmitOk(t, { cla: CLA.PROPRIETARY, ins: INS.LOAD, p1: SYNC_P1.BEGIN, p2: 0, data: rnd16(), le: 256 });
    const receipt = await ledger.sync(req);
    await transmitOk(t, { cla: CLA.PROPRIETARY, ins: INS.LOAD, p1: SYNC_P1.COMPLETE, p2: 0, data: receipt });
    setup.powerOff();
  }
  const card = new SimulatedCard({ storage, ...(options.createApplet ? { createApplet: options.createApplet } : {}) });
  const reader = new SimReader('Sim Reader 00', card);
  const control = new SimControl(reader, () => storage.snapshot());

  const cert = pki.issueTerminal({ merchant: { id: 'LAB-SHOP', mcc: 5411, name: 'Lab shop' } });
  const identity = buildIdentity(
    { keyPair: cert.keys, chain: [...cert.chain], root: pki.issuer.cert, ledgerCert: pki.ledger.cert },
    nowSec(),
  );
  const crl = await ledger.crl();
  const journals: Journal[] = [];
  return {
    dir,
    pki,
    ledger,
    server,
    identity,
    card,
    storage,
    reader,
    control,
    journals,
    terminal() {
      const journal = Journal.open(join(dir, `journal-${journals.length + 1}.sqlite`));
      journals.push(journal);
      installRevocationList(journal, crl, identity, nowSec());
      // The time limits of dt-lab's own lab terminal (src/context.ts).
      const kernel = new PaymentKernel({ identity, journal, policy: DEFAULT_POLICY, timeouts: { cardMs: 10_000, tapMs: 15_000 } });
      return { identity, journal, kernel };
    },
    async close() {
      await control.close();
      for (const j of journals) j.close();
      await server.close().catch(() => undefined);
      await ledgerStorage.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Default options of the suites in these tests. */
export const TEST_OPTIONS: LabOptions = { taps: 10, amount: 100, rounds: 2, cardTimeoutMs: 5000, interactive: false };

/** A lab context over a world; `without` drops parts (control, terminal, ledger). */
export function labContext(
  world: LabWorld,
  o: {
    options?: Partial<LabOptions>;
    without?: ('control' | 'terminal' | 'ledger')[];
    progress?: (m: string, d?: number, t?: number) => void;
  } = {},
): LabContext {
  const without = new Set(o.without ?? []);
  const options = { ...TEST_OPTIONS, ...o.options };
  return {
    readerName: world.reader.name,
    reader: world.reader,
    openSession: () => world.reader.waitForCard({ timeoutMs: options.cardTimeoutMs }),
    terminal: () => (without.has('terminal') ? undefined : world.terminal()),
    ...(without.has('terminal') ? { terminalMissing: 'no lab terminal: give --terminal <dt-pos data dir> (see dt-pos init)' } : {}),
    ...(without.has('ledger') ? {} : { ledgerUrl: world.server.url }),
    ...(without.has('control') ? {} : { control: world.control }),
    options,
    signal: new AbortController().signal,
    progress: o.progress ?? (() => undefined),
    workDir: world.dir,
  };
}

/** One recorded case. */
export interface RecordedCase {
  readonly name: string;
  readonly status: CaseStatus;
  readonly message?: string;
  readonly details: Record<string, unknown>;
}

/** A case runner without transcripts: runs cases in order with the lab runner's verdict API and keeps their verdicts. */
export function recordingRunner(
  only?: readonly string[],
): CaseRunner & { readonly cases: RecordedCase[]; byName(name: string): RecordedCase } {
  const cases: RecordedCase[] = [];
  return {
    cases,
    byName(name: string) {
      const c = cases.find((x) => x.name === name);
      if (!c) throw new Error(`no case ${name}; cases: ${cases.map((x) => x.name).join(', ')}`);
      return c;
    },
    async case(name, _description, body) {
      // A run limited to some cases (as `dt-lab run --case` would): the others do not run at all.
      if (only && !only.includes(name)) return;
      const r = await runCaseBody(body);
      cases.push({ name, status: r.status, details: r.details, ...(r.message ? { message: r.message } : {}) });
    },
  };
}

/**
 * A broken card: the real applet, but after every PAY it puts its memory
 * back as it was (the commit does not stick). The terminal gets valid
 * transfers; the card keeps its value: money created.
 */
export const forgetfulApplet: AppletFactory = (hal) => {
  const inner = new Applet(hal);
  return {
    powerOn: () => inner.powerOn(),
    async process(cmd: Uint8Array) {
      const lastPay = cmd[1] === INS.PAY && (cmd[0]! & CLA.CHAINING) === 0;
      const saved = lastPay ? [0, 1].map((slot) => hal.storage.read(slot)) : [];
      const r = await inner.process(cmd);
      saved.forEach((data, slot) => {
        if (data !== undefined) hal.storage.write(slot, data);
      });
      return r;
    },
  };
};
