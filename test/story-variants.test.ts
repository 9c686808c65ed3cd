/**
 * Story variants (issue 6), end to end with the real packages: ledger and
 * acquirer on loopback, terminals with SQLite journals, firmware cards served
 * through a private pcscd (card-applet-sim's startPcscd + VpcdClient, the
 * terminal's PcscReaders) when running as root with pcscd installed (CI runs
 * as root with CI=true: there the pcscd path must run), else in-process
 * (a, b) or over a socat serial pty (c). Every outcome and balance is asserted:
 *
 * (a) the card is pulled mid-tap: it loses power right after processing PAY
 *     (signed and committed, no answer) -> PRESENT_CARD_AGAIN; presented
 *     again -> APPROVED with the same transfer (retryOf names the torn
 *     attempt); the journal holds one payment; the ledger settles it once.
 * (b) the acquirer is down during sync: the pending amount is reported and
 *     nothing is lost; the acquirer restarted on the same database forwards
 *     what it had stored and what the terminal sends now; all settled once.
 * (c) a terminal process is SIGKILLed right after it showed APPROVED: the
 *     reopened journal holds the payment exactly once; sync settles it.
 *
 * After each: the ledger's audit (supply invariant) holds with the exact
 * bank, merchant and card balances.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { INS, toHex, getStatus, selectApplet } from '@dt/protocol';
import {
  InProcessTransport,
  SerialCardEndpoint,
  VpcdClient,
  openTty,
  pcscdUnavailableReason,
  startPcscd,
  type PcscdHandle,
  type SimulatedCard,
} from '@dt/card-applet-sim';
import { Journal, PcscReaders, TransportReader, saveIdentity, saveTerminalKey, type CardReader, type TapOutcome } from '@dt/terminal';
import {
  VARIANT,
  certifyTerminal,
  loadedCard,
  openTerminal,
  startBackOffice,
  type BackOffice,
  type Terminal,
} from './helpers/variant-world.ts';

const CHILD = fileURLToPath(new URL('./helpers/variant-terminal-child.ts', import.meta.url));
const why = pcscdUnavailableReason();
const usePcscd = why === undefined;

// One pcscd for the file (its socket is process-wide through PCSCLITE_CSOCK_NAME); the tests run serially.
let pcscd: PcscdHandle | undefined;
let pcsc: PcscReaders | undefined;
test.serial.before(async (t) => {
  if (process.env.CI === 'true') t.is(why, undefined, `CI must run the variants through pcscd: ${why}`);
  if (!usePcscd) return;
  pcscd = await startPcscd();
  process.env.PCSCLITE_CSOCK_NAME = pcscd.socketPath;
  pcsc = new PcscReaders();
  await pcsc.waitForReaders(15_000);
});
test.serial.after.always(async () => {
  await pcsc?.close();
  await pcscd?.stop();
});

/** A temp dir and a back office in it, both gone at teardown. */
async function setup(t: ExecutionContext): Promise<{ dir: string; bo: BackOffice }> {
  const dir = mkdtempSync(join(tmpdir(), 'dt-variant-'));
  const bo = await startBackOffice(dir);
  t.teardown(async () => {
    await bo.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { dir, bo };
}

/** The card in a reader: through pcscd on `slot` when available, else in-process. */
function insert(t: ExecutionContext, card: SimulatedCard, slot: number): CardReader {
  if (pcscd && pcsc) {
    const vpcd = new VpcdClient(card, { port: pcscd.vpcdPort, slot, reinsertDelayMs: 1000 });
    vpcd.start();
    t.teardown(() => vpcd.stop());
    return pcsc.reader(pcscd.readers[slot]);
  }
  return new TransportReader(`in-process ${slot}`, new InProcessTransport(card), { apduTimeoutMs: 5000 });
}

/** What a merchant does on PRESENT_CARD_AGAIN without a torn attempt (reader still settling): ask again. */
async function tap(term: Terminal, reader: CardReader, amount: number): Promise<TapOutcome> {
  let o = await term.kernel.charge(reader, amount);
  for (let i = 0; i < 20 && o.kind === 'PRESENT_CARD_AGAIN'; i++) {
    await new Promise((r) => setTimeout(r, 250));
    o = await term.kernel.charge(reader, amount);
  }
  return o;
}

/** The card's balance as its owner's app reads it (the card taken out of the reader). */
async function cardBalance(card: SimulatedCard): Promise<{ balance: number; offlineValue: number }> {
  const tr = new InProcessTransport(card);
  await selectApplet(tr);
  const st = await getStatus(tr);
  return { balance: st.balance, offlineValue: st.offlineValue };
}

/**
 * Arms a power cut right after the card has run PAY: the request is sent
 * chained (it carries the terminal's certificate chain), and the applet runs
 * the command at its last block (CLA without the chaining bit 0x10); its size
 * depends on the request, so the cut is armed when that block arrives.
 */
function cutAfterLastPayBlock(card: SimulatedCard): void {
  const transmit = card.transmit.bind(card);
  let armed = false;
  card.transmit = (apdu, options) => {
    if (!armed && apdu[1] === INS.PAY && (apdu[0]! & 0x10) === 0) {
      armed = true;
      // Counting restarts at this APDU: index 1 is the block that runs PAY.
      card.faults.arm({ cutAfterApdu: { index: 1 } });
    }
    return transmit(apdu, options);
  };
}

/** Ledger books after settlement of `paid` from one card loaded with the story's load. */
async function assertBooks(t: ExecutionContext, bo: BackOffice, terminalKid: Uint8Array, paid: number): Promise<void> {
  const audit = await bo.ledger.audit();
  const merchants = await bo.ledger.merchantBalances();
  t.true(audit.ok, JSON.stringify(audit));
  t.is(audit.difference, 0);
  t.is(audit.issued, VARIANT.allocation);
  t.is(audit.redeemed, paid, 'each payment settled (redeemed) exactly once');
  t.is(audit.covered, 0);
  t.is(audit.pendingPayee, 0);
  t.is(audit.pendingLoads, 0);
  t.is(audit.unspentChange, VARIANT.load - paid);
  t.is(audit.bankBalances, VARIANT.allocation - VARIANT.load);
  t.is(merchants[toHex(terminalKid)] ?? 0, paid);
  t.deepEqual(audit.proofs, []);
  t.deepEqual(audit.revocations, []);
}

test.serial(
  '(a) card pulled mid-tap right after PAY: PRESENT_CARD_AGAIN, then APPROVED with the same transfer (retryOf); one payment, settled once',
  async (t) => {
    const { dir, bo } = await setup(t);
    const { identity } = certifyTerminal(bo, 'KZ-SHOP-A');
    const A = openTerminal(bo, identity, join(dir, 'terminal-A.sqlite'));
    t.teardown(() => A.journal.close());
    t.true((await A.sync()).online, 'first contact: revocation list installed');
    const c = await loadedCard(bo);
    const reader = insert(t, c.card, 0);
    const amount = 450_000;

    // The card signs and commits the transfer, then loses power before its answer leaves.
    cutAfterLastPayBlock(c.card);
    let o1 = await A.kernel.charge(reader, amount);
    // A PRESENT_CARD_AGAIN before PAY reached the card (reader settling) carries no torn attempt.
    for (let i = 0; i < 20 && o1.kind === 'PRESENT_CARD_AGAIN' && o1.tornAttempt === undefined; i++) {
      await new Promise((r) => setTimeout(r, 250));
      o1 = await A.kernel.charge(reader, amount);
    }
    t.is(o1.kind, 'PRESENT_CARD_AGAIN');
    t.deepEqual(
      c.card.faults.events.map((e) => e.kind),
      ['cut-after-apdu'],
      'the cut hit after PAY',
    );
    t.regex(c.card.faults.events[0]!.where, /INS 30/);
    const torn = o1.kind === 'PRESENT_CARD_AGAIN' ? o1.tornAttempt : undefined;
    t.regex(torn ?? '', /^[0-9a-f]+$/);
    t.is(A.journal.tornAttempts().length, 1);
    t.is(A.journal.listPayments().length, 0, 'nothing approved yet');
    // The card did pay: its offline value already holds the amount.
    t.is((await cardBalance(c.card)).offlineValue, amount);

    // The customer presents the card again (back in the field after the reinsert delay).
    const o2 = await tap(A, reader, amount);
    t.is(o2.kind, 'APPROVED');
    if (o2.kind !== 'APPROVED') return;
    t.true(o2.recovered, 'the card returned the handover of the torn attempt');
    t.is(toHex(o2.payment.nonce), String(torn), 'the payment answers the interrupted request (retryOf)');
    t.is(o2.payment.amount, amount);
    t.is(o2.payment.counter, 2, 'LOAD used counter 1; one transfer signed');
    t.is(A.journal.tornAttempts().length, 0);
    t.is(A.journal.listPayments().length, 1);
    t.is(A.journal.pendingSummary().amount, amount);
    const card = await cardBalance(c.card);
    t.deepEqual(card, { balance: VARIANT.load - amount, offlineValue: amount }, 'the card paid once');

    const s1 = await A.sync();
    t.deepEqual(s1.problems, []);
    t.deepEqual(
      s1.batches.map((b) => [b.seq, b.count, b.total]),
      [[1, 1, amount]],
    );
    await bo.acquirer.forwardNow();
    const s2 = await A.sync();
    t.is(s2.outcomes.applied, 1);
    t.deepEqual(A.journal.totalsByState().settled, { count: 1, amount });
    await assertBooks(t, bo, identity.kid, amount);
  },
);

test.serial(
  '(b) acquirer down during sync: pending reported, nothing lost; restarted on the same database it settles everything once',
  async (t) => {
    const { dir, bo } = await setup(t);
    const { identity } = certifyTerminal(bo, 'KZ-SHOP-B');
    const B = openTerminal(bo, identity, join(dir, 'terminal-B.sqlite'));
    t.teardown(() => B.journal.close());
    t.true((await B.sync()).online);
    const c = await loadedCard(bo);
    const reader = insert(t, c.card, 0);
    const [first, second, third] = [120_000, 80_000, 30_000] as const;

    // One payment reaches the acquirer (stored in its database, not yet forwarded).
    t.is((await tap(B, reader, first)).kind, 'APPROVED');
    const s1 = await B.sync();
    t.deepEqual(s1.problems, []);
    t.deepEqual(
      s1.batches.map((b) => [b.seq, b.count, b.total]),
      [[1, 1, first]],
    );

    // The acquirer goes down; the terminal keeps taking payments offline.
    const port = Number(new URL(bo.acquirer.url).port);
    await bo.acquirer.close();
    t.is((await tap(B, reader, second)).kind, 'APPROVED');
    const down = await B.sync(`http://127.0.0.1:${port}`);
    t.false(down.online);
    t.true(
      down.problems.some((p) => p.code === 'NETWORK'),
      JSON.stringify(down.problems),
    );
    // Pending is the value not yet verified by the ledger: handed over to the acquirer or not.
    t.is(down.pending.count, 2);
    t.is(down.pending.amount, first + second);
    t.true(typeof down.pending.since === 'number');
    t.is((await tap(B, reader, third)).kind, 'APPROVED');
    t.is(B.journal.listPayments().length, 3, 'nothing lost');
    t.deepEqual(B.journal.totalsByState().submitted, { count: 1, amount: first });
    t.deepEqual(B.journal.totalsByState().pending, { count: 2, amount: second + third });
    t.is((await bo.ledger.merchantBalances())[toHex(identity.kid)] ?? 0, 0, 'the ledger has seen nothing yet');

    // Back up on the same database and port.
    await bo.startAcquirer(port);
    const up = await B.sync();
    t.true(up.online);
    t.deepEqual(up.problems, []);
    t.is(
      up.batches.reduce((s, b) => s + b.total, 0),
      second + third,
    );
    await bo.acquirer.forwardNow();
    const s3 = await B.sync();
    t.deepEqual(s3.problems, []);
    t.is(s3.outcomes.applied, 3, 'the batch stored before the outage was forwarded too');
    const total = first + second + third;
    t.deepEqual(B.journal.totalsByState().settled, { count: 3, amount: total });
    t.is(B.journal.pendingSummary().amount, 0);
    t.deepEqual(await cardBalance(c.card), { balance: VARIANT.load - total, offlineValue: total });
    await assertBooks(t, bo, identity.kid, total);
  },
);

test.serial(
  '(c) terminal process SIGKILLed right after APPROVED: the reopened journal holds the payment exactly once; sync settles it',
  async (t) => {
    const { dir, bo } = await setup(t);
    const { cert, identity } = certifyTerminal(bo, 'KZ-SHOP-C');
    // The terminal's data dir as `dt-pos init` leaves it.
    const dataDir = join(dir, 'pos');
    mkdirSync(dataDir);
    saveTerminalKey(dataDir, cert.keys);
    saveIdentity(dataDir, { chain: [...cert.chain], root: bo.pki.issuer.cert, ledgerCert: bo.pki.ledger.cert });
    const journalFile = join(dataDir, 'journal.sqlite');
    {
      const first = openTerminal(bo, identity, journalFile);
      t.true((await first.sync()).online, 'first contact: revocation list installed');
      first.journal.close();
    }
    const c = await loadedCard(bo);
    const procs: ChildProcess[] = [];
    t.teardown(() => {
      for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    });
    let spec: string;
    if (pcscd) {
      const vpcd = new VpcdClient(c.card, { port: pcscd.vpcdPort, slot: 1 });
      vpcd.start();
      t.teardown(() => vpcd.stop());
      spec = `pcsc:${pcscd.readers[1]}`;
    } else {
      // Without pcscd: the card on a serial pty pair (socat), as the crash test does.
      const a = join(dir, 'card-tty');
      const b = join(dir, 'pos-tty');
      procs.push(spawn('socat', [`pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: 'ignore' }));
      for (let i = 0; i < 100 && !(existsSync(a) && existsSync(b)); i++) await new Promise((r) => setTimeout(r, 50));
      const link = openTty(a);
      const ep = new SerialCardEndpoint(c.card, link);
      t.teardown(() => {
        ep.stop();
        link.close();
      });
      spec = `serial:${b}`;
    }
    const amount = 80_000;

    const child = spawn(process.execPath, ['--conditions=dt-source', '--import', 'tsx', CHILD, dataDir, spec, String(amount)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    procs.push(child);
    let stdout = '';
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const line = await new Promise<string>((resolve) => {
      child.stdout!.on('data', (d: Buffer) => {
        stdout += d.toString();
        const nl = stdout.indexOf('\n');
        if (nl >= 0) {
          // The outcome is on the merchant's screen: kill the terminal now.
          child.kill('SIGKILL');
          resolve(stdout.slice(0, nl));
        }
      });
      void exited.then(() => resolve(stdout));
    });
    await exited;
    const m = /^APPROVED ([0-9a-f]{64}) (\d+)$/.exec(line);
    t.truthy(m, `child said: ${line}\n${stderr.slice(-2000)}`);
    t.is(child.signalCode, 'SIGKILL', 'the terminal was killed, it did not exit on its own');
    if (!m) return;
    t.is(Number(m[2]), amount);

    // The terminal restarts on the same journal.
    const J = openTerminal(bo, identity, journalFile);
    t.teardown(() => J.journal.close());
    const payments = J.journal.listPayments();
    t.deepEqual(
      payments.map((p) => [toHex(p.transferHash), p.amount, p.counter]),
      [[m[1], amount, 2]],
      'exactly once',
    );
    t.deepEqual(J.journal.tornAttempts(), []);
    t.deepEqual(await cardBalance(c.card), { balance: VARIANT.load - amount, offlineValue: amount });
    // Reopening again changes nothing (the commit was durable before APPROVED was shown).
    const again = Journal.open(journalFile);
    t.is(again.listPayments().length, 1);
    again.close();

    const s1 = await J.sync();
    t.deepEqual(s1.problems, []);
    t.deepEqual(
      s1.batches.map((b) => [b.seq, b.count, b.total]),
      [[1, 1, amount]],
    );
    await bo.acquirer.forwardNow();
    const s2 = await J.sync();
    t.is(s2.outcomes.applied, 1);
    t.deepEqual(J.journal.totalsByState().settled, { count: 1, amount });
    await assertBooks(t, bo, identity.kid, amount);
  },
);
