/**
 * The crash test. A terminal process (test/helpers/crash-child.ts) taps six
 * firmware cards over real socat pty pairs and syncs with the real acquirer
 * and ledger; the test SIGKILLs it at a random moment (fixed seed), starts a
 * new one on the same journal, and repeats. Afterwards:
 * - every payment any terminal process reported APPROVED is in the journal
 *   exactly once (lost = 0);
 * - no transfer, and no card counter, is in the journal twice (duplicated = 0);
 * - the journal's total equals what the cards paid (their offline value),
 *   once torn taps left by the kills are presented again;
 * - after a final sync the ledger settled every journalled payment once and
 *   its books balance.
 *
 * DT_CRASH_ITERATIONS (default 30) and DT_CRASH_SEED (default 20261123) tune it.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openTty, SerialCardEndpoint } from '@dt/card-applet-sim';
import { toHex, selectApplet, getStatus } from '@dt/protocol';
import { Journal, PaymentKernel, SyncClient, saveIdentity, saveTerminalKey, DEFAULT_POLICY, TransportReader } from '../src/index.ts';
import { tempDir, TEST_LIMITS, type TestCard } from './helpers/fixtures.ts';
import { startWorld, worldCard } from './helpers/world.ts';

const ITERATIONS = Number(process.env.DT_CRASH_ITERATIONS ?? 30);
const SEED = Number(process.env.DT_CRASH_SEED ?? 20261123);
const CHILD = fileURLToPath(new URL('./helpers/crash-child.ts', import.meta.url));

function mulberry(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function ptyPair(dir: string, name: string, procs: ChildProcess[]): Promise<[string, string]> {
  const a = join(dir, `${name}-card`);
  const b = join(dir, `${name}-pos`);
  procs.push(spawn('socat', [`pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: 'ignore' }));
  for (let i = 0; i < 100 && !(existsSync(a) && existsSync(b)); i++) await new Promise((r) => setTimeout(r, 50));
  if (!existsSync(a) || !existsSync(b)) throw new Error('socat did not create the pty pair');
  return [a, b];
}

test('crash test: SIGKILL the terminal at random points during taps and syncs; no approved payment lost or duplicated, sums match', async (t) => {
  const { dir, cleanup } = tempDir('dt-pos-crash-');
  const procs: ChildProcess[] = [];
  const world = await startWorld(dir);
  t.teardown(async () => {
    for (const p of procs) p.kill('SIGKILL');
    await world.close();
    cleanup();
  });
  // The terminal's identity on disk, as `dt-pos init` leaves it.
  const dataDir = join(dir, 'pos');
  mkdirSync(dataDir);
  const term = world.tl.pki.issueTerminal({ merchant: { id: 'crash-shop', mcc: 5411, name: 'Crash shop' } });
  saveTerminalKey(dataDir, term.keys);
  saveIdentity(dataDir, { chain: [...term.chain], root: world.tl.pki.issuer.cert, ledgerCert: world.tl.pki.ledger.cert });

  const limits = { ...TEST_LIMITS, perPayment: 10_000_000, offlineTotal: 1_000_000_000, offlineCount: 64, cvmLimit: 10_000_000 };
  const cards: TestCard[] = [];
  const ptys: string[] = [];
  for (let i = 0; i < 6; i++) {
    const c = await worldCard(world, 50_000_000, limits);
    cards.push(c);
    const [cardSide, posSide] = await ptyPair(dir, `c${i}`, procs);
    const link = openTty(cardSide);
    const ep = new SerialCardEndpoint(c.card, link);
    t.teardown(() => {
      ep.stop();
      link.close();
    });
    ptys.push(posSide);
  }
  const kids = cards.map((c) => toHex(c.kid));

  const rand = mulberry(SEED);
  const approved = new Map<string, number>();
  let lines = 0;
  let syncs = 0;
  for (let it = 0; it < ITERATIONS; it++) {
    const child = spawn(
      process.execPath,
      ['--conditions=dt-source', '--import', 'tsx', CHILD, dataDir, world.acquirer.url, String(SEED + it), kids.join(','), ptys.join(',')],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    procs.push(child);
    let buf = '';
    let ready!: () => void;
    const readyP = new Promise<void>((r) => (ready = r));
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines++;
        if (line === 'READY') ready();
        const m = /^APPROVED (\d+) ([0-9a-f]{64}) (\d+)$/.exec(line);
        if (m) approved.set(m[2]!, Number(m[3]));
        if (line.startsWith('SYNC')) syncs++;
      }
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    await Promise.race([readyP, exited]);
    if (child.exitCode !== null) t.fail(`terminal process exited early: ${stderr.slice(-2000)}`);
    // Kill at a random point of its work: anywhere from the first tap to several taps and syncs in.
    await new Promise((r) => setTimeout(r, Math.floor(rand() * 1800)));
    child.kill('SIGKILL');
    await exited;
  }

  // Present every card once more for a torn tap the last kill may have left (as the merchant would).
  const journal = Journal.open(join(dataDir, 'journal.sqlite'));
  t.teardown(() => journal.close());
  const { loadIdentity } = await import('../src/index.ts');
  const identity = loadIdentity(dataDir, Math.floor(Date.now() / 1000));
  const policy = { ...DEFAULT_POLICY, floorLimit: 10_000_000, cvmLimit: 10_000_000, pendingCap: 10_000_000_000 };
  const kernel = new PaymentKernel({ identity, journal, policy });
  let recovered = 0;
  for (let i = 0; i < cards.length; i++) {
    for (let k = 0; k < 3; k++) {
      const torn = journal.tornAttempts().filter((a) => a.card && toHex(a.card) === kids[i]);
      if (torn.length === 0) break;
      const o = await kernel.charge(new TransportReader(`card${i}`, cards[i]!.transport), torn[torn.length - 1]!.amount);
      if (o.kind === 'APPROVED' && o.recovered) recovered++;
    }
  }

  // ---- journal vs what the terminal processes said.
  const payments = journal.listPayments();
  const byHash = new Map<string, number>();
  const byCounter = new Set<string>();
  let duplicated = 0;
  for (const p of payments) {
    const h = toHex(p.transferHash);
    byHash.set(h, (byHash.get(h) ?? 0) + 1);
    const cc = `${toHex(p.card)}:${p.counter}`;
    if (byCounter.has(cc)) duplicated++;
    byCounter.add(cc);
  }
  for (const n of byHash.values()) if (n > 1) duplicated += n - 1;
  let lost = 0;
  for (const [h, amount] of approved) {
    const p = payments.find((x) => toHex(x.transferHash) === h);
    if (!p || p.amount !== amount) lost++;
  }

  // ---- journal vs what the cards paid (their offline value since their load).
  let cardsPaid = 0;
  for (const c of cards) {
    await selectApplet(c.transport);
    const st = await getStatus(c.transport);
    cardsPaid += st.offlineValue;
  }
  const journalTotal = payments.reduce((s, p) => s + p.amount, 0);

  // ---- a final clean sync: the ledger settles each journalled payment once.
  const client = new SyncClient({ identity, journal, acquirerUrl: world.acquirer.url, retry: { attempts: 3, baseMs: 20, maxMs: 100 } });
  await client.sync();
  await world.acquirer.forwardNow();
  const final = await client.sync();
  const settled = journal.totalsByState().settled;
  const audit = await world.tl.ledger.audit();

  const summary = {
    iterations: ITERATIONS,
    seed: SEED,
    approvedReported: approved.size,
    journalPayments: payments.length,
    recoveredAtEnd: recovered,
    syncsRun: syncs,
    outputLines: lines,
    cardsPaid,
    journalTotal,
    settled,
    lost,
    duplicated,
  };
  t.log(JSON.stringify(summary));
  console.log(
    `crash test: ${ITERATIONS} iterations (seed ${SEED}), ${approved.size} approvals reported, ${payments.length} in journal, lost=${lost} duplicated=${duplicated}, cards paid ${cardsPaid} = journal ${journalTotal}`,
  );
  t.true(ITERATIONS >= 1);
  t.true(approved.size > 0, 'some payments were approved');
  t.is(lost, 0);
  t.is(duplicated, 0);
  t.is(cardsPaid, journalTotal);
  t.deepEqual(final.problems, []);
  t.deepEqual(settled, { count: payments.length, amount: journalTotal });
  t.is(audit.difference, 0);
});
