/**
 * The end-to-end story (issue 6): a cloned card double-spends offline, and
 * the system catches it. Every step runs the real code of the packages:
 *
 * 1. issuer, bank, ledger (SQLite in a temp dir, HTTP on a free loopback
 *    port) and acquirer (HTTP, free port) come up; terminals A and B are
 *    certified by the bank and keep their journals in the temp dir;
 * 2. a firmware card (hosted by card-applet-sim) is personalized, registered
 *    and loaded online (bank load order, LOAD through the card's APDUs
 *    against the ledger's HTTP API); a byte-for-byte clone of its memory is
 *    made: the attack;
 * 3. offline: the genuine card pays A several times, the clone pays B the
 *    first amount again (same counter, same coins). Through a private pcscd
 *    and the terminal's PC/SC adapter when running as root with pcscd
 *    installed, else in-process;
 * 4. the terminals sync through the acquirer; the ledger settles, finds the
 *    double spend (proof: the card, the two transfers with the same counter),
 *    revokes the card and covers B, which followed the rules;
 * 5. the new revocation list reaches the terminals; the clone is declined
 *    offline (CARD_REVOKED);
 * 6. the owner syncs the genuine card (SYNC through the card's APDUs against
 *    the ledger): the card is revoked, so the ledger issues no fresh tokens and
 *    its value goes back to the issuing bank for the owner (receipt `redeemed`);
 *    the balances and the ledger's supply invariant are checked;
 * 7. the day's exceptions at terminal A with a second card: a payment voided
 *    before sync and a settled one refunded in part (both terminal-signed and
 *    journalled, sent in batches); after the card's sync it holds the voided
 *    and refunded value, merchant A was never credited the voided payment and
 *    is debited the refund, and the supply invariant still holds.
 *
 * Usage: node --conditions=dt-source --import tsx scripts/story.ts [--json] [--in-process] [--help]
 * Exit codes: {@link EXIT_CODES}.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  OutcomeStatus,
  decodeDeterministic,
  formatTenge,
  openSigned,
  payloadHash,
  signSettleRequest,
  subjectKey,
  toHex,
  verifySigned,
  getStatus,
  selectApplet,
  exitCodesHelp,
} from '@dt/protocol';
import { MemoryStorage } from '@dt/firmware';
import {
  InProcessTransport,
  SimulatedCard,
  VpcdClient,
  pcscdUnavailableReason,
  personalizeCard,
  startPcscd,
  type PcscdHandle,
} from '@dt/card-applet-sim';
import {
  Ledger,
  createPki,
  nativeSigner,
  openSqliteStorage,
  signLoadOrder,
  startLedgerServer,
  type AuditReport,
  type LedgerServer,
  type LedgerStorage,
} from '@dt/ledger';
import { startAcquirer, type RunningAcquirer } from '@dt/acquirer';
import { ignoreClosedPipes } from '@dt/protocol/cli';
import { httpRequest } from '@dt/protocol/http';
import {
  CardSyncClient,
  DEFAULT_CONFIG,
  adjustPayment,
  adjustmentJson,
  DEFAULT_POLICY,
  Journal,
  PaymentKernel,
  PcscReaders,
  SyncClient,
  TransportReader,
  buildIdentity,
  verifierByName,
  type CardReader,
  type SyncReport,
  type TapOutcome,
  type TerminalIdentity,
} from '@dt/terminal';

// A reader that closes the pipe early (`npm run demo | head`) is no error: the rest of the output is dropped and
// the story ends as it would have, with its own exit code.
ignoreClosedPipes();

/**
 * The exit codes of the story (`npm run demo`), the one table (`--help`
 * prints it; the root README repeats it, checked by a test). 0-3 mean the
 * same for every command line of the toolkit; 4 and up are the story's own.
 */
export const EXIT_CODES = [
  { code: 0, name: 'OK', meaning: 'the story holds: every check passed and everything started was stopped' },
  { code: 1, name: 'FAILED', meaning: 'refused: a check of the story failed (an outcome, a balance or the supply invariant)' },
  { code: 2, name: 'USAGE', meaning: 'usage: unknown option' },
  { code: 6, name: 'INTERNAL', meaning: 'the story could not run to its end (an error), or left something running' },
  { code: 130, name: 'INTERRUPTED', meaning: 'interrupted (Ctrl-C): everything started is stopped, the temp directory removed' },
] as const;

