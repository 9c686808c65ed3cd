/**
 * Tap latency measurement: runs real taps through a lab terminal's
 * {@link PaymentKernel} and splits each approved tap into the phases of
 * {@link PHASES}, from two sources that need no change to the kernel:
 *
 * - the reader: the kernel's {@link CardReader} is wrapped, so every APDU
 *   of the tap is timed at the transport (command out -> answer in) and
 *   classified by its INS (a GET RESPONSE belongs to the command before it);
 * - the kernel's progress callback: `CARD_DETECTED`, `VALIDATING`,
 *   `COMMITTING` (see terminal/src/kernel/kernel.ts for their order), and the
 *   session release, which the kernel calls right after the outcome is
 *   decided (after the durable journal commit).
 *
 * ```text
 * CARD_DETECTED  SELECT out..in   (request)   PAY out .. last GET RESPONSE in   VALIDATING .. COMMITTING .. release   charge() returns
 *      |<-select (APDU time)->|<-request->|<--------- cardSigning ---------->|   |<-verification->|<-journalCommit->|
 *      |<------------------------------------------- total --------------------------------------------------------------->|
 * ```
 *
 * Only APPROVED taps are samples. When the card's offline limits stop it
 * (ONLINE_REQUIRED / CARD_LIMITS), the card is synced against the ledger
 * (outside the measured time) and the tap is repeated; without a ledger the
 * run stops early and says why.
 *
 * @module
 */
import { performance } from 'node:perf_hooks';
import { MAX_SELECT_ANSWER, identifyCommand, selectCommand, transmitOk, type CardCommandName, type TransmitOptions } from '@dt/protocol';
import { syncCard, type CardReader, type CardSession, type TapOutcome, type WaitOptions } from '@dt/terminal';
import { PHASES, type Phase, type PhaseStats, type TimingResult } from './model.ts';
import { phaseStats } from './stats.ts';
import type { LabTerminal } from './suite.ts';

/** One APDU as the timing wrapper saw it. */
interface TimedApdu {
  /** Which command it was (the protocol's command table), undefined for anything else. */
  readonly command: CardCommandName | undefined;
  readonly start: number;
  end: number;
}

/** Timestamps of one tap (performance.now() ms). */
interface TapTrace {
  detected?: number;
  validating?: number;
  committing?: number;
  released?: number;
  readonly apdus: TimedApdu[];
}

/** Options of {@link timeTaps}. */
export interface TimeTapsOptions {
  /** The reader the card is on (the lab's recorded reader: the APDUs still go into the transcript). */
  readonly reader: CardReader;
  readonly terminal: LabTerminal;
  /** Approved taps wanted. */
  readonly taps: number;
  /** Amount of every tap, in tiyn. */
  readonly amount: number;
  readonly signal?: AbortSignal;
  /** Ledger base URL: when the card's offline limits are reached it is synced there; without it the run stops early. */
  readonly ledgerUrl?: string;
  /** Time to wait for the card before a sync, ms (default 10 000). */
  readonly cardTimeoutMs?: number;
  /**
   * Called after every tap with its outcome and phases (ms). Phases a tap did
   * not reach are NaN. `i` counts taps from 0, syncs excluded.
   */
  readonly onTap?: (i: number, outcome: TapOutcome, phases: Record<Phase, number>) => void;
  /** Called after each card sync (`n` counts from 1). */
  readonly onSync?: (n: number) => void;
}

/** Result of {@link timeTaps}: the figures, plus why the run stopped before `taps` approvals, if it did. */
export type TimeTapsResult = TimingResult & {
  /** Why fewer than the requested taps were approved (outcome and detail, or the sync failure). */
  readonly stoppedEarly?: string;
  /** Card syncs made because the card's offline limits were reached. */
  readonly syncs: number;
  /** Taps by outcome (`APPROVED`, `ONLINE_REQUIRED/CARD_LIMITS`, ...). */
  readonly outcomes: Record<string, number>;
};

