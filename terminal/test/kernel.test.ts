/**
 * The payment kernel against real firmware (card-applet-sim's in-process
 * simulated card): every outcome, PIN entry, torn taps with retryOf,
 * revocation, double-spend detection, busy readers and timeouts.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { MemoryStorage } from '@dt/firmware';
import { InProcessTransport, SimulatedCard } from '@dt/card-applet-sim';
import {
  Cvm,
  encodeResponse,
  identifyCommand,
  isChainedBlock,
  SW,
  type ApduTransport,
  type TransmitOptions,
  getStatus as rawStatus,
  selectApplet,
  CardRemovedError,
  TransportBusyError,
  BankPermission,
  Role,
  decodeMessage,
  encodeMessage,
  generateKeyPair,
  issueCertificate,
  openSigned,
} from '@dt/protocol';
import {
  PaymentKernel,
  PaymentState,
  TimeoutError,
  TransportReader,
  VERIFIERS,
  parseConfig,
  verifierByName,
  type CardReader,
  type CardSession,
} from '../src/index.ts';
import {
  createDevPki,
  devTerminalIdentity,
  makeCard,
  makeJournal,
  readerFor,
  ScriptedPinPad,
  signedCrl,
  tempDir,
  TEST_POLICY,
  nowSec,
  TEST_LIMITS,
} from './helpers/fixtures.ts';

const pki = createDevPki();

/** GET STATUS after a fresh SELECT (a power cut deselects the applet). */
async function getStatus(t: ApduTransport) {
  await selectApplet(t);
  return rawStatus(t);
}

/**
 * The card processes the complete PAY (last block of the chain: CLA 80, INS 30)
 * but its answer is lost on the way back, once: a torn tap.
 */
function losePayAnswerOnce(inner: ApduTransport): ApduTransport {
  let armed = true;
  return {
    async transmit(apdu, o) {
      const r = await inner.transmit(apdu, o);
      if (armed && identifyCommand(apdu) === 'PAY' && !isChainedBlock(apdu)) {
        armed = false;
        throw new CardRemovedError('field lost: response never arrived');
      }
      return r;
    },
  };
}
const identity = devTerminalIdentity(pki);

function setup(
  t: { teardown: (f: () => void) => void },
  opts: { revoked?: Uint8Array[]; pins?: (string | null)[]; policy?: typeof TEST_POLICY } = {},
) {
  const { dir, cleanup } = tempDir();
  const journal = makeJournal(pki, dir, opts.revoked);
  const pinPad = new ScriptedPinPad(opts.pins ?? []);
  const kernel = new PaymentKernel({
    identity,
    journal,
    policy: opts.policy ?? TEST_POLICY,
    pinPad,
    timeouts: { cardMs: 2000, tapMs: 8000, pinMs: 2000 },
  });
  t.teardown(() => {
    journal.close();
    cleanup();
  });
  return { dir, journal, pinPad, kernel };
}

test('APPROVED below the CVM limit: journalled as pending before the outcome, card balance drops by the amount', async (t) => {
  const { journal, kernel, pinPad } = setup(t);
  const c = await makeCard(pki);
  const before = await getStatus(c.transport);
  const states: string[] = [];
  const o = await kernel.charge(readerFor(c.transport), 123_456, { onProgress: (s) => states.push(s) });
  t.is(o.kind, 'APPROVED');
  if (o.kind !== 'APPROVED') return;
  t.is(o.payment.amount, 123_456);
  t.is(o.payment.state, PaymentState.PENDING);
  t.false(o.alreadyRecorded);
  t.is(journal.listPayments().length, 1);
  t.is(journal.pendingSummary().amount, 123_456);
  t.deepEqual(o.payment.card, c.kid);
  const after = await getStatus(c.transport);
  t.is(before.balance - after.balance, 123_456);
  t.is(after.counter, before.counter + 1);
  t.is(pinPad.prompts.length, 0);
  t.deepEqual(states.slice(0, 3), ['WAITING_FOR_CARD', 'CARD_DETECTED', 'SELECTING']);
  t.true(states.indexOf('COMMITTING') < states.indexOf('DONE'));
});

