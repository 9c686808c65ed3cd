import test from 'ava';
import type { ExecutionContext } from 'ava';
import fc from 'fast-check';

import { DtError, ErrorCode, isDtError } from '../src/errors.ts';
import {
  AbortError,
  CardApduProcessor,
  CardStatusError,
  CLA,
  CommandAssembler,
  DT_AID,
  INS,
  ResponseSender,
  SW,
  SW_TABLE,
  WrongPinError,
  chainCommand,
  decodeCommand,
  decodeResponse,
  describeSw,
  encodeCommand,
  encodeResponse,
  exchange,
  getResponseCommand,
  statusError,
  swHex,
  swInfo,
  transmitOk,
} from '../src/apdu/index.ts';
import { selectCommand } from '../src/card/index.ts';
import type { AbortSignalLike, ApduTransport, CommandApdu, ResponseApdu, TransmitOptions } from '../src/apdu/index.ts';

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).toUpperCase().padStart(2, '0')).join('');
}

function unhex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, '');
  if (clean.length % 2 !== 0) throw new Error(`odd hex length: ${s}`);
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** `n` bytes all equal to `b`, as hex. */
function fill(b: number, n: number): string {
  return b.toString(16).toUpperCase().padStart(2, '0').repeat(n);
}

function bytes(n: number, seed = 0): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);
}

/**
 * Replays a recorded transcript of `=> command` / `<= response` lines. Any
 * mismatch, line out of place or unused line fails the test; `onSend` hooks let
 * a test act while a given command is in flight (e.g. abort).
 */
class ScriptedTransport implements ApduTransport {
  readonly #lines: string[];
  #at = 0;
  readonly failures: string[] = [];
  readonly signals: Array<AbortSignalLike | undefined> = [];
  onSend: ((index: number) => void) | undefined;

