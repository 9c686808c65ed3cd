/**
 * Constant tables of the DT card APDU interface: class bytes, the applet AID,
 * instruction codes with their P1 values, and ISO/IEC 7816-4 status words.
 *
 * Every number that appears on the wire is named here once; the codec, the
 * exchange logic, the firmware and SPEC.md all refer to these tables.
 *
 * @module
 */

/**
 * Class bytes (CLA).
 *
 * - `ISO` (0x00): interindustry class, used by SELECT and GET RESPONSE.
 * - `PROPRIETARY` (0x80): the DT applet's own commands.
 * - `CHAINING` (0x10): bit set in the CLA of every block of a chained command
 *   except the last one (ISO/IEC 7816-4 section 5.4.1).
 */
export const CLA = {
  ISO: 0x00,
  PROPRIETARY: 0x80,
  CHAINING: 0x10,
} as const;

/**
 * Application identifier of the DT wallet applet (10 bytes):
 *
 * ```text
 * F0            proprietary (non-registered) RID category
 * 44 54         "DT"
 * 57 41 4C 4C 45 54   "WALLET"
 * 01            applet version 1
 * ```
 */
export const DT_AID: Uint8Array = Uint8Array.of(0xf0, 0x44, 0x54, 0x57, 0x41, 0x4c, 0x4c, 0x45, 0x54, 0x01);

/**
 * Instruction bytes (INS). All use CLA 0x80 ({@link CLA}.PROPRIETARY) except
 * `SELECT` and `GET_RESPONSE`, which use CLA 0x00 ({@link CLA}.ISO).
 */
export const INS = {
  /** SELECT by DF name (CLA 00, P1 04, P2 00); answers version and capabilities. */
  SELECT: 0xa4,
  /** GET RESPONSE (CLA 00, P1 00, P2 00): fetch the rest of a long response after 61xx. */
  GET_RESPONSE: 0xc0,
  /** GET STATUS: counters, balance summary, limits, PIN state. */
  GET_STATUS: 0x10,
  /** GET CERTIFICATES: the card's certificate chain. */
  GET_CERTIFICATES: 0x12,
  /** VERIFY PIN. */
  VERIFY_PIN: 0x20,
  /** CHANGE PIN. */
  CHANGE_PIN: 0x24,
  /** UNBLOCK PIN (with the issuer's unblock code). */
  UNBLOCK_PIN: 0x2c,
  /** PAY: PaymentRequest in, Handover out. */
  PAY: 0x30,
  /** PERSONALIZE: issuance steps selected by P1, see {@link PERSONALIZE_P1}. */
  PERSONALIZE: 0x40,
  /** LOAD: like SYNC (P1 BEGIN/COMPLETE), for a ledger receipt that adds value (SPEC §10.9). */
  LOAD: 0x50,
  /** SYNC: hand in the offline chain and receive a receipt, P1 see {@link SYNC_P1}. */
  SYNC: 0x52,
} as const;

/** An instruction byte listed in {@link INS}. */
export type Ins = (typeof INS)[keyof typeof INS];

/** P1/P2 of SELECT: select by DF name (the AID), first or only occurrence, FCI returned. */
export const SELECT_P1P2 = {
  /** P1 0x04: select by DF name. */
  P1_BY_NAME: 0x04,
  /** P2 0x00: first or only occurrence. */
  P2_FIRST: 0x00,
} as const;

/** P1 values of PERSONALIZE ({@link INS}.PERSONALIZE); P2 is always 0x00. */
export const PERSONALIZE_P1 = {
  /** Generate the card key pair; answers the public key. */
  GENERATE_KEY: 0x01,
  /** Write the card's certificate chain. */
  WRITE_CERTIFICATES: 0x02,
  /** Set the initial PIN. */
  SET_PIN: 0x03,
  /** Set the card configuration (limits come from the card certificate). */
  SET_CONFIG: 0x04,
  /** Lock personalization for good; later PERSONALIZE commands answer 6986. */
  LOCK: 0x0f,
} as const;

/** P1 values of SYNC ({@link INS}.SYNC); P2 is always 0x00. */
export const SYNC_P1 = {
  /** Begin: the card answers its SyncRequest. */
  BEGIN: 0x01,
  /** Complete: the host sends the ledger's SyncReceipt. */
  COMPLETE: 0x02,
} as const;

/**
 * Status words (SW1 SW2 as one 16-bit number, SW1 in the high byte).
 *
 * Fixed values are numbers; the three families whose low bits carry a value
 * (61xx, 63Cx, 6Cxx) are functions that build the status word.
 */
