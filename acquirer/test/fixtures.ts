/**
 * Test fixtures for the acquirer suites: a seeded PKI built with the
 * protocol's real certificate code, terminals, reference wallets holding
 * ledger-signed tokens, and signed batches. Everything is real crypto; seeds
 * only make runs reproducible.
 */
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BankPermission,
  concatBytes,
  CURRENCY_KZT,
  generateKeyPair,
  issueCertificate,
  keyPairSigner,
  ReferenceWallet,
  Role,
  sha256,
  signMessage,
  u32be,
  utf8,
  type KeyPair,
  type RandomSource,
  type Signer,
} from '@dt/protocol';

/** Deterministic byte stream from a seed (SHA-256 in counter mode). */
export function seededRandom(seed: string): RandomSource {
  let counter = 0;
  let pool: Uint8Array = new Uint8Array(0);
  return (n: number) => {
    while (pool.length < n) pool = concatBytes(pool, sha256(concatBytes(utf8(seed), u32be(counter++))));
    const out = pool.slice(0, n);
    pool = pool.slice(n);
    return out;
  };
}

/** Deterministic float PRNG in [0, 1) (mulberry32). */
export function seededFloat(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const NOW = () => Math.floor(Date.now() / 1000);
const YEAR = 365 * 24 * 3600;

export interface Party {
  readonly keys: KeyPair;
  readonly signer: Signer;
  readonly cert: Uint8Array;
}

export interface TestPki {
  readonly random: RandomSource;
  readonly root: Party;
  readonly ledger: Party;
  /** Acquiring bank of the acquirer under test. */
  readonly acquiringBank: Party;
  /** The acquirer's own service key, certified by {@link acquiringBank} (role ACQUIRER): signs its settle requests. */
  readonly acquirer: Party;
  /** Another acquiring bank under the same root. */
  readonly otherBank: Party;
  /** Card-issuing bank. */
  readonly issuingBank: Party;
}

function party(random: RandomSource, make: (kp: KeyPair) => Uint8Array): Party {
  const keys = generateKeyPair(random);
  return { keys, signer: keyPairSigner(keys), cert: make(keys) };
}

/** A root with ledger, two acquiring banks and an issuing bank. */
export function makePki(seed: string): TestPki {
  const random = seededRandom(seed);
  const t = NOW();
  const rootKeys = generateKeyPair(random);
  const rootSigner = keyPairSigner(rootKeys);
  const root: Party = {
    keys: rootKeys,
    signer: rootSigner,
    cert: issueCertificate(
      { iss: 'DT issuer', sub: 'DT issuer', exp: t + 10 * YEAR, nbf: t - YEAR, iat: t, role: Role.ISSUER, publicKey: rootKeys.publicKey },
      rootSigner,
    ),
  };
  const byRoot = (sub: string, role: Role, perms?: number) => (kp: KeyPair) =>
    issueCertificate(
      { iss: 'DT issuer', sub, exp: t + 5 * YEAR, nbf: t - YEAR, iat: t, role, ...(perms ? { perms } : {}), publicKey: kp.publicKey },
      rootSigner,
    );
  const acquiringBank = party(random, byRoot('acquirer bank', Role.BANK, BankPermission.ACQUIRING));
  return {
    random,
    root,
    ledger: party(random, byRoot('ledger', Role.LEDGER)),
    acquiringBank,
    acquirer: party(random, (kp) =>
      issueCertificate(
        { iss: 'bank', sub: 'acquirer', exp: t + YEAR, nbf: t - 3600, iat: t, role: Role.ACQUIRER, publicKey: kp.publicKey },
        acquiringBank.signer,
      ),
    ),
    otherBank: party(random, byRoot('other bank', Role.BANK, BankPermission.ACQUIRING)),
    issuingBank: party(random, byRoot('issuing bank', Role.BANK, BankPermission.ISSUING)),
  };
}

export interface Terminal {
  readonly signer: Signer;
  readonly kid: Uint8Array;
  readonly chain: Uint8Array[];
  readonly merchant: string;
  readonly mcc: number;
}

/** A terminal certified by `bank`; `exp`/`nbf` override the validity window. */
export function makeTerminal(pki: TestPki, bank: Party, opts: { exp?: number; nbf?: number; merchant?: string } = {}): Terminal {
  const t = NOW();
  const keys = generateKeyPair(pki.random);
  const merchant = opts.merchant ?? 'M-0001';
  const cert = issueCertificate(
    {
      iss: 'bank',
      sub: `terminal ${merchant}`,
      exp: opts.exp ?? t + YEAR,
      nbf: opts.nbf ?? t - 3600,
      iat: t - 3600,
      role: Role.TERMINAL,
      merchant: { id: merchant, mcc: 5812, name: 'Canteen' },
      publicKey: keys.publicKey,
    },
    bank.signer,
  );
  const signer = keyPairSigner(keys);
  return { signer, kid: signer.kid, chain: [cert, bank.cert], merchant, mcc: 5812 };
}

/** A reference wallet with a card certificate from the issuing bank and `tokens` ledger-signed tokens of `value` each. */
export function makeWallet(pki: TestPki, tokens: number, value: number): ReferenceWallet {
  const t = NOW();
  const keys = generateKeyPair(pki.random);
  const cert = issueCertificate(
    {
      iss: 'issuing bank',
      sub: 'card',
      exp: t + YEAR,
      nbf: t - 3600,
      iat: t - 3600,
      role: Role.CARD,
      limits: { perPayment: 1_000_000, offlineTotal: 10_000_000, offlineCount: 64, cvmLimit: 1_000_000 },
      publicKey: keys.publicKey,
    },
    pki.issuingBank.signer,
  );
  const signer = keyPairSigner(keys);
  const w = new ReferenceWallet({ signer, chain: [cert, pki.issuingBank.cert] });
  const signed: Uint8Array[] = [];
  for (let i = 0; i < tokens; i++) {
    signed.push(
      signMessage('Token', { serial: pki.random(16), value, currency: CURRENCY_KZT, owner: signer.kid, issued: t - 60 }, pki.ledger.signer),
    );
  }
  w.holdTokens(signed, pki.ledger.keys.publicKey);
  return w;
}

/** The wallet pays `amount` to `terminal`; returns the encoded handover. */
export function pay(w: ReferenceWallet, terminal: Terminal, amount: number, random: RandomSource): Uint8Array {
  return w.pay({
    amount,
    currency: CURRENCY_KZT,
    terminal: terminal.kid,
    merchant: terminal.merchant,
    mcc: terminal.mcc,
    nonce: random(16),
    time: NOW() - 10,
  }).handover;
}

/** The acquirer identity options of {@link startAcquirer} for a test PKI. */
export function acquirerIdentity(pki: TestPki): { acquirerCert: Uint8Array; acquirerSigner: Signer } {
  return { acquirerCert: pki.acquirer.cert, acquirerSigner: pki.acquirer.signer };
}

/** A signed batch. */
export function makeBatch(terminal: Terminal, seq: number, handovers: Uint8Array[], crlVersion = 0): Uint8Array {
  return signMessage('Batch', { terminal: terminal.kid, seq, time: NOW(), chain: terminal.chain, handovers, crlVersion }, terminal.signer);
}

/** A TCP port nothing listens on (bound then released). */
export async function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** A fresh temp directory and a cleanup function. */
export function tempDir(prefix = 'dt-acq-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
