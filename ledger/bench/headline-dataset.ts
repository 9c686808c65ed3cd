/**
 * The state the headline settlement benchmark measures against, and the
 * signed batches it measures with (`headline.ts`). Everything that writes
 * the ledger's tables directly is in this one module, so that it can follow
 * schema or settlement changes in one place.
 *
 * **Real part, through the ledger's own code.** A build ledger (`Ledger`,
 * SQLite on tmpfs so that building is not bound by fsync) registers a card
 * certificate issued by the bank for every measured card, takes a bank load
 * order for each and syncs each card (`ReferenceWallet.beginSync` →
 * `Ledger.sync` → `completeSync`): each holds a ledger-signed token and
 * receipt. A card measured at h history hops (`mixed`: 0..5 evenly, `hops63`:
 * 63) first pays h times, and the last of those payments (carrying the h - 1
 * before it) is settled through `Ledger.settle`, so the history its measured
 * handover carries is already recorded, as in the steady state where every
 * payment reaches the ledger. The measured payments are then made and signed
 * into terminal batches (`batchSize` handovers, spread over `terminals`
 * terminals) and settle calls grouped as the acquirer's forwarder groups
 * them, all before any timing starts. Each measured card pays once in the
 * measured run, and the measuring ledger is a fresh `Ledger`: none of its
 * in-memory memos has seen the card, its certificate, token, receipt or
 * history (only the bank's and the terminals' certificates recur).
 *
 * **Bulk part, at the storage level (documented as such).** Building a
 * hundred thousand cards and a million settled transfers through the API
 * would take hours on this machine, so {@link fillSqlite} /
 * {@link fillPostgres} add, in a few SQL statements, (1) the other active
 * cards up to `cards`: the rows registering, loading and syncing a card
 * leaves (card, load, token, sync receipt, sync request object, counter),
 * with random ids and random bytes of the sizes the real cards' rows have;
 * and (2) synthetic retired-card history up to `spentRows` rows in the spent
 * set: per transfer a spent-set claim (card, coin, transfer), a counter, a
 * transfer (state settled, value 0) and its object (random bytes of a
 * transfer's size). Values are
 * accounted (the issued total grows with the bulk cards' tokens), so the
 * ledger's supply audit still holds afterwards. These rows give the indexes
 * and the page cache the size of a ledger with that many cards and
 * transfers; no measured handover refers to them.
 *
 * The built SQLite file's tables are copied to a PostgreSQL database (multi-row
 * INSERTs), which then gets its bulk part server-side; the built file itself
 * then gets the SQLite bulk part and is copied to disk as the SQLite target.
 *
 * @module
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, fsyncSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CURRENCY_KZT, ReferenceWallet, signMessage, type KeyPair } from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import { Ledger } from '../src/ledger.ts';
import { createPki, identityFrom, issueCard, issueTerminal, type Identity, type Pki } from '../src/pki.ts';
import { nativeSigner } from '../src/native-signer.ts';
import { signLoadOrder } from '../src/load.ts';
import { openSqliteStorage } from '../src/storage/sqlite.ts';
import type { LedgerStorage, SqlValue } from '../src/storage/types.ts';

/** Sizes of the dataset. */
export interface DatasetOptions {
  /** Measured transfers at 0..5 history hops, one card each, hops evenly mixed. */
  readonly mixed: number;
  /** Measured transfers at 63 history hops, one card each. */
  readonly hops63: number;
  /** Terminals the measured payments are spread over (default 200). */
  readonly terminals?: number;
  /** Handovers per terminal batch (default 50). */
  readonly batchSize?: number;
  /** Progress lines. */
  readonly log?: (line: string) => void;
}

/** One settle call: the signed batches of a POST /v1/settle. */
export type SettleCall = readonly Uint8Array[];

