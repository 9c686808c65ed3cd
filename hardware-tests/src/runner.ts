/**
 * The lab runner: runs suites in order through a {@link CaseRunner} that
 * times each case, records its transcript, turns its verdict into a
 * {@link CaseResult} and shows progress; builds the {@link LabRun}.
 *
 * Verdicts: `CaseApi.expect/check/fail` make a case `failed`, `skip` makes
 * it `skipped`, any other exception makes it `error` with a one-line message
 * (never a stack: stacks can carry data a case had in hand).
 *
 * @module
 */
import { hostname, cpus, platform } from 'node:os';
import { performance } from 'node:perf_hooks';
import { getCertificates, getStatus, selectApplet } from '@dt/protocol';
import { summarize, type CaseResult, type CaseStatus, type LabRun, type SuiteName, type SuiteResult } from './model.ts';
import type { CaseApi, CaseRunner, LabContext, LabSuite } from './suite.ts';
import type { Recorder } from './recorder.ts';
import { safeName } from './recorder.ts';
import { valueOut } from './transcript.ts';

/** Tool version written into reports and transcripts. */
export const TOOL_VERSION = '0.1.0';

/** The host facts of a report (`LabRun.host`). */
export function labHost(): LabRun['host'] {
  const cpu = cpus();
  return {
    hostname: hostname(),
    platform: `${platform()} ${process.arch}`,
    node: process.version,
    cpus: `${cpu.length} x ${cpu[0]?.model ?? 'unknown'}`,
  };
}

class CaseVerdict extends Error {
  constructor(
    readonly status: 'failed' | 'skipped',
    message: string,
  ) {
    super(message);
  }
}

function show(v: unknown, hex: boolean): string {
  if (hex && typeof v === 'number') return v.toString(16).toUpperCase().padStart(4, '0');
  if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
  if (typeof v === 'string') return JSON.stringify(v);
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

function same(a: unknown, b: unknown): boolean {
  if (a instanceof Uint8Array && b instanceof Uint8Array) return a.length === b.length && a.every((x, i) => x === b[i]);
  return Object.is(a, b);
}

/** What one case body came to (see {@link runCaseBody}). */
export interface CaseVerdictResult {
  readonly status: CaseStatus;
  readonly message?: string;
  readonly details: Record<string, unknown>;
  readonly durationMs: number;
}

/**
 * Runs one case body with the {@link CaseApi} verdict calls and never
 * throws: `fail`/`expect`/`check` make it `failed`, `skip` `skipped`, any
 * other exception `error` (with a one-line message, never a stack).
 */
export async function runCaseBody(body: (c: CaseApi) => Promise<void>): Promise<CaseVerdictResult> {
  const details: Record<string, unknown> = {};
  const api: CaseApi = {
    details,
    expect(what, actual, expected, hex) {
      if (!same(actual, expected))
        throw new CaseVerdict('failed', `${what}: expected ${show(expected, hex === true)}, got ${show(actual, hex === true)}`);
    },
    check(cond, message) {
      if (!cond) throw new CaseVerdict('failed', message);
    },
    fail(message) {
      throw new CaseVerdict('failed', message);
    },
    skip(reason) {
      throw new CaseVerdict('skipped', reason);
    },
  };
  const t0 = performance.now();
  try {
    await body(api);
    return { status: 'passed', details, durationMs: performance.now() - t0 };
  } catch (e) {
    const durationMs = performance.now() - t0;
    if (e instanceof CaseVerdict) return { status: e.status, message: e.message, details, durationMs };
    return { status: 'error', message: errorMessage(e), details, durationMs };
  }
}

/** A one-line, bounded description of an unexpected error (no stack). */
export function errorMessage(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    const text = `${e.name && e.name !== 'Error' ? `${e.name}: ` : ''}${typeof code === 'string' && !e.message.includes(code) ? `${code} ` : ''}${e.message}`;
    return text.replace(/\s+/g, ' ').slice(0, 500);
  }
  return String(e).slice(0, 500);
}

/** Makes `details` JSON-safe (bytes as hex, bigint as string, no functions). */
function jsonSafe(details: Record<string, unknown>): Record<string, unknown> {
  return JSON.parse(
    JSON.stringify(details, (_k, v: unknown) =>
      v instanceof Uint8Array ? Buffer.from(v).toString('hex') : typeof v === 'bigint' ? v.toString() : v,
    ),
  ) as Record<string, unknown>;
}

/** Where progress goes. */
export interface ProgressSink {
  /** A case starts (`index` 1-based within the suite; `total` when the suite announced it). */
  caseStarted(suite: string, name: string, index: number): void;
  /** A message from inside the case. */
  caseProgress(suite: string, name: string, message: string, done?: number, total?: number): void;
  /** A case finished. */
  caseFinished(result: CaseResult): void;
  /** Free text (run start/end). */
  note(text: string): void;
  /** Clears any live line. */
  close(): void;
}

