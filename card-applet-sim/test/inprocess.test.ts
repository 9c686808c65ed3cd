import test from 'ava';
import { MemoryStorage } from '@dt/firmware';
import {
  CLA,
  CardStatusError,
  INS,
  PERSONALIZE_P1,
  SW,
  WrongPinError,
  decodeResponse,
  encodeCommand,
  exchange,
  selectCommand,
  getStatus,
  pay,
  selectApplet,
  verifyPin,
} from '@dt/protocol';
import type { ApduTransport } from '@dt/protocol';
import { CardNotPoweredError, FaultInjector, InProcessTransport, PowerCutError, SimulatedCard } from '../src/index.ts';
import { LIMITS, LOADED, PIN, assertValidHandover, readyCard, request } from './helpers.ts';

/** Wraps a transport and records every raw APDU pair. */
function recording(inner: ApduTransport): ApduTransport & { log: { command: Uint8Array; response: Uint8Array }[] } {
  const log: { command: Uint8Array; response: Uint8Array }[] = [];
  return {
    log,
    async transmit(apdu, options) {
      const response = await inner.transmit(apdu, options);
      log.push({ command: apdu, response });
      return response;
    },
  };
}

const sw = (r: Uint8Array): number => decodeResponse(r).sw;

test('in-process: personalized and loaded card pays; the request is chained and the handover comes back through GET RESPONSE', async (t) => {
  const { transport, cardKid } = await readyCard();
  const rec = recording(transport);
  await selectApplet(rec);
  const req = request(12_345);
  t.true(req.bytes.length > 255, 'the request needs command chaining');
  const handover = await pay(rec, req.bytes);
  t.true(handover.length > 256, 'the handover needs GET RESPONSE');
  const transfer = assertValidHandover(handover, req, 12_345);
  t.deepEqual(transfer.card, cardKid);
  t.is(transfer.counter, 2, 'counter 1 was the load request');
  const pay1 = rec.log.filter((e) => e.command[1] === INS.PAY);
  t.true(pay1.length >= 2);
  t.true(pay1.slice(0, -1).every((e) => e.command[0] === (CLA.PROPRIETARY | CLA.CHAINING) && sw(e.response) === SW.OK));
  t.is(pay1.at(-1)!.command[0], CLA.PROPRIETARY);
  t.is(sw(pay1.at(-1)!.response) & 0xff00, 0x6100, 'first piece announces more data');
  const getResponses = rec.log.filter((e) => e.command[1] === INS.GET_RESPONSE);
  t.true(getResponses.length >= 1);
  t.is(sw(getResponses.at(-1)!.response), SW.OK);
  const status = await getStatus(rec);
  t.is(status.balance + status.offlineValue, LOADED[0]! + LOADED[1]!, 'value on the card plus value paid equals value loaded');
  t.is(status.offlineCount, 1);
});

