/**
 * The API between the lab runner and its suites. A suite is a function that
 * runs its cases through a {@link CaseRunner}; the runner times each case,
 * records its APDU transcript, catches its verdict and shows progress.
 *
 * ```ts
 * export const conformance: LabSuite = {
 *   name: 'conformance',
 *   description: 'every command, every status word, chaining, malformed APDUs',
 *   async run(ctx, cases) {
 *     await cases.case('select-dt-applet', 'SELECT by AID answers 9000 with the applet map', async (c) => {
 *       const s = await ctx.openSession();
 *       try { ... c.expect(...); } finally { await s.release(); }
 *     });
 *     return {};
 *   },
 * };
 * ```
 *
 * @module
 */
import type { CardControlClient, CardControlStatus } from '@dt/card-applet-sim';
import type { CardReader, CardSession, Journal, PaymentKernel, TerminalIdentity } from '@dt/terminal';
import type { EnduranceResult, SuiteName, TimingResult } from './model.ts';

/** Options of a lab run that suites read. */
export interface LabOptions {
  /** Taps of the timing suite (default 200). */
  readonly taps: number;
  /** Amount of each timing/robustness tap, in tiyn (default 100 = 1 tenge). */
  readonly amount: number;
  /** Rounds of the endurance suite (default 2). */
  readonly rounds: number;
  /** Time to wait for a card in the reader, in ms (default 10 000). */
  readonly cardTimeoutMs: number;
  /** Operator present (a TTY): robustness cases that need a hand on the card prompt for it instead of skipping. */
  readonly interactive: boolean;
}

/** A lab terminal: the identity given to `dt-lab` with a fresh journal of its own (never the merchant's). */
export interface LabTerminal {
  readonly identity: TerminalIdentity;
  readonly journal: Journal;
  readonly kernel: PaymentKernel;
}

/**
 * The control channel of a simulated card served by `dt-card serve --control <socket>`
 * (`connectCardControl` of `@dt/card-applet-sim`): what a lab robot's hand
 * does to a real card (remove, reinsert) plus the simulator's fault
 * injection and a read of the card's state. Absent for real cards.
 */
export type CardControl = CardControlClient;
export type { CardControlStatus };

/** Everything a suite may use. */
export interface LabContext {
  /** The reader under test, by its PC/SC name (or `serial:`/`hid:` spec). */
  readonly readerName: string;
  /** The reader, wrapped so that every APDU goes into the current case's transcript (give it to a PaymentKernel). */
  readonly reader: CardReader;
  /** Waits for the card (up to `options.cardTimeoutMs`) and opens a recorded session; release it when done. */
  openSession(): Promise<CardSession>;
  /** A fresh lab terminal, or undefined when `dt-lab` was given no terminal identity (see `terminalMissing`). */
  terminal(): LabTerminal | undefined;
  /** Why there is no terminal (for skip messages). */
  readonly terminalMissing?: string;
  /** Ledger base URL for card SYNC (endurance), when given. */
  readonly ledgerUrl?: string;
  /** The card control channel, when the card is simulated and served with `--control`. */
  readonly control?: CardControl;
  readonly options: LabOptions;
  /** Aborted on Ctrl-C: suites stop at the next case boundary (or sooner). */
  readonly signal: AbortSignal;
  /** A line of progress (the runner adds the suite and case). */
  progress(message: string, done?: number, total?: number): void;
  /** A private temporary directory for this run (journals, scratch). */
  readonly workDir: string;
}

/** The verdict API inside a case. Throwing anything else makes the case an `error`. */
export interface CaseApi {
  /** Fails the case unless `actual === expected` (numbers: SWs are shown in hex when `hex` is set). */
  expect(what: string, actual: unknown, expected: unknown, hex?: boolean): void;
  /** Fails the case unless `cond`. */
  check(cond: boolean, message: string): void;
  /** Fails the case now. */
  fail(message: string): never;
  /** Ends the case as skipped (say why, and what would make it run). */
  skip(reason: string): never;
  /** Facts to keep in the report for this case (JSON-safe). */
  readonly details: Record<string, unknown>;
}

/** Runs and records cases for a suite. */
export interface CaseRunner {
  /** Runs one case (sequentially; its APDUs are recorded into its own transcript). */
  case(name: string, description: string, body: (c: CaseApi) => Promise<void>): Promise<void>;
}

/** A suite. */
export interface LabSuite {
  readonly name: SuiteName;
  readonly description: string;
  /** Runs the cases; may return the suite's figures. */
  run(ctx: LabContext, cases: CaseRunner): Promise<{ timing?: TimingResult; endurance?: EnduranceResult }>;
}
