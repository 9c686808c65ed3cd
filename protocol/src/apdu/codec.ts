/**
 * ISO/IEC 7816-4 short APDU codec: command encode/decode, command chaining,
 * response encode/decode, and the typed errors for card status words.
 *
 * Only short APDUs are produced or accepted (Lc ≤ 255, Ne ≤ 256): common
 * contactless readers refuse extended APDUs, so long commands are chained
 * ({@link chainCommand}) and long responses come back through 61xx/GET RESPONSE.
 *
 * @module
 */

import { DtError, ErrorCode } from '../errors.ts';
import { CLA, INS, SW, describeSw, isWrongPin, swHex } from './constants.ts';

/** Largest data field of one short command APDU (Lc is one byte). */
export const MAX_SHORT_DATA = 255;

/** Largest Ne of one short command APDU (Le = 0x00 means 256). */
export const MAX_SHORT_LE = 256;

/** Default bound on the total data of a chained command ({@link chainCommand}). */
export const DEFAULT_MAX_COMMAND_DATA = 65535;

/**
 * A command APDU before encoding.
 *
 * `data` absent or empty means no data field (no Lc). `le` absent means no
 * response data expected (no Le); otherwise 1..256, 256 encoded as 0x00.
 */
export interface CommandApdu {
  /** Class byte, 0..255. */
  cla: number;
  /** Instruction byte, 0..255. */
  ins: number;
  /** Parameter 1, 0..255. */
  p1: number;
  /** Parameter 2, 0..255. */
  p2: number;
  /** Command data field, at most 255 bytes in one short APDU. */
  data?: Uint8Array;
  /** Expected response length Ne, 1..256. */
  le?: number;
}

/** A response APDU: data field followed by the status word SW1 SW2. */
export interface ResponseApdu {
  /** Response data field (possibly empty). */
  data: Uint8Array;
  /** Status word, SW1 in the high byte (e.g. 0x9000). */
  sw: number;
}

function checkByte(value: number, field: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xff) {
    throw new DtError(ErrorCode.APDU_MALFORMED, `${field} must be a byte (0..255)`, { field });
  }
}

function checkLe(le: number): void {
  if (!Number.isInteger(le) || le < 1) {
    throw new DtError(ErrorCode.APDU_MALFORMED, 'Le must be an integer 1..256', { field: 'le' });
  }
  if (le > MAX_SHORT_LE) {
    throw new DtError(ErrorCode.APDU_TOO_LONG, `Le ${le} needs an extended APDU (short APDUs allow up to 256)`, {
      field: 'le',
      limit: MAX_SHORT_LE,
    });
  }
}

/**
 * Encodes a short command APDU (ISO/IEC 7816-4 cases 1 to 4).
 *
 * ```text
 * offset 0  CLA
 * offset 1  INS
 * offset 2  P1
 * offset 3  P2
 * offset 4  Lc   (only if data is present: 1..255)
 *        5  data (Lc bytes)
 * last      Le   (only if le is present: 1..255, 0x00 = 256)
 * ```
 *
 * @throws DtError APDU_TOO_LONG when data exceeds 255 bytes or le exceeds 256,
 *   APDU_MALFORMED when a header byte or le is out of range.
 * @example
 * encodeCommand({ cla: 0x00, ins: 0xa4, p1: 0x04, p2: 0x00, data: DT_AID })
 * // 00 A4 04 00 0A F0 44 54 57 41 4C 4C 45 54 01
 */
export function encodeCommand(cmd: CommandApdu): Uint8Array {
  checkByte(cmd.cla, 'cla');
  checkByte(cmd.ins, 'ins');
  checkByte(cmd.p1, 'p1');
  checkByte(cmd.p2, 'p2');
  const data = cmd.data ?? new Uint8Array(0);
  if (data.length > MAX_SHORT_DATA) {
    throw new DtError(ErrorCode.APDU_TOO_LONG, `command data of ${data.length} bytes exceeds 255; use chaining`, {
      length: data.length,
      limit: MAX_SHORT_DATA,
    });
  }
  if (cmd.le !== undefined) checkLe(cmd.le);

  const hasLc = data.length > 0;
  const hasLe = cmd.le !== undefined;
  const out = new Uint8Array(4 + (hasLc ? 1 + data.length : 0) + (hasLe ? 1 : 0));
  out[0] = cmd.cla;
  out[1] = cmd.ins;
  out[2] = cmd.p1;
  out[3] = cmd.p2;
  let offset = 4;
  if (hasLc) {
    out[offset++] = data.length;
    out.set(data, offset);
    offset += data.length;
  }
  // Ne = 256 is written as 0x00 in a short Le field.
  if (hasLe) out[offset] = (cmd.le as number) & 0xff;
  return out;
}

