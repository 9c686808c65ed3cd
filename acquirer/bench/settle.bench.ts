/**
 * Benchmark: one terminal batch of 1,000 handovers end to end — POST to the
 * acquirer (admission + durable store + ack), forwarding to the real ledger
 * (SQLite, WAL) which validates and settles every handover, recording the
 * verified outcomes, and the terminal's authenticated read of all 1,000
 * outcomes. Writes acquirer/bench-results.json. Wall-clock figures are
 * reported, never asserted.
 */
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { OutcomeStatus, verifySigned } from '@dt/protocol';
import { startLedgerServer, openSqliteStorage } from '@dt/ledger';
import { createTestLedger } from '@dt/ledger/testkit';
import { startAcquirer, submitBatch, fetchAllOutcomes } from '../src/index.ts';

const HANDOVERS = 1000;
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const CARD_PAYMENTS = 10; // the default card limit on offline payments between syncs

const dir = mkdtempSync(join(tmpdir(), 'dt-acq-bench-'));
try {
  const k = await createTestLedger({ now: Math.floor(Date.now() / 1000), storage: openSqliteStorage(join(dir, 'ledger.db')) });
  const srv = await startLedgerServer({ ledger: k.ledger, port: 0 });
  // The test ledger's clock is settable; keep it on real time (the acquirer signs its settle requests with real time).
  const clock = setInterval(() => (k.clock.now = Math.floor(Date.now() / 1000)), 1000);
  clock.unref();
  const acq = await startAcquirer({
    ledgerUrl: srv.url,
    root: k.pki.issuer.cert,
    bankCert: k.pki.bank.cert,
    ledgerCert: k.pki.ledger.cert,
    acquirerCert: k.acquirer.cert,
    acquirerSigner: k.acquirer.signer,
    dbFile: join(dir, 'acquirer.db'),
    autoForward: false,
  });
  const runs: Array<Record<string, number>> = [];
  for (let run = 0; run < RUNS; run++) {
    const cards = [];
    for (let i = 0; i < HANDOVERS / CARD_PAYMENTS; i++) cards.push(await k.fundCard(100_000));
    const term = k.newTerminal(`bench-${run}`);
    const handovers: Uint8Array[] = [];
    for (let i = 0; i < HANDOVERS; i++) handovers.push(cards[i % cards.length]!.wallet.pay(k.request(term, 100 + (i % 50))).handover);
    const batch = k.batch(term, handovers);

    const t0 = performance.now();
    const ack = await submitBatch(acq.url, batch, { timeoutMs: 300_000 });
    const t1 = performance.now();
    const fwd = await acq.forwardNow();
    const t2 = performance.now();
    const page = await fetchAllOutcomes(acq.url, term.signer, 0, { timeoutMs: 300_000 });
    const t3 = performance.now();

    if (ack.handovers !== HANDOVERS || fwd.settled !== 1 || page.outcomes.length !== HANDOVERS)
      throw new Error(`run ${run} incomplete: ${JSON.stringify(fwd)}`);
    const settled = page.outcomes.filter(
      (o) => verifySigned('Outcome', o, k.pki.ledger.keys.publicKey).message.status === OutcomeStatus.SETTLED,
    ).length;
    if (settled !== HANDOVERS) throw new Error(`run ${run}: only ${settled} settled`);
    runs.push({
      batchBytes: batch.length,
      submitMs: Math.round(t1 - t0),
      forwardAndSettleMs: Math.round(t2 - t1),
      fetchOutcomesMs: Math.round(t3 - t2),
      totalMs: Math.round(t3 - t0),
    });
    process.stdout.write(`run ${run + 1}/${RUNS}: ${JSON.stringify(runs.at(-1))}\n`);
  }
  await acq.close();
  await srv.close();
  await k.storage.close();
  const totals = runs.map((r) => r.totalMs!).sort((a, b) => a - b);
  const median = totals[Math.floor(totals.length / 2)]!;
  const result = {
    benchmark: 'acquirer: one batch of 1,000 handovers, POST /v1/batches -> ledger settle (SQLite) -> outcomes read by the terminal',
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    handovers: HANDOVERS,
    runs,
    medianTotalMs: median,
    handoversPerSecond: Math.round((HANDOVERS * 1000) / median),
    note: 'Wall clock on a shared machine; forwardAndSettleMs is dominated by the ledger validating every handover (card chain, tokens, history) and its SQLite commits.',
  };
  const out = fileURLToPath(new URL('../bench-results.json', import.meta.url));
  writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
  process.stdout.write(`wrote ${out}: median ${median} ms for ${HANDOVERS} handovers\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
