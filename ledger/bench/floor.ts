/**
 * The floor under settlement: what the storage alone costs per settled transfer, and the
 * settled/s ÷ verify-ceiling ratio that floor allows at the most, on this machine, now.
 *
 * The headline (headline.ts) measures settlement as a whole. This says which part of the goal
 * (ledgerSqliteCeilingRatio ≥ 0.40) the storage leaves, whatever the JavaScript around it does:
 *
 * - `current`: the rows and reads the ledger's set-based path (`Ledger.#settleAllValid`) does for
 *   a batch of new paying transfers at 0 hops, one input each, through the ledger's own
 *   `LedgerStore` / `StoreTx` over `openSqliteStorage` (the schema of `LEDGER_MIGRATIONS`, WAL,
 *   synchronous=FULL, the background checkpointer): reads of chain heads, cards, verdicts,
 *   transfers, counter and input holders; writes of the counter and input claims, the evidence
 *   object, the value record, the verdict, the outcome, the chain head, the merchant credit and
 *   the batch. About 7 B-tree writes at random keys per transfer (every table with a BLOB
 *   primary key is a rowid table plus its key's index; the rowid tables themselves grow at their end).
 * - `rowless`: the same statements through the same `LedgerStore`, in a second database whose
 *   small-row tables settlement writes are `WITHOUT ROWID` (one B-tree a table, keyed by its
 *   primary key; `ROWLESS_TABLES`): what a migration of those tables alone would give.
 * - `minimal`: a minimal relational design of a spent-once check, in the first database and connection:
 *   one claim per counter and per input in a `WITHOUT ROWID` table keyed (card, id) naming the
 *   transfer (a replay finds its own claims), one append-only log row (transfer and outcome
 *   bytes, rowid order: no random key) and the card's head. 3 random-key writes.
 * - `clustered`: every fact today's rows hold, clustered by card, in the first database and
 *   connection: one `WITHOUT ROWID` table keyed (card, k) holds the card's chain head (k = 0x00),
 *   a row per transfer keyed by its counter (k = 0x01 || counter: its hash, value record and
 *   verdict, and where its bytes and outcome are in the log) and a row per input claim (k = 0x02
 *   || id); the transfer and outcome bytes go to the append-only log, the outcomes of a batch to
 *   today's `outcomes`, the batch to `batches`, the credit to `merchants`; the cards' anchors
 *   are read from `cards`. Lookups go by (card, counter), not by hash. A card's rows sit side by
 *   side, so a transfer writes about one random page, not seven: what a migration that keeps
 *   today's information would give.
 * - `sign`: one ledger Outcome signature (`nativeSigner`), which every settled transfer costs
 *   today, and `verify`: one native verification on one core (the card's signature).
 *
 * - `--pg`: `current`, `minimal` and `clustered` on PostgreSQL too (a throwaway cluster with fsync on, filled
 *   server-side); the CPU figure there is the whole machine's, the server's processes included.
 *
 * The tables are filled first with `--rows` random-key rows each (and `--cards` cards and heads),
 * so the B-trees are as deep as the headline's. Figures are CPU µs of the whole process (the
 * checkpointer thread included) and wall µs per transfer over `--transfers` transfers in
 * transactions of `--batch`.
 *
 * The bound: with both cores and nothing but verify, sign and storage, a transfer costs
 * verify + sign + storage µs of CPU; the storage runs on the one writer thread, so
 * settled/s ≤ min(cores ÷ that, 1 s ÷ the storage's wall time) (outcomes are signed in node:crypto's thread pool).
 * ratio ≤ that ÷ (cores ÷ verify µs). Written to JSON (`--out`).
 *
 * Usage: node --conditions=dt-source --import tsx ledger/bench/floor.ts [--rows N] [--cards N]
 *        [--transfers N] [--batch N] [--pg] [--out FILE]
 * Exit codes: 0 written, 1 the benchmark failed, 2 bad usage.
 *
 * @module
 */
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { generateKeyPair, sign } from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import { openSqliteStorage } from '../src/storage/sqlite.ts';
import { openPostgresStorage } from '../src/storage/postgres.ts';
import { startPgCluster } from '../src/pg-cluster.ts';
import { LEDGER_MIGRATIONS } from '../src/storage/migrations.ts';
import { LedgerStore, StoreTx } from '../src/store.ts';
import { nativeSigner } from '../src/native-signer.ts';
import type { LedgerStorage, SqlValue } from '../src/storage/types.ts';
import { benchArgs, closeAll } from './args.ts';