  constructor(script: string) {
    this.#lines = script
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0);
  }

  async transmit(apdu: Uint8Array, options?: TransmitOptions): Promise<Uint8Array> {
    this.signals.push(options?.signal);
    const sent = this.#lines[this.#at];
    const answer = this.#lines[this.#at + 1];
    const fail = (why: string): never => {
      this.failures.push(why);
      throw new Error(`transcript: ${why}`);
    };
    if (sent === undefined || !sent.startsWith('=>')) return fail(`unexpected command ${hex(apdu)} at line ${this.#at}`);
    const want = sent.slice(2).replace(/\s+/g, '').toUpperCase();
    if (hex(apdu) !== want) return fail(`line ${this.#at}: sent ${hex(apdu)}, transcript has ${want}`);
    if (answer === undefined || !answer.startsWith('<=')) return fail(`line ${this.#at + 1}: no response recorded`);
    this.onSend?.(this.#at / 2);
    this.#at += 2;
    return unhex(answer.slice(2));
  }

  /** Asserts every line was used and nothing mismatched. */
  done(t: ExecutionContext): void {
    t.deepEqual(this.failures, []);
    t.is(this.#at, this.#lines.length, `unused transcript lines from ${this.#at}`);
  }
}

function code(t: ExecutionContext, fn: () => unknown, expected: ErrorCode): void {
  const e = t.throws(fn);
  t.true(isDtError(e), `expected a DtError, got ${String(e)}`);
  t.is((e as DtError).code, expected);
}

async function codeAsync(t: ExecutionContext, p: Promise<unknown>, expected: ErrorCode): Promise<DtError> {
  const e = await t.throwsAsync(p);
  t.true(isDtError(e), `expected a DtError, got ${String(e)}`);
  t.is((e as DtError).code, expected);
  return e as DtError;
}

// ---------------------------------------------------------------------------
// constants
// ---------------------------------------------------------------------------

test('constants: AID, CLA, INS', (t) => {
  t.is(hex(DT_AID), 'F0445457414C4C455401');
  t.is(CLA.PROPRIETARY | CLA.CHAINING, 0x90);
  t.is(INS.PAY, 0x30);
  t.is(INS.SYNC, 0x52);
});

test('constants: status words and descriptions', (t) => {
  t.is(SW.moreData(0x20), 0x6120);
  t.is(SW.moreData(256), 0x6100);
  t.is(SW.moreData(5000), 0x6100);
  t.is(SW.wrongPin(2), 0x63c2);
  t.is(SW.wrongLe(256), 0x6c00);
  t.is(SW.wrongLe(16), 0x6c10);
  t.throws(() => SW.wrongPin(16), { instanceOf: RangeError });
  t.is(describeSw(0x9000), 'success');
  t.is(describeSw(0x6985), 'conditions not satisfied');
  t.is(describeSw(0x63c2), 'wrong PIN, 2 tries left');
  t.is(describeSw(0x63c1), 'wrong PIN, 1 try left');
  t.is(describeSw(0x6110), 'more data available (16 bytes)');
  t.is(describeSw(0x6100), 'more data available (256 bytes or more)');
  t.is(describeSw(0x6c20), 'wrong Le, expected 32');
  t.is(describeSw(0x6a82), 'application not found');
  t.is(describeSw(0x6f00), 'internal error');
  t.is(describeSw(0x1234), 'unknown status');
  t.is(swHex(0x6a82), '6A82');
  t.is(swInfo(0x63c5)?.name, 'WRONG_PIN');
  // every row's pattern matches its value, and rows do not overlap
  for (const row of SW_TABLE) {
    t.is(row.pattern.slice(0, 2), swHex(row.sw).slice(0, 2));
    t.is(swInfo(row.sw), row);
  }
});

// ---------------------------------------------------------------------------
// command codec
// ---------------------------------------------------------------------------

const commandVectors: Array<{ name: string; cmd: CommandApdu; hex: string }> = [
  { name: 'case 1', cmd: { cla: 0x80, ins: 0x10, p1: 0x00, p2: 0x00 }, hex: '80100000' },
  { name: 'case 2, Le 256', cmd: { cla: 0x80, ins: 0x10, p1: 0x00, p2: 0x00, le: 256 }, hex: '8010000000' },
  { name: 'case 2, Le 1', cmd: { cla: 0x80, ins: 0x12, p1: 0x00, p2: 0x00, le: 1 }, hex: '8012000001' },
  {
    name: 'case 3 SELECT without Le',
    cmd: { cla: 0x00, ins: 0xa4, p1: 0x04, p2: 0x00, data: DT_AID },
    hex: '00A404000AF0445457414C4C455401',
  },
  {
    name: 'case 4 SELECT',
    cmd: selectCommand(),
    hex: '00A404000AF0445457414C4C45540100',
  },
  {
    name: 'case 4 VERIFY PIN, Le 255',
    cmd: { cla: 0x80, ins: 0x20, p1: 0x00, p2: 0x00, data: unhex('31323334'), le: 255 },
    hex: '802000000431323334FF',
  },
  {
    name: 'case 3, 255 bytes',
    cmd: { cla: 0x80, ins: 0x40, p1: 0x02, p2: 0x00, data: unhex(fill(0xab, 255)) },
    hex: `80400200FF${fill(0xab, 255)}`,
  },
  { name: 'GET RESPONSE 16', cmd: getResponseCommand(16), hex: '00C0000010' },
];

for (const v of commandVectors) {
  test(`encode/decode command: ${v.name}`, (t) => {
    t.is(hex(encodeCommand(v.cmd)), v.hex);
    t.deepEqual(decodeCommand(unhex(v.hex)), v.cmd);
  });
}

test('encodeCommand: empty data is case 1', (t) => {
  t.is(hex(encodeCommand({ cla: 0x80, ins: 0x10, p1: 0, p2: 0, data: new Uint8Array(0) })), '80100000');
});

test('encodeCommand: invalid inputs', (t) => {
  code(t, () => encodeCommand({ cla: 0x80, ins: 0x30, p1: 0, p2: 0, data: new Uint8Array(256) }), ErrorCode.APDU_TOO_LONG);
  code(t, () => encodeCommand({ cla: 0x80, ins: 0x30, p1: 0, p2: 0, le: 257 }), ErrorCode.APDU_TOO_LONG);
  code(t, () => encodeCommand({ cla: 0x80, ins: 0x30, p1: 0, p2: 0, le: 0 }), ErrorCode.APDU_MALFORMED);
  code(t, () => encodeCommand({ cla: 0x80, ins: 0x30, p1: 0, p2: 0, le: 1.5 }), ErrorCode.APDU_MALFORMED);
  code(t, () => encodeCommand({ cla: 0x100, ins: 0x30, p1: 0, p2: 0 }), ErrorCode.APDU_MALFORMED);
  code(t, () => encodeCommand({ cla: 0x80, ins: -1, p1: 0, p2: 0 }), ErrorCode.APDU_MALFORMED);
  code(t, () => encodeCommand({ cla: 0x80, ins: 0x30, p1: 0, p2: 256 }), ErrorCode.APDU_MALFORMED);
});

const invalidCommands: Array<[string, string]> = [
  ['empty', ''],
  ['3 bytes', '801000'],
  ['extended case 2', '80100000000100'],
  ['extended case 3', '80300000000002AABB'],
  ['Lc larger than data', '80300000030102'],
  ['trailing bytes after Le', '803000000201020304'],
  ['Lc 1 with two data bytes and no room for Le', '8030000001AABBCC'],
];

for (const [name, h] of invalidCommands) {
  test(`decodeCommand rejects ${name}`, (t) => {
    code(t, () => decodeCommand(unhex(h)), ErrorCode.APDU_MALFORMED);
  });
}

test('command codec: property round trip', (t) => {
  const cmdArb = fc.record(
    {
      cla: fc.integer({ min: 0, max: 255 }),
      ins: fc.integer({ min: 0, max: 255 }),
      p1: fc.integer({ min: 0, max: 255 }),
      p2: fc.integer({ min: 0, max: 255 }),
      data: fc.uint8Array({ minLength: 1, maxLength: 255 }),
      le: fc.integer({ min: 1, max: 256 }),
    },
    { requiredKeys: ['cla', 'ins', 'p1', 'p2'] },
  );
  fc.assert(
    fc.property(cmdArb, (cmd) => {
      const encoded = encodeCommand(cmd);
      t.deepEqual(decodeCommand(encoded), cmd);
      t.deepEqual(encodeCommand(decodeCommand(encoded)), encoded);
    }),
  );
  t.pass();
});

test('decodeCommand: never throws anything but APDU_MALFORMED', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (raw) => {
      try {
        const cmd = decodeCommand(raw);
        return hex(encodeCommand(cmd)) === hex(raw);
      } catch (e) {
        return isDtError(e, ErrorCode.APDU_MALFORMED);
      }
    }),
  );
  t.pass();
});

