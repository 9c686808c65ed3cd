// Worker of the headline benchmark's verify ceiling (headline.ts): native
// P-256 verifications (the ledger's own nativeVerifier) in a loop for the
// requested time, started together with the other workers, one per core.
// Worker threads do not inherit the parent's module loader: register tsx first.
import { register } from 'tsx/esm/api';
import { parentPort, workerData } from 'node:worker_threads';
import { randomBytes } from 'node:crypto';

register();
const { nativeVerifier } = await import('@dt/protocol/native');
const { generateKeyPair, sign } = await import('@dt/protocol');

const kp = generateKeyPair((n) => new Uint8Array(randomBytes(n)));
// 256 different messages of a signed object's size, each with its signature.
const items = Array.from({ length: 256 }, () => {
  const m = new Uint8Array(randomBytes(300));
  return { m, s: sign(m, kp.secretKey) };
});
parentPort.postMessage({ ready: true });
parentPort.once('message', () => {
  let n = 0;
  const start = performance.now();
  const end = start + workerData.seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 64; i++) {
      const it = items[n % items.length];
      if (!nativeVerifier.verify(it.s, it.m, kp.publicKey)) throw new Error('verify failed');
      n++;
    }
  }
  parentPort.postMessage({ verifies: n, seconds: (performance.now() - start) / 1000 });
});
