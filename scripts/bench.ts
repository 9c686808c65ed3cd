/**
 * `npm run bench` at the root: runs the benchmark of every workspace that
 * has one (`npm run bench -w <ws>`), one after the other (they measure
 * time: running them in parallel would measure each other), then gathers
 * each package's `bench-results.json` into ONE file, `bench-results.json`
 * at the root:
 *
 * ```text
 * { generatedAt, durationSeconds, host, runs: [{ workspace, ok, seconds, error? }],
 *   packages: { protocol, firmware, ledger, acquirer, 'hardware-tests' },   // each file as written
 *   summary: { tapLatencyMs, tapGoalP95Met, handoverBytes, verifyUs, ledgerSettledPerSec, ... },
 *   sources: { <summary key>: 'packages.<ws>.<path>' }, errors: [...] }
 * ```
 *
 * `npm run bench -- --headline` measures only the headline figures of issue
 * 15 (see {@link HEADLINE_KEYS}; about 1.5 minutes on 2 cores when quiet, up to 10 under load) through three
 * focused runs: hardware-tests' tap bench (200 taps on the default loopback,
 * handover sizes; no verification micro-benchmark), firmware's bench (PAY in
 * QuickJS, the card's crypto per PAY) and the ledger's headline workload
 * (`ledger/bench/headline.ts`). It writes `headline` (exactly those numeric
 * keys), `headlineMethods` (how each was measured), `headlineGoals` and
 * `headlineDetails` into the same file. Each mode replaces only its own part
 * of an existing file, so one file can hold both. `DT_BENCH_HEADLINE_TINY=1`
 * runs the headline on a tiny configuration (tests: it checks the file's
 * shape, not the figures).
 *
 * Only results written by THIS run are gathered (a file older than the run
 * is stale and is not taken). A failing package bench fails the run (exit 1),
 * but the file is still written with what there is and the error noted.
 *
 * Usage: node --conditions=dt-source --import tsx scripts/bench.ts [--headline] [--only ws1,ws2] [--out FILE] [--help]
 * Exit codes: 0 all benches ran, 1 a bench failed, 2 bad usage.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));

const HELP = `npm run bench [-- options]

Runs every workspace's benchmark (npm run bench -w <ws>), sequentially, and
gathers their bench-results.json files into one root bench-results.json with
a summary of the key figures (tap latency per phase, handover sizes,
verification time, ledger settlement rate, protocol operations).

With --headline it measures only the headline figures (about 2-10 minutes on
2 cores): ledgerSqliteCeilingRatio, ledgerPostgresCeilingRatio,
ledgerCeilingRatioHops63, tapP95MsDefault, handoverBytesHops0,
handoverBytesHops63, cardVerifiesPerPay, cardSignaturesPerPay,
firmwarePayMsQuickjs, written under "headline" with one sentence each on how
it was measured ("headlineMethods"). Needs root (private pcscd), pcscd,
vsmartcard-vpcd and PostgreSQL's server binaries.

Options:
  --headline         measure only the headline figures
  --only WS[,WS...]  run only these workspaces (e.g. --only hardware-tests,protocol; not with --headline)
  --out FILE         output file (default bench-results.json at the repository root)
  --help             this help

Environment: DT_BENCH_HEADLINE_TINY=1 runs --headline on a tiny configuration
(seconds instead of minutes; the figures then mean nothing).

Exit codes: 0 every bench ran, 1 a bench failed (the file is still written,
with the error noted), 2 bad usage.
`;

function usage(message: string): never {
  process.stderr.write(`bench: ${message}\n\n${HELP}`);
  process.exit(2);
}

/** Workspaces (directory names, as in the root package.json) that have a `bench` script. */
function benchWorkspaces(root = ROOT): string[] {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { workspaces?: string[] };
  return (pkg.workspaces ?? []).filter((ws) => {
    const file = join(root, ws, 'package.json');
    if (!existsSync(file)) return false;
    const p = JSON.parse(readFileSync(file, 'utf8')) as { scripts?: Record<string, string> };
    return typeof p.scripts?.bench === 'string';
  });
}

/** Reads `path` (dot-separated keys) in `obj`; undefined when any step is missing. */
function at(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const k of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[k];
  }
  return cur;
}

const PHASES = ['select', 'request', 'cardSigning', 'verification', 'journalCommit', 'total'] as const;

