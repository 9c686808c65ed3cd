/**
 * `dt-lab`: the DT lab suite on the command line.
 *
 *   dt-lab readers [--wait s] [--json]
 *   dt-lab run [suite...] --reader NAME [options]
 *   dt-lab replay <transcript|dir...> (--reader NAME | --card STATE) [options]
 *
 * Exit codes: {@link EXIT_CODES}.
 *
 * @module
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { resolve } from 'node:path';
import { PcscReaders, parseVerifierName, type VerifierName } from '@dt/terminal';
import { exitCodesByName, exitCodesHelp } from '@dt/protocol';
import { isHttpUrl } from '@dt/protocol/http';
import { SUITE_NAMES, type LabRun, type SuiteName } from './model.ts';
import { LabConfigError, LabUnreachableError, createLabContext, matchReader, PAYMENT_SUITES } from './context.ts';
import { TOOL_VERSION, checkSuiteNames, errorMessage, exitCodeOf, probeCard, runSuites, streamProgress } from './runner.ts';
import { suitesByName } from './suites/index.ts';
import { writeReports } from './reports/index.ts';
import { collectTranscripts, missingTranscriptPaths, readerTarget, replayAll, stateFileTarget, type ReplayTarget } from './replay.ts';
import { makeDirs } from '@dt/protocol/fs';

/**
 * The exit codes of `dt-lab`, the one table (`--help` prints it; the root
 * README repeats it, checked by a test). 0-3 mean the same for every
 * command line of the toolkit; 4 and up are this command's own.
 */
export const EXIT_CODES = [
  { code: 0, name: 'OK', meaning: 'every case passed (skipped cases allowed)' },
  { code: 1, name: 'FAILED', meaning: 'refused: a case failed or errored (the card or terminal broke a rule)' },
  { code: 2, name: 'USAGE', meaning: 'usage: bad command, option or value, unknown suite, no such reader, bad terminal directory' },
  { code: 3, name: 'UNREACHABLE', meaning: 'unreachable: the ledger of --ledger, or pcscd, cannot be reached' },
  { code: 4, name: 'NO_CARD', meaning: 'no card answered in the reader' },
  { code: 5, name: 'REPORTS', meaning: 'the reports could not be written' },
  { code: 6, name: 'INTERNAL', meaning: 'internal error' },
  { code: 130, name: 'INTERRUPTED', meaning: 'interrupted with Ctrl-C (the reports of the cases that ran are written)' },
] as const;

/** Exit codes of `dt-lab` by name (from {@link EXIT_CODES}). */
export const ExitCode = exitCodesByName(EXIT_CODES);

const EXIT_HELP = `
${exitCodesHelp(EXIT_CODES)}

Suites: ${SUITE_NAMES.join(', ')}. Amount options are integer tiyn (100 = 1 KZT); reports show
tenge with two decimals; report.json keeps integer tiyn. The lab guide: hardware-tests/README.md.`;

class Exit extends Error {
  constructor(
    readonly code: number,
    message?: string,
  ) {
    super(message ?? `exit ${code}`);
  }
}

/** Commander parser of --verifier. */
function verifierOption(v: string): VerifierName {
  try {
    return parseVerifierName(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

function positiveInt(name: string, min = 1, max = 1_000_000) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    return n;
  };
}

function seconds(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0 || n > 3600) throw new InvalidArgumentError(`${name} must be a number of seconds (0 < s <= 3600)`);
    return n;
  };
}

/** Reads the PIN: `--pin`, else DT_LAB_PIN; checked for format, never echoed. */
function readPin(option: string | undefined): string | undefined {
  const pin = option ?? process.env.DT_LAB_PIN;
  if (pin === undefined || pin === '') return undefined;
  if (!/^\d{4,12}$/.test(pin)) throw new Exit(ExitCode.USAGE, 'the PIN must be 4 to 12 digits (the value is not shown)');
  return pin;
}

function timestamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

/** An http(s) URL option, else a usage error. */
const httpUrl =
  (name: string) =>
  (v: string): string => {
    if (!isHttpUrl(v)) throw new InvalidArgumentError(`${name} must be an http(s) URL, e.g. http://127.0.0.1:8440`);
    return v;
  };

