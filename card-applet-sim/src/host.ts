/**
 * Host-side commands for a DT card over any {@link ApduTransport}: select,
 * status, certificates, PIN, PAY, personalization by an issuing bank, and a
 * development load signed by a dev ledger. Command layouts follow
 * `firmware/APDU.md`; data formats are the firmware's schema tables.
 *
 * @module
 */

import {
  CLA,
  CURRENCY_KZT,
  INS,
  PERSONALIZE_P1,
  Role,
  SYNC_P1,
  decodeDeterministic,
  issueCertificate,
  openSigned,
  payloadHash,
  selectCommand,
  signMessage,
  transmitOk,
} from '@dt/protocol';
import type { ApduTransport, Certificate, ExchangeOptions, Signer } from '@dt/protocol';
import {
  CardStatusSchema,
  ChangePinSchema,
  SelectResponseSchema,
  SetConfigSchema,
  SetPinSchema,
  UnblockPinSchema,
  WriteCertificatesSchema,
  decodeFormat,
  encodeFormat,
} from '@dt/firmware';
import type { CardStatus, SelectResponse } from '@dt/firmware';
import { nodeRandom, systemClock } from './card.ts';
import { devToken } from './devpki.ts';
import type { DevPki } from './devpki.ts';

/** Card limits as certified (see the protocol's CardLimitsSchema). */
export type CardLimits = NonNullable<Certificate['limits']>;

const utf8 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'utf8'));

/** SELECT the DT applet; returns its version and capabilities. */
export async function selectApplet(t: ApduTransport, options: ExchangeOptions = {}): Promise<SelectResponse> {
  return decodeFormat(SelectResponseSchema, await transmitOk(t, selectCommand(), options));
}

/** GET STATUS: counter, balance, offline totals, limits, PIN tries (never key material). */
export async function getStatus(t: ApduTransport, options: ExchangeOptions = {}): Promise<CardStatus> {
  const data = await transmitOk(t, { cla: CLA.PROPRIETARY, ins: INS.GET_STATUS, p1: 0, p2: 0, le: 256 }, options);
  return decodeFormat(CardStatusSchema, data);
}

/** GET CERTIFICATES: the card's chain `[card, issuing bank]`. */
export async function getCertificates(t: ApduTransport, options: ExchangeOptions = {}): Promise<Uint8Array[]> {
  const data = await transmitOk(t, { cla: CLA.PROPRIETARY, ins: INS.GET_CERTIFICATES, p1: 0, p2: 0, le: 256 }, options);
  const chain = decodeDeterministic(data, 8192);
  if (!Array.isArray(chain) || !chain.every((c) => c instanceof Uint8Array)) throw new TypeError('GET CERTIFICATES did not answer an array of byte strings');
  return chain as Uint8Array[];
}

/** VERIFY PIN (ASCII digits). Throws `WrongPinError` (63Cx) or `CardStatusError` (6983 blocked). */
export async function verifyPin(t: ApduTransport, pin: string, options: ExchangeOptions = {}): Promise<void> {
  await transmitOk(t, { cla: CLA.PROPRIETARY, ins: INS.VERIFY_PIN, p1: 0, p2: 0, data: utf8(pin) }, options);
}

/** CHANGE PIN from `current` to `next`. */
export async function changePin(t: ApduTransport, current: string, next: string, options: ExchangeOptions = {}): Promise<void> {
  const data = encodeFormat(ChangePinSchema, { current: utf8(current), next: utf8(next) });
  await transmitOk(t, { cla: CLA.PROPRIETARY, ins: INS.CHANGE_PIN, p1: 0, p2: 0, data }, options);
}

/** UNBLOCK PIN with the unblock code `puk`, setting `next`. */
export async function unblockPin(t: ApduTransport, puk: string, next: string, options: ExchangeOptions = {}): Promise<void> {
  const data = encodeFormat(UnblockPinSchema, { puk: utf8(puk), next: utf8(next) });
  await transmitOk(t, { cla: CLA.PROPRIETARY, ins: INS.UNBLOCK_PIN, p1: 0, p2: 0, data }, options);
}

/** PAY: sends a signed PaymentRequest (chained when long) and returns the Handover bytes (via GET RESPONSE when long). */
export async function pay(t: ApduTransport, request: Uint8Array, options: ExchangeOptions = {}): Promise<Uint8Array> {
  return transmitOk(t, { cla: CLA.PROPRIETARY, ins: INS.PAY, p1: 0, p2: 0, data: request, le: 256 }, options);
}

/** What an issuing bank needs to personalize a card. */
export interface IssuingBank {
  /** Signer of the issuing bank's key (a key file, an HSM). */
  readonly signer: Signer;
  /** The bank's certificate (role BANK with the ISSUING permission). */
  readonly cert: Uint8Array;
  /** The issuer root certificate the card pins. */
  readonly root: Uint8Array;
  /** The ledger certificate the card pins (verifies tokens and receipts). */
  readonly ledgerCert: Uint8Array;
}

/** Options of {@link personalizeCard}. */
export interface PersonalizeOptions {
  /** Initial PIN, 4..12 digits. */
  pin: string;
  /** Unblock code, 8..16 digits. */
  puk: string;
  /** Card limits certified in the card certificate. */
  limits: CardLimits;
  /** Subject of the card certificate (e.g. the cardholder's account reference). */
  subject?: string;
  /** Issue time (seconds); default now. Also the card's initial clock floor. */
  now?: number;
  /** Certificate validity from `now` in seconds (default 4 years). */
  validity?: number;
  /** PIN tries (default the applet's 3). */
  pinTries?: number;
  /** Unblock code tries (default the applet's 10). */
  pukTries?: number;
  /** Ask the holder on the device before each payment (hardware wallets); default off. */
  confirm?: boolean;
  /** Currency of the card (default KZT, 398). */
  currency?: number;
  /** Leave personalization open (skip LOCK); only for tests of the personalization commands. */
  noLock?: boolean;
}