test('in-process: every error status word reaches the host unchanged', async (t) => {
  const { transport } = await readyCard();
  const raw = async (bytes: number[] | Uint8Array): Promise<number> => sw(await transport.transmit(Uint8Array.from(bytes)));
  const cmd = (c: Parameters<typeof encodeCommand>[0]) => raw(encodeCommand(c));
  await selectApplet(transport);

  t.is(await cmd({ cla: 0x80, ins: 0xee, p1: 0, p2: 0 }), SW.INS_NOT_SUPPORTED, '6D00');
  t.is(await cmd({ cla: 0xa0, ins: INS.GET_STATUS, p1: 0, p2: 0 }), SW.CLA_NOT_SUPPORTED, '6E00');
  t.is(await cmd({ cla: 0x80, ins: INS.GET_STATUS, p1: 1, p2: 0 }), SW.INCORRECT_P1P2, '6A86');
  t.is(await raw([0x80, 0x10, 0x00]), SW.WRONG_LENGTH, '6700 for an APDU shorter than its header');
  t.is(await raw([0x80, 0x20, 0x00, 0x00, 0x05, 0x31]), SW.WRONG_LENGTH, '6700 for Lc inconsistent with the length');
  t.is(await cmd({ cla: 0x00, ins: INS.GET_RESPONSE, p1: 0, p2: 0, le: 256 }), SW.CONDITIONS_NOT_SATISFIED, '6985: nothing pending');
  t.is(await cmd({ cla: 0x90, ins: INS.PAY, p1: 0, p2: 0, data: new Uint8Array(10) }), SW.OK, 'chained block accepted');
  t.is(await cmd({ cla: 0x80, ins: INS.GET_STATUS, p1: 0, p2: 0, le: 256 }), SW.CHAIN_EXPECTED, '6883: chain interrupted');
  // A chain left unfinished, then SELECT (a new session while the card stayed powered): 6883 the
  // first time, and selectApplet sends it once more.
  t.is(await cmd({ cla: 0x90, ins: INS.PAY, p1: 0, p2: 0, data: new Uint8Array(10) }), SW.OK);
  const sent: number[] = [];
  const counting: ApduTransport = { transmit: async (a, o) => (sent.push(a[1]!), transport.transmit(a, o)) };
  t.true((await selectApplet(counting)).locked);
  t.deepEqual(sent, [INS.SELECT, INS.SELECT]);
  t.is(await cmd({ cla: 0x80, ins: INS.VERIFY_PIN, p1: 0, p2: 0, data: Uint8Array.of(0x31, 0x32) }), SW.WRONG_DATA, '6A80: PIN too short');
  t.is(await cmd({ cla: 0x80, ins: INS.PERSONALIZE, p1: PERSONALIZE_P1.LOCK, p2: 0 }), SW.COMMAND_NOT_ALLOWED, '6986: locked');

  // PIN: 63Cx counts down, then 6983.
  const wrong = await t.throwsAsync(verifyPin(transport, '9999'), { instanceOf: WrongPinError });
  t.is(wrong.remaining, 2);
  await t.throwsAsync(verifyPin(transport, '9998'), { instanceOf: WrongPinError });
  await verifyPin(transport, PIN);
  t.is((await getStatus(transport)).pinTries, 3, 'a correct PIN restores the tries');
  await selectApplet(transport); // a new session: the verification is gone

  // PAY: 6982 above the CVM limit without PIN, 6985 above the per-payment limit, 6984 replayed nonce.
  const big = await t.throwsAsync(pay(transport, request(LIMITS.cvmLimit + 1).bytes), { instanceOf: CardStatusError });
  t.is(big.sw, SW.SECURITY_NOT_SATISFIED);
  const over = await t.throwsAsync(pay(transport, request(LIMITS.perPayment + 1).bytes), { instanceOf: CardStatusError });
  t.is(over.sw, SW.CONDITIONS_NOT_SATISFIED);
  const first = request(1_000);
  await pay(transport, first.bytes);
  const replay = await t.throwsAsync(pay(transport, request(1_000, { nonce: first.nonce }).bytes), { instanceOf: CardStatusError });
  t.is(replay.sw, SW.DATA_INVALID);
  const garbage = await t.throwsAsync(pay(transport, new Uint8Array(300).fill(7)), { instanceOf: CardStatusError });
  t.is(garbage.sw, SW.WRONG_DATA, '6A80 for a request that does not decode');

  for (let i = 0; i < 3; i++) await t.throwsAsync(verifyPin(transport, '0000'), { instanceOf: CardStatusError });
  const blocked = await t.throwsAsync(verifyPin(transport, PIN), { instanceOf: CardStatusError });
  t.is(blocked.sw, SW.PIN_BLOCKED, '6983 once blocked, even for the right PIN');

  t.is(await cmd({ ...selectCommand(), data: Uint8Array.of(0xa0, 0, 0, 0, 1) }), SW.APP_NOT_FOUND, '6A82');
});