/** Ctrl-C: the first ends the current case early where it waits (a card, a loop) and stops the run there; the second quits at once. */
function interruptible(say: (s: string) => void): { signal: AbortSignal; dispose(): void } {
  const ac = new AbortController();
  const onSigint = (): void => {
    if (ac.signal.aborted) process.exit(ExitCode.INTERRUPTED);
    say(
      '\ninterrupted: ending the current case (a wait for a card or a loop stops early), then the reports (Ctrl-C again to quit at once)',
    );
    ac.abort(new Error('interrupted'));
  };
  process.on('SIGINT', onSigint);
  return { signal: ac.signal, dispose: () => process.off('SIGINT', onSigint) };
}

/** Creates the --out directory before anything is sent to the card: one that cannot be made is exit 5, as reports that cannot be written. */
function makeReportDir(out: string): void {
  try {
    makeDirs(out);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOTDIR' || code === 'EEXIST'
        ? 'a file is in the way'
        : code === 'EACCES'
          ? 'permission denied'
          : code === 'ENOENT'
            ? 'it cannot be created there (ENOENT)'
            : (e as Error).message;
    throw new Exit(ExitCode.REPORTS, `the reports could not be written to ${out}: ${why}`);
  }
}

function writeAll(run: LabRun, out: string, say: (s: string) => void): boolean {
  try {
    const paths = writeReports(run, out);
    say(`reports: ${paths.junit}\n         ${paths.json}\n         ${paths.html}`);
    return true;
  } catch (e) {
    process.stderr.write(`dt-lab: the reports could not be written to ${out}: ${(e as Error).message}\n`);
    return false;
  }
}

/**
 * Writes the reports, prints the summary (and the --json line), and gives
 * the exit code of a run or replay. The summary line is printed even with
 * --quiet: it is the one line a quiet run promises.
 */
function finish(
  run: LabRun,
  out: string,
  say: (s: string) => void,
  summary: (s: string) => void,
  json: boolean,
  signal: AbortSignal,
): number {
  const written = writeAll(run, out, say);
  summary(summaryLine(run));
  if (json) process.stdout.write(JSON.stringify({ out, summary: run.summary, reports: written }) + '\n');
  if (signal.aborted) return ExitCode.INTERRUPTED;
  return written ? exitCodeOf(run) : ExitCode.REPORTS;
}

function summaryLine(run: LabRun): string {
  const s = run.summary;
  return `${s.total} cases: ${s.passed} passed, ${s.failed} failed, ${s.errors} errors, ${s.skipped} skipped`;
}

interface RunOpts {
  reader?: string;
  terminal?: string;
  ledger?: string;
  cardControl?: string;
  out?: string;
  taps: number;
  amount: number;
  rounds: number;
  cardTimeout: number;
  pin?: string;
  verifier?: VerifierName;
  quiet?: boolean;
  interactive: boolean;
  json?: boolean;
}

