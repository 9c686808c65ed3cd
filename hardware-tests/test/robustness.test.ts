/**
 * The robustness suite run directly (not through the CLI) against an
 * in-process lab: a real ledger, a firmware card loaded through it, lab
 * terminals, and a reader + card control with the semantics of a card
 * served through vpcd (test/helpers/robustness-lab.ts). The suite through a
 * real pcscd and `dt-card serve --control` is in robustness-pcscd.test.ts.
 */
import test from 'ava';
import type { AppletFactory } from '@dt/card-applet-sim';
import { robustness, NEEDS_CONTROL } from '../src/suites/robustness.ts';
import { forgetfulApplet, labContext, recordingRunner, startLabWorld, type LabWorld } from './helpers/robustness-lab.ts';

const MONEY_CASES = [
  'removed-after-signing',
  'removed-before-signing',
  'power-cut-pay-write',
  'power-cut-pay-write-torn',
  'power-cut-pay-write-torn-prefix',
  'reader-unplugged-mid-tap',
  'corrupted-answer',
  'slow-card',
];
const ALL_CASES = [...MONEY_CASES.slice(0, 5), 'reset-between-commands', ...MONEY_CASES.slice(5)];
/** The limits `dt-card personalize` gives by default: 10 offline payments, so the suite must sync the card on the way. */
const LIMITS = { perPayment: 5_000_000, offlineTotal: 10_000_000, offlineCount: 10, cvmLimit: 1_000_000 } as const;

async function world(t: { teardown(f: () => Promise<void>): void }, createApplet?: AppletFactory): Promise<LabWorld> {
  const w = await startLabWorld({ limits: LIMITS, ...(createApplet ? { createApplet } : {}) });
  t.teardown(() => w.close());
  return w;
}

test('a good card passes every case; faults fired as planned and are disarmed at the end; value is conserved', async (t) => {
  const w = await world(t);
  const start = await w.control.status();
  const runner = recordingRunner();
  const progress: string[] = [];
  await robustness.run(labContext(w, { progress: (m) => progress.push(m) }), runner);
  t.deepEqual(
    runner.cases.map((c) => c.name),
    ALL_CASES,
  );
  for (const c of runner.cases) t.is(c.status, 'passed', `${c.name}: ${c.message ?? ''} ${JSON.stringify(c.details)}`);

  // Each fault case's fault really fired on the card.
  const kinds = w.card.faults.events.map((e) => e.kind);
  t.deepEqual(kinds, ['cut-after-apdu', 'cut-before-apdu', 'cut-at-write', 'cut-at-write', 'cut-at-write', 'corrupt-frame']);
  t.deepEqual(w.card.faults.plan, {}, 'nothing left armed');
  t.true(w.reader.present, 'the card is back in the reader');

  // The torn-after-signing tap was recovered, not paid twice.
  const after = runner.byName('removed-after-signing');
  t.true((after.details.taps as string[]).some((s) => /retry: APPROVED \(recovered\)/.test(s)));
  // Sums over the whole run: every approval in every lab journal is value that left the card.
  const end = await w.control.status();
  const approved = w.journals.flatMap((j) => j.listPayments()).reduce((s, p) => s + p.amount, 0);
  const orphaned = runner.cases.reduce((s, c) => s + ((c.details.sums as { orphaned?: number } | undefined)?.orphaned ?? 0), 0);
  t.is(start.balance - end.balance, approved + orphaned);
  // At least the fault tap's retry (or its orphan) and the final tap of every payment case.
  t.true(approved + orphaned >= MONEY_CASES.length * 2 * 100);
  t.true(progress.some((p) => p.startsWith('cut after signing: PRESENT_CARD_AGAIN')));
  // Ten offline payments do not last the suite: it synced the card through the ledger between cases.
  t.true(runner.cases.some((c) => c.details.syncedFirst === true));
  t.true(progress.some((p) => p.startsWith('syncing the card through the ledger')));
});