const HELP = `node --conditions=dt-source --import tsx ledger/bench/floor.ts [options]

What the ledger's storage alone costs per settled transfer (SQLite, as serve
opens it): the rows the set-based settlement writes today, the same with its
small-row tables WITHOUT ROWID, a minimal spent-once design, and today's facts
clustered by card (one table keyed by card, the bytes in an append-only log);
with one verify and one outcome signature, the ceiling ratio that leaves at
the most. Writes JSON.

Options:
  --rows N       random-key rows in each settlement table first (default 1000000)
  --cards N      cards and chain heads first (default 100000)
  --transfers N  measured transfers per variant (default 20000)
  --batch N      transfers per transaction (default 1600, a settle call)
  --pg           also today's rows, the minimal and the clustered design on
                 PostgreSQL (a throwaway cluster with fsync on; CPU counted
                 for the whole machine, the server's processes included)
  --out FILE     output (default ledger/bench-floor.json)
  --help         this help

Exit codes: 0 written, 1 benchmark failed, 2 bad usage.
`;

const {
  values: args,
  int,
  usage,
} = benchArgs('floor', HELP, {
  rows: { type: 'string' },
  cards: { type: 'string' },
  transfers: { type: 'string' },
  batch: { type: 'string' },
  out: { type: 'string' },
  pg: { type: 'boolean' },
});
const ROWS = int(args.rows, 'rows', 1_000_000, 0);
const CARDS = int(args.cards, 'cards', 100_000, 1);
const TRANSFERS = int(args.transfers, 'transfers', 20_000, 1);
const BATCH = int(args.batch, 'batch', 1600, 1);
// Each transfer of a transaction is another card's (the ledger moves a card's chain head once per batch).
if (BATCH > CARDS) usage(`--batch must be at most --cards (${CARDS}): a transaction's transfers are of distinct cards`);
const PG = args.pg === true;
const OUT = args.out ?? new URL('../bench-floor.json', import.meta.url).pathname;
const log = (s: string): void => void process.stderr.write(`[floor] ${s}\n`);
const r1 = (x: number): number => Math.round(x * 10) / 10;

const rnd = (n: number): Buffer => randomBytes(n);
/**
 * The `clustered` variant's tables: a card's rows in one table keyed (card, k) (`WITHOUT ROWID` on
 * SQLite: the rows themselves in key order), the bytes in an append-only log.
 */
function clusteredSchema(rowless: string, int: string): string[] {
  return [
    `CREATE TABLE floor_card (card BLOB NOT NULL, k BLOB NOT NULL, hash BLOB NOT NULL, counter ${int}, amount ${int}, payee BLOB, time ${int},
       state TEXT, status ${int}, seq ${int}, head BLOB, PRIMARY KEY (card, k))${rowless}`,
    `CREATE TABLE floor_bytes (seq ${int} PRIMARY KEY, transfer BLOB NOT NULL, outcome BLOB NOT NULL)`,
  ];
}
/** The `clustered` keys: a card's head, a transfer by its counter, an input claim by its id. */
const HEAD_KEY = Buffer.from([0]);
const transferKey = (counter: number): Buffer => {
  const k = Buffer.alloc(5);
  k[0] = 1;
  k.writeUInt32BE(counter, 1);
  return k;
};
const inputKey = (id: Buffer): Buffer => Buffer.concat([Buffer.from([2]), id]);
const MINIMAL_SCHEMA = [
  `CREATE TABLE floor_claims (card BLOB NOT NULL, id BLOB NOT NULL, by_hash BLOB NOT NULL, PRIMARY KEY (card, id)) WITHOUT ROWID`,
  `CREATE TABLE floor_log (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, transfer BLOB NOT NULL, outcome BLOB NOT NULL)`,
  `CREATE TABLE floor_heads (card BLOB PRIMARY KEY, counter INTEGER NOT NULL, hash BLOB NOT NULL, state BLOB) WITHOUT ROWID`,
  ...clusteredSchema(' WITHOUT ROWID', 'INTEGER'),
];
/** The ledger's migrations and one more with the minimal tables (in the same file, so the same connection serves both). */
const MIGRATIONS = [
  ...LEDGER_MIGRATIONS,
  { version: LEDGER_MIGRATIONS.length + 1, description: 'the floor bench: the minimal tables', statements: MINIMAL_SCHEMA },
];
/** The minimal tables on PostgreSQL: the same keys (a heap and a B-tree index a table; the log's key grows at its end). */
const MINIMAL_SCHEMA_PG = [
  `CREATE TABLE floor_claims (card BLOB NOT NULL, id BLOB NOT NULL, by_hash BLOB NOT NULL, PRIMARY KEY (card, id))`,
  `CREATE TABLE floor_log (seq BIGINT PRIMARY KEY, hash BLOB NOT NULL, transfer BLOB NOT NULL, outcome BLOB NOT NULL)`,
  `CREATE TABLE floor_heads (card BLOB PRIMARY KEY, counter BIGINT NOT NULL, hash BLOB NOT NULL, state BLOB)`,
  ...clusteredSchema('', 'BIGINT'),
];
const PG_MIGRATIONS = [
  ...LEDGER_MIGRATIONS,
  { version: LEDGER_MIGRATIONS.length + 1, description: 'the floor bench: the minimal tables', statements: MINIMAL_SCHEMA_PG },
];
/**
 * The ledger's tables that settlement writes whose rows are small (under about 200 bytes, a
 * twentieth of a page, where SQLite's documentation finds `WITHOUT ROWID` pays), as `WITHOUT
 * ROWID` tables (the `rowless` variant): the same columns, keys and statements, one B-tree a table
 * instead of the rowid table and its key's index. `objects` and `outcomes` (a signed object's
 * bytes a row) stay rowid tables.
 */
