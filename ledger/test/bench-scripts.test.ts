/**
 * The ledger's bench scripts as processes, on tiny configurations (no time is asserted: the
 * figures of a tiny run mean nothing).
 *
 * `ledger/bench/bench.ts` (`npm run bench -w ledger`): it exits 0 and writes a run per backend
 * and size, each of which settled every transfer (the bench fails otherwise) on a pool of the
 * given size; bad usage is exit 2 with the reason.
 *
 * `ledger/bench/floor.ts`: it exits 0 and writes the
 * figures it promises (no time is asserted: the figures of a tiny run mean nothing), and the
 * facts that hold at any size: every variant stored every transfer it was given (the
 * bench checks that its fresh claims were unheld, and fails otherwise), a bound is a ratio
 * in (0, 1], and bad usage is exit 2 with the reason, before anything is built. `--pg` needs
 * PostgreSQL's server binaries (npm run setup): skipped locally without them, never in CI.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pgAvailable } from '../src/pg-cluster.ts';

const FLOOR = fileURLToPath(new URL('../bench/floor.ts', import.meta.url));
const BENCH = fileURLToPath(new URL('../bench/bench.ts', import.meta.url));

const floor = (args: string[]) => script(FLOOR, args);
const bench = (args: string[]) => script(BENCH, args);

function script(file: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=dt-source', '--import', 'tsx', file, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('floor.ts writes its four variants with a bound each (tiny configuration) and exits 0', async (t) => {
  t.timeout(120_000);
  const dir = mkdtempSync(join(tmpdir(), 'dt-floor-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'floor.json');
  const r = await floor(['--rows', '300', '--cards', '40', '--transfers', '250', '--batch', '32', '--out', out]);
  t.is(r.code, 0, r.stderr);
  const doc = JSON.parse(readFileSync(out, 'utf8')) as Record<string, Record<string, number>>;
  t.deepEqual(doc.config, {
    rows: 300,
    cards: 40,
    transfers: 250,
    batch: 32,
    sqlite: 'openSqliteStorage(file): WAL, synchronous=FULL, background checkpointer, file on disk (os.tmpdir())',
  } as unknown as Record<string, number>);
  for (const v of ['current', 'rowless', 'minimal', 'clustered'] as const) {
    const f = doc[v]!;
    t.true(f.cpuMicrosPerTransfer! > 0 && f.wallMicrosPerTransfer! > 0, v);
    t.true(f.maxCeilingRatio! > 0 && f.maxCeilingRatio! <= 1, `${v}: ${f.maxCeilingRatio}`);
  }
  t.true(doc.crypto!.verifyMicros! > 0 && doc.crypto!.signMicros! > 0);
  t.regex(
    r.stderr,
    /at the most: ratio [\d.]+ with today's rows, [\d.]+ with them WITHOUT ROWID, [\d.]+ with the minimal ones, [\d.]+ with today's clustered by card/,
  );
});

const pgTest = pgAvailable() || process.env.CI === 'true' ? test : test.skip;
pgTest(
  "floor.ts --pg: today's rows, the minimal design and today's clustered by card on a throwaway PostgreSQL cluster too (tiny configuration)",
  async (t) => {
    t.timeout(180_000);
    const dir = mkdtempSync(join(tmpdir(), 'dt-floor-test-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const out = join(dir, 'floor.json');
    const r = await floor(['--pg', '--rows', '300', '--cards', '40', '--transfers', '250', '--batch', '32', '--out', out]);
    t.is(r.code, 0, r.stderr);
    const doc = JSON.parse(readFileSync(out, 'utf8')) as { postgres?: Record<string, Record<string, number>> };
    for (const v of ['current', 'minimal'] as const) {
      const f = doc.postgres?.[v];
      t.truthy(f, v);
      t.true(f!.cpuMicrosPerTransfer! > 0 && f!.wallMicrosPerTransfer! > 0, v);
      t.true(f!.maxCeilingRatio! > 0 && f!.maxCeilingRatio! <= 1, `${v}: ${f!.maxCeilingRatio}`);
    }
    t.regex(r.stderr, /; PostgreSQL [\d.]+, [\d.]+ and [\d.]+; results in /);
  },
);

test('floor.ts refuses bad usage with exit 2 and the reason; --help exits 0', async (t) => {
  const bad = await floor(['--rows=-1']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--rows must be an integer >= 0, got -1/);
  const unknown = await floor(['--bogus']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /Unknown option '--bogus'/);
  const big = await floor(['--cards', '10', '--batch', '20']);
  t.is(big.code, 2);
  t.regex(big.stderr, /--batch must be at most --cards \(10\)/);
  const help = await floor(['--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /--transfers N/);
});

for (const backends of ['sqlite', 'postgres']) {
  (backends === 'postgres' ? pgTest : test)(
    `bench.ts --backends ${backends}: a run per size, every transfer settled, and exit 0 (tiny configuration)`,
    async (t) => {
      t.timeout(180_000);
      const dir = mkdtempSync(join(tmpdir(), 'dt-bench-test-'));
      t.teardown(() => rmSync(dir, { recursive: true, force: true }));
      const out = join(dir, 'bench.json');
      const r = await bench(['--sizes', '6,12', '--backends', backends, '--workers', '1', '--batch', '4', '--chain', '3', '--out', out]);
      t.is(r.code, 0, r.stderr);
      const doc = JSON.parse(readFileSync(out, 'utf8')) as {
        config: { sizes: number[]; workers: number; batchSize: number; chainLength: number };
        nativeVerify: { perCore: number; coresUsed: number };
        runs: { backend: string; transfers: number; cards: number; transfersPerSecond: number; ratioToVerifyCeiling: number }[];
      };
      t.like(doc.config, { sizes: [6, 12], workers: 1, batchSize: 4, chainLength: 3 });
      t.is(doc.nativeVerify.coresUsed, 1);
      t.true(doc.nativeVerify.perCore > 0);
      t.deepEqual(
        doc.runs.map((x) => [x.backend, x.transfers, x.cards]),
        [
          [backends, 6, 2],
          [backends, 12, 4],
        ],
      );
      for (const x of doc.runs) t.true(x.transfersPerSecond > 0 && x.ratioToVerifyCeiling > 0, `${x.backend} ${x.transfers}`);
      t.regex(r.stdout, /wrote .*bench\.json/);
    },
  );
}

test('bench.ts refuses bad usage with exit 2 and the reason; --help exits 0', async (t) => {
  const bad = await bench(['--sizes', '10,x']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--sizes must be an integer >= 1, got x/);
  const backend = await bench(['--backends', 'mysql']);
  t.is(backend.code, 2);
  t.regex(backend.stderr, /--backends takes sqlite and postgres, got mysql/);
  const unknown = await bench(['--bogus']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /Unknown option '--bogus'/);
  const help = await bench(['--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /--sizes N,N,\.\.\./);
});