test('without a ledger, a case that would run into the card limits is skipped with the reason', async (t) => {
  const w = await world(t);
  const runner = recordingRunner();
  await robustness.run(labContext(w, { without: ['ledger'] }), runner);
  const skipped = runner.cases.filter((c) => c.status === 'skipped');
  t.true(skipped.length > 0);
  for (const c of skipped) t.regex(c.message ?? '', /offline limits are nearly used up \(\d+ of 10 payments.*give --ledger <url>/);
  for (const c of runner.cases) t.not(c.status, 'failed', `${c.name}: ${c.message}`);
  t.is(runner.cases[0]!.status, 'passed');
});

test('without the card control channel the fault cases are skipped with the reason', async (t) => {
  const w = await world(t);
  const runner = recordingRunner();
  await robustness.run(labContext(w, { without: ['control'] }), runner);
  t.deepEqual(
    runner.cases.map((c) => c.name),
    ALL_CASES,
  );
  for (const c of runner.cases) {
    t.is(c.status, 'skipped', c.name);
    t.is(c.message, NEEDS_CONTROL, c.name);
  }
  t.is(w.card.faults.events.length, 0);
});

test('interactive without card control: the removal cases prompt the operator and see the card go and come back; fault cases are skipped', async (t) => {
  const w = await world(t);
  const runner = recordingRunner();
  const hand: string[] = [];
  // The operator: acts on the prompts a moment after they appear.
  const operator = (m: string): void => {
    if (m.startsWith('REMOVE the card')) {
      hand.push('remove');
      setTimeout(() => w.reader.remove(), 100);
    } else if (m.startsWith('put the card BACK')) {
      hand.push('insert');
      setTimeout(() => w.reader.insert(), 100);
    }
  };
  await robustness.run(labContext(w, { without: ['control'], options: { interactive: true }, progress: operator }), runner);
  for (const c of runner.cases) {
    if (c.name === 'reset-between-commands' || c.name === 'reader-unplugged-mid-tap') t.is(c.status, 'passed', `${c.name}: ${c.message}`);
    else t.is(c.message, NEEDS_CONTROL, c.name);
  }
  t.deepEqual(hand, ['remove', 'insert', 'remove', 'insert']);
  t.true(w.reader.present);
});

test('without a lab terminal the payment cases are skipped with the terminal reason; the reset case still runs', async (t) => {
  const w = await world(t);
  const runner = recordingRunner();
  await robustness.run(labContext(w, { without: ['terminal'] }), runner);
  for (const name of MONEY_CASES) {
    t.is(runner.byName(name).status, 'skipped', name);
    t.regex(runner.byName(name).message ?? '', /no lab terminal/);
  }
  const reset = runner.byName('reset-between-commands');
  t.is(reset.status, 'passed', reset.message);
});

test('a card whose payments do not stick (value kept after approval) fails every payment case', async (t) => {
  const w = await world(t, forgetfulApplet);
  const runner = recordingRunner();
  await robustness.run(labContext(w), runner);
  for (const name of MONEY_CASES) t.is(runner.byName(name).status, 'failed', `${name}: ${runner.byName(name).message}`);
  // After a power cut it forgets the transfer it signed: the retry cannot recover it.
  t.regex(runner.byName('removed-after-signing').message ?? '', /retry recovered the signed transfer/);
  // Later, its value is gone altogether (the torn commit under its rollback bricked its memory).
  t.regex(runner.byName('slow-card').message ?? '', /value vanished/);
  t.deepEqual(w.card.faults.plan, {}, 'faults disarmed even when cases fail');
});

test('the sums catch that card even when every tap looks fine', async (t) => {
  const w = await world(t, forgetfulApplet);
  const runner = recordingRunner(['slow-card']);
  await robustness.run(labContext(w), runner);
  const c = runner.byName('slow-card');
  t.deepEqual(c.details.taps, ['slow card: APPROVED counter 2', 'final tap: APPROVED counter 3']);
  t.is(c.status, 'failed');
  // Two taps approved (the slow one and the final one); the card's memory still holds the value.
  t.is(c.message, 'card balance drop (before - after) = value approved in the lab journal + proven orphans: expected 200, got 0');
});
