/**
 * CWT certificates and chains (SPEC.md §5): valid chains of every shape the
 * protocol uses, validity windows with their inclusive edges, roles,
 * permissions, broken and foreign chains, untrusted roots, claim/role
 * consistency, and certificates forged around `issueCertificate`.
 */
import test from 'ava';

import {
  BankPermission,
  DtError,
  ErrorCode,
  issueCertificate,
  keyId,
  keyPairSigner,
  LIMITS,
  openSigned,
  publicKeyCoordinates,
  Role,
  sign,
  signMessage,
  subjectKey,
  toHex,
  verifyChain,
  verifyRoot,
  type Certificate,
  type Signer,
} from '../src/index.ts';
import { nativeVerifier } from '../src/native.ts';
import { DAY, keysFor, party, pki, T0, template } from './helpers/pki.ts';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return e instanceof DtError ? e.code : `not a DtError: ${String(e)}`;
  }
  return 'no error';
}

/** Signs raw claims, bypassing the checks of issueCertificate (for forged or inconsistent certificates). */
function rawCert(role: number, publicKey: Uint8Array, issuer: Signer, extra: Partial<Certificate> = {}): Uint8Array {
  const { publicKey: _pk, ...claims } = template(role, publicKey);
  const { x, y } = publicKeyCoordinates(publicKey);
  return signMessage('Certificate', { ...claims, cnf: { coseKey: { kid: keyId(publicKey), x, y } }, ...extra } as Certificate, issuer);
}

// ---------------------------------------------------------------- valid chains

test('issuer -> issuing bank -> card verifies; leaf first; returns keys and claims', (t) => {
  const p = pki();
  const out = verifyChain(p.cardChain, { root: p.root, at: T0, leafRole: Role.CARD });
  t.is(out.length, 2);
  t.is(out[0]!.claims.role, Role.CARD);
  t.deepEqual(out[0]!.publicKey, p.card.keys.publicKey);
  t.deepEqual(out[0]!.kid, keyId(p.card.keys.publicKey));
  t.deepEqual(out[0]!.claims.limits, template(Role.CARD, p.card.keys.publicKey).limits);
  t.is(out[1]!.claims.role, Role.BANK);
  t.is(out[1]!.claims.perms, BankPermission.ISSUING);
});

test('issuer -> acquiring bank -> terminal verifies, with the merchant identity', (t) => {
  const p = pki();
  const out = verifyChain(p.terminalChain, { root: p.root, at: T0, leafRole: Role.TERMINAL });
  t.is(out[0]!.claims.merchant?.mcc, 5411);
  t.deepEqual(out[0]!.kid, p.terminal.signer.kid);
});

test('the ledger certificate verifies as the chain [ledger]; a bank as [bank]', (t) => {
  const p = pki();
  t.deepEqual(verifyChain([p.ledger.cert], { root: p.root, at: T0, leafRole: Role.LEDGER })[0]!.publicKey, p.ledger.keys.publicKey);
  t.is(verifyChain([p.issuingBank.cert], { root: p.root, at: T0, leafRole: Role.BANK })[0]!.claims.role, Role.BANK);
});

test('a bank with both permissions may certify cards and terminals', (t) => {
  const p = pki();
  const both = party('both-bank', Role.BANK, p.issuer.signer, { perms: BankPermission.ISSUING | BankPermission.ACQUIRING });
  const card = party('card-of-both', Role.CARD, both.signer);
  const term = party('terminal-of-both', Role.TERMINAL, both.signer);
  t.notThrows(() => verifyChain([card.cert, both.cert], { root: p.root, at: T0, leafRole: Role.CARD }));
  t.notThrows(() => verifyChain([term.cert, both.cert], { root: p.root, at: T0, leafRole: Role.TERMINAL }));
});

test('the native verifier gives the same verdicts as the reference', (t) => {
  const p = pki();
  t.notThrows(() => verifyChain(p.cardChain, { root: p.root, at: T0, leafRole: Role.CARD, verifier: nativeVerifier }));
  const forged = forgedUnderKid(p);
  t.is(
    codeOf(() => verifyChain([forged, p.issuingBank.cert], { root: p.root, at: T0, leafRole: Role.CARD, verifier: nativeVerifier })),
    ErrorCode.BAD_SIGNATURE,
  );
});

