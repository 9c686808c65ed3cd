import { crc32 as zlibCrc32 } from 'node:zlib';

import test from 'ava';
import type { ExecutionContext } from 'ava';
import fc from 'fast-check';

import { ErrorCode, isDtError } from '../src/errors.ts';
import type { DtError } from '../src/errors.ts';
import {
  SERIAL_FRAME_TYPE,
  SERIAL_NAK_REASON,
  SerialFrameDecoder,
  cobsDecode,
  cobsEncode,
  cobsMaxEncodedLength,
  crc32,
  decodeFrame,
  encodeFrame,
  nakReasonFor,
} from '../src/framing/index.ts';
import type { SerialDecodeResult, SerialFrame, SerialFrameType } from '../src/framing/index.ts';

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).toUpperCase().padStart(2, '0')).join('');
}

function unhex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Bytes from..to inclusive, as hex. */
function run(from: number, to: number): string {
  let s = '';
  for (let b = from; b <= to; b++) s += b.toString(16).toUpperCase().padStart(2, '0');
  return s;
}

function code(t: ExecutionContext, fn: () => unknown, expected: ErrorCode): void {
  const e = t.throws(fn);
  t.true(isDtError(e), `expected a DtError, got ${String(e)}`);
  t.is((e as DtError).code, expected);
}

/** Summarizes decoder output as strings for deepEqual. */
function show(results: readonly SerialDecodeResult[]): string[] {
  return results.map((r) => ('frame' in r ? `frame ${r.frame.type}/${r.frame.seq}/${hex(r.frame.payload)}` : `error ${r.error.code}`));
}

// ---------------------------------------------------------------------------
// COBS
// ---------------------------------------------------------------------------

// The examples of Wikipedia's "Consistent Overhead Byte Stuffing" article.
const cobsVectors: Array<[string, string, string]> = [
  ['one zero', '00', '0101'],
  ['two zeros', '0000', '010101'],
  ['zero, byte, zero', '001100', '01021101'],
  ['zero in the middle', '11220033', '0311220233'],
  ['no zero', '11223344', '0511223344'],
  ['trailing zeros', '11000000', '0211010101'],
  ['254 non-zero bytes', run(0x01, 0xfe), 'FF' + run(0x01, 0xfe)],
  ['zero then 254 non-zero bytes', '00' + run(0x01, 0xfe), '01FF' + run(0x01, 0xfe)],
  ['255 non-zero bytes', run(0x01, 0xff), 'FF' + run(0x01, 0xfe) + '02FF'],
  ['254 non-zero bytes then zero', run(0x02, 0xff) + '00', 'FF' + run(0x02, 0xff) + '0101'],
  ['253 non-zero bytes, zero, byte', run(0x03, 0xff) + '0001', 'FE' + run(0x03, 0xff) + '0201'],
  ['empty', '', '01'],
];

for (const [name, plain, encoded] of cobsVectors) {
  test(`COBS: ${name}`, (t) => {
    t.is(hex(cobsEncode(unhex(plain))), encoded);
    t.is(hex(cobsDecode(unhex(encoded))), plain);
  });
}

test('COBS: invalid inputs', (t) => {
  code(t, () => cobsDecode(new Uint8Array(0)), ErrorCode.FRAME_MALFORMED);
  code(t, () => cobsDecode(unhex('0311002233')), ErrorCode.FRAME_MALFORMED); // zero inside a run
  code(t, () => cobsDecode(unhex('00')), ErrorCode.FRAME_MALFORMED); // zero code byte
  code(t, () => cobsDecode(unhex('051122')), ErrorCode.FRAME_MALFORMED); // run past the end
  code(t, () => cobsDecode(unhex('FF' + run(1, 0xfd))), ErrorCode.FRAME_MALFORMED); // 253 of 254
});

test('COBS: property round trip, no zero in the output, bounded overhead', (t) => {
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 2000 }), fc.uint8Array({ maxLength: 2000, min: 1 })), (data) => {
      const encoded = cobsEncode(data);
      t.false(encoded.includes(0));
      t.true(encoded.length <= cobsMaxEncodedLength(data.length));
      t.deepEqual(cobsDecode(encoded), data);
    }),
    { numRuns: 300 },
  );
});

// ---------------------------------------------------------------------------
// CRC-32
// ---------------------------------------------------------------------------