// ---------------------------------------------------------------------------
// chaining
// ---------------------------------------------------------------------------

test('chainCommand: 600 bytes become 3 blocks', (t) => {
  const data = bytes(600);
  const blocks = chainCommand({ cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data, le: 256 });
  t.is(blocks.length, 3);
  t.deepEqual(
    blocks.map((b) => [b.cla, b.data?.length, b.le]),
    [
      [0x90, 255, undefined],
      [0x90, 255, undefined],
      [0x80, 90, 256],
    ],
  );
  const encoded = blocks.map(encodeCommand);
  t.is(hex(encoded[0]!.subarray(0, 5)), '90300000FF');
  t.is(hex(encoded[1]!.subarray(0, 5)), '90300000FF');
  t.is(hex(encoded[2]!.subarray(0, 5)), '803000005A');
  t.is(hex(encoded[2]!.subarray(-1)), '00');
  t.is(encoded[2]!.length, 5 + 90 + 1);
  t.deepEqual(Uint8Array.from(blocks.flatMap((b) => Array.from(b.data!))), data);
});

test('chainCommand: a command that fits is returned as is', (t) => {
  const cmd: CommandApdu = { cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data: bytes(255), le: 256 };
  const blocks = chainCommand(cmd);
  t.is(blocks.length, 1);
  t.is(blocks[0], cmd);
  const noData: CommandApdu = { cla: 0x80, ins: INS.GET_STATUS, p1: 0, p2: 0 };
  t.is(chainCommand(noData)[0], noData);
});

test('chainCommand: exactly 510 bytes give two full blocks', (t) => {
  const blocks = chainCommand({ cla: 0x80, ins: INS.LOAD, p1: 0, p2: 0, data: bytes(510) });
  t.deepEqual(
    blocks.map((b) => [b.cla, b.data?.length]),
    [
      [0x90, 255],
      [0x80, 255],
    ],
  );
});

test('chainCommand: limits', (t) => {
  code(t, () => chainCommand({ cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data: new Uint8Array(65536) }), ErrorCode.TOO_LARGE);
  code(t, () => chainCommand({ cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data: new Uint8Array(1001) }, 1000), ErrorCode.TOO_LARGE);
  t.is(chainCommand({ cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data: new Uint8Array(65535) }).length, 257); // 257 × 255 = 65535
  code(t, () => chainCommand({ cla: 0x90, ins: INS.PAY, p1: 0, p2: 0, data: new Uint8Array(300) }), ErrorCode.APDU_MALFORMED);
});

test('chaining: chainCommand then CommandAssembler is the identity (property)', (t) => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 1, maxLength: 2000 }),
      fc.option(fc.integer({ min: 1, max: 256 }), { nil: undefined }),
      fc.integer({ min: 0, max: 255 }),
      (data, le, p1) => {
        const cmd: CommandApdu = { cla: 0x80, ins: INS.LOAD, p1, p2: 0, data };
        if (le !== undefined) cmd.le = le;
        const assembler = new CommandAssembler();
        const blocks = chainCommand(cmd);
        for (let i = 0; i < blocks.length; i++) {
          const result = assembler.push(encodeCommand(blocks[i]!));
          if (i < blocks.length - 1) {
            t.deepEqual(result, { kind: 'continue', sw: 0x9000 });
            t.true(assembler.pending);
          } else {
            t.deepEqual(result, { kind: 'complete', command: cmd });
            t.false(assembler.pending);
          }
        }
      },
    ),
    { numRuns: 200 },
  );
});

