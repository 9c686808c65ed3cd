/**
 * A terminal process for the crash test: taps cards (on serial ptys served
 * by the parent) and syncs with the real acquirer, forever, until the parent
 * SIGKILLs it. It prints `APPROVED <id> <transfer hash> <amount>` only after
 * the kernel returned APPROVED (i.e. after the journal commit), exactly as a
 * terminal shows the outcome to the merchant.
 *
 * argv: dataDir acquirerUrl seed cardKidsCsv ptyPathsCsv
 */
import { Journal, loadIdentity, openSerialReader, PaymentKernel, SyncClient, DEFAULT_POLICY, type CardReader } from '../../src/index.ts';

const [dataDir, acquirerUrl, seedArg, kidsCsv, ptysCsv] = process.argv.slice(2) as [string, string, string, string, string];
let seed = Number(seedArg) >>> 0;
/** mulberry32: deterministic choices from the seed. */
const rand = (): number => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

const now = () => Math.floor(Date.now() / 1000);
const identity = loadIdentity(dataDir, now());
const journal = Journal.open(`${dataDir}/journal.sqlite`);
const kids = kidsCsv.split(',');
const readers: CardReader[] = [];
for (const p of ptysCsv.split(',')) readers.push(await openSerialReader(p, { frameTimeoutMs: 500, attempts: 6 }));
const policy = { ...DEFAULT_POLICY, floorLimit: 10_000_000, cvmLimit: 10_000_000, pendingCap: 10_000_000_000 };
const kernel = new PaymentKernel({ identity, journal, policy, timeouts: { cardMs: 5000, tapMs: 10_000 } });
const sync = new SyncClient({ identity, journal, acquirerUrl, retry: { attempts: 2, baseMs: 20, maxMs: 100, timeoutMs: 5000 } });
process.stdout.write('READY\n');

for (;;) {
  if (rand() < 0.25) {
    const r = await sync.sync();
    process.stdout.write(`SYNC ${r.batches.length} ${r.outcomes.applied} ${r.problems.length}\n`);
    continue;
  }
  const i = Math.floor(rand() * readers.length);
  // "Present the card again": a torn attempt of this card is retried with the same amount.
  const torn = journal.tornAttempts().filter((a) => a.card && Buffer.from(a.card).toString('hex') === kids[i]);
  const amount = torn.length > 0 ? torn[torn.length - 1]!.amount : 1000 + Math.floor(rand() * 49_000);
  const o = await kernel.charge(readers[i]!, amount);
  if (o.kind === 'APPROVED') {
    process.stdout.write(`APPROVED ${o.payment.id} ${Buffer.from(o.payment.transferHash).toString('hex')} ${o.payment.amount}\n`);
  } else {
    process.stdout.write(`${o.kind} ${'reason' in o ? o.reason : ''}\n`);
  }
}