/**
 * The summary: key figures picked from the package files, each with the
 * path it came from (`sources`). A figure whose package did not run (or
 * whose file lacks it) is absent and listed in `missing`.
 */
function summary(packages: Record<string, unknown>): {
  summary: Record<string, unknown>;
  sources: Record<string, string>;
  missing: string[];
} {
  const h: Record<string, unknown> = {};
  const sources: Record<string, string> = {};
  const missing: string[] = [];
  const take = (key: string, source: string, value: unknown): void => {
    const empty = value === undefined || (typeof value === 'object' && value !== null && Object.keys(value).length === 0);
    if (empty) {
      missing.push(key);
      return;
    }
    h[key] = value;
    sources[key] = source;
  };
  const hw = packages['hardware-tests'];
  const lat: Record<string, unknown> = {};
  for (const p of PHASES) {
    const s = at(hw, `tapLatency.phases.${p}`) as Record<string, number> | undefined;
    if (s) lat[p] = { p50: s.p50, p95: s.p95, p99: s.p99 };
  }
  take('tapLatencyMs', "packages['hardware-tests'].tapLatency.phases.<phase>.{p50,p95,p99}", lat);
  take('tapTaps', "packages['hardware-tests'].tapLatency.approved", at(hw, 'tapLatency.approved'));
  take('tapGoalP95Met', "packages['hardware-tests'].tapLatency.goal.met", at(hw, 'tapLatency.goal.met'));
  take('handoverBytes', "packages['hardware-tests'].handover.bytes (chain0, chain1, chainMax)", at(hw, 'handover.bytes'));
  take('handoverMaxChain', "packages['hardware-tests'].handover.maxChain", at(hw, 'handover.maxChain'));
  const verify: Record<string, unknown> = {};
  for (const v of ['native', 'noble']) {
    const byChain: Record<string, unknown> = {};
    for (const c of ['chain0', 'chain1', 'chainMax']) {
      const us = at(hw, `verification.${v}.${c}.medianUs`);
      if (us !== undefined) byChain[c] = us;
    }
    if (Object.keys(byChain).length > 0) verify[v] = byChain;
  }
  take(
    'verifyUs',
    "packages['hardware-tests'].verification.<native|noble>.<chain0|chain1|chainMax>.medianUs (median per handover, µs)",
    verify,
  );

  const runs = at(packages.ledger, 'runs') as { backend: string; transfers: number; transfersPerSecond: number }[] | undefined;
  if (Array.isArray(runs)) {
    const settled: Record<string, Record<string, number>> = {};
    for (const r of runs) (settled[r.backend] ??= {})[String(r.transfers)] = Math.round(r.transfersPerSecond);
    take('ledgerSettledPerSec', 'packages.ledger.runs[].transfersPerSecond by backend and transfer count', settled);
  } else missing.push('ledgerSettledPerSec');
  take('ledgerNativeVerifyCeilingPerSec', 'packages.ledger.nativeVerify.ceiling', at(packages.ledger, 'nativeVerify.ceiling'));
  take('acquirerHandoversPerSec', 'packages.acquirer.handoversPerSecond', at(packages.acquirer, 'handoversPerSecond'));
  take('acquirerBatch1000MedianMs', 'packages.acquirer.medianTotalMs', at(packages.acquirer, 'medianTotalMs'));
  take(
    'firmwarePayMedianMs',
    'packages.firmware.{nodePay,quickjs.pay}.medianMs',
    Object.fromEntries(
      [
        ['node', at(packages.firmware, 'nodePay.medianMs')],
        ['quickjs', at(packages.firmware, 'quickjs.pay.medianMs')],
      ].filter(([, v]) => v !== undefined),
    ),
  );
  take(
    'firmwarePayCpuMedianMs',
    'packages.firmware.{nodePayCpu,quickjs.payCpu}.medianMs (CPU time of the PAY)',
    Object.fromEntries(
      [
        ['node', at(packages.firmware, 'nodePayCpu.medianMs')],
        ['quickjs', at(packages.firmware, 'quickjs.payCpu.medianMs')],
      ].filter(([, v]) => v !== undefined),
    ),
  );
  take(
    'firmwareBundleBytes',
    'packages.firmware.bundle.{bytes,gzipBytes}',
    at(packages.firmware, 'bundle') === undefined
      ? undefined
      : { raw: at(packages.firmware, 'bundle.bytes'), gzip: at(packages.firmware, 'bundle.gzipBytes') },
  );
  const ops = at(packages.protocol, 'results') as { name: string; opsPerSec: number }[] | undefined;
  take(
    'protocolOpsPerSec',
    'packages.protocol.results[].opsPerSec by name',
    Array.isArray(ops) ? Object.fromEntries(ops.map((o) => [o.name, Math.round(o.opsPerSec)])) : undefined,
  );
  return { summary: h, sources, missing };
}

