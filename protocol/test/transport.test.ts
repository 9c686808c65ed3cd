/**
 * The host-side transport layer (src/transport): the one busy guard, the
 * typed errors and their classifier, reader specs, and the serial and HID
 * host state machines against scripted devices on in-memory channels
 * (stale frames and reports, NAKs, busy, damaged answers, timeouts, a
 * device that goes away).
 */
import test from 'ava';
import {
  CardRemovedError,
  ExchangeGuard,
  HidHostTransport,
  ReaderUnavailableError,
  SERIAL_FRAME_TYPE,
  SERIAL_NAK_REASON,
  SerialFrameDecoder,
  SerialHostTransport,
  TransportBusyError,
  TransportError,
  TransportLinkError,
  TransportTimeoutError,
  encodeFrame,
  formatReaderSpec,
  makeBlocks,
  parseReaderSpec,
  transportFailureOf,
  DtError,
  type ByteChannel,
  type HidReportChannel,
  type SerialFrame,
  type AbortSignalLike,
} from '../src/index.ts';
import { nodeTimers } from '../src/native.ts';

// ---------------------------------------------------------------- guard and errors

test('ExchangeGuard: one run at a time, the second refused with TransportBusyError without running; free again afterwards', async (t) => {
  const guard = new ExchangeGuard('r1');
  let release!: () => void;
  const first = guard.run(() => new Promise<string>((r) => (release = () => r('first'))));
  t.true(guard.held);
  let ran = false;
  const e = await t.throwsAsync(
    guard.run(async () => {
      ran = true;
    }),
    { instanceOf: TransportBusyError },
  );
  t.false(ran);
  t.is(e.code, 'READER_BUSY');
  t.is(e.details.reader, 'r1');
  release();
  t.is(await first, 'first');
  t.false(guard.held);
  t.is(await guard.run(async () => 2), 2);
  // A run that throws releases the guard too.
  await t.throwsAsync(guard.run(() => Promise.reject(new Error('x'))));
  t.false(guard.held);
  guard.acquire();
  t.throws(() => guard.acquire(), { instanceOf: TransportBusyError });
  guard.release();
});

test('transportFailureOf: each typed error by kind; anything else is no transport failure', (t) => {
  t.is(transportFailureOf(new CardRemovedError()), 'card-removed');
  t.is(transportFailureOf(new TransportTimeoutError('slow', 10)), 'timeout');
  t.is(transportFailureOf(new TransportLinkError('broken')), 'link');
  t.is(transportFailureOf(new TransportBusyError('r')), 'busy');
  t.is(transportFailureOf(new ReaderUnavailableError('gone')), 'reader-unavailable');
  t.is(transportFailureOf(new Error('bug')), undefined);
  t.is(transportFailureOf(new DtError('FRAME_CRC', 'x')), undefined);
  t.is(transportFailureOf(Object.assign(new Error('look-alike'), { code: 'CARD_REMOVED' })), undefined);
  t.is(transportFailureOf('CARD_REMOVED'), undefined);
  const e = new CardRemovedError('left reader R', { reader: 'R' });
  t.true(e instanceof TransportError);
  t.is(e.message, 'left reader R', 'the message does not repeat the code');
});

test('parseReaderSpec: the forms dt-pos and dt-lab accept, round trip; empty names and unknown prefixes refused', (t) => {
  t.deepEqual(parseReaderSpec('pcsc'), { kind: 'pcsc' });
  t.deepEqual(parseReaderSpec('pcsc:ACR122'), { kind: 'pcsc', name: 'ACR122' });
  t.deepEqual(parseReaderSpec('pcsc:Virtual PCD 00 00'), { kind: 'pcsc', name: 'Virtual PCD 00 00' });
  t.deepEqual(parseReaderSpec('serial:/dev/ttyACM0'), { kind: 'serial', path: '/dev/ttyACM0' });
  t.deepEqual(parseReaderSpec('hid:/dev/hidraw3'), { kind: 'hid', path: '/dev/hidraw3' });
  t.deepEqual(parseReaderSpec('hid:1-2:1.0'), { kind: 'hid', path: '1-2:1.0' }, 'a path may hold colons');
  for (const bad of ['', 'serial:', 'hid:', 'pcsc:', 'usb:/dev/x', 'ACR122']) t.is(parseReaderSpec(bad), undefined, bad);
  t.deepEqual(parseReaderSpec('ACR122', { bareNames: true }), { kind: 'pcsc', name: 'ACR122' });
  t.is(parseReaderSpec('', { bareNames: true }), undefined);
  for (const s of ['pcsc', 'pcsc:A B', 'serial:/dev/ttyS0', 'hid:/dev/hidraw0']) t.is(formatReaderSpec(parseReaderSpec(s)!), s);
});