/**
 * Progress on a stream: on a TTY one live status line (`[conformance 3] case…
 * message`) plus a line per failed case; elsewhere (CI) one line per finished
 * case with its status and duration. `quiet` prints failures only.
 */
export function streamProgress(stream: NodeJS.WriteStream, options: { quiet?: boolean; tty?: boolean } = {}): ProgressSink {
  const tty = options.tty ?? stream.isTTY === true;
  const quiet = options.quiet === true;
  let live = false;
  let index = 0;
  const clear = (): void => {
    if (live) stream.write('\r\x1b[K');
    live = false;
  };
  const liveLine = (text: string): void => {
    if (!tty || quiet) return;
    const width = Math.max(20, (stream.columns ?? 100) - 1);
    stream.write(`\r\x1b[K${text.slice(0, width)}`);
    live = true;
  };
  return {
    caseStarted(suite, name, i) {
      index = i;
      liveLine(`[${suite} ${i}] ${name} …`);
    },
    caseProgress(suite, name, message, done, total) {
      const count = done !== undefined ? ` ${done}${total !== undefined ? `/${total}` : ''}` : '';
      liveLine(`[${suite} ${index}] ${name}${count} ${message}`);
    },
    caseFinished(r) {
      clear();
      const bad = r.status === 'failed' || r.status === 'error';
      if (quiet && !bad) return;
      if (tty && !bad && r.status === 'passed') return liveLine(`[${r.suite} ${index}] ${r.name} passed`);
      stream.write(
        `${r.status.toUpperCase().padEnd(7)} ${r.suite}/${r.name} (${Math.round(r.durationMs)} ms)${r.message ? `: ${r.message}` : ''}\n`,
      );
    },
    note(text) {
      clear();
      if (!quiet) stream.write(`${text}\n`);
    },
    close() {
      clear();
    },
  };
}

/** A sink that shows nothing. */
export const silentProgress: ProgressSink = { caseStarted() {}, caseProgress() {}, caseFinished() {}, note() {}, close() {} };

/** Options of {@link runSuites}. */
export interface RunOptions {
  /** Where transcripts go (`<out>/transcripts/...`). */
  readonly outDir: string;
  readonly recorder: Recorder;
  readonly progress?: ProgressSink;
  /** Routes the context's `progress()` to the runner (the handle's `setProgress`). */
  readonly setContextProgress?: (p: (message: string, done?: number, total?: number) => void) => void;
  /** What goes into `LabRun.options`. */
  readonly runOptions?: Record<string, unknown>;
  /** Card facts for `LabRun.card`. */
  readonly card?: Record<string, unknown>;
}

/**
 * Runs `suites` in order against `ctx` and returns the run. Stops at the
 * next case boundary once `ctx.signal` aborts (the cases that ran are kept).
 */