/** A measured workload: settle calls and how many handovers they hold, by hops. */
export interface Workload {
  readonly calls: readonly SettleCall[];
  readonly handovers: number;
  /** Handovers per history length. */
  readonly byHops: Readonly<Record<string, number>>;
  /** Mean encoded handover size, bytes. */
  readonly meanHandoverBytes: number;
}

/** What {@link buildDataset} made. */
export interface Dataset {
  /** The built SQLite database (copy it with {@link installSqlite} / {@link installPostgres}). */
  readonly file: string;
  readonly pki: Pki;
  readonly now: number;
  /** Cards built through the ledger's API (the measured ones). */
  readonly realCards: number;
  readonly mixed: Workload;
  readonly hops63: Workload;
  /** Transfers recorded by the real part (the priors). */
  readonly priorTransfers: number;
  readonly buildSeconds: number;
  /** Removes the build directory. */
  dispose(): void;
}

const YEAR = 365 * 86400;
const LOAD = 1_000_000;
const LIMITS_ALL = { perPayment: 1_000_000, offlineTotal: 100_000_000, offlineCount: 64, cvmLimit: 1_000_000 };
const MAX_CALL_BATCHES = 32;
const MAX_CALL_HANDOVERS = 2000;
const MAX_CALL_BYTES = 16 * 1024 * 1024;

const rnd = (n: number): Uint8Array => new Uint8Array(randomBytes(n));
const b64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64url'));

/** A P-256 key pair from OpenSSL (fast: the pure-JS keygen would dominate building 100k cards). */
function nativeKeyPair(): KeyPair {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  const pub = new Uint8Array(65);
  pub[0] = 4;
  pub.set(b64(jwk.x!), 1);
  pub.set(b64(jwk.y!), 33);
  return { secretKey: b64(jwk.d!), publicKey: pub };
}

/** A directory on tmpfs when there is one (building is then not bound by fsync). */
function buildDir(): string {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  return mkdtempSync(join(base, 'dt-headline-build-'));
}