// ---------------------------------------------------------------- serial

/** A wire: bytes written on one end arrive at the other on a later macrotask. */
function wire(): [ByteChannel, ByteChannel] {
  const listeners: [Set<(c: Uint8Array) => void>, Set<(c: Uint8Array) => void>] = [new Set(), new Set()];
  const end = (me: 0 | 1): ByteChannel => ({
    write: (b) => {
      const copy = b.slice();
      setImmediate(() => listeners[1 - me]!.forEach((l) => l(copy)));
    },
    onData: (l) => {
      listeners[me].add(l);
      return () => listeners[me].delete(l);
    },
  });
  return [end(0), end(1)];
}

/** A scripted serial device: `answer` gets each frame it receives and returns the frames to send back. */
function serialDevice(
  channel: ByteChannel,
  answer: (f: SerialFrame, n: number) => (SerialFrame | Uint8Array)[],
): { received: SerialFrame[] } {
  const decoder = new SerialFrameDecoder();
  const received: SerialFrame[] = [];
  channel.onData((chunk) => {
    for (const r of decoder.push(chunk)) {
      if (!('frame' in r)) continue;
      received.push(r.frame);
      for (const out of answer(r.frame, received.length)) channel.write(out instanceof Uint8Array ? out : encodeFrame(out));
    }
  });
  return { received };
}

const rsp = (seq: number, ...bytes: number[]): SerialFrame => ({ type: SERIAL_FRAME_TYPE.RESPONSE, seq, payload: Uint8Array.from(bytes) });
const nak = (seq: number, reason: number): SerialFrame => ({ type: SERIAL_FRAME_TYPE.ERROR, seq, payload: Uint8Array.of(reason) });

test('serial: RESET then a command; stale answers (other seq) are ignored, the answer to this seq is taken', async (t) => {
  const [host, dev] = wire();
  const device = serialDevice(dev, (f) => {
    if (f.type === SERIAL_FRAME_TYPE.RESET) return [{ type: SERIAL_FRAME_TYPE.RESET, seq: f.seq, payload: new Uint8Array(0) }];
    // A late answer to an older frame first, then the real one.
    return [rsp((f.seq - 1) & 0xff, 0x6f, 0x00), rsp(f.seq, 0x01, 0x90, 0x00)];
  });
  const tr = new SerialHostTransport(host, { timers: nodeTimers, frameTimeoutMs: 2000 });
  await tr.reset();
  t.deepEqual([...(await tr.transmit(Uint8Array.of(0x80, 0x10, 0, 0)))], [0x01, 0x90, 0x00]);
  t.is(tr.retransmissions, 0);
  t.deepEqual(
    device.received.map((f) => [f.type, f.seq]),
    [
      [SERIAL_FRAME_TYPE.RESET, 1],
      [SERIAL_FRAME_TYPE.COMMAND, 2],
    ],
  );
  tr.close();
});

test('serial: a NAK and a damaged answer make the host resend the same frame (same seq, same bytes)', async (t) => {
  const [host, dev] = wire();
  const device = serialDevice(dev, (f, n) => {
    if (n === 1) return [nak(f.seq, SERIAL_NAK_REASON.CRC)];
    if (n === 2) {
      const damaged = encodeFrame(rsp(f.seq, 0x90, 0x00));
      damaged[3] ^= 0x55;
      return [damaged];
    }
    return [rsp(f.seq, 0x90, 0x00)];
  });
  const tr = new SerialHostTransport(host, { timers: nodeTimers, frameTimeoutMs: 5000 });
  t.deepEqual([...(await tr.transmit(Uint8Array.of(1, 2, 3, 4)))], [0x90, 0x00]);
  t.is(tr.retransmissions, 2);
  t.is(device.received.length, 3);
  t.true(device.received.every((f) => f.seq === 1 && f.payload.join() === '1,2,3,4'));
});