const HELP = `node --conditions=dt-source --import tsx scripts/story.ts [options]

The DT end-to-end story: ledger, acquirer and two terminals come up; a card
is personalized, loaded online and cloned; the genuine card pays terminal A,
the clone pays terminal B offline; the terminals sync, the ledger catches the
double spend, revokes the card and covers B; the clone is declined offline;
the owner syncs the genuine card (it is revoked: its value goes back to the
issuing bank for the owner) and the supply invariant is checked; then the
day's exceptions at terminal A: a second card's payment is voided before any
sync, another is settled and partly refunded, and the books still balance.

Options:
  --json        print one JSON document with every step's results
  --in-process  tap through the in-process transport even when pcscd could run
  --help        show this help

${exitCodesHelp(EXIT_CODES)}

Amounts are shown in tenge with two decimals (1500.00 KZT); --json gives integer tiyn.
`;

/** Amounts of the story, in tiyn (1 KZT = 100 tiyn). */
export const STORY = {
  /** The issuer's allocation to the bank. */
  allocation: 100_000_000,
  /** Loaded onto the card online. */
  load: 5_000_000,
  /** The genuine card's payments at terminal A. */
  genuineTaps: [120_000, 450_000, 80_000],
  /** The clone's payment at terminal B (the same value as the genuine card's first). */
  cloneTap: 120_000,
  /** The clone's attempt after the revocation list arrived. */
  cloneRetry: 30_000,
  /** Step 7: a second card's load, a payment voided before sync, a payment refunded in part after settling. */
  scene: { load: 1_000_000, voided: 150_000, paid: 300_000, refund: 100_000 },
  /** Card limits certified by the bank. */
  limits: { perPayment: 1_000_000, offlineTotal: 4_000_000, offlineCount: 10, cvmLimit: 1_000_000 },
} as const;

interface Args {
  json: boolean;
  inProcess: boolean;
}

function parseArgs(argv: readonly string[]): Args {
  const out: Args = { json: false, inProcess: false };
  for (const a of argv) {
    if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      process.exit(0);
    } else if (a === '--json') out.json = true;
    else if (a === '--in-process') out.inProcess = true;
    else {
      process.stderr.write(`story: unknown option ${a}\n\n${HELP}`);
      process.exit(2);
    }
  }
  return out;
}

const nowSec = (): number => Math.floor(Date.now() / 1000);
const rnd16 = (): Uint8Array => new Uint8Array(randomBytes(16));
/** The toolkit's one human amount format (1500.00 KZT). */
const tenge = formatTenge;

/** One tap as the story reports it. */
interface TapReport {
  readonly terminal: 'A' | 'B';
  readonly card: 'genuine' | 'clone' | 'second';
  readonly amount: number;
  readonly kind: TapOutcome['kind'];
  readonly reason?: string;
  readonly counter?: number;
  readonly transfer?: string;
  /** The tap, card detected to outcome, milliseconds (informative; never asserted). */
  readonly ms: number;
  /** Time from the start of the payment until the card was detected (card arriving, re-presentations), ms. */
  readonly waitedMs: number;
}

/** A check the story makes; any failed check makes the exit code 1. */
interface Check {
  readonly what: string;
  readonly ok: boolean;
  readonly expected: unknown;
  readonly actual: unknown;
}

class Output {
  readonly checks: Check[] = [];
  /** Set on Ctrl-C: steps still unwinding while things are stopped print nothing more. */
  interrupted = false;
  constructor(readonly json: boolean) {}
  step(n: number, title: string): void {
    if (!this.json && !this.interrupted) process.stdout.write(`\n${n}. ${title}\n`);
  }
  line(text: string): void {
    if (!this.json && !this.interrupted) process.stdout.write(`   ${text}\n`);
  }
  expect(what: string, actual: unknown, expected: unknown): boolean {
    const ok = JSON.stringify(actual) === JSON.stringify(expected);
    this.checks.push({ what, ok, expected, actual });
    if (!ok && !this.json && !this.interrupted)
      process.stdout.write(`   !! ${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}\n`);
    return ok;
  }
}