/**
 * Strictly parses a short command APDU.
 *
 * Accepted layouts, by total length `n` (see {@link encodeCommand} for offsets):
 * - `n = 4`: case 1, header only;
 * - `n = 5`: case 2, header and Le;
 * - `n = 5 + Lc`, Lc ≠ 0: case 3, header, Lc, data;
 * - `n = 6 + Lc`, Lc ≠ 0: case 4, header, Lc, data, Le.
 *
 * A byte 0x00 at offset 4 followed by more bytes announces an extended APDU
 * and is rejected, as is any other length.
 *
 * @throws DtError APDU_MALFORMED for anything else.
 */
export function decodeCommand(bytes: Uint8Array): CommandApdu {
  const n = bytes.length;
  if (n < 4) {
    throw new DtError(ErrorCode.APDU_MALFORMED, `command APDU of ${n} bytes is shorter than its 4-byte header`, {
      length: n,
    });
  }
  const cmd: CommandApdu = { cla: bytes[0]!, ins: bytes[1]!, p1: bytes[2]!, p2: bytes[3]! };
  if (n === 4) return cmd;
  const b4 = bytes[4]!;
  if (n === 5) {
    cmd.le = b4 === 0 ? 256 : b4;
    return cmd;
  }
  if (b4 === 0) {
    throw new DtError(ErrorCode.APDU_MALFORMED, 'extended APDUs are not supported', { length: n });
  }
  const lc = b4;
  if (n === 5 + lc) {
    cmd.data = bytes.slice(5, 5 + lc);
    return cmd;
  }
  if (n === 6 + lc) {
    cmd.data = bytes.slice(5, 5 + lc);
    const le = bytes[5 + lc]!;
    cmd.le = le === 0 ? 256 : le;
    return cmd;
  }
  throw new DtError(ErrorCode.APDU_MALFORMED, `Lc ${lc} is inconsistent with a command APDU of ${n} bytes`, {
    lc,
    length: n,
  });
}

/**
 * Splits a command whose data exceeds 255 bytes into a chain of short
 * commands (ISO/IEC 7816-4 section 5.4.1).
 *
 * Each block carries the next 255 bytes (the last one the remainder). Every
 * block but the last has the chaining bit ({@link CLA}.CHAINING, 0x10) set in
 * its CLA and no Le; the last block has the original CLA and the original Le.
 * INS, P1 and P2 are repeated unchanged in every block. A command whose data
 * fits in one APDU is returned unchanged as a one-element array.
 *
 * @param maxData bound on the total data size (default 65535).
 * @throws DtError TOO_LARGE when the data exceeds `maxData`; APDU_MALFORMED
 *   when a chained command already has the chaining bit set in its CLA.
 * @example
 * chainCommand({ cla: 0x80, ins: 0x30, p1: 0, p2: 0, data: new Uint8Array(600), le: 256 })
 * // CLA 90 (255 bytes), CLA 90 (255 bytes), CLA 80 (90 bytes, Le 00)
 */
export function chainCommand(cmd: CommandApdu, maxData: number = DEFAULT_MAX_COMMAND_DATA): CommandApdu[] {
  const data = cmd.data;
  if (data !== undefined && data.length > maxData) {
    throw new DtError(ErrorCode.TOO_LARGE, `command data of ${data.length} bytes exceeds the limit of ${maxData}`, {
      length: data.length,
      limit: maxData,
    });
  }
  if (data === undefined || data.length <= MAX_SHORT_DATA) return [cmd];
  if ((cmd.cla & CLA.CHAINING) !== 0) {
    throw new DtError(ErrorCode.APDU_MALFORMED, 'CLA of a command to chain already has the chaining bit set', {
      field: 'cla',
    });
  }
  const blocks: CommandApdu[] = [];
  for (let offset = 0; offset < data.length; offset += MAX_SHORT_DATA) {
    const end = Math.min(offset + MAX_SHORT_DATA, data.length);
    const chunk = data.subarray(offset, end);
    if (end < data.length) {
      blocks.push({ cla: cmd.cla | CLA.CHAINING, ins: cmd.ins, p1: cmd.p1, p2: cmd.p2, data: chunk });
    } else {
      const last: CommandApdu = { cla: cmd.cla, ins: cmd.ins, p1: cmd.p1, p2: cmd.p2, data: chunk };
      if (cmd.le !== undefined) last.le = cmd.le;
      blocks.push(last);
    }
  }
  return blocks;
}

