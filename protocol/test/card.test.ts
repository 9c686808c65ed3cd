/**
 * The card's contract (`src/card/`, SPEC §9–10): every builder against its
 * bytes, the header table against SPEC §9.2, the parsers (the lenient SELECT
 * read included) with one invalid-inputs set, command identification, the
 * format round trips and the input-selection rule.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import {
  CARD_FORMATS,
  CardCommand,
  Capability,
  DT_AID,
  ErrorCode,
  FULLY_PERSONALIZED,
  LIMITS,
  Personalized,
  SW,
  SelectResponseSchema,
  answerIsFresh,
  buildCommand,
  changePinCommand,
  decodeFormat,
  decodeFormatLenient,
  encodeCommand,
  encodeDeterministic,
  encodeFormat,
  formatKey,
  generateKeyCommand,
  generateKeyPair,
  getCertificatesCommand,
  getStatusCommand,
  hasCapability,
  identifyCommand,
  isChainedBlock,
  isDtError,
  loadBeginCommand,
  loadCompleteCommand,
  lockCommand,
  mayCarrySecret,
  parseApplicationInfo,
  parseCardStatus,
  parseCertificates,
  parseLastNonce,
  parsePinResult,
  parsePublicKey,
  parseSelectResponse,
  payCommand,
  selectCommand,
  selectInputs,
  setConfigCommand,
  setPinCommand,
  syncBeginCommand,
  syncCompleteCommand,
  toHex,
  unblockPinCommand,
  utf8,
  verifyPinCommand,
  writeCertificatesCommand,
  type CardCommandName,
  type CborValue,
  type CommandApdu,
  type SpendableCoin,
  type StructSchema,
} from '../src/index.ts';
import { arbitraryStruct, SEED } from './helpers/arbitrary.ts';

const SPEC = readFileSync(new URL('../SPEC.md', import.meta.url), 'utf8');
const hex = (c: CommandApdu): string => toHex(encodeCommand(c)).toUpperCase();
const bytes = (n: number, fill = 0xab): Uint8Array => new Uint8Array(n).fill(fill);
const rnd = (n: number): Uint8Array => crypto.getRandomValues(new Uint8Array(n));

// ---------------------------------------------------------------- builders

test('every builder encodes the command of SPEC §9.2 (byte table)', (t) => {
  const table: [string, CommandApdu, string][] = [
    ['SELECT', selectCommand(), '00A404000AF044545741 4C4C45540100'],
    ['SELECT other AID', selectCommand(Uint8Array.of(0xa0, 0x00)), '00A4040002A00000'],
    ['GET STATUS', getStatusCommand(), '8010000000'],
    ['GET CERTIFICATES', getCertificatesCommand(), '8012000000'],
    ['VERIFY PIN', verifyPinCommand(utf8('1234')), '802000000431323334'],
    ['VERIFY PIN (state)', verifyPinCommand(), '80200000'],
    ['VERIFY PIN (empty)', verifyPinCommand(new Uint8Array(0)), '80200000'],
    // ChangePin {1: "1234", 2: "5678"}: A2 01 44 31323334 02 44 35363738
    ['CHANGE PIN', changePinCommand(utf8('1234'), utf8('5678')), '802400000DA201443132333402443536 3738'],
    ['UNBLOCK PIN', unblockPinCommand(utf8('12345678'), utf8('1234')), '802C0000 11 A2 01 48 3132333435363738 02 44 31323334'],
    ['PAY', payCommand(bytes(3)), '8030000003ABABAB00'],
    ['GENERATE KEY', generateKeyCommand(), '8040010000'],
    [
      'SET PIN',
      setPinCommand({ pin: utf8('1234'), puk: utf8('12345678'), pinTries: 5 }),
      '80400300 13 A3 01 44 31323334 02 48 3132333435363738 03 05',
    ],
    ['SET CONFIG', setConfigCommand({ floor: 1000, confirm: 0 }), '8040040007A2011903E80200'],
    ['SET CONFIG (empty)', setConfigCommand({}), '8040040001A0'],
    ['LOCK', lockCommand(), '80400F00'],
    ['LOAD BEGIN', loadBeginCommand(bytes(16, 0x11)), '8050010010' + '11'.repeat(16) + '00'],
    ['LOAD COMPLETE', loadCompleteCommand(bytes(2)), '8050020002ABAB'],
    ['SYNC BEGIN', syncBeginCommand(bytes(16, 0x22)), '8052010010' + '22'.repeat(16) + '00'],
    ['SYNC COMPLETE', syncCompleteCommand(bytes(2)), '8052020002ABAB'],
  ];
  for (const [name, cmd, expected] of table) t.is(hex(cmd), expected.replace(/\s+/g, ''), name);
  // WRITE CERTIFICATES carries its format (long data is chained by the exchange, not here).
  const w = { chain: [bytes(20, 1)], root: bytes(20, 2), ledger: bytes(20, 3), time: 7 };
  const wc = writeCertificatesCommand(w);
  t.deepEqual({ ...wc, data: undefined }, { ...CardCommand.WRITE_CERTIFICATES, data: undefined });
  t.deepEqual(decodeFormat(CARD_FORMATS[2], wc.data!), w);
});

test('CardCommand: CLA, INS, P1 and P2 of every command are the rows of SPEC §9.2', (t) => {
  const section = SPEC.slice(SPEC.indexOf('### 9.2 Command table'), SPEC.indexOf('### 9.3'));
  const rows = new Set(
    [...section.matchAll(/^\| [^|]+ \| ([0-9A-F]{2}) \| ([0-9A-F]{2}) \| ([0-9A-F]{2}) \| ([0-9A-F]{2}) \|/gm)].map((m) =>
      m.slice(1, 5).join(' '),
    ),
  );
  const b = (n: number): string => n.toString(16).toUpperCase().padStart(2, '0');
  for (const [name, h] of Object.entries(CardCommand)) {
    // GET RESPONSE's row has P1 P2 00 00 too; every row is one command.
    t.true(rows.has(`${b(h.cla)} ${b(h.ins)} ${b(h.p1)} ${b(h.p2)}`), name);
  }
  t.is(rows.size, Object.keys(CardCommand).length, 'one row per command, one command per row');
});

// ---------------------------------------------------------------- identification

test("identifyCommand: CLA (chaining bit ignored), INS and the step P1 name the command; other P1/P2 are the card's to judge", (t) => {
  for (const [name, h] of Object.entries(CardCommand) as [CardCommandName, (typeof CardCommand)[CardCommandName]][]) {
    t.is(identifyCommand(h), name, name);
    t.is(identifyCommand(Uint8Array.of(h.cla | 0x10, h.ins, h.p1, h.p2, 0x01, 0x00)), name, `${name} chained block`);
  }
  t.is(identifyCommand(Uint8Array.of(0x80, 0x30, 0x00, 0x01)), 'PAY', 'PAY with a wrong P2 is still a PAY');
  t.is(identifyCommand(Uint8Array.of(0x80, 0x10, 0x01, 0x00)), 'GET_STATUS');
  t.is(identifyCommand(Uint8Array.of(0x80, 0x40, 0x05, 0x00)), undefined, 'PERSONALIZE P1 05 is no step');
  t.is(identifyCommand(Uint8Array.of(0x80, 0x52, 0x03, 0x00)), undefined, 'SYNC P1 03 is no step');
  t.is(identifyCommand(Uint8Array.of(0x00, 0x10, 0x00, 0x00)), undefined, 'GET STATUS under CLA 00');
  t.is(identifyCommand(Uint8Array.of(0x80, 0xa4, 0x04, 0x00)), undefined, 'SELECT under CLA 80');
  t.is(identifyCommand(Uint8Array.of(0x80, 0xfe, 0x00, 0x00)), undefined);
  t.is(identifyCommand(Uint8Array.of(0x80, 0x30, 0x00)), undefined, 'fewer than 4 bytes');
  t.true(isChainedBlock(Uint8Array.of(0x90, 0x30, 0, 0)));
  t.false(isChainedBlock(encodeCommand(payCommand(bytes(3)))));
});

test('mayCarrySecret: VERIFY, CHANGE, UNBLOCK PIN and SET PIN, whatever their CLA and P2; nothing else', (t) => {
  const secret = new Set(['VERIFY_PIN', 'CHANGE_PIN', 'UNBLOCK_PIN', 'SET_PIN']);
  for (const [name, h] of Object.entries(CardCommand)) t.is(mayCarrySecret(h), secret.has(name), name);
  t.true(mayCarrySecret(Uint8Array.of(0x00, 0x20, 0x00, 0x80)), 'a VERIFY PIN probe with a wrong CLA and P2 is masked too');
  t.false(mayCarrySecret(Uint8Array.of(0x80, 0x40, 0x02, 0x00)), 'WRITE CERTIFICATES');
  t.false(mayCarrySecret(Uint8Array.of(0x80, 0x20)), 'too short');
});

test('answerIsFresh: the last block of PAY, SYNC/LOAD BEGIN and GENERATE KEY; never a block before the last', (t) => {
  const fresh = new Set(['PAY', 'SYNC_BEGIN', 'LOAD_BEGIN', 'GENERATE_KEY']);
  for (const [name, h] of Object.entries(CardCommand)) {
    t.is(answerIsFresh(h), fresh.has(name), name);
    t.false(answerIsFresh({ ...h, cla: h.cla | 0x10 }), `${name} chained block`);
  }
});

// ---------------------------------------------------------------- parsers

const selectAnswer = (over: Record<number, CborValue | undefined> = {}): Uint8Array => {
  const m = new Map<number, CborValue>([
    [1, 1],
    [2, 1],
    [3, 0x6f],
    [4, true],
    [5, 65535],
    [6, bytes(16, 7)],
  ]);
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) m.delete(Number(k));
    else m.set(Number(k), v);
  }
  return encodeDeterministic(m);
};

test('parseApplicationInfo reads the SELECT answer leniently (keycard-go ParseApplicationInfo): later keys and bits are fine', (t) => {
  const info = parseApplicationInfo(selectAnswer());
  t.deepEqual(info, { applet: 1, protocol: 1, capabilities: 0x6f, locked: true, maxCommand: 65535, card: bytes(16, 7) });
  t.true(hasCapability(info, Capability.PAY) && hasCapability(info, Capability.RETRY));
  t.false(hasCapability(info, Capability.ON_DEVICE_CONFIRM));
  // A later applet: an unknown key, a new version.
  t.deepEqual(parseApplicationInfo(selectAnswer({ 2: 7, 40: 'new' })), { ...info, protocol: 7 });
  // Known fields that do not fit are absent, not fatal.
  const odd = parseApplicationInfo(selectAnswer({ 4: 1, 5: 100, 6: bytes(15) }));
  t.deepEqual(odd, { applet: 1, protocol: 1, capabilities: 0x6f, locked: false });
  t.false(parseApplicationInfo(selectAnswer({ 4: undefined })).locked, 'no locked key: not operational');
  // The strict read of the same answers.
  t.deepEqual(parseSelectResponse(selectAnswer()), {
    applet: 1,
    protocol: 1,
    capabilities: 0x6f,
    locked: true,
    maxCommand: 65535,
    card: bytes(16, 7),
  });
  t.throws(() => parseSelectResponse(selectAnswer({ 40: 'new' })), { code: ErrorCode.SCHEMA_UNKNOWN_FIELD });
});

test('parseApplicationInfo refuses what is not a DT applet answer: no capabilities, not a map, not CBOR', (t) => {
  const noCaps = t.throws(() => parseApplicationInfo(selectAnswer({ 3: undefined })));
  t.true(isDtError(noCaps, ErrorCode.SCHEMA_MISSING_FIELD) && noCaps.details.field === 'capabilities');
  const badCaps = t.throws(() => parseApplicationInfo(selectAnswer({ 3: 'all' })));
  t.true(isDtError(badCaps, ErrorCode.SCHEMA_MISSING_FIELD) && badCaps.details.field === 'capabilities');
  t.throws(() => parseApplicationInfo(encodeDeterministic([1, 2])), { code: ErrorCode.SCHEMA_WRONG_TYPE });
  t.throws(() => parseApplicationInfo(Uint8Array.of(0xbf, 0x01)), { instanceOf: Error });
  t.throws(
    () =>
      parseApplicationInfo(
        encodeDeterministic(
          new Map<number, CborValue>([
            [3, 1],
            [7, bytes(2000)],
          ]),
        ),
      ),
    { code: ErrorCode.TOO_LARGE },
  );
});

test('invalid inputs: every parser throws a DtError for bytes that are not its answer', (t) => {
  const garbage = [
    new Uint8Array(0),
    Uint8Array.of(0xff),
    Uint8Array.of(0xa1, 0x01),
    Uint8Array.of(0xbf, 0x01, 0x02, 0xff),
    Uint8Array.of(0x18, 0x01),
  ];
  const parsers: [string, (b: Uint8Array) => unknown][] = [
    ['parseApplicationInfo', parseApplicationInfo],
    ['parseSelectResponse', parseSelectResponse],
    ['parseCardStatus', parseCardStatus],
    ['parseCertificates', parseCertificates],
    ['parsePublicKey', parsePublicKey],
  ];
  for (const [name, parse] of parsers) {
    for (const g of garbage) {
      const e = t.throws(() => parse(g), undefined, `${name}(${toHex(g)})`);
      t.true(isDtError(e), `${name}(${toHex(g)}) throws a DtError: ${String(e)}`);
    }
  }
  t.throws(() => parseCertificates(encodeDeterministic([bytes(20), 5])), { code: ErrorCode.SCHEMA_WRONG_TYPE });
  t.throws(() => parsePublicKey(bytes(65, 0x04)), { code: ErrorCode.BAD_KEY }, 'not a point on the curve');
  t.throws(() => parseLastNonce(Uint8Array.of(0xff)));
});

test('parsePublicKey, parseCertificates, parseLastNonce and parsePinResult read what the card answers', (t) => {
  const { publicKey } = generateKeyPair(rnd);
  t.deepEqual(parsePublicKey(publicKey), publicKey);
  const chain = [bytes(40, 1), bytes(50, 2)];
  t.deepEqual(parseCertificates(encodeDeterministic(chain)), chain);
  const status = new Map<number, CborValue>([
    [16, bytes(16, 9)],
    [99, 'later key'],
  ]);
  t.deepEqual(parseLastNonce(encodeDeterministic(status)), bytes(16, 9), 'lenient: a later key does not hide the nonce');
  t.is(parseLastNonce(encodeDeterministic(new Map([[16, bytes(15)]]))), undefined, 'a nonce of the wrong length is none');
  t.is(parseLastNonce(encodeDeterministic(7)), undefined, 'not a map: no nonce');
  t.deepEqual(parsePinResult(SW.OK), { kind: 'verified' });
  t.deepEqual(parsePinResult(SW.wrongPin(2)), { kind: 'wrong', remaining: 2 });
  t.deepEqual(parsePinResult(SW.wrongPin(0)), { kind: 'wrong', remaining: 0 });
  t.deepEqual(parsePinResult(SW.PIN_BLOCKED), { kind: 'blocked' });
  t.deepEqual(parsePinResult(SW.WRONG_DATA), { kind: 'refused', sw: SW.WRONG_DATA });
});

// ---------------------------------------------------------------- formats

test('every card format round-trips through encodeFormat / decodeFormat and decodeFormatLenient (property)', (t) => {
  for (const schema of CARD_FORMATS as readonly StructSchema[]) {
    fc.assert(
      fc.property(arbitraryStruct(schema), (value) => {
        const encoded = encodeFormat(schema, value as never);
        t.deepEqual(decodeFormat(schema, encoded, 1 << 20), value, schema.name);
        t.deepEqual(decodeFormatLenient(schema, encoded, 1 << 20), value, `${schema.name} (lenient)`);
      }),
      { seed: SEED, numRuns: 100 },
    );
  }
});

test('format constants: capability and personalization bits, keys by name', (t) => {
  t.is(FULLY_PERSONALIZED, Personalized.KEY | Personalized.CERTIFICATES | Personalized.PIN | Personalized.CONFIG);
  t.is(FULLY_PERSONALIZED, 0x0f);
  t.is(formatKey(SelectResponseSchema, 'card'), 6);
  t.is(formatKey(SelectResponseSchema, 'capabilities'), 3);
  t.deepEqual(buildCommand(CardCommand.GET_STATUS), { cla: 0x80, ins: 0x10, p1: 0, p2: 0 });
  t.is(toHex(selectCommand().data!), toHex(DT_AID));
});

// ---------------------------------------------------------------- input selection

const id = (n: number): Uint8Array => new Uint8Array(16).fill(n);
const coin = (n: number, value: number, extra: Partial<SpendableCoin> = {}): SpendableCoin => ({ id: id(n), value, ...extra });
const ids = (cs: SpendableCoin[] | undefined): number[] | undefined => cs?.map((c) => c.id[0]!);
const meal = { hops: 1, mccs: [5812] };

test('selectInputs (SPEC §10.7): largest first, holdings order among equals, marked classes first where allowed, at most maxInputs', (t) => {
  const coins = [coin(1, 500), coin(2, 2_000), coin(3, 2_000), coin(4, 100)];
  t.deepEqual(ids(selectInputs(coins, 1_500, 'shop', 5411, 0)), [2], 'the largest coin covers it');
  t.deepEqual(ids(selectInputs(coins, 3_000, 'shop', 5411, 0)), [2, 3], 'equal values keep holdings order');
  t.deepEqual(ids(selectInputs(coins, 4_600, 'shop', 5411, 0)), [2, 3, 1, 4]);
  t.is(selectInputs(coins, 4_601, 'shop', 5411, 0), undefined, 'not enough');
  const marked = [coin(1, 5_000), coin(2, 300, { mark: meal }), coin(3, 400, { mark: meal })];
  t.deepEqual(ids(selectInputs(marked, 600, 'canteen', 5812, 0)), [3, 2], 'the purpose-bound class first where it is accepted');
  t.deepEqual(
    ids(selectInputs(marked, 800, 'canteen', 5812, 0)),
    [1],
    'one class per transfer: the unmarked class covers what the marked cannot',
  );
  t.deepEqual(ids(selectInputs(marked, 600, 'shop', 5411, 0)), [1], 'a mark that does not allow the merchant is not eligible');
  const many = Array.from({ length: LIMITS.maxInputs + 2 }, (_, i) => coin(i + 1, 10));
  t.is(selectInputs(many, 10 * (LIMITS.maxInputs + 1), 'shop', 5411, 0), undefined, `more than ${LIMITS.maxInputs} inputs needed`);
  t.is(selectInputs(many, 10 * LIMITS.maxInputs, 'shop', 5411, 0)!.length, LIMITS.maxInputs);
});

test('selectInputs skips coins expired at `at` (expires < at); a coin expiring at `at` is still good', (t) => {
  const coins = [coin(1, 9_000, { expires: 100 }), coin(2, 1_000), coin(3, 500, { expires: 1_000 })];
  t.deepEqual(ids(selectInputs(coins, 1_000, 'shop', 5411, 100)), [1], 'expires = at: eligible');
  t.deepEqual(ids(selectInputs(coins, 1_000, 'shop', 5411, 101)), [2], 'the expired 9_000 coin is skipped');
  t.deepEqual(ids(selectInputs(coins, 1_500, 'shop', 5411, 101)), [2, 3]);
  t.is(selectInputs(coins, 1_600, 'shop', 5411, 101), undefined, 'only unexpired value counts');
  t.is(selectInputs(coins, 1, 'shop', 5411, 1_001)!.length, 1);
});