// ---------------------------------------------------------------------------
// responses and status errors
// ---------------------------------------------------------------------------

test('response codec', (t) => {
  t.is(hex(encodeResponse(unhex('0102'), 0x9000)), '01029000');
  t.is(hex(encodeResponse(new Uint8Array(0), 0x6a82)), '6A82');
  t.deepEqual(decodeResponse(unhex('01026110')), { data: unhex('0102'), sw: 0x6110 });
  t.deepEqual(decodeResponse(unhex('9000')), { data: new Uint8Array(0), sw: 0x9000 });
  code(t, () => decodeResponse(unhex('90')), ErrorCode.APDU_MALFORMED);
  code(t, () => decodeResponse(new Uint8Array(0)), ErrorCode.APDU_MALFORMED);
  code(t, () => encodeResponse(new Uint8Array(0), 0x10000), ErrorCode.APDU_MALFORMED);
});

test('statusError picks the class and writes a human message', (t) => {
  const e = statusError(0x6985, INS.PAY);
  t.true(e instanceof CardStatusError);
  t.true(e instanceof DtError);
  t.false(e instanceof WrongPinError);
  t.is(e.code, ErrorCode.CARD_STATUS);
  t.is(e.sw, 0x6985);
  t.is(e.ins, 0x30);
  t.is(e.name, 'CardStatusError');
  t.is(e.message, 'CARD_STATUS: card answered 6985 (conditions not satisfied) to INS 30');
  t.deepEqual(e.details, { sw: '6985', ins: 0x30 });

  const pin = statusError(0x63c2);
  t.true(pin instanceof WrongPinError);
  t.is((pin as WrongPinError).remaining, 2);
  t.is(pin.ins, undefined);
  t.is(pin.name, 'WrongPinError');
  t.is(pin.message, 'CARD_STATUS: card answered 63C2 (wrong PIN, 2 tries left)');
});

// ---------------------------------------------------------------------------
// exchange() against recorded transcripts
// ---------------------------------------------------------------------------

test('exchange: single APDU', async (t) => {
  const tr = new ScriptedTransport(`
    => 00A404000AF0445457414C4C45540100
    <= A1010203 9000
  `);
  const r = await exchange(tr, selectCommand());
  t.deepEqual(r, { data: unhex('A1010203'), sw: 0x9000 });
  tr.done(t);
});

test('exchange: 61xx loop over several GET RESPONSEs', async (t) => {
  const tr = new ScriptedTransport(`
    => 8012000000
    <= ${fill(0x11, 256)} 6100
    => 00C0000000
    <= ${fill(0x22, 256)} 6100
    => 00C0000000
    <= ${fill(0x33, 256)} 6120
    => 00C0000020
    <= ${fill(0x44, 32)} 9000
  `);
  const r = await exchange(tr, { cla: 0x80, ins: INS.GET_CERTIFICATES, p1: 0, p2: 0, le: 256 });
  t.is(r.sw, 0x9000);
  t.is(hex(r.data), fill(0x11, 256) + fill(0x22, 256) + fill(0x33, 256) + fill(0x44, 32));
  tr.done(t);
});

test('exchange: 61xx answered with a final error keeps the error', async (t) => {
  const tr = new ScriptedTransport(`
    => 8010000000
    <= 0102 6105
    => 00C0000005
    <= 6F00
  `);
  t.deepEqual(await exchange(tr, { cla: 0x80, ins: 0x10, p1: 0, p2: 0, le: 256 }), { data: unhex('0102'), sw: 0x6f00 });
  tr.done(t);
});

test('exchange: 6Cxx re-sends the command once with Le = xx', async (t) => {
  const tr = new ScriptedTransport(`
    => 8010000000
    <= 6C20
    => 8010000020
    <= ${fill(0x55, 32)} 9000
  `);
  const r = await exchange(tr, { cla: 0x80, ins: 0x10, p1: 0, p2: 0, le: 256 });
  t.is(hex(r.data), fill(0x55, 32));
  tr.done(t);
});

test('exchange: 6Cxx twice is returned, not retried again', async (t) => {
  const tr = new ScriptedTransport(`
    => 8010000000
    <= 6C20
    => 8010000020
    <= 6C10
  `);
  t.deepEqual(await exchange(tr, { cla: 0x80, ins: 0x10, p1: 0, p2: 0, le: 256 }), { data: new Uint8Array(0), sw: 0x6c10 });
  tr.done(t);
});

