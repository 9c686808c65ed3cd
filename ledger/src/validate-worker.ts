/**
 * Worker thread of the validator pool (pool.ts): validates handovers with the native verifier
 * behind a memo and, for settlement jobs, finds their evidence too; answers `{ id, results }`
 * (settlement jobs: compact answers, see validation.ts `SettleAnswer`).
 *
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import { getPriority, setPriority } from 'node:os';
import { createTrustStore, validateHandover } from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import {
  cachingCardChainVerifier,
  cardChainCache,
  cachingTransferOpener,
  detached,
  jobBanks,
  knownCertificates,
  knownVerifier,
  memoVerifier,
  settleOne,
  type KnownFacts,
  type SettleJob,
  type SettleTools,
  type ValidationJob,
} from './validation.ts';

const data = workerData as { rootCert: Uint8Array; ledgerCert: Uint8Array; at: number; nice?: number; testHooks?: boolean };
// On Linux a thread's priority is its own: this thread yields to the ledger's main thread (pool.ts `workerNice`).
// Elsewhere setpriority would renice the whole process, so nothing is done there.
if (process.platform === 'linux' && data.nice) {
  try {
    setPriority(Math.min(19, getPriority() + data.nice));
  } catch {
    // not permitted: run at the process's priority
  }
}
const verifier = memoVerifier(nativeVerifier);
const openTransfer = cachingTransferOpener();
const trust = createTrustStore({ root: data.rootCert, ledgerCert: data.ledgerCert, at: data.at, verifier: nativeVerifier });
const verifyCardChain = cachingCardChainVerifier(trust.root, verifier);
const chains = cardChainCache(trust.root);

let crashNext = false;

type Tools = { v: ReturnType<typeof knownVerifier>; c: ReturnType<typeof knownCertificates> };

parentPort!.on('message', (m: { id: number; jobs?: ValidationJob[]; settle?: SettleJob[]; stats?: boolean; crash?: boolean }) => {
  try {
    // Tests only: the worker dies (exit 70) on the next call it gets, with that call in hand.
    if (m.crash && data.testHooks) {
      crashNext = true;
      return;
    }
    if (crashNext && (m.settle || m.jobs)) process.exit(70);
    if (m.stats) {
      parentPort!.postMessage({ id: m.id, results: { verifies: verifier.misses, memoHits: verifier.hits } });
      return;
    }
    // Jobs of one message may share one facts object (structured clone keeps the sharing): build its tools once.
    const tools = new Map<KnownFacts, Tools>();
    const toolsOf = (known: KnownFacts): Tools => {
      let t = tools.get(known);
      if (!t) tools.set(known, (t = { v: knownVerifier(known, verifier), c: knownCertificates(known) }));
      return t;
    };
    if (m.settle) {
      const st: SettleTools = {
        trust,
        openTransfer,
        verifierOf: (known) => (known ? toolsOf(known).v : verifier),
        verifyCardChainOf: (known) => {
          if (!known) return verifyCardChain;
          const k = toolsOf(known);
          return (chain, at) => chains(chain, at, k.v, k.c);
        },
      };
      parentPort!.postMessage({ id: m.id, results: detached(m.settle.map((j) => settleOne(j, st, true))) });
      return;
    }
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
      const k = toolsOf(j.known);
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
    parentPort!.postMessage({ id: m.id, results: detached(results) });
  } catch (e) {
    parentPort!.postMessage({ id: m.id, error: e instanceof Error ? e.message : String(e) });
  }
});
parentPort!.postMessage({ ready: true });
