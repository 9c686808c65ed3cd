/**
 * An integrator's program: plain Node (no tsx, no dt-source condition) on the installed
 * `@dt/protocol` and `@dt/terminal`, so on their built JavaScript. test/pack.test.ts copies
 * it into a temporary folder outside the repo, next to the installed tarballs, runs it and
 * checks the one JSON object it prints.
 *
 * Usage: node consumer.mjs <protocol/vectors> <work dir> <dt-pos data dir made by `dt-pos init`>
 */
import { getRandomValues } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import {
  decodeCoseSign1,
  decodeDeterministic,
  decodeMessage,
  decodeStruct,
  encodeMessage,
  fromHex,
  generateKeyPair,
  isDtError,
  isTransportError,
  keyId,
  keyPairSigner,
  nobleVerifier,
  openSigned,
  publicKeyFromCoordinates,
  sign,
  signMessage,
  toHex,
  verifyCoseSign1,
  verifySigned,
} from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import {
  CERT_REQUEST_CONTENT_TYPE,
  CertificateRequestSchema,
  Journal,
  TerminalError,
  listHidDevices,
  openSerialPort,
  parsePolicy,
} from '@dt/terminal';

const [vectorsDir, workDir, posDir] = process.argv.slice(2);
const utf8 = (s) => new TextEncoder().encode(s);
/** The DtError code a call fails with, or 'ok'. */
const codeOf = (f) => {
  try {
    f();
    return 'ok';
  } catch (e) {
    return isDtError(e) ? e.code : `not a DtError: ${String(e)}`;
  }
};
const out = {
  resolved: {
    protocol: import.meta.resolve('@dt/protocol'),
    native: import.meta.resolve('@dt/protocol/native'),
    terminal: import.meta.resolve('@dt/terminal'),
  },
};

// @dt/protocol: the published Transfer vector verifies (OpenSSL verifier), re-encodes and
// re-signs (RFC 6979) to the published bytes; every invalid vector fails with its code.
const transfers = JSON.parse(readFileSync(join(vectorsDir, 'transfer.json'), 'utf8'));
const v = transfers.valid[0];
const publicKey = fromHex(v.signer.publicKey);
const { message } = verifySigned('Transfer', fromHex(v.hex), publicKey, nativeVerifier);
out.transfer = {
  amount: message.amount,
  merchant: message.merchant,
  counter: message.counter,
  card: toHex(message.card),
  payloadReencoded: toHex(encodeMessage('Transfer', message)) === v.payload,
  resigned: toHex(signMessage('Transfer', message, keyPairSigner({ secretKey: fromHex(v.signer.privateKey), publicKey }))) === v.hex,
};
out.invalidTransfers = Object.fromEntries(
  transfers.invalid.map((iv) => [
    iv.name,
    codeOf(() =>
      iv.call === 'decode'
        ? openSigned('Transfer', fromHex(iv.hex))
        : verifySigned('Transfer', fromHex(iv.hex), fromHex(iv.params.publicKey)),
    ),
  ]),
);
const handover = JSON.parse(readFileSync(join(vectorsDir, 'handover.json'), 'utf8')).valid[0];
const h = decodeMessage('Handover', fromHex(handover.hex));
out.handover = {
  fields: Object.keys(h).sort(),
  reencoded: toHex(encodeMessage('Handover', h)) === handover.hex,
  history: h.history.length,
};

// A fresh key pair signs; both verifiers accept the signature and refuse it on another message.
const keys = generateKeyPair((n) => getRandomValues(new Uint8Array(n)));
const signature = sign(utf8('pay 150.00 KZT'), keys.secretKey);
out.signature = {
  length: signature.length,
  noble: nobleVerifier.verify(signature, utf8('pay 150.00 KZT'), keys.publicKey),
  native: nativeVerifier.verify(signature, utf8('pay 150.00 KZT'), keys.publicKey),
  otherMessage:
    nobleVerifier.verify(signature, utf8('pay 999.00 KZT'), keys.publicKey) ||
    nativeVerifier.verify(signature, utf8('pay 999.00 KZT'), keys.publicKey),
};

// @dt/terminal: policy parsing, the durable journal (better-sqlite3) across a reopen.
out.policy = parsePolicy({ floorLimit: 200_000, narrowedFloorLimit: 100_000 });
try {
  parsePolicy({ tip: 5 });
  out.unknownPolicyKey = 'accepted';
} catch (e) {
  out.unknownPolicyKey = e instanceof TerminalError ? e.code : String(e);
}
const journalPath = join(workDir, 'journal', 'journal.sqlite');
const nonce = getRandomValues(new Uint8Array(16));
let journal = Journal.open(journalPath);
out.journalPragmas = journal.pragmas;
journal.recordAttempt({ nonce, amount: 15_000, time: 1_780_000_000, request: Uint8Array.of(1, 2, 3) });
journal.close();
journal = Journal.open(journalPath);
const torn = journal.markSentAttemptsTorn();
const attempt = journal.getAttempt(nonce);
out.journal = { torn, amount: attempt?.amount, state: attempt?.state };
journal.close();

// The certificate request that the installed `dt-pos init` wrote: a proof of possession of
// the terminal key, which this library verifies; one flipped bit breaks it.
const request = new Uint8Array(readFileSync(join(posDir, 'certificate-request.cbor')));
const cose = decodeCoseSign1(request, 1024);
const fields = decodeStruct(CertificateRequestSchema, decodeDeterministic(cose.payload));
const terminalKey = publicKeyFromCoordinates(fields.x, fields.y);
const tampered = request.slice();
tampered[tampered.length - 1] ^= 1;
out.certificateRequest = {
  contentType: cose.contentType === CERT_REQUEST_CONTENT_TYPE,
  merchant: fields.merchant,
  mcc: fields.mcc,
  name: fields.name,
  kid: toHex(keyId(terminalKey)),
  signedByItsKey: codeOf(() => verifyCoseSign1(cose, terminalKey, nativeVerifier)),
  tampered: codeOf(() => verifyCoseSign1(decodeCoseSign1(tampered, 1024), terminalKey, nativeVerifier)),
};

// The native device modules load: node-hid lists devices, serialport's binding refuses a
// missing port, the PC/SC binding under nfc-pcsc loads.
out.hid = Array.isArray(listHidDevices());
try {
  await openSerialPort(join(workDir, 'no-such-port'));
  out.serial = 'opened';
} catch (e) {
  out.serial = e instanceof TerminalError || isTransportError(e) ? `${e.code}: ${e.message}` : String(e);
}
out.pcsc = typeof createRequire(import.meta.url)('nfc-pcsc').NFC;

process.stdout.write(JSON.stringify(out));
