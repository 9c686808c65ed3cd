/**
 * Replay: turns transcripts into regression tests. Each `=>` command is sent
 * again in order and the answer is compared with the recorded `<=` line:
 *
 * - exact lines (`<= <hex>`): data and status word byte for byte;
 * - loose lines (`<= ~<hex>`, answers signed or random by nature): the
 *   status word must be equal, except that any 61xx matches any 61yy (the
 *   length of a signed answer may differ), and the data must be empty
 *   exactly when the recorded data is empty. With `strict` (the default
 *   against a simulated card from a state file, where the card is
 *   deterministic: RFC 6979 signatures, no clock in its decisions) loose
 *   lines are compared byte for byte too;
 * - `<=` with no answer: the command must again get no answer; except when
 *   the recorded reason is the reader's (`CARD_REMOVED: …`,
 *   `READER_UNAVAILABLE: …`: the reader reported the card gone, e.g. a stale
 *   handle right after the card was put back): the command never reached the
 *   card then, so it is not sent now either.
 *
 * A command with masked bytes (`**`: the `--pin` digits) is rebuilt from
 * `pin`; without it, or with `??` bytes (a secret the lab did not know), the
 * transcript is not replayable and is reported as skipped, before anything
 * of it is sent.
 *
 * `# control:` events (faults armed through the simulated card's control
 * channel, the card taken out of the reader and put back) are done again,
 * at the same point between the same commands. Against a state file the
 * card behaves as it did in the vpcd reader it was recorded in: a power cut
 * or a dropped answer leaves it out of the field (commands get no answer)
 * until the transcript shows the next answered command, when it is presented
 * again (powered up, as vpcd does after its reinsertion delay); armed plans
 * carry the seed of their randomness, so torn writes and corrupted bytes
 * come out the same. A live card in a reader has no control channel here:
 * its transcripts with control events are skipped with the reason.
 *
 * Targets: a live card in a reader (sessions through the recorder-free
 * reader), or a COPY of a `dt-card` state file served in-process, powered on
 * afresh before each transcript, with its clock pinned to the transcript's
 * time. Replay transcripts in the order they were recorded (directories are
 * sorted by their `# seq:` header) against a copy of the state file taken
 * before the recorded run: every transcript of a complete run, in that
 * order, replays (a case replayed only in part leaves the card elsewhere
 * than the next transcript expects).
 *
 * @module
 */
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { toHex, type ApduTransport } from '@dt/protocol';
import { FileStorage, SimulatedCard, isPowerCut } from '@dt/card-applet-sim';
import type { CardReader } from '@dt/terminal';
import { summarize, type CaseResult, type LabRun } from './model.ts';
import {
  readTranscript,
  unmask,
  TranscriptError,
  MASK_PIN,
  type ControlEvent,
  type ParsedExchange,
  type Transcript,
} from './transcript.ts';
import { TOOL_VERSION, errorMessage, labHost } from './runner.ts';

/** Where a mismatch is. */
export interface Mismatch {
  /** Line of the `<=` that was not matched (1-based). */
  readonly line: number;
  readonly expected: string;
  readonly actual: string;
}

/** Result of replaying one transcript. */
export interface ReplayResult {
  readonly status: 'passed' | 'failed' | 'skipped' | 'error';
  readonly message?: string;
  readonly mismatch?: Mismatch;
  /** Exchanges replayed. */
  readonly exchanges: number;
}

/** The card of one transcript, as {@link ReplayTarget.open} gives it. */
export interface ReplayCard {
  readonly transport: ApduTransport;
  /**
   * Does a recorded control event to the card; absent when the target has
   * no control channel (its transcripts with control events are skipped).
   */
  readonly control?: (event: ControlEvent) => Promise<void>;
  /**
   * Called before a command whose recorded answer exists: a card out of the
   * field (after a power cut or a dropped answer) is presented again.
   */
  readonly present?: () => Promise<void>;
  release(): Promise<void>;
}

/** A target for one transcript: a transport, opened fresh per transcript. */
export interface ReplayTarget {
  /** Name for reports. */
  readonly name: string;
  /** Opens the card for one transcript (`time`: the transcript's time, seconds). */
  open(time: number | undefined): Promise<ReplayCard>;
  /** Frees the target. */
  close(): Promise<void>;
}

