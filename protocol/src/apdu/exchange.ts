/**
 * APDU exchange logic over the toolkit's single device interface
 * ({@link ApduTransport}), for both ends of the link:
 *
 * - reader side: {@link exchange} and {@link transmitOk} send a command of any
 *   size (chaining it when needed), retry once on 6Cxx and collect long
 *   responses through 61xx / GET RESPONSE;
 * - card side: {@link CommandAssembler} reassembles chained commands,
 *   {@link ResponseSender} serves long responses in 256-byte pieces, and
 *   {@link CardApduProcessor} combines both around a command handler.
 *
 * Everything here is pure: no timers and no I/O besides the transport that the
 * caller passes in. Timeouts belong to transports, which see the same
 * AbortSignal.
 *
 * @module
 */

import { DtError, ErrorCode } from '../errors.ts';
import { CLA, INS, SW, isMoreData, isWrongLe, swLength } from './constants.ts';
import {
  CardStatusError,
  DEFAULT_MAX_COMMAND_DATA,
  MAX_SHORT_LE,
  chainCommand,
  decodeCommand,
  decodeResponse,
  encodeCommand,
  encodeResponse,
  getResponseCommand,
  statusError,
} from './codec.ts';
import type { CommandApdu, ResponseApdu } from './codec.ts';

/**
 * The subset of the standard `AbortSignal` this package relies on. The
 * protocol package is compiled without DOM or Node typings; a real
 * `AbortSignal` satisfies this interface.
 */
export interface AbortSignalLike {
  /** True once the operation has been cancelled. */
  readonly aborted: boolean;
  /** Why it was cancelled (a DOMException named AbortError by default). */
  readonly reason?: unknown;
  /** Registers an abort listener (transports use it to cancel a pending read). */
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  /** Removes a listener added with `addEventListener`. */
  removeEventListener(type: 'abort', listener: () => void): void;
}

/** Options of one {@link ApduTransport.transmit} call. */
export interface TransmitOptions {
  /** Cancels the call; the transport rejects with the signal's reason. */
  signal?: AbortSignalLike;
}

/**
 * The one device interface of the toolkit: send one encoded command APDU,
 * receive one encoded response APDU (data | SW1 SW2).
 *
 * PC/SC, HID, serial and in-memory transports implement it; chaining,
 * GET RESPONSE handling, secure channels and logging wrap it; command sets
 * depend only on it. A transport sends exactly the bytes it is given and
 * returns exactly what the device answered; it rejects when `signal` aborts.
 */
export interface ApduTransport {
  /** Sends one command APDU and resolves with the response APDU bytes. */
  transmit(apdu: Uint8Array, options?: TransmitOptions): Promise<Uint8Array>;
}

/** Options of {@link exchange} and {@link transmitOk}. */
export interface ExchangeOptions {
  /** Cancels the exchange between APDUs and inside the transport. */
  signal?: AbortSignalLike;
  /** Bound on the total response data collected through 61xx (default 65536). */
  maxResponse?: number;
  /** Bound on the command data, see {@link chainCommand} (default 65535). */
  maxCommand?: number;
}

/** Default bound on the response data of one exchange. */
export const DEFAULT_MAX_RESPONSE = 65536;

/**
 * Error thrown when an exchange is aborted and the signal carries no reason.
 * Named `AbortError` like the DOMException that `AbortController.abort()` uses.
 */
export class AbortError extends DtError {
  /** Builds the error. */
  constructor(message = 'operation aborted') {
    super(ErrorCode.ABORTED, message);
    this.name = 'AbortError';
  }
}

/** Throws the signal's reason (or an {@link AbortError}) when it has aborted. */
export function throwIfAborted(signal: AbortSignalLike | undefined): void {
  // eslint-disable-next-line @typescript-eslint/only-throw-error -- the abort reason, thrown as the caller gave it
  if (signal?.aborted) throw signal.reason ?? new AbortError();
}

