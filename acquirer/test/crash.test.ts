/**
 * Crash safety: the acquirer runs as a child process (the real `dt-acquirer`
 * CLI) and is SIGKILLed at points chosen by a seeded PRNG while terminals
 * submit and the forwarder settles with the real ledger, plus once exactly
 * between "the ledger settled" and "the acquirer recorded it" (fault
 * injection). Terminals behave as real ones: they resend a batch until it
 * is acknowledged. Afterwards: every batch was acknowledged, every handover
 * has exactly one outcome, and the ledger's own balances show each payment
 * settled exactly once.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { OutcomeStatus, toHex, verifySigned } from '@dt/protocol';
import { startLedgerServer, openSqliteStorage, writeKeyFile } from '@dt/ledger';
import { createTestLedger, type TestTerminal } from '@dt/ledger/testkit';
import { submitBatch, fetchAllOutcomes, type BatchAck } from '../src/index.ts';
import { seededFloat, tempDir } from './fixtures.ts';

const BIN = fileURLToPath(new URL('../bin/dt-acquirer.js', import.meta.url));
const SEED = 20261123;

interface Child {
  readonly proc: ChildProcess;
  readonly url: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function spawnAcquirer(args: string[], env: Record<string, string> = {}): Promise<Child> {
  const proc = spawn(process.execPath, [BIN, 'serve', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    void exited.then((e) => reject(new Error(`acquirer exited early (${e.code ?? e.signal}): ${stderr}`)));
  });
  return { proc, url, exited };
}

test('SIGKILL at seeded random points and between settle and record: nothing lost, nothing settled twice', async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const k = await createTestLedger({ now: Math.floor(Date.now() / 1000), storage: openSqliteStorage(join(dir, 'ledger.db')) });
  t.teardown(() => k.storage.close());
  // The test ledger's clock is settable; keep it on real time (the acquirer signs its settle requests with real time).
  const clock = setInterval(() => (k.clock.now = Math.floor(Date.now() / 1000)), 200);
  t.teardown(() => clearInterval(clock));
  const srv = await startLedgerServer({ ledger: k.ledger, port: 0 });
  t.teardown(() => srv.close());
  for (const [name, bytes] of [
    ['root', k.pki.issuer.cert],
    ['bank', k.pki.bank.cert],
    ['ledger', k.pki.ledger.cert],
    ['acquirer', k.acquirer.cert],
  ] as const) {
    writeFileSync(join(dir, `${name}.cert`), bytes);
  }
  // The acquirer key in the file format dt-ledger writes.
  writeKeyFile(join(dir, 'acquirer.key.json'), k.acquirer.keys);
  const args = [
    '--ledger',
    srv.url,
    '--root',
    join(dir, 'root.cert'),
    '--bank-cert',
    join(dir, 'bank.cert'),
    '--ledger-cert',
    join(dir, 'ledger.cert'),
    '--key',
    join(dir, 'acquirer.key.json'),
    '--cert',
    join(dir, 'acquirer.cert'),
    '--db',
    join(dir, 'acquirer.db'),
    '--port',
    '0',
    '--batches-per-call',
    '2',
    '--log-level',
    'silent',
  ];

  // Workload: 6 terminals x 4 batches x 3 handovers, from 8 cards (within each card's offline count).
  const rand = seededFloat(SEED);
  const cards = await Promise.all(Array.from({ length: 8 }, () => k.fundCard(200_000)));
  const terms: TestTerminal[] = Array.from({ length: 6 }, (_, i) => k.newTerminal(`shop-${i}`));
  const expected = new Map<string, number>();
  const batches: Array<{ term: TestTerminal; bytes: Uint8Array; handovers: number; ack?: BatchAck }> = [];
  let cardIx = 0;
  for (let b = 0; b < 4; b++) {
    for (const term of terms) {
      const hs = Array.from({ length: 3 }, () => {
        const amount = 100 + Math.floor(rand() * 900);
        expected.set(toHex(term.kid), (expected.get(toHex(term.kid)) ?? 0) + amount);
        return cards[cardIx++ % cards.length]!.wallet.pay(k.request(term, amount)).handover;
      });
      batches.push({ term, bytes: k.batch(term, hs), handovers: hs.length });
    }
  }

  /** Terminals send their unacknowledged batches, in order per terminal, until one fails. */
  const submitPending = async (url: string, upTo: number) => {
    await Promise.all(
      terms.map(async (term) => {
        for (const b of batches.slice(0, upTo).filter((x) => x.term === term)) {
          if (b.ack) continue;
          try {
            b.ack = await submitBatch(url, b.bytes, { timeoutMs: 10_000 });
          } catch {
            return; // acquirer gone: retry this batch (and the later ones) next time
          }
        }
      }),
    );
  };

  // Round 1: deterministic crash after the first verified settle answer, before recording it.
  const r1 = await spawnAcquirer(args, { DT_ACQUIRER_FAULT_KILL_BEFORE_RECORD: '1' });
  await submitPending(r1.url, 6);
  const e1 = await r1.exited;
  t.is(e1.signal, 'SIGKILL', 'the fault fired');
  t.true((await k.ledger.counts()).settled > 0, 'the ledger settled what the acquirer never recorded');

  // Rounds 2..6: SIGKILL after a seeded random delay while submitting and forwarding.
  const delays: number[] = [];
  const progress: string[] = [];
  for (let round = 0; round < 5; round++) {
    const c = await spawnAcquirer(args);
    const delay = 100 + Math.floor(rand() * 800);
    delays.push(delay);
    const killer = new Promise<void>((r) =>
      setTimeout(() => {
        c.proc.kill('SIGKILL');
        r();
      }, delay),
    );
    await Promise.all([submitPending(c.url, 6 + (round + 1) * 4), killer]);
    t.is((await c.exited).signal, 'SIGKILL');
    progress.push(
      `killed at ${delay} ms: ${batches.filter((b) => b.ack).length} batches acked, ledger settled ${(await k.ledger.counts()).settled} transfers`,
    );
  }
  t.log(`seed ${SEED}\n${progress.join('\n')}`);

  // Final run: no faults. Everything left is acknowledged and forwarded.
  const last = await spawnAcquirer(args);
  t.teardown(() => {
    last.proc.kill('SIGKILL');
  });
  await submitPending(last.url, batches.length);
  t.true(
    batches.every((b) => b.ack !== undefined),
    'every batch acknowledged',
  );
  const end = Date.now() + 60_000;
  for (;;) {
    const h = (await (await fetch(`${last.url}/v1/health`)).json()) as { queueDepth: number };
    if (h.queueDepth === 0) break;
    if (Date.now() > end) t.fail('queue did not drain');
    await new Promise((r) => setTimeout(r, 100));
  }

  let total = 0;
  for (const term of terms) {
    const page = await fetchAllOutcomes(last.url, term.signer, 0);
    const mine = batches.filter((b) => b.term === term);
    const want = mine.reduce((n, b) => n + b.handovers, 0);
    total += want;
    t.is(page.outcomes.length, want, 'one outcome per handover, none twice');
    t.is(new Set(page.refs.map(([s, i]) => `${s}:${i}`)).size, want);
    for (const o of page.outcomes) {
      const m = verifySigned('Outcome', o, k.pki.ledger.keys.publicKey).message;
      t.true(m.status === OutcomeStatus.SETTLED || m.status === OutcomeStatus.ALREADY_SETTLED);
    }
  }
  // The ledger's books: every merchant got exactly what was paid, once.
  const balances = await k.ledger.merchantBalances();
  for (const term of terms) t.is(balances[toHex(term.kid)] ?? 0, expected.get(toHex(term.kid)) ?? -1);
  t.is((await k.ledger.counts()).settled, total);
  t.true((await k.ledger.audit()).ok);
  last.proc.kill('SIGTERM');
  t.is((await last.exited).code, 0, 'clean shutdown on SIGTERM');
});
