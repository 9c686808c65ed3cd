import test from 'ava';
import { MemoryStorage } from '@dt/firmware';
import {
  CardRemovedError,
  DtError,
  ErrorCode,
  HidHostTransport,
  SerialHostTransport,
  TransportLinkError,
  SERIAL_FRAME_TYPE,
  SERIAL_NAK_REASON,
  SerialFrameDecoder,
  encodeCommand,
  encodeFrame,
  selectCommand,
  getStatus,
  pay,
  selectApplet,
} from '@dt/protocol';
import type { HidReportChannel, SerialFrame } from '@dt/protocol';
import { nodeTimers } from '@dt/protocol/native';
import { FaultInjector, SerialCardEndpoint, SimulatedCard, VirtualHidCard, createLinkPair } from '../src/index.ts';
import { LOADED, assertValidHandover, readyCard, request } from './helpers.ts';

test("HID: PAY through 64-byte reports (VirtualHidCard + the protocol's HidHostTransport); the handover validates", async (t) => {
  const { card } = await readyCard();
  const device = new VirtualHidCard(card);
  let written = 0;
  let read = 0;
  const counted: HidReportChannel = {
    write: async (r) => {
      written++;
      t.is(r.length, 64);
      await device.write(r);
    },
    read: async (o) => {
      const r = await device.read(o);
      read++;
      return r;
    },
  };
  const hid = new HidHostTransport(counted, { timers: nodeTimers, channel: 0x4242 });
  await selectApplet(hid);
  const req = request(9_999);
  const handover = await pay(hid, req.bytes);
  assertValidHandover(handover, req, 9_999);
  t.true(written > 10, `request and GET RESPONSEs cut into many reports (${written})`);
  t.true(read > 10, `responses reassembled from many reports (${read})`);
  t.is((await getStatus(hid)).offlineValue, 9_999);
});

test('HID: a corrupted report fails the exchange with a link error (the framing error as cause); a power cut unplugs the device until reconnect', async (t) => {
  // Zero randomness: the corruption hits byte 0 (the channel), deterministically.
  const faults = new FaultInjector({}, (n) => new Uint8Array(n));
  const { card } = await readyCard({ faults });
  const device = new VirtualHidCard(card);
  const hid = new HidHostTransport(device, { timers: nodeTimers, channel: 0x0101, timeoutMs: 2000 });
  await selectApplet(hid);
  faults.arm({ corruptFrame: 1 });
  const e = await t.throwsAsync(getStatus(hid), { instanceOf: TransportLinkError });
  t.true(e.cause instanceof DtError);
  t.is((e.cause as DtError).code, ErrorCode.FRAME_CHANNEL);
  t.is((await getStatus(hid)).balance, LOADED[0]! + LOADED[1]!, 'the next exchange works');

  faults.arm({ cutBeforeApdu: { index: 1 } });
  await t.throwsAsync(getStatus(hid), { instanceOf: CardRemovedError });
  t.false(device.connected);
  await t.throwsAsync(hid.transmit(encodeCommand(selectCommand())), { instanceOf: CardRemovedError });
  device.reconnect();
  await selectApplet(hid);
  t.is((await getStatus(hid)).counter, 1);
});

test('HID: reports that break the framing rules are dropped by the device, which keeps serving', async (t) => {
  const card = new SimulatedCard({ storage: new MemoryStorage() });
  const device = new VirtualHidCard(card);
  const bad = new Uint8Array(64);
  bad[0] = 0x01;
  bad[1] = 0x01;
  bad[2] = 0x07; // not the APDU tag
  await device.write(bad);
  t.is(device.errors.length, 1);
  t.is(device.errors[0]!.code, ErrorCode.FRAME_MALFORMED);
  await t.throwsAsync(device.write(new Uint8Array(10)), { instanceOf: DtError });
  const hid = new HidHostTransport(device, { timers: nodeTimers });
  t.is((await selectApplet(hid)).applet, 1);
});

