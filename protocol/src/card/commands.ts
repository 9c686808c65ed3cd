/**
 * One builder per command of the DT applet (SPEC §9.2): each returns the
 * {@link CommandApdu} to hand to `exchange` or `transmitOk`, which chain long
 * data (§9.4) and fetch long answers (§9.5). Headers come from
 * {@link CardCommand}; structured data is encoded with the format tables.
 *
 * Builders encode what they are given: judging it (a PIN that is not
 * digits, a challenge that is not 16 bytes) is the card's job, and a
 * conformance test must be able to send such commands. Only the format
 * encoders refuse values their schema does not allow.
 *
 * | command | builder | answer read with |
 * |---|---|---|
 * | SELECT | {@link selectCommand} | `parseApplicationInfo` (hosts), `parseSelectResponse` (strict) |
 * | GET RESPONSE | `getResponseCommand` (APDU layer: `exchange` sends it) | — |
 * | GET STATUS | {@link getStatusCommand} | `parseCardStatus` |
 * | GET CERTIFICATES | {@link getCertificatesCommand} | `parseCertificates` |
 * | VERIFY / CHANGE / UNBLOCK PIN | {@link verifyPinCommand}, {@link changePinCommand}, {@link unblockPinCommand} | `parsePinResult` (status word) |
 * | PAY | {@link payCommand} | `validateHandover` (SPEC §7.4) |
 * | PERSONALIZE steps | {@link generateKeyCommand}, {@link writeCertificatesCommand}, {@link setPinCommand}, {@link setConfigCommand}, {@link lockCommand} | `parsePublicKey` (GENERATE KEY); the others answer no data |
 * | LOAD / SYNC BEGIN | {@link loadBeginCommand}, {@link syncBeginCommand} | `openSigned` / `verifySigned('SyncRequest')` |
 * | LOAD / SYNC COMPLETE | {@link loadCompleteCommand}, {@link syncCompleteCommand} | no data |
 *
 * @module
 */
import { DT_AID } from '../apdu/constants.ts';
import type { CommandApdu } from '../apdu/codec.ts';
import { CardCommand, type CommandHeader } from './constants.ts';
import {
  ChangePinSchema,
  encodeFormat,
  SetConfigSchema,
  SetPinSchema,
  UnblockPinSchema,
  WriteCertificatesSchema,
  type SetConfig,
  type SetPin,
  type WriteCertificates,
} from './formats.ts';

/** Le of a command that expects response data: 256 (encoded 00), the rest comes through 61xx. */
const LE_ANY = 256;

/** A command APDU from a header of {@link CardCommand}, with optional data and Le. */
export function buildCommand(header: CommandHeader, data?: Uint8Array, le?: number): CommandApdu {
  return {
    cla: header.cla,
    ins: header.ins,
    p1: header.p1,
    p2: header.p2,
    ...(data !== undefined && data.length > 0 ? { data } : {}),
    ...(le !== undefined ? { le } : {}),
  };
}

/**
 * SELECT of an applet by AID (00 A4 04 00 Lc AID, Le 256); defaults to the DT
 * applet ({@link DT_AID}).
 *
 * @example
 * encodeCommand(selectCommand()) // 00 A4 04 00 0A F0 44 54 57 41 4C 4C 45 54 01 00
 */
export function selectCommand(aid: Uint8Array = DT_AID): CommandApdu {
  return buildCommand(CardCommand.SELECT, aid, LE_ANY);
}

/** GET STATUS (80 10 00 00, Le 256): answers a CardStatus. */
export function getStatusCommand(): CommandApdu {
  return buildCommand(CardCommand.GET_STATUS, undefined, LE_ANY);
}

/** GET CERTIFICATES (80 12 00 00, Le 256): answers the card chain `[card, issuing bank]`. */
export function getCertificatesCommand(): CommandApdu {
  return buildCommand(CardCommand.GET_CERTIFICATES, undefined, LE_ANY);
}

/**
 * VERIFY PIN (80 20 00 00) with the PIN as ASCII digits; without a PIN (or
 * with an empty one) it asks for the PIN state and uses no try (SPEC §10.6).
 */
export function verifyPinCommand(pin?: Uint8Array): CommandApdu {
  return buildCommand(CardCommand.VERIFY_PIN, pin);
}

/** CHANGE PIN (80 24 00 00) from `current` to `next` (ASCII digits), as a ChangePin. */
export function changePinCommand(current: Uint8Array, next: Uint8Array): CommandApdu {
  return buildCommand(CardCommand.CHANGE_PIN, encodeFormat(ChangePinSchema, { current, next }));
}

/** UNBLOCK PIN (80 2C 00 00) with the unblock code `puk`, setting `next` (ASCII digits), as an UnblockPin. */
export function unblockPinCommand(puk: Uint8Array, next: Uint8Array): CommandApdu {
  return buildCommand(CardCommand.UNBLOCK_PIN, encodeFormat(UnblockPinSchema, { puk, next }));
}

/** PAY (80 30 00 00, Le 256) with the terminal's signed PaymentRequest (chained when long): answers the Handover. */
export function payCommand(request: Uint8Array): CommandApdu {
  return buildCommand(CardCommand.PAY, request, LE_ANY);
}

/** PERSONALIZE, generate key (80 40 01 00, Le 256): answers the card's public key. */
export function generateKeyCommand(): CommandApdu {
  return buildCommand(CardCommand.GENERATE_KEY, undefined, LE_ANY);
}

/** PERSONALIZE, write certificates (80 40 02 00) with a WriteCertificates (chained). */
export function writeCertificatesCommand(w: WriteCertificates): CommandApdu {
  return buildCommand(CardCommand.WRITE_CERTIFICATES, encodeFormat(WriteCertificatesSchema, w));
}

/** PERSONALIZE, set PIN (80 40 03 00) with a SetPin. */
export function setPinCommand(p: SetPin): CommandApdu {
  return buildCommand(CardCommand.SET_PIN, encodeFormat(SetPinSchema, p));
}

/** PERSONALIZE, set config (80 40 04 00) with a SetConfig. */
export function setConfigCommand(c: SetConfig): CommandApdu {
  return buildCommand(CardCommand.SET_CONFIG, encodeFormat(SetConfigSchema, c));
}

/** PERSONALIZE, lock (80 40 0F 00): ends personalization for good. */
export function lockCommand(): CommandApdu {
  return buildCommand(CardCommand.LOCK);
}

/** LOAD BEGIN (80 50 01 00, Le 256) with the host's 16-byte challenge: answers the card's SyncRequest. */
export function loadBeginCommand(challenge: Uint8Array): CommandApdu {
  return buildCommand(CardCommand.LOAD_BEGIN, challenge, LE_ANY);
}

/** LOAD COMPLETE (80 50 02 00) with the ledger's SyncReceipt (chained). */
export function loadCompleteCommand(receipt: Uint8Array): CommandApdu {
  return buildCommand(CardCommand.LOAD_COMPLETE, receipt);
}

/** SYNC BEGIN (80 52 01 00, Le 256) with the host's 16-byte challenge: answers the card's SyncRequest. */
export function syncBeginCommand(challenge: Uint8Array): CommandApdu {
  return buildCommand(CardCommand.SYNC_BEGIN, challenge, LE_ANY);
}

/** SYNC COMPLETE (80 52 02 00) with the ledger's SyncReceipt (chained). */
export function syncCompleteCommand(receipt: Uint8Array): CommandApdu {
  return buildCommand(CardCommand.SYNC_COMPLETE, receipt);
}
