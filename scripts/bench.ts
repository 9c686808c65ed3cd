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
 *   headline: { tapLatencyMs, tapGoalP95Met, handoverBytes, verifyUs, ledgerSettledPerSec, ... },
 *   sources: { <headline key>: 'packages.<ws>.<path>' }, errors: [...] }
 * ```
 *
 * Only results written by THIS run are gathered (a file older than the run
 * is stale and is not taken). A failing package bench fails the run (exit 1),
 * but the file is still written with what there is and the error noted.
 *
 * Usage: node --conditions=dt-source --import tsx scripts/bench.ts [--only ws1,ws2] [--out FILE] [--help]
 * Exit codes: 0 all benches ran, 1 a bench failed, 2 bad usage.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));

const HELP = `npm run bench [-- options]

Runs every workspace's benchmark (npm run bench -w <ws>), sequentially, and
gathers their bench-results.json files into one root bench-results.json with
a headline of the key figures (tap latency per phase, handover sizes,
verification time, ledger settlement rate, protocol operations).

Options:
  --only WS[,WS...]  run only these workspaces (e.g. --only hardware-tests,protocol)
  --out FILE         output file (default bench-results.json at the repository root)
  --help             this help

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
 * The headline: key figures picked from the package files, each with the
 * path it came from (`sources`). A figure whose package did not run (or
 * whose file lacks it) is absent and listed in `missing`.
 */
function headline(packages: Record<string, unknown>): { headline: Record<string, unknown>; sources: Record<string, string>; missing: string[] } {
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
  take('verifyUs', "packages['hardware-tests'].verification.<native|noble>.<chain0|chain1|chainMax>.medianUs (median per handover, µs)", verify);

  const runs = at(packages.ledger, 'runs') as { backend: string; transfers: number; transfersPerSecond: number }[] | undefined;
  if (Array.isArray(runs)) {
    const settled: Record<string, Record<string, number>> = {};
    for (const r of runs) (settled[r.backend] ??= {})[String(r.transfers)] = Math.round(r.transfersPerSecond);
    take('ledgerSettledPerSec', 'packages.ledger.runs[].transfersPerSecond by backend and transfer count', settled);
  } else missing.push('ledgerSettledPerSec');
  take('ledgerNativeVerifyCeilingPerSec', 'packages.ledger.nativeVerify.ceiling', at(packages.ledger, 'nativeVerify.ceiling'));
  take('acquirerHandoversPerSec', 'packages.acquirer.handoversPerSecond', at(packages.acquirer, 'handoversPerSecond'));
  take('acquirerBatch1000MedianMs', 'packages.acquirer.medianTotalMs', at(packages.acquirer, 'medianTotalMs'));
  take('firmwarePayMedianMs', 'packages.firmware.{nodePay,quickjs.pay}.medianMs', Object.fromEntries(
    [['node', at(packages.firmware, 'nodePay.medianMs')], ['quickjs', at(packages.firmware, 'quickjs.pay.medianMs')]].filter(([, v]) => v !== undefined),
  ));
  take('firmwareBundleBytes', 'packages.firmware.bundle.{bytes,gzipBytes}', at(packages.firmware, 'bundle') === undefined ? undefined : { raw: at(packages.firmware, 'bundle.bytes'), gzip: at(packages.firmware, 'bundle.gzipBytes') });
  const ops = at(packages.protocol, 'results') as { name: string; opsPerSec: number }[] | undefined;
  take('protocolOpsPerSec', 'packages.protocol.results[].opsPerSec by name', Array.isArray(ops) ? Object.fromEntries(ops.map((o) => [o.name, Math.round(o.opsPerSec)])) : undefined);
  return { headline: h, sources, missing };
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

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let only: string[] | undefined;
  let out = join(ROOT, 'bench-results.json');
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      return 0;
    } else if (a === '--only' || a.startsWith('--only=')) {
      const v = a === '--only' ? argv[++i] : a.slice(7);
      if (!v) usage('--only needs a comma-separated list of workspaces');
      only = v.split(',').map((s) => s.trim()).filter(Boolean);
    } else if (a === '--out' || a.startsWith('--out=')) {
      const v = a === '--out' ? argv[++i] : a.slice(6);
      if (!v) usage('--out needs a file');
      out = resolve(v);
    } else usage(`unknown argument ${a}`);
  }
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
    else if (statSync(file).mtimeMs < startedAt) error = `${ws}/bench-results.json is older than this run (stale): the bench did not write it`;
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
  const { headline: head, sources, missing } = headline(packages);
  const doc = {
    format: 'dt-bench-results',
    generatedAt: new Date().toISOString(),
    durationSeconds: Math.round((performance.now() - started) / 100) / 10,
    host: { cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', memoryMb: Math.round(totalmem() / 1048576), node: process.version, platform: `${process.platform}-${process.arch}` },
    runs,
    headline: head,
    sources,
    ...(missing.length ? { missing } : {}),
    errors,
    packages,
  };
  const tmp = `${out}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(doc, null, 2) + '\n');
  renameSync(tmp, out);
  process.stderr.write(`\n${'workspace'.padEnd(16)}${'result'.padEnd(8)}${'seconds'.padStart(9)}\n`);
  for (const r of runs) process.stderr.write(`${r.workspace.padEnd(16)}${(r.ok ? 'ok' : 'FAILED').padEnd(8)}${r.seconds.toFixed(1).padStart(9)}\n`);
  const lat = head.tapLatencyMs as Record<string, { p95: number }> | undefined;
  if (lat?.total) process.stderr.write(`\ntap-to-outcome p95 ${lat.total.p95} ms (goal < 150 ms: ${head.tapGoalP95Met ? 'met' : 'not met'})\n`);
  process.stderr.write(`${errors.length ? `${errors.length} bench(es) FAILED; ` : ''}results of ${Object.keys(packages).length} package(s) in ${out} (${doc.durationSeconds} s)\n`);
  return errors.length ? 1 : 0;
}

process.exitCode = await main();