test('serial: NAK busy: the host keeps listening and takes the answer of the running command without resending', async (t) => {
  const [host, dev] = wire();
  const device = serialDevice(dev, (f) => {
    setTimeout(() => dev.write(encodeFrame(rsp(f.seq, 0x90, 0x00))), 30);
    return [nak(f.seq, SERIAL_NAK_REASON.BUSY)];
  });
  const tr = new SerialHostTransport(host, { timers: nodeTimers, frameTimeoutMs: 5000 });
  t.deepEqual([...(await tr.transmit(Uint8Array.of(0, 0xa4, 4, 0)))], [0x90, 0x00]);
  t.is(device.received.length, 1);
  t.is(tr.retransmissions, 0);
});

test('serial: a silent device: every attempt times out, then TransportLinkError (a lost card, not a bug)', async (t) => {
  const [host, dev] = wire();
  const device = serialDevice(dev, () => []);
  const tr = new SerialHostTransport(host, { timers: nodeTimers, frameTimeoutMs: 30, attempts: 3, name: 'serial:/dev/x' });
  const e = await t.throwsAsync(tr.transmit(Uint8Array.of(0, 0, 0, 0)), { instanceOf: TransportLinkError });
  t.is(transportFailureOf(e), 'link');
  t.is(e.details.attempts, 3);
  t.is(device.received.length, 3);
  t.is(tr.retransmissions, 2);
});

test('serial: a second exchange while one is in flight is refused with TransportBusyError, nothing sent for it', async (t) => {
  const [host, dev] = wire();
  const device = serialDevice(dev, (f) => {
    setTimeout(() => dev.write(encodeFrame(rsp(f.seq, 0x90, 0x00))), 30);
    return [];
  });
  const tr = new SerialHostTransport(host, { timers: nodeTimers, frameTimeoutMs: 5000 });
  const first = tr.transmit(Uint8Array.of(1, 1, 1, 1));
  await t.throwsAsync(tr.transmit(Uint8Array.of(2, 2, 2, 2)), { instanceOf: TransportBusyError });
  t.deepEqual([...(await first)], [0x90, 0x00]);
  t.is(device.received.length, 1);
  t.deepEqual([...(await tr.transmit(Uint8Array.of(3, 3, 3, 3)))], [0x90, 0x00], 'free again');
});

test('serial: an abort rejects with the signal reason at once', async (t) => {
  const [host, dev] = wire();
  serialDevice(dev, () => []);
  const tr = new SerialHostTransport(host, { timers: nodeTimers, frameTimeoutMs: 60_000 });
  const ctl = new AbortController();
  const p = tr.transmit(Uint8Array.of(0, 0, 0, 0), { signal: ctl.signal });
  setTimeout(() => ctl.abort(new Error('operator')), 20);
  await t.throwsAsync(p, { message: 'operator' });
});

// ---------------------------------------------------------------- HID

/** A scripted HID device: reassembles nothing, answers each first report with the reports `answer` returns. */
class ScriptedHid implements HidReportChannel {
  readonly #queue: Uint8Array[] = [];
  #waiter: { resolve: (r: Uint8Array) => void; reject: (e: unknown) => void } | undefined;
  written: Uint8Array[] = [];
  #gone: Error | undefined;
  constructor(readonly answer: (first: Uint8Array, n: number) => Uint8Array[] | Error) {}
  async write(report: Uint8Array): Promise<void> {
    this.written.push(report);
    if (((report[3]! << 8) | report[4]!) !== 0) return;
    const out = this.answer(report, this.written.length);
    if (out instanceof Error) {
      this.#gone = out;
      const w = this.#waiter;
      this.#waiter = undefined;
      w?.reject(out);
      return;
    }
    for (const r of out) this.push(r);
  }
  push(r: Uint8Array): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    if (w) w.resolve(r);
    else this.#queue.push(r);
  }
  read(o: { signal?: AbortSignalLike } = {}): Promise<Uint8Array> {
    if (this.#gone) return Promise.reject(this.#gone);
    const next = this.#queue.shift();
    if (next) return Promise.resolve(next);
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      this.#waiter = waiter;
      o.signal?.addEventListener(
        'abort',
        () => {
          if (this.#waiter === waiter) this.#waiter = undefined;
          reject(o.signal!.reason);
        },
        { once: true },
      );
    });
  }
}