test('PIN above the terminal CVM limit: wrong PIN shows tries left, right PIN approves with OFFLINE_PIN in the signed transfer; the PIN buffer is wiped', async (t) => {
  const { journal, kernel, pinPad } = setup(t, { pins: ['9999', '1234'] });
  const c = await makeCard(pki);
  const o = await kernel.charge(readerFor(c.transport), 1_600_000);
  t.is(o.kind, 'APPROVED');
  if (o.kind !== 'APPROVED') return;
  t.is(o.payment.cvm, Cvm.OFFLINE_PIN);
  t.is(pinPad.prompts.length, 2);
  t.is(pinPad.prompts[0]!.triesLeft, undefined);
  t.is(typeof pinPad.prompts[1]!.triesLeft, 'number');
  for (const b of pinPad.given)
    t.true(
      b.every((x) => x === 0),
      'PIN buffer wiped after use',
    );
  t.is(journal.listPayments().length, 1);
});

test('PIN cancelled -> DECLINED PIN_CANCELLED, nothing journalled, card not charged', async (t) => {
  const { journal, kernel } = setup(t, { pins: [null] });
  const c = await makeCard(pki);
  const before = await getStatus(c.transport);
  const o = await kernel.charge(readerFor(c.transport), 1_600_000);
  t.deepEqual(o, { kind: 'DECLINED', reason: 'PIN_CANCELLED' });
  t.is(journal.listPayments().length, 0);
  t.is((await getStatus(c.transport)).balance, before.balance);
});

test('three wrong PINs -> DECLINED and no payment', async (t) => {
  const { journal, kernel } = setup(t, { pins: ['1111', '2222', '3333'] });
  const c = await makeCard(pki);
  const o = await kernel.charge(readerFor(c.transport), 1_600_000);
  t.is(o.kind, 'DECLINED');
  t.true(o.kind === 'DECLINED' && (o.reason === 'WRONG_PIN' || o.reason === 'PIN_BLOCKED'));
  t.is(journal.listPayments().length, 0);
});

test('card CVM limit below the terminal one: the card answers 6982, the kernel asks the PIN and approves', async (t) => {
  const { kernel, pinPad } = setup(t, { pins: ['1234'], policy: { ...TEST_POLICY, cvmLimit: 4_000_000 } });
  const c = await makeCard(pki, { limits: { ...TEST_LIMITS, cvmLimit: 100_000 } });
  const o = await kernel.charge(readerFor(c.transport), 500_000);
  t.is(o.kind, 'APPROVED');
  t.is(pinPad.prompts.length, 1);
  if (o.kind === 'APPROVED') t.is(o.payment.cvm, Cvm.OFFLINE_PIN);
});

test('no PIN pad and a PIN is needed -> DECLINED NO_PIN_PAD', async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const journal = makeJournal(pki, dir);
  t.teardown(() => journal.close());
  const kernel = new PaymentKernel({ identity, journal, policy: TEST_POLICY });
  const c = await makeCard(pki);
  const o = await kernel.charge(readerFor(c.transport), 1_600_000);
  t.deepEqual(o, { kind: 'DECLINED', reason: 'NO_PIN_PAD' });
});

test('torn tap: response lost after the card signed -> PRESENT_CARD_AGAIN; the retry names retryOf, gets the same transfer, pays once', async (t) => {
  const { journal, kernel } = setup(t);
  const c = await makeCard(pki);
  const before = await getStatus(c.transport);
  const o1 = await kernel.charge(readerFor(losePayAnswerOnce(c.transport)), 250_000);
  t.is(o1.kind, 'PRESENT_CARD_AGAIN');
  t.is(journal.listPayments().length, 0);
  t.is(journal.tornAttempts().length, 1);
  const mid = await getStatus(c.transport);
  t.is(mid.counter, before.counter + 1, 'the card did sign during the torn tap');
  const o2 = await kernel.charge(readerFor(c.transport), 250_000);
  t.is(o2.kind, 'APPROVED');
  if (o2.kind !== 'APPROVED') return;
  t.true(o2.recovered);
  const after = await getStatus(c.transport);
  t.is(after.counter, before.counter + 1, 'no second signature');
  t.is(before.balance - after.balance, 250_000, 'paid once');
  t.is(journal.listPayments().length, 1);
  t.is(journal.tornAttempts().length, 0);
});

