/**
 * Crash test: the ledger runs as a child process (`dt-ledger serve` on
 * SQLite) and is killed with SIGKILL at seeded random moments while it
 * settles batches; it is restarted and every batch resubmitted. No transfer
 * may be settled twice, every batch answer received before a crash must be
 * returned byte for byte afterwards, and `dt-ledger audit` must find the
 * supply invariant intact. The second test does the same with voids and
 * refunds (SPEC §7.7.3): each answered once, the merchant and the pending
 * refund credits exact after the crashes.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import {
  AdjustmentKind,
  CURRENCY_KZT,
  decodeDeterministic,
  encodeDeterministic,
  OutcomeStatus,
  ReferenceWallet,
  signAdjustment,
  signMessage,
  toHex,
  verifySigned,
} from '@dt/protocol';
import { openDataDir } from '../src/cli.ts';
import { issueCard, issueTerminal, type Identity } from '../src/pki.ts';
import { signLoadOrder } from '../src/load.ts';
import { signSettle } from '../src/testkit.ts';

const BIN = fileURLToPath(new URL('../bin/dt-ledger.js', import.meta.url));
const CBOR = { 'content-type': 'application/cbor' };

/** mulberry32: a small seeded PRNG so the kill schedule is reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Server {
  child: ChildProcess;
  url: string;
}

function startServer(data: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'serve', '-d', data, '--port', '0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve({ child, url: (JSON.parse(buf.slice(0, nl)) as { url: string }).url });
    });
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('exit', (code) => reject(new Error(`server exited early (${code}): ${err}`)));
  });
}

function kill(s: Server): Promise<void> {
  return new Promise((resolve) => {
    if (s.child.exitCode !== null || s.child.signalCode !== null) return resolve();
    s.child.once('exit', () => resolve());
    s.child.kill('SIGKILL');
  });
}

async function post(url: string, path: string, body: Uint8Array, headers: Record<string, string> = CBOR): Promise<Uint8Array> {
  const r = await fetch(`${url}${path}`, { method: 'POST', headers, body });
  if (r.status !== 200) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return new Uint8Array(await r.arrayBuffer());
}

/** A fresh `dt-ledger` data directory (init, one bank with its acquirer), and a settle call signed by that acquirer. */
function ledgerData(prefix: string) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const data = join(dir, 'data');
  execFileSync(process.execPath, [BIN, 'init', '-d', data, '--json']);
  execFileSync(process.execPath, [BIN, 'bank-add', '-d', data, '--name', 'bank', '--allocate', '100000000', '--json']);
  const d = openDataDir(data);
  // The acquirer `bank-add` wrote for the bank: every settle request is signed by it (SPEC §7.7.2).
  const acquirer = d.acquirer('bank');
  const settle = async (url: string, bs: Uint8Array[]): Promise<Uint8Array[][]> =>
    decodeDeterministic(
      await post(url, '/v1/settle', signSettle(acquirer, bs, { time: Math.floor(Date.now() / 1000) }), {
        'content-type': 'application/cose',
      }),
      1 << 24,
    ) as Uint8Array[][];
  const bank = d.bank('bank');
  /** A new card registered, loaded with `amount` and synced over HTTP: its wallet holds the value. */
  const loadedCard = async (url: string, amount: number, validity: { nbf: number; exp: number }) => {
    const id = issueCard(bank, { validity });
    const now = Math.floor(Date.now() / 1000);
    await post(url, '/v1/cards', encodeDeterministic([...id.chain]));
    await post(url, '/v1/loads', signLoadOrder({ card: id.kid, amount, id: new Uint8Array(randomBytes(16)), time: now }, bank.signer));
    const wallet = new ReferenceWallet({ signer: id.signer, chain: id.chain });
    wallet.completeSync(await post(url, '/v1/sync', wallet.beginSync(new Uint8Array(randomBytes(16)))), d.ledger.keys.publicKey);
    return { id, wallet };
  };
  return { dir, data, d, bank, settle, loadedCard };
}

/**
 * The crash phase and the recovery: `rounds` settle requests of seeded random subsets of `batches`, the
 * server SIGKILLed at a random moment (every other round almost at once, so mid-request on any machine;
 * the others within `maxDelayMs`) or else, half the time, between requests, and restarted. Every
 * answer must equal the earlier answer to the same batch (`answers`, by batch index). Then the server
 * is restarted, every batch resubmitted and checked the same way. `live.server` is the running server
 * (the caller's `finally` kills it).
 */
