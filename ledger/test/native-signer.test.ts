/** The ledger's `node:crypto` signer: the synchronous and the thread-pool signature are both valid, low-S ES256. */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { generateKeyPair, isCanonicalSignature, nobleVerifier, utf8 } from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import { nativeSigner } from '../src/native-signer.ts';

test('sign and signAsync make valid low-S signatures that both verifiers accept', async (t) => {
  const keys = generateKeyPair((n) => new Uint8Array(randomBytes(n)));
  const signer = nativeSigner(keys);
  for (let i = 0; i < 64; i++) {
    const m = utf8(`message ${i}`);
    for (const sig of [signer.sign(m), await signer.signAsync!(m)]) {
      t.is(sig.length, 64);
      t.true(isCanonicalSignature(sig), 'low S');
      t.true(nativeVerifier.verify(sig, m, keys.publicKey));
      t.true(nobleVerifier.verify(sig, m, keys.publicKey));
    }
    t.false(nativeVerifier.verify(await signer.signAsync!(m), utf8(`other ${i}`), keys.publicKey));
  }
});
