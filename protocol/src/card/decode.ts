/**
 * One parser per answer of the DT applet (SPEC §9.2, §10.4), and the reverse
 * of {@link CardCommand}: which command an APDU is.
 *
 * Parsers throw a `DtError` on bytes that do not decode (codecs throw); the
 * PIN commands' outcome is read from the status word as a typed result
 * ({@link parsePinResult}).
 *
 * @module
 */
import { CLA, SW, isWrongPin } from '../apdu/constants.ts';
import { decodeDeterministic } from '../cbor/deterministic.ts';
import { isValidPublicKey } from '../crypto/suite.ts';
import { DtError, ErrorCode } from '../errors.ts';
import {
  CardCommand,
  FRESH_ANSWER_COMMANDS,
  FORMAT_MAX_SIZE,
  SECRET_COMMANDS,
  STEP_INS,
  type CardCommandName,
  type CommandHeader,
} from './constants.ts';
import {
  CardStatusSchema,
  decodeFormat,
  decodeFormatLenient,
  SelectResponseSchema,
  type CardStatus,
  type SelectResponse,
} from './formats.ts';
import type { ApplicationInfo, PinResult } from './types.ts';

/** Bound on a SELECT answer read by {@link parseApplicationInfo}. */
export const MAX_SELECT_ANSWER = 1024;

/**
 * Reads a SELECT answer the way a host must (keycard-go's
 * `ParseApplicationInfo`): leniently, so that a later applet version may add
 * keys or bits. Unknown keys are ignored; a known field that does not fit
 * SPEC §10.4 is treated as absent, except `capabilities`, without which the
 * answer is not a DT applet's.
 *
 * @throws DtError when the answer is not deterministic CBOR (within
 *   `maxSize`), not a map (`SCHEMA_WRONG_TYPE`), or has no valid
 *   `capabilities` (`SCHEMA_MISSING_FIELD`, `details.field = 'capabilities'`).
 *
 * @example
 * const info = parseApplicationInfo(answer.data);
 * if ((info.capabilities & Capability.PAY) === 0) refuse();
 */
export function parseApplicationInfo(data: Uint8Array, maxSize: number = MAX_SELECT_ANSWER): ApplicationInfo {
  const f = decodeFormatLenient(SelectResponseSchema, data, maxSize);
  if (f === undefined) throw new DtError(ErrorCode.SCHEMA_WRONG_TYPE, 'SelectResponse: expected a map', { path: 'SelectResponse' });
  if (f.capabilities === undefined) {
    throw new DtError(ErrorCode.SCHEMA_MISSING_FIELD, 'SelectResponse.capabilities: no valid capabilities', {
      path: 'SelectResponse.capabilities',
      field: 'capabilities',
    });
  }
  return {
    ...(f.applet !== undefined ? { applet: f.applet } : {}),
    ...(f.protocol !== undefined ? { protocol: f.protocol } : {}),
    capabilities: f.capabilities,
    locked: f.locked === true,
    ...(f.maxCommand !== undefined ? { maxCommand: f.maxCommand } : {}),
    ...(f.card !== undefined ? { card: f.card } : {}),
  };
}

/**
 * Reads a SELECT answer strictly against SPEC §10.4 (every required key,
 * nothing else): what a conformance test checks and what tools that speak
 * to this applet version use.
 */
export function parseSelectResponse(data: Uint8Array): SelectResponse {
  return decodeFormat(SelectResponseSchema, data);
}

/** True when `info` announces capability bit `bit` (see `Capability`). */
export function hasCapability(info: { readonly capabilities: number }, bit: number): boolean {
  return (info.capabilities & bit) === bit;
}

/** Reads a GET STATUS answer strictly (SPEC §10.4 `CardStatus`). */
export function parseCardStatus(data: Uint8Array): CardStatus {
  return decodeFormat(CardStatusSchema, data);
}

/**
 * The nonce of the card's last signed transfer from a GET STATUS answer, read
 * leniently (a later applet may add keys): `undefined` when the answer is a
 * CBOR value but not a map, or carries no valid `lastNonce`.
 *
 * @throws DtError when the answer is not deterministic CBOR.
 */
export function parseLastNonce(data: Uint8Array, maxSize = 4096): Uint8Array | undefined {
  return decodeFormatLenient(CardStatusSchema, data, maxSize)?.lastNonce;
}

