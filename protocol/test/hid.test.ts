import test from 'ava';
import type { ExecutionContext } from 'ava';
import fc from 'fast-check';

import { ErrorCode, isDtError } from '../src/errors.ts';
import type { DtError } from '../src/errors.ts';
import { HidFramer, getPayload, isComplete, makeBlocks, reduceResponse } from '../src/framing/index.ts';
import type { HidAccumulator } from '../src/framing/index.ts';

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).toUpperCase().padStart(2, '0')).join('');
}

function unhex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const zeros = (n: number): string => '00'.repeat(n);

function code(t: ExecutionContext, fn: () => unknown, expected: ErrorCode): void {
  const e = t.throws(fn);
  t.true(isDtError(e), `expected a DtError, got ${String(e)}`);
  t.is((e as DtError).code, expected);
}

function reduceAll(blocks: readonly Uint8Array[], channel: number): HidAccumulator | undefined {
  let acc: HidAccumulator | undefined;
  for (const b of blocks) acc = reduceResponse(acc, b, channel);
  return acc;
}

test('makeBlocks: one report, byte table', (t) => {
  // SELECT-like 5-byte APDU on channel 0x0101
  const blocks = makeBlocks(0x0101, unhex('E001000000'));
  t.is(blocks.length, 1);
  t.is(
    hex(blocks[0]!),
    // channel  tag  seq   length  data        padding
    '0101' + '05' + '0000' + '0005' + 'E001000000' + zeros(64 - 12),
  );
});

test('makeBlocks: response APDU 9000 on channel 0xABCD', (t) => {
  const blocks = makeBlocks(0xabcd, unhex('9000'));
  t.deepEqual(blocks.map(hex), ['ABCD' + '05' + '0000' + '0002' + '9000' + zeros(64 - 9)]);
});

test('makeBlocks: empty payload is one report with length 0', (t) => {
  const blocks = makeBlocks(1, new Uint8Array(0));
  t.deepEqual(blocks.map(hex), ['0001050000' + '0000' + zeros(57)]);
  const acc = reduceAll(blocks, 1);
  t.true(isComplete(acc));
  t.deepEqual(getPayload(acc), new Uint8Array(0));
});

test('makeBlocks: 200 bytes span 4 reports (57 + 59 + 59 + 25)', (t) => {
  const payload = Uint8Array.from({ length: 200 }, (_, i) => i);
  const blocks = makeBlocks(0x0101, payload);
  t.is(blocks.length, 4);
  t.true(blocks.every((b) => b.length === 64));
  // headers: channel 0101, tag 05, sequence 0..3
  t.deepEqual(
    blocks.map((b) => hex(b.subarray(0, 5))),
    ['0101050000', '0101050001', '0101050002', '0101050003'],
  );
  // the first report carries the length 0x00C8 and bytes 0..56
  t.is(hex(blocks[0]!.subarray(5, 9)), '00C80001');
  t.is(blocks[0]![63], 56);
  // the second report starts with byte 57
  t.is(blocks[1]![5], 57);
  // the last report: 200 - 57 - 59 - 59 = 25 bytes, then zero padding
  t.is(blocks[3]![5], 175);
  t.is(blocks[3]![5 + 24], 199);
  t.is(hex(blocks[3]!.subarray(30)), zeros(34));
  // reassembly
  let acc: HidAccumulator | undefined;
  for (let i = 0; i < blocks.length; i++) {
    t.false(isComplete(acc));
    acc = reduceResponse(acc, blocks[i]!, 0x0101);
    t.is(acc.sequence, i + 1);
    t.is(acc.expected, 200);
  }
  t.true(isComplete(acc));
  t.deepEqual(getPayload(acc), payload);
});

test('makeBlocks: exact fit, the last report has no padding', (t) => {
  const blocks = makeBlocks(7, new Uint8Array(57 + 59).fill(0xff));
  t.is(blocks.length, 2);
  t.is(blocks[1]![63], 0xff);
  t.deepEqual(getPayload(reduceAll(blocks, 7)), new Uint8Array(116).fill(0xff));
});

test('makeBlocks: limits', (t) => {
  code(t, () => makeBlocks(1, new Uint8Array(65536)), ErrorCode.TOO_LARGE);
  const max = new Uint8Array(65535).fill(0x5a);
  const blocks = makeBlocks(1, max);
  t.is(blocks.length, 1 + Math.ceil((65535 - 57) / 59));
  t.deepEqual(getPayload(reduceAll(blocks, 1)), max);
  t.throws(() => makeBlocks(0x10000, new Uint8Array(1)), { instanceOf: RangeError });
  t.throws(() => makeBlocks(1, new Uint8Array(1), 7), { instanceOf: RangeError });
});

test('reduceResponse: accepts longer reports (padding ignored)', (t) => {
  const [block] = makeBlocks(1, unhex('0102'), 64);
  const longer = new Uint8Array(65);
  longer.set(block!, 0);
  longer[64] = 0xee;
  t.deepEqual(getPayload(reduceResponse(undefined, longer, 1)), unhex('0102'));
  // and shorter reports that still hold the data
  t.deepEqual(getPayload(reduceResponse(undefined, block!.subarray(0, 9), 1)), unhex('0102'));
});