/** A no-answer reason that says the reader never handed the command to the card (see the recorder's `reason`). */
export function readerDidNotDeliver(noAnswer: string | undefined): boolean {
  return noAnswer !== undefined && /^(CARD_REMOVED|READER_UNAVAILABLE): /.test(noAnswer);
}

function swOf(r: Uint8Array): number {
  return (r[r.length - 2]! << 8) | r[r.length - 1]!;
}

function short(r: Uint8Array | undefined): string {
  if (r === undefined) return '(no answer)';
  const h = toHex(r);
  return h.length > 80 ? `${h.slice(0, 60)}…${h.slice(-8)} (${r.length} bytes)` : h;
}

/** Compares an answer with a recorded exchange; returns why it does not match, or undefined. */
export function compareAnswer(x: ParsedExchange, actual: Uint8Array | undefined, strict: boolean): string | undefined {
  // "No answer" covers an answer without a status word (fewer than 2 bytes), as the recorder writes it.
  if (x.response === undefined) return actual === undefined || actual.length < 2 ? undefined : 'expected no answer';
  if (actual === undefined) return 'no answer';
  if (actual.length < 2) return 'answer shorter than a status word';
  if (!x.loose || strict) {
    if (actual.length === x.response.length && actual.every((b, i) => b === x.response![i])) return undefined;
    return 'different bytes';
  }
  const we = swOf(x.response);
  const wa = swOf(actual);
  const swOk = we === wa || ((we & 0xff00) === 0x6100 && (wa & 0xff00) === 0x6100);
  if (!swOk) return 'different status word';
  if ((x.response.length === 2) !== (actual.length === 2))
    return x.response.length === 2 ? 'data where none was recorded' : 'no data where data was recorded';
  return undefined;
}

/**
 * Replays one parsed transcript against `card` (a transport alone is a card
 * without a control channel).
 */
export async function replayTranscript(
  t: Transcript,
  target: ApduTransport | ReplayCard,
  options: { strict: boolean; pin?: string },
): Promise<ReplayResult> {
  const card: Omit<ReplayCard, 'release'> = 'transport' in target ? target : { transport: target };
  const transport = card.transport;
  const pin = options.pin ? new TextEncoder().encode(options.pin) : undefined;
  const controlled = t.exchanges.some((x) => x.before?.length) || (t.after?.length ?? 0) > 0;
  if (controlled && !card.control) {
    return {
      status: 'skipped',
      exchanges: 0,
      message:
        'not replayable here: the case drove the card through its control channel (faults, removal); replay it against a state file (--card)',
    };
  }
  // Rebuild every command first: a transcript is replayed whole or not at all.
  const commands: Uint8Array[] = [];
  for (const x of t.exchanges) {
    if (!x.mask) {
      commands.push(x.command);
      continue;
    }
    const unknown = x.mask.some((m) => m !== 0 && m !== MASK_PIN);
    const rebuilt = unknown ? undefined : unmask(x.command, x.mask, pin);
    if (!rebuilt) {
      return {
        status: 'skipped',
        exchanges: 0,
        message: `not replayable: line ${x.commandLine} has masked ${unknown ? 'secret bytes (??) the lab did not know' : `PIN bytes${pin ? ' of another length than --pin' : ': give --pin (or DT_LAB_PIN)'}`}`,
      };
    }
    commands.push(rebuilt);
  }
  for (let i = 0; i < t.exchanges.length; i++) {
    const x = t.exchanges[i]!;
    for (const e of x.before ?? []) await card.control!(e);
    // The reader reported the card gone: in the recorded run nothing reached the card.
    if (x.response === undefined && readerDidNotDeliver(x.noAnswer)) continue;
    if (x.response !== undefined) await card.present?.();
    let actual: Uint8Array | undefined;
    let failure: string | undefined;
    try {
      actual = await transport.transmit(commands[i]!);
    } catch (e) {
      failure = errorMessage(e);
    }
    const why = compareAnswer(x, actual, options.strict);
    if (why) {
      const expected =
        x.response === undefined ? `(no answer${x.noAnswer ? `: ${x.noAnswer}` : ''})` : `${x.loose ? '~' : ''}${short(x.response)}`;
      const got = actual === undefined ? `(no answer: ${failure ?? 'unknown'})` : short(actual);
      return {
        status: 'failed',
        exchanges: i + 1,
        mismatch: { line: x.responseLine, expected, actual: got },
        message: `line ${x.responseLine}: ${why}: expected <= ${expected}, got <= ${got}`,
      };
    }
  }
  for (const e of t.after ?? []) await card.control!(e);
  return { status: 'passed', exchanges: t.exchanges.length };
}

