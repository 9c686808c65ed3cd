/**
 * The ledger's headline figures (`npm run bench -- --headline` runs this):
 * settled transfers per second through the settlement code and configuration
 * `dt-ledger serve` runs, divided by the native P-256 verifications per
 * second the same cores do in the same run.
 *
 * - The ledger is opened by the function `serve` opens it with (ledger/src/cli.ts
 *   `openServeLedger`, serve's default `--validators` (`defaultValidators`: one
 *   validator worker thread per core on PostgreSQL, and on SQLite from 4 cores,
 *   `createValidatorPool`; none on SQLite below: the main thread validates), then `Ledger.open({ storage,
 *   signer: nativeSigner(ledger key), rootCert, ledgerCert[, validator: pool] })`)
 *   over `openSqliteStorage(file)` (WAL, synchronous=FULL, on disk) or
 *   `openPostgresStorage(config)`, default void window. Batches go to
 *   `Ledger.settle` exactly as the server's `POST /v1/settle` hands them over
 *   (in-process: the HTTP layer is not measured), in settle calls grouped as
 *   the acquirer's forwarder groups them.
 * - State before measuring (`headline-dataset.ts`): at least `--cards` active
 *   cards and `--spent-rows` rows in the spent set; the measured cards are
 *   real (registered, loaded, synced and their earlier payments settled
 *   through the ledger's API), the rest is added in bulk at the storage level.
 *   The dataset is built in this process, so the protocol's per-thread key
 *   caches (parsed card keys, curve-point answers) are cleared before each run:
 *   a server among 100k cards has not just parsed the measured cards' keys.
 * - Measured: `--mixed` real, fully signed handovers at 0..5 history hops
 *   (evenly mixed, one card each, from `--terminals` terminals in batches of
 *   `--batch`), on SQLite and on PostgreSQL (a throwaway cluster with fsync,
 *   as the ledger's tests start one); `--hops63` handovers at 63 hops on
 *   SQLite. Only the `settle` calls are timed; every outcome must be a
 *   ledger-signed SETTLED and the supply audit must hold afterwards.
 * - The ceiling: one worker thread per core verifying with the ledger's
 *   `nativeVerifier`, all at once, for `--ceiling-seconds`, measured right
 *   before each settlement run (the machine is shared: the ratio compares
 *   figures taken under the same load).
 *
 * Usage: node --conditions=dt-source --import tsx ledger/bench/headline.ts [--cards N] [--spent-rows N]
 *        [--mixed N] [--hops63 N] [--terminals N] [--batch N] [--ceiling-seconds S] [--out FILE]
 * Exit codes: 0 written, 1 the benchmark failed, 2 bad usage.
 *
 * @module
 */
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { accessSync, constants, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { Session } from 'node:inspector/promises';
import { clearPublicKeyMemo, OutcomeStatus, verifySigned } from '@dt/protocol';
import { clearNativeKeyCache, nativeVerifier } from '@dt/protocol/native';
import type { Ledger } from '../src/ledger.ts';
import { defaultValidators, openServeLedger } from '../src/cli.ts';
import type { ValidatorPool } from '../src/pool.ts';
import { openSqliteStorage } from '../src/storage/sqlite.ts';
import { openPostgresStorage } from '../src/storage/postgres.ts';
import { startPgCluster, type PgCluster } from '../src/pg-cluster.ts';
import type { LedgerStorage } from '../src/storage/types.ts';
import {
  buildDataset,
  fillBuiltSqlite,
  fillPostgres,
  installPostgres,
  installSqliteFile,
  tableRows,
  type Dataset,
  type Fill,
  type Workload,
} from './headline-dataset.ts';
import { benchArgs, closeAll } from './args.ts';

const HELP = `node --conditions=dt-source --import tsx ledger/bench/headline.ts [options]

Settled transfers/s through the ledger as dt-ledger serve runs it, divided by
the native P-256 verifies/s of all cores, measured in the same run: SQLite and
PostgreSQL at 0..5 history hops, SQLite at 63 hops. Writes JSON.

Options:
  --cards N            active cards before measuring (default 100000)
  --spent-rows N       rows in the spent set before measuring (default 1000000)
  --mixed N            measured handovers at 0..5 hops, per backend (default 3000)
  --hops63 N           measured handovers at 63 hops, SQLite (default 150)
  --terminals N        terminals the payments are spread over (default 200)
  --batch N            handovers per terminal batch (default 50)
  --ceiling-seconds S  duration of each verify-ceiling measurement (default 3)
  --only BACKEND       measure only sqlite (mixed and 63 hops) or only postgres
                       (for profiling; the headline runs both)
  --profile DIR        write a V8 CPU profile of each run's settle calls to DIR,
                       created if missing (the main thread's; the validator
                       threads are not in it)
  --validators N       validator threads (default: dt-ledger serve's default
                       --validators: one per core on PostgreSQL; on SQLite one
                       per core from 4 cores, else 0: the main thread
                       validates). For comparisons: the headline runs the
                       default
  --out FILE           output (default ledger/bench-headline.json)
  --help               this help

Exit codes: 0 written, 1 benchmark failed, 2 bad usage.
`;

const {
  values: args,
  usage,
  int,
} = benchArgs('headline', HELP, {
  cards: { type: 'string' },
  'spent-rows': { type: 'string' },
  mixed: { type: 'string' },
  hops63: { type: 'string' },
  terminals: { type: 'string' },
  batch: { type: 'string' },
  'ceiling-seconds': { type: 'string' },
  out: { type: 'string' },
  only: { type: 'string' },
  profile: { type: 'string' },
  validators: { type: 'string' },
});
/** `--ceiling-seconds`: a number of seconds, not necessarily whole. */
const seconds = (v: string | undefined, def: number, min: number): number => {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) usage(`--ceiling-seconds must be a number >= ${min}, got ${v}`);
  return n;
};
const CARDS = int(args.cards, 'cards', 100_000, 1);
const SPENT = int(args['spent-rows'], 'spent-rows', 1_000_000, 0);
const MIXED = int(args.mixed, 'mixed', 3000, 6);
const HOPS63 = int(args.hops63, 'hops63', 150, 1);
const TERMINALS = int(args.terminals, 'terminals', 200, 1);
const BATCH = int(args.batch, 'batch', 50, 1);
const CEILING_SECONDS = seconds(args['ceiling-seconds'], 3, 0.2);
const ONLY = args.only;
if (ONLY !== undefined && ONLY !== 'sqlite' && ONLY !== 'postgres') usage(`--only must be sqlite or postgres, got ${ONLY}`);
const PROFILE = args.profile;
// Created before anything is measured: a profile directory that cannot be written fails now, not after the runs.
if (PROFILE !== undefined) {
  try {
    mkdirSync(PROFILE, { recursive: true });
    accessSync(PROFILE, constants.W_OK);
  } catch (e) {
    usage(`--profile ${PROFILE}: cannot write there (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}
const OUT = args.out ?? new URL('../bench-headline.json', import.meta.url).pathname;
if (MIXED + HOPS63 > CARDS) usage('--cards must be at least --mixed + --hops63 (the measured cards are among the active ones)');

const log = (s: string): void => void process.stderr.write(`[headline] ${s}\n`);
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

/** Native P-256 verifies per second of all cores together, right now. */
async function verifyCeiling(seconds: number): Promise<{ perSecond: number; workers: number; seconds: number }> {
  const n = availableParallelism();
  const workers = Array.from(
    { length: n },
    () => new Worker(new URL('./verify-ceiling.mjs', import.meta.url), { workerData: { seconds } }),
  );
  try {
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((res, rej) => {
            w.once('message', () => res());
            w.once('error', rej);
          }),
      ),
    );
    const done = workers.map(
      (w) =>
        new Promise<{ verifies: number; seconds: number }>((res, rej) => {
          w.once('message', res);
          w.once('error', rej);
        }),
    );
    for (const w of workers) w.postMessage('go');
    const r = await Promise.all(done);
    return { perSecond: r.reduce((s, x) => s + x.verifies / x.seconds, 0), workers: n, seconds };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

/** Validator threads over `storage`: `dt-ledger serve`'s default `--validators` for it (cli.ts `defaultValidators`) unless `--validators` says otherwise. */
const VALIDATORS_ARG = args.validators === undefined ? undefined : int(args.validators, 'validators', 0, 0);
const validatorsFor = (storage: LedgerStorage['kind']): number => VALIDATORS_ARG ?? defaultValidators(storage);
const describeValidators = (storage: LedgerStorage['kind']): string => {
  const n = validatorsFor(storage);
  return `${VALIDATORS_ARG === undefined ? "serve's default " : ''}--validators ${n}: ${n > 0 ? `${n} validator worker threads (createValidatorPool: validation and evidence on the workers)` : 'validation in the main thread'}`;
};

/**
 * The ledger exactly as `dt-ledger serve` opens it (ledger/src/cli.ts `openServeLedger`, serve's
 * default `--validators`), over `storage`. Its pool is closed after the run; the storage is kept.
 */
async function openAsServe(ds: Dataset, storage: LedgerStorage): Promise<{ ledger: Ledger; pool?: ValidatorPool }> {
  const { ledger, pool } = await openServeLedger({
    storage,
    ledgerKeys: ds.pki.ledger.keys,
    rootCert: ds.pki.issuer.cert,
    ledgerCert: ds.pki.ledger.cert,
    validators: validatorsFor(storage.kind),
  });
  return { ledger, ...(pool ? { pool } : {}) };
}

/**
 * One settle call as the server makes it: `POST /v1/settle` decodes the CBOR
 * array of batches and calls `ledger.settle(batches)`. (Kept in one place: the
 * settle API is the seam a change to settlement would move.)
 */
function settleAsServer(ledger: Ledger, batches: readonly Uint8Array[]): Promise<Uint8Array[][]> {
  return ledger.settle(batches);
}

interface Run {
  readonly backend: 'sqlite' | 'postgres';
  readonly hops: string;
  readonly handovers: number;
  readonly byHops: Readonly<Record<string, number>>;
  readonly meanHandoverBytes: number;
  readonly settleCalls: number;
  readonly settled: number;
  readonly seconds: number;
  readonly settledPerSecond: number;
  /** Native signature verifications the validator threads performed, per settled transfer (with a pool). */
  readonly validatorVerifiesPerSettled?: number;
  /** Process CPU time (all threads: main and validators) over the settle calls, per settled transfer. */
  readonly cpuMicrosPerSettled: number;
  readonly verifyCeiling: { perSecond: number; workers: number; seconds: number };
  readonly ratio: number;
  readonly rowsBefore: { spent: number; cards: number };
  readonly auditOk: boolean;
  /** Handovers the ledger validated from the card's recorded chain head on (SPEC §7.7 resumed chains). */
  readonly resumedChains: number;
}

/** Settles `w` on a fresh serve-configured ledger over `storage`; times only the settle calls. */
async function measure(ds: Dataset, storage: LedgerStorage, backend: Run['backend'], hops: string, w: Workload): Promise<Run> {
  const rowsBefore = await tableRows(storage);
  // The dataset was built in this process: forget the card keys it parsed, as a server among 100k cards has not seen them.
  clearNativeKeyCache();
  clearPublicKeyMemo();
  const { ledger, pool } = await openAsServe(ds, storage);
  try {
    const run = await measureOn(ds, backend, hops, w, ledger, rowsBefore);
    if (!pool) return run;
    // Native verifications the validator threads performed and answered from their memo (facts are neither).
    const st = await pool.stats();
    log(`${backend} ${hops}: validator threads: ${(st.verifies / run.settled).toFixed(2)} native verifies per settled transfer`);
    return { ...run, validatorVerifiesPerSettled: r3(st.verifies / run.settled) };
  } finally {
    await pool?.close();
  }
}

async function measureOn(
  ds: Dataset,
  backend: Run['backend'],
  hops: string,
  w: Workload,
  ledger: Ledger,
  rowsBefore: Run['rowsBefore'],
): Promise<Run> {
  log(`${backend} ${hops}: verify ceiling (${availableParallelism()} workers, ${CEILING_SECONDS} s)`);
  const ceiling = await verifyCeiling(CEILING_SECONDS);
  log(
    `${backend} ${hops}: ceiling ${ceiling.perSecond.toFixed(0)} verifies/s; settling ${w.handovers} handovers in ${w.calls.length} settle calls`,
  );
  const ledgerKey = ds.pki.ledger.keys.publicKey;
  let ms = 0;
  let cpu = 0;
  let settled = 0;
  const profiler = PROFILE ? new Session() : undefined;
  if (profiler) {
    profiler.connect();
    await profiler.post('Profiler.enable');
    await profiler.post('Profiler.start');
  }
  const outs: Uint8Array[][][] = [];
  let count = 0;
  for (const [i, call] of w.calls.entries()) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const out = await settleAsServer(ledger, call);
    ms += performance.now() - t0;
    const c = process.cpuUsage(c0);
    cpu += c.user + c.system;
    outs.push(out);
    count += out.reduce((s, b) => s + b.length, 0);
    if ((i + 1) % Math.max(1, Math.floor(w.calls.length / 5)) === 0)
      log(`  ${count}/${w.handovers} answered, ${(count / (ms / 1000)).toFixed(0)}/s`);
  }
  if (profiler) {
    const { profile } = await profiler.post('Profiler.stop');
    const f = join(PROFILE!, `headline-${backend}-${hops === '63' ? 'hops63' : 'mixed'}-${process.pid}.cpuprofile`);
    writeFileSync(f, JSON.stringify(profile));
    profiler.disconnect();
    log(`${backend} ${hops}: CPU profile of the settle calls in ${f}`);
  }
  // Checked outside the timed part: every outcome is the ledger's signature on SETTLED.
  for (const out of outs) {
    for (const batch of out) {
      for (const o of batch) {
        const m = verifySigned('Outcome', o, ledgerKey, nativeVerifier).message;
        if (m.status !== OutcomeStatus.SETTLED)
          throw new Error(`${backend} ${hops}: outcome ${m.status} ${m.code ?? ''} instead of SETTLED`);
        settled++;
      }
    }
  }
  if (settled !== w.handovers) throw new Error(`${backend} ${hops}: ${settled} settled of ${w.handovers}`);
  const audit = await ledger.audit();
  if (!audit.ok) throw new Error(`${backend} ${hops}: supply invariant failed after settlement (difference ${audit.difference})`);
  const perSecond = settled / (ms / 1000);
  log(`${backend} ${hops}: ${(cpu / settled).toFixed(0)} µs CPU (all threads) per settled transfer`);
  log(`${backend} ${hops}: ${perSecond.toFixed(0)} settled/s = ${((100 * perSecond) / ceiling.perSecond).toFixed(2)}% of the ceiling`);
  log(`${backend} ${hops}: ${ledger.stats.resumedChains} of ${settled} chains validated from the recorded chain head`);
  return {
    backend,
    hops,
    handovers: w.handovers,
    byHops: w.byHops,
    meanHandoverBytes: w.meanHandoverBytes,
    settleCalls: w.calls.length,
    settled,
    seconds: r3(ms / 1000),
    settledPerSecond: r3(perSecond),
    cpuMicrosPerSettled: r3(cpu / settled),
    verifyCeiling: { ...ceiling, perSecond: r3(ceiling.perSecond) },
    ratio: perSecond / ceiling.perSecond,
    rowsBefore,
    auditOk: audit.ok,
    resumedChains: ledger.stats.resumedChains,
  };
}

async function main(): Promise<Record<string, unknown>> {
  const started = performance.now();
  const closers: (() => unknown)[] = [];
  try {
    log(
      `dataset: ${MIXED} mixed + ${HOPS63} 63-hop measured cards through the ledger's API; bulk to ${CARDS} cards and ${SPENT} spent rows`,
    );
    const ds = await buildDataset({ mixed: MIXED, hops63: HOPS63, terminals: TERMINALS, batchSize: BATCH, log });
    closers.push(() => ds.dispose());
    const target = { cards: CARDS, spentRows: SPENT };
    const fills: Record<string, Fill> = {};

    // PostgreSQL first gets the real part (a throwaway cluster with fsync on, as the ledger's tests and
    // bench start one), then its bulk part server-side.
    let pg: LedgerStorage | undefined;
    if (ONLY !== 'sqlite') {
      log('postgres: starting a throwaway cluster');
      const cluster: PgCluster = startPgCluster({ fsync: true });
      closers.push(() => cluster.stop());
      const storage = await openPostgresStorage(cluster.createDatabase(`headline_${process.pid}`));
      pg = storage;
      closers.push(() => storage.close());
      await installPostgres(ds, storage, log);
      fills.postgres = await fillPostgres(storage, ds, target);
      log(
        `postgres: bulk part: ${fills.postgres.cards} cards, ${fills.postgres.transfers} transfers in ${fills.postgres.seconds.toFixed(0)} s`,
      );
    }

    // SQLite: the bulk part goes into the built file on tmpfs, which is then copied to disk and
    // fsynced, and opened as serve opens it.
    let sqliteMixed: Run | undefined;
    let sqlite63: Run | undefined;
    if (ONLY !== 'postgres') {
      fills.sqlite = await fillBuiltSqlite(ds, target);
      log(`sqlite: bulk part: ${fills.sqlite.cards} cards, ${fills.sqlite.transfers} transfers in ${fills.sqlite.seconds.toFixed(0)} s`);
      const dir = mkdtempSync(join(tmpdir(), 'dt-headline-sqlite-'));
      closers.push(() => rmSync(dir, { recursive: true, force: true }));
      const file = join(dir, 'ledger.db');
      installSqliteFile(ds, file);
      const sqlite = openSqliteStorage(file);
      closers.push(() => sqlite.close());
      sqliteMixed = await measure(ds, sqlite, 'sqlite', '0..5', ds.mixed);
      // The same database, a fresh ledger: the 63-hop cards are others, none of it is in memory.
      sqlite63 = await measure(ds, sqlite, 'sqlite', '63', ds.hops63);
      await sqlite.close();
      closers.pop();
    }

    const pgMixed = pg ? await measure(ds, pg, 'postgres', '0..5', ds.mixed) : undefined;

    return {
      tool: '@dt/ledger headline bench',
      date: new Date().toISOString(),
      host: { node: process.version, cores: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown' },
      config: {
        cards: CARDS,
        spentRows: SPENT,
        mixed: MIXED,
        hops63: HOPS63,
        terminals: TERMINALS,
        batchSize: BATCH,
        ceilingSeconds: CEILING_SECONDS,
        ledger: `as dt-ledger serve opens it (cli.ts openServeLedger): Ledger.open({ storage, signer: nativeSigner(ledger key), rootCert, ledgerCert[, validator: pool] }), default void window; batches handed to Ledger.settle in-process as POST /v1/settle does; SQLite with ${describeValidators('sqlite')}; PostgreSQL with ${describeValidators('postgres')}`,
        sqlite: 'openSqliteStorage(file): WAL, synchronous=FULL, 64 MiB page cache, 1 GiB mmap, file on disk (os.tmpdir())',
        postgres: 'openPostgresStorage over a throwaway cluster (startPgCluster, fsync on, unix socket)',
        settleCalls:
          "terminal batches shuffled across terminals, at most 32 batches / 2,000 handovers / 16 MiB a call (the acquirer forwarder's limits)",
      },
      dataset: {
        realCards: ds.realCards,
        priorTransfers: ds.priorTransfers,
        buildSeconds: r3(ds.buildSeconds),
        bulk: fills,
        note: 'measured cards built through the ledger API (register, load, sync, earlier payments settled); the other active cards and the historical spent-set rows inserted in bulk at the storage level (ledger/bench/headline-dataset.ts)',
      },
      runs: { sqliteMixed, sqliteHops63: sqlite63, postgresMixed: pgMixed },
      ratios: {
        ledgerSqliteCeilingRatio: sqliteMixed?.ratio,
        ledgerPostgresCeilingRatio: pgMixed?.ratio,
        ledgerCeilingRatioHops63: sqlite63?.ratio,
      },
      durationSeconds: r3((performance.now() - started) / 1000),
    };
  } finally {
    await closeAll(closers, log);
  }
}

let exit = 0;
try {
  const doc = await main();
  const tmp = `${OUT}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(doc, null, 2) + '\n');
  renameSync(tmp, OUT);
  const r = doc.ratios as Record<string, number | undefined>;
  const f = (x: number | undefined) => (x === undefined ? 'not measured' : x.toFixed(4));
  log(
    `ratios: sqlite ${f(r.ledgerSqliteCeilingRatio)}, postgres ${f(r.ledgerPostgresCeilingRatio)}, sqlite 63 hops ${f(r.ledgerCeilingRatioHops63)}; results in ${OUT} (${doc.durationSeconds} s)`,
  );
} catch (e) {
  process.stderr.write(`headline failed: ${(e as Error).stack ?? String(e)}\n`);
  exit = 1;
}
process.exit(exit);