test('reduceResponse: invalid inputs', (t) => {
  const payload = Uint8Array.from({ length: 150 }, (_, i) => i);
  const [b0, b1, b2] = makeBlocks(0x0101, payload);
  // wrong channel
  code(t, () => reduceResponse(undefined, b0!, 0x0102), ErrorCode.FRAME_CHANNEL);
  // wrong tag
  const badTag = b0!.slice();
  badTag[2] = 0x02;
  code(t, () => reduceResponse(undefined, badTag, 0x0101), ErrorCode.FRAME_MALFORMED);
  // shorter than the common header
  code(t, () => reduceResponse(undefined, unhex('01010500'), 0x0101), ErrorCode.FRAME_MALFORMED);
  // first report without its length field
  code(t, () => reduceResponse(undefined, unhex('010105000000'), 0x0101), ErrorCode.FRAME_MALFORMED);
  // a later report with no data
  const acc0 = reduceResponse(undefined, b0!, 0x0101);
  code(t, () => reduceResponse(acc0, b1!.subarray(0, 5), 0x0101), ErrorCode.FRAME_MALFORMED);
  // starting with sequence 1
  code(t, () => reduceResponse(undefined, b1!, 0x0101), ErrorCode.FRAME_SEQUENCE);
  // skipping sequence 1
  code(t, () => reduceResponse(acc0, b2!, 0x0101), ErrorCode.FRAME_SEQUENCE);
  // repeating sequence 0
  code(t, () => reduceResponse(acc0, b0!, 0x0101), ErrorCode.FRAME_SEQUENCE);
  // a report after completion
  const done = reduceAll([b0!, b1!, b2!], 0x0101);
  t.true(isComplete(done));
  code(t, () => reduceResponse(done, b2!, 0x0101), ErrorCode.FRAME_SEQUENCE);
  // incomplete payload
  code(t, () => getPayload(acc0), ErrorCode.FRAME_MALFORMED);
  code(t, () => getPayload(undefined), ErrorCode.FRAME_MALFORMED);
});

test('reduceResponse is pure: the previous state can be reused', (t) => {
  const blocks = makeBlocks(
    9,
    Uint8Array.from({ length: 130 }, (_, i) => i),
  );
  const a1 = reduceResponse(undefined, blocks[0]!, 9);
  const snapshot = a1.data.slice();
  const a2 = reduceResponse(a1, blocks[1]!, 9);
  const a2again = reduceResponse(a1, blocks[1]!, 9);
  t.deepEqual(a1.data, snapshot);
  t.is(a1.sequence, 1);
  t.deepEqual(a2, a2again);
  t.not(a2.data, a2again.data);
});

test('HidFramer: frames, reassembles, and starts over after an error', (t) => {
  const host = new HidFramer(0x0101);
  const payload = Uint8Array.from({ length: 300 }, (_, i) => (i * 3) & 0xff);
  const reports = host.frame(payload);
  t.is(reports.length, 6);
  const device = new HidFramer(0x0101);
  for (let i = 0; i < reports.length - 1; i++) t.is(device.push(reports[i]!), undefined);
  t.deepEqual(device.push(reports[reports.length - 1]!), payload);
  // a fresh message can follow
  t.deepEqual(device.push(host.frame(Uint8Array.of(0x90, 0x00))[0]!), Uint8Array.of(0x90, 0x00));
  // error in the middle: partial state dropped, next message fine
  t.is(device.push(reports[0]!), undefined);
  code(t, () => device.push(reports[2]!), ErrorCode.FRAME_SEQUENCE);
  for (let i = 0; i < reports.length - 1; i++) t.is(device.push(reports[i]!), undefined);
  t.deepEqual(device.push(reports[reports.length - 1]!), payload);
  // reset
  device.push(reports[0]!);
  device.reset();
  code(t, () => device.push(reports[1]!), ErrorCode.FRAME_SEQUENCE);
});

test('HID framing: property round trip', (t) => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 3000 }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 8, max: 128 }),
      (payload, channel, packetSize) => {
        const blocks = makeBlocks(channel, payload, packetSize);
        t.true(blocks.every((b) => b.length === packetSize));
        const first = packetSize - 7;
        const next = packetSize - 5;
        const want = payload.length <= first ? 1 : 1 + Math.ceil((payload.length - first) / next);
        t.is(blocks.length, want);
        t.deepEqual(getPayload(reduceAll(blocks, channel)), payload);
      },
    ),
    { numRuns: 300 },
  );
});

test('HID framing: any single corruption of a header is detected (property)', (t) => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 100, maxLength: 400 }),
      fc.nat(),
      fc.integer({ min: 0, max: 4 }),
      fc.integer({ min: 1, max: 255 }),
      (payload, pick, offset, flip) => {
        const blocks = makeBlocks(0x0101, payload);
        const i = pick % blocks.length;
        const bad = blocks[i]!.slice();
        bad[offset] = bad[offset]! ^ flip;
        blocks[i] = bad;
        try {
          reduceAll(blocks, 0x0101);
          return false;
        } catch (e) {
          return isDtError(e, ErrorCode.FRAME_CHANNEL) || isDtError(e, ErrorCode.FRAME_MALFORMED) || isDtError(e, ErrorCode.FRAME_SEQUENCE);
        }
      },
    ),
  );
  t.pass();
});