/** A card served on one end of an in-memory wire, a host transport on the other. */
async function serialPair(options: { timeoutMs?: number } = {}) {
  const ready = await readyCard();
  const [deviceEnd, hostEnd] = createLinkPair();
  const endpoint = new SerialCardEndpoint(ready.card, deviceEnd);
  const host = new SerialHostTransport(hostEnd, { timers: nodeTimers, frameTimeoutMs: options.timeoutMs ?? 1500, attempts: 4 });
  return { ...ready, endpoint, host, deviceEnd, hostEnd };
}

test('serial (in-memory wire): PAY with COBS/CRC frames; the handover validates', async (t) => {
  const { host, endpoint } = await serialPair();
  await host.reset();
  await selectApplet(host);
  const req = request(4_321);
  assertValidHandover(await pay(host, req.bytes), req, 4_321);
  t.is(host.retransmissions, 0);
  endpoint.stop();
});

test('serial (in-memory wire): a dropped response is recovered by retransmission without running the command twice', async (t) => {
  const { host, card } = await serialPair();
  await selectApplet(host);
  const before = await getStatus(host);
  const req = request(2_000);
  const blocks = Math.ceil(req.bytes.length / 255);
  // Drop the response frame to the last PAY block: the card has signed and
  // committed; the host hears nothing and resends the same frame.
  card.faults.arm({ dropFrame: blocks });
  const handover = await pay(host, req.bytes);
  assertValidHandover(handover, req, 2_000);
  t.is(host.retransmissions, 1);
  t.is(card.faults.events[0]!.kind, 'drop-frame');
  const after = await getStatus(host);
  t.is(after.counter, before.counter + 1, 'one signature, one counter');
  t.is(after.offlineCount, 1);
});

test('serial (in-memory wire): a corrupted response is recovered by retransmission', async (t) => {
  const { host, card } = await serialPair();
  await selectApplet(host);
  card.faults.arm({ corruptFrame: 1 });
  const s = await getStatus(host);
  t.is(s.balance, LOADED[0]! + LOADED[1]!);
  t.true(host.retransmissions >= 1);
  t.is(card.faults.events[0]!.kind, 'corrupt-frame');
});

test('serial (in-memory wire): the device NAKs a frame with a bad CRC and answers busy while a command runs', async (t) => {
  const { hostEnd, card } = await serialPair();
  // A slow card: the second command arrives while the first one runs.
  card.faults.arm({ delayMs: 300 });
  const decoder = new SerialFrameDecoder();
  const frames: SerialFrame[] = [];
  hostEnd.onData((c) => {
    for (const r of decoder.push(c)) if ('frame' in r) frames.push(r.frame);
  });
  const good = encodeFrame({ type: SERIAL_FRAME_TYPE.COMMAND, seq: 7, payload: encodeCommand(selectCommand()) });
  const bad = good.slice();
  bad[5] ^= 0x40; // inside the payload: the CRC no longer matches
  hostEnd.write(bad);
  // Two commands back to back: the second arrives while the first runs.
  hostEnd.write(good);
  hostEnd.write(encodeFrame({ type: SERIAL_FRAME_TYPE.COMMAND, seq: 8, payload: encodeCommand(selectCommand()) }));
  const deadline = Date.now() + 5000;
  while (frames.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const nak = frames.find((f) => f.type === SERIAL_FRAME_TYPE.ERROR && f.payload[0] === SERIAL_NAK_REASON.CRC);
  t.truthy(nak, 'NAK with reason CRC');
  t.is(nak!.seq, 7);
  t.truthy(
    frames.find((f) => f.type === SERIAL_FRAME_TYPE.ERROR && f.seq === 8 && f.payload[0] === SERIAL_NAK_REASON.BUSY),
    'NAK busy for seq 8',
  );
  const rsp = frames.find((f) => f.type === SERIAL_FRAME_TYPE.RESPONSE && f.seq === 7);
  t.truthy(rsp);
  t.deepEqual([...rsp!.payload.subarray(-2)], [0x90, 0x00]);
});