function shuffle<T>(xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = randomBytes(4).readUInt32LE() % (i + 1);
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

/**
 * Groups handovers into terminal batches (each signed by its terminal) and
 * the batches into settle calls the way the acquirer's forwarder does (at
 * most 32 batches, 2,000 handovers and 16 MiB a call).
 */
function batchesOf(
  items: readonly { handover: Uint8Array; terminal: number }[],
  terminals: readonly Identity[],
  seq: number[],
  batchSize: number,
  now: number,
): SettleCall[] {
  const perTerminal = new Map<number, Uint8Array[]>();
  for (const it of items) perTerminal.set(it.terminal, [...(perTerminal.get(it.terminal) ?? []), it.handover]);
  const batches: { bytes: Uint8Array; count: number }[] = [];
  for (const [ti, hs] of perTerminal) {
    const term = terminals[ti]!;
    const signer = nativeSigner(term.keys);
    for (let i = 0; i < hs.length; i += batchSize) {
      const part = hs.slice(i, i + batchSize);
      batches.push({
        bytes: signMessage(
          'Batch',
          { terminal: term.kid, seq: ++seq[ti]!, time: now, chain: [...term.chain], handovers: part, crlVersion: 0 },
          signer,
        ),
        count: part.length,
      });
    }
  }
  // Arrival order at the acquirer is mixed across terminals.
  shuffle(batches);
  const calls: SettleCall[] = [];
  let cur: Uint8Array[] = [];
  let n = 0;
  let bytes = 0;
  for (const b of batches) {
    if (cur.length > 0 && (cur.length >= MAX_CALL_BATCHES || n + b.count > MAX_CALL_HANDOVERS || bytes + b.bytes.length > MAX_CALL_BYTES)) {
      calls.push(cur);
      cur = [];
      n = 0;
      bytes = 0;
    }
    cur.push(b.bytes);
    n += b.count;
    bytes += b.bytes.length;
  }
  if (cur.length > 0) calls.push(cur);
  return calls;
}

/** Builds the real part of the dataset and the measured batches (see the module documentation). */
export async function buildDataset(opts: DatasetOptions): Promise<Dataset> {
  const t0 = performance.now();
  const log = opts.log ?? (() => undefined);
  const terminalsN = opts.terminals ?? 200;
  const batchSize = opts.batchSize ?? 50;
  const cardsN = opts.mixed + opts.hops63;
  const now = Math.floor(Date.now() / 1000);
  const validity = { nbf: now - 86400, exp: now + YEAR };
  const pki = createPki({ now });
  // Native signers for what the bank and the ledger sign while building: the same signatures, faster.
  const bank: Identity = { ...identityFrom(pki.bank.keys, pki.bank.chain), signer: nativeSigner(pki.bank.keys) };
  const dir = buildDir();
  const file = join(dir, 'ledger.db');
  const storage = openSqliteStorage(file);
  const ledger = await Ledger.open({
    storage,
    signer: nativeSigner(pki.ledger.keys),
    rootCert: pki.issuer.cert,
    ledgerCert: pki.ledger.cert,
  });
  const dispose = () => rmSync(dir, { recursive: true, force: true });
  try {
    await ledger.registerBank(pki.bank.cert);
    await ledger.allocate(pki.bank.kid, cardsN * LOAD, rnd(16));
    const terminals = Array.from({ length: terminalsN }, (_, i) =>
      issueTerminal(bank, { validity, merchant: { id: `shop-${i}`, mcc: 5411, name: `Shop ${i}` }, keys: nativeKeyPair() }),
    );
    const seq = terminals.map(() => 0);

    // Card i is measured at measured.get(i) hops.
    const measured = new Map<number, number>();
    for (let i = 0; i < cardsN; i++) measured.set(i, i < opts.mixed ? i % 6 : 63);

    const wallets = new Map<number, ReferenceWallet>();
    const ledgerKey = pki.ledger.keys.publicKey;
    const every = Math.max(1, Math.floor(cardsN / 10));
    for (let i = 0; i < cardsN; i++) {
      const keys = nativeKeyPair();
      const id = issueCard(bank, { validity, limits: LIMITS_ALL, keys, name: `card-${i}` });
      await ledger.registerCard(id.chain);
      await ledger.load(signLoadOrder({ card: id.kid, amount: LOAD, id: rnd(16), time: now }, bank.signer));
      const w = new ReferenceWallet({ signer: nativeSigner(keys), chain: id.chain });
      w.completeSync(await ledger.sync(w.beginSync(rnd(16))), ledgerKey, nativeVerifier);
      wallets.set(i, w);
      if ((i + 1) % every === 0)
        log(`dataset: ${i + 1}/${cardsN} cards registered, loaded and synced (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    }

    // The limits are certified generously (checked by the ledger anyway): the wallet need not re-add its history.
    const pay = (w: ReferenceWallet, ti: number, k: number): Uint8Array => {
      const term = terminals[ti]!;
      return w.pay(
        {
          amount: 100 + (k % 50),
          currency: CURRENCY_KZT,
          terminal: term.kid,
          merchant: `shop-${ti}`,
          mcc: 5411,
          nonce: rnd(16),
          time: now,
        },
        { enforceLimits: false },
      ).handover;
    };
    const randomTerminal = () => randomBytes(4).readUInt32LE() % terminalsN;

    // Priors: a card measured at h hops pays h times; its h-th payment (carrying the others) is settled for real.
    const priors: { handover: Uint8Array; terminal: number }[] = [];
    let priorTransfers = 0;
    for (const [i, hops] of measured) {
      const w = wallets.get(i)!;
      let last: { handover: Uint8Array; terminal: number } | undefined;
      for (let k = 0; k < hops; k++) {
        const ti = randomTerminal();
        last = { handover: pay(w, ti, k), terminal: ti };
      }
      if (last) priors.push(last);
      priorTransfers += hops;
    }
    log(`dataset: settling ${priors.length} prior payments (${priorTransfers} transfers recorded) through Ledger.settle`);
    for (const call of batchesOf(priors, terminals, seq, batchSize, now)) await ledger.settle(call);

    // The measured payments, signed into batches and settle calls now: nothing of this is timed.
    const workload = (which: (hops: number) => boolean): Workload => {
      const items: { handover: Uint8Array; terminal: number }[] = [];
      const byHops: Record<string, number> = {};
      let bytes = 0;
      for (const [i, hops] of measured) {
        if (!which(hops)) continue;
        const ti = randomTerminal();
        const h = pay(wallets.get(i)!, ti, hops);
        items.push({ handover: h, terminal: ti });
        byHops[hops] = (byHops[hops] ?? 0) + 1;
        bytes += h.length;
      }
      return {
        calls: batchesOf(shuffle(items), terminals, seq, batchSize, now),
        handovers: items.length,
        byHops,
        meanHandoverBytes: items.length ? Math.round(bytes / items.length) : 0,
      };
    };
    const mixed = workload((h) => h < 63);
    const hops63 = workload((h) => h === 63);
    const audit = await ledger.audit();
    if (!audit.ok) throw new Error(`build ledger: supply invariant failed (${audit.difference})`);
    await storage.close();
    const buildSeconds = (performance.now() - t0) / 1000;
    log(
      `dataset: built in ${buildSeconds.toFixed(0)} s: ${cardsN} cards, ${mixed.handovers} mixed and ${hops63.handovers} 63-hop measured payments`,
    );
    return { file, pki, now, realCards: cardsN, mixed, hops63, priorTransfers, buildSeconds, dispose };
  } catch (e) {
    await storage.close().catch(() => undefined);
    dispose();
    throw e;
  }
}

/** Rows of the spent set and of the cards table in `storage`. */
export async function tableRows(storage: LedgerStorage): Promise<{ spent: number; cards: number }> {
  return storage.transaction(async (tx) => ({
    spent: Number((await tx.get(`SELECT COUNT(*) AS n FROM spent`))!.n),
    cards: Number((await tx.get(`SELECT COUNT(*) AS n FROM cards`))!.n),
  }));
}

/**
 * Copies the built database to `path` (a SQLite file, opened afterwards with
 * `openSqliteStorage` as `serve` does) and fsyncs it, so that no write-back
 * of the copy overlaps the measurement.
 */
export function installSqliteFile(ds: Dataset, path: string): void {
  copyFileSync(ds.file, path);
  const fd = openSync(path, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Adds the bulk part to the built database itself (on tmpfs: not bound by
 * fsync), after {@link installPostgres} took the real part from it.
 */
export async function fillBuiltSqlite(ds: Dataset, target: FillTarget): Promise<Fill> {
  const storage = openSqliteStorage(ds.file);
  try {
    return await fillSqlite(storage, ds, target);
  } finally {
    await storage.close();
  }
}

/** Mean sizes of the real cards' rows, so that the bulk rows have the same. */
interface RowSizes {
  cert: number;
  token: number;
  receipt: number;
  request: number;
  transfer: number;
}

async function rowSizes(storage: LedgerStorage): Promise<RowSizes> {
  return storage.transaction(async (tx) => {
    const avg = async (sql: string, def: number) => Math.round(Number((await tx.get(sql))?.n ?? def) || def);
    return {
      cert: await avg(`SELECT AVG(LENGTH(cert)) AS n FROM cards`, 260),
      token: await avg(`SELECT AVG(LENGTH(bytes)) AS n FROM tokens`, 190),
      receipt: await avg(`SELECT AVG(LENGTH(receipt)) AS n FROM syncs`, 420),
      request: await avg(`SELECT AVG(LENGTH(o.bytes)) AS n FROM objects o JOIN syncs s ON s.request = o.hash`, 200),
      transfer: await avg(`SELECT AVG(LENGTH(o.bytes)) AS n FROM objects o JOIN transfers t ON t.hash = o.hash`, 330),
    };
  });
}

/** What the bulk part added. */
export interface Fill {
  readonly cards: number;
  readonly transfers: number;
  readonly seconds: number;
}

/** Target sizes of the bulk part. */
export interface FillTarget {
  /** Active cards in the ledger afterwards (headline: at least 100,000). */
  readonly cards: number;
  /** Rows in the spent set afterwards (headline: at least 1,000,000). */
  readonly spentRows: number;
}

const RETIRED_TIME_AGO = 30 * 86400;

/** The bulk part on a SQLite ledger (see the module documentation), in one transaction. */
export async function fillSqlite(storage: LedgerStorage, ds: Dataset, target: FillTarget): Promise<Fill> {
  const t0 = performance.now();
  const have = await tableRows(storage);
  const sz = await rowSizes(storage);
  const cards = Math.max(0, target.cards - have.cards);
  const transfers = Math.max(0, target.spentRows - have.spent);
  const bank = ds.pki.bank.kid;
  await storage.transaction(async (tx) => {
    const series = (n: number) => `WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ${Math.floor(n)})`;
    if (cards > 0) {
      await tx.run(
        `CREATE TEMP TABLE dt_cards AS ${series(cards)} SELECT i, randomblob(16) AS kid, randomblob(32) AS req, randomblob(16) AS serial, randomblob(16) AS load FROM s`,
      );
      await tx.run(
        `INSERT INTO cards (kid, bank, cert, anchor, anchor_counter, anchor_sync) SELECT kid, ?, randomblob(?), randomblob(32), 1, req FROM dt_cards ORDER BY kid`,
        [bank, sz.cert],
      );
      await tx.run(
        `INSERT INTO loads (id, card, bank, amount, state, sync, time) SELECT load, kid, ?, ?, 'delivered', req, ? FROM dt_cards ORDER BY load`,
        [bank, LOAD, ds.now],
      );
      await tx.run(
        `INSERT INTO tokens (serial, card, value, sync, bytes) SELECT serial, kid, ?, req, randomblob(?) FROM dt_cards ORDER BY serial`,
        [LOAD, sz.token],
      );
      await tx.run(`INSERT INTO syncs (request, card, receipt) SELECT req, kid, randomblob(?) FROM dt_cards ORDER BY req`, [sz.receipt]);
      await tx.run(`INSERT INTO objects (hash, bytes) SELECT req, randomblob(?) FROM dt_cards ORDER BY req`, [sz.request]);
      await tx.run(`INSERT INTO counters (card, counter, hash) SELECT kid, 1, req FROM dt_cards ORDER BY kid`);
      await tx.run(`DROP TABLE dt_cards`);
      // The bulk cards' tokens are value the issuer allocated: the supply audit must still balance.
      await tx.run(`INSERT INTO allocations (id, bank, amount, time) VALUES (?, ?, ?, ?)`, [rnd(16), bank, cards * LOAD, ds.now]);
      await tx.run(`UPDATE meta SET v = v + ? WHERE k = 'issued'`, [cards * LOAD]);
    }
    if (transfers > 0) {
      // Ten transfers per retired card (counters 1..10); random ids collide with nothing real. Rows go
      // in key order (B-tree appends: the bulk part takes seconds, not minutes); the measured rows do not.
      await tx.run(`CREATE TEMP TABLE dt_fill AS ${series(transfers)} SELECT i, randomblob(32) AS hash, randomblob(32) AS coin FROM s`);
      await tx.run(`CREATE TEMP TABLE dt_retired AS ${series(Math.ceil(transfers / 10))} SELECT i AS c, randomblob(16) AS kid FROM s`);
      await tx.run(
        `INSERT INTO spent (card, id, by_hash) SELECT k.kid, f.coin, f.hash FROM dt_fill f JOIN dt_retired k ON k.c = f.i / 10 ORDER BY k.kid, f.coin`,
      );
      await tx.run(
        `INSERT INTO counters (card, counter, hash) SELECT k.kid, f.i % 10 + 1, f.hash FROM dt_fill f JOIN dt_retired k ON k.c = f.i / 10 ORDER BY k.kid, f.i % 10 + 1`,
      );
      await tx.run(`INSERT INTO objects (hash, bytes) SELECT hash, randomblob(?) FROM dt_fill ORDER BY hash`, [sz.transfer]);
      await tx.run(
        `INSERT INTO transfers (hash, card, counter, amount, payee, change_id, change_value, mark, time, state)
         SELECT f.hash, k.kid, f.i % 10 + 1, 0, randomblob(16), NULL, 0, NULL, ?, 'settled' FROM dt_fill f JOIN dt_retired k ON k.c = f.i / 10 ORDER BY f.hash`,
        [ds.now - RETIRED_TIME_AGO],
      );
      await tx.run(`DROP TABLE dt_fill`);
      await tx.run(`DROP TABLE dt_retired`);
    }
  });
  return { cards, transfers, seconds: (performance.now() - t0) / 1000 };
}

/** Copies every table of the built database into a PostgreSQL ledger (schema already created by `openPostgresStorage`). */
export async function installPostgres(ds: Dataset, storage: LedgerStorage, log: (line: string) => void = () => undefined): Promise<number> {
  const src = new Database(ds.file, { readonly: true });
  let rows = 0;
  try {
    const tables = (
      src.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`).all() as {
        name: string;
      }[]
    ).map((t) => t.name);
    await storage.transaction(async (tx) => {
      for (const t of tables) {
        const cols = (src.prepare(`PRAGMA table_info(${t})`).all() as { name: string }[]).map((c) => c.name);
        // PostgreSQL takes at most 65,535 parameters a statement.
        const per = Math.max(1, Math.floor(30_000 / cols.length));
        let chunk: SqlValue[] = [];
        let n = 0;
        const flush = async () => {
          if (n === 0) return;
          const one = `(${cols.map(() => '?').join(', ')})`;
          // The schema's own first rows (meta, the empty revocation list) exist already.
          await tx.run(
            `INSERT INTO ${t} (${cols.join(', ')}) VALUES ${Array.from({ length: n }, () => one).join(', ')} ON CONFLICT DO NOTHING`,
            chunk,
          );
          rows += n;
          chunk = [];
          n = 0;
        };
        for (const r of src
          .prepare(`SELECT ${cols.join(', ')} FROM ${t}`)
          .raw()
          .iterate() as IterableIterator<unknown[]>) {
          for (const v of r)
            chunk.push(
              v instanceof Uint8Array
                ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
                : typeof v === 'bigint'
                  ? Number(v)
                  : (v as SqlValue),
            );
          if (++n >= per) await flush();
        }
        await flush();
      }
      // meta rows existed before the copy (ON CONFLICT DO NOTHING kept them): take the built values.
      for (const r of src.prepare(`SELECT k, v FROM meta`).all() as { k: string; v: number }[])
        await tx.run(`UPDATE meta SET v = ? WHERE k = ?`, [r.v, r.k]);
    });
    log(`postgres: copied ${rows} rows of ${tables.length} tables`);
  } finally {
    src.close();
  }
  return rows;
}

