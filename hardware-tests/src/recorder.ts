/**
 * The APDU recorder: wraps readers, sessions and transports so that every
 * command and answer of the current case is kept, then written as a
 * transcript (transcript.ts) to `<out>/transcripts/<suite>/<case>.apdu`.
 *
 * PIN and PUK digits never reach a transcript in clear ({@link maskSecrets}).
 * Answers that are signed or random by nature are marked `~` (see
 * {@link isLooseCommand}) so that replay against a live card compares them
 * by status word and shape only.
 *
 * What the lab does to a simulated card through its control channel
 * (faults armed, the card taken out and put back) changes what the card
 * answers next, so it is part of the case: {@link Recorder.wrapControl}
 * records it between the exchanges (`# control:` lines), and gives every
 * fault plan with random parts a seed, so that replay can do exactly the same.
 *
 * @module
 */
import { randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { answerIsFresh, identifyCommand, isMoreData as isMoreDataSw } from '@dt/protocol';
import type { ApduTransport, TransmitOptions } from '@dt/protocol';
import type { CardReader, CardSession, WaitOptions } from '@dt/terminal';
import type { CardControlClient, FaultPlan } from '@dt/card-applet-sim';
import { formatTranscript, maskSecrets, moneyIn, type ControlEvent, type Exchange, type SignedTransfer } from './transcript.ts';
import { makeDirs } from '@dt/protocol/fs';

/**
 * True when the answer to `apdu` is signed or random by nature, so that a
 * card answers it differently every time even from the same state when it
 * signs with fresh randomness: PAY (80 30), SYNC and LOAD BEGIN (80 52/50,
 * P1 01) and PERSONALIZE GENERATE KEY (80 40 01). Intermediate blocks of a
 * chain (CLA bit 10) are answered 9000 and stay exact. The protocol's
 * {@link answerIsFresh}.
 */
export function isLooseCommand(apdu: Uint8Array): boolean {
  return answerIsFresh(apdu);
}

function isGetResponse(apdu: Uint8Array): boolean {
  return identifyCommand(apdu) === 'GET_RESPONSE';
}

function isMoreData(rsp: Uint8Array): boolean {
  return rsp.length >= 2 && isMoreDataSw((rsp[rsp.length - 2]! << 8) | rsp[rsp.length - 1]!);
}

/** Statistics over everything recorded in a run (what the short-APDU conformance case checks). */
export interface ApduStats {
  /** Commands sent. */
  commands: number;
  /** Largest command data field seen in a well-formed short command (bytes). */
  maxCommandData: number;
  /** Largest answer (data + SW) seen. */
  maxResponse: number;
  /** Commands that were not short APDUs (extended length, or data over 255), outside cases that send them on purpose. */
  nonShort: number;
}

/** Data length of a short command APDU, or -1 when it is not a well-formed short APDU. */
export function shortDataLength(apdu: Uint8Array): number {
  if (apdu.length < 4) return -1;
  if (apdu.length === 4 || apdu.length === 5) return 0;
  const lc = apdu[4]!;
  if (lc === 0) return -1; // extended length
  if (apdu.length === 5 + lc || apdu.length === 6 + lc) return lc;
  return -1;
}

/** What the recorder keeps of the case being run. */
interface CaseTape {
  readonly suite: string;
  readonly name: string;
  readonly exchanges: Exchange[];
  reader: string;
  atr?: Uint8Array;
  /** Cases that send malformed APDUs on purpose are left out of {@link ApduStats.nonShort}. */
  allowNonShort: boolean;
  /** Control events since the last exchange (they go before the next one). */
  events: ControlEvent[];
}

/** Options of {@link Recorder}. */
export interface RecorderOptions {
  /** Tool name and version for transcript headers. */
  readonly tool: string;
  /** Default reader name for headers. */
  readonly reader: string;
  /** Secrets to mask (the `--pin` digits, as ASCII bytes). */
  readonly secrets?: readonly Uint8Array[];
}

/** Records APDUs per case and writes transcripts. */
export class Recorder {
  readonly #o: RecorderOptions;
  readonly #public: Uint8Array[] = [];
  #tape: CaseTape | undefined;
  #seq = 0;
  #looseContinues = false;
  readonly stats: ApduStats = { commands: 0, maxCommandData: 0, maxResponse: 0, nonShort: 0 };
  readonly #transfers = new Map<string, SignedTransfer>();
  readonly #voided = new Set<string>();
  /** Card public keys seen in the run (key id hex -> key): the accounting verifies transfers with them. */
  readonly #cardKeys = new Map<string, Uint8Array>();

  /** Creates a recorder. */
  constructor(options: RecorderOptions) {
    this.#o = options;
  }

  /**
   * Declares a made-up value (a wrong PIN the lab chose at random) as not
   * secret, so that it stays in clear in transcripts and replays exactly.
   */
  declarePublic(value: Uint8Array): void {
    this.#public.push(value.slice());
  }

  /** Starts recording a case. */
  begin(suite: string, name: string): void {
    this.#tape = { suite, name, exchanges: [], reader: this.#o.reader, allowNonShort: false, events: [] };
    this.#looseContinues = false;
  }

  /** Marks the current case as one that sends non-short or malformed APDUs on purpose. */
  allowNonShort(): void {
    if (this.#tape) this.#tape.allowNonShort = true;
  }

  /** Notes the session's reader and ATR for the current case's header. */
  noteSession(reader: string, atr: Uint8Array | undefined): void {
    if (!this.#tape) return;
    this.#tape.reader = reader;
    if (atr) this.#tape.atr = atr.slice();
  }

  /**
   * Transfers the card signed in the cases recorded so far (distinct by
   * nonce: a torn-tap retry hands the same transfer over again): the value
   * that left the card during the run, as the card's own handovers show it.
   */
  get transfers(): readonly SignedTransfer[] {
    return [...this.#transfers.values()];
  }

  /** Transfer hashes (hex) voided by the ledger in receipts the card accepted during the run. */
  get voided(): readonly string[] {
    return [...this.#voided];
  }

  /** Exchanges recorded so far in the current case (masked commands keep their real bytes here: never print them). */
  get current(): readonly Exchange[] {
    return this.#tape?.exchanges ?? [];
  }

  /**
   * Ends the case and writes its transcript under `outDir`; returns the
   * path relative to `outDir` (or undefined when no case was being recorded).
   */
  end(outDir: string, fileName: string): string | undefined {
    const tape = this.#tape;
    this.#tape = undefined;
    if (!tape) return undefined;
    const money = moneyIn(tape.exchanges, this.#cardKeys);
    for (const t of money.transfers) if (!this.#transfers.has(t.nonce)) this.#transfers.set(t.nonce, t);
    for (const v of money.voided) this.#voided.add(v);
    const rel = join('transcripts', safeName(tape.suite), `${fileName}.apdu`);
    const path = join(outDir, rel);
    makeDirs(dirname(path));
    const text = formatTranscript(
      {
        tool: this.#o.tool,
        suite: tape.suite,
        case: tape.name,
        seq: this.#seq++,
        reader: tape.reader,
        ...(tape.atr ? { atr: tape.atr } : {}),
        time: new Date().toISOString(),
      },
      tape.exchanges,
      tape.events,
    );
    writeFileSync(path, text, { mode: 0o644 });
    return rel;
  }

  /** Records one exchange into the current case (and the run statistics). */
  record(command: Uint8Array, response: Uint8Array | undefined, ms: number, noAnswer?: string): void {
    if (response !== undefined && response.length < 2) {
      // Not an answer (no status word): kept as "no answer" with the bytes that came, so the transcript stays parseable.
      noAnswer = `answer of ${response.length} byte(s) without a status word${response.length ? `: ${Buffer.from(response).toString('hex')}` : ''}`;
      response = undefined;
    }
    const loose = isLooseCommand(command) || (isGetResponse(command) && this.#looseContinues);
    this.#looseContinues = loose && response !== undefined && isMoreData(response);
    this.stats.commands++;
    const n = shortDataLength(command);
    if (n < 0 || command.length > 261) {
      if (!this.#tape?.allowNonShort) this.stats.nonShort++;
    } else if (n > this.stats.maxCommandData) this.stats.maxCommandData = n;
    if (response && response.length > this.stats.maxResponse) this.stats.maxResponse = response.length;
    if (!this.#tape) return;
    const mask = maskSecrets(command, this.#o.secrets ?? [], this.#public);
    const before = this.#tape.events;
    this.#tape.events = [];
    const x: Exchange = {
      command: command.slice(),
      ...(mask ? { mask } : {}),
      ...(before.length ? { before } : {}),
      ...(response !== undefined ? { response: response.slice() } : { noAnswer: noAnswer ?? 'no answer' }),
      ...(loose && response !== undefined ? { loose: true } : {}),
      ms,
    };
    this.#tape.exchanges.push(x);
  }

  /** Records a control event into the current case, before its next exchange. */
  recordControl(event: ControlEvent): void {
    this.#tape?.events.push(event);
  }

  /**
   * Wraps a card control channel so that what changes the card (arm,
   * disarm, remove, insert) goes into the current case's transcript. A plan
   * with random parts (a torn write of random length, a corrupted frame) is
   * given a seed first, unless it has one: the card then does what replay
   * can do again. An event is recorded once the card has done it; one that
   * failed is not.
   */
  wrapControl(c: CardControlClient): CardControlClient {
    const seeded = (plan: FaultPlan): FaultPlan =>
      plan.seed === undefined && (plan.torn === true || plan.corruptFrame !== undefined) ? { ...plan, seed: randomInt(0, 2 ** 32) } : plan;
    return {
      remove: async (reinsertAfterMs?: number) => {
        await c.remove(reinsertAfterMs);
        this.recordControl(reinsertAfterMs === undefined ? { command: 'remove' } : { command: 'remove', reinsertAfterMs });
      },
      insert: async () => {
        await c.insert();
        this.recordControl({ command: 'insert' });
      },
      arm: async (plan: FaultPlan) => {
        const p = seeded(plan);
        await c.arm(p);
        this.recordControl({ command: 'arm', plan: p });
      },
      disarm: async () => {
        await c.disarm();
        this.recordControl({ command: 'disarm' });
      },
      events: () => c.events(),
      status: () => c.status(),
      close: () => c.close(),
    };
  }

  /** Wraps a transport so that its exchanges are recorded. */
  wrapTransport<T extends ApduTransport>(t: T): ApduTransport {
    return {
      transmit: async (apdu: Uint8Array, options?: TransmitOptions): Promise<Uint8Array> => {
        const start = performance.now();
        try {
          const rsp = await t.transmit(apdu, options);
          this.record(apdu, rsp, performance.now() - start);
          return rsp;
        } catch (e) {
          this.record(apdu, undefined, performance.now() - start, reason(e));
          throw e;
        }
      },
    };
  }

  /** Wraps a session (keeps reader, ATR and release). */
  wrapSession(s: CardSession): CardSession {
    this.noteSession(s.reader, s.atr);
    const t = this.wrapTransport(s);
    return {
      reader: s.reader,
      ...(s.atr ? { atr: s.atr } : {}),
      transmit: (apdu, o) => t.transmit(apdu, o),
      release: () => s.release(),
    };
  }

  /** Wraps a reader so that every session it hands out is recorded. */
  wrapReader(r: CardReader): CardReader {
    return {
      get name() {
        return r.name;
      },
      waitForCard: async (options?: WaitOptions) => this.wrapSession(await r.waitForCard(options)),
      close: () => r.close(),
    };
  }
}

/** One line, no secrets: the error's name/code and message. */
function reason(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return `${typeof code === 'string' ? `${code}: ` : ''}${e.message}`.replace(/\s+/g, ' ').slice(0, 200);
  }
  return String(e).slice(0, 200);
}

/** A file-system-safe name: lower-case letters, digits, `-`, `_` and `.`. */
export function safeName(name: string): string {
  const s = name
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[.-]+/, '');
  return s.slice(0, 100) || 'case';
}