test('exchange: 6Cxx then 61xx, and 6Cxx on a GET RESPONSE', async (t) => {
  const tr = new ScriptedTransport(`
    => 8012000010
    <= 6C00
    => 8012000000
    <= ${fill(0x01, 256)} 6108
    => 00C0000008
    <= 6C04
    => 00C0000004
    <= 0A0B0C0D 9000
  `);
  const r = await exchange(tr, { cla: 0x80, ins: 0x12, p1: 0, p2: 0, le: 16 });
  t.is(hex(r.data), fill(0x01, 256) + '0A0B0C0D');
  t.is(r.sw, 0x9000);
  tr.done(t);
});

test('exchange: chained command, all blocks accepted, long answer', async (t) => {
  const data = unhex(fill(0xaa, 255) + fill(0xbb, 255) + fill(0xcc, 90));
  const tr = new ScriptedTransport(`
    => 90300000FF ${fill(0xaa, 255)}
    <= 9000
    => 90300000FF ${fill(0xbb, 255)}
    <= 9000
    => 803000005A ${fill(0xcc, 90)} 00
    <= ${fill(0x77, 256)} 6101
    => 00C0000001
    <= 78 9000
  `);
  const r = await exchange(tr, { cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data, le: 256 });
  t.is(r.data.length, 257);
  t.is(r.sw, 0x9000);
  tr.done(t);
});

test('exchange: chaining stops at an intermediate error', async (t) => {
  const cmd: CommandApdu = { cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data: unhex(fill(0xaa, 600)), le: 256 };
  const script = `
    => 90300000FF ${fill(0xaa, 255)}
    <= 9000
    => 90300000FF ${fill(0xaa, 255)}
    <= 6A80
  `;
  const tr = new ScriptedTransport(script);
  t.deepEqual(await exchange(tr, cmd), { data: new Uint8Array(0), sw: 0x6a80 });
  tr.done(t);

  const tr2 = new ScriptedTransport(script);
  const e = await t.throwsAsync(transmitOk(tr2, cmd));
  t.true(e instanceof CardStatusError);
  t.is((e as CardStatusError).sw, 0x6a80);
  t.is((e as CardStatusError).ins, INS.PAY);
  tr2.done(t);
});

test('exchange: an intermediate block answering 6Cxx is not retried', async (t) => {
  const tr = new ScriptedTransport(`
    => 90300000FF ${fill(0xaa, 255)}
    <= 6C10
  `);
  const r = await exchange(tr, { cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data: unhex(fill(0xaa, 300)), le: 256 });
  t.is(r.sw, 0x6c10);
  tr.done(t);
});

test('exchange: 6Cxx on a chained command re-sends the whole chain', async (t) => {
  const tr = new ScriptedTransport(`
    => 90300000FF ${fill(0xaa, 255)}
    <= 9000
    => 8030000001 AA 00
    <= 6C08
    => 90300000FF ${fill(0xaa, 255)}
    <= 9000
    => 8030000001 AA 08
    <= 0102030405060708 9000
  `);
  const r = await exchange(tr, { cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data: unhex(fill(0xaa, 256)), le: 256 });
  t.is(hex(r.data), '0102030405060708');
  tr.done(t);
});

test('exchange: maxResponse is enforced before asking for more', async (t) => {
  const tr = new ScriptedTransport(`
    => 8012000000
    <= ${fill(0x11, 256)} 6100
  `);
  const e = await codeAsync(t, exchange(tr, { cla: 0x80, ins: 0x12, p1: 0, p2: 0, le: 256 }, { maxResponse: 300 }), ErrorCode.TOO_LARGE);
  t.is(e.details.limit, 300);
  tr.done(t);

  // an exact 61xx that would overflow is refused too
  const tr2 = new ScriptedTransport(`
    => 8012000000
    <= ${fill(0x11, 256)} 6120
  `);
  await codeAsync(t, exchange(tr2, { cla: 0x80, ins: 0x12, p1: 0, p2: 0, le: 256 }, { maxResponse: 256 + 31 }), ErrorCode.TOO_LARGE);
  tr2.done(t);

  // exactly at the limit is fine
  const tr3 = new ScriptedTransport(`
    => 8012000000
    <= ${fill(0x11, 256)} 6120
    => 00C0000020
    <= ${fill(0x11, 32)} 9000
  `);
  const r = await exchange(tr3, { cla: 0x80, ins: 0x12, p1: 0, p2: 0, le: 256 }, { maxResponse: 288 });
  t.is(r.data.length, 288);
  tr3.done(t);
});

test('exchange: a single response larger than maxResponse is refused', async (t) => {
  const tr = new ScriptedTransport(`
    => 8012000000
    <= ${fill(0x11, 20)} 9000
  `);
  await codeAsync(t, exchange(tr, { cla: 0x80, ins: 0x12, p1: 0, p2: 0, le: 256 }, { maxResponse: 10 }), ErrorCode.TOO_LARGE);
  tr.done(t);
});

