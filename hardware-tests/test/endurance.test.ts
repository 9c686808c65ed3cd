/**
 * The endurance suite run directly against an in-process lab: a real
 * ledger over HTTP (SYNC goes through its /v1/sync), a firmware card with an
 * offline limit of 4 payments loaded through it, and a lab terminal
 * (test/helpers/robustness-lab.ts).
 */
import test from 'ava';
import { Applet } from '@dt/firmware';
import { CLA, INS, formatTenge } from '@dt/protocol';
import type { AppletFactory } from '@dt/card-applet-sim';
import { endurance } from '../src/suites/endurance.ts';
import { LAB_LIMITS, LAB_LOAD, forgetfulApplet, labContext, recordingRunner, startLabWorld } from './helpers/robustness-lab.ts';

test('pays to the card limits, syncs through the ledger, and again: every case passes and the figures add up', async (t) => {
  const w = await startLabWorld();
  t.teardown(() => w.close());
  const runner = recordingRunner();
  const progress: [string, number | undefined, number | undefined][] = [];
  const out = await endurance.run(
    labContext(w, { options: { rounds: 2, amount: 250 }, progress: (m, d, n) => progress.push([m, d, n]) }),
    runner,
  );
  t.deepEqual(
    runner.cases.map((c) => [c.name, c.status, c.message]),
    [
      ['round-1-pay-to-limits', 'passed', undefined],
      ['round-1-sync', 'passed', undefined],
      ['round-2-pay-to-limits', 'passed', undefined],
      ['round-2-sync', 'passed', undefined],
    ],
  );
  const n = LAB_LIMITS.offlineCount;
  t.deepEqual(out.endurance?.rounds, [
    {
      round: 1,
      payments: n,
      paid: n * 250,
      stoppedBy: 'ONLINE_REQUIRED/CARD_LIMITS',
      sync: 'synced',
      balanceBefore: LAB_LOAD,
      balanceAfter: LAB_LOAD - n * 250,
    },
    {
      round: 2,
      payments: n,
      paid: n * 250,
      stoppedBy: 'ONLINE_REQUIRED/CARD_LIMITS',
      sync: 'synced',
      balanceBefore: LAB_LOAD - n * 250,
      balanceAfter: LAB_LOAD - 2 * n * 250,
    },
  ]);
  t.deepEqual(runner.byName('round-1-pay-to-limits').details.limitReached, ['offline count']);
  // Progress counts the payments against what the limits allow.
  t.deepEqual(
    progress.filter(([m]) => m.startsWith('round 1:')).map(([, d, total]) => [d, total]),
    [
      [1, n],
      [2, n],
      [3, n],
      [4, n],
    ],
  );
  // The card after the last sync: counters reset, then the check tap.
  const s = await w.control.status();
  t.is(s.offlineCount, 1);
  t.is(s.balance, LAB_LOAD - (2 * n + 1) * 250);
  // The ledger recorded the card's transfers: its supply invariant holds.
  t.true((await w.ledger.audit()).ok);
});

test('without a ledger the sync is skipped with the reason and the suite stops after one round', async (t) => {
  const w = await startLabWorld();
  t.teardown(() => w.close());
  const runner = recordingRunner();
  const out = await endurance.run(labContext(w, { without: ['ledger'], options: { rounds: 3 } }), runner);
  t.deepEqual(
    runner.cases.map((c) => [c.name, c.status]),
    [
      ['round-1-pay-to-limits', 'passed'],
      ['round-1-sync', 'skipped'],
    ],
  );
  t.regex(runner.byName('round-1-sync').message ?? '', /needs --ledger <url>/);
  t.is(out.endurance?.rounds.length, 1);
  t.is(out.endurance?.rounds[0]?.sync, 'skipped: no ledger');
});

test('a card without value for the amount, or without a terminal, is skipped with a clear reason', async (t) => {
  const w = await startLabWorld();
  t.teardown(() => w.close());
  const poor = recordingRunner();
  const out = await endurance.run(labContext(w, { options: { amount: LAB_LOAD + 1 } }), poor);
  t.is(poor.cases.length, 1);
  t.is(poor.cases[0]!.status, 'skipped');
  t.regex(
    poor.cases[0]!.message ?? '',
    new RegExp(
      `holds ${formatTenge(LAB_LOAD).replace('.', '\\.')}, not enough for one tap of ${formatTenge(LAB_LOAD + 1).replace('.', '\\.')}`,
    ),
  );
  t.deepEqual(out.endurance?.rounds, []);

  const none = recordingRunner();
  await endurance.run(labContext(w, { without: ['terminal'] }), none);
  t.is(none.cases[0]!.status, 'skipped');
  t.regex(none.cases[0]!.message ?? '', /no lab terminal/);
});

/** A broken card that refuses its third payment with 6A80 (wrong data), long before its limits. */
const refusingApplet: AppletFactory = (hal) => {
  const inner = new Applet(hal);
  let pays = 0;
  return {
    powerOn: () => inner.powerOn(),
    async process(cmd: Uint8Array) {
      if (cmd[1] === INS.PAY && (cmd[0]! & CLA.CHAINING) === 0 && ++pays === 3) return Uint8Array.of(0x6a, 0x80);
      return inner.process(cmd);
    },
  };
};

test('a card that keeps the value it paid fails the sums of the round', async (t) => {
  const w = await startLabWorld({ createApplet: forgetfulApplet });
  t.teardown(() => w.close());
  const runner = recordingRunner();
  await endurance.run(labContext(w, { options: { rounds: 1 } }), runner);
  const pay = runner.byName('round-1-pay-to-limits');
  t.is(pay.status, 'failed');
  t.is(pay.message, `card balance drop = value approved: expected ${LAB_LIMITS.offlineCount * 100}, got 0`);
});

test('a tap outcome other than APPROVED before the limits fails the round', async (t) => {
  const w = await startLabWorld({ createApplet: refusingApplet });
  t.teardown(() => w.close());
  const runner = recordingRunner();
  const out = await endurance.run(labContext(w, { options: { rounds: 2 } }), runner);
  t.deepEqual(
    runner.cases.map((c) => [c.name, c.status]),
    [['round-1-pay-to-limits', 'failed']],
  );
  t.is(runner.cases[0]!.message, 'after 2 payments: expected ONLINE_REQUIRED CARD_LIMITS, got DECLINED CARD_REFUSED (6A80)');
  t.deepEqual(out.endurance?.rounds, [
    {
      round: 1,
      payments: 2,
      paid: 200,
      stoppedBy: 'DECLINED CARD_REFUSED (6A80)',
      sync: 'not synced: the round did not reach the card limits',
      balanceBefore: LAB_LOAD,
      balanceAfter: LAB_LOAD - 200,
    },
  ]);
});
