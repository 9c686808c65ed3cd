/**
 * Tap timing: statistics with known inputs, and timeTaps / the timing suite
 * against a real firmware card (in-process transport) paying a real
 * terminal kernel, with a real ledger syncing the card whenever its small
 * offline-count limit stops it.
 */
import test from 'ava';
import { InProcessTransport } from '@dt/card-applet-sim';
import { TransportReader, type TapOutcome } from '@dt/terminal';
import { PHASES, type CaseResult, type Phase } from '../src/model.ts';
import { histogram, percentile, phaseStats, roundMs } from '../src/stats.ts';
import { timeTaps } from '../src/timing.ts';
import { timing } from '../src/suites/timing.ts';
import type { CaseRunner, LabContext, LabOptions } from '../src/suite.ts';
import { runCaseBody } from '../src/runner.ts';
import { startLabWorld, type LabWorld } from '../bench/lab-world.ts';

// ---------------------------------------------------------------- stats
test('phaseStats: nearest-rank percentiles of 1..100', (t) => {
  const s = phaseStats(Array.from({ length: 100 }, (_, i) => 100 - i));
  t.like(s, { n: 100, min: 1, max: 100, mean: 50.5, p50: 50, p95: 95, p99: 99 });
  // Samples stay in the given (tap) order.
  t.is(s.samples[0], 100);
  t.is(s.samples[99], 1);
});

test('phaseStats: small n takes real samples (no interpolation), n = 0 is all zeros', (t) => {
  t.like(phaseStats([5, 1, 3]), { n: 3, min: 1, p50: 3, p95: 5, p99: 5, max: 5, mean: 3 });
  t.like(phaseStats([7]), { n: 1, min: 7, p50: 7, p95: 7, p99: 7, max: 7, mean: 7 });
  t.deepEqual(phaseStats([]), { n: 0, min: 0, max: 0, mean: 0, p50: 0, p95: 0, p99: 0, samples: [] });
  // 20 samples: p95 is rank 19, p99 rank 20.
  const twenty = Array.from({ length: 20 }, (_, i) => i + 1);
  t.like(phaseStats(twenty), { p50: 10, p95: 19, p99: 20 });
});

test('phaseStats: rounds to 0.001 ms and refuses impossible samples', (t) => {
  const s = phaseStats([1.23456, 2.0004, 0.0005]);
  t.deepEqual(s.samples, [1.235, 2, 0.001]);
  t.is(s.mean, roundMs((1.235 + 2 + 0.001) / 3));
  t.throws(() => phaseStats([1, -0.5]), { instanceOf: RangeError });
  t.throws(() => phaseStats([Number.NaN]), { instanceOf: RangeError });
  t.throws(() => phaseStats([Number.POSITIVE_INFINITY]), { instanceOf: RangeError });
  t.throws(() => percentile([1], 0), { instanceOf: RangeError });
  t.true(Number.isNaN(percentile([], 50)));
});

test('histogram: equal-width bins that hold every sample', (t) => {
  const samples = [1, 2, 2, 3, 10, 4, 4, 4, 5];
  const bins = histogram(samples, 3);
  t.is(bins.length, 3);
  t.deepEqual(
    bins.map((b) => b.count),
    [4, 4, 1],
  );
  t.is(bins[0]!.lo, 1);
  t.is(bins[2]!.hi, 10);
  t.deepEqual(histogram([4, 4, 4]), [{ lo: 4, hi: 4, count: 3 }]);
  t.deepEqual(histogram([]), []);
  t.is(
    histogram(Array.from({ length: 100 }, (_, i) => i)).reduce((s, b) => s + b.count, 0),
    100,
  );
});

// ---------------------------------------------------------------- timeTaps on a real card
const LIMITS = { perPayment: 1_000_000, offlineTotal: 4_000_000, offlineCount: 8, cvmLimit: 1_000_000 };
const LOAD = 1_000_000;
const AMOUNT = 150;

let world: LabWorld;
test.before(async () => {
  world = await startLabWorld({ limits: LIMITS, load: LOAD });
});
test.after.always(async () => {
  await world?.close();
});

const sumOf = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

