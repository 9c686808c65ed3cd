/**
 * A development PKI for simulated cards: an issuer root, a ledger, and one
 * bank with both the ISSUING and the ACQUIRING permission, made with the
 * protocol's `issueCertificate`. It lets `dt-card personalize` work on a
 * machine without the ledger's PKI tooling, and lets tests build terminals
 * and ledger-signed tokens.
 *
 * On disk a dev PKI is a directory (mode 0700) holding `dev-pki.json`
 * (mode 0600), with keys and certificates in hex:
 *
 * ```json
 * { "format": "dt-dev-pki", "version": 1,
 *   "issuer": { "secretKey": "…", "cert": "…" },
 *   "ledger": { "secretKey": "…", "cert": "…" },
 *   "bank":   { "secretKey": "…", "cert": "…" } }
 * ```
 *
 * plus the public certificates as separate binary files (`root.cert`,
 * `ledger.cert`, `bank.cert`: COSE_Sign1 bytes) for other tools. The secret
 * keys in this file are development keys: anybody holding the file can mint
 * money in this PKI. Never use it with a production trust root.
 *
 * @module
 */

import { chmodSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  BankPermission,
  CURRENCY_KZT,
  Role,
  fromHex,
  generateKeyPair,
  issueCertificate,
  keyPairSigner,
  publicKeyOf,
  signMessage,
  toHex,
} from '@dt/protocol';
import type { KeyPair, Mark, Signer } from '@dt/protocol';
import { nodeRandom, systemClock } from './card.ts';
import { makeDirs, writeFileDurable } from '@dt/protocol/fs';

/** One party of the PKI: its key pair and its certificate (COSE_Sign1 bytes). */
export interface DevParty {
  /** Key pair; the secret never leaves the process except into the dev PKI file. */
  readonly keys: KeyPair;
  /** Signer over `keys`. */
  readonly signer: Signer;
  /** Certificate bytes. */
  readonly cert: Uint8Array;
}

/** The three parties of a development PKI. */
export interface DevPki {
  /** Issuer root (self-signed, the trust anchor). */
  readonly issuer: DevParty;
  /** Ledger (signs tokens and sync receipts). */
  readonly ledger: DevParty;
  /** A bank that may issue cards and acquire terminals. */
  readonly bank: DevParty;
}

/** Options of {@link createDevPki}. */
export interface CreateDevPkiOptions {
  /** Random source; default Node's CSPRNG. */
  random?: (n: number) => Uint8Array;
  /** Issue time (seconds); default now. */
  now?: number;
  /** Validity of every certificate in seconds, from `now - 1 day`; default 10 years. */
  validity?: number;
}

const DAY = 86_400;
const YEAR = 365 * DAY;
/** File name of the dev PKI inside its directory. */
export const DEV_PKI_FILE = 'dev-pki.json';

function party(keys: KeyPair, cert: Uint8Array): DevParty {
  return { keys, signer: keyPairSigner(keys), cert };
}

/** Generates a fresh development PKI (issuer root, ledger, issuing+acquiring bank). */
export function createDevPki(options: CreateDevPkiOptions = {}): DevPki {
  const random = options.random ?? nodeRandom;
  const now = options.now ?? systemClock();
  const nbf = now - DAY;
  const exp = now + (options.validity ?? 10 * YEAR);
  const base = { nbf, exp, iat: now };
  const issuerKeys = generateKeyPair(random);
  const issuerSigner = keyPairSigner(issuerKeys);
  const issuerCert = issueCertificate(
    { ...base, iss: 'dt-dev-issuer', sub: 'dt-dev-issuer', role: Role.ISSUER, publicKey: issuerKeys.publicKey },
    issuerSigner,
  );
  const ledgerKeys = generateKeyPair(random);
  const ledgerCert = issueCertificate(
    { ...base, iss: 'dt-dev-issuer', sub: 'dt-dev-ledger', role: Role.LEDGER, publicKey: ledgerKeys.publicKey },
    issuerSigner,
  );
  const bankKeys = generateKeyPair(random);
  const bankCert = issueCertificate(
    {
      ...base,
      iss: 'dt-dev-issuer',
      sub: 'dt-dev-bank',
      role: Role.BANK,
      perms: BankPermission.ISSUING | BankPermission.ACQUIRING,
      publicKey: bankKeys.publicKey,
    },
    issuerSigner,
  );
  return { issuer: party(issuerKeys, issuerCert), ledger: party(ledgerKeys, ledgerCert), bank: party(bankKeys, bankCert) };
}