test('memo: a known certificate skips only its signature verification; the rest of the chain checks still run', (t) => {
  const p = pki();
  let verifies = 0;
  const counting = { verify: (sig: Uint8Array, msg: Uint8Array, pk: Uint8Array) => (verifies++, nativeVerifier.verify(sig, msg, pk)) };
  const known = new Set<string>();
  const key = (kid: Uint8Array, bytes: Uint8Array) => toHex(kid) + toHex(bytes);
  const memo = {
    known: (kid: Uint8Array, b: Uint8Array) => known.has(key(kid, b)),
    verified: (kid: Uint8Array, b: Uint8Array) => void known.add(key(kid, b)),
  };
  const opts = { root: p.root, at: T0, leafRole: Role.TERMINAL, verifier: counting, memo };
  verifyChain(p.terminalChain, opts);
  t.is(verifies, 2, 'both certificates verified the first time');
  t.is(known.size, 2);
  verifyChain(p.terminalChain, opts);
  t.is(verifies, 2, 'none the second time');
  // Known signatures do not excuse anything else: time and leaf role are checked again.
  t.is(
    codeOf(() => verifyChain(p.terminalChain, { ...opts, at: T0 + 100 * 365 * DAY })),
    ErrorCode.CERT_EXPIRED,
  );
  t.is(
    codeOf(() => verifyChain(p.terminalChain, { ...opts, leafRole: Role.CARD })),
    ErrorCode.CERT_WRONG_ROLE,
  );
  // A memo that claims to know a forged certificate is believed only for that exact pair: the forger's own
  // chain under the right kid still fails when the memo does not know it.
  t.is(
    codeOf(() => verifyChain([forgedUnderKid(p), p.issuingBank.cert], { ...opts, leafRole: Role.CARD })),
    ErrorCode.BAD_SIGNATURE,
  );
});

// ---------------------------------------------------------------- validity windows

test('validity is inclusive at nbf and exp; one second outside is NOT_YET_VALID / EXPIRED', (t) => {
  const p = pki();
  const nbf = T0 - DAY;
  const exp = T0 + 365 * DAY;
  const at = (time: number) => codeOf(() => verifyChain(p.cardChain, { root: p.root, at: time, leafRole: Role.CARD }));
  t.is(at(nbf), 'no error');
  t.is(at(exp), 'no error');
  t.is(at(nbf - 1), ErrorCode.CERT_NOT_YET_VALID);
  t.is(at(exp + 1), ErrorCode.CERT_EXPIRED);
});

test('an expired card under a valid bank is CERT_EXPIRED, with the index of the certificate', (t) => {
  const p = pki();
  const old = party('old-card', Role.CARD, p.issuingBank.signer, { nbf: T0 - 30 * DAY, exp: T0 - DAY });
  const err = t.throws(() => verifyChain([old.cert, p.issuingBank.cert], { root: p.root, at: T0, leafRole: Role.CARD })) as DtError;
  t.is(err.code, ErrorCode.CERT_EXPIRED);
  t.is(err.details.index, 0);
  // Verified at a time inside every window (the ledger judging an old offline payment), it is valid.
  t.notThrows(() => verifyChain([old.cert, p.issuingBank.cert], { root: p.root, at: T0 - DAY, leafRole: Role.CARD }));
});

test('a not-yet-valid bank is CERT_NOT_YET_VALID at index 1', (t) => {
  const p = pki();
  const future = party('future-bank', Role.BANK, p.issuer.signer, { perms: BankPermission.ISSUING, nbf: T0 + DAY });
  const card = party('card-of-future', Role.CARD, future.signer);
  const err = t.throws(() => verifyChain([card.cert, future.cert], { root: p.root, at: T0, leafRole: Role.CARD })) as DtError;
  t.is(err.code, ErrorCode.CERT_NOT_YET_VALID);
  t.is(err.details.index, 1);
});

// ---------------------------------------------------------------- roles and permissions

test('a chain verified for the wrong leaf role is CERT_WRONG_ROLE', (t) => {
  const p = pki();
  t.is(
    codeOf(() => verifyChain(p.cardChain, { root: p.root, at: T0, leafRole: Role.TERMINAL })),
    ErrorCode.CERT_WRONG_ROLE,
  );
  t.is(
    codeOf(() => verifyChain(p.terminalChain, { root: p.root, at: T0, leafRole: Role.CARD })),
    ErrorCode.CERT_WRONG_ROLE,
  );
  t.is(
    codeOf(() => verifyChain([p.issuingBank.cert], { root: p.root, at: T0, leafRole: Role.LEDGER })),
    ErrorCode.CERT_WRONG_ROLE,
  );
});