/** Runs `npm run bench -w ws`, output passed through; resolves with the exit code. */
function runBench(ws: string): Promise<number> {
  return new Promise((resolveP) => {
    const child = spawn('npm', ['run', 'bench', '-w', ws], { cwd: ROOT, stdio: 'inherit' });
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.on('error', () => resolveP(127));
    child.on('exit', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolveP(code ?? (signal ? 128 : 1));
    });
  });
}

function hostInfo(): Record<string, unknown> {
  return {
    cpus: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    memoryMb: Math.round(totalmem() / 1048576),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}

/**
 * Writes `values` into `out`, keeping what another mode wrote there: the
 * keys in `owned` are replaced (or removed when absent from `values`), the
 * rest of an existing dt-bench-results file stays. A `headline` object that
 * is not the headline of {@link HEADLINE_KEYS} (an older file's summary) is
 * dropped.
 */
function writeMerged(out: string, owned: readonly string[], values: Record<string, unknown>): void {
  let doc: Record<string, unknown> = {};
  if (existsSync(out)) {
    try {
      const old = JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>;
      if (old && typeof old === 'object' && old.format === 'dt-bench-results') doc = old;
    } catch {
      // Not ours or damaged: replaced as a whole.
    }
  }
  for (const k of owned) delete doc[k];
  const h = doc.headline;
  if (h !== undefined && !(h && typeof h === 'object' && Object.keys(h).sort().join() === [...HEADLINE_KEYS].sort().join())) {
    for (const k of ['headline', 'headlineMethods', 'headlineGoals', 'headlineDetails', 'headlineRun']) delete doc[k];
  }
  doc = { format: 'dt-bench-results', ...doc, ...values };
  const tmp = `${out}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(doc, null, 2) + '\n');
  renameSync(tmp, out);
}

/** The headline figures of issue 15, in the order the README's table shows them. */
const HEADLINE_KEYS = [
  'ledgerSqliteCeilingRatio',
  'ledgerPostgresCeilingRatio',
  'ledgerCeilingRatioHops63',
  'tapP95MsDefault',
  'handoverBytesHops0',
  'handoverBytesHops63',
  'cardVerifiesPerPay',
  'cardSignaturesPerPay',
  'firmwarePayMsQuickjs',
] as const;
type HeadlineKey = (typeof HEADLINE_KEYS)[number];

/** The goals (issue 15 "Goals"), for the record next to the figures. */
const HEADLINE_GOALS: Record<HeadlineKey, string> = {
  ledgerSqliteCeilingRatio: '>= 0.40',
  ledgerPostgresCeilingRatio: '>= 0.25',
  ledgerCeilingRatioHops63: '>= 0.20',
  tapP95MsDefault: '<= 60',
  handoverBytesHops0: '<= 1000',
  handoverBytesHops63: '<= 12000',
  cardVerifiesPerPay: '<= 1',
  cardSignaturesPerPay: '= 1',
  firmwarePayMsQuickjs: '<= 40',
};

/** Whether a figure meets its goal text (`>= x`, `<= x`, `= x`). */
function meets(value: number, goal: string): boolean {
  const [op, x] = goal.split(' ') as [string, string];
  const n = Number(x);
  return op === '>=' ? value >= n : op === '<=' ? value <= n : value === n;
}

/** One focused step of the headline: a script run as a child process writing its JSON to `out`. */
interface Step {
  readonly name: string;
  readonly cwd: string;
  readonly script: string;
  readonly args: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** Node/V8 options before the script (e.g. `--single-threaded`). */
  readonly nodeArgs?: readonly string[];
  readonly out: string;
}

/** Runs a step (output passed through); resolves with its exit code. */
function runStep(step: Step): Promise<number> {
  return new Promise((resolveP) => {
    const child = spawn(
      process.execPath,
      [...(step.nodeArgs ?? []), '--conditions=dt-source', '--import', 'tsx', step.script, ...step.args],
      {
        cwd: step.cwd,
        stdio: 'inherit',
        env: { ...process.env, ...step.env },
      },
    );
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.on('error', () => resolveP(127));
    child.on('exit', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolveP(code ?? (signal ? 128 : 1));
    });
  });
}

/** A number at `path` in `obj`, or an error naming what is missing. */
function num(obj: unknown, path: string, what: string): number {
  const v = at(obj, path);
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${what}: ${path} missing in its results`);
  return v;
}