const longAnswer = Uint8Array.from({ length: 150 }, (_, i) => i & 0xff);

test('HID: a multi-report answer is reassembled; continuation reports left from a failed exchange are skipped', async (t) => {
  const stale = makeBlocks(
    0x0101,
    Uint8Array.from({ length: 200 }, () => 0xee),
  ).slice(1); // sequence 1, 2, ...
  const hid = new ScriptedHid(() => [...stale, ...makeBlocks(0x0101, longAnswer)]);
  const tr = new HidHostTransport(hid, { timers: nodeTimers });
  t.deepEqual([...(await tr.transmit(Uint8Array.of(0x80, 0x10, 0, 0)))], [...longAnswer]);
  t.is(tr.staleReports, stale.length);
  t.true(stale.length >= 2);
});

test('HID: no complete answer in time → TransportTimeoutError; the next exchange works', async (t) => {
  let n = 0;
  const hid = new ScriptedHid(() => (++n === 1 ? makeBlocks(0x0101, longAnswer).slice(0, 1) : makeBlocks(0x0101, Uint8Array.of(0x90, 0))));
  const tr = new HidHostTransport(hid, { timers: nodeTimers, timeoutMs: 50 });
  const e = await t.throwsAsync(tr.transmit(Uint8Array.of(1, 2, 3, 4)), { instanceOf: TransportTimeoutError });
  t.is(transportFailureOf(e), 'timeout');
  t.deepEqual([...(await tr.transmit(Uint8Array.of(1, 2, 3, 4)))], [0x90, 0]);
});

test('HID: a report of another channel fails the exchange with TransportLinkError (the framing error as cause)', async (t) => {
  const hid = new ScriptedHid(() => makeBlocks(0x4242, Uint8Array.of(0x90, 0)));
  const tr = new HidHostTransport(hid, { timers: nodeTimers, channel: 0x0101 });
  const e = await t.throwsAsync(tr.transmit(Uint8Array.of(1, 2, 3, 4)), { instanceOf: TransportLinkError });
  t.is(e.details.frame, 'FRAME_CHANNEL');
  t.true(e.cause instanceof DtError);
});

test('HID: a device that goes away keeps its CardRemovedError; an untyped device failure is a link error', async (t) => {
  const gone = new HidHostTransport(new ScriptedHid(() => new CardRemovedError('HID device gone')), { timers: nodeTimers });
  await t.throwsAsync(gone.transmit(Uint8Array.of(1, 2, 3, 4)), { instanceOf: CardRemovedError });
  const broken: HidReportChannel = {
    write: () => {
      throw new Error('EIO');
    },
    read: () => new Promise(() => {}),
  };
  const e = await t.throwsAsync(new HidHostTransport(broken, { timers: nodeTimers }).transmit(Uint8Array.of(1, 2, 3, 4)), {
    instanceOf: TransportLinkError,
  });
  t.regex(e.message, /EIO/);
});

test('HID: one exchange at a time (TransportBusyError), and an abort rejects with the signal reason', async (t) => {
  const hid = new ScriptedHid(() => []);
  const tr = new HidHostTransport(hid, { timers: nodeTimers, timeoutMs: 60_000 });
  const ctl = new AbortController();
  const first = tr.transmit(Uint8Array.of(1, 2, 3, 4), { signal: ctl.signal });
  await t.throwsAsync(tr.transmit(Uint8Array.of(1, 2, 3, 4)), { instanceOf: TransportBusyError });
  ctl.abort(new Error('operator'));
  await t.throwsAsync(first, { message: 'operator' });
  hid.push(makeBlocks(0x0101, Uint8Array.of(0x90, 0))[0]!);
  t.deepEqual([...(await tr.transmit(Uint8Array.of(1, 2, 3, 4)))], [0x90, 0], 'free again after the abort');
});
