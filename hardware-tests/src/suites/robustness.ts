/**
 * The robustness suite: what happens to a tap, and to the money, when the
 * physical world interferes.
 *
 * | case | what is done to the card | what must happen |
 * |---|---|---|
 * | `removed-after-signing` | power cut right after the last PAY block ran (the card signed; the answer never leaves) | PRESENT_CARD_AGAIN; the next tap gets the same transfer back with `retryOf`: APPROVED, recovered, paid once |
 * | `removed-before-signing` | power cut when the last PAY block arrives | PRESENT_CARD_AGAIN; the next tap pays once, with a fresh signature |
 * | `power-cut-pay-write`, `-torn`, `-torn-prefix` | power cut during the card's own commit write of PAY (the firmware commits a PAY in one shadow-journal write): the write lost, torn at a random length, torn after 8 bytes | PRESENT_CARD_AGAIN; the card recovers at power-up; the retry completes (recovered or fresh, depending on what survived); paid once |
 * | `reset-between-commands` | the card leaves the field and comes back between SELECT and the next command | the applet answers 6986 until selected again; its state is intact |
 * | `reader-unplugged-mid-tap` | the card is taken away when PAY starts and stays away | a clean outcome (no hang, no exception); a tap without the card ends cleanly; after reinsertion the next tap works |
 * | `corrupted-answer` | one byte of the card's PAY answer flipped | never approved on a damaged answer: PRESENT_CARD_AGAIN DAMAGED_ANSWER and the retry recovers the same transfer; DECLINED only when the damage hit the status word (fail closed: the signed transfer is then an orphan the ledger voids at the card's next sync); then a tap works |
 * | `slow-card` | every answer delayed (well under the tap timeout) | APPROVED |
 *
 * Every case that takes payments ends with a normal tap (the card works
 * afterwards) and checks the sums over the case: the card's balance dropped
 * by exactly the value approved in the lab journal (plus any orphan the
 * card provably signed for a tap the terminal declined: its GET STATUS
 * `lastNonce` is that tap's nonce), its counter advanced once per signed
 * transfer, and no transfer or counter was approved twice.
 *
 * A card whose offline limits are nearly used up is synced through the
 * ledger (`--ledger`) before a case, outside the case's sums; without a
 * ledger that case is skipped with the reason.
 *
 * Faults are aimed by watching the tap's commands: a PAY request is
 * chained over several APDUs and the card signs when the last block
 * arrives, so the plan is armed (counted from the next APDU) right before
 * that block leaves, not by INS (which would hit the first block).
 *
 * Faults come from the card control channel (`dt-card serve --control`).
 * Without it the fault cases are skipped with the reason; removal cases
 * prompt the operator when the run is interactive. Every armed fault is
 * disarmed when its case ends, whatever happened.
 *
 * @module
 */
import {
  CardStatusError,
  SW,
  decodeCommand,
  decodeResponse,
  encodeCommand,
  formatTenge,
  getStatusCommand,
  identifyCommand,
  isChainedBlock,
  openSigned,
  selectCommand,
  toHex,
  type TransmitOptions,
  getStatus,
  selectApplet,
} from '@dt/protocol';
import { type FaultPlan } from '@dt/card-applet-sim';
import { syncCard, type CardReader, type CardSession, type PaymentRecord, type TapOutcome, type WaitOptions } from '@dt/terminal';
import type { CaseApi, LabContext, LabSuite, LabTerminal } from '../suite.ts';

/** Skip reason of the cases that need the card control channel. */
export const NEEDS_CONTROL = 'needs --card-control: a simulated card served with dt-card serve --control';

/** Response delay of the slow-card case, in ms per answer (a tap has about a dozen answers; the tap budget is seconds). */
export const SLOW_CARD_DELAY_MS = 150;

/** Spare offline payments a case needs on the card (fault tap, retry, orphan, the final tap). */
const CASE_PAYMENTS = 4;

/** Cases that take payments (all but reset-between-commands). */
const MONEY_CASES = 8;