const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits;

/** `--headline`: the three focused runs, then the headline into `out`. */
async function runHeadline(out: string): Promise<number> {
  const tiny = process.env.DT_BENCH_HEADLINE_TINY === '1';
  const started = performance.now();
  // The machine is shared: the load around the run says how far its absolute figures can be trusted.
  const loadBefore = loadavg().map((x) => round(x, 2));
  const work = mkdtempSync(join(tmpdir(), 'dt-headline-'));
  const file = (n: string) => join(work, n);
  // Sizes: the issue's definitions; the tiny configuration only exercises the plumbing.
  const steps: Step[] = [
    {
      name: 'taps and handover sizes (hardware-tests)',
      cwd: join(ROOT, 'hardware-tests'),
      script: 'bench/bench.ts',
      out: file('hardware-tests.json'),
      args: ['--taps', tiny ? '3' : '200', '--warmup', tiny ? '1' : '5', '--verify-reps', '0', '--out', file('hardware-tests.json')],
    },
    {
      name: "PAY in QuickJS and the card's crypto per PAY (firmware)",
      cwd: join(ROOT, 'firmware'),
      script: 'scripts/bench.ts',
      out: file('firmware.json'),
      // No V8 helper threads: the process CPU time is the one thread that runs QuickJS (firmware's bench script does the same).
      nodeArgs: ['--single-threaded'],
      args: [],
      env: { BENCH_PAYS: tiny ? '2' : '8', BENCH_OUT: file('firmware.json') },
    },
    {
      name: 'settlement against the verify ceiling (ledger)',
      cwd: join(ROOT, 'ledger'),
      script: 'bench/headline.ts',
      out: file('ledger.json'),
      args: tiny
        ? [
            '--cards',
            '200',
            '--spent-rows',
            '2000',
            '--mixed',
            '12',
            '--hops63',
            '2',
            '--terminals',
            '3',
            '--ceiling-seconds',
            '0.2',
            '--out',
            file('ledger.json'),
          ]
        : ['--out', file('ledger.json')],
    },
  ];
  const runs: { step: string; ok: boolean; seconds: number; exitCode: number }[] = [];
  const results: Record<string, unknown> = {};
  let failed = 0;
  try {
    for (const [i, step] of steps.entries()) {
      process.stderr.write(`\n=== headline [${i + 1}/${steps.length}] ${step.name}\n`);
      const t0 = performance.now();
      const code = await runStep(step);
      const seconds = round((performance.now() - t0) / 1000, 1);
      const ok = code === 0 && existsSync(step.out);
      if (ok) results[step.name] = JSON.parse(readFileSync(step.out, 'utf8'));
      else failed++;
      runs.push({ step: step.name, ok, seconds, exitCode: code });
      process.stderr.write(`=== ${step.name}: ${ok ? 'ok' : `FAILED (exit ${code})`} in ${seconds} s\n`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const [hwName, fwName, ledgerName] = steps.map((s) => s.name) as [string, string, string];
  const hw = results[hwName];
  const fw = results[fwName];
  const lg = results[ledgerName];
  const durationSeconds = round((performance.now() - started) / 1000, 1);
  const errors: string[] = runs.filter((r) => !r.ok).map((r) => `${r.step}: exit ${r.exitCode}`);
  const headline: Partial<Record<HeadlineKey, number>> = {};
  const methods: Partial<Record<HeadlineKey, string>> = {};
  const take = (key: HeadlineKey, f: () => number, method: () => string): void => {
    try {
      headline[key] = f();
      methods[key] = method();
    } catch (e) {
      errors.push(`${key}: ${(e as Error).message}`);
    }
  };
  const ledgerRun = (name: string) =>
    at(lg, `runs.${name}`) as
      { handovers: number; settledPerSecond: number; verifyCeiling: { perSecond: number; workers: number } } | undefined;
  const ledgerMethod = (name: string, what: string): string => {
    const r = ledgerRun(name)!;
    const cfg = at(lg, 'config') as { cards: number; spentRows: number; terminals: number; batchSize: number; ledger: string };
    const validators = Number(/--validators (\d+)/.exec(cfg.ledger)?.[1] ?? 0);
    const where = validators > 0 ? `validation on ${validators} validator worker threads` : 'validation in the main thread';
    return `${r.handovers} real, fully signed handovers ${what} settled through Ledger.settle on a ledger opened exactly as dt-ledger serve opens it (${where}, in-process, no HTTP) over ${cfg.cards.toLocaleString('en-US')} active cards and ${cfg.spentRows.toLocaleString('en-US')} spent-set rows (the measured cards built and their earlier payments settled through the ledger's API, the rest inserted in bulk at the storage level: ledger/bench/headline-dataset.ts), in batches of ${cfg.batchSize} from ${cfg.terminals} terminals; settled/s (${Math.round(r.settledPerSecond)}) divided by native P-256 verifies/s of ${r.verifyCeiling.workers} worker threads at once (${Math.round(r.verifyCeiling.perSecond)}), measured just before.`;
  };
  take(
    'ledgerSqliteCeilingRatio',
    () => round(num(lg, 'ratios.ledgerSqliteCeilingRatio', 'ledger'), 5),
    () => ledgerMethod('sqliteMixed', 'at 0..5 history hops (evenly mixed, one card each) on SQLite (WAL, synchronous=FULL, on disk)'),
  );
  take(
    'ledgerPostgresCeilingRatio',
    () => round(num(lg, 'ratios.ledgerPostgresCeilingRatio', 'ledger'), 5),
    () =>
      ledgerMethod(
        'postgresMixed',
        'at 0..5 history hops (the same dataset and batches) on PostgreSQL (a throwaway cluster with fsync on)',
      ),
  );
  take(
    'ledgerCeilingRatioHops63',
    () => round(num(lg, 'ratios.ledgerCeilingRatioHops63', 'ledger'), 5),
    () => ledgerMethod('sqliteHops63', 'at 63 history hops (one card each, its 63 earlier transfers already recorded) on SQLite'),
  );
  const vpcd = at(hw, 'tapLatency.vpcdNoDelay') as { active?: boolean; reason?: string } | undefined;
  take(
    'tapP95MsDefault',
    () => round(num(hw, 'tapLatency.phases.total.p95', 'hardware-tests'), 2),
    () =>
      `p95 (nearest rank) of ${num(hw, 'tapLatency.approved', 'hardware-tests')} approved taps, card detected to outcome (SELECT, the terminal's signed PAY request, the card's PAY, validation, the journal commit), of the simulated firmware card through a private pcscd with vpcd on the machine's default loopback (no network namespace or route change; the TCP_NODELAY shim ${vpcd?.active ? 'active' : `NOT active: ${vpcd?.reason ?? 'unknown'}`}), tapped by a lab terminal's PaymentKernel with dt-pos's default verifier (${String(at(hw, 'tapLatency.verifier'))}) and a SQLite journal; card offline limit ${String(at(hw, 'tapLatency.cardLimits.offlineCount'))} (synced when reached, not timed).`,
  );
  take(
    'handoverBytesHops0',
    () => num(hw, 'handover.bytes.chain0', 'hardware-tests'),
    () =>
      "Encoded size of the Handover a simulated firmware card answered PAY with at its first offline payment (0 history transfers), as it left the card, at a terminal that had taken a payment of another card of the same bank before and so holds the bank's certificate and names it in its request (SPEC §3.6 banks): the chain is [card].",
  );
  take(
    'handoverBytesHops63',
    () => {
      if (at(hw, 'handover.maxChain') !== 63)
        throw new Error(`hardware-tests: handover.maxChain is ${String(at(hw, 'handover.maxChain'))}, not 63`);
      return num(hw, 'handover.bytes.chainMax', 'hardware-tests');
    },
    () =>
      'Encoded size of the Handover a simulated firmware card certified for 64 offline payments answered PAY with at its 64th payment (63 history transfers since its last sync), as it left the card, at the terminal that took its 63 earlier payments: the request names the newest of them (SPEC §3.6 held), so the card leaves the history out (§3.8 after) and the terminal puts it back from its journal before it validates; the complete handover the terminal journals and batches is under headlineDetails.handoverCompleteBytes.',
  );
  const crypto = at(fw, 'cryptoPerPay.method');
  take(
    'cardVerifiesPerPay',
    () => num(fw, 'cryptoPerPay.steadyPay.verifies', 'firmware'),
    () =>
      `ECDSA P-256 verifications the firmware makes in one PAY in the steady state (a later payment at the same terminal), counted in its own code: ${String(crypto)}.`,
  );
  take(
    'cardSignaturesPerPay',
    () => num(fw, 'cryptoPerPay.steadyPay.signatures', 'firmware'),
    () =>
      `ECDSA P-256 signatures the firmware makes in one PAY in the steady state, counted the same way (p256.sign calls of the bundled firmware).`,
  );
  take(
    'firmwarePayMsQuickjs',
    () => num(fw, 'quickjs.payCpu.medianMs', 'firmware'),
    () =>
      `Median CPU time over ${num(fw, 'quickjs.payCpu.runs', 'firmware')} PAYs (a card's first 1..${num(fw, 'quickjs.payCpu.runs', 'firmware')} payments after a LOAD, at one terminal, no power cycle between them, as a device that stays powered; the first, which verifies the terminal's chain, and the second, which prepares the terminal's key in RAM for the later ones, included) of the whole PAY exchange (chained request, terminal chain and request verification, signing, journal commit, GET RESPONSE) with the firmware bundle (dist/firmware.js) running inside QuickJS (quickjs-emscripten), pure-JS P-256: the bench process's user + system time around each PAY, V8 single-threaded so that it is the one thread running QuickJS (CPU time, not wall-clock, because other jobs share the machine: the wall-clock median was ${String(at(fw, 'quickjs.pay.medianMs'))} ms at load average ${JSON.stringify(at(fw, 'loadAverage.before'))}).`,
  );
  const goalsMet = Object.fromEntries(
    HEADLINE_KEYS.filter((k) => headline[k] !== undefined).map((k) => [k, meets(headline[k]!, HEADLINE_GOALS[k])]),
  );
  const complete = HEADLINE_KEYS.every((k) => typeof headline[k] === 'number');
  writeMerged(out, ['headline', 'headlineMethods', 'headlineGoals', 'headlineDetails', 'headlineRun'], {
    ...(complete ? { headline: Object.fromEntries(HEADLINE_KEYS.map((k) => [k, headline[k]])) } : {}),
    ...(complete ? { headlineMethods: Object.fromEntries(HEADLINE_KEYS.map((k) => [k, methods[k]])) } : {}),
    headlineGoals: { goals: HEADLINE_GOALS, met: goalsMet },
    headlineDetails: {
      tapPhasesMs: at(hw, 'tapLatency.phases'),
      vpcdNoDelay: vpcd,
      handoverBytesByChain: at(hw, 'handover.bytesByChain'),
      handoverCompleteBytes: at(hw, 'handover.completeBytes'),
      cardCryptoPerPay: at(fw, 'cryptoPerPay'),
      firmwareNodePayMs: at(fw, 'nodePay.medianMs'),
      firmwareNodePayCpuMs: at(fw, 'nodePayCpu.medianMs'),
      firmwareQuickjsPayWallMs: at(fw, 'quickjs.pay'),
      firmwareQuickjsPayCpuMs: at(fw, 'quickjs.payCpu'),
      firmwareLoadAverage: at(fw, 'loadAverage'),
      ledger: lg === undefined ? undefined : { config: at(lg, 'config'), dataset: at(lg, 'dataset'), runs: at(lg, 'runs') },
    },
    headlineRun: {
      generatedAt: new Date().toISOString(),
      durationSeconds,
      budgetSeconds: 900,
      tiny,
      host: hostInfo(),
      loadAverage: {
        before: loadBefore,
        after: loadavg().map((x) => round(x, 2)),
        note: '1/5/15-minute load averages of the machine (os.loadavg) at the start and the end',
      },
      runs,
      errors,
    },
  });
  process.stderr.write(`\n${'headline'.padEnd(30)}${'measured'.padStart(12)}   goal\n`);
  for (const k of HEADLINE_KEYS) {
    const v = headline[k];
    process.stderr.write(
      `${k.padEnd(30)}${(v === undefined ? 'missing' : String(v)).padStart(12)}   ${HEADLINE_GOALS[k]}${v === undefined ? '' : meets(v, HEADLINE_GOALS[k]) ? '  met' : '  not met'}\n`,
    );
  }
  process.stderr.write(
    `${errors.length ? `errors: ${errors.join('; ')}\n` : ''}headline in ${out} (${durationSeconds} s${durationSeconds > 900 ? ', over the 15-minute budget' : ''})\n`,
  );
  return failed > 0 || !complete ? 1 : 0;
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let only: string[] | undefined;
  let headlineMode = false;
  let out = join(ROOT, 'bench-results.json');
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      return 0;
    } else if (a === '--headline') {
      headlineMode = true;
    } else if (a === '--only' || a.startsWith('--only=')) {
      const v = a === '--only' ? argv[++i] : a.slice(7);
      if (!v) usage('--only needs a comma-separated list of workspaces');
      only = v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    } else if (a === '--out' || a.startsWith('--out=')) {
      const v = a === '--out' ? argv[++i] : a.slice(6);
      if (!v) usage('--out needs a file');
      out = resolve(v);
    } else usage(`unknown argument ${a}`);
  }
  if (headlineMode && only) usage('--only and --headline exclude each other');
  if (headlineMode) return runHeadline(out);
  const all = benchWorkspaces();
  if (only) {
    const unknown = only.filter((w) => !all.includes(w));
    if (unknown.length) usage(`no bench in workspace(s) ${unknown.join(', ')}; workspaces with a bench: ${all.join(', ')}`);
  }
  const list = only ? all.filter((w) => only!.includes(w)) : all;
  const started = performance.now();
  const startedAt = Date.now();
  const runs: { workspace: string; ok: boolean; seconds: number; exitCode: number; error?: string }[] = [];
  const packages: Record<string, unknown> = {};
  const errors: { workspace: string; error: string }[] = [];
  for (const [i, ws] of list.entries()) {
    process.stderr.write(`\n=== [${i + 1}/${list.length}] ${ws}: npm run bench -w ${ws}\n`);
    const t0 = performance.now();
    const code = await runBench(ws);
    const seconds = Math.round((performance.now() - t0) / 100) / 10;
    const file = join(ROOT, ws, 'bench-results.json');
    let error: string | undefined;
    if (code !== 0) error = `npm run bench -w ${ws} exited with code ${code}`;
    else if (!existsSync(file)) error = `${ws}/bench-results.json was not written`;
    else if (statSync(file).mtimeMs < startedAt)
      error = `${ws}/bench-results.json is older than this run (stale): the bench did not write it`;
    else {
      try {
        packages[ws] = JSON.parse(readFileSync(file, 'utf8'));
      } catch (e) {
        error = `${ws}/bench-results.json is not JSON: ${(e as Error).message}`;
      }
    }
    runs.push({ workspace: ws, ok: error === undefined, seconds, exitCode: code, ...(error ? { error } : {}) });
    if (error) errors.push({ workspace: ws, error });
    process.stderr.write(`=== ${ws}: ${error ? `FAILED (${error})` : 'ok'} in ${seconds} s\n`);
  }
  const { summary: head, sources, missing } = summary(packages);
  const durationSeconds = Math.round((performance.now() - started) / 100) / 10;
  writeMerged(out, ['generatedAt', 'durationSeconds', 'host', 'runs', 'summary', 'sources', 'missing', 'errors', 'packages'], {
    generatedAt: new Date().toISOString(),
    durationSeconds,
    host: hostInfo(),
    runs,
    summary: head,
    sources,
    ...(missing.length ? { missing } : {}),
    errors,
    packages,
  });
  const doc = { durationSeconds };
  process.stderr.write(`\n${'workspace'.padEnd(16)}${'result'.padEnd(8)}${'seconds'.padStart(9)}\n`);
  for (const r of runs)
    process.stderr.write(`${r.workspace.padEnd(16)}${(r.ok ? 'ok' : 'FAILED').padEnd(8)}${r.seconds.toFixed(1).padStart(9)}\n`);
  const lat = head.tapLatencyMs as Record<string, { p95: number }> | undefined;
  if (lat?.total)
    process.stderr.write(`\ntap-to-outcome p95 ${lat.total.p95} ms (goal < 150 ms: ${head.tapGoalP95Met ? 'met' : 'not met'})\n`);
  process.stderr.write(
    `${errors.length ? `${errors.length} bench(es) FAILED; ` : ''}results of ${Object.keys(packages).length} package(s) in ${out} (${doc.durationSeconds} s)\n`,
  );
  return errors.length ? 1 : 0;
}

process.exitCode = await main();
