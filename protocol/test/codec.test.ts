/**
 * The message codec by name (`codec.ts`, SPEC.md §2.4, §4, §6): sign / open /
 * verify round trips for every signed message, size limits on the signed
 * object, payload hashes, output ids and the genesis anchor, and a Handover
 * container whose nested signed objects verify.
 */
import test from 'ava';
import fc from 'fast-check';

import {
  concatBytes,
  decodeMessage,
  encodeDeterministic,
  encodeStruct,
  DtError,
  encodeMessage,
  ErrorCode,
  fromHex,
  GENESIS_PREV,
  keyPairSigner,
  LIMITS,
  MESSAGES,
  openSigned,
  outputId,
  payloadHash,
  sha256,
  signMessage,
  toHex,
  utf8,
  verifySigned,
  type Handover,
  type MessageName,
  type SignedMessageName,
  type StructSchema,
  type Token,
  type Transfer,
} from '../src/index.ts';
import { nativeVerifier } from '../src/native.ts';
import { arbitraryStruct, SEED } from './helpers/arbitrary.ts';
import { keysFor, pki, T0 } from './helpers/pki.ts';

const keys = keysFor('codec-signer');
const signer = keyPairSigner(keys);
const otherSigner = keyPairSigner(keysFor('codec-other'));

const SIGNED = (Object.keys(MESSAGES) as MessageName[]).filter((n) => MESSAGES[n].contentType !== null) as SignedMessageName[];

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return e instanceof DtError ? e.code : `not a DtError: ${String(e)}`;
  }
  return 'no error';
}

test('every message but Handover is signed', (t) => {
  t.deepEqual(SIGNED.sort(), [
    'Adjustment',
    'Batch',
    'Certificate',
    'Outcome',
    'PaymentRequest',
    'RevocationList',
    'SyncReceipt',
    'SyncRequest',
    'Token',
    'Transfer',
  ]);
  t.is(MESSAGES.Handover.contentType, null);
});

for (const name of SIGNED) {
  test(`property: ${name} signs, opens and verifies back to the same value; its name is the payload hash`, (t) => {
    let signed = 0;
    t.notThrows(() =>
      fc.assert(
        fc.property(arbitraryStruct(MESSAGES[name].schema as StructSchema, { maxItems: 2, maxBytes: 24 }), (value) => {
          let bytes: Uint8Array;
          try {
            bytes = signMessage(name, value as never, signer);
          } catch (e) {
            // Valid fields but too large for the message (SPEC.md §2.4): the only acceptable refusal.
            if (e instanceof DtError && e.code === ErrorCode.TOO_LARGE) return;
            throw e;
          }
          signed++;
          const opened = verifySigned(name, bytes, keys.publicKey);
          const payload = encodeMessage(name, value as never);
          if (toHex(opened.cose.payload) !== toHex(payload)) throw new Error('payload bytes differ');
          if (toHex(encodeMessage(name, opened.message)) !== toHex(payload)) throw new Error('decoded value differs');
          if (toHex(payloadHash(opened.cose)) !== toHex(sha256(payload))) throw new Error('payload hash is not SHA-256 of the payload');
          // Re-signed by another key, the object keeps its name.
          const again = openSigned(name, signMessage(name, value as never, otherSigner));
          if (toHex(payloadHash(again.cose)) !== toHex(payloadHash(opened.cose))) throw new Error('name changed with the signer');
          // Verified with the native fast path too.
          verifySigned(name, bytes, keys.publicKey, nativeVerifier);
        }),
        { seed: SEED, numRuns: 12 },
      ),
    );
    t.true(signed >= 8, `only ${signed} values signed`);
  });
}

test('signMessage refuses a signed object over the message limit even when its payload fits (TOO_LARGE)', (t) => {
  // Grow a mark until the Token payload fits in 512 bytes but payload + COSE overhead does not.
  const base: Token = { serial: new Uint8Array(16), value: 1, currency: 398, owner: new Uint8Array(16), issued: T0 };
  let found = false;
  for (let n = 1; n <= 16 && !found; n++) {
    for (let len = 1; len <= 64 && !found; len++) {
      const token: Token = { ...base, mark: { merchants: Array.from({ length: n }, (_, i) => String(i % 10).repeat(len)), hops: 1 } };
      const payload = encodeMessage('Token', token);
      if (payload.length <= LIMITS.maxTokenSize && payload.length > LIMITS.maxTokenSize - 100) {
        t.is(
          codeOf(() => signMessage('Token', token, signer)),
          ErrorCode.TOO_LARGE,
        );
        found = true;
      }
    }
  }
  t.true(found);
});

test('decodeMessage checks the size limit before anything else', (t) => {
  const bytes = new Uint8Array(LIMITS.maxTransferSize + 1);
  t.is(
    codeOf(() => decodeMessage('Transfer', bytes)),
    ErrorCode.TOO_LARGE,
  );
});

test('a payload of one message never decodes as another (no shared shapes)', (t) => {
  const p = pki();
  const transfer = sampleTransfer(p.card.signer.kid, p.terminal.signer.kid);
  const payload = encodeMessage('Transfer', transfer);
  for (const other of ['SyncRequest', 'Token', 'Outcome', 'PaymentRequest'] as const) {
    t.not(
      codeOf(() => decodeMessage(other, payload)),
      'no error',
      other,
    );
  }
});