/** Largest PaymentRequest the watcher reassembles (the protocol's requests are a few KiB). */
const MAX_REQUEST = 16 * 1024;

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/** A short, non-secret description of an outcome (reports, progress). */
export function describeOutcome(o: TapOutcome): string {
  switch (o.kind) {
    case 'APPROVED':
      return `APPROVED${o.recovered ? ' (recovered)' : ''}${o.alreadyRecorded ? ' (already recorded)' : ''} counter ${o.payment.counter}`;
    case 'DECLINED':
    case 'END':
    case 'PRESENT_CARD_AGAIN':
      return `${o.kind} ${o.reason}${o.detail ? ` (${o.detail})` : ''}`;
    default:
      return `${o.kind} ${o.reason}`;
  }
}

/** True for errors that mean "no usable answer" (card gone, reader gone, timeout), as opposed to a status word. */
function isCommunicationError(e: unknown): boolean {
  return !(e instanceof CardStatusError);
}

/**
 * Wraps the lab reader: sees every command of a tap, reassembles the PAY
 * request (its nonce identifies the attempt), and runs a one-shot hook just
 * before the first or the last PAY block leaves, which is how faults are
 * aimed precisely at "after the card signed" or "before it signed".
 */
class PayWatch implements CardReader {
  readonly #inner: CardReader;
  /** Runs once, right before the first PAY block is sent. */
  beforeFirstPay: (() => Promise<void>) | undefined;
  /** Runs once, right before the last PAY block is sent. */
  beforeLastPay: (() => Promise<void>) | undefined;
  /** Nonce of the last PaymentRequest sent (hex), when it could be read. */
  lastNonce: string | undefined;
  /** True once a PAY block went out in the current tap. */
  reachedPay = false;
  #request: Uint8Array[] = [];
  #requestBytes = 0;
  #inPay = false;

  constructor(inner: CardReader) {
    this.#inner = inner;
  }

  get name(): string {
    return this.#inner.name;
  }

  /** Forgets the last tap (hooks stay). */
  newTap(): void {
    this.lastNonce = undefined;
    this.reachedPay = false;
    this.#request = [];
    this.#requestBytes = 0;
    this.#inPay = false;
  }

  async waitForCard(options?: WaitOptions): Promise<CardSession> {
    const s = await this.#inner.waitForCard(options);
    return {
      reader: s.reader,
      ...(s.atr ? { atr: s.atr } : {}),
      release: () => s.release(),
      transmit: async (apdu: Uint8Array, o?: TransmitOptions) => {
        await this.#see(apdu);
        return s.transmit(apdu, o);
      },
    };
  }