/** Everything the story starts, so that it can all be stopped (also on Ctrl-C). */
class Resources {
  readonly #closers: { name: string; close: () => unknown }[] = [];
  #closed = false;
  add(name: string, close: () => unknown): void {
    this.#closers.push({ name, close });
  }
  /** Stops everything in reverse order; a failure to stop one thing does not keep the others running. */
  async closeAll(): Promise<string[]> {
    if (this.#closed) return [];
    this.#closed = true;
    const problems: string[] = [];
    for (const c of this.#closers.reverse()) {
      try {
        await c.close();
      } catch (e) {
        problems.push(`${c.name}: ${(e as Error).message}`);
      }
    }
    return problems;
  }
}

/** POSTs `body` and answers the 2xx body (at most 1 MiB); a refusal throws `HttpRefusedError` (status, stable code, detail). */
async function postOk(url: string, body: Uint8Array, contentType: string): Promise<Uint8Array> {
  return (await httpRequest(url, { method: 'POST', headers: { 'content-type': contentType }, body, maxBytes: 1 << 20 })).body;
}

interface Terminal {
  readonly name: 'A' | 'B';
  readonly identity: TerminalIdentity;
  readonly journal: Journal;
  readonly kernel: PaymentKernel;
  readonly sync: () => Promise<SyncReport>;
}

/** The story; returns the JSON document. Throws only on an unexpected error. */
async function story(args: Args, out: Output, res: Resources): Promise<Record<string, unknown>> {
  const doc: Record<string, unknown> = {};
  const dir = mkdtempSync(join(tmpdir(), 'dt-story-'));
  res.add('temp dir', () => rmSync(dir, { recursive: true, force: true }));

  // ---------------------------------------------------------------- 1
  out.step(1, 'Issuer, bank, ledger and acquirer come up; terminals A and B are provisioned');
  const t0 = nowSec();
  const pki = createPki({ now: t0 });
  const storage: LedgerStorage = openSqliteStorage(join(dir, 'ledger.db'));
  res.add('ledger storage', () => storage.close());
  const ledger = await Ledger.open({
    storage,
    signer: nativeSigner(pki.ledger.keys),
    rootCert: pki.issuer.cert,
    ledgerCert: pki.ledger.cert,
    now: nowSec,
  });
  await ledger.registerBank(pki.bank.cert);
  await ledger.allocate(pki.bank.kid, STORY.allocation, rnd16());
  const ledgerServer: LedgerServer = await startLedgerServer({ ledger, port: 0, host: '127.0.0.1' });
  res.add('ledger server', () => ledgerServer.close());
  // The acquirer's own key, certified by the bank (role ACQUIRER): the ledger settles only what it signs (SPEC §7.7.2).
  const acquirerId = pki.issueAcquirer({ name: 'story acquirer' });
  const acquirer: RunningAcquirer = await startAcquirer({
    ledgerUrl: ledgerServer.url,
    root: pki.issuer.cert,
    bankCert: pki.bank.cert,
    ledgerCert: pki.ledger.cert,
    acquirerCert: acquirerId.cert,
    acquirerSigner: acquirerId.signer,
    dbFile: join(dir, 'acquirer.db'),
    port: 0,
    host: '127.0.0.1',
    // The story drives forwarding and list refreshes itself, so that each step shows its own effect.
    autoForward: false,
    crlRefreshMs: 3_600_000,
  });
  res.add('acquirer', () => acquirer.close());
  await acquirer.refreshCrl();
  out.line(`issuer ${toHex(pki.issuer.kid)}, bank ${toHex(pki.bank.kid)} (allocated ${tenge(STORY.allocation)})`);
  out.line(`ledger   ${ledgerServer.url} (SQLite ${join(dir, 'ledger.db')})`);
  out.line(`acquirer ${acquirer.url}`);

  const terminal = async (name: 'A' | 'B'): Promise<Terminal> => {
    const merchant = `KZ-SHOP-${name}`;
    const cert = pki.issueTerminal({ merchant: { id: merchant, mcc: 5411, name: `Shop ${name}` } });
    const identity = buildIdentity(
      { keyPair: cert.keys, chain: [...cert.chain], root: pki.issuer.cert, ledgerCert: pki.ledger.cert },
      nowSec(),
    );
    const journal = Journal.open(join(dir, `terminal-${name}.sqlite`));
    res.add(`journal ${name}`, () => journal.close());
    const client = new SyncClient({
      identity,
      journal,
      acquirerUrl: acquirer.url,
      retry: { attempts: 3, baseMs: 50, maxMs: 500, timeoutMs: 10_000 },
    });
    // The signature verifier dt-pos uses by default (native: node:crypto), so the taps show what a terminal does.
    const kernel = new PaymentKernel({
      identity,
      journal,
      policy: DEFAULT_POLICY,
      timeouts: { cardMs: 10_000, tapMs: 15_000 },
      verifier: verifierByName(DEFAULT_CONFIG.verifier),
    });
    return { name, identity, journal, kernel, sync: () => client.sync() };
  };
  const A = await terminal('A');
  const B = await terminal('B');
  // First contact: each terminal fetches the revocation list (offline acceptance needs one).
  const firstA = await A.sync();
  const firstB = await B.sync();
  out.expect('terminal A online at first contact', firstA.online, true);
  out.expect('terminal B online at first contact', firstB.online, true);
  const crl0 = A.journal.crl()?.version;
  for (const t of [A, B])
    out.line(`terminal ${t.name} ${toHex(t.identity.kid)} certified by the bank; revocation list v${t.journal.crl()?.version}`);
  doc.setup = {
    ledgerUrl: ledgerServer.url,
    acquirerUrl: acquirer.url,
    issuer: toHex(pki.issuer.kid),
    bank: toHex(pki.bank.kid),
    allocation: STORY.allocation,
    terminals: { A: toHex(A.identity.kid), B: toHex(B.identity.kid) },
    crlVersion: crl0,
  };

  // ---------------------------------------------------------------- 2
  out.step(2, 'A card is personalized, loaded online, and cloned (the attack)');
  const genuineStorage = new MemoryStorage();
  const genuine = new SimulatedCard({ storage: genuineStorage });
  const counter = new InProcessTransport(genuine); // the bank's personalization station and the owner's app
  const bank = { signer: pki.bank.signer, cert: pki.bank.cert, root: pki.issuer.cert, ledgerCert: pki.ledger.cert };
  const p = await personalizeCard(counter, bank, { pin: '1234', puk: '12345678', limits: STORY.limits });
  const cardKid = toHex(p.cardKid);
  // The card-sync client of the terminal package: what the bank's counter and the owner's app use.
  const ledgerApi = new CardSyncClient({ ledgerUrl: ledgerServer.url });
  const registered = await ledgerApi.registerCard([p.certificate, pki.bank.cert]);
  if (!registered.ok) throw new Error(`card registration refused by the ledger: HTTP ${registered.status} ${registered.code}`);
  await selectApplet(counter);
  const load = await ledgerApi.load(
    counter,
    signLoadOrder({ card: p.cardKid, amount: STORY.load, id: rnd16(), time: nowSec() }, pki.bank.signer),
  );
  if (!load.ok) throw new Error(`LOAD refused by the ledger (${load.step}): ${load.code}`);
  const loaded = openSigned('SyncReceipt', load.receipt).message.loaded;
  const afterLoad = (await getStatus(counter)).balance;
  out.expect('loaded by the ledger', loaded, STORY.load);
  out.expect('card balance after the load', afterLoad, STORY.load);
  out.line(`card ${cardKid} personalized by the bank, registered, loaded ${tenge(loaded)}; balance ${tenge(afterLoad)}`);
  // The attack: the card's whole memory (keys, counter, coins) copied into a second card.
  const clone = new SimulatedCard({ storage: new MemoryStorage(genuineStorage.snapshot()) });
  out.line('ATTACK: the card memory is copied byte for byte into a second card (same keys, counter and coins)');
  doc.card = { kid: cardKid, loaded, balance: afterLoad, cloned: true };

  // ---------------------------------------------------------------- 3
  let readerA: CardReader;
  let readerB: CardReader;
  let genuineVpcd: VpcdClient | undefined;
  const why = args.inProcess ? '--in-process given' : pcscdUnavailableReason();
  const mode: 'pcscd' | 'in-process' = why === undefined ? 'pcscd' : 'in-process';
  let pcscd: PcscdHandle | undefined;
  if (mode === 'pcscd') {
    pcscd = await startPcscd();
    res.add('pcscd', () => pcscd!.stop());
    process.env.PCSCLITE_CSOCK_NAME = pcscd.socketPath;
    const pcsc = new PcscReaders();
    res.add('PC/SC context', () => pcsc.close());
    await pcsc.waitForReaders(15_000);
    genuineVpcd = new VpcdClient(genuine, { port: pcscd.vpcdPort, slot: 0 });
    const cloneVpcd = new VpcdClient(clone, { port: pcscd.vpcdPort, slot: 1 });
    res.add('vpcd genuine', () => genuineVpcd!.stop());
    res.add('vpcd clone', () => cloneVpcd.stop());
    genuineVpcd.start();
    cloneVpcd.start();
    readerA = pcsc.reader(pcscd.readers[0]);
    readerB = pcsc.reader(pcscd.readers[1]);
  } else {
    readerA = new TransportReader('A: in-process', new InProcessTransport(genuine), { apduTimeoutMs: 5000 });
    readerB = new TransportReader('B: in-process', new InProcessTransport(clone), { apduTimeoutMs: 5000 });
  }
  out.step(
    3,
    `Offline taps (${mode === 'pcscd' ? `through a private pcscd: terminal A on "${pcscd!.readers[0]}", B on "${pcscd!.readers[1]}"` : `in-process transport: ${why}`})`,
  );
  doc.mode = mode;
  if (why !== undefined) doc.modeReason = why;

  const tap = async (t: Terminal, reader: CardReader, who: TapReport['card'], amount: number): Promise<TapReport> => {
    const start = performance.now();
    // The tap is timed as the benchmark times it: from the card detected in the field to the
    // outcome (the last attempt's); the wait for the card to arrive is reported on its own.
    let detected = start;
    const onProgress = (state: string): void => {
      if (state === 'CARD_DETECTED') detected = performance.now();
    };
    let o = await t.kernel.charge(reader, amount, { onProgress });
    // A real reader may still be settling (card just inserted): the merchant asks for the card again.
    for (let i = 0; i < 20 && o.kind === 'PRESENT_CARD_AGAIN'; i++) {
      await new Promise((r) => setTimeout(r, 250));
      o = await t.kernel.charge(reader, amount, { onProgress });
    }
    const end = performance.now();
    const ms = Math.round(end - detected);
    const waitedMs = Math.round(detected - start);
    const r: TapReport = {
      terminal: t.name,
      card: who,
      amount,
      kind: o.kind,
      ms,
      waitedMs,
      ...(o.kind === 'APPROVED' ? { counter: o.payment.counter, transfer: toHex(o.payment.transferHash) } : {}),
      ...('reason' in o ? { reason: o.reason } : {}),
    };
    const waited = waitedMs >= 50 ? `; ${waitedMs} ms until the card was in the field` : '';
    out.line(
      `${who.padEnd(7)} card -> terminal ${t.name}: ${tenge(amount).padStart(14)}  ${r.kind}${r.reason ? ` (${r.reason})` : ''}${r.counter !== undefined ? `, counter ${r.counter}` : ''}  [${ms} ms tap${waited}]`,
    );
    return r;
  };
  const taps: TapReport[] = [];
  for (const amount of STORY.genuineTaps) taps.push(await tap(A, readerA, 'genuine', amount));
  taps.push(await tap(B, readerB, 'clone', STORY.cloneTap));
  for (const [i, r] of taps.entries()) out.expect(`tap ${i + 1} (${r.card} at ${r.terminal}) approved offline`, r.kind, 'APPROVED');
  out.expect("the clone reused the counter of the genuine card's first payment", taps[3]!.counter, taps[0]!.counter);
  doc.taps = taps;

  // ---------------------------------------------------------------- 4
  out.step(4, 'The terminals sync through the acquirer; the ledger settles and finds the double spend');
  const paidGenuine = STORY.genuineTaps.reduce((s, a) => s + a, 0);
  const sA = await A.sync();
  await acquirer.forwardNow();
  const sB = await B.sync();
  await acquirer.forwardNow();
  const batches = (r: SyncReport) =>
    r.batches.map((b) => `batch ${b.seq} (${b.count} payment${b.count === 1 ? '' : 's'}, ${tenge(b.total)})`).join(', ') || 'nothing';
  out.line(`A sent ${batches(sA)}; B sent ${batches(sB)}; the acquirer forwarded each to the ledger`);
  // The outcomes come back to the terminals at their next sync.
  await A.sync();
  await B.sync();
  const settledA = A.journal.totalsByState().settled;
  const dsB = B.journal.totalsByState().double_spent;
  const coveredB = B.journal.doubleSpent().covered;
  out.expect('A: every payment settled', settledA, { count: STORY.genuineTaps.length, amount: paidGenuine });
  out.expect("B: the clone's payment is a double spend", dsB, { count: 1, amount: STORY.cloneTap });
  out.expect('B: covered (it followed the rules with the list it had)', coveredB, { count: 1, amount: STORY.cloneTap });
  // The proof, as B's acquirer can get it: the ledger answers a replayed batch (in a settle
  // request the acquirer signs, SPEC §7.7.2) with the outcomes it stored (idempotent), signed
  // by its key. Verify the outcome against the ledger key and both proof transfers against
  // the card's certified key.
  const batchB = B.journal.getBatch(sB.batches[0]?.seq ?? 1);
  if (!batchB) throw new Error('terminal B has no batch 1');
  const replay = signSettleRequest(
    { chain: [...acquirerId.chain], time: nowSec(), nonce: rnd16(), batches: [batchB.bytes] },
    acquirerId.signer,
  );
  const verdicts = decodeDeterministic(
    await postOk(`${ledgerServer.url}/v1/settle`, replay, 'application/cose'),
    1 << 20,
  ) as Uint8Array[][];
  const outcome = verifySigned('Outcome', verdicts[0]![0]!, pki.ledger.keys.publicKey).message;
  const cardKey = subjectKey(openSigned('Certificate', p.certificate).message).publicKey;
  const proofTransfers = (outcome.proof ?? []).map((x) => ({
    hash: toHex(payloadHash(openSigned('Transfer', x).cose)),
    t: verifySigned('Transfer', x, cardKey).message,
  }));
  const counters = proofTransfers.map((x) => x.t.counter);
  const hashes = proofTransfers.map((x) => x.hash);
  const proof = {
    card: toHex(outcome.card),
    status: outcome.status,
    code: outcome.code,
    covered: outcome.covered,
    transfers: hashes,
    counters,
    cards: proofTransfers.map((x) => toHex(x.t.card)),
    amounts: proofTransfers.map((x) => x.t.amount),
  };
  const audit1 = await ledger.audit();
  const revokedAt = audit1.revocations.find((r) => r.card === cardKid);
  out.expect('the ledger-signed outcome for B is DOUBLE_SPEND', outcome.status, OutcomeStatus.DOUBLE_SPEND);
  out.expect('the outcome names the card', proof.card, cardKid);
  out.expect('proof: two transfers signed by the card', proof.cards, [cardKid, cardKid]);
  out.expect('proof: the same counter twice', counters, [taps[0]!.counter, taps[0]!.counter]);
  out.expect("proof: the genuine transfer and the clone's", [...hashes].sort(), [taps[0]!.transfer, taps[3]!.transfer].sort());
  out.expect(
    'the ledger keeps the proof',
    audit1.proofs.filter((x) => x.card === cardKid).map((x) => [x.first, x.second].sort()),
    [[...hashes].sort()],
  );
  out.expect('the card is revoked by the ledger', revokedAt !== undefined, true);
  out.line(
    `A: ${settledA.count} settled (${tenge(settledA.amount)}); B: ${dsB.count} DOUBLE_SPEND, covered ${tenge(coveredB.amount)} by the bank`,
  );
  out.line(
    `proof (ledger-signed outcome, ${proof.code}): card ${proof.card}, transfers ${hashes.map((h) => h.slice(0, 16)).join(' and ')} with counters ${counters.join(' and ')}`,
  );
  out.line(`card revoked in revocation list v${revokedAt?.version}`);
  doc.settlement = {
    batches: { A: sA.batches, B: sB.batches },
    A: { settled: settledA },
    B: { doubleSpent: dsB, covered: coveredB },
    proof,
    revoked: revokedAt !== undefined,
    crlVersion: revokedAt?.version,
  };

  // ---------------------------------------------------------------- 5
  out.step(5, 'The revocation list reaches the terminals; the clone is declined offline');
  await acquirer.refreshCrl();
  const cA = await A.sync();
  const cB = await B.sync();
  const crlA = A.journal.crl()?.version;
  const crlB = B.journal.crl()?.version;
  out.expect('terminal A holds the new list', crlA, revokedAt?.version);
  out.expect('terminal B holds the new list', crlB, revokedAt?.version);
  out.expect('both terminals list the card as revoked', [A.journal.isRevoked(p.cardKid), B.journal.isRevoked(p.cardKid)], [true, true]);
  out.line(`A: list v${crlA}${cA.crl ? ' installed' : ''}; B: list v${crlB}${cB.crl ? ' installed' : ''}`);
  const retry = await tap(B, readerB, 'clone', STORY.cloneRetry);
  out.expect('the clone is declined offline', [retry.kind, retry.reason], ['DECLINED', 'CARD_REVOKED']);
  doc.revocation = {
    crlVersion: { A: crlA, B: crlB },
    revokedAtTerminals: { A: A.journal.isRevoked(p.cardKid), B: B.journal.isRevoked(p.cardKid) },
    cloneTap: retry,
  };

  // ---------------------------------------------------------------- 6
  out.step(6, 'The owner syncs the genuine card; final balances and the supply invariant');
  // The owner takes the card out of the reader and syncs it from the app.
  if (genuineVpcd) await genuineVpcd.stop();
  await selectApplet(counter);
  const before = (await getStatus(counter)).balance;
  const sync = await ledgerApi.sync(counter);
  const cardBalance = (await getStatus(counter)).balance;
  // A revoked card still syncs, but its key gets no fresh tokens: the ledger moves its value
  // to the issuing bank, which pays the owner (SPEC §7.6); the receipt says how much.
  const redeemed = sync.ok ? (verifySigned('SyncReceipt', sync.receipt, pki.ledger.keys.publicKey).message.redeemed ?? 0) : 0;
  const syncResult = sync.ok ? { ok: true as const, redeemed } : { ok: false as const, status: sync.status, code: sync.code };
  out.line(
    sync.ok
      ? `the card is revoked: its ${tenge(redeemed)} go back to the issuing bank for the owner (card balance now ${tenge(cardBalance)})`
      : `the ledger refused the sync: HTTP ${sync.status} ${sync.code}`,
  );
  out.expect('the card held its balance before the sync', before, STORY.load - paidGenuine);
  out.expect('genuine card sync accepted, value redeemed to the bank', syncResult, { ok: true, redeemed: STORY.load - paidGenuine });
  const audit: AuditReport = await ledger.audit();
  const merchants = await ledger.merchantBalances();
  const balances = {
    card: cardBalance,
    merchantA: merchants[toHex(A.identity.kid)] ?? 0,
    merchantB: merchants[toHex(B.identity.kid)] ?? 0,
    bank: audit.bankBalances,
  };
  const expected = {
    card: 0,
    merchantA: paidGenuine,
    merchantB: STORY.cloneTap,
    // The bank bore the clone's payment and got the revoked card's value back for the owner.
    bank: STORY.allocation - STORY.load - STORY.cloneTap + (STORY.load - paidGenuine),
  };
  out.expect('final balances', balances, expected);
  out.expect('supply invariant (ledger audit)', { ok: audit.ok, difference: audit.difference }, { ok: true, difference: 0 });
  out.expect('covered by the bank', audit.covered, STORY.cloneTap);
  doc.final = { genuineSync: syncResult, balances, expected, audit };

  if (!out.json) {
    const rows: [string, string, string][] = [
      ['genuine card (on the card)', tenge(balances.card), tenge(expected.card)],
      ['redeemed to the bank (owner)', tenge(redeemed), tenge(STORY.load - paidGenuine)],
      ['merchant A (settled)', tenge(balances.merchantA), tenge(expected.merchantA)],
      ['merchant B (covered)', tenge(balances.merchantB), tenge(expected.merchantB)],
      ['bank', tenge(balances.bank), tenge(expected.bank)],
      ['issued', tenge(audit.issued), tenge(STORY.allocation)],
      ['supply difference', tenge(audit.difference), tenge(0)],
    ];
    process.stdout.write('\n   ' + 'account'.padEnd(28) + 'actual'.padStart(18) + 'expected'.padStart(18) + '\n');
    for (const [a, b, c] of rows)
      process.stdout.write('   ' + a.padEnd(28) + b.padStart(18) + c.padStart(18) + (b === c ? '' : '  !!') + '\n');
  }

  // ---------------------------------------------------------------- 7
  out.step(7, "The day's exceptions at terminal A: a void before sync and a partial refund after it");
  const sc = STORY.scene;
  const card2 = new SimulatedCard({ storage: new MemoryStorage() });
  const counter2 = new InProcessTransport(card2);
  const p2 = await personalizeCard(counter2, bank, { pin: '1234', puk: '12345678', limits: STORY.limits });
  const reg2 = await ledgerApi.registerCard([p2.certificate, pki.bank.cert]);
  if (!reg2.ok) throw new Error(`second card registration refused by the ledger: HTTP ${reg2.status} ${reg2.code}`);
  await selectApplet(counter2);
  const load2 = await ledgerApi.load(
    counter2,
    signLoadOrder({ card: p2.cardKid, amount: sc.load, id: rnd16(), time: nowSec() }, pki.bank.signer),
  );
  if (!load2.ok) throw new Error(`LOAD of the second card refused by the ledger (${load2.step}): ${load2.code}`);
  out.line(`a second card ${toHex(p2.cardKid)} is loaded ${tenge(sc.load)}`);
  let reader2: CardReader;
  let vpcd2: VpcdClient | undefined;
  if (pcscd && genuineVpcd) {
    // The genuine card left reader A in step 6; the second card goes on it.
    vpcd2 = new VpcdClient(card2, { port: pcscd.vpcdPort, slot: 0 });
    res.add('vpcd second card', () => vpcd2!.stop());
    vpcd2.start();
    reader2 = readerA;
  } else {
    reader2 = new TransportReader('A: in-process', new InProcessTransport(card2), { apduTimeoutMs: 5000 });
  }
  const t1 = await tap(A, reader2, 'second', sc.voided);
  const paid1 = A.journal.listPayments().at(-1)!;
  // Durable before shown: signed by terminal A and committed to its journal, then printed.
  const v = adjustPayment(A.journal, A.identity, { kind: 'void', paymentId: paid1.id, reference: 'story-void-1' });
  out.line(`terminal A voids receipt #${paid1.id} (${tenge(v.adjustment.amount)}) before any sync: VOIDED, pending ledger confirmation`);
  const t2 = await tap(A, reader2, 'second', sc.paid);
  const paid2 = A.journal.listPayments().at(-1)!;
  out.expect('both payments of the second card approved offline', [t1.kind, t2.kind], ['APPROVED', 'APPROVED']);
  const s7a = await A.sync();
  await acquirer.forwardNow();
  await A.sync();
  out.line(`A sent ${batches(s7a)} with ${s7a.batches.reduce((n, b) => n + b.adjustments, 0)} void; the ledger answered`);
  const voidState = A.journal.getAdjustment(v.adjustment.id);
  out.expect('the void confirmed by the ledger (MERCHANT_VOID)', [voidState?.state, voidState?.code], ['accepted', 'MERCHANT_VOID']);
  out.expect(
    'the voided payment is voided, the other settled',
    [A.journal.getPayment(paid1.id)?.outcomeCode, A.journal.getPayment(paid2.id)?.state],
    ['MERCHANT_VOID', 'settled'],
  );
  const r = adjustPayment(A.journal, A.identity, { kind: 'refund', paymentId: paid2.id, amount: sc.refund, reference: 'story-refund-1' });
  // The register retries the same refund: the journal answers with the one recorded, never a second.
  const again = adjustPayment(A.journal, A.identity, {
    kind: 'refund',
    paymentId: paid2.id,
    amount: sc.refund,
    reference: 'story-refund-1',
  });
  out.line(
    `terminal A refunds ${tenge(r.adjustment.amount)} of receipt #${paid2.id} (${tenge(paid2.amount)}): credited at the card's next sync`,
  );
  out.expect('a retried refund is the same refund', again.existing && toHex(again.adjustment.id) === toHex(r.adjustment.id), true);
  await A.sync();
  await acquirer.forwardNow();
  await A.sync();
  out.expect('the refund confirmed by the ledger', A.journal.getAdjustment(r.adjustment.id)?.state, 'accepted');
  if (vpcd2) await vpcd2.stop();
  await selectApplet(counter2);
  const beforeSync2 = (await getStatus(counter2)).balance;
  const sync2 = await ledgerApi.sync(counter2);
  if (!sync2.ok) throw new Error(`the second card's sync was refused: HTTP ${sync2.status} ${sync2.code}`);
  const receipt2 = verifySigned('SyncReceipt', sync2.receipt, pki.ledger.keys.publicKey).message;
  const after2 = (await getStatus(counter2)).balance;
  const audit7 = await ledger.audit();
  const merchants7 = await ledger.merchantBalances();
  const scene = {
    cardBeforeSync: beforeSync2,
    refunded: receipt2.refunded ?? 0,
    card: after2,
    merchantA: merchants7[toHex(A.identity.kid)] ?? 0,
    bank: audit7.bankBalances,
  };
  const sceneExpected = {
    cardBeforeSync: sc.load - sc.voided - sc.paid,
    refunded: sc.refund,
    card: sc.load - sc.paid + sc.refund,
    merchantA: paidGenuine + sc.paid - sc.refund,
    bank: expected.bank - sc.load,
  };
  out.expect('balances after the void, the refund and the card sync', scene, sceneExpected);
  out.expect(
    'supply invariant after the void and the refund',
    { ok: audit7.ok, difference: audit7.difference },
    { ok: true, difference: 0 },
  );
  out.line(
    `card: ${tenge(beforeSync2)} before its sync, ${tenge(after2)} after (the voided ${tenge(sc.voided)} and the refunded ${tenge(scene.refunded)} back); merchant A ${tenge(scene.merchantA)} (never credited the void, net of the refund); supply difference ${tenge(audit7.difference)}`,
  );
  doc.scene = {
    card: toHex(p2.cardKid),
    taps: [t1, t2],
    void: adjustmentJson(voidState ?? v.adjustment),
    refund: adjustmentJson(A.journal.getAdjustment(r.adjustment.id) ?? r.adjustment),
    balances: scene,
    expected: sceneExpected,
    audit: audit7,
  };
  return doc;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const out = new Output(args.json);
  const res = new Resources();
  const onSignal = (sig: NodeJS.Signals) => {
    // A second Ctrl-C while stopping: the user insists, leave now.
    if (out.interrupted) process.exit(130);
    out.interrupted = true;
    process.stderr.write(`\nstory: ${sig}, stopping everything\n`);
    void res
      .closeAll()
      .then((problems) => {
        for (const p of problems) process.stderr.write(`cleanup: ${p}\n`);
      })
      .finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let doc: Record<string, unknown> = {};
  let error: string | undefined;
  try {
    doc = await story(args, out, res);
  } catch (e) {
    error = (e as Error).stack ?? String(e);
  }
  const cleanup = await res.closeAll();
  const failed = out.checks.filter((c) => !c.ok);
  // Something left running is a failure too: the story promises to stop everything it started.
  const ok = error === undefined && failed.length === 0 && out.checks.length > 0 && cleanup.length === 0;
  if (args.json) {
    process.stdout.write(
      JSON.stringify(
        { ok, ...doc, checks: out.checks, ...(error ? { error } : {}), ...(cleanup.length ? { cleanupProblems: cleanup } : {}) },
        null,
        2,
      ) + '\n',
    );
  } else {
    if (error) process.stderr.write(`\nstory failed: ${error}\n`);
    for (const c of cleanup) process.stderr.write(`cleanup: ${c}\n`);
    process.stdout.write(`\n${ok ? 'STORY OK' : 'STORY FAILED'}: ${out.checks.length - failed.length}/${out.checks.length} checks hold\n`);
  }
  // A failed check is the story's verdict (1); an error, no checks at all, or something left running is not (6).
  process.exitCode = ok ? 0 : error !== undefined || cleanup.length > 0 || out.checks.length === 0 ? 6 : 1;
}

await main();