test('CRC-32/IEEE check values', (t) => {
  t.is(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
  t.is(crc32(new Uint8Array(0)), 0);
  t.is(crc32(Uint8Array.of(0)), 0xd202ef8d);
  t.is(crc32(new TextEncoder().encode('The quick brown fox jumps over the lazy dog')), 0x414fa339);
});

test('CRC-32 agrees with zlib (property)', (t) => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 1000 }), (data) => crc32(data) === zlibCrc32(data)));
  t.pass();
});

// ---------------------------------------------------------------------------
// frames
// ---------------------------------------------------------------------------

test('encodeFrame: ping, byte table', (t) => {
  // body: type 04, seq 00, no payload, CRC-32(04 00) = 0x25B5D7FB big-endian
  t.is(crc32(unhex('0400')), 0x25b5d7fb);
  t.is(zlibCrc32(unhex('0400')), 0x25b5d7fb);
  const wire = encodeFrame({ type: SERIAL_FRAME_TYPE.RESET, seq: 0, payload: new Uint8Array(0) });
  // COBS: 04 00 25 B5 D7 FB -> 02 04 | 05 25 B5 D7 FB, then the delimiter
  t.is(hex(wire), '02040525B5D7FB00');
  t.deepEqual(decodeFrame(wire.subarray(0, -1)), { type: 4, seq: 0, payload: new Uint8Array(0) });
});

test('encodeFrame: SELECT command, byte table', (t) => {
  const apdu = unhex('00A404000AF0445457414C4C45540100');
  const frame: SerialFrame = { type: SERIAL_FRAME_TYPE.COMMAND, seq: 0x01, payload: apdu };
  // CRC-32 over type | seq | payload, cross-checked with zlib
  t.is(crc32(Uint8Array.of(0x01, 0x01, ...apdu)), 0x07044a70);
  t.is(zlibCrc32(Uint8Array.of(0x01, 0x01, ...apdu)), 0x07044a70);
  const wire = encodeFrame(frame);
  t.is(
    hex(wire),
    // COBS runs of the body 01 01 | 00 | A4 04 | 00 | 0A F0 .. 54 01 | 00 | CRC, then the delimiter
    '03' + '0101' + '03' + 'A404' + '0C' + '0AF0445457414C4C455401' + '05' + '07044A70' + '00',
  );
  t.deepEqual(decodeFrame(wire.subarray(0, -1)), frame);
});

test('encodeFrame: invalid inputs', (t) => {
  code(t, () => encodeFrame({ type: 9 as SerialFrameType, seq: 0, payload: new Uint8Array(0) }), ErrorCode.FRAME_MALFORMED);
  code(t, () => encodeFrame({ type: 1, seq: 256, payload: new Uint8Array(0) }), ErrorCode.FRAME_MALFORMED);
  code(t, () => encodeFrame({ type: 1, seq: 0, payload: new Uint8Array(4097) }), ErrorCode.TOO_LARGE);
  code(t, () => encodeFrame({ type: 1, seq: 0, payload: new Uint8Array(17) }, 16), ErrorCode.TOO_LARGE);
  t.notThrows(() => encodeFrame({ type: 1, seq: 255, payload: new Uint8Array(4096) }));
});

test('decodeFrame: invalid inputs', (t) => {
  const wire = encodeFrame({ type: 2, seq: 7, payload: unhex('CAFE9000') });
  const cobs = wire.subarray(0, -1);
  // a flipped payload byte: CRC mismatch
  const flipped = cobsDecode(cobs);
  flipped[3] = flipped[3]! ^ 0x01;
  code(t, () => decodeFrame(cobsEncode(flipped)), ErrorCode.FRAME_CRC);
  // a flipped CRC byte
  const badCrc = cobsDecode(cobs);
  badCrc[badCrc.length - 1] = badCrc[badCrc.length - 1]! ^ 0x80;
  code(t, () => decodeFrame(cobsEncode(badCrc)), ErrorCode.FRAME_CRC);
  // body shorter than type + seq + CRC
  code(t, () => decodeFrame(cobsEncode(unhex('0201020304'))), ErrorCode.FRAME_MALFORMED);
  // invalid COBS
  code(t, () => decodeFrame(unhex('0911')), ErrorCode.FRAME_MALFORMED);
  // valid CRC, unknown type
  const body = unhex('0500' + '00000000');
  const c = crc32(body.subarray(0, 2));
  body.set([c >>> 24, (c >>> 16) & 0xff, (c >>> 8) & 0xff, c & 0xff], 2);
  code(t, () => decodeFrame(cobsEncode(body)), ErrorCode.FRAME_MALFORMED);
  // payload over the limit
  code(t, () => decodeFrame(cobs, 3), ErrorCode.TOO_LARGE);
  t.is(decodeFrame(cobs, 4).seq, 7);
});