/** The bulk part on a PostgreSQL ledger, generated server-side; then ANALYZE, as autovacuum would have by then. */
export async function fillPostgres(storage: LedgerStorage, ds: Dataset, target: FillTarget): Promise<Fill> {
  const t0 = performance.now();
  const have = await tableRows(storage);
  const sz = await rowSizes(storage);
  const cards = Math.max(0, target.cards - have.cards);
  const transfers = Math.max(0, target.spentRows - have.spent);
  const bank = ds.pki.bank.kid;
  // Random-looking ids derived from a per-run salt (no pgcrypto needed): unique, shared with nothing real.
  const salt = Buffer.from(randomBytes(16)).toString('hex');
  const id = (tag: string, len: number, of = 'i') => `substring(sha256(convert_to('${salt}:${tag}:' || ${of}, 'UTF8')) from 1 for ${len})`;
  // Pseudo-random bytes of length n (md5 blocks; compressible, so PostgreSQL may store them smaller).
  const blob = (tag: string, n: number) =>
    `substring(decode(repeat(md5('${salt}:${tag}:' || i), ${Math.ceil(n / 16)}), 'hex') from 1 for ${n})`;
  await storage.transaction(async (tx) => {
    if (cards > 0) {
      await tx.run(
        `CREATE TEMP TABLE dt_cards ON COMMIT DROP AS SELECT i, ${id('kid', 16)} AS kid, ${id('req', 32)} AS req, ${id('ser', 16)} AS serial, ${id('load', 16)} AS load FROM generate_series(0, ${cards - 1}) AS i`,
      );
      await tx.run(
        `INSERT INTO cards (kid, bank, cert, anchor, anchor_counter, anchor_sync) SELECT kid, ?, ${blob('cert', sz.cert)}, ${id('anchor', 32)}, 1, req FROM dt_cards ORDER BY kid`,
        [bank],
      );
      await tx.run(
        `INSERT INTO loads (id, card, bank, amount, state, sync, time) SELECT load, kid, ?, ?, 'delivered', req, ? FROM dt_cards ORDER BY load`,
        [bank, LOAD, ds.now],
      );
      await tx.run(
        `INSERT INTO tokens (serial, card, value, sync, bytes) SELECT serial, kid, ?, req, ${blob('token', sz.token)} FROM dt_cards ORDER BY serial`,
        [LOAD],
      );
      await tx.run(`INSERT INTO syncs (request, card, receipt) SELECT req, kid, ${blob('receipt', sz.receipt)} FROM dt_cards ORDER BY req`);
      await tx.run(`INSERT INTO objects (hash, bytes) SELECT req, ${blob('request', sz.request)} FROM dt_cards ORDER BY req`);
      await tx.run(`INSERT INTO counters (card, counter, hash) SELECT kid, 1, req FROM dt_cards ORDER BY kid`);
      await tx.run(`INSERT INTO allocations (id, bank, amount, time) VALUES (?, ?, ?, ?)`, [rnd(16), bank, cards * LOAD, ds.now]);
      await tx.run(`UPDATE meta SET v = v + ? WHERE k = 'issued'`, [cards * LOAD]);
    }
    if (transfers > 0) {
      await tx.run(
        `CREATE TEMP TABLE dt_fill ON COMMIT DROP AS SELECT i, ${id('hash', 32)} AS hash, ${id('coin', 32)} AS coin, ${id('retired', 16, '(i / 10)')} AS kid FROM generate_series(0, ${transfers - 1}) AS i`,
      );
      await tx.run(`INSERT INTO spent (card, id, by_hash) SELECT kid, coin, hash FROM dt_fill ORDER BY kid, coin`);
      await tx.run(`INSERT INTO counters (card, counter, hash) SELECT kid, i % 10 + 1, hash FROM dt_fill ORDER BY kid, i % 10 + 1`);
      await tx.run(`INSERT INTO objects (hash, bytes) SELECT hash, ${blob('transfer', sz.transfer)} FROM dt_fill ORDER BY hash`);
      await tx.run(
        `INSERT INTO transfers (hash, card, counter, amount, payee, change_id, change_value, mark, time, state)
         SELECT hash, kid, i % 10 + 1, 0, substring(coin from 1 for 16), NULL, 0, NULL, ?, 'settled' FROM dt_fill ORDER BY hash`,
        [ds.now - RETIRED_TIME_AGO],
      );
    }
  });
  await storage.transaction((tx) => tx.run(`ANALYZE`));
  // Write the load out now, as a long-running server would have long since done: no checkpoint of
  // the bulk rows may fall into the measurement.
  await storage.transaction((tx) => tx.run(`CHECKPOINT`));
  return { cards, transfers, seconds: (performance.now() - t0) / 1000 };
}