export const SW = {
  /** 9000: success. */
  OK: 0x9000,
  /** 6700: wrong length (Lc, or a chained command that grew too large). */
  WRONG_LENGTH: 0x6700,
  /** 6982: security status not satisfied, PIN verification needed. */
  SECURITY_NOT_SATISFIED: 0x6982,
  /** 6983: PIN blocked, retry counter exhausted. */
  PIN_BLOCKED: 0x6983,
  /** 6984: referenced data invalid, e.g. a replayed terminal nonce. */
  DATA_INVALID: 0x6984,
  /** 6985: conditions of use not satisfied (limits reached, sync needed, nothing to GET RESPONSE). */
  CONDITIONS_NOT_SATISFIED: 0x6985,
  /** 6986: command not allowed, e.g. personalization locked. */
  COMMAND_NOT_ALLOWED: 0x6986,
  /** 6883: last command of the chain expected (a chain was interrupted by another command). */
  CHAIN_EXPECTED: 0x6883,
  /** 6A80: incorrect parameters in the data field. */
  WRONG_DATA: 0x6a80,
  /** 6A82: application not found (SELECT of an unknown AID). */
  APP_NOT_FOUND: 0x6a82,
  /** 6A86: incorrect P1 or P2. */
  INCORRECT_P1P2: 0x6a86,
  /** 6D00: INS not supported. */
  INS_NOT_SUPPORTED: 0x6d00,
  /** 6E00: CLA not supported. */
  CLA_NOT_SUPPORTED: 0x6e00,
  /** 6F00: internal error, no precise diagnosis. */
  INTERNAL_ERROR: 0x6f00,
  /**
   * 61xx: response bytes still available, fetch them with GET RESPONSE.
   * `available` of 256 or more is encoded as xx = 00.
   */
  moreData(available: number): number {
    return 0x6100 | (available >= 256 ? 0 : checkRange(available, 1, 255, '61xx'));
  },
  /** 63Cx: wrong PIN, x (0..15) tries left. */
  wrongPin(remaining: number): number {
    return 0x63c0 | checkRange(remaining, 0, 15, '63Cx');
  },
  /** 6Cxx: wrong Le, re-send with Le = xx (1..256, 256 encoded as 00). */
  wrongLe(exactLe: number): number {
    return 0x6c00 | (checkRange(exactLe, 1, 256, '6Cxx') & 0xff);
  },
} as const;

function checkRange(n: number, min: number, max: number, what: string): number {
  if (!Number.isInteger(n) || n < min || n > max) {
    // A programming error in the caller, not a wire error: a plain RangeError.
    throw new RangeError(`${what}: value ${n} outside ${min}..${max}`);
  }
  return n;
}

/** One row of {@link SW_TABLE}. */
export interface SwInfo {
  /** Status word pattern as shown in SPEC.md, e.g. `"6985"`, `"61xx"`, `"63Cx"`. */
  readonly pattern: string;
  /** Value of the status word with the variable bits cleared. */
  readonly sw: number;
  /** Bits of the status word that must equal `sw` for the row to apply. */
  readonly mask: number;
  /** Stable symbolic name. */
  readonly name: string;
  /** Short human description, used in error messages. */
  readonly description: string;
  /** When the DT applet answers it. */
  readonly usage: string;
}