test('nakReasonFor maps decode errors to NAK reason bytes', (t) => {
  const errorOf = (fn: () => unknown): DtError => t.throws(fn) as DtError;
  t.is(nakReasonFor(errorOf(() => decodeFrame(unhex('0911')))), SERIAL_NAK_REASON.MALFORMED);
  const body = cobsDecode(encodeFrame({ type: 1, seq: 0, payload: unhex('01') }).subarray(0, -1));
  body[2] = 0x02;
  t.is(nakReasonFor(errorOf(() => decodeFrame(cobsEncode(body)))), SERIAL_NAK_REASON.CRC);
  t.is(nakReasonFor(errorOf(() => encodeFrame({ type: 1, seq: 0, payload: new Uint8Array(5000) }))), SERIAL_NAK_REASON.TOO_LARGE);
});

// ---------------------------------------------------------------------------
// stream decoder
// ---------------------------------------------------------------------------

const f1: SerialFrame = { type: 1, seq: 1, payload: unhex('00A404000AF0445457414C4C45540100') };
const f2: SerialFrame = { type: 2, seq: 1, payload: unhex('0102030000009000') };
const f3: SerialFrame = { type: 4, seq: 2, payload: new Uint8Array(0) };
const show1 = 'frame 1/1/00A404000AF0445457414C4C45540100';
const show2 = 'frame 2/1/0102030000009000';
const show3 = 'frame 4/2/';

function concat(...parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(parts.flatMap((p) => Array.from(p)));
}

test('decoder: frames in one chunk', (t) => {
  const d = new SerialFrameDecoder();
  t.deepEqual(show(d.push(concat(encodeFrame(f1), encodeFrame(f2), encodeFrame(f3)))), [show1, show2, show3]);
  t.is(d.buffered, 0);
});

test('decoder: frames split at every possible point', (t) => {
  const stream = concat(encodeFrame(f1), encodeFrame(f2));
  for (let cut = 0; cut <= stream.length; cut++) {
    const d = new SerialFrameDecoder();
    const out = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))];
    t.deepEqual(show(out), [show1, show2], `cut at ${cut}`);
  }
  // byte by byte
  const d = new SerialFrameDecoder();
  const out: SerialDecodeResult[] = [];
  for (const b of stream) out.push(...d.push(Uint8Array.of(b)));
  t.deepEqual(show(out), [show1, show2]);
});

test('decoder: a corrupted byte gives FRAME_CRC and the next frame still decodes', (t) => {
  const bad = encodeFrame(f1);
  bad[8] = bad[8] === 0x41 ? 0x42 : 0x41; // any non-zero change inside the frame
  const d = new SerialFrameDecoder();
  t.deepEqual(show(d.push(concat(bad, encodeFrame(f2)))), ['error FRAME_CRC', show2]);
});

test('decoder: a lost byte gives an error and the next frame still decodes', (t) => {
  const wire = encodeFrame(f2);
  const lost = concat(wire.subarray(0, 3), wire.subarray(4));
  const d = new SerialFrameDecoder();
  const out = show(d.push(concat(lost, encodeFrame(f3))));
  t.is(out.length, 2);
  t.regex(out[0]!, /^error FRAME_(CRC|MALFORMED)$/);
  t.is(out[1], show3);
});

test('decoder: garbage before a frame', (t) => {
  // garbage without a zero merges with the next frame, which is lost...
  const d1 = new SerialFrameDecoder();
  t.deepEqual(show(d1.push(concat(unhex('DEADBEEF'), encodeFrame(f1), encodeFrame(f2)))).slice(1), [show2]);
  // ...unless the sender flushes with a leading 0x00, which costs nothing
  const d2 = new SerialFrameDecoder();
  t.deepEqual(show(d2.push(concat(unhex('DEADBEEF00'), encodeFrame(f1)))), ['error FRAME_MALFORMED', show1]);
  const d3 = new SerialFrameDecoder();
  t.deepEqual(show(d3.push(concat(unhex('123400'), unhex('00'), encodeFrame(f1)))), ['error FRAME_MALFORMED', show1]);
  // garbage made of zeros only is ignored
  const d4 = new SerialFrameDecoder();
  t.deepEqual(show(d4.push(concat(unhex('000000'), encodeFrame(f1), unhex('00'), encodeFrame(f3)))), [show1, show3]);
});