async function crashAndRecover(
  t: ExecutionContext,
  o: {
    data: string;
    live: { server?: Server };
    batches: Uint8Array[];
    settle: (url: string, bs: Uint8Array[]) => Promise<Uint8Array[][]>;
    answers: Map<number, string>;
    seed: number;
    rounds: number;
    maxDelayMs: number;
  },
): Promise<{ final: Uint8Array[][]; kills: number; answered: number; interrupted: number }> {
  const rand = prng(o.seed);
  let kills = 0;
  let answered = 0;
  let interrupted = 0;
  const check = (bi: number, res: Uint8Array[], what: string): void => {
    const enc = res.map(toHex).join(',');
    const prior = o.answers.get(bi);
    if (prior !== undefined) t.is(enc, prior, `batch ${bi} ${what}`);
    o.answers.set(bi, enc);
  };
  for (let round = 0; round < o.rounds; round++) {
    o.live.server ??= await startServer(o.data);
    const s = o.live.server;
    const picked = o.batches.map((_, i) => i).filter(() => rand() < 0.5);
    const delay = Math.floor(rand() * (round % 2 === 0 ? 5 : o.maxDelayMs));
    const killBetween = rand() < 0.5;
    let killed: Promise<void> | undefined;
    const timer = setTimeout(() => {
      killed = kill(s);
    }, delay);
    try {
      const res = await o.settle(
        s.url,
        picked.map((i) => o.batches[i]!),
      );
      picked.forEach((bi, k) => check(bi, res[k]!, 'answered differently'));
      answered++;
    } catch {
      // The server died mid-request: the client never got an answer.
      interrupted++;
    }
    clearTimeout(timer);
    if (!killed && killBetween) killed = kill(s); // also kill between requests
    if (killed) {
      await killed;
      kills++;
      o.live.server = undefined;
    }
  }
  // Recovery: restart and resubmit everything.
  o.live.server ??= await startServer(o.data);
  const final = await o.settle(o.live.server.url, o.batches);
  final.forEach((res, bi) => check(bi, res, 'changed after the crashes'));
  return { final, kills, answered, interrupted };
}

/** Stops the server, then runs `dt-ledger audit --json` on the database it left (the supply invariant after the crashes). */
async function stopAndAudit<T>(live: { server?: Server }, data: string): Promise<T & { ok: boolean }> {
  if (live.server) await kill(live.server);
  live.server = undefined;
  return JSON.parse(execFileSync(process.execPath, [BIN, 'audit', '-d', data, '--json']).toString()) as T & { ok: boolean };
}