function concat(parts: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function tooLarge(received: number, limit: number): DtError {
  return new DtError(ErrorCode.TOO_LARGE, `response data of ${received} bytes or more exceeds the limit of ${limit}`, {
    length: received,
    limit,
  });
}

/**
 * Sends a command of any size and returns the card's complete answer.
 *
 * Steps, with `signal` checked before every APDU:
 * 1. The command is split with {@link chainCommand}. Each intermediate block
 *    must answer 9000; any other status ends the exchange and is returned.
 * 2. If the last block answers 6Cxx, the whole command is sent once more with
 *    Le = xx (00 meaning 256). A card answering 6Cxx has not executed the
 *    command, and a chained command must be re-sent whole because the card
 *    has consumed the earlier blocks.
 * 3. While the answer is 61xx, GET RESPONSE (00 C0 00 00 xx) fetches the next
 *    piece; pieces are concatenated. A GET RESPONSE answered by 6Cxx is
 *    re-sent once with the Le the card names.
 *
 * Non-9000 status words are returned, not thrown; see {@link transmitOk}.
 *
 * @throws DtError TOO_LARGE when the response would exceed `maxResponse` (or
 *   the command `maxCommand`); APDU_MALFORMED when the card answers 61xx to a
 *   GET RESPONSE without returning any data; the signal's reason (or
 *   {@link AbortError}) when aborted; whatever the transport throws.
 */
export async function exchange(transport: ApduTransport, cmd: CommandApdu, options: ExchangeOptions = {}): Promise<ResponseApdu> {
  const { signal, maxResponse = DEFAULT_MAX_RESPONSE, maxCommand = DEFAULT_MAX_COMMAND_DATA } = options;
  if (!Number.isInteger(maxResponse) || maxResponse < 0) {
    throw new RangeError('maxResponse must be a non-negative integer');
  }
  const transmitOptions: TransmitOptions | undefined = signal === undefined ? undefined : { signal };

  const send = async (apdu: CommandApdu): Promise<ResponseApdu> => {
    throwIfAborted(signal);
    const raw = await transport.transmit(encodeCommand(apdu), transmitOptions);
    return decodeResponse(raw);
  };

  // Sends all blocks; `final` says whether the answer is the last block's.
  const sendChain = async (blocks: readonly CommandApdu[]): Promise<{ response: ResponseApdu; final: boolean }> => {
    for (let i = 0; i < blocks.length - 1; i++) {
      const response = await send(blocks[i]!);
      if (response.sw !== SW.OK) return { response, final: false };
    }
    return { response: await send(blocks[blocks.length - 1]!), final: true };
  };

  const first = await sendChain(chainCommand(cmd, maxCommand));
  if (!first.final) return first.response;
  let response = first.response;
  if (isWrongLe(response.sw)) {
    const retry = await sendChain(chainCommand({ ...cmd, le: swLength(response.sw) }, maxCommand));
    if (!retry.final) return retry.response;
    response = retry.response;
  }

  let total = response.data.length;
  if (total > maxResponse) throw tooLarge(total, maxResponse);
  const parts: Uint8Array[] = [response.data];

  while (isMoreData(response.sw)) {
    // 61xx announces xx bytes, 6100 announces 256 or more: either way at
    // least this much is coming, so refuse before asking for it.
    const announced = swLength(response.sw);
    if (total + announced > maxResponse) throw tooLarge(total + announced, maxResponse);
    response = await send(getResponseCommand(announced));
    if (isWrongLe(response.sw)) response = await send(getResponseCommand(swLength(response.sw)));
    if (response.data.length === 0 && isMoreData(response.sw)) {
      // Without this, a faulty card could keep the reader looping forever.
      throw new DtError(ErrorCode.APDU_MALFORMED, 'card answered 61xx to GET RESPONSE without returning data');
    }
    total += response.data.length;
    if (total > maxResponse) throw tooLarge(total, maxResponse);
    parts.push(response.data);
  }
  return { data: parts.length === 1 ? parts[0]! : concat(parts, total), sw: response.sw };
}

/**
 * Like {@link exchange}, but returns only the data and throws unless the final
 * status word is 9000.
 *
 * @throws CardStatusError (or WrongPinError for 63Cx) built by
 *   {@link statusError}, with `ins` set to the command's INS; plus everything
 *   {@link exchange} throws.
 * @example
 * const version = await transmitOk(transport, selectCommand(), { signal });
 */
export async function transmitOk(transport: ApduTransport, cmd: CommandApdu, options: ExchangeOptions = {}): Promise<Uint8Array> {
  const { data, sw } = await exchange(transport, cmd, options);
  if (sw !== SW.OK) throw statusError(sw, cmd.ins);
  return data;
}

// ---------------------------------------------------------------------------
// Card side
// ---------------------------------------------------------------------------

/** Result of {@link CommandAssembler.push}. */
export type AssemblerResult =
  /** The command is complete (single APDU or last block of a chain). */
  | { kind: 'complete'; command: CommandApdu }
  /** An intermediate chained block was accepted; the card answers `sw` (9000). */
  | { kind: 'continue'; sw: number }
  /** The block was refused and any pending chain discarded; the card answers `sw`. */
  | { kind: 'error'; sw: number };

/** Options of {@link CommandAssembler}. */
export interface CommandAssemblerOptions {
  /** Bound on the total data of a chained command (default 65535). */
  maxData?: number;
}

/**
 * Card-side reassembly of chained commands (ISO/IEC 7816-4 section 5.4.1).
 *
 * Feed every received command APDU (except GET RESPONSE) to {@link push}:
 * - a block with the chaining bit (CLA & 0x10) is buffered; the card answers 9000;
 * - a block without it completes the command: the data of all blocks is
 *   concatenated and the command is returned with the chaining bit cleared
 *   and the last block's Le.
 *
 * All blocks of a chain must have the same CLA (ignoring bit 0x10), INS, P1
 * and P2; a block that does not match discards the chain and gets 6883 (last
 * command of the chain expected). Data beyond `maxData` discards the chain and
 * gets 6700, as does an undecodable APDU.
 */
export class CommandAssembler {
  readonly #maxData: number;
  #header: { cla: number; ins: number; p1: number; p2: number } | undefined;
  #parts: Uint8Array[] = [];
  #size = 0;

  /** Creates an assembler with no pending chain. */
  constructor(options: CommandAssemblerOptions = {}) {
    this.#maxData = options.maxData ?? DEFAULT_MAX_COMMAND_DATA;
  }

  /** True while a chain has started and its last block has not arrived. */
  get pending(): boolean {
    return this.#header !== undefined;
  }

  /** Drops any pending chain (e.g. on reset or applet deselection). */
  reset(): void {
    this.#header = undefined;
    this.#parts = [];
    this.#size = 0;
  }

  /** Accepts one received command APDU, raw or already decoded. */
  push(apdu: Uint8Array | CommandApdu): AssemblerResult {
    let cmd: CommandApdu;
    if (apdu instanceof Uint8Array) {
      try {
        cmd = decodeCommand(apdu);
      } catch {
        this.reset();
        return { kind: 'error', sw: SW.WRONG_LENGTH };
      }
    } else {
      cmd = apdu;
    }
    const chained = (cmd.cla & CLA.CHAINING) !== 0;
    const cla = cmd.cla & ~CLA.CHAINING;
    const header = this.#header;
    if (header !== undefined && (header.cla !== cla || header.ins !== cmd.ins || header.p1 !== cmd.p1 || header.p2 !== cmd.p2)) {
      this.reset();
      return { kind: 'error', sw: SW.CHAIN_EXPECTED };
    }
    const data = cmd.data ?? new Uint8Array(0);
    if (this.#size + data.length > this.#maxData) {
      this.reset();
      return { kind: 'error', sw: SW.WRONG_LENGTH };
    }
    if (chained) {
      if (header === undefined) this.#header = { cla, ins: cmd.ins, p1: cmd.p1, p2: cmd.p2 };
      this.#parts.push(data.slice());
      this.#size += data.length;
      return { kind: 'continue', sw: SW.OK };
    }
    if (header === undefined) return { kind: 'complete', command: cmd };

    this.#parts.push(data);
    const command: CommandApdu = { cla, ins: cmd.ins, p1: cmd.p1, p2: cmd.p2, data: concat(this.#parts, this.#size + data.length) };
    if (cmd.le !== undefined) command.le = cmd.le;
    this.reset();
    return { kind: 'complete', command };
  }
}

/**
 * Card-side sender of long responses through 61xx and GET RESPONSE.
 *
 * {@link begin} returns the first piece of a response; if more remains, the
 * piece ends with 61xx where xx is the number of bytes left (00 when 256 or
 * more are left). Each {@link getResponse} returns the next piece, at most Le
 * bytes (fewer if fewer remain), again with 61xx while data remains and with
 * the response's own status word on the last piece. A GET RESPONSE with
 * nothing pending answers 6985.
 */
export class ResponseSender {
  #data: Uint8Array = new Uint8Array(0);
  #offset = 0;
  #finalSw: number = SW.OK;
  #active = false;

  /** Bytes still to be served by GET RESPONSE. */
  get remaining(): number {
    return this.#active ? this.#data.length - this.#offset : 0;
  }

  /** Forgets any pending response (the card does this on every other command). */
  reset(): void {
    this.#data = new Uint8Array(0);
    this.#offset = 0;
    this.#finalSw = SW.OK;
    this.#active = false;
  }

  /**
   * Starts sending a response and returns its first piece.
   *
   * @param data the complete response data.
   * @param sw the status word of the complete response (default 9000), sent
   *   with the last piece.
   * @param le Le of the command being answered (1..256); the first piece holds
   *   at most this many bytes. Absent means 256.
   */
  begin(data: Uint8Array, sw: number = SW.OK, le: number = MAX_SHORT_LE): ResponseApdu {
    this.#data = data;
    this.#offset = 0;
    this.#finalSw = sw;
    this.#active = true;
    return this.#next(le);
  }

  /** Answers a GET RESPONSE with the given Le (1..256). */
  getResponse(le: number = MAX_SHORT_LE): ResponseApdu {
    if (!this.#active) return { data: new Uint8Array(0), sw: SW.CONDITIONS_NOT_SATISFIED };
    return this.#next(le);
  }

  #next(le: number): ResponseApdu {
    const size = Math.max(0, Math.min(le, MAX_SHORT_LE, this.#data.length - this.#offset));
    const piece = this.#data.slice(this.#offset, this.#offset + size);
    this.#offset += size;
    const left = this.#data.length - this.#offset;
    if (left > 0) return { data: piece, sw: SW.moreData(left) };
    const sw = this.#finalSw;
    this.reset();
    return { data: piece, sw };
  }
}

/**
 * Handles one complete command on the card and returns its response. May
 * throw a {@link CardStatusError} to answer that status word with no data.
 */
export type CardCommandHandler = (command: CommandApdu) => ResponseApdu | Promise<ResponseApdu>;

/**
 * Card-side APDU front end: decodes each received APDU, serves GET RESPONSE
 * from a {@link ResponseSender}, reassembles chains with a
 * {@link CommandAssembler}, calls the handler with each complete command and
 * splits its response into 256-byte pieces.
 *
 * Any APDU other than GET RESPONSE drops an unfinished long response, as ISO
 * 7816-4 requires. A {@link CardStatusError} thrown by the handler becomes its
 * status word; any other error propagates to the caller (the firmware decides
 * between 6F00 and a reset).
 */
export class CardApduProcessor {
  readonly #handler: CardCommandHandler;
  readonly #assembler: CommandAssembler;
  readonly #sender = new ResponseSender();

  /** Wraps `handler`; `options` bound the size of chained commands. */
  constructor(handler: CardCommandHandler, options: CommandAssemblerOptions = {}) {
    this.#handler = handler;
    this.#assembler = new CommandAssembler(options);
  }

  /** Processes one command APDU and returns the encoded response APDU. */
  async process(apdu: Uint8Array): Promise<Uint8Array> {
    let cmd: CommandApdu;
    try {
      cmd = decodeCommand(apdu);
    } catch {
      this.#sender.reset();
      this.#assembler.reset();
      return encodeResponse(new Uint8Array(0), SW.WRONG_LENGTH);
    }
    if (cmd.cla === CLA.ISO && cmd.ins === INS.GET_RESPONSE) {
      if (cmd.p1 !== 0 || cmd.p2 !== 0) return encodeResponse(new Uint8Array(0), SW.INCORRECT_P1P2);
      const piece = this.#sender.getResponse(cmd.le ?? MAX_SHORT_LE);
      return encodeResponse(piece.data, piece.sw);
    }
    this.#sender.reset();
    const step = this.#assembler.push(cmd);
    if (step.kind !== 'complete') return encodeResponse(new Uint8Array(0), step.sw);

    let response: ResponseApdu;
    try {
      response = await this.#handler(step.command);
    } catch (e) {
      if (e instanceof CardStatusError) return encodeResponse(new Uint8Array(0), e.sw);
      throw e;
    }
    const piece = this.#sender.begin(response.data, response.sw, step.command.le ?? MAX_SHORT_LE);
    return encodeResponse(piece.data, piece.sw);
  }
}