test.serial('timeTaps: 30 taps, syncs when the card limits stop it, every phase measured, money conserved', async (t) => {
  const card = await world.newCard();
  const terminal = world.newTerminal('timing');
  const reader = new TransportReader('lab in-process', new InProcessTransport(card.card));
  const before = await card.balance();
  const perTap: { outcome: TapOutcome; phases: Record<Phase, number> }[] = [];
  let syncEvents = 0;
  const r = await timeTaps({
    reader,
    terminal,
    taps: 30,
    amount: AMOUNT,
    ledgerUrl: world.ledgerUrl,
    onTap: (_i, outcome, phases) => perTap.push({ outcome, phases }),
    onSync: () => syncEvents++,
  });
  t.is(r.stoppedEarly, undefined);
  t.is(r.approved, 30);
  t.is(r.taps, 30);
  t.is(r.amount, AMOUNT);
  // 8 payments per offline period: 30 taps need 3 syncs, each announced by one CARD_LIMITS answer.
  t.is(r.syncs, 3);
  t.is(syncEvents, 3);
  t.deepEqual(r.outcomes, { APPROVED: 30, 'ONLINE_REQUIRED/CARD_LIMITS': 3 });
  for (const p of PHASES) {
    const s = r.phases[p];
    t.is(s.n, 30, p);
    t.is(s.samples.length, 30, p);
    t.true(
      s.samples.every((x) => Number.isFinite(x) && x >= 0),
      p,
    );
    t.true(s.min <= s.p50 && s.p50 <= s.p95 && s.p95 <= s.p99 && s.p99 <= s.max, `${p} percentiles ordered`);
    t.true(s.min <= s.mean && s.mean <= s.max, `${p} mean within range`);
  }
  // The card signs (ECDSA + chain checks) and the terminal verifies signatures: neither is free.
  t.true(r.phases.cardSigning.min > 0);
  t.true(r.phases.verification.min > 0);
  // Per tap: the phases are disjoint slices of the tap, so they add up to at most the total.
  const approved = perTap.filter((x) => x.outcome.kind === 'APPROVED');
  t.is(approved.length, 30);
  for (const [i, { phases }] of approved.entries()) {
    const parts = sumOf(PHASES.filter((p) => p !== 'total').map((p) => phases[p]));
    t.true(parts <= phases.total + 1e-6, `tap ${i}: phases ${parts} > total ${phases.total}`);
    t.is(roundMs(phases.total), r.phases.total.samples[i]);
  }
  // Money: exactly 30 x amount left the card, and the journal holds exactly those approvals.
  const after = await card.balance();
  t.is(before - after, 30 * AMOUNT);
  const payments = terminal.journal.listPayments({ limit: 1000 });
  t.is(payments.length, 30);
  t.is(sumOf(payments.map((p) => p.amount)), 30 * AMOUNT);
});

test.serial('timeTaps: without a ledger it stops at the card limits and says so', async (t) => {
  const card = await world.newCard({ ...LIMITS, offlineCount: 3 });
  const terminal = world.newTerminal('no-ledger');
  const reader = new TransportReader('lab in-process', new InProcessTransport(card.card));
  const before = await card.balance();
  const r = await timeTaps({ reader, terminal, taps: 5, amount: AMOUNT });
  t.is(r.approved, 3);
  t.is(r.syncs, 0);
  t.regex(r.stoppedEarly ?? '', /offline limits.*after 3 approved taps.*no ledger/);
  for (const p of PHASES) t.is(r.phases[p].n, 3);
  t.is(before - (await card.balance()), 3 * AMOUNT);
});

test.serial('timeTaps: a refusal a sync cannot cure stops the run with the reason', async (t) => {
  const card = await world.newCard({ ...LIMITS, perPayment: 100 });
  const terminal = world.newTerminal('refused');
  const reader = new TransportReader('lab in-process', new InProcessTransport(card.card));
  const before = await card.balance();
  // 150 tiyn is above the card's per-payment limit: the card refuses, and still refuses after one sync.
  const r = await timeTaps({ reader, terminal, taps: 2, amount: AMOUNT, ledgerUrl: world.ledgerUrl });
  t.is(r.approved, 0);
  t.is(r.syncs, 1);
  t.regex(r.stoppedEarly ?? '', /even right after a sync/);
  t.is(r.phases.total.n, 0);
  t.is(await card.balance(), before);

  // A decline (the card is on the terminal's revocation list) stops at once, naming the outcome.
  const revoked = await world.newCard();
  const reader2 = new TransportReader('lab in-process', new InProcessTransport(revoked.card));
  const crl = terminal.journal.crl()!;
  // (Stored directly: the test plays the part of a ledger-signed list naming the card.)
  terminal.journal.storeCrl({ version: crl.version + 1, issued: crl.issued, bytes: new Uint8Array([0]), revoked: [revoked.kid] });
  const d = await timeTaps({ reader: reader2, terminal, taps: 3, amount: AMOUNT, ledgerUrl: world.ledgerUrl });
  t.is(d.approved, 0);
  t.is(d.syncs, 0);
  t.regex(d.stoppedEarly ?? '', /^tap 0 ended DECLINED\/CARD_REVOKED/);
  await t.throwsAsync(() => timeTaps({ reader, terminal, taps: 0, amount: AMOUNT }), { instanceOf: RangeError });
  await t.throwsAsync(() => timeTaps({ reader, terminal, taps: 1, amount: 0 }), { instanceOf: RangeError });
});

