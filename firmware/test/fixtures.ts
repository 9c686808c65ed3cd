/**
 * Test fixtures: a seeded RNG, a complete PKI (issuer root, ledger, issuing and
 * acquiring banks, terminals), a ledger that answers sync requests with real
 * signed receipts, and a host that drives an Applet through the protocol's
 * reader-side exchange (chaining and GET RESPONSE included).
 */
import {
  BankPermission,
  CURRENCY_KZT,
  concatBytes,
  exchange,
  generateKeyPair,
  issueCertificate,
  keyPairSigner,
  openSigned,
  payloadHash,
  Role,
  sha256,
  signMessage,
  sumAmounts,
  u32be,
  CLA,
  INS,
  PERSONALIZE_P1,
  SYNC_P1,
  DT_AID,
  type CommandApdu,
  type KeyPair,
  type Mark,
  type ResponseApdu,
  type Signer,
  type Token,
  encodeFormat,
  SetConfigSchema,
  SetPinSchema,
  WriteCertificatesSchema,
} from '@dt/protocol';
import { Applet, MemoryStorage, type Hal, type Storage } from '../src/index.ts';

/** Deterministic random bytes: SHA-256(seed || counter) blocks. Same seed, same stream. */
export function seededRandom(seed: string): (n: number) => Uint8Array {
  let counter = 0;
  const s = new TextEncoder().encode(seed);
  let buf: Uint8Array = new Uint8Array(0);
  return (n: number) => {
    while (buf.length < n) buf = concatBytes(buf, sha256(concatBytes(s, u32be(counter++))));
    const out = buf.slice(0, n);
    buf = buf.slice(n);
    return out;
  };
}

/** Fixed test time (2027-01-15). */
export const T0 = 1_800_000_000;
const YEAR = 365 * 24 * 3600;

export interface Party {
  keys: KeyPair;
  signer: Signer;
  cert: Uint8Array;
}

export interface Terminal extends Party {
  chain: Uint8Array[];
  merchant: { id: string; mcc: number; name: string };
}

export interface Pki {
  rng: (n: number) => Uint8Array;
  root: Party;
  ledger: Party;
  issuing: Party;
  acquiring: Party;
  /** A bank with only the ISSUING permission (must not be able to certify terminals). */
  issuingOnly: Party;
  terminal: Terminal;
  canteen: Terminal;
  /** A terminal certified by a bank without the ACQUIRING permission. */
  rogue: Terminal;
  /** A terminal whose chain leads to another issuer root. */
  foreign: Terminal;
  limits: { perPayment: number; offlineTotal: number; offlineCount: number; cvmLimit: number };
  issueCard(publicKey: Uint8Array, limits?: Pki['limits']): Uint8Array[];
}

function party(rng: (n: number) => Uint8Array): { keys: KeyPair; signer: Signer } {
  const keys = generateKeyPair(rng);
  return { keys, signer: keyPairSigner(keys) };
}

const validity = { nbf: T0 - YEAR, iat: T0 - YEAR, exp: T0 + 5 * YEAR };

export function makePki(seed = 'pki'): Pki {
  const rng = seededRandom(seed);
  const rootP = party(rng);
  const root: Party = {
    ...rootP,
    cert: issueCertificate(
      { iss: 'DT issuer', sub: 'DT issuer', role: Role.ISSUER, ...validity, publicKey: rootP.keys.publicKey },
      rootP.signer,
    ),
  };
  const mk = (sub: string, role: Role, issuer: Signer, extra: object = {}): Party => {
    const p = party(rng);
    return { ...p, cert: issueCertificate({ iss: 'x', sub, role, ...validity, ...extra, publicKey: p.keys.publicKey } as never, issuer) };
  };
  const ledger = mk('DT ledger', Role.LEDGER, root.signer);
  const issuing = mk('Issuing bank', Role.BANK, root.signer, { perms: BankPermission.ISSUING });
  const acquiring = mk('Acquiring bank', Role.BANK, root.signer, { perms: BankPermission.ACQUIRING });
  const issuingOnly = mk('Issuing-only bank', Role.BANK, root.signer, { perms: BankPermission.ISSUING });
  const term = (bank: Party, merchant: Terminal['merchant']): Terminal => {
    const p = mk(`terminal ${merchant.id}`, Role.TERMINAL, bank.signer, { merchant });
    return { ...p, chain: [p.cert, bank.cert], merchant };
  };
  const terminal = term(acquiring, { id: 'shop-1', mcc: 5411, name: 'Grocery One' });
  const canteen = term(acquiring, { id: 'school-7', mcc: 5814, name: 'School 7 canteen' });
  const rogue = term(issuingOnly, { id: 'rogue', mcc: 5411, name: 'Rogue reader' });
  // Another root with its own acquiring bank: a chain that does not lead to the pinned root.
  const otherRoot = party(rng);
  const otherAcq = party(rng);
  const otherAcqCert = issueCertificate(
    { iss: 'other', sub: 'other acq', role: Role.BANK, perms: BankPermission.ACQUIRING, ...validity, publicKey: otherAcq.keys.publicKey },
    otherRoot.signer,
  );
  const fp = party(rng);
  const fmerchant = { id: 'shop-1', mcc: 5411, name: 'Fake' };
  const fcert = issueCertificate(
    { iss: 'x', sub: 'fake', role: Role.TERMINAL, merchant: fmerchant, ...validity, publicKey: fp.keys.publicKey },
    otherAcq.signer,
  );
  const foreign: Terminal = { ...fp, cert: fcert, chain: [fcert, otherAcqCert], merchant: fmerchant };
  const limits = { perPayment: 50_000, offlineTotal: 120_000, offlineCount: 5, cvmLimit: 10_000 };
  return {
    rng,
    root,
    ledger,
    issuing,
    acquiring,
    issuingOnly,
    terminal,
    canteen,
    rogue,
    foreign,
    limits,
    issueCard(publicKey, l = limits) {
      const cert = issueCertificate(
        { iss: 'Issuing bank', sub: 'card', role: Role.CARD, limits: l, currency: CURRENCY_KZT, ...validity, publicKey },
        issuing.signer,
      );
      return [cert, issuing.cert];
    },
  };
}