/** A short, non-secret description of an outcome (kind/reason: detail). */
export function describeOutcome(o: TapOutcome): string {
  if (o.kind === 'APPROVED') return 'APPROVED';
  const detail = 'detail' in o && o.detail ? `: ${o.detail}` : '';
  return `${o.kind}/${o.reason}${detail}`;
}

const isSelect = (a: TimedApdu): boolean => a.command === 'SELECT';
const isPay = (a: TimedApdu): boolean => a.command === 'PAY';

/**
 * The phases of one traced tap. Throws when the trace lacks a step an
 * approved tap must have passed (a kernel that changed its progress states
 * would otherwise yield silent garbage).
 */
function phasesOf(trace: TapTrace, outcomeAt: number): Record<Phase, number> {
  const out = Object.fromEntries(PHASES.map((p) => [p, Number.NaN])) as Record<Phase, number>;
  const { detected, validating, committing, released } = trace;
  if (detected === undefined) return out;
  out.total = outcomeAt - detected;
  // A GET RESPONSE belongs to the command it continues.
  const group: ('select' | 'pay' | 'other')[] = [];
  trace.apdus.forEach((a, i) => {
    if (a.command === 'GET_RESPONSE' && i > 0) group.push(group[i - 1]!);
    else group.push(isSelect(a) ? 'select' : isPay(a) ? 'pay' : 'other');
  });
  const sel = trace.apdus.filter((_, i) => group[i] === 'select');
  const pay = trace.apdus.filter((_, i) => group[i] === 'pay' && (validating === undefined || trace.apdus[i]!.end <= validating));
  if (sel.length > 0) out.select = sel.reduce((s, a) => s + (a.end - a.start), 0);
  if (sel.length > 0 && pay.length > 0) {
    const selectEnd = Math.max(...sel.map((a) => a.end));
    const payStart = Math.min(...pay.map((a) => a.start));
    const payEnd = Math.max(...pay.map((a) => a.end));
    out.request = payStart - selectEnd;
    out.cardSigning = payEnd - payStart;
  }
  if (validating !== undefined && committing !== undefined) out.verification = committing - validating;
  if (committing !== undefined) out.journalCommit = (released ?? outcomeAt) - committing;
  return out;
}

/**
 * Wraps `reader` so that the sessions it hands out time every APDU into the
 * trace returned by `current()` and stamp their release.
 */
function timedReader(reader: CardReader, current: () => TapTrace | undefined): CardReader {
  const wrap = (s: CardSession): CardSession => ({
    reader: s.reader,
    ...(s.atr ? { atr: s.atr } : {}),
    async transmit(apdu: Uint8Array, o?: TransmitOptions): Promise<Uint8Array> {
      const trace = current();
      const rec: TimedApdu = { command: identifyCommand(apdu), start: performance.now(), end: Number.NaN };
      try {
        return await s.transmit(apdu, o);
      } finally {
        rec.end = performance.now();
        trace?.apdus.push(rec);
      }
    },
    async release(): Promise<void> {
      const trace = current();
      if (trace && trace.released === undefined) trace.released = performance.now();
      await s.release();
    },
  });
  return {
    get name() {
      return reader.name;
    },
    async waitForCard(o?: WaitOptions): Promise<CardSession> {
      return wrap(await reader.waitForCard(o));
    },
    close: () => reader.close(),
  };
}

/**
 * Runs taps of `amount` on the card in `reader` until `taps` are approved
 * (or something stops it) and returns per-phase latency statistics over the
 * approved taps. Never throws for tap outcomes: a non-approved outcome other
 * than the card's offline limits ends the run with `stoppedEarly` set.
 * Throws for bad options and unexpected errors (reader gone during a sync).
 */
