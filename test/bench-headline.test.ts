/**
 * `npm run bench -- --headline` as a process, on its tiny configuration
 * (DT_BENCH_HEADLINE_TINY=1: a few taps, a few hundred ledger rows): the
 * file gets a `headline` with exactly the nine numeric keys, one
 * method sentence per key, and keeps what a full `npm run bench` wrote
 * there. The figures of a tiny run mean nothing and no timing is asserted;
 * what is checked are facts that hold at any size: the card signs once per
 * PAY and verifies at least the terminal's request, a 63-hop handover is
 * larger than a 0-hop one, and the taps ran with vpcd's TCP_NODELAY shim.
 *
 * Needs root (private pcscd), pcscd + vsmartcard-vpcd, PostgreSQL's server
 * binaries and the shim (npm run setup). Skipped locally without them;
 * never skipped in CI (CI=true).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pcscdUnavailableReason } from '@dt/card-applet-sim';
import { pgAvailable } from '@dt/ledger';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const KEYS = [
  'ledgerSqliteCeilingRatio',
  'ledgerPostgresCeilingRatio',
  'ledgerCeilingRatioHops63',
  'tapP95MsDefault',
  'handoverBytesHops0',
  'handoverBytesHops63',
  'cardVerifiesPerPay',
  'cardSignaturesPerPay',
  'firmwarePayMsQuickjs',
];

const why = pcscdUnavailableReason() ?? (pgAvailable() ? undefined : 'PostgreSQL server binaries not installed');
const run = why === undefined || process.env.CI === 'true' ? test.serial : test.serial.skip;
if (why !== undefined && process.env.CI !== 'true') test.serial.skip(`bench --headline skipped locally: ${why}`, () => undefined);

function bench(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=dt-source', '--import', 'tsx', join(root, 'scripts', 'bench.ts'), ...args], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

run('--headline writes exactly the nine headline figures with a method each, next to what a full run wrote', async (t) => {
  t.timeout(600_000);
  const dir = mkdtempSync(join(tmpdir(), 'dt-bench-headline-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'bench-results.json');
  // What a full `npm run bench` leaves (and an older file's summary under "headline"): the packages stay, the stale headline goes.
  writeFileSync(
    out,
    JSON.stringify({ format: 'dt-bench-results', packages: { protocol: { kept: true } }, headline: { tapLatencyMs: {} } }),
  );
  const r = await bench(['--headline', '--out', out], { DT_BENCH_HEADLINE_TINY: '1' });
  t.is(r.code, 0, r.output.slice(-4000));
  const doc = JSON.parse(readFileSync(out, 'utf8')) as Record<string, Record<string, unknown>>;
  t.deepEqual(Object.keys(doc.headline!).sort(), [...KEYS].sort());
  for (const k of KEYS) t.true(typeof doc.headline![k] === 'number' && Number.isFinite(doc.headline![k]), `${k} is a number`);
  t.deepEqual(Object.keys(doc.headlineMethods!).sort(), [...KEYS].sort());
  for (const k of KEYS)
    t.true(typeof doc.headlineMethods![k] === 'string' && (doc.headlineMethods![k] as string).length > 40, `${k} has a method sentence`);
  const h = doc.headline as Record<string, number>;
  t.is(h.cardSignaturesPerPay, 1, 'a PAY signs exactly one transfer');
  t.true(
    h.cardVerifiesPerPay! >= 1 && h.cardVerifiesPerPay! <= 3,
    'the card verifies the request (and at most the terminal chain besides)',
  );
  t.true(h.handoverBytesHops63! > h.handoverBytesHops0!);
  for (const k of [
    'ledgerSqliteCeilingRatio',
    'ledgerPostgresCeilingRatio',
    'ledgerCeilingRatioHops63',
    'tapP95MsDefault',
    'firmwarePayMsQuickjs',
  ])
    t.true(h[k]! > 0, `${k} > 0`);
  t.is((doc.headlineDetails!.vpcdNoDelay as { active: boolean }).active, true, 'the taps ran through pcscd with the TCP_NODELAY shim');
  t.deepEqual(doc.packages, { protocol: { kept: true } }, "the full run's part of the file is kept");
  t.is((doc.headlineRun as { tiny: boolean }).tiny, true);
});

run('--headline and --only exclude each other (exit 2)', async (t) => {
  const r = await bench(['--headline', '--only', 'protocol'], {});
  t.is(r.code, 2);
  t.regex(r.output, /exclude each other/);
});

test('ledger/bench/headline.ts refuses a --profile directory it cannot write before it measures anything (exit 2)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-bench-headline-profile-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'a-file');
  writeFileSync(file, 'not a directory');
  const r = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--conditions=dt-source', '--import', 'tsx', join(root, 'ledger', 'bench', 'headline.ts'), '--profile', join(file, 'profiles')],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
  t.is(r.code, 2, r.output);
  t.regex(r.output, /--profile .*a-file\/profiles: cannot write there \(ENOTDIR\)/);
  t.notRegex(r.output, /dataset|verify ceiling/, 'nothing was built or measured');
});