const ROWLESS_TABLES = new Set(['spent', 'counters', 'transfers', 'verdicts', 'chain_heads', 'batches', 'merchants']);
const ROWLESS_MIGRATIONS = MIGRATIONS.map((m) => ({
  ...m,
  statements: m.statements.map((st) => {
    const name = /^\s*CREATE TABLE (?:IF NOT EXISTS )?(\w+) \(/.exec(st)?.[1];
    return name && ROWLESS_TABLES.has(name) ? `${st.trimEnd()} WITHOUT ROWID` : st;
  }),
}));
/** Sizes of the headline dataset's rows (bytes): a transfer object, an outcome, a chain state. */
const SIZE = { transfer: 330, outcome: 180, state: 120 };

/** Fills the ledger tables and the minimal ones of `file` with random-key rows, in one transaction each. */
function fill(file: string, cards: Buffer[]): void {
  const db = new Database(file);
  db.pragma('synchronous = OFF');
  db.pragma('cache_size = -262144');
  const now = Date.now();
  const stmts = {
    card: db.prepare(`INSERT INTO cards (kid, bank, cert, anchor, anchor_counter, anchor_sync) VALUES (?, ?, ?, ?, 0, NULL)`),
    head: db.prepare(`INSERT INTO chain_heads (card, counter, hash, state) VALUES (?, 1, ?, ?)`),
    fhead: db.prepare(`INSERT INTO floor_heads (card, counter, hash, state) VALUES (?, 1, ?, ?)`),
    spent: db.prepare(`INSERT INTO spent (card, id, by_hash) VALUES (?, ?, ?)`),
    counter: db.prepare(`INSERT INTO counters (card, counter, hash) VALUES (?, ?, ?)`),
    object: db.prepare(`INSERT INTO objects (hash, bytes) VALUES (?, ?)`),
    transfer: db.prepare(
      `INSERT INTO transfers (hash, card, counter, amount, payee, change_id, change_value, mark, time, state) VALUES (?, ?, ?, 100, ?, NULL, 0, NULL, ?, 'settled')`,
    ),
    verdict: db.prepare(
      `INSERT INTO verdicts (transfer, status, covered, code, time, card, terminal, amount, proof1, proof2) VALUES (?, 0, 0, NULL, ?, ?, ?, 100, NULL, NULL)`,
    ),
    outcome: db.prepare(`INSERT INTO outcomes (batch, idx, bytes) VALUES (?, ?, ?)`),
    claim: db.prepare(`INSERT INTO floor_claims (card, id, by_hash) VALUES (?, ?, ?)`),
    entry: db.prepare(`INSERT INTO floor_log (seq, hash, transfer, outcome) VALUES (?, ?, ?, ?)`),
    chead: db.prepare(`INSERT INTO floor_card (card, k, hash, counter, head) VALUES (?, ?, ?, 1, ?)`),
    ctransfer: db.prepare(
      `INSERT INTO floor_card (card, k, hash, counter, amount, payee, time, state, status, seq) VALUES (?, ?, ?, ?, 100, ?, ?, 'settled', 0, ?)`,
    ),
    cinput: db.prepare(`INSERT INTO floor_card (card, k, hash) VALUES (?, ?, ?)`),
    cbytes: db.prepare(`INSERT INTO floor_bytes (seq, transfer, outcome) VALUES (?, ?, ?)`),
  };
  const body = rnd(SIZE.transfer);
  const out = rnd(SIZE.outcome);
  db.transaction(() => {
    for (const c of cards) {
      stmts.card.run(c, rnd(16), rnd(260), rnd(200));
      stmts.head.run(c, rnd(32), rnd(SIZE.state));
      stmts.fhead.run(c, rnd(32), rnd(SIZE.state));
      stmts.chead.run(c, HEAD_KEY, rnd(32), rnd(SIZE.state));
    }
  })();
  const step = 100_000;
  for (let done = 0; done < ROWS; done += step) {
    db.transaction(() => {
      for (let i = done; i < Math.min(ROWS, done + step); i++) {
        const card = cards[i % cards.length]!;
        const h = rnd(32);
        const id = rnd(32);
        stmts.spent.run(card, id, h);
        stmts.counter.run(card, 1000 + i, h);
        stmts.object.run(h, body);
        stmts.transfer.run(h, card, 1000 + i, rnd(16), now);
        stmts.verdict.run(h, now, card, rnd(16));
        stmts.outcome.run(rnd(32), 0, out);
        stmts.claim.run(card, id, h);
        const ck = Buffer.alloc(9);
        ck[0] = 0xff;
        ck.writeUInt32BE(1000 + i, 5);
        stmts.claim.run(card, ck, h);
        stmts.entry.run(i + 1, h, body, out);
        stmts.ctransfer.run(card, transferKey(1000 + i), h, 1000 + i, rnd(16), now, i + 1);
        stmts.cinput.run(card, inputKey(id), h);
        stmts.cbytes.run(i + 1, body, out);
      }
    })();
    log(`filled ${Math.min(ROWS, done + step)}/${ROWS} rows a table`);
  }
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
}

/**
 * Fills a PostgreSQL ledger as {@link fill} fills a SQLite one, generated server-side (random-looking
 * keys from a per-run salt: sha256, no pgcrypto); `cardKid(n)` gives the same card keys client-side.
 * Then ANALYZE and CHECKPOINT, as a long-running server would have done by then.
 */
async function fillPg(storage: LedgerStorage, salt: string): Promise<void> {
  const h = (tag: string, len: number, of: string) => `substring(sha256(convert_to('${salt}:${tag}:' || ${of}, 'UTF8')) from 1 for ${len})`;
  const blob = (tag: string, n: number) =>
    `substring(decode(repeat(md5('${salt}:${tag}:' || i), ${Math.ceil(n / 16)}), 'hex') from 1 for ${n})`;
  const kid = `${h('card', 16, `(i % ${CARDS})`)}`;
  const now = Date.now();
  await storage.transaction(async (tx) => {
    await tx.run(
      `INSERT INTO cards (kid, bank, cert, anchor, anchor_counter, anchor_sync) SELECT ${h('card', 16, 'i')}, ${h('bank', 16, 'i')}, ${blob('cert', 260)}, ${blob('anchor', 200)}, 0, NULL FROM generate_series(0, ${CARDS - 1}) AS i`,
    );
    await tx.run(
      `INSERT INTO chain_heads (card, counter, hash, state) SELECT ${h('card', 16, 'i')}, 1, ${h('head', 32, 'i')}, ${blob('state', SIZE.state)} FROM generate_series(0, ${CARDS - 1}) AS i`,
    );
    await tx.run(
      `INSERT INTO floor_heads (card, counter, hash, state) SELECT ${h('card', 16, 'i')}, 1, ${h('head', 32, 'i')}, ${blob('state', SIZE.state)} FROM generate_series(0, ${CARDS - 1}) AS i`,
    );
    await tx.run(
      `INSERT INTO floor_card (card, k, hash, counter, head) SELECT ${h('card', 16, 'i')}, '\\x00'::bytea, ${h('head', 32, 'i')}, 1, ${blob('state', SIZE.state)} FROM generate_series(0, ${CARDS - 1}) AS i`,
    );
  });
  const step = 200_000;
  for (let done = 0; done < ROWS; done += step) {
    const last = Math.min(ROWS, done + step) - 1;
    const series = `FROM generate_series(${done}, ${last}) AS i`;
    await storage.transaction(async (tx) => {
      await tx.run(`INSERT INTO spent (card, id, by_hash) SELECT ${kid}, ${h('id', 32, 'i')}, ${h('h', 32, 'i')} ${series}`);
      await tx.run(`INSERT INTO counters (card, counter, hash) SELECT ${kid}, 1000 + i, ${h('h', 32, 'i')} ${series}`);
      await tx.run(`INSERT INTO objects (hash, bytes) SELECT ${h('h', 32, 'i')}, ${blob('body', SIZE.transfer)} ${series}`);
      await tx.run(
        `INSERT INTO transfers (hash, card, counter, amount, payee, change_id, change_value, mark, time, state) SELECT ${h('h', 32, 'i')}, ${kid}, 1000 + i, 100, ${h('payee', 16, 'i')}, NULL, 0, NULL, ${now}, 'settled' ${series}`,
      );
      await tx.run(
        `INSERT INTO verdicts (transfer, status, covered, code, time, card, terminal, amount, proof1, proof2) SELECT ${h('h', 32, 'i')}, 0, 0, NULL, ${now}, ${kid}, ${h('payee', 16, 'i')}, 100, NULL, NULL ${series}`,
      );
      await tx.run(`INSERT INTO outcomes (batch, idx, bytes) SELECT ${h('batch', 32, 'i')}, 0, ${blob('out', SIZE.outcome)} ${series}`);
      await tx.run(`INSERT INTO floor_claims (card, id, by_hash) SELECT ${kid}, ${h('id', 32, 'i')}, ${h('h', 32, 'i')} ${series}`);
      await tx.run(
        `INSERT INTO floor_claims (card, id, by_hash) SELECT ${kid}, '\\xff00000000'::bytea || int4send((1000 + i)::int), ${h('h', 32, 'i')} ${series}`,
      );
      await tx.run(
        `INSERT INTO floor_log (seq, hash, transfer, outcome) SELECT i + 1, ${h('h', 32, 'i')}, ${blob('body', SIZE.transfer)}, ${blob('out', SIZE.outcome)} ${series}`,
      );
      await tx.run(
        `INSERT INTO floor_card (card, k, hash, counter, amount, payee, time, state, status, seq) SELECT ${kid}, '\\x01'::bytea || int4send((1000 + i)::int), ${h('h', 32, 'i')}, 1000 + i, 100, ${h('payee', 16, 'i')}, ${now}, 'settled', 0, i + 1 ${series}`,
      );
      await tx.run(
        `INSERT INTO floor_card (card, k, hash) SELECT ${kid}, '\\x02'::bytea || ${h('id', 32, 'i')}, ${h('h', 32, 'i')} ${series}`,
      );
      await tx.run(
        `INSERT INTO floor_bytes (seq, transfer, outcome) SELECT i + 1, ${blob('body', SIZE.transfer)}, ${blob('out', SIZE.outcome)} ${series}`,
      );
    });
    log(`postgres: filled ${last + 1}/${ROWS} rows a table`);
  }
  await storage.transaction((tx) => tx.run(`ANALYZE`));
  await storage.transaction((tx) => tx.run(`CHECKPOINT`));
}
/** The card keys {@link fillPg} generated. */
const cardKids = (salt: string): Buffer[] =>
  Array.from({ length: CARDS }, (_, n) => createHash('sha256').update(`${salt}:card:${n}`, 'utf8').digest().subarray(0, 16));

interface NewTransfer {
  /** Its place in the minimal design's log (after the filled rows). */
  seq: number;
  card: Buffer;
  counter: number;
  hash: Buffer;
  input: Buffer;
  bytes: Buffer;
  outcome: Buffer;
  state: Buffer;
}
/** `n` new transfers numbered from `first` on (distinct counters, cards in turn). */
const batchOf = (cards: Buffer[], n: number, first: number): NewTransfer[] =>
  Array.from({ length: n }, (_, i) => ({
    seq: ROWS + 1 + first + i,
    card: cards[(first + i) % cards.length]!,
    counter: 10_000_000 + first + i,
    hash: rnd(32),
    input: rnd(32),
    bytes: rnd(SIZE.transfer),
    outcome: rnd(SIZE.outcome),
    state: rnd(SIZE.state),
  }));

interface Figure {
  cpuMicrosPerTransfer: number;
  wallMicrosPerTransfer: number;
}

/** CPU µs of this process (all its threads), or of the whole machine (a PostgreSQL server's processes too). */
type CpuClock = () => number;
const processCpu: CpuClock = () => {
  const c = process.cpuUsage();
  return c.user + c.system;
};
const machineCpu: CpuClock = () => cpus().reduce((sum, c) => sum + (c.times.user + c.times.nice + c.times.sys + c.times.irq) * 1000, 0);

async function measure(
  name: string,
  storage: LedgerStorage,
  cards: Buffer[],
  seqBase: number,
  work: (tx: LedgerStore, b: NewTransfer[], seq: number) => Promise<void>,
  clock: CpuClock = processCpu,
): Promise<Figure> {
  const store = new LedgerStore(storage);
  const calls = Math.ceil(TRANSFERS / BATCH);
  // Batches built before the clock starts: only the storage is timed.
  const batches = Array.from({ length: calls }, (_, k) =>
    batchOf(cards, Math.min(BATCH, TRANSFERS - k * BATCH), seqBase * BATCH + k * BATCH),
  );
  let cpu = 0;
  let wall = 0;
  for (const [k, b] of batches.entries()) {
    const c0 = clock();
    const t0 = performance.now();
    await work(store, b, seqBase + k);
    wall += performance.now() - t0;
    cpu += clock() - c0;
  }
  const f = { cpuMicrosPerTransfer: r1(cpu / TRANSFERS), wallMicrosPerTransfer: r1((wall * 1000) / TRANSFERS) };
  log(`${name}: ${f.cpuMicrosPerTransfer} µs CPU, ${f.wallMicrosPerTransfer} µs wall per transfer`);
  return f;
}

/** The set-based path's storage calls for a batch of new paying transfers (Ledger.#settleAllValid's order). */
async function current(store: LedgerStore, b: NewTransfer[], seq: number): Promise<void> {
  const terminal = rnd(16);
  const now = Date.now();
  await store.transaction(async (tx) => {
    const cards = b.map((t) => t.card);
    await tx.chainHeadsIn(cards);
    await tx.cardsIn(cards);
    await tx.verdictsIn(b.map((t) => t.hash));
    await tx.transfersIn(b.map((t) => t.hash));
    await tx.chainHeadsIn(cards);
    await tx.cardsIn(cards);
    const counters = b.map((t) => ({ card: t.card, counter: t.counter, hash: t.hash }));
    const inputs = b.map((t) => ({ card: t.card, id: t.input, hash: t.hash }));
    if ((await tx.counterHolders(counters)).length > 0 || (await tx.inputHolders(inputs)).length > 0)
      throw new Error('a fresh claim is held');
    await tx.insertCounterClaims(counters);
    await tx.insertInputClaims(inputs);
    await tx.insertObjects(b.map((t) => ({ hash: t.hash, bytes: t.bytes })));
    await tx.insertTransfers(
      b.map((t) => ({
        hash: t.hash,
        card: t.card,
        counter: t.counter,
        amount: 100,
        payee: terminal,
        changeId: null,
        changeValue: 0,
        mark: null,
        time: now,
        state: 'settled' as const,
      })),
    );
    await tx.insertVerdicts(
      b.map((t) => ({
        transfer: t.hash,
        status: 0,
        covered: false,
        code: null,
        time: now,
        card: t.card,
        terminal,
        amount: 100,
        proof1: null,
        proof2: null,
      })),
    );
    const batch = rnd(32);
    await tx.insertOutcomes(b.map((t, idx) => ({ batch, idx, bytes: t.outcome })));
    await tx.creditMerchant(terminal, 100 * b.length);
    await tx.advanceChainHeads(b.map((t) => ({ card: t.card, counter: t.counter, hash: t.hash, state: t.state })));
    await tx.insertBatch(batch, terminal, seq, b.length, now);
  });
}

/** Multi-row statements of at most 128 rows, as the store writes them. */
async function insertRows(
  sql: { run(s: string, p: readonly SqlValue[]): Promise<number> },
  head: string,
  width: number,
  rows: SqlValue[][],
  tail = '',
): Promise<void> {
  for (let i = 0; i < rows.length; i += 128) {
    const part = rows.slice(i, i + 128);
    const one = `(${Array.from({ length: width }, () => '?').join(', ')})`;
    await sql.run(`${head} VALUES ${part.map(() => one).join(', ')}${tail}`, part.flat());
  }
}

/** The least a spent-once check writes: claims keyed (card, id), one append-only log row, the head. */
async function minimal(store: LedgerStore, b: NewTransfer[]): Promise<void> {
  await store.storage.transaction(async (sql) => {
    const claims: SqlValue[][] = [];
    for (const t of b) {
      const ck = Buffer.alloc(9);
      ck[0] = 0xff;
      ck.writeUInt32BE(t.counter, 5);
      claims.push([t.card, ck, t.hash], [t.card, t.input, t.hash]);
    }
    // The holders of these claims (none: every transfer is new) and the cards' heads, read as IN lists.
    for (let i = 0; i < claims.length; i += 128) {
      const part = claims.slice(i, i + 128);
      const held = await sql.all(
        `SELECT card, id FROM floor_claims WHERE ${part.map(() => '(card = ? AND id = ?)').join(' OR ')}`,
        part.flatMap((c) => [c[0]!, c[1]!]),
      );
      if (held.length > 0) throw new Error('a fresh claim is held');
    }
    for (let i = 0; i < b.length; i += 128) {
      const part = b.slice(i, i + 128);
      await sql.all(
        `SELECT card, counter, hash, state FROM floor_heads WHERE card IN (${part.map(() => '?').join(', ')})`,
        part.map((t) => t.card),
      );
    }
    await insertRows(sql, 'INSERT INTO floor_claims (card, id, by_hash)', 3, claims);
    await insertRows(
      sql,
      'INSERT INTO floor_log (seq, hash, transfer, outcome)',
      4,
      b.map((t) => [t.seq, t.hash, t.bytes, t.outcome]),
    );
    await insertRows(
      sql,
      'INSERT INTO floor_heads (card, counter, hash, state)',
      4,
      b.map((t) => [t.card, t.counter, t.hash, t.state]),
      ' ON CONFLICT (card) DO UPDATE SET counter = excluded.counter, hash = excluded.hash, state = excluded.state WHERE excluded.counter > floor_heads.counter',
    );
  });
}

/**
 * Every fact `current` writes, clustered by card (`clusteredSchema`): the reads settlement makes
 * (the cards' heads and anchors, the transfers at the paying counters, the holders of the input
 * claims) by (card, k), then the rows.
 */
async function clustered(store: LedgerStore, b: NewTransfer[], seq: number): Promise<void> {
  const terminal = rnd(16);
  const now = Date.now();
  await store.storage.transaction(async (sql) => {
    const tx = new StoreTx(sql);
    const byKey = async (keys: [Buffer, Buffer][]): Promise<number> => {
      let found = 0;
      for (let i = 0; i < keys.length; i += 128) {
        const part = keys.slice(i, i + 128);
        const rows = await sql.all(
          `SELECT card, k, hash, counter, state, head FROM floor_card WHERE ${part.map(() => '(card = ? AND k = ?)').join(' OR ')}`,
          part.flat(),
        );
        found += rows.length;
      }
      return found;
    };
    if ((await byKey(b.map((t) => [t.card, HEAD_KEY]))) !== b.length) throw new Error('a card has no head');
    await tx.cardsIn(b.map((t) => t.card));
    const transfers = b.map((t): [Buffer, Buffer] => [t.card, transferKey(t.counter)]);
    const inputs = b.map((t): [Buffer, Buffer] => [t.card, inputKey(t.input)]);
    if ((await byKey(transfers)) > 0 || (await byKey(inputs)) > 0) throw new Error('a fresh claim is held');
    await insertRows(
      sql,
      'INSERT INTO floor_card (card, k, hash, counter, amount, payee, time, state, status, seq)',
      10,
      b.flatMap((t, i) => [
        [t.card, transfers[i]![1], t.hash, t.counter, 100, terminal, now, 'settled', 0, t.seq],
        [t.card, inputs[i]![1], t.hash, null, null, null, null, null, null, null],
      ]),
    );
    await insertRows(
      sql,
      'INSERT INTO floor_bytes (seq, transfer, outcome)',
      3,
      b.map((t) => [t.seq, t.bytes, t.outcome]),
    );
    const batch = rnd(32);
    await tx.insertOutcomes(b.map((t, idx) => ({ batch, idx, bytes: t.outcome })));
    await tx.creditMerchant(terminal, 100 * b.length);
    await insertRows(
      sql,
      'INSERT INTO floor_card (card, k, hash, counter, head)',
      5,
      b.map((t) => [t.card, HEAD_KEY, t.hash, t.counter, t.state]),
      ' ON CONFLICT (card, k) DO UPDATE SET counter = excluded.counter, hash = excluded.hash, head = excluded.head WHERE excluded.counter > floor_card.counter',
    );
    await tx.insertBatch(batch, terminal, seq, b.length, now);
  });
}

/** One-core µs of a native verify and of a ledger outcome signature. */
async function crypto(): Promise<{ verifyMicros: number; signMicros: number }> {
  const kp = generateKeyPair((n) => new Uint8Array(randomBytes(n)));
  const items = Array.from({ length: 256 }, () => {
    const m = new Uint8Array(randomBytes(300));
    return { m, s: sign(m, kp.secretKey) };
  });
  const n = 20_000;
  let t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const it = items[i % items.length]!;
    if (!nativeVerifier.verify(it.s, it.m, kp.publicKey)) throw new Error('verify failed');
  }
  const verifyMicros = ((performance.now() - t0) * 1000) / n;
  const signer = nativeSigner(kp);
  t0 = performance.now();
  for (let i = 0; i < n / 4; i++) signer.sign(items[i % items.length]!.m);
  const signMicros = ((performance.now() - t0) * 1000) / (n / 4);
  return { verifyMicros: r1(verifyMicros), signMicros: r1(signMicros) };
}