test('SIGKILL at random points while settling: nothing settled twice, answers stable, audit holds', async (t) => {
  const { dir, data, d, bank, settle, loadedCard } = ledgerData('dt-ledger-crash-');
  const live: { server?: Server } = {};
  try {
    const now = Math.floor(Date.now() / 1000);
    const validity = { nbf: now - 86400, exp: now + 86400 * 365 };
    const server = (live.server = await startServer(data));

    // Setup (no crashes): cards registered, loaded and synced over HTTP.
    const cards: { id: Identity; wallet: ReferenceWallet }[] = [];
    for (let i = 0; i < 6; i++) cards.push(await loadedCard(server.url, 50_000, validity));
    const terms = [0, 1, 2].map((i) => issueTerminal(bank, { validity, merchant: { id: `m${i}`, mcc: 5411, name: `m${i}` } }));
    // Each card pays 5 chained payments round-robin over the terminals; card 0 also has a clone that double-spends.
    const perTerminal: Uint8Array[][] = terms.map(() => []);
    let expected = 0;
    const clone = cards[0]!.wallet.clone();
    for (let n = 0; n < 5; n++) {
      for (const [ci, c] of cards.entries()) {
        const ti = (n + ci) % terms.length;
        const term = terms[ti]!;
        const amount = 100 * (n + 1) + ci;
        const p = c.wallet.pay({
          amount,
          currency: CURRENCY_KZT,
          terminal: term.kid,
          merchant: `m${ti}`,
          mcc: 5411,
          nonce: new Uint8Array(randomBytes(16)),
          time: now,
        });
        perTerminal[ti]!.push(p.handover);
        expected += amount;
      }
    }
    // The fork goes to another terminal than the honest payment it forks (a terminal holding both would have
    // declined the second, and the ledger then pays it no cover: SPEC §7.7 cover rule 3).
    const fork = clone.pay({
      amount: 999,
      currency: CURRENCY_KZT,
      terminal: terms[1]!.kid,
      merchant: 'm1',
      mcc: 5411,
      nonce: new Uint8Array(randomBytes(16)),
      time: now,
    });
    perTerminal[1]!.push(fork.handover);
    // Batches of 4 handovers; terminals also resend some handovers inside later batches.
    const batches: Uint8Array[] = [];
    terms.forEach((term, ti) => {
      const hs = perTerminal[ti]!;
      for (let i = 0, seq = 1; i < hs.length; i += 4, seq++) {
        const chunk = hs.slice(i, i + 4);
        if (i >= 4) chunk.push(hs[i - 1]!); // a resend of an earlier handover
        batches.push(
          signMessage(
            'Batch',
            { terminal: term.kid, seq, time: now, chain: [...term.chain], handovers: chunk, crlVersion: 0 },
            term.signer,
          ),
        );
      }
    });

    // One answered request before any crash: its outcomes must come back byte for byte after every crash.
    const answers = new Map<number, string>();
    const warm = [0, 3];
    const warmRes = await settle(
      server.url,
      warm.map((i) => batches[i]!),
    );
    warm.forEach((bi, k) => answers.set(bi, warmRes[k]!.map(toHex).join(',')));

    // Crash phase, then recovery.
    const { final, kills, answered, interrupted } = await crashAndRecover(t, {
      data,
      live,
      batches,
      settle,
      answers,
      seed: 0xdecaf,
      rounds: 10,
      maxDelayMs: 500,
    });
    t.log(`kills ${kills}, answered requests ${answered}, interrupted requests ${interrupted}`);
    t.true(kills >= 3, `killed ${kills} times`);
    t.true(interrupted >= 1, 'at least one kill landed during a settle request');
    // Every transfer has exactly one first verdict: SETTLED once, then only ALREADY_SETTLED; the fork is a DOUBLE_SPEND.
    const settledOnce = new Map<string, number>();
    const statusByTransfer = new Map<string, Set<number>>();
    for (const res of final) {
      for (const b of res) {
        const o = verifySigned('Outcome', b, d.ledger.keys.publicKey).message;
        const k = toHex(o.transfer);
        if (!statusByTransfer.has(k)) statusByTransfer.set(k, new Set());
        statusByTransfer.get(k)!.add(o.status);
        if (o.status === OutcomeStatus.SETTLED) settledOnce.set(k, (settledOnce.get(k) ?? 0) + 1);
      }
    }
    t.is(statusByTransfer.size, 31);
    for (const [k, n] of settledOnce) t.is(n, 1, `transfer ${k} settled ${n} times`);
    // Each transfer has one fate: settled (then only replays) or double-spent (the fork and, if it arrived first,
    // the honest transfers of card 0 built on the counter it reused).
    const settledFate = new Set<number>([OutcomeStatus.SETTLED, OutcomeStatus.ALREADY_SETTLED]);
    for (const [k, st] of statusByTransfer) {
      const s = [...st];
      t.true(s.every((x) => settledFate.has(x)) || (s.length === 1 && s[0] === OutcomeStatus.DOUBLE_SPEND), `transfer ${k}: ${s}`);
    }
    t.true(statusByTransfer.get(toHex(fork.transferHash)) !== undefined);

    // The audit CLI checks the supply invariant on the crashed-and-recovered database.
    const audit = await stopAndAudit<{ redeemed: number; covered: number; revocations: unknown[] }>(live, data);
    t.true(audit.ok);
    // Exactly the honest payments plus the one double spend (settled or covered, once) were redeemed.
    t.is(audit.redeemed, expected + 999);
    t.is(audit.revocations.length, 1);
  } finally {
    if (live.server) await kill(live.server);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGKILL at random points while settling voids and refunds: each answered once, answers stable, the books hold', async (t) => {
  const { dir, data, d, bank, settle, loadedCard } = ledgerData('dt-ledger-crash-adj-');
  const live: { server?: Server } = {};
  try {
    const now = Math.floor(Date.now() / 1000);
    const validity = { nbf: now - 86400, exp: now + 86400 * 365 };
    const server = (live.server = await startServer(data));
    const term = issueTerminal(bank, { validity, merchant: { id: 'm', mcc: 5411, name: 'm' } });
    // Four cards pay 1,000 / 2,000 / 3,000 / 4,000 at one terminal.
    const paid: { card: Identity; handover: Uint8Array; transfer: Uint8Array; amount: number }[] = [];
    for (let i = 0; i < 4; i++) {
      const { id, wallet } = await loadedCard(server.url, 50_000, validity);
      const amount = 1_000 * (i + 1);
      const p = wallet.pay({
        amount,
        currency: CURRENCY_KZT,
        terminal: term.kid,
        merchant: 'm',
        mcc: 5411,
        nonce: new Uint8Array(randomBytes(16)),
        time: now,
      });
      paid.push({ card: id, handover: p.handover, transfer: p.transferHash, amount });
    }
    const batch = (seq: number, handovers: Uint8Array[], adjustments: Uint8Array[]) =>
      signMessage(
        'Batch',
        {
          terminal: term.kid,
          seq,
          time: now,
          chain: [...term.chain],
          handovers,
          crlVersion: 0,
          ...(adjustments.length ? { adjustments } : {}),
        },
        term.signer,
      );
    const adjust = (kind: AdjustmentKind, i: number, amount: number) =>
      signAdjustment(
        {
          kind,
          id: new Uint8Array(randomBytes(16)),
          terminal: term.kid,
          transfer: paid[i]!.transfer,
          card: paid[i]!.card.kid,
          amount,
          currency: CURRENCY_KZT,
          time: now,
        },
        term.signer,
      );
    // Before any crash: the first three payments settle.
    await settle(server.url, [
      batch(
        1,
        paid.slice(0, 3).map((p) => p.handover),
        [],
      ),
    ]);
    // The adjustments, each batch answered in any order: the fourth payment with its void; refunds of 500 (of 1,000),
    // 2,000 (all of 2,000), then 1,000 and 2,000 (of 3,000) in two batches; a batch also resends a settled handover.
    const batches = [
      batch(2, [paid[3]!.handover], [adjust(AdjustmentKind.VOID, 3, 4_000)]),
      batch(3, [paid[0]!.handover], [adjust(AdjustmentKind.REFUND, 0, 500), adjust(AdjustmentKind.REFUND, 1, 2_000)]),
      batch(4, [], [adjust(AdjustmentKind.REFUND, 2, 1_000)]),
      batch(5, [], [adjust(AdjustmentKind.REFUND, 2, 2_000)]),
    ];
    const { final, kills, interrupted } = await crashAndRecover(t, {
      data,
      live,
      batches,
      settle,
      answers: new Map(),
      seed: 0xfeed,
      rounds: 8,
      maxDelayMs: 300,
    });
    t.log(`kills ${kills}, interrupted requests ${interrupted}`);
    t.true(kills >= 2, `killed ${kills} times`);
    const statuses = final.map((res) => res.map((b) => verifySigned('Outcome', b, d.ledger.keys.publicKey).message.status));
    t.deepEqual(statuses, [
      [OutcomeStatus.VOIDED, OutcomeStatus.VOIDED],
      [OutcomeStatus.ALREADY_SETTLED, OutcomeStatus.REFUNDED, OutcomeStatus.REFUNDED],
      [OutcomeStatus.REFUNDED],
      [OutcomeStatus.REFUNDED],
    ]);
    const audit = await stopAndAudit<{ redeemed: number; pendingRefunds: number }>(live, data);
    t.true(audit.ok);
    // Settled 1,000 + 2,000 + 3,000, refunded 500 + 2,000 + 3,000 once each (pending for the cards), the void never credited.
    t.is(audit.redeemed, 500);
    t.is(audit.pendingRefunds, 5_500);
  } finally {
    if (live.server) await kill(live.server);
    rmSync(dir, { recursive: true, force: true });
  }
});
