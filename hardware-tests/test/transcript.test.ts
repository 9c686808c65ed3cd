/**
 * The transcript format: writer and parser agree; the parser is strict
 * (line numbers in every error) and bounded; PIN masking and unmasking
 * follow the documented rule; loose (`~`) lines are compared as replay.ts
 * documents; the recorder marks signed answers and keeps run statistics.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  MASK_PIN,
  MASK_UNKNOWN,
  MAX_APDU,
  TRANSCRIPT_MAGIC,
  TranscriptError,
  formatTranscript,
  maskSecrets,
  parseTranscript,
  unmask,
} from '../src/transcript.ts';
import { compareAnswer } from '../src/replay.ts';
import { Recorder, isLooseCommand, shortDataLength } from '../src/recorder.ts';

const b = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex, 'hex'));
const header = {
  tool: 'dt-lab test',
  suite: 'conformance',
  case: 'x',
  seq: 7,
  reader: 'R',
  atr: b('3b88'),
  time: '2026-01-01T00:00:00.000Z',
};

test('format and parse round-trip: header, exact, loose, masked and unanswered exchanges, timings', (t) => {
  const text = formatTranscript(header, [
    { command: b('00a4040000'), response: b('9000'), ms: 1.25 },
    { command: b('8030000001aa00'), response: b('01026100'), loose: true },
    { command: b('802000000431323334'), mask: Uint8Array.of(0, 0, 0, 0, 0, 1, 1, 1, 1), response: b('9000') },
    { command: b('8010000000'), noAnswer: 'card left the field' },
  ]);
  t.true(text.startsWith(`${TRANSCRIPT_MAGIC}\n`));
  t.true(text.includes('=> 8020000004********\n'));
  t.false(text.includes('31323334'));
  const p = parseTranscript(text);
  t.deepEqual(p.header, {
    tool: 'dt-lab test',
    suite: 'conformance',
    case: 'x',
    seq: '7',
    reader: 'R',
    atr: '3b88',
    time: '2026-01-01T00:00:00.000Z',
  });
  t.is(p.exchanges.length, 4);
  t.deepEqual(p.exchanges[0]!.response, b('9000'));
  t.is(p.exchanges[0]!.ms, 1.3);
  t.true(p.exchanges[1]!.loose);
  t.deepEqual([...p.exchanges[2]!.mask!], [0, 0, 0, 0, 0, 1, 1, 1, 1]);
  t.deepEqual(p.exchanges[2]!.command, b('802000000400000000'));
  t.is(p.exchanges[3]!.response, undefined);
  t.is(p.exchanges[3]!.noAnswer, 'card left the field');
  t.is(p.exchanges[3]!.commandLine, text.split('\n').indexOf('=> 8010000000') + 1);
});

test('the parser is strict and names the line', (t) => {
  const bad = (body: string, line: number, re: RegExp): void => {
    const e = t.throws(() => parseTranscript(`${TRANSCRIPT_MAGIC}\n${body}`), { instanceOf: TranscriptError });
    t.is(e!.line, line, body);
    t.regex(e!.message, re);
  };
  t.throws(() => parseTranscript('=> 00\n<= 9000\n'), { instanceOf: TranscriptError, message: /not a dt-lab transcript/ });
  bad('<= 9000\n', 2, /answer without a command/);
  bad('=> 8010\n=> 8010\n<= 9000\n', 3, /command without an answer \(the command of line 2/);
  bad('=> 8010\n', 2, /command without an answer at the end/);
  bad('=> 801\n<= 9000\n', 2, /odd number of hex digits/);
  bad('=> 80zz\n<= 9000\n', 2, /not hex/);
  bad('=> 8010\n<= 90\n', 3, /at least SW1 SW2/);
  bad('=> 8010\n<= ~\n', 3, /"~" needs an answer/);
  bad('=> 8010\n<= 9000\nhello\n', 4, /unknown line/);
  bad('=> 8010\n<= 90**\n', 3, /not hex/);
  bad(`=> ${'00'.repeat(MAX_APDU + 1)}\n<= 9000\n`, 2, /exceeds 65544/);
  t.throws(() => parseTranscript(`${TRANSCRIPT_MAGIC}\n=> ${'0'.repeat(200_000)}\n`), { message: /line longer than/ });
});

test('masking: the --pin digits become **, other PIN-shaped digits ??, declared made-up values stay clear, other commands untouched', (t) => {
  const pin = new TextEncoder().encode('4821');
  // VERIFY PIN with the PIN
  t.deepEqual([...maskSecrets(b('802000000434383231'), [pin])!], [0, 0, 0, 0, 0, 1, 1, 1, 1]);
  // VERIFY PIN with a PIN the lab does not know
  t.deepEqual([...maskSecrets(b('802000000439393939'), [pin])!], [0, 0, 0, 0, 0, 2, 2, 2, 2]);
  // ...unless it is a value the lab made up and declared
  t.is(maskSecrets(b('802000000439393939'), [pin], [b('39393939')]), undefined);
  // CHANGE PIN {1: pin, 2: pin}: both runs masked, the CBOR structure stays
  const change = b('802400000d' + 'a2014434383231' + '024434383231');
  const m = maskSecrets(change, [pin])!;
  t.is(m.filter((x) => x === MASK_PIN).length, 8);
  // PERSONALIZE SET PIN carries PIN and PUK; GET STATUS or PAY data is never masked
  t.truthy(maskSecrets(b('8040030008a2014431323334'), []));
  t.is(maskSecrets(b('803000000431323334'), [pin]), undefined);
  // 3 digits is not PIN-shaped (a format-error probe), stays clear
  t.is(maskSecrets(b('8020000003313233'), [pin]), undefined);
  // unmask puts the PIN back; ?? or a run of another length cannot be rebuilt
  t.deepEqual(unmask(b('802000000400000000'), Uint8Array.of(0, 0, 0, 0, 0, 1, 1, 1, 1), pin), b('802000000434383231'));
  t.is(unmask(b('802000000400000000'), Uint8Array.of(0, 0, 0, 0, 0, 1, 1, 1, 1), undefined), undefined);
  t.is(unmask(b('80200000050000000000'), Uint8Array.of(0, 0, 0, 0, 0, 1, 1, 1, 1, 1), pin), undefined);
  t.is(unmask(b('802000000400000000'), Uint8Array.of(0, 0, 0, 0, 0, 2, 2, 2, 2), pin), undefined);
  t.is(MASK_UNKNOWN, 2);
});

test('replay comparison: exact lines byte for byte; ~ lines by status word (61xx ~ 61yy) and shape unless strict', (t) => {
  const x = (response: string | undefined, loose = false) => ({
    command: b('8030000000'),
    commandLine: 1,
    responseLine: 2,
    ...(response === undefined ? { noAnswer: 'x' } : { response: b(response) }),
    ...(loose ? { loose: true } : {}),
  });
  t.is(compareAnswer(x('01029000'), b('01029000'), false), undefined);
  t.is(compareAnswer(x('01029000'), b('01039000'), false), 'different bytes');
  t.is(compareAnswer(x('01026100', true), b('0903616f'), false), undefined);
  t.is(compareAnswer(x('01029000', true), b('0909099000'), false), undefined);
  t.is(compareAnswer(x('01029000', true), b('0909099000'), true), 'different bytes');
  t.is(compareAnswer(x('01029000', true), b('6985'), false), 'different status word');
  t.is(compareAnswer(x('6985', true), b('016985'), false), 'data where none was recorded');
  t.is(compareAnswer(x(undefined), undefined, false), undefined);
  t.is(compareAnswer(x(undefined), b('9000'), false), 'expected no answer');
  t.is(compareAnswer(x('9000'), undefined, false), 'no answer');
});

test('the recorder marks signed answers ~ (and their GET RESPONSE pieces), counts non-short APDUs, and keeps 0/1-byte answers parseable', async (t) => {
  t.true(isLooseCommand(b('8030000001aa00')));
  t.false(isLooseCommand(b('9030000001aa')));
  t.true(isLooseCommand(b('8052010010' + '00'.repeat(16))));
  t.false(isLooseCommand(b('8052020010' + '00'.repeat(16))));
  t.is(shortDataLength(b('80100000')), 0);
  t.is(shortDataLength(b('8030000002aabb00')), 2);
  t.is(shortDataLength(b('80300000000001aa')), -1);
  const answers = [b('aa6102'), b('bbcc9000'), b(''), b('9000')];
  const r = new Recorder({ tool: 't', reader: 'R' });
  const tr = r.wrapTransport({ transmit: async () => answers.shift()! });
  r.begin('s', 'c');
  await tr.transmit(b('8030000001aa00'));
  await tr.transmit(b('00c0000002'));
  await tr.transmit(b('8010000000'));
  await tr.transmit(b('80100000000000'));
  const xs = r.current;
  t.true(xs[0]!.loose);
  t.true(xs[1]!.loose);
  t.is(xs[2]!.response, undefined);
  t.regex(xs[2]!.noAnswer!, /answer of 0 byte\(s\) without a status word/);
  t.falsy(xs[3]!.loose);
  t.is(r.stats.nonShort, 1);
  t.is(r.stats.commands, 4);
  const text = formatTranscript({ ...header, case: 'c' }, xs);
  t.is(parseTranscript(text).exchanges.length, 4);
});

test('control events round-trip between the exchanges they came between (and after the last); malformed ones are refused with the line', (t) => {
  const text = formatTranscript(
    header,
    [
      { command: b('00a4040000'), response: b('9000') },
      {
        command: b('8030000001aa00'),
        before: [
          { command: 'arm', plan: { cutAfterApdu: { index: 1 }, seed: 7 } },
          { command: 'remove', reinsertAfterMs: 300 },
        ],
        noAnswer: 'answer of 0 byte(s) without a status word',
      },
      { command: b('8010000000'), before: [{ command: 'insert' }], response: b('9000') },
    ],
    [{ command: 'disarm' }],
  );
  t.true(
    text.includes(
      '# control: {"command":"arm","plan":{"cutAfterApdu":{"index":1},"seed":7}}\n# control: {"command":"remove","reinsertAfterMs":300}\n=> 8030000001aa00\n',
    ),
  );
  const p = parseTranscript(text);
  t.is(p.exchanges[0]!.before, undefined);
  t.deepEqual(p.exchanges[1]!.before, [
    { command: 'arm', plan: { cutAfterApdu: { index: 1 }, seed: 7 } },
    { command: 'remove', reinsertAfterMs: 300 },
  ]);
  t.deepEqual(p.exchanges[2]!.before, [{ command: 'insert' }]);
  t.deepEqual(p.after, [{ command: 'disarm' }]);
  // Before the first APDU a control line is an event, not a header field.
  const first = parseTranscript(
    `${TRANSCRIPT_MAGIC}\n# suite: s\n# control: {"command":"remove"}\n=> 8010\n<=\n# no answer: CARD_REMOVED: gone\n`,
  );
  t.false('control' in first.header);
  t.deepEqual(first.exchanges[0]!.before, [{ command: 'remove' }]);
  const bad = (line: string, re: RegExp): void => {
    const e = t.throws(() => parseTranscript(`${TRANSCRIPT_MAGIC}\n=> 8010\n<= 9000\n${line}\n`), { instanceOf: TranscriptError });
    t.is(e!.line, 4, line);
    t.regex(e!.message, re);
  };
  bad('# control: nope', /not JSON/);
  bad('# control: {"command":"explode"}', /arm, disarm, remove or insert/);
  bad('# control: {"command":"arm","plan":{"cutAtWrite":0}}', /positive integer/);
  bad('# control: {"command":"arm","plan":{"nope":1}}', /unknown plan field/);
  bad('# control: {"command":"remove","reinsertAfterMs":-1}', /non-negative integer/);
  bad('# control: {"command":"insert","x":1}', /takes no fields/);
});

test('the recorder records what the control channel did (seeding random plans) before the next exchange, and nothing when the call failed', async (t) => {
  const rec = new Recorder({ tool: 'dt-lab test', reader: 'R' });
  const calls: string[] = [];
  const control = rec.wrapControl({
    remove: async () => void calls.push('remove'),
    insert: async () => void calls.push('insert'),
    arm: async (plan) => void calls.push(`arm ${JSON.stringify(plan)}`),
    disarm: async () => {
      throw new Error('socket closed');
    },
    events: async () => [],
    status: async () => ({ personalized: true, balance: 0, counter: 0, offlineTotal: 0, offlineCount: 0, inReader: true }),
    close: async () => {},
  });
  const dir = mkdtempSync(join(tmpdir(), 'dt-lab-rec-'));
  // Removed however the test ends (a failed assertion included).
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  rec.begin('robustness', 'case');
  const transport = rec.wrapTransport({ transmit: async () => b('9000') });
  await transport.transmit(b('00a4040000'));
  await control.arm({ cutAtWrite: 1, torn: true });
  await control.arm({ cutAfterApdu: { index: 1 } });
  await control.remove(250);
  await t.throwsAsync(control.disarm());
  await transport.transmit(b('8010000000'));
  await control.insert();
  const rel = rec.end(dir, 'case')!;
  const p = parseTranscript(readFileSync(join(dir, rel), 'utf8'));
  const before = p.exchanges[1]!.before!;
  t.is(before.length, 3, 'the failed disarm is not recorded');
  const torn = before[0]!;
  t.true(torn.command === 'arm' && typeof torn.plan.seed === 'number', 'a random plan gets a seed');
  t.is(calls[0], `arm ${JSON.stringify(torn.command === 'arm' ? torn.plan : {})}`, 'the card got the seeded plan');
  t.deepEqual(before.slice(1), [
    { command: 'arm', plan: { cutAfterApdu: { index: 1 } } },
    { command: 'remove', reinsertAfterMs: 250 },
  ]);
  t.deepEqual(p.after, [{ command: 'insert' }]);
});
