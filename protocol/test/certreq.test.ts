/**
 * The terminal certificate request (SPEC §5.5): what `certificateRequest`
 * builds, `openCertificateRequest` opens and verifies (key, kid, merchant);
 * a changed byte, another content type, another signer or an oversize
 * request is refused with its code.
 */
import test from 'ava';
import {
  certificateRequest,
  coseSign1,
  decodeCoseSign1,
  encodeDeterministic,
  encodeStruct,
  generateKeyPair,
  keyId,
  keyPairSigner,
  openCertificateRequest,
  publicKeyCoordinates,
  CertificateRequestSchema,
  CERT_REQUEST_CONTENT_TYPE,
  isDtError,
  toHex,
} from '../src/index.ts';

const rnd = (n: number): Uint8Array => crypto.getRandomValues(new Uint8Array(n));
const merchant = { id: 'shop-1', mcc: 5411, name: 'Corner Shop' };

const code = (f: () => unknown): string | undefined => {
  try {
    f();
    return undefined;
  } catch (e) {
    return isDtError(e) ? e.code : 'NOT_A_DT_ERROR';
  }
};

test('a request opens to its key, kid, merchant and time', (t) => {
  const kp = generateKeyPair(rnd);
  const r = openCertificateRequest(certificateRequest(kp, merchant, 1_800_000_000));
  t.is(toHex(r.publicKey), toHex(kp.publicKey));
  t.is(toHex(r.kid), toHex(keyId(kp.publicKey)));
  t.deepEqual(r.merchant, merchant);
  t.is(r.time, 1_800_000_000);
});

test('every changed byte is refused; so are another content type, another signer, a bad key, an empty name and an oversize request', (t) => {
  const kp = generateKeyPair(rnd);
  const req = certificateRequest(kp, merchant, 1_800_000_000);
  for (let i = 0; i < req.length; i++) {
    const bad = req.slice();
    bad[i]! ^= 0x01;
    t.not(
      code(() => openCertificateRequest(bad)),
      undefined,
      `byte ${i} changed`,
    );
  }
  const { x, y } = publicKeyCoordinates(kp.publicKey);
  const payload = (m: Record<string, unknown>) =>
    encodeDeterministic(
      encodeStruct(CertificateRequestSchema, { x, y, merchant: 'shop-1', mcc: 5411, name: 'Shop', time: 1, ...m } as never),
    );
  t.is(
    code(() => openCertificateRequest(coseSign1(payload({}), 'application/dt.cert+cwt', keyPairSigner(kp)))),
    'COSE_WRONG_CONTENT_TYPE',
  );
  const other = generateKeyPair(rnd);
  t.is(
    code(() => openCertificateRequest(coseSign1(payload({}), CERT_REQUEST_CONTENT_TYPE, keyPairSigner(other)))),
    'KEY_MISMATCH',
  );
  const notAPoint = new Uint8Array(32).fill(7);
  t.is(
    code(() => openCertificateRequest(coseSign1(payload({ y: notAPoint }), CERT_REQUEST_CONTENT_TYPE, keyPairSigner(kp)))),
    'BAD_KEY',
  );
  t.is(
    code(() => openCertificateRequest(coseSign1(payload({ name: '' }), CERT_REQUEST_CONTENT_TYPE, keyPairSigner(kp)))),
    'SCHEMA_OUT_OF_RANGE',
  );
  t.is(
    code(() => openCertificateRequest(new Uint8Array(2048))),
    'COSE_MALFORMED',
  );
  // What dt-pos writes carries the request content type.
  const cose = decodeCoseSign1(req, 1024);
  t.is(cose.contentType, CERT_REQUEST_CONTENT_TYPE);
});