/** The card is out of the field: the command never reached it (as PC/SC reports a card that left the reader). */
class NotInField extends Error {
  constructor(why: string) {
    super(`card left the field (${why})`);
    this.name = 'CardRemoved';
  }
}

/**
 * A simulated card from a COPY of a dt-card state file (the original is
 * never opened for writing), powered on before each transcript, its clock
 * pinned to the transcript's time. It stands in the reader the way
 * `dt-card serve --vpcd` stands in vpcd: every answer leaves through the
 * fault plan's frame hooks (a dropped frame takes the card out of the field,
 * a corrupted one arrives corrupted), a power cut leaves it out of the field,
 * and control events arm, disarm, take out and put back.
 */
export function stateFileTarget(stateFile: string): ReplayTarget {
  if (!existsSync(stateFile)) throw new Error(`state file ${stateFile}: no such file`);
  if (!statSync(stateFile).isFile()) throw new Error(`state file ${stateFile}: not a file`);
  const dir = mkdtempSync(join(tmpdir(), 'dt-lab-replay-'));
  const copy = join(dir, basename(stateFile));
  let storage: FileStorage;
  try {
    copyFileSync(stateFile, copy);
    storage = FileStorage.open(copy);
  } catch (e) {
    // No copy is left behind, and the message names the user's file, not the temporary copy.
    rmSync(dir, { recursive: true, force: true });
    const why = (e as Error).message.replaceAll(copy, stateFile);
    throw new Error(why.includes(stateFile) ? why : `state file ${stateFile}: ${why}`, { cause: e });
  }
  let clock = Math.floor(Date.now() / 1000);
  const card = new SimulatedCard({ storage, now: () => clock });
  let inField = false;
  let outWhy = 'taken out';
  const takeOut = (why: string): void => {
    inField = false;
    outWhy = why;
    if (card.powered) card.powerOff();
  };
  const present = async (): Promise<void> => {
    if (inField && card.powered) return;
    try {
      card.powerOn();
      inField = true;
    } catch (e) {
      // A planned cut during the card's start-up recovery: it stays out, as vpcd pulls it.
      if (!isPowerCut(e)) throw e;
      takeOut('power cut during power-up');
    }
  };
  const transport: ApduTransport = {
    async transmit(apdu) {
      if (!inField || !card.powered) throw new NotInField(outWhy);
      let rsp: Uint8Array;
      try {
        rsp = await card.transmit(apdu);
      } catch (e) {
        if (isPowerCut(e)) takeOut('power cut');
        throw e;
      }
      const out = card.faults.onOutgoingFrame(rsp);
      if (out === null) {
        takeOut('answer dropped');
        throw new NotInField('answer dropped');
      }
      return out;
    },
  };
  const control = async (e: ControlEvent): Promise<void> => {
    if (e.command === 'arm') card.faults.arm(e.plan);
    else if (e.command === 'disarm') card.faults.disarm();
    else if (e.command === 'remove') takeOut('taken out of the reader');
    else await present();
  };
  return {
    name: `state file ${stateFile} (copy)`,
    async open(time) {
      if (time !== undefined) clock = time;
      // Each transcript starts from a power-on, like a card presented to a reader.
      inField = false;
      await present();
      return { transport, control, present, release: async () => {} };
    },
    async close() {
      storage.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A live card in a reader: one session per transcript. */
export function readerTarget(reader: CardReader, cardTimeoutMs: number, onClose: () => Promise<void>): ReplayTarget {
  return {
    name: reader.name,
    async open() {
      const s = await reader.waitForCard({ timeoutMs: cardTimeoutMs });
      return { transport: s, release: () => s.release() };
    },
    close: onClose,
  };
}

/** A transcript file to replay, parsed. */
export interface TranscriptFile {
  readonly path: string;
  readonly transcript?: Transcript;
  /** Why it does not parse. */
  readonly error?: string;
}

function walk(dir: string, out: string[]): void {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.apdu')) out.push(p);
  }
}

/**
 * Expands arguments into transcript files: a file stays where it is in the
 * order; a directory (a report directory or a transcripts folder) becomes
 * its `.apdu` files sorted by their `# seq:` header (recording order). A
 * transcript that cannot be parsed is kept with its error (an error case of
 * the replay); a path that does not exist is entered as such an error here,
 * and `dt-lab replay` refuses it before it starts ({@link missingTranscriptPaths}).
 */
export function collectTranscripts(args: readonly string[]): TranscriptFile[] {
  const out: TranscriptFile[] = [];
  for (const a of args) {
    const p = resolve(a);
    let st;
    try {
      st = statSync(p);
    } catch {
      out.push({ path: p, error: 'no such file or directory' });
      continue;
    }
    if (!st.isDirectory()) {
      out.push(parse(p));
      continue;
    }
    const files: string[] = [];
    walk(p, files);
    const parsed = files.map(parse);
    const seq = (f: TranscriptFile): number => {
      const s = Number(f.transcript?.header.seq);
      return Number.isSafeInteger(s) ? s : Number.MAX_SAFE_INTEGER;
    };
    parsed.sort((x, y) => seq(x) - seq(y) || x.path.localeCompare(y.path));
    out.push(...parsed);
  }
  return out;
}

function parse(path: string): TranscriptFile {
  try {
    return { path, transcript: readTranscript(path) };
  } catch (e) {
    return { path, error: e instanceof TranscriptError ? e.message : errorMessage(e) };
  }
}

/** Options of {@link replayAll}. */
export interface ReplayOptions {
  readonly strict: boolean;
  readonly pin?: string;
  /** Report directory (case transcript paths are relative to it). */
  readonly outDir: string;
  readonly onCase?: (r: CaseResult) => void;
  readonly signal?: AbortSignal;
}

/** Replays `files` in order against `target`; returns the run (suite `replay`, one case per transcript). */
export async function replayAll(files: readonly TranscriptFile[], target: ReplayTarget, o: ReplayOptions): Promise<LabRun> {
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const cases: CaseResult[] = [];
  const names = new Set<string>();
  for (const f of files) {
    if (o.signal?.aborted) break;
    const h = f.transcript?.header ?? {};
    let name = h.suite && h.case ? `${h.suite}/${h.case}` : basename(f.path);
    for (let n = 2; names.has(name); n++) name = `${h.suite}/${h.case}#${n}`;
    names.add(name);
    const start = performance.now();
    let r: ReplayResult;
    if (!f.transcript) r = { status: 'error', exchanges: 0, message: f.error ?? 'unreadable' };
    else {
      const time = h.time ? Math.floor(Date.parse(h.time) / 1000) : undefined;
      let opened: Awaited<ReturnType<ReplayTarget['open']>> | undefined;
      try {
        opened = await target.open(Number.isFinite(time) ? time : undefined);
        r = await replayTranscript(f.transcript, opened, { strict: o.strict, ...(o.pin ? { pin: o.pin } : {}) });
      } catch (e) {
        r = { status: 'error', exchanges: 0, message: errorMessage(e) };
      } finally {
        await opened?.release().catch(() => {});
      }
    }
    const c: CaseResult = {
      suite: 'replay',
      name,
      description: `replay of ${relative(o.outDir, f.path) || f.path}${h.seq !== undefined ? ` (seq ${h.seq})` : ''}`,
      status: r.status,
      durationMs: Math.round((performance.now() - start) * 10) / 10,
      ...(r.message ? { message: r.message } : {}),
      details: { exchanges: r.exchanges, ...(r.mismatch ? { mismatch: r.mismatch } : {}), strict: o.strict },
      transcript: relative(o.outDir, f.path),
    };
    cases.push(c);
    o.onCase?.(c);
  }
  return {
    format: 'dt-lab-report',
    version: 1,
    tool: { name: 'dt-lab', version: TOOL_VERSION },
    startedAt,
    finishedAt: new Date().toISOString(),
    host: labHost(),
    reader: { name: target.name },
    options: { mode: 'replay', strict: o.strict, transcripts: files.length, ...(o.signal?.aborted ? { interrupted: true } : {}) },
    suites: [{ name: 'replay', startedAt, durationMs: Math.round((performance.now() - t0) * 10) / 10, cases }],
    summary: summarize(cases),
  };
}

/** The arguments of `dt-lab replay` that name nothing on disk (a usage error: exit 2). */
export function missingTranscriptPaths(args: readonly string[]): string[] {
  return args.filter((a) => !existsSync(resolve(a)));
}