test('a crash after PAY left the attempt "sent": a new kernel marks it torn and the next tap recovers it', async (t) => {
  const { journal } = setup(t);
  const c = await makeCard(pki);
  // First kernel: the card signs but the answer never arrives (power cut after PAY) and the
  // attempt is then forced back to "sent", as a SIGKILL between send and answer leaves it.
  const k1 = new PaymentKernel({ identity, journal, policy: TEST_POLICY });
  const o1 = await k1.charge(readerFor(losePayAnswerOnce(c.transport)), 300_000);
  t.is(o1.kind, 'PRESENT_CARD_AGAIN');
  const torn = journal.tornAttempts()[0]!;
  journal.setAttemptState(torn.nonce, 'sent' as never);
  t.is(journal.tornAttempts().length, 0);
  const k2 = new PaymentKernel({ identity, journal, policy: TEST_POLICY });
  t.is(journal.tornAttempts().length, 1);
  const o2 = await k2.charge(readerFor(c.transport), 300_000);
  t.is(o2.kind, 'APPROVED');
  t.true(o2.kind === 'APPROVED' && o2.recovered);
  t.is(journal.listPayments().length, 1);
});

test('revoked card -> DECLINED CARD_REVOKED (offline revocation list)', async (t) => {
  const c = await makeCard(pki);
  const { journal, kernel } = setup(t, { revoked: [c.kid] });
  const o = await kernel.charge(readerFor(c.transport), 10_000);
  t.is(o.kind, 'DECLINED');
  t.is(o.kind === 'DECLINED' && o.reason, 'CARD_REVOKED');
  t.is(journal.listPayments().length, 0);
});

test('cloned card paying the same counter again -> DECLINED DOUBLE_SPEND_DETECTED', async (t) => {
  const { journal, kernel } = setup(t);
  const c = await makeCard(pki);
  const snapshot = c.storage.snapshot();
  const o1 = await kernel.charge(readerFor(c.transport), 100_000);
  t.is(o1.kind, 'APPROVED');
  const clone = new SimulatedCard({ storage: new MemoryStorage(snapshot) });
  const o2 = await kernel.charge(readerFor(new InProcessTransport(clone)), 100_000);
  t.is(o2.kind, 'DECLINED');
  t.is(o2.kind === 'DECLINED' && o2.reason, 'DOUBLE_SPEND_DETECTED');
  t.is(journal.listPayments().length, 1);
});

test('ONLINE_REQUIRED: above the floor limit, over the pending cap, without or with a too old revocation list, narrowed floor', async (t) => {
  const c = await makeCard(pki);
  const r = readerFor(c.transport);
  {
    const { kernel } = setup(t);
    t.deepEqual(await kernel.charge(r, 5_000_001), { kind: 'ONLINE_REQUIRED', reason: 'ABOVE_FLOOR_LIMIT' });
  }
  {
    const { kernel } = setup(t, { policy: { ...TEST_POLICY, pendingCap: 150_000 } });
    t.is((await kernel.charge(r, 100_000)).kind, 'APPROVED');
    t.deepEqual(await kernel.charge(r, 100_000), { kind: 'ONLINE_REQUIRED', reason: 'PENDING_CAP' });
  }
  {
    const { dir, cleanup } = tempDir();
    t.teardown(cleanup);
    const { Journal } = await import('../src/index.ts');
    const j = Journal.open(`${dir}/j.sqlite`);
    t.teardown(() => j.close());
    const k = new PaymentKernel({ identity, journal: j, policy: TEST_POLICY });
    t.deepEqual(await k.charge(r, 1000), { kind: 'ONLINE_REQUIRED', reason: 'NO_REVOCATION_LIST' });
    j.storeCrl({ version: 1, issued: nowSec() - TEST_POLICY.maxCrlAge - 10, bytes: signedCrl(pki, 1), revoked: [] });
    t.deepEqual(await k.charge(r, 1000), { kind: 'ONLINE_REQUIRED', reason: 'REVOCATION_LIST_TOO_OLD' });
    j.storeCrl({ version: 2, issued: nowSec() - TEST_POLICY.crlNarrowAfter - 10, bytes: signedCrl(pki, 2), revoked: [] });
    t.deepEqual(await k.charge(r, TEST_POLICY.narrowedFloorLimit + 1), { kind: 'ONLINE_REQUIRED', reason: 'ABOVE_NARROWED_FLOOR_LIMIT' });
    t.is((await k.charge(r, 1000)).kind, 'APPROVED');
  }
});