test('exchange: a card that never delivers data is cut off', async (t) => {
  const tr = new ScriptedTransport(`
    => 8012000000
    <= 6110
    => 00C0000010
    <= 6110
  `);
  await codeAsync(t, exchange(tr, { cla: 0x80, ins: 0x12, p1: 0, p2: 0, le: 256 }), ErrorCode.APDU_MALFORMED);
  tr.done(t);
});

test('exchange: malformed response from the transport', async (t) => {
  const tr = new ScriptedTransport(`
    => 80100000
    <= 90
  `);
  await codeAsync(t, exchange(tr, { cla: 0x80, ins: 0x10, p1: 0, p2: 0 }), ErrorCode.APDU_MALFORMED);
  tr.done(t);
});

test('exchange: abort before the first APDU throws the reason and sends nothing', async (t) => {
  const controller = new AbortController();
  const reason = new Error('user cancelled');
  controller.abort(reason);
  const tr = new ScriptedTransport('');
  const e = await t.throwsAsync(exchange(tr, selectCommand(), { signal: controller.signal }));
  t.is(e, reason);
  tr.done(t);
});

test('exchange: abort between GET RESPONSEs', async (t) => {
  const controller = new AbortController();
  const tr = new ScriptedTransport(`
    => 8012000000
    <= ${fill(0x11, 256)} 6100
    => 00C0000000
    <= ${fill(0x11, 256)} 6100
  `);
  tr.onSend = (i) => {
    if (i === 1) controller.abort();
  };
  // Node's default reason is a DOMException named AbortError (not an Error subclass in Node 20).
  const e = await t.throwsAsync(exchange(tr, { cla: 0x80, ins: 0x12, p1: 0, p2: 0, le: 256 }, { signal: controller.signal }), {
    any: true,
  });
  t.is((e as { name: string }).name, 'AbortError');
  t.is(e, controller.signal.reason);
  // the signal reaches the transport
  t.is(tr.signals[0], controller.signal);
  tr.done(t);
});

test('exchange: abort between chained blocks; a reason-less signal gives AbortError', async (t) => {
  let aborted = false;
  const signal: AbortSignalLike = {
    get aborted() {
      return aborted;
    },
    addEventListener() {},
    removeEventListener() {},
  };
  const tr = new ScriptedTransport(`
    => 90300000FF ${fill(0xaa, 255)}
    <= 9000
  `);
  tr.onSend = () => {
    aborted = true;
  };
  const e = await t.throwsAsync(exchange(tr, { cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data: unhex(fill(0xaa, 300)) }, { signal }));
  t.true(e instanceof AbortError);
  t.is((e as AbortError).code, ErrorCode.ABORTED);
  t.is((e as AbortError).name, 'AbortError');
  tr.done(t);
});

test('transmitOk: returns data on 9000, throws typed errors otherwise', async (t) => {
  const tr = new ScriptedTransport(`
    => 8020000004 31323334
    <= 63C1
    => 8020000004 31323334
    <= 6983
    => 8010000000
    <= CAFE 9000
  `);
  const verify: CommandApdu = { cla: 0x80, ins: INS.VERIFY_PIN, p1: 0, p2: 0, data: unhex('31323334') };
  const e1 = await t.throwsAsync(transmitOk(tr, verify));
  t.true(e1 instanceof WrongPinError);
  t.is((e1 as WrongPinError).remaining, 1);
  t.is((e1 as WrongPinError).ins, INS.VERIFY_PIN);
  const e2 = await t.throwsAsync(transmitOk(tr, verify));
  t.true(e2 instanceof CardStatusError);
  t.false(e2 instanceof WrongPinError);
  t.is((e2 as CardStatusError).sw, 0x6983);
  t.regex((e2 as Error).message, /card answered 6983 \(PIN blocked\)/);
  t.is(hex(await transmitOk(tr, { cla: 0x80, ins: 0x10, p1: 0, p2: 0, le: 256 })), 'CAFE');
  tr.done(t);
});

test('the scripted transport itself fails on mismatch and leftovers', async (t) => {
  const tr = new ScriptedTransport(`
    => 80100000
    <= 9000
    => 80100000
    <= 9000
  `);
  await t.throwsAsync(exchange(tr, { cla: 0x80, ins: 0x12, p1: 0, p2: 0 }), { message: /transcript/ });
  t.is(tr.failures.length, 1);
});

// ---------------------------------------------------------------------------
// card side
// ---------------------------------------------------------------------------

