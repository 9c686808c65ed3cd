/**
 * `npm run bench -w ledger`: settled transfers per second on SQLite and
 * PostgreSQL at 1k, 10k and 100k transfers (each transfer one input, two
 * outputs; cards pay chains of up to 10 transfers, so handovers carry 0-9
 * history transfers), next to the machine's native P-256 verifications per
 * second per core measured in the same run; RSS as batches accumulate.
 * Writes ledger/bench-results.json. `--help` for the options.
 *
 * @module
 */
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { CURRENCY_KZT, generateKeyPair, keyPairSigner, ReferenceWallet, signMessage, sign, type KeyPair } from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import { Ledger } from '../src/ledger.ts';
import { createPki, identityFrom, issueCard, issueTerminal, osRandom, type Identity } from '../src/pki.ts';
import { nativeSigner } from '../src/native-signer.ts';
import { signLoadOrder } from '../src/load.ts';
import { openSqliteStorage } from '../src/storage/sqlite.ts';
import { openPostgresStorage } from '../src/storage/postgres.ts';
import { startPgCluster, type PgCluster } from '../src/pg-cluster.ts';
import { createValidatorPool } from '../src/pool.ts';
import type { LedgerStorage } from '../src/storage/types.ts';
import { benchArgs, closeAll } from './args.ts';

const HELP = `npm run bench -w ledger -- [options]

Settled transfers/s on SQLite and PostgreSQL at growing sizes, with every
handover validated on a pool of validator threads, next to the native P-256
verifies/s per core measured in the same run; RSS and heap as batches
accumulate. Writes JSON. (The headline's workload, as dt-ledger serve runs
it, is ledger/bench/headline.ts.)

Options:
  --sizes N,N,...     transfers per run (default 1000,10000,100000)
  --backends B,B      sqlite and/or postgres (default sqlite,postgres; postgres
                      runs on a throwaway cluster with fsync on)
  --workers N         validator threads (default: the cores, ${availableParallelism()} here)
  --batch N           handovers per terminal batch (default 1000)
  --chain N           transfers each card pays (default 10)
  --out FILE          output (default ledger/bench-results.json)
  --help              this help

Exit codes: 0 written, 1 benchmark failed, 2 bad usage.
`;

const {
  values: args,
  usage,
  int,
} = benchArgs('bench', HELP, {
  sizes: { type: 'string' },
  backends: { type: 'string' },
  workers: { type: 'string' },
  batch: { type: 'string' },
  chain: { type: 'string' },
  out: { type: 'string' },
});
const sizes = (args.sizes ?? '1000,10000,100000').split(',').map((x) => int(x, 'sizes', 0, 1));
const backends = (args.backends ?? 'sqlite,postgres').split(',');
for (const b of backends) if (b !== 'sqlite' && b !== 'postgres') usage(`--backends takes sqlite and postgres, got ${b}`);
const workers = int(args.workers, 'workers', availableParallelism(), 1);
const batchSize = int(args.batch, 'batch', 1000, 1);
const chainLen = int(args.chain, 'chain', 10, 1);
const OUT = resolve(args.out ?? new URL('../bench-results.json', import.meta.url).pathname);
const log = (s: string) => process.stdout.write(`[bench] ${s}\n`);
const mb = () => Math.round(process.memoryUsage().rss / 1048576);
/** Live JS heap of the main thread after a full GC (run with --expose-gc), MiB. */
const heapMb = () => {
  (globalThis as { gc?: () => void }).gc?.();
  return Math.round(process.memoryUsage().heapUsed / 1048576);
};

/** Native P-256 verifications per second on one core (this thread). */
function nativeVerifyRate(seconds = 2): number {
  const kp = generateKeyPair(osRandom);
  const items = Array.from({ length: 256 }, () => {
    const m = new Uint8Array(randomBytes(100));
    return { m, s: sign(m, kp.secretKey) };
  });
  let n = 0;
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 64; i++) {
      const it = items[n % items.length]!;
      if (!nativeVerifier.verify(it.s, it.m, kp.publicKey)) throw new Error('verify failed');
      n++;
    }
  }
  return n / seconds;
}

interface Run {
  backend: string;
  transfers: number;
  cards: number;
  batches: number;
  settleSeconds: number;
  /** Time spent waiting for the validator pool (overlaps storage work of the previous batch). */
  validateSeconds: number;
  transfersPerSecond: number;
  verifiesPerformed: number;
  verifiesPerTransfer: number;
  memoHits: number;
  setupSeconds: number;
  rssMbByBatches: [number, number][];
  /** Main-thread live heap after GC, sampled every ~20 batches (the bench's own wallets included). */
  heapMbByBatches: [number, number][];
}