/** Every status word the DT applet answers, with names and human descriptions. */
export const SW_TABLE: readonly SwInfo[] = [
  { pattern: '9000', sw: 0x9000, mask: 0xffff, name: 'OK', description: 'success', usage: 'command completed' },
  {
    pattern: '61xx',
    sw: 0x6100,
    mask: 0xff00,
    name: 'MORE_DATA',
    description: 'more data available',
    usage: 'xx response bytes remain (00: 256 or more); fetch with GET RESPONSE',
  },
  {
    pattern: '63Cx',
    sw: 0x63c0,
    mask: 0xfff0,
    name: 'WRONG_PIN',
    description: 'wrong PIN',
    usage: 'PIN comparison failed, x tries left',
  },
  {
    pattern: '6700',
    sw: 0x6700,
    mask: 0xffff,
    name: 'WRONG_LENGTH',
    description: 'wrong length',
    usage: 'Lc inconsistent with the command, or a chained command over the size limit',
  },
  {
    pattern: '6883',
    sw: 0x6883,
    mask: 0xffff,
    name: 'CHAIN_EXPECTED',
    description: 'last command of the chain expected',
    usage: 'a chained command was interrupted by a command with another CLA/INS/P1/P2; the chain is discarded',
  },
  {
    pattern: '6982',
    sw: 0x6982,
    mask: 0xffff,
    name: 'SECURITY_NOT_SATISFIED',
    description: 'security status not satisfied',
    usage: 'PIN verification needed before this command',
  },
  {
    pattern: '6983',
    sw: 0x6983,
    mask: 0xffff,
    name: 'PIN_BLOCKED',
    description: 'PIN blocked',
    usage: 'PIN retry counter exhausted; UNBLOCK PIN needed',
  },
  {
    pattern: '6984',
    sw: 0x6984,
    mask: 0xffff,
    name: 'DATA_INVALID',
    description: 'referenced data invalid',
    usage: 'e.g. a terminal nonce the card has already signed (replay)',
  },
  {
    pattern: '6985',
    sw: 0x6985,
    mask: 0xffff,
    name: 'CONDITIONS_NOT_SATISFIED',
    description: 'conditions not satisfied',
    usage: 'limits reached or sync needed; also GET RESPONSE with nothing pending',
  },
  {
    pattern: '6986',
    sw: 0x6986,
    mask: 0xffff,
    name: 'COMMAND_NOT_ALLOWED',
    description: 'command not allowed',
    usage: 'e.g. PERSONALIZE after personalization was locked',
  },
  {
    pattern: '6A80',
    sw: 0x6a80,
    mask: 0xffff,
    name: 'WRONG_DATA',
    description: 'wrong data',
    usage: 'data field malformed or fails validation',
  },
  {
    pattern: '6A82',
    sw: 0x6a82,
    mask: 0xffff,
    name: 'APP_NOT_FOUND',
    description: 'application not found',
    usage: 'SELECT of an AID the card does not hold',
  },
  {
    pattern: '6A86',
    sw: 0x6a86,
    mask: 0xffff,
    name: 'INCORRECT_P1P2',
    description: 'incorrect P1/P2',
    usage: 'P1 or P2 not defined for this INS',
  },
  {
    pattern: '6Cxx',
    sw: 0x6c00,
    mask: 0xff00,
    name: 'WRONG_LE',
    description: 'wrong Le',
    usage: 'command not executed; re-send it with Le = xx (00: 256)',
  },
  {
    pattern: '6D00',
    sw: 0x6d00,
    mask: 0xffff,
    name: 'INS_NOT_SUPPORTED',
    description: 'INS not supported',
    usage: 'unknown instruction',
  },
  {
    pattern: '6E00',
    sw: 0x6e00,
    mask: 0xffff,
    name: 'CLA_NOT_SUPPORTED',
    description: 'CLA not supported',
    usage: 'unknown class byte',
  },
  {
    pattern: '6F00',
    sw: 0x6f00,
    mask: 0xffff,
    name: 'INTERNAL_ERROR',
    description: 'internal error',
    usage: 'unexpected failure inside the applet',
  },
];

/** The {@link SW_TABLE} row that matches `sw`, or `undefined` for an unlisted status word. */
export function swInfo(sw: number): SwInfo | undefined {
  return SW_TABLE.find((row) => (sw & row.mask) === row.sw);
}

/** True for 61xx (more response data available). */
export function isMoreData(sw: number): boolean {
  return (sw & 0xff00) === 0x6100;
}

/** True for 6Cxx (wrong Le, re-send with Le = xx). */
export function isWrongLe(sw: number): boolean {
  return (sw & 0xff00) === 0x6c00;
}

/** True for 63Cx (wrong PIN, x tries left). */
export function isWrongPin(sw: number): boolean {
  return (sw & 0xfff0) === 0x63c0;
}

/**
 * The byte count carried in SW2 of 61xx or 6Cxx, with 00 read as 256.
 *
 * @example swLength(0x6110) === 16; swLength(0x6c00) === 256
 */
export function swLength(sw: number): number {
  return sw & 0xff || 256;
}

/** Four upper-case hex digits, e.g. `swHex(0x6a82) === "6A82"`. */
export function swHex(sw: number): string {
  return (sw & 0xffff).toString(16).toUpperCase().padStart(4, '0');
}

/**
 * Human description of a status word, without the hex value.
 *
 * @example
 * describeSw(0x6985) // "conditions not satisfied"
 * describeSw(0x63c2) // "wrong PIN, 2 tries left"
 * describeSw(0x6110) // "more data available (16 bytes)"
 */
export function describeSw(sw: number): string {
  if (isWrongPin(sw)) {
    const left = sw & 0x0f;
    return `wrong PIN, ${left} ${left === 1 ? 'try' : 'tries'} left`;
  }
  if (isMoreData(sw)) {
    return (sw & 0xff) === 0 ? 'more data available (256 bytes or more)' : `more data available (${sw & 0xff} bytes)`;
  }
  if (isWrongLe(sw)) return `wrong Le, expected ${swLength(sw)}`;
  return swInfo(sw)?.description ?? 'unknown status';
}