/** Reads a GET CERTIFICATES answer: a CBOR array of certificate byte strings `[card, issuing bank]`. */
export function parseCertificates(data: Uint8Array, maxSize: number = FORMAT_MAX_SIZE): Uint8Array[] {
  const chain = decodeDeterministic(data, maxSize);
  if (!Array.isArray(chain) || !chain.every((c) => c instanceof Uint8Array)) {
    throw new DtError(ErrorCode.SCHEMA_WRONG_TYPE, 'GET CERTIFICATES did not answer an array of byte strings');
  }
  return chain as Uint8Array[];
}

/** Reads a GENERATE KEY answer: the uncompressed P-256 public key `04 ‖ x ‖ y` (65 bytes), a point on the curve. */
export function parsePublicKey(data: Uint8Array): Uint8Array {
  if (!isValidPublicKey(data)) {
    throw new DtError(ErrorCode.BAD_KEY, `GENERATE KEY answered ${data.length} bytes, not an uncompressed P-256 key`, {
      length: data.length,
    });
  }
  return data;
}

/**
 * The outcome of VERIFY, CHANGE or UNBLOCK PIN from its status word.
 *
 * @example
 * parsePinResult(0x63c2) // { kind: 'wrong', remaining: 2 }
 */
export function parsePinResult(sw: number): PinResult {
  if (sw === SW.OK) return { kind: 'verified' };
  if (sw === SW.PIN_BLOCKED) return { kind: 'blocked' };
  if (isWrongPin(sw)) return { kind: 'wrong', remaining: sw & 0x0f };
  return { kind: 'refused', sw };
}

/** A command as bytes (at least CLA INS P1 P2) or as its header fields. */
export type CommandLike = Uint8Array | CommandHeader;

function headerOf(apdu: CommandLike): CommandHeader | undefined {
  if (!(apdu instanceof Uint8Array)) return apdu;
  if (apdu.length < 4) return undefined;
  return { cla: apdu[0]!, ins: apdu[1]!, p1: apdu[2]!, p2: apdu[3]! };
}

/** True when the chaining bit of the CLA is set: a block of a chain other than the last (SPEC §9.4). */
export function isChainedBlock(apdu: CommandLike): boolean {
  const h = headerOf(apdu);
  return h !== undefined && (h.cla & CLA.CHAINING) !== 0;
}

const COMMANDS = Object.entries(CardCommand) as [CardCommandName, CommandHeader][];

/**
 * Which command of {@link CardCommand} an APDU is meant to be: CLA (the
 * chaining bit ignored) and INS match, and P1 too where it selects a step
 * (PERSONALIZE, LOAD, SYNC). Other P1 and P2 values are not compared: whether
 * they are valid is the card's to say (6A86). `undefined` for anything else
 * (and for fewer than 4 bytes).
 *
 * @example
 * identifyCommand(Uint8Array.of(0x90, 0x30, 0x00, 0x00)) // 'PAY' (a chained block)
 */
export function identifyCommand(apdu: CommandLike): CardCommandName | undefined {
  const h = headerOf(apdu);
  if (!h) return undefined;
  const cla = h.cla & ~CLA.CHAINING;
  for (const [name, c] of COMMANDS) {
    if (c.cla === cla && c.ins === h.ins && (!STEP_INS.has(c.ins) || c.p1 === h.p1)) return name;
  }
  return undefined;
}

/**
 * True when the data field of `apdu` may carry a PIN or an unblock code
 * (VERIFY, CHANGE, UNBLOCK PIN; PERSONALIZE SET PIN). Deliberately broad for
 * masking: INS (and P1 for PERSONALIZE) decide, whatever the CLA and P2, so a
 * malformed probe that carries a PIN is masked too.
 */
export function mayCarrySecret(apdu: CommandLike): boolean {
  const h = headerOf(apdu);
  if (!h) return false;
  for (const name of SECRET_COMMANDS) {
    const c = CardCommand[name];
    if (c.ins === h.ins && (!STEP_INS.has(c.ins) || c.p1 === h.p1)) return true;
  }
  return false;
}

/**
 * True when the answer to `apdu` is signed or random by nature (see
 * `FRESH_ANSWER_COMMANDS`): the last (or only) block of PAY, SYNC or LOAD
 * BEGIN, or GENERATE KEY. The blocks of a chain before the last are answered
 * 9000 and stay exact.
 */
export function answerIsFresh(apdu: CommandLike): boolean {
  if (isChainedBlock(apdu)) return false;
  const name = identifyCommand(apdu);
  return name !== undefined && FRESH_ANSWER_COMMANDS.has(name);
}