test('card limits reached (card answers 6985) -> ONLINE_REQUIRED CARD_LIMITS', async (t) => {
  const { kernel } = setup(t);
  const c = await makeCard(pki, { limits: { ...TEST_LIMITS, offlineCount: 1 } });
  t.is((await kernel.charge(readerFor(c.transport), 1000)).kind, 'APPROVED');
  t.deepEqual(await kernel.charge(readerFor(c.transport), 1000), { kind: 'ONLINE_REQUIRED', reason: 'CARD_LIMITS' });
});

test('END: not a DT card (SELECT answered 6A82)', async (t) => {
  const { kernel } = setup(t);
  // Another card (e.g. a bank card) without the DT applet: it answers SELECT with 6A82.
  const other: ApduTransport = { transmit: async () => encodeResponse(new Uint8Array(0), SW.APP_NOT_FOUND) };
  t.deepEqual(await kernel.charge(readerFor(other), 1000), { kind: 'END', reason: 'NOT_DT_CARD', detail: '6A82' });
});

test('a card left in the middle of a command chain (a terminal killed mid-PAY, the card still powered): SELECT gets 6883, is sent once more, APPROVED', async (t) => {
  const { kernel } = setup(t);
  const c = await makeCard(pki);
  await selectApplet(c.transport);
  // The first block of a chained PAY (CLA 90 = 80 | chaining), and then nothing: the earlier terminal died.
  const block = await c.transport.transmit(Uint8Array.of(0x90, 0x30, 0x00, 0x00, 0x02, 0xa1, 0x00));
  t.deepEqual([...block.subarray(-2)], [0x90, 0x00], 'the card took the block and waits for the rest of the chain');
  const sent: string[] = [];
  const logging: ApduTransport = {
    transmit: async (apdu, o) => {
      sent.push(identifyCommand(apdu) ?? 'other');
      return c.transport.transmit(apdu, o);
    },
  };
  t.is((await kernel.charge(readerFor(logging), 1000)).kind, 'APPROVED');
  t.deepEqual(sent.slice(0, 2), ['SELECT', 'SELECT']);
  // Only once: a card that keeps answering 6883 is not a DT card this terminal can use.
  const stuck: ApduTransport = { transmit: async () => encodeResponse(new Uint8Array(0), SW.CHAIN_EXPECTED) };
  t.deepEqual(await kernel.charge(readerFor(stuck), 1000), { kind: 'END', reason: 'NOT_DT_CARD', detail: '6883' });
});

/** A reader with no card ever presented. */
class EmptyReader implements CardReader {
  readonly name = 'empty';
  waitForCard(o: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<CardSession> {
    return new Promise((_, reject) => {
      const timer = setTimeout(() => reject(new TimeoutError('card', o.timeoutMs ?? 0)), o.timeoutMs ?? 1e9);
      o.signal?.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(o.signal!.reason);
      });
    });
  }
  async close(): Promise<void> {}
}