test.serial('timeTaps: aborted (Ctrl-C) while waiting for the card, it stops and says it was interrupted, not the outcome', async (t) => {
  const card = await world.newCard();
  const terminal = world.newTerminal('interrupted');
  const reader = new TransportReader('lab in-process', new InProcessTransport(card.card));
  const ac = new AbortController();
  let approvedTaps = 0;
  const r = await timeTaps({
    reader,
    terminal,
    taps: 10,
    amount: AMOUNT,
    signal: ac.signal,
    onTap: (_i, outcome) => {
      if (outcome.kind === 'APPROVED' && ++approvedTaps === 2) ac.abort(new Error('interrupted'));
    },
  });
  t.is(r.approved, 2);
  t.is(r.stoppedEarly, 'interrupted (Ctrl-C) after 2 approved taps');
});

// ---------------------------------------------------------------- the suite through a minimal runner
/** A CaseRunner without transcripts, over the lab runner's verdict API. */
function runner(cases: CaseResult[]): CaseRunner {
  return {
    async case(name, description, body) {
      const r = await runCaseBody(body);
      cases.push({
        suite: 'timing',
        name,
        description,
        status: r.status,
        durationMs: r.durationMs,
        details: r.details,
        ...(r.message ? { message: r.message } : {}),
      });
    },
  };
}

function context(
  reader: TransportReader,
  terminal: ReturnType<LabWorld['newTerminal']> | undefined,
  progress: unknown[][],
  options: Partial<LabOptions>,
): LabContext {
  return {
    readerName: reader.name,
    reader,
    openSession: () => reader.waitForCard(),
    terminal: () => terminal,
    ...(terminal ? {} : { terminalMissing: 'no terminal identity (--terminal)' }),
    ledgerUrl: world.ledgerUrl,
    options: { taps: 10, amount: AMOUNT, rounds: 1, cardTimeoutMs: 5000, interactive: false, ...options },
    signal: new AbortController().signal,
    progress: (...a: unknown[]) => void progress.push(a),
    workDir: world.dir,
  };
}

test.serial('timing suite: tap-latency passes with every tap approved, reports figures and progress', async (t) => {
  const card = await world.newCard();
  const reader = new TransportReader('lab in-process', new InProcessTransport(card.card));
  const cases: CaseResult[] = [];
  const progress: unknown[][] = [];
  const out = await timing.run(context(reader, world.newTerminal('suite'), progress, { taps: 10 }), runner(cases));
  t.is(cases.length, 1);
  t.is(cases[0]!.name, 'tap-latency');
  t.is(cases[0]!.status, 'passed', cases[0]!.message);
  t.is(out.timing?.approved, 10);
  t.is(out.timing?.phases.total.n, 10);
  t.is(out.timing?.syncs, 1);
  const d = cases[0]!.details!;
  t.is(d.approved, 10);
  t.is(typeof d.goalMet, 'boolean');
  t.is((d.phasesMs as Record<string, { n: number }>).cardSigning!.n, 10);
  // Progress lines carry done/total, ending at 10/10.
  t.deepEqual(progress.at(-1)!.slice(1), [10, 10]);
  t.true(progress.some((p) => /sync 1/.test(String(p[0]))));
});

test.serial('timing suite: skips without a terminal, fails when the card stops early', async (t) => {
  const card = await world.newCard({ ...LIMITS, offlineCount: 2 });
  const reader = new TransportReader('lab in-process', new InProcessTransport(card.card));
  const skipped: CaseResult[] = [];
  const none = await timing.run(context(reader, undefined, [], {}), runner(skipped));
  t.is(skipped[0]!.status, 'skipped');
  t.regex(skipped[0]!.message ?? '', /no terminal identity/);
  t.is(none.timing, undefined);

  // Without a ledger the 2-payment card stops after 2 of 4 taps: a failure, with the figures kept.
  const failed: CaseResult[] = [];
  const ctx = { ...context(reader, world.newTerminal('suite-fail'), [], { taps: 4 }), ledgerUrl: undefined };
  const out = await timing.run(ctx, runner(failed));
  t.is(failed[0]!.status, 'failed');
  t.regex(failed[0]!.message ?? '', /2 of 4 taps approved/);
  t.is(out.timing?.approved, 2);
  t.is(out.timing?.phases.select.n, 2);
});