/** Writes a dev PKI to `dir` (created with mode 0700; the JSON with mode 0600). */
export function saveDevPki(dir: string, pki: DevPki): void {
  makeDirs(dir, 0o700);
  chmodSync(dir, 0o700);
  const p = (d: DevParty) => ({ secretKey: toHex(d.keys.secretKey), cert: toHex(d.cert) });
  const json = { format: 'dt-dev-pki', version: 1, issuer: p(pki.issuer), ledger: p(pki.ledger), bank: p(pki.bank) };
  writeFileDurable(join(dir, DEV_PKI_FILE), JSON.stringify(json, null, 1) + '\n', 0o600);
  writeFileDurable(join(dir, 'root.cert'), pki.issuer.cert, 0o600);
  writeFileDurable(join(dir, 'ledger.cert'), pki.ledger.cert, 0o600);
  writeFileDurable(join(dir, 'bank.cert'), pki.bank.cert, 0o600);
}

/**
 * Reads a dev PKI written by {@link saveDevPki}.
 *
 * @throws Error when the file is missing or malformed.
 */
export function loadDevPki(dir: string): DevPki {
  const path = join(dir, DEV_PKI_FILE);
  const json = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  if (json.format !== 'dt-dev-pki' || json.version !== 1) throw new Error(`${path} is not a dt-dev-pki version 1 file`);
  const read = (name: string): DevParty => {
    const entry = json[name] as { secretKey?: unknown; cert?: unknown } | undefined;
    if (typeof entry?.secretKey !== 'string' || typeof entry.cert !== 'string') throw new Error(`${path}: ${name} is incomplete`);
    const secretKey = fromHex(entry.secretKey);
    return party({ secretKey, publicKey: publicKeyOf(secretKey) }, fromHex(entry.cert));
  };
  return { issuer: read('issuer'), ledger: read('ledger'), bank: read('bank') };
}

/** Loads the dev PKI in `dir`, or creates and saves a new one there. Returns it and whether it was created. */
export function loadOrCreateDevPki(dir: string, options: CreateDevPkiOptions = {}): { pki: DevPki; created: boolean } {
  if (existsSync(join(dir, DEV_PKI_FILE))) return { pki: loadDevPki(dir), created: false };
  const pki = createDevPki(options);
  saveDevPki(dir, pki);
  return { pki, created: true };
}

/** A terminal certified by the dev bank (for tests and lab scripts). */
export interface DevTerminal extends DevParty {
  /** Certificate chain `[terminal, acquiring bank]`. */
  readonly chain: Uint8Array[];
  /** Merchant id. */
  readonly merchant: string;
  /** Merchant category code. */
  readonly mcc: number;
}

/** Issues a terminal certificate under the dev bank. */
export function issueDevTerminal(
  pki: DevPki,
  options: { merchant?: string; mcc?: number; name?: string; now?: number; random?: (n: number) => Uint8Array } = {},
): DevTerminal {
  const random = options.random ?? nodeRandom;
  const now = options.now ?? systemClock();
  const merchant = options.merchant ?? 'dev-shop-1';
  const mcc = options.mcc ?? 5411;
  const keys = generateKeyPair(random);
  const cert = issueCertificate(
    {
      iss: 'dt-dev-bank',
      sub: `terminal-${merchant}`,
      iat: now,
      nbf: now - DAY,
      exp: now + YEAR,
      role: Role.TERMINAL,
      merchant: { id: merchant, mcc, name: options.name ?? merchant },
      publicKey: keys.publicKey,
    },
    pki.bank.signer,
  );
  return { ...party(keys, cert), chain: [cert, pki.bank.cert], merchant, mcc };
}

/** A payment request signed by `terminal`, as a POS sends it to the card (PAY data). */
export function devPaymentRequest(
  terminal: DevTerminal,
  amount: number,
  options: { nonce?: Uint8Array; time?: number; retryOf?: Uint8Array; currency?: number } = {},
): { bytes: Uint8Array; nonce: Uint8Array; time: number } {
  const nonce = options.nonce ?? nodeRandom(16);
  const time = options.time ?? systemClock();
  const bytes = signMessage(
    'PaymentRequest',
    {
      amount,
      currency: options.currency ?? CURRENCY_KZT,
      terminal: terminal.signer.kid,
      merchant: terminal.merchant,
      mcc: terminal.mcc,
      nonce,
      time,
      chain: terminal.chain,
      ...(options.retryOf ? { retryOf: options.retryOf } : {}),
    },
    terminal.signer,
  );
  return { bytes, nonce, time };
}

/** A ledger-signed token (for dev loads and tests). */
export function devToken(
  pki: DevPki,
  owner: Uint8Array,
  value: number,
  options: { serial?: Uint8Array; issued?: number; expires?: number; mark?: Mark; currency?: number } = {},
): Uint8Array {
  return signMessage(
    'Token',
    {
      serial: options.serial ?? nodeRandom(16),
      value,
      currency: options.currency ?? CURRENCY_KZT,
      owner,
      issued: options.issued ?? systemClock(),
      ...(options.expires !== undefined ? { expires: options.expires } : {}),
      ...(options.mark ? { mark: options.mark } : {}),
    },
    pki.ledger.signer,
  );
}