test('END: no card presented in time (NO_CARD) and operator cancel (CANCELLED)', async (t) => {
  const { kernel } = setup(t);
  t.deepEqual(await kernel.charge(new EmptyReader(), 1000), { kind: 'END', reason: 'NO_CARD' });
  const ctl = new AbortController();
  setTimeout(() => ctl.abort(), 50);
  t.deepEqual(await kernel.charge(new EmptyReader(), 1000, { signal: ctl.signal }), { kind: 'END', reason: 'CANCELLED' });
});

test('a card that stops answering mid-PAY times out into PRESENT_CARD_AGAIN (per-APDU timeout), the attempt stays torn', async (t) => {
  const { journal, kernel } = setup(t);
  const c = await makeCard(pki);
  // Forwards everything, but the PAY answer never comes back (the card left the field).
  const hang: ApduTransport = {
    async transmit(apdu: Uint8Array, o?: TransmitOptions) {
      if (identifyCommand(apdu) === 'PAY')
        return new Promise<Uint8Array>((_, reject) => o?.signal?.addEventListener('abort', () => reject(o.signal!.reason)));
      return c.transport.transmit(apdu, o);
    },
  };
  const o = await kernel.charge(new TransportReader('hang', hang, { apduTimeoutMs: 200 }), 1000);
  t.is(o.kind, 'PRESENT_CARD_AGAIN');
  t.is(journal.tornAttempts().length, 1);
});

test('one tap at a time per reader: a concurrent charge on the same reader ends with READER (busy), the first still approves', async (t) => {
  const { kernel } = setup(t);
  const c = await makeCard(pki);
  const r = readerFor(c.transport);
  const [a, b] = await Promise.all([kernel.charge(r, 1000), kernel.charge(r, 2000)]);
  const outcomes = [a, b].map((o) => o.kind).sort();
  t.deepEqual(outcomes, ['APPROVED', 'END']);
  const end = [a, b].find((o) => o.kind === 'END')!;
  t.deepEqual(end, { kind: 'END', reason: 'READER', detail: 'READER_BUSY' });
  // And at the transport level: a second concurrent transmit is refused with a typed error.
  const session = await r.waitForCard();
  await t.throwsAsync(r.waitForCard(), { instanceOf: TransportBusyError });
  await session.release();
});

test('replaying an approved handover is recorded once (duplicate), never as a second payment', async (t) => {
  const { journal, kernel } = setup(t);
  const c = await makeCard(pki);
  const o = await kernel.charge(readerFor(c.transport), 42_000);
  t.is(o.kind, 'APPROVED');
  if (o.kind !== 'APPROVED') return;
  const p = o.payment;
  const again = journal.recordApproval({ ...p, inputs: [] });
  t.is(again.kind, 'duplicate');
  t.is(journal.listPayments().length, 1);
});

test('verifier: config.json picks native (default) or noble, anything else is refused; the kernel checks every signature with the one it is given', async (t) => {
  t.is(parseConfig({}).verifier, 'native');
  t.is(parseConfig({ verifier: 'noble' }).verifier, 'noble');
  t.throws(() => parseConfig({ verifier: 'openssl' }), { message: /verifier must be one of native, noble/ });
  for (const name of VERIFIERS) {
    const { dir, cleanup } = tempDir();
    const journal = makeJournal(pki, dir);
    t.teardown(() => {
      journal.close();
      cleanup();
    });
    let calls = 0;
    const inner = verifierByName(name);
    const counting = { verify: (s: Uint8Array, m: Uint8Array, k: Uint8Array) => (calls++, inner.verify(s, m, k)) };
    const kernel = new PaymentKernel({
      identity,
      journal,
      policy: TEST_POLICY,
      verifier: counting,
      timeouts: { cardMs: 2000, tapMs: 8000, pinMs: 2000 },
    });
    const c = await makeCard(pki);
    const o = await kernel.charge(readerFor(c.transport), 1_000);
    t.is(o.kind, 'APPROVED', name);
    t.true(calls >= 3, `${name}: the handover's signatures went through it (${calls} calls)`);
  }
  // A verifier that accepts nothing: even the terminal's own root does not verify, so the tap
  // ends before any card is touched (fail closed): no attempt, no payment, the card not charged.
  const { dir, cleanup } = tempDir();
  const journal = makeJournal(pki, dir);
  t.teardown(() => {
    journal.close();
    cleanup();
  });
  const kernel = new PaymentKernel({
    identity,
    journal,
    policy: TEST_POLICY,
    verifier: { verify: () => false },
    timeouts: { cardMs: 2000, tapMs: 8000, pinMs: 2000 },
  });
  const c = await makeCard(pki);
  const before = await getStatus(c.transport);
  const o = await kernel.charge(readerFor(c.transport), 1_000);
  t.deepEqual(o, { kind: 'END', reason: 'TERMINAL_TRUST', detail: 'BAD_SIGNATURE' });
  t.is(journal.listPayments().length, 0);
  t.is(journal.tornAttempts().length, 0);
  const after = await getStatus(c.transport);
  t.is(after.counter, before.counter);
  t.is(after.balance, before.balance);
});