/** Options of {@link Ledger.receipt}. */
export interface ReceiptOptions {
  loaded?: number;
  /** Token denominations; default: the whole value in one token (none when 0). */
  values?: number[];
  marks?: (Mark | undefined)[];
  voided?: Uint8Array[];
  /** Value moved to the issuing bank (revoked card); subtracted from the default token total. */
  redeemed?: number;
  /** Value credited by merchant refunds (SPEC §7.7.3); added to the default token total. */
  refunded?: number;
  time?: number;
  expires?: number;
}

/** The ledger's side of SYNC/LOAD for tests: real tokens and receipts signed with the ledger key. */
export class Ledger {
  constructor(readonly pki: Pki) {}

  receipt(requestBytes: Uint8Array, o: ReceiptOptions = {}): Uint8Array {
    const req = openSigned('SyncRequest', requestBytes);
    const loaded = o.loaded ?? 0;
    let voidedValue = 0;
    for (const v of o.voided ?? []) {
      const t = req.message.history
        .map((b) => openSigned('Transfer', b))
        .find((x) => Buffer.from(payloadHash(x.cose)).equals(Buffer.from(v)));
      voidedValue += t ? t.message.amount : 0;
    }
    const total = req.message.balance + loaded + (o.refunded ?? 0) + voidedValue - (o.redeemed ?? 0);
    const values = o.values ?? (total > 0 ? [total] : []);
    const tokens = values.map((value, i) => {
      const mark = o.marks?.[i];
      const token: Token = {
        serial: this.pki.rng(16),
        value,
        currency: CURRENCY_KZT,
        owner: req.message.card,
        issued: o.time ?? T0,
        ...(o.expires !== undefined ? { expires: o.expires } : {}),
        ...(mark ? { mark } : {}),
      };
      return signMessage('Token', token, this.pki.ledger.signer);
    });
    return signMessage(
      'SyncReceipt',
      {
        card: req.message.card,
        counter: req.message.counter,
        request: payloadHash(req.cose),
        tokens,
        time: o.time ?? T0,
        ...(o.redeemed !== undefined ? { redeemed: o.redeemed } : {}),
        ...(o.refunded !== undefined ? { refunded: o.refunded } : {}),
        loaded,
        voided: o.voided ?? [],
      },
      this.pki.ledger.signer,
    );
  }
}

/** Every status word a {@link Host} has seen (final and intermediate), for coverage checks. */
export const observedSw = new Set<number>();

function record(r: ResponseApdu): ResponseApdu {
  observedSw.add(r.sw);
  return r;
}

/** Drives an applet with whole commands (chaining and GET RESPONSE done by the protocol's exchange). */
export class Host {
  constructor(public applet: Applet) {}

