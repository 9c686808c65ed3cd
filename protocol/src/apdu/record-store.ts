/**
 * Recorded APDU exchanges, and transports that record or replay them (the
 * ledgerjs `RecordStore` pattern): host code is tested against the bytes a
 * real card answered, and a replay fails on the first command that differs
 * from the recording and on any recorded exchange left over.
 *
 * Text format (the lab's transcript format, `hardware-tests/src/transcript.ts`,
 * without masks):
 *
 * ```text
 * # a comment (also the lab's header lines and "# 1.2 ms" timings)
 * => 00a404000af0445457414c4c45540100
 * <= a6...9000
 * => 8030000000...
 * <=
 * # no answer: card left the field
 * ```
 *
 * `=> <hex>` is one command APDU exactly as sent, `<= <hex>` its answer
 * (data, SW1, SW2). `<=` alone records a command that got no answer: a
 * replay throws at that point, as a transport does when the card leaves the
 * field. `<= ~<hex>` (the lab's mark for a signed or random answer) is read
 * as `<= <hex>`: a replay serves the recorded bytes. Masked bytes (`**`,
 * `??`) are refused: such a command cannot be compared.
 *
 * Pure: no I/O; reading and writing files is the caller's.
 *
 * @module
 */
import { fromHex, toHex } from '../bytes.ts';
import type { ApduTransport, TransmitOptions } from './exchange.ts';
import { throwIfAborted } from './exchange.ts';

/** One recorded exchange: the command and its answer, or no answer. */
export interface RecordedExchange {
  /** The command APDU as sent. */
  readonly command: Uint8Array;
  /** The answer (data | SW1 SW2); `undefined` when the command got none. */
  readonly response?: Uint8Array;
  /** Why there was no answer, when recorded (written as `# no answer: <reason>`). */
  readonly noAnswer?: string;
  /** 1-based line of the `=>` line in the text it was read from (0 when recorded in memory). */
  readonly line: number;
}

/** Why a record store refused: a malformed text, a command that differs, a replay past the end, lines left over. */
export type RecordStoreErrorCode = 'RECORD_SYNTAX' | 'RECORD_MISMATCH' | 'RECORD_EXHAUSTED' | 'RECORD_LEFTOVER';

/**
 * A record store refused a text or a replay. A test-harness error, not a
 * protocol one: it carries its own stable `code` and the 1-based `line` of
 * the recording it is about (0 when none).
 */
export class RecordStoreError extends Error {
  /** Stable code. */
  readonly code: RecordStoreErrorCode;
  /** 1-based line in the recording (0: none). */
  readonly line: number;

  /** Builds the error. */
  constructor(code: RecordStoreErrorCode, line: number, message: string) {
    super(`${line > 0 ? `line ${line}: ` : ''}${message}`);
    this.name = 'RecordStoreError';
    this.code = code;
    this.line = line;
  }
}

/** Largest number of exchanges one text may hold (a bound for input like any other). */
export const MAX_RECORDED_EXCHANGES = 100_000;

function parseHexLine(text: string, line: number): Uint8Array {
  const compact = text.replace(/[ \t]+/g, '');
  if (/[*?]/.test(compact)) throw new RecordStoreError('RECORD_SYNTAX', line, 'masked bytes cannot be replayed');
  if (compact.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(compact))
    throw new RecordStoreError('RECORD_SYNTAX', line, 'not an even number of hex digits');
  return fromHex(compact.toLowerCase());
}

/**
 * A sequence of recorded exchanges with a replay cursor.
 *
 * @example
 * const store = RecordStore.fromString(readFileSync('approved.apdu', 'utf8'));
 * const outcome = await kernel.charge(readerOver(replayTransport(store)), 1500);
 * store.ensureQueueEmpty(); // every recorded exchange was used
 */
export class RecordStore {
  readonly #exchanges: RecordedExchange[] = [];
  #next = 0;
  /** The first refusal of a replay, kept: a host that catches transport errors must not hide it. */
  #failure: RecordStoreError | undefined;

  /** Parses a recording (see the module documentation); throws {@link RecordStoreError} `RECORD_SYNTAX` with the line. */
  static fromString(text: string): RecordStore {
    const store = new RecordStore();
    const lines = text.split('\n');
    let pending: { command: Uint8Array; line: number } | undefined;
    for (let i = 0; i < lines.length; i++) {
      const n = i + 1;
      const line = lines[i]!.replace(/\r$/, '').trim();
      if (line === '' || line.startsWith('#')) continue;
      if (line.startsWith('=>')) {
        if (pending) throw new RecordStoreError('RECORD_SYNTAX', n, `the command of line ${pending.line} has no "<=" answer line`);
        const command = parseHexLine(line.slice(2), n);
        if (command.length < 4) throw new RecordStoreError('RECORD_SYNTAX', n, 'a command has at least CLA INS P1 P2');
        pending = { command, line: n };
        continue;
      }
      if (line.startsWith('<=')) {
        if (!pending) throw new RecordStoreError('RECORD_SYNTAX', n, '"<=" must follow a "=>" line');
        let rest = line.slice(2).trim();
        if (rest.startsWith('~')) rest = rest.slice(1).trim();
        if (rest === '') {
          store.#push({ command: pending.command, line: pending.line });
        } else {
          const response = parseHexLine(rest, n);
          if (response.length < 2) throw new RecordStoreError('RECORD_SYNTAX', n, 'an answer holds at least SW1 SW2');
          store.#push({ command: pending.command, response, line: pending.line });
        }
        pending = undefined;
        continue;
      }
      throw new RecordStoreError('RECORD_SYNTAX', n, `unknown line (expected "#", "=>" or "<="): ${line.slice(0, 40)}`);
    }
    if (pending) throw new RecordStoreError('RECORD_SYNTAX', pending.line, 'command without an answer at the end');
    return store;
  }

