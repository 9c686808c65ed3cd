/**
 * The two station roles the simulator plays around a card, written on the
 * protocol's card command set (`@dt/protocol`, SPEC §9–10): an issuing bank
 * personalizing a blank card ({@link personalizeCard}), and a development
 * load signed by the dev ledger key ({@link devLoad}). The commands, their
 * formats and their parsers are the protocol's; this module only sequences
 * them and signs what the bank or the dev ledger signs.
 *
 * @module
 */

import {
  CURRENCY_KZT,
  Role,
  bytesEqual,
  formatTenge,
  generateKey,
  getCertificates,
  getStatus,
  issueCertificate,
  lockPersonalization,
  openSigned,
  payloadHash,
  selectApplet,
  setConfig,
  setPin,
  signMessage,
  syncBegin,
  syncComplete,
  utf8,
  writeCertificates,
} from '@dt/protocol';
import type { ApduTransport, CardLimits, Signer } from '@dt/protocol';
import { nodeRandom, systemClock } from './card.ts';
import { devToken } from './devpki.ts';
import type { DevPki } from './devpki.ts';

export type { CardLimits } from '@dt/protocol';

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
export interface PersonalizeResult {
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
/**
 * Why `limits` make no usable card, or undefined when they make one: a zero per-payment or offline
 * total limit is a card that can never pay offline, and a per-payment limit above the offline total is
 * one the total never allows. The CLIs (dt-card personalize, dt-bank issue) refuse such limits as a usage
 * error before any APDU: the card would accept them and be certified with them.
 */
export function limitsProblem(limits: CardLimits): string | undefined {
  if (limits.perPayment < 1) return 'the per-payment limit must be at least 0.01 KZT: a card with a zero limit can never pay';
  if (limits.offlineTotal < 1) return 'the offline total limit must be at least 0.01 KZT: a card with a zero limit can never pay';
  if (limits.perPayment > limits.offlineTotal)
    return `the per-payment limit (${formatTenge(limits.perPayment)}) is above the offline total limit (${formatTenge(limits.offlineTotal)}), which never allows it`;
  return undefined;
}

export async function personalizeCard(t: ApduTransport, bank: IssuingBank, options: PersonalizeOptions): Promise<PersonalizeResult> {
  const now = options.now ?? systemClock();
  await selectApplet(t);
  const publicKey = await generateKey(t);
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
  await writeCertificates(t, { chain: [certificate, bank.cert], root: bank.root, ledger: bank.ledgerCert, time: now });
  await setPin(t, {
    pin: utf8(options.pin),
    puk: utf8(options.puk),
    ...(options.pinTries !== undefined ? { pinTries: options.pinTries } : {}),
    ...(options.pukTries !== undefined ? { pukTries: options.pukTries } : {}),
  });
  await setConfig(t, { floor: now, confirm: options.confirm ? 1 : 0 });
  if (!options.noLock) await lockPersonalization(t);
  const cardKid = openSigned('Certificate', certificate).message.cnf.coseKey.kid;
  return { cardKid, publicKey, certificate };
}

/** A dev load refused before it changed the card (offline payments since the last sync, or a sync pending). */
export class DevLoadRefusedError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = 'DevLoadRefusedError';
  }
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
 *
 * `options.now` dates the receipt and tokens (default now); `options.random`
 * draws the challenge and the token serials (default Node's CSPRNG; a seeded
 * source makes a load reproducible, as the golden transcripts need).
 */
export async function devLoad(
  t: ApduTransport,
  pki: DevPki,
  amounts: readonly number[],
  options: { now?: number; random?: (n: number) => Uint8Array } = {},
): Promise<DevLoadResult> {
  if (amounts.length === 0 || amounts.some((a) => !Number.isSafeInteger(a) || a <= 0))
    throw new RangeError('amounts must be positive integers');
  const now = options.now ?? systemClock();
  const random = options.random ?? nodeRandom;
  await selectApplet(t);
  // Refuse before LOAD BEGIN: a begun load leaves the card sync-pending (it refuses PAY), so a
  // refused dev load must not start one.
  const status = await getStatus(t);
  if (status.offlineCount > 0) {
    throw new DevLoadRefusedError(
      'devLoad: the card has offline payments since its last sync; a dev load would drop them (sync it with a real ledger: dt-wallet sync)',
    );
  }
  // A card of another PKI would refuse the dev ledger's receipt at LOAD COMPLETE (6A80) and be left sync-pending
  // (refusing PAY): refuse it before LOAD BEGIN. The dev PKI has one bank; the card's chain names its issuing bank.
  if (status.locked && !(await getCertificates(t)).some((c) => bytesEqual(c, pki.bank.cert))) {
    throw new DevLoadRefusedError(
      'devLoad: the card was not issued by this development PKI (its bank certificate is not the dev bank): it would refuse the dev ledger receipt; load it through its own ledger (dt-bank load-order, dt-wallet load)',
    );
  }
  // A sync pending without offline payments (a load or sync whose completion was lost, a power cut) is
  // finished by this load: the card signs a fresh request and nothing it holds is dropped.
  const request = await syncBegin(t, random(16), { load: true });
  const { cose, message } = openSigned('SyncRequest', request);
  if (message.history.length > 0) {
    throw new DevLoadRefusedError('devLoad: the card has offline payments since its last sync; a dev load would drop them');
  }
  const tokens: Uint8Array[] = [];
  if (message.balance > 0) tokens.push(devToken(pki, message.card, message.balance, { issued: now, serial: random(16) }));
  for (const a of amounts) tokens.push(devToken(pki, message.card, a, { issued: now, serial: random(16) }));
  const loaded = amounts.reduce((s, a) => s + a, 0);
  const receipt = signMessage(
    'SyncReceipt',
    { card: message.card, counter: message.counter, request: payloadHash(cose), tokens, time: now, loaded, voided: [] },
    pki.ledger.signer,
  );
  await syncComplete(t, receipt, { load: true });
  return { request, receipt, tokens };
}

/** The {@link IssuingBank} of a dev PKI. */
export function devIssuingBank(pki: DevPki): IssuingBank {
  return { signer: pki.bank.signer, cert: pki.bank.cert, root: pki.issuer.cert, ledgerCert: pki.ledger.cert };
}
