/**
 * The endurance suite: for each round, pay taps of the lab amount until the
 * card's own offline limits stop it (the kernel's ONLINE_REQUIRED with
 * reason CARD_LIMITS: the card answered 6985 to PAY), check the sums, sync
 * the card through the ledger (SYNC APDUs against the ledger's `/v1/sync`,
 * the terminal's card-sync client, `syncCard`), check that the sync reset the offline counters and left
 * the balance alone, and go again.
 *
 * Per round, two cases:
 *
 * - `round-N-pay-to-limits`: every tap APPROVED until CARD_LIMITS (any other
 *   outcome fails the case, and so does a card that is still paying after
 *   more taps than any limit allows); the stop is where the card's limits
 *   say (offline count, offline total, or no value left for the amount); the
 *   card's balance dropped by exactly the value approved in the lab journal
 *   and its counter by the number of payments;
 * - `round-N-sync`: the ledger accepts the card's SyncRequest and the card
 *   the ledger's receipt; afterwards its offline count and total are 0 and
 *   its balance is what it was plus what the ledger loaded; the card pays
 *   again (checked by the next round's first tap, or a tap after the last
 *   sync).
 *
 * Without a ledger (`--ledger`) the sync case is skipped with the reason and
 * the suite stops after one round. The result is `endurance` (model.ts).
 *
 * @module
 */
import { LIMITS, formatTenge, openSigned, getStatus, selectApplet } from '@dt/protocol';
import { syncCard, type CardSession, type TapOutcome } from '@dt/terminal';
import type { EnduranceResult } from '../model.ts';
import type { LabContext, LabSuite, LabTerminal } from '../suite.ts';
import { describeOutcome } from './robustness.ts';

/** What the suite reads from the card (GET STATUS, or the control channel for the balance). */
interface Facts {
  readonly balance: number;
  readonly counter: number;
  readonly offlineCount: number;
  readonly offlineTotal: number;
  readonly limits?: { readonly offlineCount: number; readonly offlineTotal: number; readonly perPayment: number };
}

type Round = EnduranceResult['rounds'][number];