  async send(cmd: CommandApdu): Promise<ResponseApdu> {
    return record(await exchange({ transmit: (apdu) => this.#transmit(apdu) }, cmd));
  }

  async raw(bytes: Uint8Array): Promise<ResponseApdu> {
    const r = await this.#transmit(bytes);
    return record({ data: r.slice(0, -2), sw: (r[r.length - 2]! << 8) | r[r.length - 1]! });
  }

  async #transmit(apdu: Uint8Array): Promise<Uint8Array> {
    const r = await this.applet.process(apdu);
    observedSw.add((r[r.length - 2]! << 8) | r[r.length - 1]!);
    return r;
  }

  select(): Promise<ResponseApdu> {
    return this.send({ cla: CLA.ISO, ins: INS.SELECT, p1: 4, p2: 0, data: DT_AID, le: 256 });
  }

  cmd(ins: number, p1 = 0, data?: Uint8Array, le = true): Promise<ResponseApdu> {
    return this.send({ cla: CLA.PROPRIETARY, ins, p1, p2: 0, ...(data && data.length ? { data } : {}), ...(le ? { le: 256 } : {}) });
  }

  status(): Promise<ResponseApdu> {
    return this.cmd(INS.GET_STATUS);
  }

  verifyPin(pin: string): Promise<ResponseApdu> {
    return this.cmd(INS.VERIFY_PIN, 0, new TextEncoder().encode(pin), false);
  }

  pay(request: Uint8Array): Promise<ResponseApdu> {
    return this.cmd(INS.PAY, 0, request);
  }

  syncBegin(challenge: Uint8Array, load = false): Promise<ResponseApdu> {
    return this.cmd(load ? INS.LOAD : INS.SYNC, SYNC_P1.BEGIN, challenge);
  }

  syncComplete(receipt: Uint8Array, load = false): Promise<ResponseApdu> {
    return this.cmd(load ? INS.LOAD : INS.SYNC, SYNC_P1.COMPLETE, receipt, false);
  }
}

export const PIN = '1234';
export const PUK = '12345678';

/** The personalization APDU steps, one per call, so that tearing tests can count writes between them. */
export async function personalize(host: Host, pki: Pki, opts: { pinTries?: number; limits?: Pki['limits'] } = {}): Promise<Uint8Array> {
  const sw = (r: ResponseApdu, what: string) => {
    if (r.sw !== 0x9000) throw new Error(`${what}: SW ${r.sw.toString(16)}`);
    return r.data;
  };
  sw(await host.select(), 'select');
  const pub = sw(await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.GENERATE_KEY), 'generate key');
  const chain = pki.issueCard(pub, opts.limits);
  sw(
    await host.cmd(
      INS.PERSONALIZE,
      PERSONALIZE_P1.WRITE_CERTIFICATES,
      encodeFormat(WriteCertificatesSchema, { chain, root: pki.root.cert, ledger: pki.ledger.cert, time: T0 - 100 }),
      false,
    ),
    'write certificates',
  );
  const enc = new TextEncoder();
  sw(
    await host.cmd(
      INS.PERSONALIZE,
      PERSONALIZE_P1.SET_PIN,
      encodeFormat(SetPinSchema, { pin: enc.encode(PIN), puk: enc.encode(PUK), ...(opts.pinTries ? { pinTries: opts.pinTries } : {}) }),
      false,
    ),
    'set pin',
  );
  sw(await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.SET_CONFIG, encodeFormat(SetConfigSchema, { floor: T0 - 100 }), false), 'set config');
  sw(await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.LOCK, undefined, false), 'lock');
  return pub;
}

/** Loads value onto a personalized, selected card through LOAD BEGIN/COMPLETE. */
export async function load(host: Host, ledger: Ledger, amount: number, o: ReceiptOptions = {}): Promise<Uint8Array> {
  const begin = await host.syncBegin(ledger.pki.rng(16), true);
  if (begin.sw !== 0x9000) throw new Error(`load begin: ${begin.sw.toString(16)}`);
  const receipt = ledger.receipt(begin.data, { ...o, loaded: amount });
  const done = await host.syncComplete(receipt, true);
  if (done.sw !== 0x9000) throw new Error(`load complete: ${done.sw.toString(16)}`);
  return receipt;
}

export interface RequestOptions {
  amount: number;
  nonce?: Uint8Array;
  retryOf?: Uint8Array;
  time?: number;
  merchant?: string;
  mcc?: number;
  currency?: number;
  /** Issuing banks whose certificates the terminal says it holds (SPEC §3.6 banks). */
  banks?: Uint8Array[];
  /** The newest transfer of the card the terminal holds with its chain (SPEC §3.6 held). */
  held?: Uint8Array;
}

/** A terminal's signed PaymentRequest. */
export function paymentRequest(pki: Pki, t: Terminal, o: RequestOptions): Uint8Array {
  return signMessage(
    'PaymentRequest',
    {
      amount: o.amount,
      currency: o.currency ?? CURRENCY_KZT,
      terminal: t.signer.kid,
      merchant: o.merchant ?? t.merchant.id,
      mcc: o.mcc ?? t.merchant.mcc,
      nonce: o.nonce ?? pki.rng(16),
      time: o.time ?? T0,
      chain: t.chain,
      ...(o.retryOf ? { retryOf: o.retryOf } : {}),
      ...(o.banks ? { banks: o.banks } : {}),
      ...(o.held ? { held: o.held } : {}),
    },
    t.signer,
  );
}

/** A fresh card over `storage` with a seeded RNG. */
export function newCard(
  storage: Storage = new MemoryStorage(),
  seed = 'card',
  extra: Partial<Hal> = {},
): { applet: Applet; host: Host; storage: Storage } {
  const hal: Hal = { storage, random: seededRandom(seed), ...extra };
  const applet = new Applet(hal);
  return { applet, host: new Host(applet), storage };
}

/** Sum of token values in a receipt. */
export function receiptTotal(receipt: Uint8Array): number {
  return sumAmounts(openSigned('SyncReceipt', receipt).message.tokens.map((t) => openSigned('Token', t).message.value));
}