/**
 * Encodes a response APDU: the data field followed by SW1 SW2.
 *
 * ```text
 * offset 0    data (n bytes, possibly none)
 * offset n    SW1 (sw >> 8)
 * offset n+1  SW2 (sw & 0xFF)
 * ```
 *
 * The data length is not limited here: a card answers at most 256 bytes per
 * response (see `ResponseSender`), but HID and serial transports carry whole
 * responses.
 *
 * @throws DtError APDU_MALFORMED when `sw` is not a 16-bit integer.
 */
export function encodeResponse(data: Uint8Array, sw: number): Uint8Array {
  if (!Number.isInteger(sw) || sw < 0 || sw > 0xffff) {
    throw new DtError(ErrorCode.APDU_MALFORMED, 'status word must be a 16-bit integer', { field: 'sw' });
  }
  const out = new Uint8Array(data.length + 2);
  out.set(data, 0);
  out[data.length] = sw >>> 8;
  out[data.length + 1] = sw & 0xff;
  return out;
}

/**
 * Splits a response APDU into its data field and status word (the last two bytes).
 *
 * @throws DtError APDU_MALFORMED when fewer than 2 bytes are given.
 */
export function decodeResponse(bytes: Uint8Array): ResponseApdu {
  const n = bytes.length;
  if (n < 2) {
    throw new DtError(ErrorCode.APDU_MALFORMED, `response APDU of ${n} bytes has no status word`, { length: n });
  }
  return { data: bytes.slice(0, n - 2), sw: (bytes[n - 2]! << 8) | bytes[n - 1]! };
}

/** GET RESPONSE asking for `le` bytes (00 C0 00 00 Le, Le 0x00 = 256). */
export function getResponseCommand(le: number): CommandApdu {
  return { cla: CLA.ISO, ins: INS.GET_RESPONSE, p1: 0x00, p2: 0x00, le };
}

/**
 * The card answered a status word other than 9000.
 *
 * `sw` is the status word; `ins`, when known, is the instruction that got it.
 * The message is human: `card answered 6985 (conditions not satisfied) to INS 30`.
 */
export class CardStatusError extends DtError {
  /** The status word, SW1 in the high byte. */
  readonly sw: number;
  /** The instruction byte of the command that got this status, when known. */
  readonly ins: number | undefined;

  /** Builds the error; prefer {@link statusError}, which picks the subclass. */
  constructor(sw: number, ins?: number) {
    const to = ins === undefined ? '' : ` to INS ${ins.toString(16).toUpperCase().padStart(2, '0')}`;
    const details: Record<string, string | number> = { sw: swHex(sw) };
    if (ins !== undefined) details.ins = ins;
    super(ErrorCode.CARD_STATUS, `card answered ${swHex(sw)} (${describeSw(sw)})${to}`, details);
    this.name = 'CardStatusError';
    this.sw = sw;
    this.ins = ins;
  }
}

/** The card rejected a PIN (63Cx); `remaining` is x, the tries left. */
export class WrongPinError extends CardStatusError {
  /** Tries left before the PIN blocks (0..15). */
  readonly remaining: number;

  /** Builds the error from a 63Cx status word. */
  constructor(sw: number, ins?: number) {
    super(sw, ins);
    this.name = 'WrongPinError';
    this.remaining = sw & 0x0f;
  }
}

/**
 * The typed error for a non-9000 status word: {@link WrongPinError} for 63Cx,
 * {@link CardStatusError} otherwise.
 *
 * @example
 * throw statusError(0x63c2, INS.VERIFY_PIN) // WrongPinError, remaining 2
 */
export function statusError(sw: number, ins?: number): CardStatusError {
  return isWrongPin(sw) ? new WrongPinError(sw, ins) : new CardStatusError(sw, ins);
}

/** True when `sw` is 9000. */
export function isOk(sw: number): boolean {
  return sw === SW.OK;
}