async function runOne(backend: string, size: number, storage: LedgerStorage): Promise<Run> {
  const t0 = performance.now();
  const now = Math.floor(Date.now() / 1000);
  const pki = createPki({ now });
  // Fast native signers for the setup (the bank issues thousands of certificates, cards sign every transfer).
  const bank: Identity = { ...identityFrom(pki.bank.keys, pki.bank.chain), signer: nativeSigner(pki.bank.keys) };
  const validity = { nbf: now - 86400, exp: now + 86400 * 365 };
  const pool = await createValidatorPool({ rootCert: pki.issuer.cert, ledgerCert: pki.ledger.cert, at: now, workers });
  try {
    let validateMs = 0;
    const timedValidate: typeof pool.validate = async (jobs) => {
      const s = performance.now();
      try {
        return await pool.validate(jobs);
      } finally {
        validateMs += performance.now() - s;
      }
    };
    const ledger = await Ledger.open({
      storage,
      signer: nativeSigner(pki.ledger.keys),
      rootCert: pki.issuer.cert,
      ledgerCert: pki.ledger.cert,
      validator: timedValidate,
    });
    await ledger.registerBank(pki.bank.cert);
    await ledger.allocate(pki.bank.kid, 1e15, new Uint8Array(randomBytes(16)));
    const terms = Array.from({ length: 8 }, (_, i) =>
      issueTerminal(bank, { validity, merchant: { id: `m${i}`, mcc: 5411, name: `m${i}` } }),
    );
    const cardsN = Math.ceil(size / chainLen);
    const limits = { perPayment: 1e9, offlineTotal: 1e12, offlineCount: chainLen, cvmLimit: 1e9 };
    const cards: ReferenceWallet[] = [];
    for (let i = 0; i < cardsN; i++) {
      const keys: KeyPair = generateKeyPair(osRandom);
      const id = issueCard(bank, { validity, limits, keys });
      await ledger.registerCard(id.chain);
      await ledger.load(signLoadOrder({ card: id.kid, amount: 10_000_000, id: new Uint8Array(randomBytes(16)), time: now }, bank.signer));
      const w = new ReferenceWallet({ signer: nativeSigner(keys), chain: id.chain });
      w.completeSync(await ledger.sync(w.beginSync(new Uint8Array(randomBytes(16)))), pki.ledger.keys.publicKey, nativeVerifier);
      cards.push(w);
      if ((i + 1) % 2000 === 0) log(`${backend} ${size}: funded ${i + 1}/${cardsN} cards`);
    }
    const setupSeconds = (performance.now() - t0) / 1000;
    validateMs = 0;
    // Rounds: in round r every card still under its chain length pays its r-th transfer; the round's handovers
    // go out in terminal batches of `batchSize`. Only ledger.settle() is timed.
    let settleMs = 0;
    let done = 0;
    let batches = 0;
    const seq = terms.map(() => 0);
    const rss: [number, number][] = [[0, mb()]];
    const heap: [number, number][] = [[0, heapMb()]];
    for (let r = 0; done < size; r++) {
      const perTerm: Uint8Array[][] = terms.map(() => []);
      for (let c = 0; c < cards.length && done < size; c++) {
        const ti = (c + r) % terms.length;
        const term = terms[ti]!;
        const p = cards[c]!.pay({
          amount: 100 + (c % 50),
          currency: CURRENCY_KZT,
          terminal: term.kid,
          merchant: `m${ti}`,
          mcc: 5411,
          nonce: new Uint8Array(randomBytes(16)),
          time: now,
        });
        perTerm[ti]!.push(p.handover);
        done++;
      }
      const signed: Uint8Array[] = [];
      perTerm.forEach((hs, ti) => {
        const term = terms[ti]!;
        const signer = keyPairSigner(term.keys);
        for (let i = 0; i < hs.length; i += batchSize) {
          signed.push(
            signMessage(
              'Batch',
              {
                terminal: term.kid,
                seq: ++seq[ti]!,
                time: now,
                chain: [...term.chain],
                handovers: hs.slice(i, i + batchSize),
                crlVersion: 0,
              },
              signer,
            ),
          );
        }
      });
      for (let i = 0; i < signed.length; i += 4) {
        const part = signed.slice(i, i + 4);
        const s = performance.now();
        const res = await ledger.settle(part);
        settleMs += performance.now() - s;
        for (const o of res) if (o.length === 0) throw new Error('empty outcome list');
        batches += part.length;
        rss.push([batches, mb()]);
        if (batches % 20 < part.length) heap.push([batches, heapMb()]);
      }
      log(
        `${backend} ${size}: round ${r + 1}, ${done}/${size} transfers settled, ${(done / (settleMs / 1000)).toFixed(0)} tps, rss ${mb()} MB, validation ${(validateMs / 1000).toFixed(1)} s of ${(settleMs / 1000).toFixed(1)} s`,
      );
    }
    const audit = await ledger.audit();
    if (!audit.ok) throw new Error(`supply invariant failed: ${JSON.stringify(audit)}`);
    const counts = await ledger.counts();
    if (counts.settled !== size) throw new Error(`expected ${size} settled, ledger has ${counts.settled}`);
    const st = await pool.stats();
    return {
      backend,
      transfers: size,
      cards: cardsN,
      batches,
      settleSeconds: settleMs / 1000,
      validateSeconds: validateMs / 1000,
      transfersPerSecond: size / (settleMs / 1000),
      verifiesPerformed: st.verifies,
      verifiesPerTransfer: st.verifies / size,
      memoHits: st.memoHits,
      setupSeconds,
      rssMbByBatches: rss,
      heapMbByBatches: heap,
    };
  } finally {
    await pool.close();
  }
}