export async function timeTaps(opts: TimeTapsOptions): Promise<TimeTapsResult> {
  const { terminal, taps, amount, signal } = opts;
  if (!Number.isSafeInteger(taps) || taps < 1) throw new RangeError(`taps must be a positive integer, got ${taps}`);
  if (!Number.isSafeInteger(amount) || amount < 1) throw new RangeError(`amount must be a positive integer (tiyn), got ${amount}`);
  let trace: TapTrace | undefined;
  const reader = timedReader(opts.reader, () => trace);
  const samples = Object.fromEntries(PHASES.map((p) => [p, [] as number[]])) as Record<Phase, number[]>;
  const outcomes: Record<string, number> = {};
  let approved = 0;
  let attempts = 0;
  let syncs = 0;
  let stoppedEarly: string | undefined;
  // A CARD_LIMITS answer right after a sync means the sync did not help (e.g. the balance is below the amount).
  let justSynced = false;

  while (approved < taps) {
    if (signal?.aborted) {
      stoppedEarly = `interrupted (Ctrl-C) after ${approved} approved taps`;
      break;
    }
    trace = { apdus: [] };
    const t = trace;
    const outcome = await terminal.kernel.charge(reader, amount, {
      ...(signal ? { signal } : {}),
      onProgress(state) {
        const now = performance.now();
        if (state === 'CARD_DETECTED') t.detected = now;
        else if (state === 'VALIDATING') t.validating = now;
        else if (state === 'COMMITTING') t.committing = now;
      },
    });
    const outcomeAt = performance.now();
    trace = undefined;
    const i = attempts++;
    const key = outcome.kind === 'APPROVED' ? 'APPROVED' : `${outcome.kind}/${outcome.reason}`;
    outcomes[key] = (outcomes[key] ?? 0) + 1;
    const phases = phasesOf(t, outcomeAt);
    opts.onTap?.(i, outcome, phases);
    if (outcome.kind === 'APPROVED') {
      const missing = PHASES.filter((p) => !Number.isFinite(phases[p]) || phases[p] < 0);
      if (missing.length > 0)
        throw new Error(
          `approved tap ${i} without a measurable ${missing.join(', ')} phase: the kernel's progress states or APDUs changed`,
        );
      for (const p of PHASES) samples[p].push(phases[p]);
      approved++;
      justSynced = false;
      continue;
    }
    if (outcome.kind === 'ONLINE_REQUIRED' && outcome.reason === 'CARD_LIMITS') {
      if (opts.ledgerUrl === undefined) {
        stoppedEarly = `the card's offline limits were reached after ${approved} approved taps (ONLINE_REQUIRED/CARD_LIMITS) and no ledger was given to sync it`;
        break;
      }
      if (justSynced) {
        stoppedEarly = `the card refuses to pay ${amount} even right after a sync (ONLINE_REQUIRED/CARD_LIMITS): its balance is too low or its per-payment limit too small`;
        break;
      }
      const r = await syncOnReader(opts.reader, opts.ledgerUrl, signal, opts.cardTimeoutMs ?? 10_000);
      if (!r.ok) {
        stoppedEarly = `card sync refused by the ledger: HTTP ${r.status} ${r.code}${r.message ? ` (${r.message})` : ''}`;
        break;
      }
      syncs++;
      justSynced = true;
      opts.onSync?.(syncs);
      continue;
    }
    // A tap the signal cut short (Ctrl-C) is the interruption, not the card's outcome.
    stoppedEarly = signal?.aborted
      ? `interrupted (Ctrl-C) after ${approved} approved taps`
      : `tap ${i} ended ${describeOutcome(outcome)} after ${approved} approved taps`;
    break;
  }
  const phases = Object.fromEntries(PHASES.map((p) => [p, phaseStats(samples[p])])) as Record<Phase, PhaseStats>;
  return { taps, approved, amount, phases, syncs, outcomes, ...(stoppedEarly !== undefined ? { stoppedEarly } : {}) };
}

/** SELECT + SYNC on a session of `reader` (the card stays where it is). */
async function syncOnReader(reader: CardReader, ledgerUrl: string, signal: AbortSignal | undefined, timeoutMs: number) {
  const session = await reader.waitForCard({ ...(signal ? { signal } : {}), timeoutMs });
  try {
    await transmitOk(session, selectCommand(), { ...(signal ? { signal } : {}), maxResponse: MAX_SELECT_ANSWER });
    return await syncCard(session, ledgerUrl, signal ? { signal } : {});
  } finally {
    await session.release();
  }
}