// ---------------------------------------------------------------- ids and hashes (SPEC.md §6)

test('outputId = SHA-256("DT-OUTPUT-V1" || transfer hash || index) (SPEC.md §6.3 vectors)', (t) => {
  const h = sha256(utf8('abc'));
  t.is(toHex(h), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  t.is(toHex(outputId(h, 0)), '5c12c1e2b5c65b9722d2bcb5cc2b8359f0fb341743ac15cc5e3bcc1b7d48b52b');
  t.is(toHex(outputId(h, 1)), '24a27902f9ae06e35c744b14e23d8e7abb302bfd1f42a6cef672d5fd85fe1feb');
  t.is(toHex(outputId(h, 1)), toHex(sha256(concatBytes(utf8('DT-OUTPUT-V1'), h, Uint8Array.of(1)))));
  t.is(outputId(h, 0).length, 32);
});

test('outputId refuses an index beyond the outputs of a transfer and a hash that is not 32 bytes', (t) => {
  const h = new Uint8Array(32);
  t.is(
    codeOf(() => outputId(h, LIMITS.maxOutputs)),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  t.is(
    codeOf(() => outputId(h, -1)),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  t.is(
    codeOf(() => outputId(h, 0.5)),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  t.is(
    codeOf(() => outputId(new Uint8Array(31), 0)),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
});

test('GENESIS_PREV is 32 zero bytes', (t) => {
  t.is(toHex(GENESIS_PREV), '00'.repeat(32));
});

test('the payload hash names the transfer: it is what prev links and output ids are built on', (t) => {
  const p = pki();
  const t1 = sampleTransfer(p.card.signer.kid, p.terminal.signer.kid);
  const s1 = signMessage('Transfer', t1, p.card.signer);
  const h1 = payloadHash(openSigned('Transfer', s1).cose);
  t.is(toHex(h1), toHex(sha256(encodeMessage('Transfer', t1))));
  // A second transfer chained on the first: prev = h1, spending the change output of t1.
  const change = outputId(h1, 1);
  const t2: Transfer = {
    ...t1,
    counter: 2,
    prev: h1,
    inputs: [change],
    outputs: [{ value: 500, owner: p.terminal.signer.kid }],
    amount: 500,
  };
  const opened = verifySigned('Transfer', signMessage('Transfer', t2, p.card.signer), p.card.keys.publicKey);
  t.deepEqual(opened.message.prev, h1);
  t.deepEqual(opened.message.inputs[0], change);
  t.not(toHex(payloadHash(opened.cose)), toHex(h1));
});

// ---------------------------------------------------------------- Handover container

function sampleTransfer(card: Uint8Array, payee: Uint8Array): Transfer {
  return {
    card,
    counter: 1,
    prev: GENESIS_PREV,
    inputs: [fromHex('00112233445566778899aabbccddeeff')],
    outputs: [
      { value: 1_000, owner: payee },
      { value: 500, owner: card },
    ],
    amount: 1_000,
    currency: 398,
    payee,
    merchant: 'M-0001',
    mcc: 5411,
    nonce: fromHex('0f0e0d0c0b0a09080706050403020100'),
    time: T0,
    cvm: 0,
  };
}

test('a Handover carries signed objects as byte strings; each verifies after the container is decoded', (t) => {
  const p = pki();
  const token = signMessage(
    'Token',
    { serial: fromHex('00112233445566778899aabbccddeeff'), value: 1_500, currency: 398, owner: p.card.signer.kid, issued: T0 },
    p.ledger.signer,
  );
  const transfer = signMessage('Transfer', sampleTransfer(p.card.signer.kid, p.terminal.signer.kid), p.card.signer);
  const handover: Handover = { transfer, chain: p.cardChain, tokens: [token], history: [] };
  const bytes = encodeMessage('Handover', handover);
  const back = decodeMessage('Handover', bytes);
  t.deepEqual(back, handover);
  t.is(verifySigned('Transfer', back.transfer, p.card.keys.publicKey).message.amount, 1_000);
  t.is(verifySigned('Token', back.tokens![0]!, p.ledger.keys.publicKey).message.value, 1_500);
  // The container itself is not a COSE object.
  t.is(bytes[0], 0xa5);
  t.is(
    codeOf(() => openSigned('Transfer', bytes)),
    ErrorCode.COSE_MALFORMED,
  );
});

test('a Handover over its size limit is refused both ways (TOO_LARGE)', (t) => {
  const big = new Uint8Array(LIMITS.maxTransferSize).fill(1);
  // Every field within its own bound (64 transfers of 2048 bytes, a 64 KiB receipt), the whole over 192 KiB.
  const handover: Handover = {
    transfer: big,
    chain: [new Uint8Array(LIMITS.maxCertificateSize)],
    tokens: [new Uint8Array(16)],
    history: Array.from({ length: LIMITS.maxHistory }, () => big),
    receipt: new Uint8Array(65_536),
  };
  t.is(
    codeOf(() => encodeMessage('Handover', handover)),
    ErrorCode.TOO_LARGE,
  );
  const raw = encodeDeterministic(encodeStruct(MESSAGES.Handover.schema, handover));
  t.true(raw.length > LIMITS.maxHandoverSize);
  t.is(
    codeOf(() => decodeMessage('Handover', raw)),
    ErrorCode.TOO_LARGE,
  );
});