/**
 * Flips one bit in the last data byte of the final piece of a PAY answer (the handover ends
 * with the transfer's signature) while `times` lasts: damage on the way, not at the card.
 */
function damagePayAnswer(inner: ApduTransport, times: number): ApduTransport {
  let inPay = false;
  let left = times;
  return {
    async transmit(apdu, o) {
      const r = await inner.transmit(apdu, o);
      if (identifyCommand(apdu) === 'PAY' && !isChainedBlock(apdu)) inPay = true;
      else if (apdu[1] !== 0xc0) inPay = false;
      const sw = (r[r.length - 2]! << 8) | r[r.length - 1]!;
      if (inPay && sw === SW.OK && r.length > 2 && left > 0) {
        left--;
        inPay = false;
        const d = r.slice();
        d[d.length - 3]! ^= 0x01;
        return d;
      }
      return r;
    },
  };
}

test('an answer damaged on the way (a signature no longer verifies): PRESENT_CARD_AGAIN, the retry gets the same transfer and pays once; a card whose answer is always bad is declined on the retry (CARD_ANSWER_INVALID)', async (t) => {
  const { journal, kernel } = setup(t);
  const c = await makeCard(pki);
  const before = await getStatus(c.transport);
  const first = await kernel.charge(readerFor(damagePayAnswer(c.transport, 1)), 2_000);
  t.is(first.kind, 'PRESENT_CARD_AGAIN');
  if (first.kind !== 'PRESENT_CARD_AGAIN') return;
  t.is(first.reason, 'DAMAGED_ANSWER');
  t.regex(first.detail ?? '', /^(TRANSFER_SIGNATURE|HANDOVER_CHAIN|TOKEN_INVALID|HISTORY_BROKEN)$/);
  t.is(journal.listPayments().length, 0);
  const retry = await kernel.charge(readerFor(c.transport), 2_000);
  t.is(retry.kind, 'APPROVED');
  if (retry.kind === 'APPROVED') t.true(retry.recovered);
  const after = await getStatus(c.transport);
  t.is(before.balance - after.balance, 2_000, 'paid once');
  t.is(after.counter, before.counter + 1, 'one transfer signed');
  t.is(journal.listPayments().length, 1);
  // The approval cleared the card's record: damage on a later tap gets its retry again.
  const again = await kernel.charge(readerFor(damagePayAnswer(c.transport, 1)), 2_500);
  t.is(again.kind, 'PRESENT_CARD_AGAIN');
  t.is((await kernel.charge(readerFor(c.transport), 2_500)).kind, 'APPROVED');

  // Every answer bad (a card that signs wrongly, or a link that always breaks it): one retry, then DECLINED CARD_ANSWER_INVALID.
  const { journal: j2, kernel: k2 } = setup(t);
  const bad = damagePayAnswer(c.transport, 10);
  const a = await k2.charge(readerFor(bad), 3_000);
  t.is(a.kind, 'PRESENT_CARD_AGAIN');
  const b = await k2.charge(readerFor(bad), 3_000);
  t.is(b.kind, 'DECLINED');
  if (b.kind === 'DECLINED') {
    t.is(b.reason, 'CARD_ANSWER_INVALID');
    t.regex(b.detail ?? '', /^(TRANSFER_SIGNATURE|HANDOVER_CHAIN|TOKEN_INVALID|HISTORY_BROKEN)\b/);
  }
  t.is(j2.listPayments().length, 0);
  t.is(j2.tornAttempts().length, 0, 'the chain is given up');
});