test('a card certified by a bank without ISSUING is CERT_NOT_PERMITTED', (t) => {
  const p = pki();
  const card = party('card-of-acquirer', Role.CARD, p.acquiringBank.signer);
  t.is(
    codeOf(() => verifyChain([card.cert, p.acquiringBank.cert], { root: p.root, at: T0, leafRole: Role.CARD })),
    ErrorCode.CERT_NOT_PERMITTED,
  );
});

test('a terminal certified by a bank without ACQUIRING is CERT_NOT_PERMITTED', (t) => {
  const p = pki();
  const term = party('terminal-of-issuer-bank', Role.TERMINAL, p.issuingBank.signer);
  t.is(
    codeOf(() => verifyChain([term.cert, p.issuingBank.cert], { root: p.root, at: T0, leafRole: Role.TERMINAL })),
    ErrorCode.CERT_NOT_PERMITTED,
  );
});

test('only the relations of SPEC.md §5.2 are valid: wrong issuers are CERT_CHAIN_BROKEN', (t) => {
  const p = pki();
  const v = (chain: Uint8Array[], leafRole: Role) => codeOf(() => verifyChain(chain, { root: p.root, at: T0, leafRole }));
  // The issuer cannot certify a card or a terminal directly.
  t.is(v([party('direct-card', Role.CARD, p.issuer.signer).cert], Role.CARD), ErrorCode.CERT_CHAIN_BROKEN);
  t.is(v([party('direct-terminal', Role.TERMINAL, p.issuer.signer).cert], Role.TERMINAL), ErrorCode.CERT_CHAIN_BROKEN);
  // A bank cannot certify a bank, nor the ledger.
  const subBank = party('sub-bank', Role.BANK, p.issuingBank.signer, { perms: BankPermission.ISSUING });
  t.is(v([subBank.cert, p.issuingBank.cert], Role.BANK), ErrorCode.CERT_CHAIN_BROKEN);
  const bankLedger = party('bank-ledger', Role.LEDGER, p.issuingBank.signer);
  t.is(v([bankLedger.cert, p.issuingBank.cert], Role.LEDGER), ErrorCode.CERT_CHAIN_BROKEN);
  // A card cannot certify anything.
  const cardCard = party('card-card', Role.CARD, p.card.signer);
  t.is(v([cardCard.cert, p.card.cert, p.issuingBank.cert], Role.CARD), ErrorCode.CERT_CHAIN_BROKEN);
  // A bank given without the root's signature above it: [card] alone.
  t.is(v([p.card.cert], Role.CARD), ErrorCode.CERT_CHAIN_BROKEN);
});

test('an ISSUER certificate inside a chain is CERT_WRONG_ROLE', (t) => {
  const p = pki();
  t.is(
    codeOf(() => verifyChain([p.card.cert, p.issuingBank.cert, p.issuer.cert], { root: p.root, at: T0, leafRole: Role.CARD })),
    ErrorCode.CERT_WRONG_ROLE,
  );
});

// ---------------------------------------------------------------- broken and foreign chains

test('a card certificate presented with another bank than its issuer is CERT_CHAIN_BROKEN', (t) => {
  const p = pki();
  const otherIssuingBank = party('other-issuing-bank', Role.BANK, p.issuer.signer, { perms: BankPermission.ISSUING });
  t.is(
    codeOf(() => verifyChain([p.card.cert, otherIssuingBank.cert], { root: p.root, at: T0, leafRole: Role.CARD })),
    ErrorCode.CERT_CHAIN_BROKEN,
  );
});

test('a chain in the wrong order (root side first) is rejected', (t) => {
  const p = pki();
  const code = codeOf(() => verifyChain([p.issuingBank.cert, p.card.cert], { root: p.root, at: T0, leafRole: Role.CARD }));
  t.is(code, ErrorCode.CERT_CHAIN_BROKEN);
});

/** A card certificate carrying the issuing bank's kid but signed by another key. */
function forgedUnderKid(p: ReturnType<typeof pki>): Uint8Array {
  const attacker = keysFor('attacker');
  const impostor: Signer = { kid: p.issuingBank.signer.kid, sign: (m) => sign(m, attacker.secretKey) };
  return rawCert(Role.CARD, keysFor('victim-card').publicKey, impostor);
}

test('a certificate that names the right issuer kid but is signed by another key is BAD_SIGNATURE', (t) => {
  const p = pki();
  t.is(
    codeOf(() => verifyChain([forgedUnderKid(p), p.issuingBank.cert], { root: p.root, at: T0, leafRole: Role.CARD })),
    ErrorCode.BAD_SIGNATURE,
  );
});