  async #see(apdu: Uint8Array): Promise<void> {
    let cmd;
    try {
      cmd = decodeCommand(apdu);
    } catch {
      return;
    }
    if (identifyCommand(cmd) !== 'PAY') return;
    const last = !isChainedBlock(cmd);
    if (!this.#inPay) {
      this.#inPay = true;
      this.#request = [];
      this.#requestBytes = 0;
      this.reachedPay = true;
      const hook = this.beforeFirstPay;
      this.beforeFirstPay = undefined;
      if (hook) await hook();
    }
    if (cmd.data && this.#requestBytes + cmd.data.length <= MAX_REQUEST) {
      this.#request.push(cmd.data);
      this.#requestBytes += cmd.data.length;
    }
    if (!last) return;
    this.#inPay = false;
    try {
      const all = new Uint8Array(this.#requestBytes);
      let at = 0;
      for (const part of this.#request) {
        all.set(part, at);
        at += part.length;
      }
      this.lastNonce = toHex(openSigned('PaymentRequest', all).message.nonce);
    } catch {
      this.lastNonce = undefined;
    }
    const hook = this.beforeLastPay;
    this.beforeLastPay = undefined;
    if (hook) await hook();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}

/** What the suite reads off the card for the sums. */
interface CardFacts {
  readonly balance: number;
  readonly counter: number;
  readonly offlineCount: number;
  readonly offlineTotal: number;
}

/** Tools a money case body gets. */
interface CaseTools {
  readonly c: CaseApi;
  readonly lab: LabTerminal;
  readonly watch: PayWatch;
  /** One tap of the lab amount through the watcher. */
  tap(label: string, signal?: AbortSignal): Promise<TapOutcome>;
  /** Taps until the card answers SELECT (it may still be coming back from a cut): at most a few tries. */
  tapSettled(label: string): Promise<TapOutcome>;
  /** Records a transfer the card signed for a tap the terminal did not approve (proved by the card's lastNonce). */
  orphan(amount: number, nonce: string): void;
  /** The card's GET STATUS lastNonce (hex), through a fresh session. */
  lastNonce(): Promise<string | undefined>;
}

/** The robustness suite. */
export const robustness: LabSuite = {
  name: 'robustness',
  description:
    "card removed mid-PAY (after and before signing), power cut during the card's commit write (torn), reset between commands, reader unplugged mid-tap, corrupted answer, slow card: clean outcomes, recovery, and value conserved",
  async run(ctx, cases) {
    const amount = ctx.options.amount;
    const control = ctx.control;
    const watch = new PayWatch(ctx.reader);
    let lab: LabTerminal | undefined;
    let labTried = false;
    const terminal = (): LabTerminal | undefined => {
      if (!labTried) {
        labTried = true;
        lab = ctx.terminal();
      }
      return lab;
    };

    /** Runs `f` on a fresh session; communication failures (card still coming back) are retried a few times. */
    const withSession = async <T>(f: (s: CardSession) => Promise<T>): Promise<T> => {
      let last: unknown;
      for (let attempt = 0; attempt < 4; attempt++) {
        let s: CardSession | undefined;
        try {
          s = await ctx.openSession();
          return await f(s);
        } catch (e) {
          if (!isCommunicationError(e) || ctx.signal.aborted) throw e;
          last = e;
        } finally {
          await s?.release().catch(() => undefined);
        }
        await sleep(300, ctx.signal);
      }
      throw last;
    };

    let limits: { offlineCount: number; offlineTotal: number } | undefined;
    let suiteStart: { balance: number; approvedBefore: number } | undefined;
    const approvedSoFar = (t: LabTerminal): number => t.journal.listPayments().reduce((sum, p) => sum + p.amount, 0);
    const cardFacts = async (): Promise<CardFacts> => {
      if (control) {
        const s = await control.status();
        return { balance: s.balance, counter: s.counter, offlineCount: s.offlineCount, offlineTotal: s.offlineTotal };
      }
      return withSession(async (s) => {
        await selectApplet(s);
        const st = await getStatus(s);
        return { balance: st.balance, counter: st.counter, offlineCount: st.offlineCount, offlineTotal: st.offlineValue };
      });
    };
    const readLimits = async (): Promise<{ offlineCount: number; offlineTotal: number } | undefined> => {
      if (limits) return limits;
      const st = await withSession(async (s) => {
        await selectApplet(s);
        return getStatus(s);
      });
      if (st.limits) limits = { offlineCount: st.limits.offlineCount, offlineTotal: st.limits.offlineTotal };
      return limits;
    };
    const lastNonce = async (): Promise<string | undefined> =>
      withSession(async (s) => {
        await selectApplet(s);
        const st = await getStatus(s);
        return st.lastNonce ? toHex(st.lastNonce) : undefined;
      });

    /**
     * A case that takes payments: skips without terminal or control (when
     * needed), checks the card can pay, runs the body, disarms, makes a
     * final tap and checks the sums.
     */
    const moneyCase = (name: string, description: string, needsControl: boolean, body: (t: CaseTools) => Promise<void>): Promise<void> =>
      cases.case(name, description, async (c) => {
        const labTerminal = terminal();
        if (!labTerminal) c.skip(ctx.terminalMissing ?? 'no lab terminal');
        if (needsControl && !control) c.skip(NEEDS_CONTROL);
        const lab = labTerminal!;
        let before = await cardFacts();
        const lim = await readLimits();
        if (
          lim &&
          (before.offlineCount + CASE_PAYMENTS > lim.offlineCount || before.offlineTotal + CASE_PAYMENTS * amount > lim.offlineTotal)
        ) {
          const used = `${before.offlineCount} of ${lim.offlineCount} payments, ${formatTenge(before.offlineTotal)} of ${formatTenge(lim.offlineTotal)} since its last sync`;
          if (!ctx.ledgerUrl)
            c.skip(`the card's offline limits are nearly used up (${used}): give --ledger <url> so that the lab can sync it`);
          // Before the case's sums start: the sync itself moves no value on a normal card.
          ctx.progress(`syncing the card through the ledger (${used})`);
          const res = await withSession(async (s) => {
            await selectApplet(s);
            return syncCard(s, ctx.ledgerUrl!, { signal: ctx.signal });
          });
          if (!res.ok)
            c.fail(
              `the card's offline limits are nearly used up (${used}) and the ledger refused its sync: ${res.code}${res.message ? ` (${res.message})` : ''}`,
            );
          c.details.syncedFirst = true;
          before = await cardFacts();
        }
        suiteStart ??= { balance: before.balance, approvedBefore: approvedSoFar(lab) };
        if (before.balance < CASE_PAYMENTS * amount) {
          // A card loaded for the whole suite cannot run out legitimately: its value vanished.
          if (suiteStart.balance >= MONEY_CASES * CASE_PAYMENTS * amount) {
            c.fail(
              `the card holds ${formatTenge(before.balance)}, down from ${formatTenge(suiteStart.balance)} at the start of the suite, while the lab approved ${formatTenge(approvedSoFar(lab) - suiteStart.approvedBefore)}: value vanished`,
            );
          }
          c.skip(
            `the card holds ${formatTenge(before.balance)}, less than the ${CASE_PAYMENTS} taps of ${formatTenge(amount)} this case needs: load it first`,
          );
        }
        const firstId = lab.journal.listPayments().at(-1)?.id ?? 0;
        const orphans: { amount: number; nonce: string }[] = [];
        let newApprovals = 0;
        const taps: string[] = [];
        const tap = async (label: string, signal?: AbortSignal): Promise<TapOutcome> => {
          watch.newTap();
          const sig = signal ? AbortSignal.any([ctx.signal, signal]) : ctx.signal;
          const o = await lab.kernel.charge(watch, amount, { signal: sig });
          if (o.kind === 'APPROVED' && !o.alreadyRecorded) newApprovals++;
          taps.push(`${label}: ${describeOutcome(o)}`);
          ctx.progress(`${label}: ${describeOutcome(o)}`);
          return o;
        };
        const tapSettled = async (label: string): Promise<TapOutcome> => {
          for (let i = 1; ; i++) {
            const o = await tap(i === 1 ? label : `${label} (again ${i})`);
            // A card still coming back from a cut can fail SELECT: nothing was paid, tap again.
            const early =
              !watch.reachedPay &&
              (o.kind === 'PRESENT_CARD_AGAIN' || (o.kind === 'END' && (o.reason === 'READER' || o.reason === 'NO_CARD')));
            if (!early || i >= 4 || ctx.signal.aborted) return o;
            await sleep(300, ctx.signal);
          }
        };
        const tools: CaseTools = {
          c,
          lab,
          watch,
          tap,
          tapSettled,
          lastNonce,
          orphan: (a, nonce) => orphans.push({ amount: a, nonce }),
        };
        try {
          await body(tools);
        } finally {
          watch.beforeFirstPay = undefined;
          watch.beforeLastPay = undefined;
          if (control) {
            await control.disarm().catch(() => undefined);
            const st = await control.status().catch(() => undefined);
            if (st && !st.inReader) await control.insert().catch(() => undefined);
          }
          c.details.taps = taps;
        }

        // The card works afterwards.
        const final = await tapSettled('final tap');
        c.expect('the card works afterwards: final tap', final.kind, 'APPROVED');

        // The sums over the case.
        const after = await cardFacts();
        const payments = lab.journal.listPayments({ afterId: firstId });
        const approved = payments.reduce((s, p) => s + p.amount, 0);
        const orphaned = orphans.reduce((s, o) => s + o.amount, 0);
        c.details.sums = {
          balanceBefore: before.balance,
          balanceAfter: after.balance,
          approved,
          payments: payments.length,
          orphaned,
          orphans: orphans.map((o) => o.nonce),
          counterBefore: before.counter,
          counterAfter: after.counter,
        };
        c.expect(
          'card balance drop (before - after) = value approved in the lab journal + proven orphans',
          before.balance - after.balance,
          approved + orphaned,
        );
        c.expect(
          'card counter advance = transfers approved + proven orphans',
          after.counter - before.counter,
          payments.length + orphans.length,
        );
        c.expect('new approvals reported by the kernel = payments in the journal (nothing approved twice)', newApprovals, payments.length);
        checkNoDuplicates(c, lab.journal.listPayments());
      });

    // ------------------------------------------------------------ cases

    await moneyCase(
      'removed-after-signing',
      'power cut right after the card ran the last PAY block (signed, answer lost): PRESENT_CARD_AGAIN, then the retry recovers the same transfer (retryOf), paid once',
      true,
      async (t) => {
        t.watch.beforeLastPay = () => control!.arm({ cutAfterApdu: { index: 1 } });
        const first = await t.tap('cut after signing');
        const nonce = t.watch.lastNonce;
        await expectFired(t.c, control!, 'cut-after-apdu');
        t.c.expect('outcome when the answer is lost', first.kind, 'PRESENT_CARD_AGAIN');
        if (first.kind === 'PRESENT_CARD_AGAIN') t.c.expect('torn attempt named by the kernel', first.tornAttempt, nonce);
        const retry = await t.tapSettled('retry');
        t.c.expect('retry outcome', retry.kind, 'APPROVED');
        if (retry.kind !== 'APPROVED') return;
        t.c.expect('retry recovered the signed transfer (retryOf)', retry.recovered, true);
        t.c.expect('recovered transfer answers the interrupted request', toHex(retry.payment.nonce), nonce);
      },
    );

    await moneyCase(
      'removed-before-signing',
      'power cut when the last PAY block arrives, before the card runs it: PRESENT_CARD_AGAIN, then the retry pays once with a fresh signature',
      true,
      async (t) => {
        t.watch.beforeLastPay = () => control!.arm({ cutBeforeApdu: { index: 1 } });
        const first = await t.tap('cut before signing');
        const nonce = t.watch.lastNonce;
        await expectFired(t.c, control!, 'cut-before-apdu');
        t.c.expect('outcome when the card lost power before signing', first.kind, 'PRESENT_CARD_AGAIN');
        const retry = await t.tapSettled('retry');
        t.c.expect('retry outcome', retry.kind, 'APPROVED');
        if (retry.kind !== 'APPROVED') return;
        t.c.expect('retry is a fresh transfer (the card never signed the first request)', retry.recovered, false);
        t.c.check(toHex(retry.payment.nonce) !== nonce, 'the retry transfer answers a new request');
      },
    );

    const writeCuts: [string, FaultPlan, string][] = [
      ['power-cut-pay-write', { cutAtWrite: 1 }, 'the commit write of PAY does not happen'],
      ['power-cut-pay-write-torn', { cutAtWrite: 1, torn: true }, 'the commit write of PAY is torn at a random length'],
      ['power-cut-pay-write-torn-prefix', { cutAtWrite: 1, torn: 8 }, 'the commit write of PAY is torn after 8 bytes'],
    ];
    for (const [name, plan, what] of writeCuts) {
      await moneyCase(
        name,
        `power cut during the card's own write: ${what}; the card recovers at power-up, the retry completes, paid once`,
        true,
        async (t) => {
          t.watch.beforeLastPay = () => control!.arm(plan);
          const first = await t.tap('cut during the commit write');
          await expectFired(t.c, control!, 'cut-at-write');
          t.c.details.cut = (await control!.events()).at(-1)?.where;
          t.c.expect('outcome of the cut tap', first.kind, 'PRESENT_CARD_AGAIN');
          const retry = await t.tapSettled('retry');
          t.c.expect('retry outcome', retry.kind, 'APPROVED');
          if (retry.kind === 'APPROVED') t.c.details.recovered = retry.recovered;
        },
      );
    }

    await cases.case(
      'reset-between-commands',
      'the card leaves the field and comes back between SELECT and the next command: the applet answers 6986 until selected again, and its state is intact',
      async (c) => {
        if (!control && !ctx.options.interactive) c.skip(NEEDS_CONTROL);
        const status = (s: CardSession) => s.transmit(encodeCommand(getStatusCommand()));
        const before = await withSession(async (s) => {
          await selectApplet(s);
          return getStatus(s);
        });
        if (control) {
          await control.remove();
          await control.insert();
        } else {
          await operatorRemoveInsert(ctx, watch);
        }
        // The first command after the reset, without SELECT.
        let sw: number | undefined;
        const until = Date.now() + ctx.options.cardTimeoutMs;
        const seen: string[] = [];
        while (sw === undefined && Date.now() < until && !ctx.signal.aborted) {
          let s: CardSession | undefined;
          try {
            s = await ctx.openSession();
            sw = decodeResponse(await status(s)).sw;
          } catch (e) {
            // Still out, or a handle from before the reset: try again.
            seen.push(e instanceof Error ? e.message.slice(0, 80) : String(e));
            await sleep(200, ctx.signal);
          } finally {
            await s?.release().catch(() => undefined);
          }
        }
        c.details.retries = seen.length;
        if (sw === undefined)
          c.fail(`the card did not answer after the reset within ${ctx.options.cardTimeoutMs} ms (${seen.at(-1) ?? 'no answer'})`);
        c.expect('GET STATUS right after the reset, not selected (SW)', sw, SW.COMMAND_NOT_ALLOWED, true);
        const after = await withSession(async (s) => {
          await selectApplet(s);
          return getStatus(s);
        });
        c.details.counter = after.counter;
        c.details.balance = after.balance;
        c.expect('counter kept across the reset', after.counter, before.counter);
        c.expect('balance kept across the reset', after.balance, before.balance);
        c.expect('offline count kept across the reset', after.offlineCount, before.offlineCount);
      },
    );

    const unpluggedNeedsControl = !ctx.options.interactive;
    await moneyCase(
      'reader-unplugged-mid-tap',
      'the card is taken away when PAY starts and stays away: a clean outcome, a tap without the card ends cleanly, and after reinsertion the next tap works',
      unpluggedNeedsControl,
      async (t) => {
        if (control) {
          t.watch.beforeFirstPay = () => control.remove();
          const cut = await t.tap('card taken away at PAY');
          t.c.check(
            cut.kind === 'PRESENT_CARD_AGAIN' || cut.kind === 'END',
            `a clean outcome when the card goes away mid-tap, got ${describeOutcome(cut)}`,
          );
          t.c.expect('card in the reader after the removal', (await control.status()).inReader, false);
        } else {
          prompt(ctx, 'REMOVE the card from the reader now (robustness: reader-unplugged-mid-tap)');
        }
        await waitRemoved(ctx, ctx.reader);
        // No card at all: the tap ends cleanly when told to stop (END), or, when the reader has not
        // yet noticed the card is gone, at SELECT without starting a payment. Never a hang or a throw.
        const absent = await t.tap('tap with no card', AbortSignal.timeout(1000));
        t.c.check(
          absent.kind === 'END' || (absent.kind === 'PRESENT_CARD_AGAIN' && !t.watch.reachedPay),
          `a tap with no card ends before any payment (END), got ${describeOutcome(absent)}${t.watch.reachedPay ? ' after PAY was sent' : ''}`,
        );
        if (control) await control.insert();
        else prompt(ctx, 'put the card BACK on the reader now');
        const next = await t.tapSettled('after reinsertion');
        t.c.expect('tap after reinsertion', next.kind, 'APPROVED');
      },
    );

    await moneyCase(
      'corrupted-answer',
      "one byte of the card's PAY answer flipped: never approved on a damaged answer; PRESENT_CARD_AGAIN and the retry recovers it, or DECLINED (fail closed) with the signed transfer left as an orphan for the ledger",
      true,
      async (t) => {
        t.watch.beforeLastPay = () => control!.arm({ corruptFrame: 1 });
        const first = await t.tap('corrupted answer');
        const nonce = t.watch.lastNonce;
        await expectFired(t.c, control!, 'corrupt-frame');
        t.c.details.corruption = (await control!.events()).at(-1)?.where;
        await control!.disarm();
        if (first.kind === 'PRESENT_CARD_AGAIN') {
          t.c.details.path = 'present-card-again';
          const retry = await t.tapSettled('retry');
          t.c.expect('retry outcome', retry.kind, 'APPROVED');
          if (retry.kind === 'APPROVED' && first.reason === 'DAMAGED_ANSWER')
            t.c.expect('the retry recovered the signed transfer', retry.recovered, true);
        } else if (first.kind === 'DECLINED') {
          // The terminal cannot tell a damaged signature from a forged one: it refuses (fail closed).
          // The card did sign: its last transfer answers this request. The ledger voids that orphan
          // at the card's next sync and gives its value back.
          t.c.details.path = `declined ${first.reason}`;
          const last = await t.lastNonce();
          if (nonce !== undefined && last === nonce) t.orphan(amount, nonce);
          t.c.details.cardSigned = last === nonce;
        } else if (first.kind === 'APPROVED') {
          // Only when the flipped byte did not change the handover (a status word byte the chain tolerates).
          t.c.details.path = 'approved (damage did not reach the handover)';
        } else {
          t.c.fail(`unexpected outcome on a corrupted answer: ${describeOutcome(first)}`);
        }
      },
    );

    await moneyCase(
      'slow-card',
      `every answer of the card delayed by ${SLOW_CARD_DELAY_MS} ms (well under the tap timeout): still APPROVED`,
      true,
      async (t) => {
        await control!.arm({ delayMs: SLOW_CARD_DELAY_MS });
        const o = await t.tap('slow card');
        await control!.disarm();
        t.c.expect('slow card outcome', o.kind, 'APPROVED');
      },
    );

    return {};
  },
};

/** Fails the case unless a fault of `kind` fired (the newest event). */
async function expectFired(c: CaseApi, control: NonNullable<LabContext['control']>, kind: string): Promise<void> {
  const last = (await control.events()).at(-1);
  c.check(
    last !== undefined && last.kind === kind,
    `the planned fault (${kind}) did not fire${last ? `; the last fault was ${last.kind}` : ''}`,
  );
}

/** Nothing approved twice: one payment per transfer, per (card, counter). */
function checkNoDuplicates(c: CaseApi, payments: readonly PaymentRecord[]): void {
  const hashes = new Set<string>();
  const counters = new Set<string>();
  for (const p of payments) {
    const h = toHex(p.transferHash);
    const k = `${toHex(p.card)}:${p.counter}`;
    c.check(!hashes.has(h), `transfer ${h.slice(0, 16)}… approved twice`);
    c.check(!counters.has(k), `card counter ${p.counter} approved twice`);
    hashes.add(h);
    counters.add(k);
  }
}

/** A line for the operator (stderr: stdout may carry a report). */
function prompt(ctx: LabContext, text: string): void {
  process.stderr.write(`\n>>> ${text}\n`);
  ctx.progress(text);
}

/** Time the operator gets for each hand action. */
const OPERATOR_MS = 60_000;

/** Waits until the card is out of the reader (a session cannot be opened, or its SELECT fails). */
async function waitRemoved(ctx: LabContext, reader: CardReader): Promise<void> {
  const until = Date.now() + OPERATOR_MS;
  while (Date.now() < until && !ctx.signal.aborted) {
    let s: CardSession | undefined;
    try {
      s = await reader.waitForCard({ timeoutMs: 300, signal: ctx.signal });
    } catch {
      return;
    }
    try {
      await s.transmit(encodeCommand(selectCommand()));
    } catch {
      return;
    } finally {
      await s.release().catch(() => undefined);
    }
    await sleep(300, ctx.signal);
  }
  throw new Error(`the card was not removed within ${OPERATOR_MS / 1000} s`);
}

/** Operator: take the card out, put it back (reader events detect both). */
async function operatorRemoveInsert(ctx: LabContext, reader: CardReader): Promise<void> {
  prompt(ctx, 'REMOVE the card from the reader now (robustness: reset-between-commands)');
  await waitRemoved(ctx, reader);
  prompt(ctx, 'put the card BACK on the reader now');
  const s = await reader.waitForCard({ timeoutMs: OPERATOR_MS, signal: ctx.signal });
  await s.release();
}