/** Rewrites the card's whole PAY answer (reassembled from its 61xx pieces) with `f`, and answers it in one piece. */
function rewritePayAnswer(inner: ApduTransport, f: (handover: Uint8Array) => Uint8Array): ApduTransport {
  return {
    async transmit(apdu, o) {
      let r = await inner.transmit(apdu, o);
      if (identifyCommand(apdu) !== 'PAY' || isChainedBlock(apdu)) return r;
      const parts: Uint8Array[] = [];
      for (;;) {
        const sw1 = r[r.length - 2]!;
        parts.push(r.subarray(0, r.length - 2));
        if (sw1 !== 0x61) break;
        r = await inner.transmit(new Uint8Array([0x00, 0xc0, 0x00, 0x00, r[r.length - 1]!]), o);
      }
      if (r[r.length - 2] !== 0x90) return r;
      const data = f(Buffer.concat(parts));
      return Buffer.concat([data, Buffer.from([0x90, 0x00])]);
    },
  };
}

test('issuing bank by reference (SPEC §3.6 banks): the terminal keeps the bank certificate it verified, names it, and the next card of that bank sends [card]', async (t) => {
  const { journal, kernel } = setup(t);
  const c1 = await makeCard(pki);
  t.deepEqual(journal.heldBanks(nowSec(), 16), []);
  const o1 = await kernel.charge(readerFor(c1.transport), 1_000);
  t.is(o1.kind, 'APPROVED');
  if (o1.kind !== 'APPROVED') return;
  t.is(decodeMessage('Handover', o1.payment.handover).chain.length, 2, 'the first card of a bank carries its certificate');
  t.deepEqual(journal.heldBanks(nowSec(), 16), [pki.bank.signer.kid]);
  const c2 = await makeCard(pki);
  const o2 = await kernel.charge(readerFor(c2.transport), 2_000);
  t.is(o2.kind, 'APPROVED');
  if (o2.kind !== 'APPROVED') return;
  const h2 = decodeMessage('Handover', o2.payment.handover);
  t.is(h2.chain.length, 1, 'the bank certificate is left out');
  t.true(o2.payment.handover.length < o1.payment.handover.length - 200);
});