test('a tampered certificate (claims changed after signing) is BAD_SIGNATURE', (t) => {
  const p = pki();
  // Raise the card's perPayment limit in the signed bytes: the CBOR head of 5_000_000 (1a 004c4b40) becomes 1a 7f4c4b40.
  const bytes = p.card.cert.slice();
  const hex = toHex(bytes);
  const at = hex.indexOf('1a004c4b40');
  t.true(at > 0);
  bytes[at / 2 + 1] = 0x7f;
  t.true(openSigned('Certificate', bytes).message.limits!.perPayment > 5_000_000);
  t.is(
    codeOf(() => verifyChain([bytes, p.issuingBank.cert], { root: p.root, at: T0, leafRole: Role.CARD })),
    ErrorCode.BAD_SIGNATURE,
  );
});

test('a chain from another PKI (another root) is CERT_CHAIN_BROKEN under ours', (t) => {
  const p = pki();
  const rogueRoot = party('rogue-issuer', Role.ISSUER, 'self');
  const rogueBank = party('rogue-bank', Role.BANK, rogueRoot.signer, { perms: BankPermission.ISSUING });
  const rogueCard = party('rogue-card', Role.CARD, rogueBank.signer);
  t.is(
    codeOf(() => verifyChain([rogueCard.cert, rogueBank.cert], { root: p.root, at: T0, leafRole: Role.CARD })),
    ErrorCode.CERT_CHAIN_BROKEN,
  );
  // It verifies under its own root: the rejection is about trust, not format.
  const rogue = verifyRoot(rogueRoot.cert, T0);
  t.notThrows(() => verifyChain([rogueCard.cert, rogueBank.cert], { root: rogue, at: T0, leafRole: Role.CARD }));
});

test('chain length: empty or over LIMITS.maxChainCerts is CERT_CHAIN_BROKEN; 3 certificates cannot form a valid chain', (t) => {
  const p = pki();
  const v = (chain: Uint8Array[]) => codeOf(() => verifyChain(chain, { root: p.root, at: T0, leafRole: Role.CARD }));
  t.is(LIMITS.maxChainCerts, 3);
  t.is(v([]), ErrorCode.CERT_CHAIN_BROKEN);
  t.is(v([p.card.cert, p.issuingBank.cert, p.issuingBank.cert, p.issuingBank.cert]), ErrorCode.CERT_CHAIN_BROKEN);
  t.is(v([p.card.cert, p.issuingBank.cert, p.issuingBank.cert]), ErrorCode.CERT_CHAIN_BROKEN);
});

test('a chain element that is not a certificate is rejected by its content type', (t) => {
  const p = pki();
  const token = signMessage(
    'Token',
    { serial: new Uint8Array(16), value: 1, currency: 398, owner: new Uint8Array(16), issued: T0 },
    p.issuingBank.signer,
  );
  t.is(
    codeOf(() => verifyChain([token, p.issuingBank.cert], { root: p.root, at: T0, leafRole: Role.CARD })),
    ErrorCode.COSE_WRONG_CONTENT_TYPE,
  );
});

// ---------------------------------------------------------------- the root

test('verifyRoot: pinned kid matches; another pin is CERT_UNTRUSTED_ROOT', (t) => {
  const p = pki();
  t.deepEqual(verifyRoot(p.issuer.cert, T0, p.issuer.signer.kid).kid, p.issuer.signer.kid);
  const rogueRoot = party('rogue-issuer', Role.ISSUER, 'self');
  t.is(
    codeOf(() => verifyRoot(rogueRoot.cert, T0, p.issuer.signer.kid)),
    ErrorCode.CERT_UNTRUSTED_ROOT,
  );
});

test('verifyRoot: a root that is not role ISSUER is CERT_WRONG_ROLE', (t) => {
  const selfBank = party('self-signed-bank', Role.BANK, 'self', { perms: BankPermission.ISSUING });
  t.is(
    codeOf(() => verifyRoot(selfBank.cert, T0)),
    ErrorCode.CERT_WRONG_ROLE,
  );
});

test('verifyRoot: a root not signed by its own key is rejected', (t) => {
  const p = pki();
  // Root claims with the issuer's key, signed by the ledger: kid names the ledger.
  const byOther = rawCert(Role.ISSUER, p.issuer.keys.publicKey, p.ledger.signer);
  t.is(
    codeOf(() => verifyRoot(byOther, T0)),
    ErrorCode.KEY_MISMATCH,
  );
  // Under the issuer's kid but signed with another key.
  const impostor: Signer = { kid: p.issuer.signer.kid, sign: (m) => sign(m, keysFor('attacker').secretKey) };
  t.is(
    codeOf(() => verifyRoot(rawCert(Role.ISSUER, p.issuer.keys.publicKey, impostor), T0)),
    ErrorCode.BAD_SIGNATURE,
  );
});