async function main(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'dt-floor-'));
  const closers: (() => unknown)[] = [() => rmSync(dir, { recursive: true, force: true })];
  try {
    const cards = Array.from({ length: CARDS }, () => rnd(16));
    // The ledger's schema, as serve creates it (and, in a second file, with settlement's small-row tables WITHOUT ROWID); then the bulk rows.
    const made = async (name: string, migrations: typeof MIGRATIONS): Promise<string> => {
      const file = join(dir, name);
      await openSqliteStorage(file, { migrations }).close();
      const t0 = performance.now();
      fill(file, cards);
      log(`${name}: filled in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      return file;
    };
    const onSqlite = async (
      file: string,
      migrations: typeof MIGRATIONS,
      run: (s: LedgerStorage) => Promise<Figure[]>,
    ): Promise<Figure[]> => {
      const storage = openSqliteStorage(file, { migrations });
      try {
        return await run(storage);
      } finally {
        await storage.close();
      }
    };
    const file = await made('ledger.db', MIGRATIONS);
    const calls = Math.ceil(TRANSFERS / BATCH);
    const [cur, min, clu] = await onSqlite(file, MIGRATIONS, async (st) => [
      await measure('current', st, cards, 0, current),
      await measure('minimal', st, cards, calls, minimal),
      await measure('clustered', st, cards, 2 * calls, clustered),
    ]);
    rmSync(file, { force: true });
    const rowlessFile = await made('rowless.db', ROWLESS_MIGRATIONS);
    const [rowless] = await onSqlite(rowlessFile, ROWLESS_MIGRATIONS, async (st) => [await measure('rowless', st, cards, 0, current)]);
    rmSync(rowlessFile, { force: true });
    // PostgreSQL: a throwaway cluster with fsync on (as the headline's), the server's CPU counted with the machine's.
    let pg: { current: Figure; minimal: Figure; clustered: Figure } | undefined;
    if (PG) {
      log('postgres: starting a throwaway cluster');
      const cluster = startPgCluster({ fsync: true });
      closers.push(() => cluster.stop());
      const storage = await openPostgresStorage(cluster.createDatabase(`floor_${process.pid}`), { migrations: PG_MIGRATIONS });
      closers.push(() => storage.close());
      const salt = randomBytes(16).toString('hex');
      const t0 = performance.now();
      await fillPg(storage, salt);
      log(`postgres: filled in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      const kids = cardKids(salt);
      pg = {
        current: await measure('postgres current', storage, kids, 0, current, machineCpu),
        minimal: await measure('postgres minimal', storage, kids, calls, minimal, machineCpu),
        clustered: await measure('postgres clustered', storage, kids, 2 * calls, clustered, machineCpu),
      };
    }
    const c = await crypto();
    log(`verify ${c.verifyMicros} µs, sign ${c.signMicros} µs (one core)`);
    const cores = availableParallelism();
    // The most settled/s: all cores for verify + sign + storage CPU, and the one writer thread for the storage (the
    // ledger signs outcomes in node:crypto's thread pool, signAsync, while it writes).
    const bound = (s: Figure) => {
      const perSecond = Math.min((cores * 1e6) / (c.verifyMicros + c.signMicros + s.cpuMicrosPerTransfer), 1e6 / s.wallMicrosPerTransfer);
      return Math.round((1000 * perSecond) / ((cores * 1e6) / c.verifyMicros)) / 1000;
    };
    const CURRENT_NOTE = "the set-based path's reads and rows through LedgerStore, 0 hops, one input";
    const CLUSTERED_NOTE =
      "today's facts clustered by card: a table keyed (card, k) with the head, a row per transfer (by counter: hash, value record, verdict) and per input claim; bytes in an append-only log";
    const MINIMAL_NOTE = 'claims keyed (card, id), an append-only log row, the head: a minimal relational design of a spent-once check';
    const doc = {
      tool: '@dt/ledger storage floor bench',
      date: new Date().toISOString(),
      host: { node: process.version, cores },
      config: {
        rows: ROWS,
        cards: CARDS,
        transfers: TRANSFERS,
        batch: BATCH,
        sqlite: 'openSqliteStorage(file): WAL, synchronous=FULL, background checkpointer, file on disk (os.tmpdir())',
        ...(PG
          ? { postgres: 'openPostgresStorage over a throwaway cluster (startPgCluster, fsync on, unix socket); CPU: the whole machine' }
          : {}),
      },
      crypto: c,
      current: { ...cur!, maxCeilingRatio: bound(cur!), note: CURRENT_NOTE },
      rowless: {
        ...rowless!,
        maxCeilingRatio: bound(rowless!),
        note: `the same statements through LedgerStore, with ${[...ROWLESS_TABLES].join(', ')} WITHOUT ROWID tables`,
      },
      minimal: { ...min!, maxCeilingRatio: bound(min!), note: `${MINIMAL_NOTE} (claims and heads WITHOUT ROWID)` },
      clustered: { ...clu!, maxCeilingRatio: bound(clu!), note: `${CLUSTERED_NOTE} (the card table WITHOUT ROWID)` },
      ...(pg
        ? {
            postgres: {
              current: { ...pg.current, maxCeilingRatio: bound(pg.current), note: CURRENT_NOTE },
              minimal: { ...pg.minimal, maxCeilingRatio: bound(pg.minimal), note: MINIMAL_NOTE },
              clustered: { ...pg.clustered, maxCeilingRatio: bound(pg.clustered), note: CLUSTERED_NOTE },
            },
          }
        : {}),
      note: 'maxCeilingRatio: settled/s if settlement were nothing but one verify, one outcome signature and this storage work, with all cores (the storage on the one writer thread) ÷ the native verifies/s of all cores',
    };
    return doc;
  } finally {
    await closeAll(closers, log);
  }
}

try {
  const doc = await main();
  const tmp = `${OUT}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(doc, null, 2) + '\n');
  renameSync(tmp, OUT);
  type R = { maxCeilingRatio: number };
  const d = doc as { current: R; rowless: R; minimal: R; clustered: R; postgres?: { current: R; minimal: R; clustered: R } };
  log(
    `at the most: ratio ${d.current.maxCeilingRatio} with today's rows, ${d.rowless.maxCeilingRatio} with them WITHOUT ROWID, ${d.minimal.maxCeilingRatio} with the minimal ones, ${d.clustered.maxCeilingRatio} with today's clustered by card${d.postgres ? `; PostgreSQL ${d.postgres.current.maxCeilingRatio}, ${d.postgres.minimal.maxCeilingRatio} and ${d.postgres.clustered.maxCeilingRatio}` : ''}; results in ${OUT}`,
  );
  process.exit(0);
} catch (e) {
  process.stderr.write(`floor failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
}
