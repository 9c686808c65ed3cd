/**
 * The adversarial suite's world: the back office of the story variants (ledger on SQLite with
 * its HTTP server on loopback, the acquirer on loopback with its own SQLite), terminals with
 * journals running the real payment kernel, and cards running the real firmware
 * (card-applet-sim, in process). Plus what every attack ends with: the books.
 */
import type { ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeState, MemoryStorage, ShadowJournal, type CardState, type Storage } from '@dt/firmware';
import {
  CardApduProcessor,
  decodeDeterministic,
  signMessage,
  signSettleRequest,
  type Outcome,
  exchange,
  identifyCommand,
  keyPairSigner,
  openSigned,
  ReferenceWallet,
  toHex,
  type ApduTransport,
  type CommandApdu,
  type ResponseApdu,
} from '@dt/protocol';
import { httpRequest } from '@dt/protocol/http';
import { TransportReader, type CardReader, type TapOutcome } from '@dt/terminal';
import { InProcessTransport, SimulatedCard } from '@dt/card-applet-sim';
import type { Identity } from '@dt/ledger';
import {
  certifyTerminal,
  loadedCard,
  nowSec,
  openTerminal,
  startBackOffice,
  VARIANT,
  type BackOffice,
  type Terminal,
} from '../helpers/variant-world.ts';

export { nowSec, VARIANT, type BackOffice, type Terminal };

