/**
 * Golden APDU transcripts replayed against the payment kernel (ledgerjs
 * RecordStore pattern): `test/golden/*.apdu` hold taps recorded from the real
 * firmware with fixed keys, nonces and times (helpers/golden.ts). Each
 * replay must reach the recorded outcome, send exactly the recorded
 * commands and use every recorded exchange; a changed byte or a line left
 * over fails. A fresh recording must give the committed bytes, so the files
 * are what today's firmware and kernel say (regenerate: `npm run golden -w
 * terminal`).
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { RecordStore, RecordStoreError, openSigned, decodeMessage, identifyCommand, SW, toHex } from '@dt/protocol';
import type { TapOutcome } from '../src/index.ts';
import { GOLDEN_SCENARIOS, recordGolden, replayGolden, type GoldenScenario } from './helpers/golden.ts';

const file = (name: string): string => readFileSync(new URL(`golden/${name}.apdu`, import.meta.url), 'utf8');
const scenario = (name: string): GoldenScenario => GOLDEN_SCENARIOS.find((s) => s.name === name)!;

function checkOutcomes(t: import('ava').ExecutionContext, s: GoldenScenario, outcomes: readonly TapOutcome[]): void {
  t.is(outcomes.length, s.expect.length, s.name);
  s.expect.forEach((want, i) => {
    const got = outcomes[i]!;
    t.is(got.kind, want.kind, `${s.name} tap ${i}: ${JSON.stringify(got)}`);
    if (want.reason !== undefined) t.is('reason' in got ? got.reason : undefined, want.reason, `${s.name} tap ${i} reason`);
    if (got.kind === 'APPROVED') {
      if (want.recovered !== undefined) t.is(got.recovered, want.recovered, `${s.name} tap ${i} recovered`);
      if (want.cvm !== undefined) t.is(got.payment.cvm, want.cvm, `${s.name} tap ${i} cvm`);
      t.is(got.payment.amount, s.taps[i], `${s.name} tap ${i} amount`);
    }
  });
}

for (const s of GOLDEN_SCENARIOS) {
  test(`golden ${s.name}.apdu: the kernel replays it to the recorded outcome, sending every recorded command and nothing else`, async (t) => {
    const { outcomes, store } = await replayGolden(s, file(s.name));
    store.ensureQueueEmpty();
    t.true(store.isEmpty);
    checkOutcomes(t, s, outcomes);
  });

  test(`golden ${s.name}.apdu is what the real firmware and the kernel exchange today (fresh recording, same bytes)`, async (t) => {
    const { text, outcomes } = await recordGolden(s);
    checkOutcomes(t, s, outcomes);
    t.is(text, file(s.name), `regenerate with npm run golden -w terminal`);
  });
}

test('the golden transcripts show what they are named for: 6982 then VERIFY PIN, a lost PAY answer then retryOf with the same handover, 6985', (t) => {
  const sw = (r: Uint8Array | undefined): number | undefined => (r ? (r[r.length - 2]! << 8) | r[r.length - 1]! : undefined);
  const names = (name: string): string[] =>
    RecordStore.fromString(file(name)).exchanges.map(
      (x) => `${identifyCommand(x.command) ?? '?'}:${x.response ? sw(x.response)!.toString(16) : 'none'}`,
    );
  // pin: the last PAY block answered 6982, then VERIFY PIN 9000.
  const pin = names('pin');
  const i = pin.indexOf('PAY:6982');
  t.true(i > 0, pin.join(' '));
  t.is(pin[i + 1], 'VERIFY_PIN:9000');
  // refused: the PAY answered 6985, nothing after it.
  t.is(names('refused').at(-1), 'PAY:6985');
  // torn-retry: a PAY with no answer; the second tap's request names the first one's nonce and gets the same transfer back.
  const torn = RecordStore.fromString(file('torn-retry')).exchanges;
  t.true(torn.some((x) => identifyCommand(x.command) === 'PAY' && x.response === undefined));
  t.true(names('torn-retry').includes('GET_STATUS:9000'), "the retry reads the card's last nonce");
  const requests: Uint8Array[] = [];
  let chain: number[] = [];
  for (const x of torn) {
    if (identifyCommand(x.command) !== 'PAY') continue;
    chain.push(...x.command.subarray(5, 5 + x.command[4]!));
    if ((x.command[0]! & 0x10) === 0) {
      requests.push(Uint8Array.from(chain));
      chain = [];
    }
  }
  t.is(requests.length, 2);
  const [first, retry] = requests.map((r) => openSigned('PaymentRequest', r).message);
  t.is(toHex(retry!.retryOf!), toHex(first!.nonce), 'retryOf names the torn attempt');
  // The approved handover's transfer answers the first (torn) request.
  let lastPay = 0;
  torn.forEach((x, k) => {
    if (identifyCommand(x.command) === 'PAY') lastPay = k;
  });
  const handover: number[] = [];
  for (const x of torn.slice(lastPay)) handover.push(...x.response!.subarray(0, -2));
  t.is(sw(torn.at(-1)!.response), SW.OK);
  t.is(toHex(openSigned('Transfer', decodeMessage('Handover', Uint8Array.from(handover)).transfer).message.nonce), toHex(first!.nonce));
});

test('a replay fails on a command that differs from the recording: one byte of the recorded SELECT changed', async (t) => {
  const lines = file('approved').split('\n');
  const at = lines.findIndex((l) => l.startsWith('=> 00a40400'));
  lines[at] = lines[at]!.slice(0, -2) + '01'; // the recorded SELECT asks for Le 01 instead of 00
  const { outcomes, store } = await replayGolden(scenario('approved'), lines.join('\n'));
  t.not(outcomes[0]!.kind, 'APPROVED');
  const e = t.throws(() => store.ensureQueueEmpty(), { instanceOf: RecordStoreError });
  t.is(e.code, 'RECORD_MISMATCH');
  t.is(e.line, at + 1, 'the error names the line of the recording');
});

test('a replay fails when the kernel sends something else: the same file for another amount (the PAY request differs)', async (t) => {
  const { store } = await replayGolden(scenario('approved'), file('approved'), { taps: [250_001] });
  const e = t.throws(() => store.ensureQueueEmpty(), { instanceOf: RecordStoreError });
  t.is(e.code, 'RECORD_MISMATCH');
});

test('a replay fails on a recorded exchange left over, and on a command past the end', async (t) => {
  const extra = `${file('refused')}=> 8010000000\n<= 9000\n`;
  const left = await replayGolden(scenario('refused'), extra);
  t.is(t.throws(() => left.store.ensureQueueEmpty(), { instanceOf: RecordStoreError }).code, 'RECORD_LEFTOVER');
  // The approved file cut before its last exchange: the kernel asks for more than was recorded.
  const lines = file('approved').trimEnd().split('\n');
  const short = await replayGolden(scenario('approved'), lines.slice(0, -2).join('\n'));
  t.is(t.throws(() => short.store.ensureQueueEmpty(), { instanceOf: RecordStoreError }).code, 'RECORD_EXHAUSTED');
});
