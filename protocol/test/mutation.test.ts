/**
 * Mutation test: every valid vector is damaged at random (bit flips,
 * truncation, insertion, byte replacement, deletion, duplication) with a
 * fixed seed, at least 10,000 distinct-from-the-original inputs in all. For
 * each one the decoders and verifiers:
 * - only ever throw a `DtError` (never a TypeError, RangeError, a cbor-x
 *   error or anything else that a caller would not expect);
 * - never accept a mutated signed object: `verifySigned` and `verifyChain`
 *   must fail. A mutated handover may still decode (its signed parts are
 *   opaque byte strings there) but then every signed part that changed must
 *   fail verification with its signer's key.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';

import {
  bytesEqual,
  concatBytes,
  decodeMessage,
  fromHex,
  isDtError,
  sha256,
  u32be,
  utf8,
  verifySigned,
  type Handover,
  type MessageName,
} from '../src/index.ts';
import {
  isSigned,
  loadVectorFiles,
  runVectorCall,
  runVectorCallBytes,
  type InvalidVectorJson,
  type VectorCall,
} from '../scripts/vectors-lib.ts';

/** Minimum number of mutated inputs over the whole test. */
const MIN_CASES = 10_000;

function seededRandom(seed: string): { bytes(n: number): Uint8Array; int(n: number): number } {
  const s = utf8(seed);
  let counter = 0;
  let pool: Uint8Array = new Uint8Array(0);
  const bytes = (n: number) => {
    while (pool.length < n) pool = concatBytes(pool, sha256(concatBytes(s, u32be(counter++))));
    const out = pool.slice(0, n);
    pool = pool.slice(n);
    return out;
  };
  // Modulo bias is irrelevant for choosing mutations.
  const int = (n: number) => {
    const b = bytes(4);
    return (((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0) % n;
  };
  return { bytes, int };
}

/** Bytes that are heads of interesting CBOR items (long arguments, indefinite, floats, null, tags, break). */
const SPECIAL = [
  0x00, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1f, 0x20, 0x3b, 0x40, 0x58, 0x5b, 0x5f, 0x60, 0x7f, 0x80, 0x9b, 0x9f, 0xa0, 0xbb, 0xbf, 0xc1,
  0xd2, 0xd8, 0xf4, 0xf5, 0xf6, 0xf9, 0xfb, 0xff,
];

type Rng = ReturnType<typeof seededRandom>;

function mutate(rng: Rng, orig: Uint8Array): { kind: string; bytes: Uint8Array } {
  const n = orig.length;
  const pos = (extra = 0) => rng.int(n + extra);
  const byte = () => (rng.int(3) === 0 ? SPECIAL[rng.int(SPECIAL.length)]! : rng.bytes(1)[0]!);
  switch (rng.int(6)) {
    case 0: {
      const out = orig.slice();
      const flips = 1 + rng.int(3);
      for (let i = 0; i < flips; i++) out[pos()]! ^= 1 << rng.int(8);
      return { kind: 'bit-flip', bytes: out };
    }
    case 1:
      return { kind: 'truncate', bytes: orig.slice(0, pos()) };
    case 2: {
      const at = pos(1);
      const ins = Uint8Array.from({ length: 1 + rng.int(8) }, byte);
      return { kind: 'insert', bytes: concatBytes(orig.subarray(0, at), ins, orig.subarray(at)) };
    }
    case 3: {
      const out = orig.slice();
      const k = 1 + rng.int(4);
      for (let i = 0; i < k; i++) out[pos()] = byte();
      return { kind: 'replace', bytes: out };
    }
    case 4: {
      const at = pos();
      const len = 1 + rng.int(Math.min(16, n - at));
      return { kind: 'delete', bytes: concatBytes(orig.subarray(0, at), orig.subarray(at + len)) };
    }
    default: {
      const at = pos();
      const len = 1 + rng.int(Math.min(32, n - at));
      return { kind: 'duplicate', bytes: concatBytes(orig.subarray(0, at + len), orig.subarray(at, at + len), orig.subarray(at + len)) };
    }
  }
}

const files = loadVectorFiles();
const pki = files.get('certificate.json')!.keys!;
const cardKey = fromHex(pki['card-1']!.publicKey);
const ledgerKey = fromHex(pki['ledger']!.publicKey);

/** One thing to mutate: bytes, and how to run them. */
interface Target {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly signed: boolean;
  run(b: Uint8Array): unknown;
}

const targets: Target[] = [];
for (const [file, f] of files) {
  for (const v of f.valid) {
    const bytes = fromHex(v.hex);
    if (f.message === undefined) {
      targets.push({
        name: `${file}/${v.name}`,
        bytes,
        signed: false,
        run: (b) => runVectorCallBytes('decodeCbor', b, { maxSize: 65536 }),
      });
    } else if (isSigned(f.message)) {
      const params = { message: f.message, publicKey: v.signer!.publicKey };
      targets.push({ name: `${file}/${v.name}`, bytes, signed: true, run: (b) => runVectorCallBytes('verifySigned', b, params) });
    } else {
      const name: MessageName = f.message;
      const original = decodeMessage('Handover', bytes);
      targets.push({
        name: `${file}/${v.name}`,
        bytes,
        signed: false,
        run: (b) => checkHandover(original, decodeMessage(name, b) as Handover),
      });
    }
  }
  for (const c of f.validChains ?? []) {
    // Mutate each certificate of the chain in turn (the chain is passed as separate byte strings).
    c.chain.forEach((certHex, i) => {
      const params: InvalidVectorJson['params'] = { root: c.root, at: c.at, leafRole: c.leafRole };
      targets.push({
        name: `${file}/${c.name}[${i}]`,
        bytes: fromHex(certHex),
        signed: true,
        run: (b) =>
          runVectorCall('verifyChain' as VectorCall, undefined, { ...params, chain: c.chain.map((h, j) => (j === i ? hexOf(b) : h)) }),
      });
    });
  }
}

function hexOf(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += (x < 16 ? '0' : '') + x.toString(16);
  return s;
}

/** A mutated handover that still decodes: each changed signed part must fail verification. */
function checkHandover(original: Handover, h: Handover): void {
  const changed = (a: Uint8Array | undefined, b: Uint8Array | undefined) => a !== undefined && (b === undefined || !bytesEqual(a, b));
  if (changed(h.transfer, original.transfer)) mustFail(() => verifySigned('Transfer', h.transfer, cardKey));
  h.history.forEach((x, i) => changed(x, original.history[i]) && mustFail(() => verifySigned('Transfer', x, cardKey)));
  (h.tokens ?? []).forEach((x, i) => changed(x, original.tokens?.[i]) && mustFail(() => verifySigned('Token', x, ledgerKey)));
  if (h.chain.some((x, i) => changed(x, original.chain[i])) || h.chain.length !== original.chain.length) {
    const c = files.get('certificate.json')!.validChains!.find((x) => x.name === 'card-chain')!;
    mustFail(() => runVectorCall('verifyChain', undefined, { chain: h.chain.map(hexOf), root: c.root, at: c.at, leafRole: c.leafRole }));
  }
}

class AcceptedMutation extends Error {}

function mustFail(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (isDtError(e)) return;
    throw e;
  }
  throw new AcceptedMutation('a changed signed part of a handover verified');
}

test(`mutated vectors: only DtError, never a successful verification (>= ${MIN_CASES} cases)`, (t: ExecutionContext) => {
  const rng = seededRandom('DT mutation test v1');
  const perTarget = Math.ceil(MIN_CASES / targets.length);
  let cases = 0;
  let accepted = 0;
  const codes: Record<string, number> = {};
  const kinds: Record<string, number> = {};
  for (const target of targets) {
    for (let i = 0; i < perTarget;) {
      const m = mutate(rng, target.bytes);
      if (bytesEqual(m.bytes, target.bytes)) continue; // identical bytes are not a mutation
      i++;
      cases++;
      kinds[m.kind] = (kinds[m.kind] ?? 0) + 1;
      try {
        target.run(m.bytes);
        accepted++;
        if (target.signed) t.fail(`${target.name}: ${m.kind} mutation ${hexOf(m.bytes).slice(0, 64)}… verified`);
      } catch (e) {
        if (e instanceof AcceptedMutation) {
          t.fail(`${target.name}: ${m.kind}: ${e.message}`);
        } else if (!isDtError(e)) {
          t.fail(`${target.name}: ${m.kind} mutation threw a non-DtError: ${String(e)}`);
        } else codes[e.code] = (codes[e.code] ?? 0) + 1;
      }
    }
  }
  console.log(`mutation: ${cases} cases over ${targets.length} targets; accepted (unsigned only): ${accepted}`);
  console.log('mutation kinds:', kinds);
  console.log('rejections by code:', codes);
  t.true(cases >= MIN_CASES);
  t.true(Object.keys(codes).length >= 8, 'mutations reach many different checks');
});
