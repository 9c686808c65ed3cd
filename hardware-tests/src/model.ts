/**
 * The result model of a lab run: what the suites produce and what every
 * report (JUnit XML, JSON, HTML) is rendered from. The JSON report is this
 * object as it is (`LabRun`), so its field names are a public format:
 * add fields, never rename them.
 *
 * @module
 */

/** Outcome of one test case. `error` means the case could not run to a verdict (reader gone, unexpected exception). */
export type CaseStatus = 'passed' | 'failed' | 'skipped' | 'error';

/** The suites `dt-lab run` knows, in their default order. */
export const SUITE_NAMES = ['conformance', 'robustness', 'timing', 'endurance'] as const;
export type SuiteName = (typeof SUITE_NAMES)[number];

/** The phases of one tap that the timing suite and the benchmark measure. */
export const PHASES = ['select', 'request', 'cardSigning', 'verification', 'journalCommit', 'total'] as const;
export type Phase = (typeof PHASES)[number];

/** What each phase covers (shown in reports). */
export const PHASE_DESCRIPTIONS: Record<Phase, string> = {
  select: 'SELECT of the DT applet: command out, answer back (through the reader)',
  request: 'building, signing and journalling the PaymentRequest (terminal CPU + SQLite)',
  cardSigning: 'the PAY command: the card validates the request and signs the transfer (incl. chaining and GET RESPONSE)',
  verification: 'the terminal validates the handover: certificate chain, tokens, transfer signature',
  journalCommit: 'the durable journal commit before APPROVED (SQLite, synchronous=FULL)',
  total: 'card detected to outcome (tap-to-outcome)',
};

/** Latency statistics of one phase, in milliseconds. */
export interface PhaseStats {
  readonly n: number;
  readonly min: number;
  readonly max: number;
  readonly mean: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  /** Every sample in tap order (the HTML report draws histograms from these). */
  readonly samples: readonly number[];
}

/** One test case. */
export interface CaseResult {
  readonly suite: SuiteName | 'replay';
  /** Stable case id within its suite, kebab-case, e.g. `select-wrong-aid`. */
  readonly name: string;
  /** One line: what the case checks. */
  readonly description: string;
  readonly status: CaseStatus;
  readonly durationMs: number;
  /** Why it failed, errored or was skipped (never contains keys, PINs or card secrets). */
  readonly message?: string;
  /** Case-specific facts (SWs seen, amounts, counters), JSON-safe. */
  readonly details?: Record<string, unknown>;
  /** Path of the APDU transcript of this case, relative to the report directory. */
  readonly transcript?: string;
}

/** Timing suite figures. */
export interface TimingResult {
  readonly taps: number;
  readonly approved: number;
  readonly amount: number;
  readonly phases: Record<Phase, PhaseStats>;
  /** Card syncs made during the run because the card's offline limits were reached (not timed). */
  readonly syncs?: number;
  /** Taps by outcome (`APPROVED`, `ONLINE_REQUIRED/CARD_LIMITS`, ...). */
  readonly outcomes?: Record<string, number>;
  /** Why fewer than `taps` taps were approved, when that happened. */
  readonly stoppedEarly?: string;
}

/** Endurance suite figures. */
export interface EnduranceResult {
  readonly rounds: readonly {
    readonly round: number;
    /** Approved offline payments before the card's limits stopped it. */
    readonly payments: number;
    readonly paid: number;
    /** The outcome that ended the round (e.g. ONLINE_REQUIRED/CARD_LIMITS). */
    readonly stoppedBy: string;
    /** Sync result: `synced`, or why not. */
    readonly sync: string;
    readonly balanceBefore: number;
    readonly balanceAfter: number;
  }[];
}

/** One suite's results. */
export interface SuiteResult {
  readonly name: SuiteName | 'replay';
  readonly startedAt: string;
  readonly durationMs: number;
  readonly cases: readonly CaseResult[];
  readonly timing?: TimingResult;
  readonly endurance?: EnduranceResult;
}

/** Counts by status. */
export interface Summary {
  readonly total: number;
  readonly passed: number;
  readonly failed: number;
  readonly skipped: number;
  readonly errors: number;
}

/** A whole `dt-lab run` (the JSON report). */
export interface LabRun {
  readonly format: 'dt-lab-report';
  readonly version: 1;
  readonly tool: { readonly name: 'dt-lab'; readonly version: string };
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly host: { readonly hostname: string; readonly platform: string; readonly node: string; readonly cpus: string };
  readonly reader: { readonly name: string; readonly atr?: string };
  /** Facts the card told about itself (SELECT/GET STATUS), never secrets. */
  readonly card?: Record<string, unknown>;
  /** The options the run used (suites, taps, amount, rounds…). */
  readonly options: Record<string, unknown>;
  readonly suites: readonly SuiteResult[];
  readonly summary: Summary;
}

/** Counts the statuses of `cases`. */
export function summarize(cases: readonly CaseResult[]): Summary {
  const s = { total: cases.length, passed: 0, failed: 0, skipped: 0, errors: 0 };
  for (const c of cases) {
    if (c.status === 'passed') s.passed++;
    else if (c.status === 'failed') s.failed++;
    else if (c.status === 'skipped') s.skipped++;
    else s.errors++;
  }
  return s;
}