async function runCommand(suiteArgs: string[], o: RunOpts): Promise<number> {
  let names: SuiteName[];
  try {
    names = suiteArgs.length ? checkSuiteNames(suiteArgs, SUITE_NAMES) : [...SUITE_NAMES];
  } catch (e) {
    throw new Exit(ExitCode.USAGE, (e as Error).message);
  }
  if (!o.reader) throw new Exit(ExitCode.USAGE, 'give --reader <name> (see dt-lab readers)');
  const pin = readPin(o.pin);
  const out = resolve(o.out ?? `lab-report-${timestamp()}`);
  const log = o.json ? process.stderr : process.stdout;
  const say = (s: string): void => {
    if (!o.quiet) log.write(`${s}\n`);
  };
  const summary = (s: string): void => void log.write(`${s}\n`);
  const progress = streamProgress(log, { quiet: o.quiet === true });
  const stop = interruptible(say);
  const interactive = o.interactive && process.stdin.isTTY === true && process.stdout.isTTY === true;
  let handle;
  try {
    handle = await createLabContext({
      reader: o.reader,
      ...(o.terminal ? { terminalDir: o.terminal } : {}),
      ...(o.ledger ? { ledgerUrl: o.ledger } : {}),
      ...(o.cardControl ? { cardControl: o.cardControl } : {}),
      ...(pin ? { pin } : {}),
      ...(o.verifier ? { verifier: o.verifier } : {}),
      suites: names,
      options: { taps: o.taps, amount: o.amount, rounds: o.rounds, cardTimeoutMs: Math.round(o.cardTimeout * 1000), interactive },
      signal: stop.signal,
      tool: `dt-lab ${TOOL_VERSION}`,
    });
  } catch (e) {
    stop.dispose();
    if (e instanceof LabUnreachableError) throw new Exit(ExitCode.UNREACHABLE, e.message);
    if (e instanceof LabConfigError) throw new Exit(ExitCode.USAGE, e.message);
    throw e;
  }
  try {
    makeReportDir(out);
    const ctx = handle.context;
    say(`dt-lab ${TOOL_VERSION}: ${names.join(', ')} on "${ctx.readerName}" -> ${out}`);
    if (ctx.terminalMissing && names.some((n) => n === 'conformance' || PAYMENT_SUITES.includes(n)))
      say(`note: ${ctx.terminalMissing}; cases that pay are skipped`);
    // No card at all would make every case wait out --card-timeout: say so once, at the start.
    try {
      const s = await ctx.openSession();
      await s.release();
    } catch (e) {
      if (stop.signal.aborted) return ExitCode.INTERRUPTED;
      throw new Exit(ExitCode.NO_CARD, `no card in "${ctx.readerName}" (waited ${o.cardTimeout} s): ${errorMessage(e)}`);
    }
    const card = await probeCard(ctx, handle.recorder, out);
    if (card.error) say(`note: the card did not answer SELECT/GET STATUS: ${String(card.error)}`);
    const run = await runSuites(ctx, suitesByName(names), {
      outDir: out,
      recorder: handle.recorder,
      progress,
      setContextProgress: (p) => handle.setProgress(p),
      card,
      runOptions: {
        suites: names,
        reader: ctx.readerName,
        taps: o.taps,
        amount: o.amount,
        rounds: o.rounds,
        cardTimeoutMs: Math.round(o.cardTimeout * 1000),
        interactive,
        terminal: o.terminal ?? null,
        ledger: o.ledger ?? null,
        cardControl: o.cardControl ?? null,
        pinGiven: pin !== undefined,
        verifier: handle.verifier,
      },
    });
    return finish(run, out, say, summary, o.json === true, stop.signal);
  } finally {
    stop.dispose();
    await handle.close();
  }
}

interface ReplayOpts {
  reader?: string;
  card?: string;
  pin?: string;
  out?: string;
  strict?: boolean;
  loose?: boolean;
  cardTimeout: number;
  quiet?: boolean;
  json?: boolean;
}

