/**
 * Micro-benchmark of offline handover validation (`validateHandover`) at 0, 5 and 63 history
 * hops: microseconds of CPU time (user + system, so that other jobs on the machine count less)
 * per handover and per transfer, with the native verifier (what a
 * server runs) and with a verifier that answers from a memo of triples it verified before
 * (what the ledger's KnownFacts do for history it recorded), which leaves the decoding,
 * hashing and checking that the protocol itself does per transfer.
 *
 * Usage: `node --conditions=dt-source --import tsx protocol/bench/handover.ts [--rounds N] [--hops 0,5,63] [--modes native,known] [--json FILE]`
 * (add `--cpu-prof` to node for a profile). Figures only; no test asserts on them.
 *
 * @module
 */
import { writeFileSync } from 'node:fs';
import {
  BankPermission,
  CURRENCY_KZT,
  ReferenceWallet,
  Role,
  createTrustStore,
  generateKeyPair,
  issueCertificate,
  keyPairSigner,
  signMessage,
  validateHandover,
  type KeyPair,
  type Signer,
  type Verifier,
} from '../src/index.ts';
import { nativeVerifier } from '../src/native.ts';

const T0 = 1_800_000_000;
const YEAR = 365 * 86400;
const rnd = (n: number) => crypto.getRandomValues(new Uint8Array(n));
const LIMITS = { perPayment: 1_000_000, offlineTotal: 100_000_000, offlineCount: 64, cvmLimit: 1_000_000 };

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : dflt;
}
const rounds = Number(arg('--rounds', '5'));
const jsonOut = arg('--json', '');

interface Party {
  keys: KeyPair;
  signer: Signer;
  cert: Uint8Array;
}
function party(role: number, issuer: Signer | null, extra: Record<string, unknown> = {}): Party {
  const keys = generateKeyPair(rnd);
  const signer = keyPairSigner(keys);
  const cert = issueCertificate(
    {
      iss: 'dt',
      sub: `role-${role}`,
      iat: T0 - YEAR,
      nbf: T0 - YEAR,
      exp: T0 + YEAR,
      role: role as never,
      publicKey: keys.publicKey,
      ...extra,
    } as never,
    issuer ?? signer,
  );
  return { keys, signer, cert };
}

const root = party(Role.ISSUER, null);
const ledger = party(Role.LEDGER, root.signer);
const bank = party(Role.BANK, root.signer, { perms: BankPermission.ISSUING | BankPermission.ACQUIRING });
const trust = createTrustStore({ root: root.cert, ledgerCert: ledger.cert, at: T0 });
const shop = party(Role.TERMINAL, bank.signer, { merchant: { id: 'shop-1', mcc: 5411, name: 'shop-1' } });

/** A handover of a card that paid `hops` times before (its whole history carried). */
function handoverAt(hops: number): Uint8Array {
  const card = party(Role.CARD, bank.signer, { limits: LIMITS });
  const wallet = new ReferenceWallet({ signer: card.signer, chain: [card.cert, bank.cert], personalizedAt: T0 - 100 });
  const token = signMessage(
    'Token',
    { serial: rnd(16), value: 10_000_000, currency: CURRENCY_KZT, owner: card.signer.kid, issued: T0 - 100 },
    ledger.signer,
  );
  wallet.holdTokens([token], ledger.keys.publicKey, nativeVerifier);
  let last: Uint8Array | undefined;
  for (let i = 0; i <= hops; i++) {
    const r = {
      amount: 100 + i,
      currency: CURRENCY_KZT,
      terminal: shop.signer.kid,
      merchant: 'shop-1',
      mcc: 5411,
      nonce: rnd(16),
      time: T0 + i,
    };
    last = wallet.pay(r).handover;
  }
  return last!;
}

/**
 * Answers true for triples it saw verify natively before (found by the signature, then the
 * message and key compared in full, as the ledger's `knownVerifier` does); verifies anything else.
 */
function memoOf(inner: Verifier): Verifier {
  const buf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const seen = new Map<string, { message: Buffer; publicKey: Buffer }>();
  return {
    verify(signature, message, publicKey) {
      const k = buf(signature).toString('latin1');
      const hit = seen.get(k);
      if (hit && hit.message.equals(buf(message)) && hit.publicKey.equals(buf(publicKey))) return true;
      const ok = inner.verify(signature, message, publicKey);
      if (ok) seen.set(k, { message: Buffer.from(message), publicKey: Buffer.from(publicKey) });
      return ok;
    },
  };
}

const HOPS = arg('--hops', '0,5,63').split(',').map(Number);
const MODES = arg('--modes', 'native,known').split(',') as ('native' | 'known')[];
const PER = 10; // distinct cards per hop count
const sets = HOPS.map((h) => ({ h, handovers: Array.from({ length: PER }, () => handoverAt(h)) }));

/** CPU microseconds (user + system of this process) per validated handover, over at least `minMs` of CPU time. */
function run(verifier: Verifier, handovers: readonly Uint8Array[], minMs: number): number {
  let n = 0;
  const c0 = process.cpuUsage();
  let used = 0;
  while (used < minMs * 1000) {
    for (const h of handovers) {
      const r = validateHandover(h, { trust, verifier, payee: shop.signer.kid, notAfter: T0 + 1000 });
      if (!r.ok) throw new Error(`bench handover refused: ${r.code} ${r.detail ?? ''}`);
      n++;
    }
    const c = process.cpuUsage(c0);
    used = c.user + c.system;
  }
  return used / n;
}

const results: Record<string, { usPerHandover: number; usPerTransfer: number }> = {};
for (const mode of MODES) {
  for (const { h, handovers } of sets) {
    const verifier = mode === 'native' ? nativeVerifier : memoOf(nativeVerifier);
    run(verifier, handovers, 300); // warm-up (and the memo fills)
    const samples: number[] = [];
    for (let i = 0; i < rounds; i++) samples.push(run(verifier, handovers, 400));
    samples.sort((a, b) => a - b);
    const us = samples[Math.floor(samples.length / 2)]!;
    results[`${mode}/hops${h}`] = { usPerHandover: +us.toFixed(1), usPerTransfer: +(us / (h + 1)).toFixed(2) };
    process.stderr.write(
      `${mode.padEnd(6)} hops ${String(h).padStart(2)}: ${us.toFixed(1).padStart(8)} µs/handover, ${(us / (h + 1)).toFixed(2).padStart(7)} µs/transfer\n`,
    );
  }
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(results, null, 2) + '\n');