async function main(): Promise<void> {
  log(
    `cores ${availableParallelism()} (${cpus()[0]?.model ?? '?'}), workers ${workers}, sizes ${sizes.join(',')}, backends ${backends.join(',')}`,
  );
  const perCore = nativeVerifyRate();
  log(`native P-256 verify: ${perCore.toFixed(0)}/s per core`);
  const runs: Run[] = [];
  const closers: (() => unknown)[] = [];
  try {
    let cluster: PgCluster | undefined;
    for (const backend of backends) {
      for (const size of sizes) {
        let storage: LedgerStorage;
        const own: (() => unknown)[] = [];
        if (backend === 'sqlite') {
          const dir = mkdtempSync(join(tmpdir(), 'dt-bench-'));
          own.push(() => rmSync(dir, { recursive: true, force: true }));
          storage = openSqliteStorage(join(dir, 'ledger.db'));
        } else {
          if (!cluster) {
            const c = startPgCluster({ fsync: true });
            closers.push(() => c.stop());
            cluster = c;
          }
          storage = await openPostgresStorage(cluster.createDatabase(`bench_${size}_${process.pid}`));
        }
        own.push(() => storage.close());
        try {
          const run = await runOne(backend, size, storage);
          runs.push(run);
          log(
            `${backend} ${size}: ${run.transfersPerSecond.toFixed(0)} transfers/s (${run.verifiesPerTransfer.toFixed(2)} native verifies per transfer)`,
          );
        } finally {
          await closeAll(own, log);
        }
      }
    }
  } finally {
    await closeAll(closers, log);
  }
  const cores = Math.min(workers, availableParallelism());
  const ceiling = perCore * cores;
  const results = {
    generated: new Date().toISOString(),
    machine: { node: process.version, cores: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown' },
    config: {
      sizes,
      backends,
      workers,
      batchSize,
      chainLength: chainLen,
      notes:
        'one input, two outputs per transfer; cards pay chains, so handovers carry 0..chain-1 history transfers; setup (cards, loads, syncs) is not timed; RSS in MiB after each settle call',
    },
    nativeVerify: { perCore, coresUsed: cores, ceiling },
    runs: runs.map((r) => ({ ...r, ratioToVerifyCeiling: r.transfersPerSecond / ceiling })),
  };
  const tmp = `${OUT}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(results, null, 2) + '\n');
  renameSync(tmp, OUT);
  for (const r of results.runs)
    log(
      `${r.backend.padEnd(8)} ${String(r.transfers).padStart(6)}: ${r.transfersPerSecond.toFixed(0).padStart(6)} tps = ${(r.ratioToVerifyCeiling * 100).toFixed(1)}% of the ${ceiling.toFixed(0)} verifies/s ceiling; rss ${r.rssMbByBatches[1]?.[1]} -> ${r.rssMbByBatches[r.rssMbByBatches.length - 1]?.[1]} MiB`,
    );
  log(`wrote ${OUT}`);
}

let exit = 0;
try {
  await main();
} catch (e) {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  exit = 1;
}
process.exit(exit);