test('decoder: an oversize frame is dropped with TOO_LARGE and the decoder resyncs', (t) => {
  const d = new SerialFrameDecoder({ maxPayload: 16 });
  const big = encodeFrame({ type: 2, seq: 3, payload: new Uint8Array(100).fill(0x11) });
  const small = encodeFrame({ type: 2, seq: 4, payload: unhex('9000') });
  // the error comes as soon as the limit is crossed, before the delimiter
  const first = d.push(big.subarray(0, 50));
  t.deepEqual(show(first), ['error TOO_LARGE']);
  t.is(d.buffered, 0);
  t.deepEqual(show(d.push(big.subarray(50))), []);
  t.deepEqual(show(d.push(small)), ['frame 2/4/9000']);
  // at the limit is fine
  const at = encodeFrame({ type: 2, seq: 5, payload: new Uint8Array(16).fill(0x22) }, 16);
  t.deepEqual(show(d.push(at)), [`frame 2/5/${'22'.repeat(16)}`]);
  // a long run of garbage without any zero yields a single error
  const d2 = new SerialFrameDecoder({ maxPayload: 16 });
  const noise = new Uint8Array(10000).fill(0x5a);
  t.deepEqual(show([...d2.push(noise), ...d2.push(noise)]), ['error TOO_LARGE']);
  t.deepEqual(show(d2.push(concat(unhex('00'), small))), ['frame 2/4/9000']);
});

test('decoder: default limit accepts 4096-byte payloads and refuses more', (t) => {
  const d = new SerialFrameDecoder();
  const max = new Uint8Array(4096).fill(0xff);
  const out = d.push(encodeFrame({ type: 2, seq: 9, payload: max }));
  t.is(out.length, 1);
  t.deepEqual('frame' in out[0]! ? out[0].frame.payload : undefined, max);
  const over = encodeFrame({ type: 2, seq: 9, payload: new Uint8Array(4097).fill(0xff) }, 5000);
  t.deepEqual(show(d.push(over)), ['error TOO_LARGE']);
});

test('decoder: reset drops a partial frame', (t) => {
  const d = new SerialFrameDecoder();
  const wire = encodeFrame(f1);
  d.push(wire.subarray(0, 5));
  t.is(d.buffered, 5);
  d.reset();
  t.deepEqual(show(d.push(wire)), [show1]);
});

const frameArb: fc.Arbitrary<SerialFrame> = fc.record({
  type: fc.constantFrom(1, 2, 3, 4) as fc.Arbitrary<SerialFrameType>,
  seq: fc.integer({ min: 0, max: 255 }),
  payload: fc.uint8Array({ maxLength: 600 }),
});

test('serial framing: frames survive any chunking (property)', (t) => {
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (frames, cuts) => {
      const stream = concat(...frames.map((f) => encodeFrame(f)));
      const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
      const d = new SerialFrameDecoder();
      const out: SerialDecodeResult[] = [];
      let prev = 0;
      for (const p of [...points, stream.length]) {
        out.push(...d.push(stream.subarray(prev, p)));
        prev = p;
      }
      t.deepEqual(
        out.map((r) => ('frame' in r ? r.frame : r.error.code)),
        frames,
      );
    }),
    { numRuns: 200 },
  );
});

test('serial framing: after any garbage and a delimiter, frames decode again (property)', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 9000 }), fc.array(frameArb, { minLength: 1, maxLength: 4 }), (garbage, frames) => {
      const d = new SerialFrameDecoder();
      const before = d.push(concat(garbage, Uint8Array.of(0)));
      // garbage yields only errors or (very unlikely) frames, never a throw
      t.true(before.every((r) => 'frame' in r || isDtError(r.error)));
      const out = d.push(concat(...frames.map((f) => encodeFrame(f))));
      t.deepEqual(
        out.map((r) => ('frame' in r ? r.frame : r.error.code)),
        frames,
      );
      t.is(d.buffered, 0);
    }),
    { numRuns: 200 },
  );
});
