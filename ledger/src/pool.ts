/**
 * Parallel handover validation on worker threads with the native (OpenSSL)
 * verifier: signature checks are the ledger's main CPU cost and are pure,
 * so they spread over every core while the main thread does storage work.
 * Handovers of one card go to the same worker, whose memoizing verifier
 * then skips the certificates, tokens and history transfers it already
 * verified for that card's earlier handovers.
 *
 * @module
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { MESSAGES, utf8, type HandoverResult } from '@dt/protocol';
import {
  detached,
  type HandoverValidator,
  type SettleAnswer,
  type SettleJob,
  type SettlementValidator,
  type ValidationJob,
} from './validation.ts';

/** Options of {@link createValidatorPool}. */
export interface ValidatorPoolOptions {
  readonly rootCert: Uint8Array;
  readonly ledgerCert: Uint8Array;
  /** Time at which the trust store is checked (seconds). */
  readonly at: number;
  /** Worker threads (default: available parallelism). */
  readonly workers?: number;
  /** Old-generation heap limit of each worker in MiB (default 256): the caches are bounded well below it, and the limit makes V8 collect instead of growing. */
  readonly maxWorkerHeapMb?: number;
  /**
   * Niceness the worker threads add to their own (Linux, where a thread's priority is its own;
   * default 5; 0: none). The main thread records and judges every batch in turn, so it is the
   * one settlement waits for: the validators run on what CPU it leaves, never the other way.
   */
  readonly workerNice?: number;
  /** Called when a worker thread dies (it is replaced; the calls it had in hand fail). */
  readonly onWorkerExit?: (info: { worker: number; error: Error }) => void;
  /** Tests only: lets {@link ValidatorPool.crashForTest} make a worker exit mid-call. */
  readonly testHooks?: boolean;
}

/**
 * A running pool: `Ledger.open({ validator: pool })` settles through it (validation and
 * evidence on the workers, compact answers); `validate` is the plain validator.
 */
export interface ValidatorPool extends SettlementValidator {
  readonly size: number;
  readonly validate: HandoverValidator;
  /** Signature verifications actually performed and answered from the memo, over all workers. */
  stats(): Promise<{ verifies: number; memoHits: number }>;
  /** Workers that died and were replaced since the pool started. */
  readonly restarts: number;
  /** Tests only (`testHooks`): worker `i` exits (code 70) when it gets its next validation call, with that call in hand. */
  crashForTest(i: number): void;
  close(): Promise<void>;
}

interface Pending {
  resolve: (r: unknown) => void;
  reject: (e: unknown) => void;
}

const TRANSFER_CT = Buffer.from(utf8(MESSAGES.Transfer.contentType));
/** `alg: ES256, content type: 0x19 + the Transfer's content format (SPEC §4.1)`, as a signer encodes the protected header. */
const TRANSFER_CF = Buffer.from([0x01, 0x26, 0x03, 0x19, MESSAGES.Transfer.contentFormat >> 8, MESSAGES.Transfer.contentFormat & 0xff]);

/**
 * Worker affinity key of a handover: the card kid, read straight from the
 * paying transfer's protected header (the content format or, signed before
 * it, the text content type; then `04 50` + 16-byte kid) without decoding
 * anything. Only performance depends on it (a card's handovers meet the same
 * memo); a handover it cannot read goes to worker 0 and is validated in full
 * like any other.
 */
export function affinityOf(handover: Uint8Array): number {
  const b = Buffer.from(handover.buffer, handover.byteOffset, handover.byteLength);
  // The paying transfer is the Handover's key 1, before anything else that carries a Transfer.
  const cf = b.indexOf(TRANSFER_CF);
  const ct = b.indexOf(TRANSFER_CT);
  const useCf = cf >= 0 && (ct < 0 || cf < ct);
  const at = useCf ? cf : ct;
  const k = at + (useCf ? TRANSFER_CF.length : TRANSFER_CT.length);
  if (at < 0 || k + 18 > b.length || b[k] !== 0x04 || b[k + 1] !== 0x50) return 0;
  return (b[k + 2]! << 8) | b[k + 3]!;
}

// Run from the TypeScript sources (the repo, under tsx), a JS bootstrap registers the TypeScript
// loader inside the worker (see validate-worker.mjs), and the worker needs the dt-source condition:
// worker threads inherit neither the parent's loader hooks nor a condition they added. Built, the
// worker is plain JavaScript and inherits the parent's options.
const FROM_SOURCE = import.meta.url.endsWith('.ts');
const WORKER = new URL(FROM_SOURCE ? './validate-worker.mjs' : './validate-worker.js', import.meta.url);
const WORKER_ARGV = FROM_SOURCE ? ['--conditions=dt-source'] : undefined;