/** Result of {@link personalizeCard}. */
export interface Personalized {
  /** Key id of the card key (generated on the card). */
  readonly cardKid: Uint8Array;
  /** The card's public key. */
  readonly publicKey: Uint8Array;
  /** The card certificate the bank issued. */
  readonly certificate: Uint8Array;
}

/**
 * Personalizes a blank card as its issuing bank: SELECT, GENERATE KEY (the
 * key pair is made on the card; only the public key comes out), the bank
 * certifies it, WRITE CERTIFICATES (chain, pinned root and ledger
 * certificates, current time), SET PIN, SET CONFIG (clock floor), LOCK.
 */
export async function personalizeCard(t: ApduTransport, bank: IssuingBank, options: PersonalizeOptions): Promise<Personalized> {
  const now = options.now ?? systemClock();
  await selectApplet(t);
  const perso = (p1: number, data?: Uint8Array, le?: number) =>
    transmitOk(t, { cla: CLA.PROPRIETARY, ins: INS.PERSONALIZE, p1, p2: 0, ...(data ? { data } : {}), ...(le ? { le } : {}) });
  const publicKey = await perso(PERSONALIZE_P1.GENERATE_KEY, undefined, 256);
  const bankClaims = openSigned('Certificate', bank.cert).message;
  const certificate = issueCertificate(
    {
      iss: bankClaims.sub,
      sub: options.subject ?? 'card',
      iat: now,
      nbf: now - 86_400,
      exp: now + (options.validity ?? 4 * 365 * 86_400),
      role: Role.CARD,
      limits: options.limits,
      currency: options.currency ?? CURRENCY_KZT,
      publicKey,
    },
    bank.signer,
  );
  await perso(PERSONALIZE_P1.WRITE_CERTIFICATES, encodeFormat(WriteCertificatesSchema, { chain: [certificate, bank.cert], root: bank.root, ledger: bank.ledgerCert, time: now }));
  await perso(
    PERSONALIZE_P1.SET_PIN,
    encodeFormat(SetPinSchema, {
      pin: utf8(options.pin),
      puk: utf8(options.puk),
      ...(options.pinTries !== undefined ? { pinTries: options.pinTries } : {}),
      ...(options.pukTries !== undefined ? { pukTries: options.pukTries } : {}),
    }),
  );
  await perso(PERSONALIZE_P1.SET_CONFIG, encodeFormat(SetConfigSchema, { floor: now, confirm: options.confirm ? 1 : 0 }));
  if (!options.noLock) await perso(PERSONALIZE_P1.LOCK);
  const cardKid = openSigned('Certificate', certificate).message.cnf.coseKey.kid;
  return { cardKid, publicKey, certificate };
}

/** Result of {@link devLoad}. */
export interface DevLoadResult {
  /** The card's signed SyncRequest (LOAD BEGIN answer). */
  readonly request: Uint8Array;
  /** The dev ledger's SyncReceipt handed to the card (LOAD COMPLETE). */
  readonly receipt: Uint8Array;
  /** The new tokens on the card. */
  readonly tokens: Uint8Array[];
}

/**
 * Loads value onto a card with the dev ledger key: LOAD BEGIN (the card
 * signs a SyncRequest over a fresh challenge), then a SyncReceipt signed by
 * the dev ledger with fresh tokens for the card's balance plus `amounts`,
 * then LOAD COMPLETE. Each entry of `amounts` becomes one new token.
 *
 * Development only: unlike the real ledger, this keeps no spent set and does
 * not settle the card's offline history, so use it on cards that have not
 * paid offline since their last sync (it refuses otherwise).
 */
export async function devLoad(t: ApduTransport, pki: DevPki, amounts: readonly number[], options: { now?: number } = {}): Promise<DevLoadResult> {
  if (amounts.length === 0 || amounts.some((a) => !Number.isSafeInteger(a) || a <= 0)) throw new RangeError('amounts must be positive integers');
  const now = options.now ?? systemClock();
  await selectApplet(t);
  const request = await transmitOk(t, { cla: CLA.PROPRIETARY, ins: INS.LOAD, p1: SYNC_P1.BEGIN, p2: 0, data: nodeRandom(16), le: 256 });
  const { cose, message } = openSigned('SyncRequest', request);
  if (message.history.length > 0) {
    throw new Error('devLoad: the card has offline payments since its last sync; a dev load would drop them (sync it with a real ledger)');
  }
  const tokens: Uint8Array[] = [];
  if (message.balance > 0) tokens.push(devToken(pki, message.card, message.balance, { issued: now }));
  for (const a of amounts) tokens.push(devToken(pki, message.card, a, { issued: now }));
  const loaded = amounts.reduce((s, a) => s + a, 0);
  const receipt = signMessage(
    'SyncReceipt',
    { card: message.card, counter: message.counter, request: payloadHash(cose), tokens, time: now, loaded, voided: [] },
    pki.ledger.signer,
  );
  await transmitOk(t, { cla: CLA.PROPRIETARY, ins: INS.LOAD, p1: SYNC_P1.COMPLETE, p2: 0, data: receipt });
  return { request, receipt, tokens };
}

/** The {@link IssuingBank} of a dev PKI. */
export function devIssuingBank(pki: DevPki): IssuingBank {
  return { signer: pki.bank.signer, cert: pki.bank.cert, root: pki.issuer.cert, ledgerCert: pki.ledger.cert };
}