  #push(x: RecordedExchange): void {
    if (this.#exchanges.length >= MAX_RECORDED_EXCHANGES)
      throw new RecordStoreError('RECORD_SYNTAX', x.line, `more than ${MAX_RECORDED_EXCHANGES} exchanges`);
    this.#exchanges.push(x);
  }

  /** Every exchange, in order. */
  get exchanges(): readonly RecordedExchange[] {
    return this.#exchanges;
  }

  /** The line of the next exchange to replay (0 when none is left, or it was recorded in memory). */
  get nextLine(): number {
    return this.#exchanges[this.#next]?.line ?? 0;
  }

  /** True once every exchange has been replayed. */
  get isEmpty(): boolean {
    return this.#next >= this.#exchanges.length;
  }

  /** Appends an exchange (what a recording transport does); without a response, `noAnswer` says why. */
  record(command: Uint8Array, response: Uint8Array | undefined, noAnswer?: string): void {
    this.#push({
      command: command.slice(),
      ...(response ? { response: response.slice() } : { noAnswer: noAnswer ?? 'no answer' }),
      line: 0,
    });
  }

  /**
   * Replays the next exchange: `command` must equal the recorded command
   * byte for byte; returns the recorded answer, or `undefined` when the
   * recording says the command got none.
   *
   * @throws RecordStoreError `RECORD_MISMATCH` (with both commands in hex) or
   *   `RECORD_EXHAUSTED` when nothing is left.
   */
  replayExchange(command: Uint8Array): Uint8Array | undefined {
    const x = this.#exchanges[this.#next];
    if (!x) throw this.#fail(new RecordStoreError('RECORD_EXHAUSTED', 0, `command ${toHex(command)} after the last recorded exchange`));
    if (toHex(x.command) !== toHex(command)) {
      throw this.#fail(new RecordStoreError('RECORD_MISMATCH', x.line, `expected command ${toHex(x.command)}, got ${toHex(command)}`));
    }
    this.#next++;
    return x.response;
  }

  #fail(e: RecordStoreError): RecordStoreError {
    this.#failure ??= e;
    return e;
  }

  /**
   * Throws the first refusal the replay met (`RECORD_MISMATCH`,
   * `RECORD_EXHAUSTED`), even when the host caught it (a payment kernel turns
   * transport errors into outcomes), then {@link RecordStoreError}
   * `RECORD_LEFTOVER` when recorded exchanges were not replayed.
   */
  ensureQueueEmpty(): void {
    if (this.#failure) throw this.#failure;
    const x = this.#exchanges[this.#next];
    if (x)
      throw new RecordStoreError(
        'RECORD_LEFTOVER',
        x.line,
        `${this.#exchanges.length - this.#next} recorded exchange(s) not replayed, the next: ${toHex(x.command)}`,
      );
  }

  /** The recording as text, one `=>` and one `<=` line per exchange after the `comments` (each written as `# ...`). */
  toString(comments: readonly string[] = []): string {
    // eslint-disable-next-line no-control-regex -- control characters in a comment would forge lines
    const out = comments.map((c) => `# ${c.replace(/[\u0000-\u001f\u007f]/g, ' ')}`.trimEnd());
    for (const x of this.#exchanges) {
      out.push(`=> ${toHex(x.command)}`);
      if (x.response) {
        out.push(`<= ${toHex(x.response)}`);
        continue;
      }
      // One line of text: a control character in the reason would forge lines.
      // eslint-disable-next-line no-control-regex -- control characters are what it removes
      out.push('<=', `# no answer: ${(x.noAnswer ?? 'no answer').replace(/[\u0000-\u001f\u007f]/g, ' ')}`);
    }
    return out.join('\n') + '\n';
  }
}

/** Options of {@link replayTransport}. */
export interface ReplayTransportOptions {
  /**
   * The error a recorded "no answer" throws (default a plain `Error`): hosts
   * pass their transport's own "card left the field" error.
   */
  readonly noAnswer?: (line: number) => Error;
}

/**
 * A transport that answers from `store` (see {@link RecordStore.replayExchange}):
 * any command that differs from the recording fails the exchange; check
 * {@link RecordStore.ensureQueueEmpty} at the end.
 */
export function replayTransport(store: RecordStore, options: ReplayTransportOptions = {}): ApduTransport {
  return {
    async transmit(apdu: Uint8Array, o: TransmitOptions = {}): Promise<Uint8Array> {
      throwIfAborted(o.signal);
      const line = store.nextLine;
      const response = store.replayExchange(apdu);
      if (response === undefined)
        throw options.noAnswer ? options.noAnswer(line) : new Error(`line ${line}: recorded no answer (the card left the field)`);
      return response.slice();
    },
  };
}

/**
 * A transport that passes every command to `inner` and records it with its
 * answer in `store`; a command whose transmit throws is recorded as "no
 * answer" (with the error's `code`, else its message, as the reason) and the
 * error rethrown.
 */
export function recordingTransport(inner: ApduTransport, store: RecordStore): ApduTransport {
  return {
    async transmit(apdu: Uint8Array, o: TransmitOptions = {}): Promise<Uint8Array> {
      let response: Uint8Array;
      try {
        response = await inner.transmit(apdu, o);
      } catch (e) {
        // The error's stable code when it has one (messages may change wording).
        const code = (e as { code?: unknown } | undefined)?.code;
        store.record(apdu, undefined, typeof code === 'string' ? code : e instanceof Error ? e.message : String(e));
        throw e;
      }
      store.record(apdu, response);
      return response;
    },
  };
}