/** A back office in a fresh temp dir; both are gone at teardown. */
export async function startWorld(t: ExecutionContext): Promise<{ dir: string; bo: BackOffice }> {
  const dir = mkdtempSync(join(tmpdir(), 'dt-adversarial-'));
  const bo = await startBackOffice(dir);
  t.teardown(async () => {
    await bo.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { dir, bo };
}

let terminals = 0;
/** A certified terminal with its own journal, holding the ledger's revocation list (first sync). */
export async function newTerminal(t: ExecutionContext, bo: BackOffice, dir: string, merchant = 'KZ-SHOP'): Promise<Terminal> {
  const { identity } = certifyTerminal(bo, merchant);
  const term = openTerminal(bo, identity, join(dir, `terminal-${++terminals}.sqlite`));
  t.teardown(() => term.journal.close());
  const first = await term.sync();
  t.true(first.online, 'first contact: revocation list installed');
  return term;
}

/** A firmware card, personalized by the bank and loaded with {@link VARIANT}.load through the real ledger. */
export const newCard = loadedCard;

/** A reader on the card's in-process transport, optionally wrapped by a hostile link. */
export function readerOn(transport: ApduTransport, name = 'in-process'): CardReader {
  return new TransportReader(name, transport, { apduTimeoutMs: 2000 });
}

/** Settles what the terminal holds: batches to the acquirer, the acquirer forwards, outcomes back. */
export async function settle(term: Terminal, bo: BackOffice): Promise<void> {
  const s1 = await term.sync();
  if (s1.problems.length) throw new Error(`sync problems: ${JSON.stringify(s1.problems)}`);
  await bo.acquirer.forwardNow();
  const s2 = await term.sync();
  if (s2.problems.length) throw new Error(`sync problems: ${JSON.stringify(s2.problems)}`);
}

/**
 * The books after an attack (SPEC §7.6.2, §7.7): issued = cards + merchants + banks + redeemed
 * + pending (loads, payee value, refund credits; the audit's difference is 0), no balance below its floor (every merchant balance >= 0, every
 * bank balance >= 0 unless `creditLines` grants it one), and no card's cover above its bound.
 */
export async function books(
  t: ExecutionContext,
  bo: BackOffice,
  after: string,
  /** Credit lines granted in the test (hex bank kid -> amount): that bank's floor is minus it. */
  creditLines: Readonly<Record<string, number>> = {},
): Promise<void> {
  const a = await bo.ledger.audit();
  t.is(a.difference, 0, `${after}: issued = cards + merchants + banks + redeemed + pending`);
  t.is(a.issued, VARIANT.allocation, `${after}: nothing issued but the allocation`);
  t.deepEqual(a.floorBreaches, [], `${after}: no balance below its floor`);
  t.deepEqual(a.coverBreaches, [], `${after}: no cover above its bound`);
  t.true(a.ok, `${after}: audit ok`);
  for (const [kid, balance] of Object.entries(await bo.ledger.bankBalances()))
    t.true(balance >= -(creditLines[kid] ?? 0), `${after}: bank ${kid} at ${balance}, floor ${-(creditLines[kid] ?? 0)}`);
  for (const [kid, balance] of Object.entries(await bo.ledger.merchantBalances()))
    t.true(balance >= 0, `${after}: merchant ${kid} at ${balance}`);
  t.true(a.covered <= a.redeemed, `${after}: cover is part of what merchants were paid`);
}

/**
 * The genuine payment each group starts with: a fresh terminal and card, one tap that must be
 * APPROVED, settled through the acquirer and the ledger (journal SETTLED, merchant credited).
 */
export async function genuinePayment(
  t: ExecutionContext,
  bo: BackOffice,
  dir: string,
  amount = 100_000,
): Promise<{ term: Terminal; card: SimulatedCard; transport: InProcessTransport; kid: Uint8Array; outcome: TapOutcome }> {
  const term = await newTerminal(t, bo, dir, 'KZ-GENUINE');
  const { card, transport, kid } = await newCard(bo);
  const merchantBefore = (await bo.ledger.merchantBalances())[toHex(term.identity.kid)] ?? 0;
  const outcome = await term.kernel.charge(readerOn(transport), amount);
  t.is(outcome.kind, 'APPROVED', `the genuine payment: ${JSON.stringify(outcome)}`);
  await settle(term, bo);
  t.deepEqual(term.journal.totalsByState().settled, { count: 1, amount }, 'the genuine payment settled');
  t.is((await bo.ledger.merchantBalances())[toHex(term.identity.kid)] ?? 0, merchantBefore + amount);
  await books(t, bo, 'the genuine payment');
  return { term, card, transport, kid, outcome };
}

/** The card's committed state, read from its storage: what a cloner with the chip's memory (keys included) holds. */
export function stateOf(storage: Storage): CardState {
  const found = new ShadowJournal(storage).load();
  if (found.kind !== 'state') throw new Error('card has no state');
  return decodeState(found.body);
}

/** A ReferenceWallet with the card's key and state: a cloned secure element. */
export function cloneOf(st: CardState): ReferenceWallet {
  return new ReferenceWallet({
    signer: keyPairSigner({ secretKey: st.secretKey!, publicKey: st.publicKey! }),
    chain: st.chain!,
    state: {
      counter: st.counter,
      prev: st.prev,
      history: [...st.history],
      holdings: st.coins.map((c) => ({ id: c.id, value: c.value, ...(c.mark ? { mark: c.mark } : {}) })),
      tokens: Object.fromEntries(st.tokens.map((b) => [toHex(openSigned('Token', b).message.serial), b])),
      ...(st.receipt ? { receipt: st.receipt } : {}),
      nonces: st.nonces.map(toHex),
      trusted: st.trusted!,
    },
  });
}

/**
 * A hostile card: every command goes to the real card (over `inner`), but `onPay` sees the
 * PAY command (reassembled) and the real card's answer and decides what the kernel gets.
 * GET RESPONSE and chaining are served by the protocol's card-side processor, so the answer
 * may be of any size.
 */
export function hostileCard(
  inner: ApduTransport,
  onPay: (cmd: CommandApdu, real: ResponseApdu) => ResponseApdu | Promise<ResponseApdu>,
): ApduTransport {
  const proc = new CardApduProcessor(async (cmd) => {
    const real = await exchange(inner, cmd, { maxResponse: 1 << 20 });
    return identifyCommand(cmd) === 'PAY' ? onPay(cmd, real) : real;
  });
  return { transmit: (apdu) => proc.process(apdu) };
}

/** A second chip with a byte-for-byte copy of the card's memory (keys and state): a clone running the real firmware. */
export function cloneCard(card: SimulatedCard): { card: SimulatedCard; transport: InProcessTransport } {
  const storage = new MemoryStorage();
  for (let slot = 0; slot < 16; slot++) {
    const v = card.storage.read(slot);
    if (v !== undefined) storage.write(slot, v);
  }
  const clone = new SimulatedCard({ storage });
  return { card: clone, transport: new InProcessTransport(clone) };
}

/** One tap of `transport` at `term` for `amount`, with the handover the card answered (captured on the way). */
export async function tapCapturing(
  term: Terminal,
  transport: ApduTransport,
  amount: number,
): Promise<{ outcome: TapOutcome; handover: Uint8Array | undefined }> {
  let handover: Uint8Array | undefined;
  const outcome = await term.kernel.charge(
    readerOn(
      hostileCard(transport, (_cmd, real) => {
        if (real.sw === 0x9000) handover = real.data;
        return real;
      }),
    ),
    amount,
  );
  return { outcome, handover };
}

/** Removes a path recursively (for tests that need their own dirs). */
export function rmrf(path: string): void {
  rmSync(path, { recursive: true, force: true });
}

/**
 * Submits `handovers` straight to the ledger's HTTP API as a batch of `term` (signed with its
 * key), in a settle request signed by a second acquirer of the same bank: what the ledger makes
 * of a handover, whatever the terminal did with it. Returns the opened Outcomes.
 */
export async function ledgerVerdicts(
  bo: BackOffice,
  term: Terminal,
  handovers: readonly Uint8Array[],
  /** `adjustments`: SignedAdjustments (voids, refunds; SPEC §7.7.3) the batch carries after its handovers. */
  opts: { crlVersion?: number; time?: number; adjustments?: readonly Uint8Array[] } = {},
): Promise<Outcome[]> {
  const time = opts.time ?? nowSec();
  const batch = signMessage(
    'Batch',
    {
      terminal: term.identity.kid,
      seq: 1_000_000 + ++probes,
      time,
      chain: [...term.identity.chain],
      handovers: [...handovers],
      crlVersion: opts.crlVersion ?? openSigned('RevocationList', await bo.ledger.crl()).message.version,
      ...(opts.adjustments && opts.adjustments.length > 0 ? { adjustments: [...opts.adjustments] } : {}),
    },
    term.identity.signer,
  );
  const body = signSettleRequest(
    { chain: [...probeAcquirer(bo).chain], time: nowSec(), nonce: rnd16(), batches: [batch] },
    probeAcquirer(bo).signer,
  );
  // A refusal throws HttpRefusedError (status, stable code, detail).
  const r = await httpRequest(`${bo.ledgerServer.url}/v1/settle`, {
    method: 'POST',
    headers: { 'content-type': 'application/cose' },
    body,
    maxBytes: 1 << 24,
  });
  const out = decodeDeterministic(r.body) as Uint8Array[][];
  return out[0]!.map((b) => openSigned('Outcome', b).message);
}
let probes = 0;
const acquirers = new WeakMap<BackOffice, Identity>();
/** The second acquirer of the bank (certified once per back office). */
export function probeAcquirer(bo: BackOffice): Identity {
  let a = acquirers.get(bo);
  if (!a) acquirers.set(bo, (a = bo.pki.issueAcquirer({ name: 'probe acquirer' })));
  return a;
}
export const rnd16 = (): Uint8Array => new Uint8Array(randomBytes(16));
