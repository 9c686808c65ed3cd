/**
 * The end-to-end story (scripts/story.ts) run as a child process with
 * --json, in-process and through a private pcscd, asserting every outcome
 * and every balance with the story's amounts: load 50,000.00 KZT; the
 * genuine card pays terminal A 1,200 + 4,500 + 800 = 6,500.00 KZT (counters
 * 2, 3, 4: LOAD used counter 1); the clone pays terminal B 1,200.00 KZT with
 * counter 2 again; the ledger settles A, calls B's payment a DOUBLE_SPEND
 * with a proof naming the card and counter 2 twice, revokes the card in list
 * v1 and has the bank cover B; the clone is then declined offline
 * (CARD_REVOKED); the revoked genuine card still syncs: no fresh tokens, its
 * 43,500.00 KZT go back to the issuing bank for the owner (receipt
 * `redeemed`) and the card shows 0; bank 1,000,000 - 50,000 - 1,200 + 43,500
 * = 992,300.00 KZT; the supply invariant holds. Then (step 7) a second card
 * loaded 10,000.00 KZT pays A 1,500.00 KZT, voided before sync, and 3,000.00
 * KZT, settled, of which 1,000.00 KZT is refunded: after its sync the card
 * holds 8,000.00 KZT, merchant A 8,500.00 KZT, and the invariant still holds.
 *
 * The pcscd mode needs root, pcscd and vsmartcard-vpcd: in CI (CI=true) it
 * must run; elsewhere without them the story must say why and fall back to
 * the in-process transport, which is what the test then checks.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { pcscdUnavailableReason } from '@dt/card-applet-sim';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runStory(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=dt-source', '--import', 'tsx', join(root, 'scripts', 'story.ts'), ...args], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function assertStory(t: ExecutionContext, run: Run, mode: 'pcscd' | 'in-process'): void {
  t.is(run.code, 0, `story failed:\n${run.stdout}\n${run.stderr}`);
  const doc = JSON.parse(run.stdout) as any;
  t.true(doc.ok);
  t.is(doc.cleanupProblems, undefined);
  t.is(doc.mode, mode);
  t.true(doc.checks.length >= 20);
  t.deepEqual(
    doc.checks.filter((c: any) => !c.ok),
    [],
  );

  // Setup: the terminals start with the empty list v0.
  t.is(doc.setup.crlVersion, 0);
  t.regex(doc.setup.ledgerUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.regex(doc.setup.acquirerUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  const kid: string = doc.card.kid;
  t.regex(kid, /^[0-9a-f]{32}$/);
  t.is(doc.card.loaded, 5_000_000);
  t.is(doc.card.balance, 5_000_000);

  // Offline taps: three at A by the genuine card, one at B by the clone reusing counter 2.
  t.deepEqual(
    doc.taps.map((x: any) => [x.terminal, x.card, x.amount, x.kind, x.counter]),
    [
      ['A', 'genuine', 120_000, 'APPROVED', 2],
      ['A', 'genuine', 450_000, 'APPROVED', 3],
      ['A', 'genuine', 80_000, 'APPROVED', 4],
      ['B', 'clone', 120_000, 'APPROVED', 2],
    ],
  );
  t.not(doc.taps[0].transfer, doc.taps[3].transfer, 'two different transfers with one counter');
  for (const x of doc.taps) t.true(Number.isInteger(x.ms) && x.ms >= 0);
  // For the record only (no timed assertion): what each tap took, card detected to outcome.
  t.log(`taps: ${doc.taps.map((x: any) => `${x.ms} ms`).join(', ')} (card detected to outcome)`);

  // Settlement through the acquirer.
  const s = doc.settlement;
  t.deepEqual(
    s.batches.A.map((b: any) => [b.seq, b.count, b.total]),
    [[1, 3, 650_000]],
  );
  t.deepEqual(
    s.batches.B.map((b: any) => [b.seq, b.count, b.total]),
    [[1, 1, 120_000]],
  );
  t.deepEqual(s.A.settled, { count: 3, amount: 650_000 });
  t.deepEqual(s.B.doubleSpent, { count: 1, amount: 120_000 });
  t.deepEqual(s.B.covered, { count: 1, amount: 120_000 });
  t.is(s.proof.card, kid);
  t.is(s.proof.status, 3); // OutcomeStatus.DOUBLE_SPEND
  t.is(s.proof.code, 'COUNTER_REUSED');
  t.true(s.proof.covered);
  t.deepEqual(s.proof.cards, [kid, kid]);
  t.deepEqual(s.proof.counters, [2, 2]);
  t.deepEqual(s.proof.amounts, [120_000, 120_000]);
  t.deepEqual([...s.proof.transfers].sort(), [doc.taps[0].transfer, doc.taps[3].transfer].sort());
  t.true(s.revoked);
  t.is(s.crlVersion, 1);

  // The list reaches both terminals; the clone is declined offline.
  t.deepEqual(doc.revocation.crlVersion, { A: 1, B: 1 });
  t.deepEqual(doc.revocation.revokedAtTerminals, { A: true, B: true });
  t.like(doc.revocation.cloneTap, { terminal: 'B', card: 'clone', amount: 30_000, kind: 'DECLINED', reason: 'CARD_REVOKED' });

  // Final: the revoked card's sync moves its value to the bank for the owner; balances and supply.
  const f = doc.final;
  t.deepEqual(f.genuineSync, { ok: true, redeemed: 4_350_000 });
  t.deepEqual(f.balances, { card: 0, merchantA: 650_000, merchantB: 120_000, bank: 99_230_000 });
  t.true(f.audit.ok);
  t.is(f.audit.difference, 0);
  t.is(f.audit.issued, 100_000_000);
  t.is(f.audit.redeemed, 770_000);
  t.is(f.audit.covered, 120_000);
  t.is(f.audit.unspentChange, 0);
  t.is(f.audit.unspentTokens, 0);
  t.is(f.audit.pendingPayee, 0);
  t.is(f.audit.pendingLoads, 0);
  t.deepEqual(
    f.audit.proofs.map((p: any) => p.card),
    [kid],
  );
  t.deepEqual(
    f.audit.revocations.map((r: any) => [r.card, r.version]),
    [[kid, 1]],
  );

  // Step 7: a second card; 1,500.00 KZT voided before sync, 3,000.00 KZT settled and 1,000.00 KZT of it refunded.
  const sc = doc.scene;
  t.deepEqual(
    sc.taps.map((x: any) => [x.terminal, x.card, x.amount, x.kind]),
    [
      ['A', 'second', 150_000, 'APPROVED'],
      ['A', 'second', 300_000, 'APPROVED'],
    ],
  );
  t.like(sc.void, { kind: 'void', amount: 150_000, state: 'accepted', code: 'MERCHANT_VOID' });
  t.like(sc.refund, { kind: 'refund', amount: 100_000, state: 'accepted', reference: 'story-refund-1' });
  // The card: 10,000 - 1,500 - 3,000 before its sync; 10,000 - 3,000 + 1,000 after. Merchant A: 6,500 + 3,000 - 1,000.
  t.deepEqual(sc.balances, { cardBeforeSync: 550_000, refunded: 100_000, card: 800_000, merchantA: 850_000, bank: 98_230_000 });
  t.deepEqual(sc.balances, sc.expected);
  t.true(sc.audit.ok);
  t.is(sc.audit.difference, 0);
  t.is(sc.audit.pendingRefunds, 0);
}

test('the story in-process: clone caught, card revoked, merchant covered, books balanced', async (t) => {
  const run = await runStory(['--json', '--in-process']);
  assertStory(t, run, 'in-process');
  t.is(JSON.parse(run.stdout).modeReason, '--in-process given');
});

test('the story through a private pcscd and the terminal PC/SC adapter (root; required in CI)', async (t) => {
  const why = pcscdUnavailableReason();
  if (process.env.CI === 'true') t.is(why, undefined, `CI must run the pcscd story: ${why}`);
  const run = await runStory(['--json']);
  if (why === undefined) {
    assertStory(t, run, 'pcscd');
  } else {
    // Without root/pcscd the story says why and falls back to the in-process transport.
    assertStory(t, run, 'in-process');
    t.is(JSON.parse(run.stdout).modeReason, why);
  }
});

test('the human output: seven numbered steps, the summary table and STORY OK', async (t) => {
  const run = await runStory(['--in-process']);
  t.is(run.code, 0, run.stderr);
  for (const n of [1, 2, 3, 4, 5, 6, 7]) t.regex(run.stdout, new RegExp(`^${n}\\. `, 'm'));
  t.regex(run.stdout, /clone\s+card -> terminal B:\s+300\.00 KZT\s+DECLINED \(CARD_REVOKED\)/);
  t.regex(run.stdout, /supply difference\s+0\.00 KZT\s+0\.00 KZT\n/);
  t.regex(run.stdout, /the card is revoked: its 43500\.00 KZT go back to the issuing bank for the owner/);
  t.regex(run.stdout, /bank\s+992300\.00 KZT\s+992300\.00 KZT\n/);
  t.regex(run.stdout, /terminal A voids receipt #4 \(1500\.00 KZT\) before any sync: VOIDED/);
  t.regex(run.stdout, /card: 5500\.00 KZT before its sync, 8000\.00 KZT after/);
  t.regex(run.stdout, /STORY OK: (\d+)\/\1 checks hold/);
});

test('bad usage exits 2; --help exits 0', async (t) => {
  const bad = await runStory(['--no-such-option']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /unknown option --no-such-option/);
  const help = await runStory(['--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /--in-process/);
  t.regex(
    help.stdout.replace(/\s+/g, ' '),
    /the day's exceptions at terminal A: a second card's payment is voided/,
    'the help tells all seven steps',
  );
});

test('Ctrl-C: the story stops everything, removes its temp dir and exits 130', async (t) => {
  const child = spawn(process.execPath, ['--conditions=dt-source', '--import', 'tsx', join(root, 'scripts', 'story.ts'), '--in-process'], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let dir: string | undefined;
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    const m = /\(SQLite (\S+)\/ledger\.db\)/.exec(stdout);
    if (m && dir === undefined) {
      dir = m[1]!;
      // The ledger is up and the temp dir exists: interrupt the story here.
      t.true(existsSync(dir));
      child.kill('SIGINT');
    }
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  t.truthy(dir, stdout);
  t.is(code, 130, stdout + stderr);
  t.regex(stderr, /SIGINT, stopping everything/);
  t.false(existsSync(dir!), 'temp dir removed');
  t.notRegex(stdout, /STORY OK/);
});