test('in-process: power cut before an APDU changes nothing; the reader powers the card up again', async (t) => {
  const { card, transport } = await readyCard();
  await selectApplet(transport);
  const before = await getStatus(transport);
  card.faults.arm({ cutBeforeApdu: { ins: INS.PAY } });
  await t.throwsAsync(pay(transport, request(5_000).bytes), { instanceOf: PowerCutError });
  t.false(card.powered);
  await selectApplet(transport); // powers up
  const after = await getStatus(transport);
  t.is(after.counter, before.counter);
  t.is(after.balance, before.balance);
  t.is(card.faults.events[0]!.kind, 'cut-before-apdu');
});

test('in-process: power cut after PAY loses the answer but not the commit; the retry gets the same handover, nothing new signed', async (t) => {
  const { card, transport } = await readyCard();
  await selectApplet(transport);
  const req = request(7_000);
  const blocks = Math.ceil(req.bytes.length / 255);
  // The last block of the chained PAY runs the command.
  card.faults.arm({ cutAfterApdu: { index: 1 + blocks } });
  await t.throwsAsync(pay(transport, req.bytes), { instanceOf: PowerCutError });
  await selectApplet(transport);
  const s = await getStatus(transport);
  t.is(s.counter, 2, 'the transfer was committed before the answer was lost');
  t.deepEqual(s.lastNonce, req.nonce);
  const retry = request(7_000, { retryOf: req.nonce });
  const h1 = await pay(transport, retry.bytes);
  const h2 = await pay(transport, request(7_000, { retryOf: req.nonce }).bytes);
  t.deepEqual(h1, h2, 'byte for byte the stored handover');
  const transfer = assertValidHandover(h1, req, 7_000);
  t.is(transfer.counter, 2);
  t.is((await getStatus(transport)).counter, 2, 'no new counter for the retries');
});

test('in-process: no APDU gets through without power, and a concurrent APDU is refused', async (t) => {
  const card = new SimulatedCard({ storage: new MemoryStorage() });
  const strict = new InProcessTransport(card, { autoPowerOn: false });
  await t.throwsAsync(strict.transmit(encodeCommand(selectCommand())), { instanceOf: CardNotPoweredError });
  card.powerOn();
  const a = strict.transmit(encodeCommand(selectCommand()));
  await t.throwsAsync(strict.transmit(encodeCommand(selectCommand())), { message: /busy/ });
  t.is(sw(await a), SW.OK);
  // Power off clears the selection (volatile state): GET STATUS is refused until SELECT.
  card.powerOff();
  card.powerOn();
  t.is(sw(await strict.transmit(encodeCommand({ cla: 0x80, ins: INS.GET_STATUS, p1: 0, p2: 0, le: 256 }))), SW.COMMAND_NOT_ALLOWED);
});

test('in-process: a cut while the applet writes is final even if the applet would answer; the next power-up recovers', async (t) => {
  const { card, transport } = await readyCard();
  await selectApplet(transport);
  const before = await getStatus(transport);
  // VERIFY PIN commits the decremented retry counter first: cut that write.
  const injector: FaultInjector = card.faults;
  injector.arm({ cutAtWrite: 1, torn: true });
  await t.throwsAsync(verifyPin(transport, PIN), { instanceOf: PowerCutError });
  t.false(card.powered);
  await selectApplet(transport);
  const after = await getStatus(transport);
  t.true(after.pinTries === before.pinTries || after.pinTries === before.pinTries - 1, 'old or new state, never a third');
  t.is(after.counter, before.counter);
  t.is(after.balance, before.balance);
  t.false(after.pinVerified);
  await verifyPin(transport, PIN);
  t.is((await getStatus(transport)).pinTries, 3);
});

test('in-process: exchange reports the final status of a chained command answered with an error', async (t) => {
  const { transport } = await readyCard();
  await selectApplet(transport);
  // A request signed by a terminal is checked on the card: altering one byte
  // of the signature makes the whole (chained) PAY fail with 6A80.
  const req = request(1_000).bytes.slice();
  req[req.length - 5] ^= 0x01;
  const r = await exchange(transport, { cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data: req, le: 256 });
  t.is(r.sw, SW.WRONG_DATA);
  t.is(r.data.length, 0);
  t.is((await getStatus(transport)).counter, 1, 'nothing was signed');
});