test('CommandAssembler: chain of three blocks', (t) => {
  const a = new CommandAssembler();
  t.deepEqual(a.push(unhex(`90300000FF${fill(1, 255)}`)), { kind: 'continue', sw: 0x9000 });
  t.deepEqual(a.push(unhex(`90300000FF${fill(2, 255)}`)), { kind: 'continue', sw: 0x9000 });
  const r = a.push(unhex(`8030000002030300`));
  t.is(r.kind, 'complete');
  if (r.kind !== 'complete') return;
  t.is(r.command.cla, 0x80);
  t.is(r.command.le, 256);
  t.is(hex(r.command.data!), fill(1, 255) + fill(2, 255) + '0303');
});

test('CommandAssembler: single command passes through', (t) => {
  const a = new CommandAssembler();
  t.deepEqual(a.push(unhex('8010000000')), { kind: 'complete', command: { cla: 0x80, ins: 0x10, p1: 0, p2: 0, le: 256 } });
  t.false(a.pending);
});

test('CommandAssembler: errors', (t) => {
  const a = new CommandAssembler({ maxData: 300 });
  // different INS in the middle of a chain
  a.push(unhex(`90300000FF${fill(1, 255)}`));
  t.deepEqual(a.push(unhex('8010000000')), { kind: 'error', sw: SW.CHAIN_EXPECTED });
  t.false(a.pending);
  // different P1 on a chained block
  a.push(unhex(`90300000FF${fill(1, 255)}`));
  t.deepEqual(a.push(unhex(`90300100FF${fill(1, 255)}`)), { kind: 'error', sw: 0x6883 });
  // same INS but another CLA
  a.push(unhex(`90300000FF${fill(1, 255)}`));
  t.deepEqual(a.push(unhex(`1030000001AA`)), { kind: 'error', sw: 0x6883 });
  // over the size bound
  a.push(unhex(`90300000FF${fill(1, 255)}`));
  t.deepEqual(a.push(unhex(`803000002E${fill(1, 46)}`)), { kind: 'error', sw: 0x6700 });
  t.false(a.pending);
  // exactly at the bound
  a.push(unhex(`90300000FF${fill(1, 255)}`));
  t.is(a.push(unhex(`803000002D${fill(1, 45)}`)).kind, 'complete');
  // undecodable
  t.deepEqual(a.push(unhex('80300000030102')), { kind: 'error', sw: 0x6700 });
  // after an error, a fresh chain works
  t.is(a.push(unhex(`90300000FF${fill(1, 255)}`)).kind, 'continue');
  a.reset();
  t.false(a.pending);
});

test('ResponseSender: 61xx pieces, Le respected, 6985 when idle', (t) => {
  const s = new ResponseSender();
  const data = bytes(600);
  const r1 = s.begin(data);
  t.is(r1.data.length, 256);
  t.is(r1.sw, 0x6100); // 344 left: 256 or more
  const r2 = s.getResponse(256);
  t.is(r2.data.length, 256);
  t.is(r2.sw, 0x6158); // 88 left
  const r3 = s.getResponse(16); // smaller Le
  t.is(r3.data.length, 16);
  t.is(r3.sw, 0x6148);
  t.is(s.remaining, 72);
  const r4 = s.getResponse(256); // Le larger than available: give what is there
  t.is(r4.data.length, 72);
  t.is(r4.sw, 0x9000);
  t.deepEqual(Uint8Array.from([...r1.data, ...r2.data, ...r3.data, ...r4.data]), data);
  t.deepEqual(s.getResponse(256), { data: new Uint8Array(0), sw: 0x6985 });
});

test('ResponseSender: short and empty responses, first piece bounded by Le, final SW kept', (t) => {
  const s = new ResponseSender();
  t.deepEqual(s.begin(unhex('0102')), { data: unhex('0102'), sw: 0x9000 });
  t.deepEqual(s.begin(new Uint8Array(0), 0x6985), { data: new Uint8Array(0), sw: 0x6985 });
  const r = s.begin(bytes(20), 0x9000, 16);
  t.is(r.data.length, 16);
  t.is(r.sw, 0x6104);
  t.deepEqual(s.getResponse(4), { data: bytes(20).slice(16), sw: 0x9000 });
  const w = s.begin(bytes(300), 0x6f00);
  t.is(w.sw, 0x612c);
  t.is(s.getResponse(256).sw, 0x6f00);
});

/** An in-memory card: the reader-side exchange talks to CardApduProcessor directly. */
function memoryCard(handler: (cmd: CommandApdu) => ResponseApdu | Promise<ResponseApdu>, log?: string[]): ApduTransport {
  const card = new CardApduProcessor(handler);
  return {
    async transmit(apdu) {
      const response = await card.process(apdu);
      log?.push(`=> ${hex(apdu.subarray(0, 5))}… <= …${hex(response.subarray(-2))}`);
      return response;
    },
  };
}

