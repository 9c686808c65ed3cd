/**
 * Voids and refunds on the wire (SPEC.md §3.9.1, §7.7.3): `signAdjustment` and
 * `openAdjustment` round-trip, and an adjustment opens only with the key of the
 * terminal it names, within its size limit.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';

import {
  AdjustmentCode,
  AdjustmentKind,
  coseSign1,
  CURRENCY_KZT,
  encodeMessage,
  ErrorCode,
  isDtError,
  keyId,
  keyPairSigner,
  MESSAGES,
  openAdjustment,
  payloadHash,
  signAdjustment,
  type Adjustment,
} from '../src/index.ts';
import { keysFor } from './helpers/pki.ts';

const terminal = keysFor('adjustment terminal');
const other = keysFor('adjustment other terminal');
const base: Adjustment = {
  kind: AdjustmentKind.REFUND,
  id: new Uint8Array(16).fill(7),
  terminal: keyId(terminal.publicKey),
  transfer: new Uint8Array(32).fill(1),
  card: new Uint8Array(16).fill(2),
  amount: 1_500,
  currency: CURRENCY_KZT,
  time: 1_800_000_000,
  reference: 'R-1',
};

function codeOf(f: () => unknown): string {
  try {
    f();
    return 'OK';
  } catch (e) {
    return isDtError(e) ? e.code : String(e);
  }
}

test('signAdjustment / openAdjustment round-trip; the hash is the payload hash; content format 65010', (t) => {
  const signed = signAdjustment(base, keyPairSigner(terminal));
  t.true(signed.length <= MESSAGES.Adjustment.maxSize);
  const opened = openAdjustment(signed, terminal.publicKey);
  t.deepEqual(opened.adjustment, base);
  t.deepEqual(opened.hash, payloadHash(opened.cose));
  t.is(opened.cose.contentType, 65010);
  // The text content type is accepted too (SPEC §4.1).
  const text = coseSign1(encodeMessage('Adjustment', base), MESSAGES.Adjustment.contentType, keyPairSigner(terminal));
  t.deepEqual(openAdjustment(text, terminal.publicKey).adjustment, base);
});

test('an adjustment opens only with the key of the terminal it names', (t) => {
  // Signing for another terminal is refused at once.
  t.is(
    codeOf(() => signAdjustment(base, keyPairSigner(other))),
    ErrorCode.KEY_MISMATCH,
  );
  const signed = signAdjustment(base, keyPairSigner(terminal));
  t.is(
    codeOf(() => openAdjustment(signed, other.publicKey)),
    ErrorCode.KEY_MISMATCH,
  );
  // Signed by another key under the named terminal's content: the kid is the signer's, not the terminal's.
  const forged = coseSign1(encodeMessage('Adjustment', base), MESSAGES.Adjustment.contentFormat, keyPairSigner(other));
  t.is(
    codeOf(() => openAdjustment(forged, terminal.publicKey)),
    ErrorCode.KEY_MISMATCH,
  );
  t.is(
    codeOf(() => openAdjustment(forged, other.publicKey)),
    ErrorCode.KEY_MISMATCH,
  );
  // A flipped signature byte.
  const bad = signed.slice();
  bad[bad.length - 1]! ^= 1;
  t.is(
    codeOf(() => openAdjustment(bad, terminal.publicKey)),
    ErrorCode.BAD_SIGNATURE,
  );
});

test('adjustment bounds: kind 1..2, amount at least 1, reference at most 64 bytes, 512 bytes in all', (t) => {
  const s = keyPairSigner(terminal);
  t.is(
    codeOf(() => signAdjustment({ ...base, kind: 3 }, s)),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  t.is(
    codeOf(() => signAdjustment({ ...base, amount: 0 }, s)),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  t.not(
    codeOf(() => signAdjustment({ ...base, reference: 'x'.repeat(65) }, s)),
    'OK',
  );
  t.is(
    codeOf(() => openAdjustment(new Uint8Array(513), terminal.publicKey)),
    ErrorCode.TOO_LARGE,
  );
});

test('the adjustment codes are stable strings, none of them a protocol ErrorCode (they are ledger verdict codes)', (t) => {
  for (const [k, v] of Object.entries(AdjustmentCode)) t.is(k, v);
  const clash = Object.values(AdjustmentCode).filter((c) => c in ErrorCode);
  t.deepEqual(clash, []);
});

test('SPEC.md §7.7.3 lists exactly the adjustment codes', (t) => {
  const spec = readFileSync(new URL('../SPEC.md', import.meta.url), 'utf8');
  const section = spec.slice(spec.indexOf('#### 7.7.3 Voids and refunds'), spec.indexOf('### 7.8 Revocation'));
  const listed = [...section.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]!);
  t.deepEqual([...listed].sort(), Object.values(AdjustmentCode).sort());
});