test('verifyRoot: an expired root is CERT_EXPIRED', (t) => {
  const p = pki();
  t.is(
    codeOf(() => verifyRoot(p.issuer.cert, T0 + 366 * DAY, p.issuer.signer.kid)),
    ErrorCode.CERT_EXPIRED,
  );
});

// ---------------------------------------------------------------- claims

test('issueCertificate refuses claims that do not fit the role (CERT_WRONG_ROLE)', (t) => {
  const p = pki();
  const pk = keysFor('claims').publicKey;
  const bad: Array<[string, ReturnType<typeof template>]> = [
    ['bank without perms', { ...template(Role.BANK, pk), perms: undefined }],
    ['card without limits', { ...template(Role.CARD, pk), limits: undefined }],
    ['terminal without merchant', { ...template(Role.TERMINAL, pk), merchant: undefined }],
    ['card with perms', { ...template(Role.CARD, pk), perms: BankPermission.ISSUING }],
    ['terminal with limits', { ...template(Role.TERMINAL, pk), limits: template(Role.CARD, pk).limits }],
    ['ledger with a merchant', { ...template(Role.LEDGER, pk), merchant: template(Role.TERMINAL, pk).merchant }],
    ['nbf after exp', { ...template(Role.LEDGER, pk), nbf: T0 + 10, exp: T0 }],
  ];
  for (const [name, tpl] of bad)
    t.is(
      codeOf(() => issueCertificate(tpl, p.issuer.signer)),
      ErrorCode.CERT_WRONG_ROLE,
      name,
    );
});

test('verifyChain re-checks claims: a signed certificate with inconsistent claims is CERT_WRONG_ROLE', (t) => {
  const p = pki();
  const pk = keysFor('inconsistent-card').publicKey;
  const noLimits = rawCert(Role.CARD, pk, p.issuingBank.signer, { limits: undefined });
  t.is(
    codeOf(() => verifyChain([noLimits, p.issuingBank.cert], { root: p.root, at: T0, leafRole: Role.CARD })),
    ErrorCode.CERT_WRONG_ROLE,
  );
  const withPerms = rawCert(Role.CARD, pk, p.issuingBank.signer, { perms: 3 });
  t.is(
    codeOf(() => verifyChain([withPerms, p.issuingBank.cert], { root: p.root, at: T0, leafRole: Role.CARD })),
    ErrorCode.CERT_WRONG_ROLE,
  );
});

test('cnf: a kid that does not match the key is KEY_MISMATCH; coordinates off the curve are BAD_KEY', (t) => {
  const p = pki();
  const pk = keysFor('cnf-card').publicKey;
  const { x, y } = publicKeyCoordinates(pk);
  const wrongKid = rawCert(Role.CARD, pk, p.issuingBank.signer, { cnf: { coseKey: { kid: new Uint8Array(16), x, y } } });
  t.is(
    codeOf(() => verifyChain([wrongKid, p.issuingBank.cert], { root: p.root, at: T0, leafRole: Role.CARD })),
    ErrorCode.KEY_MISMATCH,
  );
  const badY = y.slice();
  badY[31] ^= 1;
  const offCurve = rawCert(Role.CARD, pk, p.issuingBank.signer, { cnf: { coseKey: { kid: keyId(pk), x, y: badY } } });
  t.is(
    codeOf(() => verifyChain([offCurve, p.issuingBank.cert], { root: p.root, at: T0, leafRole: Role.CARD })),
    ErrorCode.BAD_KEY,
  );
  t.is(
    codeOf(() => subjectKey(openSigned('Certificate', offCurve).message)),
    ErrorCode.BAD_KEY,
  );
});

test('issued certificates carry the cnf COSE_Key of the subject and fit the size limit', (t) => {
  const p = pki();
  for (const party of [p.issuer, p.ledger, p.issuingBank, p.card, p.terminal]) {
    const { message } = openSigned('Certificate', party.cert);
    t.deepEqual(subjectKey(message).publicKey, party.keys.publicKey);
    t.deepEqual(message.cnf.coseKey.kid, keyPairSigner(party.keys).kid);
    t.true(party.cert.length <= LIMITS.maxCertificateSize);
  }
});