/** Starts worker threads that validate handovers with the native verifier. */
export async function createValidatorPool(opts: ValidatorPoolOptions): Promise<ValidatorPool> {
  const size = Math.max(1, opts.workers ?? availableParallelism());
  const workers: Worker[] = [];
  /** The calls each worker has in hand (by call id): a worker that dies fails exactly these. */
  const pending: Map<number, Pending>[] = [];
  let nextId = 0;
  let closed = false;
  let restarts = 0;
  const start = (i: number): Promise<void> => {
    const w = new Worker(WORKER, {
      execArgv: WORKER_ARGV,
      workerData: {
        rootCert: opts.rootCert,
        ledgerCert: opts.ledgerCert,
        at: opts.at,
        nice: opts.workerNice ?? 5,
        testHooks: opts.testHooks === true,
      },
      resourceLimits: { maxOldGenerationSizeMb: opts.maxWorkerHeapMb ?? 256 },
    });
    workers[i] = w;
    const mine = new Map<number, Pending>();
    pending[i] = mine;
    let dead = false;
    const died = (error: Error) => {
      if (dead) return;
      dead = true;
      for (const p of mine.values()) p.reject(error);
      mine.clear();
      if (closed) return;
      opts.onWorkerExit?.({ worker: i, error });
      // Replaced at once: calls posted from now on go to the new thread (they wait in its queue until it runs).
      restarts++;
      void start(i).catch(() => undefined);
    };
    w.on('message', (m: { id?: number; results?: unknown; error?: string }) => {
      if (m.id === undefined) return;
      const p = mine.get(m.id);
      if (!p) return;
      mine.delete(m.id);
      if (m.error) p.reject(new Error(`validator worker: ${m.error}`));
      else p.resolve(m.results);
    });
    w.on('error', (e) => died(new Error(`validator worker ${i} failed: ${e.message}`, { cause: e })));
    w.on('exit', (code) => died(new Error(`validator worker ${i} exited (code ${code})`)));
    return new Promise<void>((resolve, reject) => {
      w.once('message', () => resolve());
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`validator worker ${i} exited at start (code ${code})`)));
    });
  };
  try {
    await Promise.all(Array.from({ length: size }, (_, i) => start(i)));
  } catch (e) {
    closed = true;
    await Promise.all(workers.map((w) => w.terminate()));
    throw e;
  }
  const call = (wi: number, msg: Record<string, unknown>) =>
    new Promise<unknown>((resolve, reject) => {
      if (closed) return reject(new Error('validator pool closed'));
      const id = nextId++;
      pending[wi]!.set(id, { resolve, reject });
      workers[wi]!.postMessage({ id, ...msg });
    });
  /** Sends the jobs to the workers by affinity (one message per worker) and puts the answers back in order. */
  const spread = async <J extends ValidationJob, R>(jobs: readonly J[], key: 'jobs' | 'settle'): Promise<R[]> => {
    const parts: number[][] = workers.map(() => []);
    jobs.forEach((j, i) => parts[affinityOf(j.handover) % size]!.push(i));
    const answers = await Promise.all(
      parts.map((idx, wi) => (idx.length ? call(wi, { [key]: detached(idx.map((i) => jobs[i])) }) : Promise.resolve([])) as Promise<R[]>),
    );
    const out: R[] = new Array(jobs.length);
    parts.forEach((idx, wi) =>
      idx.forEach((i, k) => {
        out[i] = answers[wi]![k]!;
      }),
    );
    return out;
  };
  return {
    size,
    get restarts() {
      return restarts;
    },
    validate: (jobs: readonly ValidationJob[]) => spread<ValidationJob, HandoverResult>(jobs, 'jobs'),
    settle: (jobs: readonly SettleJob[]) => spread<SettleJob, SettleAnswer>(jobs, 'settle'),
    async stats() {
      const all = (await Promise.all(workers.map((_, wi) => call(wi, { stats: true })))) as { verifies: number; memoHits: number }[];
      return all.reduce((a, s) => ({ verifies: a.verifies + s.verifies, memoHits: a.memoHits + s.memoHits }), { verifies: 0, memoHits: 0 });
    },
    crashForTest(i: number) {
      workers[i]!.postMessage({ id: -1, crash: true });
    },
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all(workers.map((w) => w.terminate()));
      for (const m of pending) {
        for (const p of m.values()) p.reject(new Error('validator pool closed'));
        m.clear();
      }
    },
  };
}
