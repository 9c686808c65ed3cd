/**
 * Worker thread of the validator pool (pool.ts): validates handovers with
 * the native verifier behind a memo, answers `{ id, results }`.
 *
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createTrustStore, validateHandover } from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import {
  cachingCardChainVerifier,
  cardChainCache,
  cachingTransferOpener,
  jobBanks,
  knownCertificates,
  knownVerifier,
  memoVerifier,
  type KnownFacts,
  type ValidationJob,
} from './validation.ts';

const data = workerData as { rootCert: Uint8Array; ledgerCert: Uint8Array; at: number };
const verifier = memoVerifier(nativeVerifier);
const openTransfer = cachingTransferOpener();
const trust = createTrustStore({ root: data.rootCert, ledgerCert: data.ledgerCert, at: data.at, verifier: nativeVerifier });
const verifyCardChain = cachingCardChainVerifier(trust.root, verifier);
const chains = cardChainCache(trust.root);

parentPort!.on('message', (m: { id: number; jobs?: ValidationJob[]; stats?: boolean }) => {
  try {
    if (m.stats) {
      parentPort!.postMessage({ id: m.id, results: { verifies: verifier.misses, memoHits: verifier.hits } });
      return;
    }
    // The jobs of one batch share one facts object (structured clone keeps the sharing): build its tools once.
    const tools = new Map<KnownFacts, { v: typeof verifier | ReturnType<typeof knownVerifier>; c: ReturnType<typeof knownCertificates> }>();
    const results = m.jobs!.map((j) => {
      if (!j.known)
        return validateHandover(j.handover, {
          trust,
          verifier,
          openTransfer,
          verifyCardChain,
          payee: j.payee,
          notAfter: j.notAfter,
          bankCertificate: jobBanks(j),
        });
      let t = tools.get(j.known);
      if (!t) tools.set(j.known, (t = { v: knownVerifier(j.known, verifier), c: knownCertificates(j.known) }));
      const k = t;
      return validateHandover(j.handover, {
        trust,
        verifier: k.v,
        openTransfer,
        verifyCardChain: (chain, at) => chains(chain, at, k.v, k.c),
        payee: j.payee,
        notAfter: j.notAfter,
        bankCertificate: jobBanks(j),
      });
    });
    parentPort!.postMessage({ id: m.id, results });
  } catch (e) {
    parentPort!.postMessage({ id: m.id, error: e instanceof Error ? e.message : String(e) });
  }
});
parentPort!.postMessage({ ready: true });