/** The endurance suite. */
export const endurance: LabSuite = {
  name: 'endurance',
  description: "pay until the card's offline limits stop it, check the sums, sync through the ledger, check the counters reset, repeat",
  async run(ctx, cases) {
    const amount = ctx.options.amount;
    const rounds: Round[] = [];
    let lab: LabTerminal | undefined;
    let labTried = false;

    const facts = async (): Promise<Facts> => {
      const st = await withSession(ctx, async (s) => {
        await selectApplet(s);
        return getStatus(s);
      });
      const limits = st.limits
        ? { offlineCount: st.limits.offlineCount, offlineTotal: st.limits.offlineTotal, perPayment: st.limits.perPayment }
        : undefined;
      // The control channel reads the committed memory itself: prefer it for the money.
      const own = ctx.control ? await ctx.control.status() : undefined;
      return {
        balance: own?.balance ?? st.balance,
        counter: own?.counter ?? st.counter,
        offlineCount: own?.offlineCount ?? st.offlineCount,
        offlineTotal: own?.offlineTotal ?? st.offlineValue,
        ...(limits ? { limits } : {}),
      };
    };

    const total = ctx.ledgerUrl ? ctx.options.rounds : 1;
    for (let r = 1; r <= total && !ctx.signal.aborted; r++) {
      let round: { payments: number; paid: number; stoppedBy: string; balanceBefore: number; balanceAfter: number } | undefined;
      let reachedLimits = false;
      const last = r === total;

      await cases.case(
        `round-${r}-pay-to-limits`,
        `round ${r}: taps of ${formatTenge(amount)} are approved until the card's offline limits stop it (ONLINE_REQUIRED CARD_LIMITS); balance drop = value approved`,
        async (c) => {
          if (!labTried) {
            labTried = true;
            lab = ctx.terminal();
          }
          if (!lab) c.skip(ctx.terminalMissing ?? 'no lab terminal');
          const before = await facts();
          c.details.before = before;
          if (before.balance < amount)
            c.skip(`the card holds ${formatTenge(before.balance)}, not enough for one tap of ${formatTenge(amount)}: load it first`);
          if (before.limits && before.limits.perPayment < amount)
            c.skip(
              `the card's per-payment limit (${formatTenge(before.limits.perPayment)}) is below the tap amount ${formatTenge(amount)}: use --amount`,
            );
          // What the limits should allow (for progress): count, value and balance, whichever is first.
          const byCount =
            (before.limits ? Math.min(before.limits.offlineCount, LIMITS.maxHistory) : LIMITS.maxHistory) - before.offlineCount;
          const byValue = before.limits ? Math.floor((before.limits.offlineTotal - before.offlineTotal) / amount) : Infinity;
          const byBalance = Math.floor(before.balance / amount);
          const planned = Math.max(0, Math.min(byCount, byValue, byBalance));
          // More taps than any limit allows means the card does not enforce its limits.
          const cap = LIMITS.maxHistory + 2;
          const firstId = lab!.journal.listPayments().at(-1)?.id ?? 0;
          let payments = 0;
          let paid = 0;
          let stop: TapOutcome | undefined;
          while (!ctx.signal.aborted) {
            const o = await lab!.kernel.charge(ctx.reader, amount, { signal: ctx.signal });
            if (o.kind === 'APPROVED' && !o.alreadyRecorded) {
              payments++;
              paid += o.payment.amount;
              ctx.progress(`round ${r}: payment ${payments}`, payments, planned);
              c.check(payments <= cap, `the card kept paying past ${cap} offline payments: it does not enforce its offline limits`);
              continue;
            }
            stop = o;
            break;
          }
          if (ctx.signal.aborted) c.fail('interrupted');
          c.details.payments = payments;
          c.details.paid = paid;
          c.details.stoppedBy = describeOutcome(stop!);
          const limited = stop!.kind === 'ONLINE_REQUIRED' && stop!.reason === 'CARD_LIMITS';
          round = {
            payments,
            paid,
            stoppedBy: limited ? 'ONLINE_REQUIRED/CARD_LIMITS' : describeOutcome(stop!),
            balanceBefore: before.balance,
            balanceAfter: before.balance - paid,
          };
          c.check(limited, `after ${payments} payments: expected ONLINE_REQUIRED CARD_LIMITS, got ${describeOutcome(stop!)}`);
          reachedLimits = true;

          const after = await facts();
          c.details.after = after;
          round = { ...round, balanceAfter: after.balance };
          const approved = lab!.journal.listPayments({ afterId: firstId }).reduce((s, p) => s + p.amount, 0);
          c.expect('value approved in the lab journal = value of the approved taps', approved, paid);
          c.expect('card balance drop = value approved', before.balance - after.balance, paid);
          c.expect('card counter advance = payments approved', after.counter - before.counter, payments);
          c.check(payments >= 1, 'the card paid nothing in this round');
          // The stop must be one of the card's limits, not an early refusal.
          const lim = after.limits;
          const reasons: string[] = [];
          if (lim && after.offlineCount >= Math.min(lim.offlineCount, LIMITS.maxHistory)) reasons.push('offline count');
          if (lim && after.offlineTotal + amount > lim.offlineTotal) reasons.push('offline total');
          if (after.balance < amount) reasons.push('balance');
          c.details.limitReached = reasons;
          c.check(
            reasons.length > 0,
            `the card refused after ${after.offlineCount} payments / ${formatTenge(after.offlineTotal)} offline with ${formatTenge(after.balance)} left, before any of its limits (${lim ? `${lim.offlineCount} payments, ${formatTenge(lim.offlineTotal)}` : 'limits unknown'})`,
          );
        },
      );

      if (round === undefined) break;
      if (!reachedLimits) {
        // The round did not end at the card's limits: nothing to sync, no further round.
        rounds.push({ round: r, ...round, sync: 'not synced: the round did not reach the card limits' });
        break;
      }

      let sync = 'not synced';
      await cases.case(
        `round-${r}-sync`,
        `round ${r}: the card syncs through the ledger; its offline counters are reset and its balance is unchanged (plus any load)`,
        async (c) => {
          if (!ctx.ledgerUrl) {
            sync = 'skipped: no ledger';
            c.skip(
              "needs --ledger <url>: the ledger that registered the card, to sync it (SYNC through the ledger's /v1/sync); the suite stops after one round without it",
            );
          }
          const before = await facts();
          const res = await withSession(ctx, async (s) => {
            await selectApplet(s);
            return syncCard(s, ctx.ledgerUrl!, { signal: ctx.signal });
          });
          if (!res.ok) {
            sync = `refused: ${res.code}`;
            return c.fail(`the ledger refused the sync: HTTP ${res.status} ${res.code}${res.message ? ` (${res.message})` : ''}`);
          }
          // The card verified the ledger's signature before accepting it; read what the ledger says it did.
          const receipt = openSigned('SyncReceipt', res.receipt).message;
          const after = await facts();
          sync = 'synced';
          c.details.loaded = receipt.loaded;
          c.details.voided = receipt.voided.length;
          c.details.balanceBefore = before.balance;
          c.details.balanceAfter = after.balance;
          round = { ...round!, balanceAfter: after.balance };
          c.expect('offline payments after the sync', after.offlineCount, 0);
          c.expect('offline value after the sync', after.offlineTotal, 0);
          if (receipt.voided.length === 0)
            c.expect('balance after the sync = before + loaded by the ledger', after.balance, before.balance + receipt.loaded);
          else
            c.check(
              after.balance >= before.balance + receipt.loaded,
              `balance after the sync (${after.balance}) below the balance before (${before.balance}) + loaded (${receipt.loaded})`,
            );
          if (last) {
            // The card pays again (earlier rounds: the next round's first tap shows it).
            const o = await lab!.kernel.charge(ctx.reader, amount, { signal: ctx.signal });
            c.expect('a tap after the sync', o.kind, 'APPROVED');
            const now = await facts();
            c.expect('card balance drop after the sync tap', after.balance - now.balance, o.kind === 'APPROVED' ? o.payment.amount : 0);
          }
        },
      );
      rounds.push({ round: r, ...round, sync });
    }
    return { endurance: { rounds } };
  },
};

/** Runs `f` on a fresh session, retrying a few times while the card is coming back. */
async function withSession<T>(ctx: LabContext, f: (s: CardSession) => Promise<T>): Promise<T> {
  let last: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    let s: CardSession | undefined;
    try {
      s = await ctx.openSession();
      return await f(s);
    } catch (e) {
      if ((e as { name?: string }).name === 'CardStatusError' || ctx.signal.aborted) throw e;
      last = e;
    } finally {
      await s?.release().catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw last;
}
