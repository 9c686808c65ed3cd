/**
 * The host side of the DT card's command set (SPEC §9–10) over the one
 * device interface, {@link ApduTransport}: one call per command, each a
 * builder of `commands.ts` sent with `transmitOk` (chaining, 61xx/GET
 * RESPONSE, 6Cxx) and its answer read by the parser of `decode.ts`. Any
 * status word but 9000 throws the APDU layer's typed errors:
 * `WrongPinError` (63Cx, with `remaining`) or `CardStatusError` (with `sw`).
 *
 * Hosts that must decide on a status word themselves (the terminal kernel:
 * 6982 means "ask for the PIN") send the builders with `exchange` and read
 * the answer with the same parsers.
 *
 * @example
 * const info = await selectApplet(reader);
 * await verifyPin(reader, '1234');
 * const handover = await pay(reader, signedRequest);
 *
 * @module
 */
import { transmitOk, type ApduTransport, type ExchangeOptions } from '../apdu/exchange.ts';
import { CardStatusError } from '../apdu/codec.ts';
import { SW } from '../apdu/constants.ts';
import { utf8 } from '../bytes.ts';
import {
  changePinCommand,
  generateKeyCommand,
  getCertificatesCommand,
  getStatusCommand,
  loadBeginCommand,
  loadCompleteCommand,
  lockCommand,
  payCommand,
  selectCommand,
  setConfigCommand,
  setPinCommand,
  syncBeginCommand,
  syncCompleteCommand,
  unblockPinCommand,
  verifyPinCommand,
  writeCertificatesCommand,
} from './commands.ts';
import { parseCardStatus, parseCertificates, parsePublicKey, parseSelectResponse } from './decode.ts';
import type { CardStatus, SelectResponse, SetConfig, SetPin, WriteCertificates } from './formats.ts';

/** A PIN or unblock code: ASCII digits as text, or their bytes. */
export type PinInput = string | Uint8Array;

const pinBytes = (p: PinInput): Uint8Array => (typeof p === 'string' ? utf8(p) : p);

/**
 * SELECT the DT applet (once more after 6883, see SPEC §9.3); returns its SelectResponse, read strictly (this
 * applet version's format; {@link parseApplicationInfo} is the lenient read).
 */
export async function selectApplet(t: ApduTransport, options: ExchangeOptions = {}): Promise<SelectResponse> {
  try {
    return parseSelectResponse(await transmitOk(t, selectCommand(), options));
  } catch (e) {
    // 6883: the card discarded a command chain an earlier session left unfinished and is idle
    // again (SPEC §9.3): select once more.
    if (!(e instanceof CardStatusError) || e.sw !== SW.CHAIN_EXPECTED) throw e;
  }
  return parseSelectResponse(await transmitOk(t, selectCommand(), options));
}

/** GET STATUS: counter, balance, offline totals, limits, PIN tries (never key material). */
export async function getStatus(t: ApduTransport, options: ExchangeOptions = {}): Promise<CardStatus> {
  return parseCardStatus(await transmitOk(t, getStatusCommand(), options));
}

/** GET CERTIFICATES: the card's chain `[card, issuing bank]`. */
export async function getCertificates(t: ApduTransport, options: ExchangeOptions = {}): Promise<Uint8Array[]> {
  return parseCertificates(await transmitOk(t, getCertificatesCommand(), options));
}

/** VERIFY PIN (ASCII digits). Throws `WrongPinError` (63Cx) or `CardStatusError` (6983 blocked). */
export async function verifyPin(t: ApduTransport, pin: PinInput, options: ExchangeOptions = {}): Promise<void> {
  await transmitOk(t, verifyPinCommand(pinBytes(pin)), options);
}

/** CHANGE PIN from `current` to `next`. */
export async function changePin(t: ApduTransport, current: PinInput, next: PinInput, options: ExchangeOptions = {}): Promise<void> {
  await transmitOk(t, changePinCommand(pinBytes(current), pinBytes(next)), options);
}

/** UNBLOCK PIN with the unblock code `puk`, setting `next`. */
export async function unblockPin(t: ApduTransport, puk: PinInput, next: PinInput, options: ExchangeOptions = {}): Promise<void> {
  await transmitOk(t, unblockPinCommand(pinBytes(puk), pinBytes(next)), options);
}

/** PAY: sends a signed PaymentRequest (chained when long) and returns the Handover bytes (via GET RESPONSE when long). */
export async function pay(t: ApduTransport, request: Uint8Array, options: ExchangeOptions = {}): Promise<Uint8Array> {
  return transmitOk(t, payCommand(request), options);
}

/** PERSONALIZE, generate key: the card makes its key pair and answers the public key (65 bytes). */
export async function generateKey(t: ApduTransport, options: ExchangeOptions = {}): Promise<Uint8Array> {
  return parsePublicKey(await transmitOk(t, generateKeyCommand(), options));
}

/** PERSONALIZE, write certificates: chain, pinned root and ledger certificates, personalization time. */
export async function writeCertificates(t: ApduTransport, w: WriteCertificates, options: ExchangeOptions = {}): Promise<void> {
  await transmitOk(t, writeCertificatesCommand(w), options);
}

/** PERSONALIZE, set PIN: PIN, unblock code and their tries. */
export async function setPin(t: ApduTransport, p: SetPin, options: ExchangeOptions = {}): Promise<void> {
  await transmitOk(t, setPinCommand(p), options);
}

/** PERSONALIZE, set config: clock floor and confirmation mode. */
export async function setConfig(t: ApduTransport, c: SetConfig, options: ExchangeOptions = {}): Promise<void> {
  await transmitOk(t, setConfigCommand(c), options);
}

/** PERSONALIZE, lock: ends personalization for good (later PERSONALIZE answers 6986). */
export async function lockPersonalization(t: ApduTransport, options: ExchangeOptions = {}): Promise<void> {
  await transmitOk(t, lockCommand(), options);
}

/** SYNC BEGIN (or LOAD BEGIN with `load`): the card signs a SyncRequest over `challenge` (16 bytes) and answers it. */
export async function syncBegin(
  t: ApduTransport,
  challenge: Uint8Array,
  options: ExchangeOptions & { load?: boolean } = {},
): Promise<Uint8Array> {
  const { load, ...o } = options;
  return transmitOk(t, load ? loadBeginCommand(challenge) : syncBeginCommand(challenge), o);
}

/** SYNC COMPLETE (or LOAD COMPLETE with `load`): hands the ledger's SyncReceipt to the card, which checks it before it changes anything. */
export async function syncComplete(
  t: ApduTransport,
  receipt: Uint8Array,
  options: ExchangeOptions & { load?: boolean } = {},
): Promise<void> {
  const { load, ...o } = options;
  await transmitOk(t, load ? loadCompleteCommand(receipt) : syncCompleteCommand(receipt), o);
}