/** 1000-byte request in, 1500-byte response out: the request followed by filler. */
function echoLong(cmd: CommandApdu): ResponseApdu {
  const out = new Uint8Array(1500);
  out.set(cmd.data ?? new Uint8Array(0), 0);
  for (let i = cmd.data?.length ?? 0; i < 1500; i++) out[i] = i & 0xff;
  return { data: out, sw: SW.OK };
}

test('reader and card in memory: 1000-byte request, 1500-byte response', async (t) => {
  const log: string[] = [];
  const transport = memoryCard(echoLong, log);
  const request = bytes(1000, 3);
  const data = await transmitOk(transport, { cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data: request, le: 256 });
  t.deepEqual(data, echoLong({ cla: 0x80, ins: INS.PAY, p1: 0, p2: 0, data: request }).data);
  // 4 blocks (255, 255, 255, 235), then 5 GET RESPONSEs (1500 = 5 × 256 + 220)
  t.deepEqual(log, [
    '=> 90300000FF… <= …9000',
    '=> 90300000FF… <= …9000',
    '=> 90300000FF… <= …9000',
    '=> 80300000EB… <= …6100',
    '=> 00C0000000… <= …6100',
    '=> 00C0000000… <= …6100',
    '=> 00C0000000… <= …6100',
    '=> 00C0000000… <= …61DC',
    '=> 00C00000DC… <= …9000',
  ]);
});

test('reader and card in memory: handler status errors and GET RESPONSE misuse', async (t) => {
  const transport = memoryCard((cmd) => {
    if (cmd.ins === INS.SYNC) throw statusError(SW.CONDITIONS_NOT_SATISFIED);
    if (cmd.ins === INS.VERIFY_PIN) throw statusError(SW.wrongPin(2));
    if (cmd.ins === INS.GET_CERTIFICATES) return { data: bytes(400), sw: SW.OK };
    return { data: new Uint8Array(0), sw: SW.INS_NOT_SUPPORTED };
  });
  const e = await t.throwsAsync(transmitOk(transport, { cla: 0x80, ins: INS.SYNC, p1: 1, p2: 0, le: 256 }));
  t.is((e as CardStatusError).sw, 0x6985);
  const pin = await t.throwsAsync(transmitOk(transport, { cla: 0x80, ins: INS.VERIFY_PIN, p1: 0, p2: 0, data: unhex('31') }));
  t.is((pin as WrongPinError).remaining, 2);
  t.deepEqual(await exchange(transport, { cla: 0x80, ins: 0x7e, p1: 0, p2: 0 }), { data: new Uint8Array(0), sw: 0x6d00 });

  // raw APDUs: GET RESPONSE with nothing pending, with bad P1, and a long
  // response dropped by an intervening command
  t.is(hex(await transport.transmit(unhex('00C0000000'))), '6985');
  t.is(hex(await transport.transmit(unhex('8012000000'))).slice(-4), '6190'); // 400 - 256 = 144 left
  t.is(hex(await transport.transmit(unhex('00C0010000'))), '6A86');
  t.is(hex(await transport.transmit(unhex('00C0000010'))).slice(-4), '6180'); // 144 - 16 = 128 left
  t.is(hex(await transport.transmit(unhex('80100000'))), '6D00');
  t.is(hex(await transport.transmit(unhex('00C0000000'))), '6985');
  t.is(hex(await transport.transmit(unhex('80100000030102'))), '6700');
});

test('reader and card in memory: other handler errors propagate', async (t) => {
  const transport = memoryCard(() => {
    throw new TypeError('bug');
  });
  await t.throwsAsync(exchange(transport, { cla: 0x80, ins: 0x10, p1: 0, p2: 0 }), { instanceOf: TypeError });
});

test('reader and card in memory: any sizes round trip (property)', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ maxLength: 3000 }),
      fc.integer({ min: 0, max: 5000 }),
      fc.integer({ min: 1, max: 256 }),
      async (request, responseSize, le) => {
        const response = bytes(responseSize, request.length);
        let seen: Uint8Array | undefined;
        const transport = memoryCard((cmd) => {
          seen = cmd.data ?? new Uint8Array(0);
          return { data: response, sw: SW.OK };
        });
        const cmd: CommandApdu = { cla: 0x80, ins: INS.LOAD, p1: 0, p2: 0, le };
        if (request.length > 0) cmd.data = request;
        const r = await exchange(transport, cmd);
        t.deepEqual(seen, request);
        t.deepEqual(r, { data: response, sw: 0x9000 });
      },
    ),
    { numRuns: 150 },
  );
});