async function replayCommand(args: string[], o: ReplayOpts): Promise<number> {
  if ((o.reader ? 1 : 0) + (o.card ? 1 : 0) !== 1)
    throw new Exit(
      ExitCode.USAGE,
      'give exactly one of --reader <name> (a live card) or --card <state file> (a simulated card, from a copy)',
    );
  if (o.strict && o.loose) throw new Exit(ExitCode.USAGE, '--strict and --loose exclude each other');
  const pin = readPin(o.pin);
  const missing = missingTranscriptPaths(args);
  if (missing.length > 0) throw new Exit(ExitCode.USAGE, `${missing.join(', ')}: no such file or directory`);
  const files = collectTranscripts(args);
  if (files.length === 0) throw new Exit(ExitCode.USAGE, `no transcripts (.apdu) in ${args.join(' ')}`);
  const out = resolve(o.out ?? `lab-replay-${timestamp()}`);
  const log = o.json ? process.stderr : process.stdout;
  const say = (s: string): void => {
    if (!o.quiet) log.write(`${s}\n`);
  };
  const summary = (s: string): void => void log.write(`${s}\n`);
  const progress = streamProgress(log, { quiet: o.quiet === true });
  let target: ReplayTarget;
  try {
    if (o.card) target = stateFileTarget(o.card);
    else {
      const pcsc = new PcscReaders({ apduTimeoutMs: 10_000 });
      try {
        const names = await pcsc.waitForReaders(5000);
        // As `run` says it: no readers because pcscd cannot be reached is exit 3, not a reader name that matches nothing.
        if (names.length === 0 && pcsc.contextError) throw new LabUnreachableError(`no PC/SC readers: ${pcsc.contextError}`);
        const name = matchReader(names, o.reader!);
        target = readerTarget(
          pcsc.reader(new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`)),
          Math.round(o.cardTimeout * 1000),
          () => pcsc.close(),
        );
      } catch (e) {
        await pcsc.close();
        throw e;
      }
    }
  } catch (e) {
    throw new Exit(e instanceof LabUnreachableError ? ExitCode.UNREACHABLE : ExitCode.USAGE, (e as Error).message);
  }
  // Against a state-file copy the card is deterministic: compare everything byte for byte unless --loose.
  const strict = o.strict === true || (o.card !== undefined && o.loose !== true);
  const stop = interruptible(say);
  try {
    makeReportDir(out);
    say(`dt-lab replay: ${files.length} transcript(s) against ${target.name} (${strict ? 'strict' : 'loose ~ lines'}) -> ${out}`);
    let i = 0;
    const run = await replayAll(files, target, {
      strict,
      outDir: out,
      signal: stop.signal,
      ...(pin ? { pin } : {}),
      onCase: (c) => {
        progress.caseStarted('replay', c.name, ++i);
        progress.caseFinished(c);
      },
    });
    progress.close();
    return finish(run, out, say, summary, o.json === true, stop.signal);
  } finally {
    stop.dispose();
    await target.close();
  }
}

async function readersCommand(o: { wait: number; json?: boolean }): Promise<number> {
  const pcsc = new PcscReaders({ reconnectDelayMs: 60_000 });
  let readers: { name: string; cardPresent: boolean; atr?: string }[];
  let error: string | undefined;
  try {
    await pcsc.waitForReaders(o.wait * 1000);
    // Card presence arrives just after the reader: give it a moment.
    await new Promise((r) => setTimeout(r, 500));
    readers = pcsc.list();
    error = pcsc.contextError;
    for (const r of readers) {
      if (!r.cardPresent) continue;
      try {
        const s = await pcsc.reader(new RegExp(`^${r.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`)).waitForCard({ timeoutMs: 2000 });
        if (s.atr) r.atr = Buffer.from(s.atr).toString('hex');
        await s.release();
      } catch {
        // presence is still reported; the ATR is optional
      }
    }
  } finally {
    await pcsc.close();
  }
  if (o.json) process.stdout.write(JSON.stringify({ readers, error: error ?? null }) + '\n');
  else if (readers.length === 0) process.stdout.write(`no PC/SC readers${error ? `: ${error}` : ''}\n`);
  else
    for (const r of readers)
      process.stdout.write(`${r.name}${r.cardPresent ? `  [card${r.atr ? ` ATR ${r.atr}` : ''}]` : '  [no card]'}\n`);
  return readers.length === 0 && error ? ExitCode.UNREACHABLE : ExitCode.OK;
}

/** Builds the command tree; `exit` receives the exit code of an action. */
export function buildProgram(exit: (code: number) => void): Command {
  const program = new Command();
  program
    .name('dt-lab')
    .description(
      'The DT lab: conformance, robustness, timing and endurance suites against a card in a reader; JUnit/JSON/HTML reports; APDU transcripts and their replay',
    )
    .version(TOOL_VERSION)
    .addHelpText('after', EXIT_HELP)
    .showHelpAfterError();

  program
    .command('readers')
    .description('list PC/SC readers, whether a card is present, and its ATR')
    .option('--wait <seconds>', 'how long to wait for readers to appear', seconds('--wait'), 2)
    .option('--json', 'machine-readable output')
    .action(async (o: { wait: number; json?: boolean }) => exit(await readersCommand(o)));

  program
    .command('run')
    .description(
      `run suites (default all: ${SUITE_NAMES.join(' ')}) against the card in --reader; write report.xml (JUnit), report.json, report.html and transcripts/ into --out`,
    )
    .argument('[suite...]', `suites to run, in order: ${SUITE_NAMES.join(', ')}`)
    .requiredOption(
      '--reader <name>',
      'PC/SC reader: its exact name or a unique part of it (dt-lab readers), or serial:<path> / hid:<path>',
    )
    .option(
      '--terminal <dir>',
      'dt-pos data directory: the lab terminal identity (dt-pos init); payments use journals of their own, never its journal',
    )
    .option(
      '--ledger <url>',
      'ledger base URL: revocation list, and card SYNC between rounds (timing, endurance, conformance sync)',
      httpUrl('--ledger'),
    )
    .option(
      '--card-control <socket>',
      'control socket of a simulated card (dt-card serve --control): card removal and fault injection for robustness',
    )
    .option('--out <dir>', 'report directory (default ./lab-report-<timestamp>)')
    .option('--taps <n>', 'taps of the timing suite', positiveInt('--taps', 1, 100_000), 200)
    .option('--amount <tiyn>', 'amount of each lab payment in tiyn (100 = 1 KZT)', positiveInt('--amount', 1, 100_000_000), 100)
    .option('--rounds <n>', 'rounds of the endurance suite', positiveInt('--rounds', 1, 1000), 2)
    .option('--card-timeout <seconds>', 'how long to wait for the card in the reader', seconds('--card-timeout'), 10)
    .option(
      '--pin <pin>',
      "the card's PIN for the PIN cases (prefer the DT_LAB_PIN environment variable: a command line is visible to other users); never printed, masked in transcripts",
    )
    .option(
      '--verifier <name>',
      "the lab terminal's signature verifier: native (OpenSSL) or noble (pure JS); default: the verifier in --terminal's config.json, else native",
      verifierOption,
    )
    .option('--quiet', 'print failures and the final summary line only')
    .option('--no-interactive', 'never prompt (default: prompt for a hand on the card when stdin and stdout are terminals)')
    .option('--json', 'print {out, summary} as JSON on stdout (progress goes to stderr)')
    .action(async (suites: string[], o: RunOpts) => exit(await runCommand(suites, o)));

  program
    .command('replay')
    .description(
      'replay transcripts as regression tests (a directory: its .apdu files in recording order); compare every answer; write the three reports with a "replay" suite',
    )
    .argument('<transcript...>', 'transcript files (.apdu) or directories (a report directory, or its transcripts/)')
    .option('--reader <name>', 'replay against the live card in this PC/SC reader')
    .option(
      '--card <state-file>',
      'replay against a simulated card from a COPY of this dt-card state file (deterministic: strict by default)',
    )
    .option('--pin <pin>', 'PIN to put back into masked commands (prefer DT_LAB_PIN)')
    .option('--strict', 'compare "~" answers byte for byte too (default with --card)')
    .option('--loose', 'with --card: compare "~" answers by status word and shape only')
    .option('--out <dir>', 'report directory (default ./lab-replay-<timestamp>)')
    .option('--card-timeout <seconds>', 'how long to wait for the card in the reader', seconds('--card-timeout'), 10)
    .option('--quiet', 'print failures and the final summary line only')
    .option('--json', 'print {out, summary} as JSON on stdout')
    .action(async (files: string[], o: ReplayOpts) => exit(await replayCommand(files, o)));

  return program;
}

/**
 * Runs the CLI with `argv` (default `process.argv`), then exits the process
 * with the exit code (`exit: false` only sets `process.exitCode`, for
 * in-process callers). Exiting explicitly is a safety net: a card control
 * client or a reader a suite forgot to close must not keep a finished run alive
 * (the PC/SC adapter itself releases everything it opened: terminal/src/transports/pcsc.ts).
 */
export async function main(argv: string[] = process.argv, options: { exit?: boolean } = {}): Promise<void> {
  let code: number = ExitCode.OK;
  const program = buildProgram((c) => {
    code = c;
  });
  program.exitOverride();
  for (const sub of program.commands) sub.exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      code =
        e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help'
          ? ExitCode.OK
          : ExitCode.USAGE;
    } else if (e instanceof Exit) {
      process.stderr.write(`dt-lab: ${e.message}\n`);
      code = e.code;
    } else if (e instanceof LabConfigError) {
      process.stderr.write(`dt-lab: ${e.message}\n`);
      code = e instanceof LabUnreachableError ? ExitCode.UNREACHABLE : ExitCode.USAGE;
    } else {
      process.stderr.write(`dt-lab: ${e instanceof Error ? e.message : String(e)}\n`);
      code = ExitCode.INTERNAL;
    }
  }
  process.exitCode = code;
  // stdout/stderr are synchronous for files and pipes on Linux, so nothing written is lost.
  if (options.exit !== false) process.exit(code);
}