export async function runSuites(ctx: LabContext, suites: readonly LabSuite[], o: RunOptions): Promise<LabRun> {
  const startedAt = new Date().toISOString();
  const progress = o.progress ?? silentProgress;
  const results: SuiteResult[] = [];
  for (const suite of suites) {
    if (ctx.signal.aborted) break;
    const suiteStart = performance.now();
    const suiteStartedAt = new Date().toISOString();
    const cases: CaseResult[] = [];
    const files = new Set<string>();
    let current = '';
    o.setContextProgress?.((m, d, t) => progress.caseProgress(suite.name, current, m, d, t));
    const runner: CaseRunner = {
      async case(name: string, description: string, body: (c: CaseApi) => Promise<void>): Promise<void> {
        // Ctrl-C: the case in progress finished; no new case starts.
        if (ctx.signal.aborted) return;
        current = name;
        let file = safeName(name);
        for (let n = 2; files.has(file); n++) file = `${safeName(name)}-${n}`;
        files.add(file);
        progress.caseStarted(suite.name, name, cases.length + 1);
        o.recorder.begin(suite.name, name);
        const { status, message, details, durationMs } = await runCaseBody(body);
        const transcript = o.recorder.end(o.outDir, file);
        let safeDetails: Record<string, unknown> | undefined;
        try {
          safeDetails = Object.keys(details).length ? jsonSafe(details) : undefined;
        } catch (e) {
          safeDetails = { unserializable: errorMessage(e) };
        }
        const result: CaseResult = {
          suite: suite.name,
          name,
          description,
          status,
          durationMs: Math.round(durationMs * 10) / 10,
          ...(message ? { message } : {}),
          ...(safeDetails ? { details: safeDetails } : {}),
          ...(transcript ? { transcript } : {}),
        };
        cases.push(result);
        progress.caseFinished(result);
      },
    };
    let figures: Awaited<ReturnType<LabSuite['run']>> = {};
    try {
      figures = await suite.run(ctx, runner);
    } catch (e) {
      // A suite that fails outside its cases: one error case says why.
      await runner.case(`${suite.name}-suite`, `the ${suite.name} suite ran to its end`, async () => {
        throw e;
      });
      // When aborted, runner.case did not record it; keep the reason anyway.
      if (ctx.signal.aborted && !cases.some((c) => c.name === `${suite.name}-suite`)) {
        cases.push({
          suite: suite.name,
          name: `${suite.name}-suite`,
          description: `the ${suite.name} suite ran to its end`,
          status: 'error',
          durationMs: 0,
          message: errorMessage(e),
        });
      }
    }
    results.push({
      name: suite.name,
      startedAt: suiteStartedAt,
      durationMs: Math.round((performance.now() - suiteStart) * 10) / 10,
      cases,
      ...(figures.timing ? { timing: figures.timing } : {}),
      ...(figures.endurance ? { endurance: figures.endurance } : {}),
    });
  }
  progress.close();
  const all = results.flatMap((s) => s.cases);
  return {
    format: 'dt-lab-report',
    version: 1,
    tool: { name: 'dt-lab', version: TOOL_VERSION },
    startedAt,
    finishedAt: new Date().toISOString(),
    host: labHost(),
    reader: { name: ctx.readerName, ...(o.card?.atr ? { atr: String(o.card.atr) } : {}) },
    card: { ...o.card, signedInRun: signedInRun(o.recorder) },
    options: { ...o.runOptions, ...(ctx.signal.aborted ? { interrupted: true } : {}) },
    suites: results,
    summary: summarize(all),
  };
}

/**
 * What the card signed during the run, from the transcripts: transfers
 * (distinct nonces) and their value, and those of them the ledger voided in
 * a receipt the card accepted (their value came back to the card). The card's
 * balance changed by `voidedValue - value` (plus any load).
 */
export function signedInRun(recorder: Recorder): { transfers: number; value: number; voided: number; voidedValue: number } {
  return valueOut({ transfers: recorder.transfers, voided: recorder.voided });
}

/** Exit code of a run: 0 all passed (skips allowed), 1 a case failed or errored. */
export function exitCodeOf(run: LabRun): 0 | 1 {
  return run.summary.failed > 0 || run.summary.errors > 0 ? 1 : 0;
}

/** Names of the suites given, checked; unknown names are listed in the error. */
export function checkSuiteNames(names: readonly string[], known: readonly SuiteName[]): SuiteName[] {
  const bad = names.filter((n) => !(known as readonly string[]).includes(n));
  if (bad.length) throw new Error(`unknown suite${bad.length > 1 ? 's' : ''} ${bad.join(', ')}; suites: ${known.join(', ')}`);
  return names as SuiteName[];
}

/**
 * Reads what the card says about itself (SELECT, GET STATUS) for
 * `LabRun.card`, recorded like a case (`transcripts/run/card-info.apdu`).
 * Never fails the run: a card that does not answer is reported by the
 * suites; the error goes into the facts.
 */
export async function probeCard(ctx: LabContext, recorder: Recorder, outDir: string): Promise<Record<string, unknown>> {
  recorder.begin('run', 'card-info');
  const facts: Record<string, unknown> = {};
  try {
    const s = await ctx.openSession();
    try {
      if (s.atr) facts.atr = Buffer.from(s.atr).toString('hex');
      const sel = await selectApplet(s);
      Object.assign(facts, {
        applet: sel.applet,
        protocol: sel.protocol,
        capabilities: `0x${sel.capabilities.toString(16)}`,
        locked: sel.locked,
        maxCommand: sel.maxCommand,
      });
      if (sel.card) facts.cardId = Buffer.from(sel.card).toString('hex');
      const st = await getStatus(s);
      Object.assign(facts, {
        counter: st.counter,
        balance: st.balance,
        offlineValue: st.offlineValue,
        offlineCount: st.offlineCount,
        coins: st.coins,
        pinTries: st.pinTries,
        syncPending: st.syncPending,
      });
      if (st.limits) facts.limits = { ...st.limits };
      if (st.currency !== undefined) facts.currency = st.currency;
      // The card's certificates: their leaf key lets the run's accounting check the card's
      // signature on every transfer it counts (a copy damaged on the way is not counted).
      if (sel.locked) facts.certificates = (await getCertificates(s)).length;
    } finally {
      await s.release();
    }
  } catch (e) {
    facts.error = errorMessage(e);
  }
  recorder.end(outDir, 'card-info');
  return facts;
}