test('issuing bank by reference fails closed: a card that leaves out a bank the terminal did not name, a wrong or forged certificate in the store', async (t) => {
  const bankKid = pki.bank.signer.kid;
  const dropBank = (b: Uint8Array) => {
    const h = decodeMessage('Handover', b);
    return encodeMessage('Handover', { ...h, chain: [h.chain[0]!] });
  };
  // 1. The terminal holds no bank certificate and named none; the card leaves its bank's out anyway.
  {
    const { journal, kernel } = setup(t);
    const c = await makeCard(pki);
    const before = await getStatus(c.transport);
    const bad = rewritePayAnswer(c.transport, dropBank);
    const a = await kernel.charge(readerFor(bad), 1_000);
    t.is(a.kind, 'PRESENT_CARD_AGAIN');
    const b = await kernel.charge(readerFor(bad), 1_000);
    t.like(b, { kind: 'DECLINED', reason: 'CARD_ANSWER_INVALID' });
    if (b.kind === 'DECLINED') t.regex(b.detail ?? '', /^HANDOVER_CHAIN: CERT_CHAIN_BROKEN/);
    t.is(journal.listPayments().length, 0);
    t.deepEqual(journal.heldBanks(nowSec(), 16), [], 'nothing learned from a refused answer');
    t.is((await getStatus(c.transport)).counter, before.counter + 1, 'the card signed once; its orphan is voided at its next sync');
  }
  // 2. A wrong certificate (another bank's, genuine) or a forged one (same key, not the root's) stored under the bank's kid:
  //    the terminal names the bank, the card leaves it out, the completed chain does not verify.
  const claims = openSigned('Certificate', pki.bank.cert).message;
  const template = {
    iss: 'x',
    sub: 'x',
    iat: claims.iat,
    nbf: claims.nbf,
    exp: claims.exp,
    role: Role.BANK,
    perms: BankPermission.ISSUING,
  };
  const other = issueCertificate(
    { ...template, publicKey: generateKeyPair((n) => new Uint8Array(randomBytes(n))).publicKey },
    pki.issuer.signer,
  );
  const forged = issueCertificate({ ...template, publicKey: pki.bank.keys.publicKey }, createDevPki().issuer.signer);
  for (const [label, cert] of [
    ['another bank', other],
    ['forged', forged],
  ] as const) {
    const { journal, kernel } = setup(t);
    journal.storeBankCertificate({ kid: bankKid, cert, nbf: 0, exp: nowSec() + 86_400 });
    const c = await makeCard(pki);
    const a = await kernel.charge(readerFor(c.transport), 1_000);
    t.is(a.kind, 'PRESENT_CARD_AGAIN', label);
    const b = await kernel.charge(readerFor(c.transport), 1_000);
    t.like(b, { kind: 'DECLINED', reason: 'CARD_ANSWER_INVALID' }, label);
    t.is(journal.listPayments().length, 0, label);
  }
});

test('history by reference (SPEC §3.6 held, §3.8 after): a card paying again sends only what the terminal lacks; the journal keeps the complete handover', async (t) => {
  const { journal, kernel } = setup(t);
  const c = await makeCard(pki);
  const wire: number[] = [];
  const sized = rewritePayAnswer(c.transport, (h) => {
    wire.push(h.length);
    return h;
  });
  for (const amount of [1_000, 2_000, 3_000]) t.is((await kernel.charge(readerFor(sized), amount)).kind, 'APPROVED');
  const payments = journal.listPayments().sort((a, b) => a.counter - b.counter);
  const stored = payments.map((p) => decodeMessage('Handover', p.handover));
  t.deepEqual(
    stored.map((h) => [h.history.length, h.after]),
    [
      [0, undefined],
      [1, undefined],
      [2, undefined],
    ],
    'journalled complete',
  );
  // On the wire, the second and third answers carried no history (the terminal named the newest it held).
  t.is(wire.length, 3);
  t.true(wire[2]! < payments[2]!.handover.length - 2 * 250);
  t.true(Math.abs(wire[2]! - wire[1]!) < 16, 'the answer does not grow with the history');
  t.deepEqual(journal.newestTransferOf(c.kid), payments[2]!.transferHash);
});

test('history by reference fails closed: a card that leaves out history the terminal did not name is declined', async (t) => {
  const { journal, kernel } = setup(t);
  const c = await makeCard(pki);
  for (const amount of [1_000, 2_000]) t.is((await kernel.charge(readerFor(c.transport), amount)).kind, 'APPROVED');
  const [p1] = journal.listPayments().sort((a, b) => a.counter - b.counter);
  // The terminal names the second payment; the card claims the terminal holds the first one instead
  // (which it does hold, but did not name) and sends only the link after it.
  const bad = rewritePayAnswer(c.transport, (b) => {
    const h = decodeMessage('Handover', b);
    return encodeMessage('Handover', {
      ...h,
      history: [decodeMessage('Handover', journal.listPayments()[1]!.handover).transfer],
      after: p1!.transferHash,
    });
  });
  t.is((await kernel.charge(readerFor(bad), 500)).kind, 'PRESENT_CARD_AGAIN');
  const d = await kernel.charge(readerFor(bad), 500);
  t.like(d, { kind: 'DECLINED', reason: 'CARD_ANSWER_INVALID' });
  if (d.kind === 'DECLINED') t.regex(d.detail ?? '', /^HISTORY_BROKEN/);
  t.is(journal.listPayments().length, 2);
});
