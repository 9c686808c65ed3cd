/**
 * Recorded exchanges (`src/apdu/record-store.ts`): the text format, replay
 * that fails on a different command, a replay past the end and leftovers,
 * and recording through a transport.
 */
import test from 'ava';
import {
  RecordStore,
  RecordStoreError,
  encodeCommand,
  exchange,
  getStatusCommand,
  recordingTransport,
  replayTransport,
  toHex,
  type ApduTransport,
} from '../src/index.ts';

const TEXT = `# dt-lab transcript v1
# case: example

=> 8010000000
<= a0 90 00
# 1.2 ms
=> 00c0000010
<= ~0102 61 02
=> 8030000001aa00
<=
# no answer: card left the field
`;

const hex = (b: Uint8Array | undefined): string | undefined => (b ? toHex(b) : undefined);

test('fromString reads commands, answers (spaces, `~`), no-answer lines and skips comments and blank lines', (t) => {
  const s = RecordStore.fromString(TEXT);
  t.deepEqual(
    s.exchanges.map((x) => [toHex(x.command), hex(x.response), x.line]),
    [
      ['8010000000', 'a09000', 4],
      ['00c0000010', '01026102', 7],
      ['8030000001aa00', undefined, 9],
    ],
  );
  t.false(s.isEmpty);
  t.is(s.nextLine, 4);
});

test('fromString refuses malformed recordings, naming the line', (t) => {
  const bad: [string, number][] = [
    ['<= 9000\n', 1],
    ['=> 8010000000\n=> 8010000000\n<= 9000\n', 2],
    ['=> 8010000000\n', 1],
    ['=> 801000000\n<= 9000\n', 1],
    ['=> 80100000**\n<= 9000\n', 1],
    ['=> 801000\n<= 9000\n', 1],
    ['=> 8010000000\n<= 90\n', 2],
    ['=> 8010000000\n<= 9000\nhello\n', 3],
  ];
  for (const [text, line] of bad) {
    const e = t.throws(() => RecordStore.fromString(text), { instanceOf: RecordStoreError }, JSON.stringify(text));
    t.is(e.code, 'RECORD_SYNTAX', JSON.stringify(text));
    t.is(e.line, line, JSON.stringify(text));
  }
});

test('replay answers from the recording, throws where it recorded no answer, and remembers the first mismatch for ensureQueueEmpty', async (t) => {
  const store = RecordStore.fromString(TEXT);
  const card = replayTransport(store, { noAnswer: (line) => new Error(`gone at line ${line}`) });
  t.is(toHex(await card.transmit(encodeCommand(getStatusCommand()))), 'a09000');
  t.is(toHex(await card.transmit(Uint8Array.of(0x00, 0xc0, 0x00, 0x00, 0x10))), '01026102');
  await t.throwsAsync(card.transmit(Uint8Array.of(0x80, 0x30, 0x00, 0x00, 0x01, 0xaa, 0x00)), { message: 'gone at line 9' });
  t.true(store.isEmpty);
  store.ensureQueueEmpty();
  const e = await t.throwsAsync(card.transmit(Uint8Array.of(0x80, 0x10, 0, 0, 0)), { instanceOf: RecordStoreError });
  t.is(e.code, 'RECORD_EXHAUSTED');
  t.is(
    t.throws(() => store.ensureQueueEmpty(), { instanceOf: RecordStoreError }),
    e,
    'kept even when the host caught it',
  );

  const other = RecordStore.fromString(TEXT);
  const mismatch = await t.throwsAsync(replayTransport(other).transmit(Uint8Array.of(0x80, 0x10, 0x00, 0x00, 0x08)), {
    instanceOf: RecordStoreError,
  });
  t.is(mismatch.code, 'RECORD_MISMATCH');
  t.is(mismatch.line, 4);
  t.regex(mismatch.message, /expected command 8010000000, got 8010000008/);
  t.is(
    t.throws(() => other.ensureQueueEmpty()),
    mismatch,
  );

  const left = RecordStore.fromString(TEXT);
  await replayTransport(left).transmit(encodeCommand(getStatusCommand()));
  const e2 = t.throws(() => left.ensureQueueEmpty(), { instanceOf: RecordStoreError });
  t.is(e2.code, 'RECORD_LEFTOVER');
  t.is(e2.line, 7);
});

test('recordingTransport records what passes through, failures as no answer with their code; toString reads back the same', async (t) => {
  let n = 0;
  const card: ApduTransport = {
    async transmit(apdu) {
      if (++n === 3) throw Object.assign(new Error('field lost'), { code: 'CARD_REMOVED' });
      // GET STATUS answers two pieces (61 02, then GET RESPONSE).
      return apdu[1] === 0x10 ? Uint8Array.of(0xa0, 0x61, 0x02) : Uint8Array.of(0x01, 0x02, 0x90, 0x00);
    },
  };
  const store = new RecordStore();
  const rec = recordingTransport(card, store);
  t.deepEqual(await exchange(rec, getStatusCommand()), { data: Uint8Array.of(0xa0, 0x01, 0x02), sw: 0x9000 });
  await t.throwsAsync(rec.transmit(Uint8Array.of(0x80, 0x30, 0, 0)), { message: 'field lost' });
  const text = store.toString(['example', '']);
  t.is(text, '# example\n#\n=> 8010000000\n<= a06102\n=> 00c0000002\n<= 01029000\n=> 80300000\n<=\n# no answer: CARD_REMOVED\n');
  const back = RecordStore.fromString(text);
  t.deepEqual(
    back.exchanges.map((x) => hex(x.response)),
    store.exchanges.map((x) => hex(x.response)),
  );
  t.deepEqual(
    back.exchanges.map((x) => toHex(x.command)),
    store.exchanges.map((x) => toHex(x.command)),
  );
});
