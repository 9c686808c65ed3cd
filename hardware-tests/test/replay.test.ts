/**
 * Record and replay: the conformance suite runs against a simulated card
 * served in-process from a state file (through the lab's recorded context,
 * with a real ledger for the revocation list and the SYNC case); a copy of
 * the state file taken before the run is then replayed with every
 * transcript, in recording order, and must answer byte for byte the same
 * (signatures included: the card is deterministic from the same state).
 * One flipped byte in a recorded answer makes exactly that case fail, at that
 * line. PIN digits never appear in clear in a transcript, and masked
 * commands are replayable only with --pin.
 */
import test from 'ava';
import { copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStorage, InProcessTransport, SimulatedCard } from '@dt/card-applet-sim';
import { TransportReader } from '@dt/terminal';
import { conformance } from '../src/suites/conformance.ts';
import { createLabContext } from '../src/context.ts';
import { runSuites } from '../src/runner.ts';
import { moneyIn, readTranscript, type Exchange } from '../src/transcript.ts';
import { decodeMessage } from '@dt/protocol';
import { collectTranscripts, replayAll, stateFileTarget } from '../src/replay.ts';
import type { LabRun } from '../src/model.ts';
import { LAB_PIN, startLabWorld, type LabWorld } from './helpers/lab-world.ts';

const dir = mkdtempSync(join(tmpdir(), 'dt-lab-replay-test-'));
let world: LabWorld;
let before: string;
let out: string;
let run: LabRun;

test.before(async () => {
  world = await startLabWorld(dir);
  before = join(dir, 'before.card');
  copyFileSync(world.stateFile, before);
  out = join(dir, 'report');
  const storage = FileStorage.open(world.stateFile);
  const card = new SimulatedCard({ storage });
  const reader = new TransportReader('in-process lab card', new InProcessTransport(card));
  const handle = await createLabContext({
    cardReader: reader,
    terminalDir: world.terminalDir,
    ledgerUrl: world.ledgerUrl,
    pin: LAB_PIN,
    suites: ['conformance'],
    signal: new AbortController().signal,
    tool: 'dt-lab test',
  });
  try {
    run = await runSuites(handle.context, [conformance], { outDir: out, recorder: handle.recorder });
  } finally {
    await handle.close();
    storage.close();
  }
});

test.after.always(async () => {
  await world?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('the recorded conformance run passes with a transcript per case', (t) => {
  const cases = run.suites[0]!.cases;
  const bad = cases.filter((c) => c.status === 'failed' || c.status === 'error');
  t.deepEqual(
    bad.map((c) => `${c.name}: ${c.message}`),
    [],
  );
  // With a terminal, a ledger and the PIN, nothing needs skipping except what the card cannot show.
  const passed = new Set(cases.filter((c) => c.status === 'passed').map((c) => c.name));
  for (const name of [
    'select-dt-applet',
    'response-chaining',
    'verify-pin-wrong',
    'change-pin-same',
    'pay-bad-terminal-signature',
    'pay-valid-handover',
    'pay-nonce-replay',
    'sync',
    'personalize-locked',
    'chain-over-limit',
    'malformed-extended-length',
    'short-apdus-only',
  ]) {
    t.true(passed.has(name), `${name} passed`);
  }
  t.is(run.summary.total, cases.length);
  for (const c of cases) {
    t.truthy(c.transcript, `${c.name} has a transcript`);
    const tr = readTranscript(join(out, c.transcript!));
    t.is(tr.header.case, c.name);
    t.is(tr.header.suite, 'conformance');
  }
  const pay = cases.find((c) => c.name === 'pay-valid-handover')!;
  t.is(pay.details?.paid, 100);
  t.is(pay.details?.balanceAfter, world.loaded - 100);
  // The run's accounting from the card's own handovers in the transcripts.
  t.deepEqual(run.card?.signedInRun, { transfers: 1, value: 100, voided: 0, voidedValue: 0 });
});

test('PIN digits never appear in clear in a transcript; the PIN commands are masked as **', (t) => {
  const pinHex = Buffer.from(LAB_PIN).toString('hex');
  let masked = 0;
  for (const f of collectTranscripts([out])) {
    const text = readFileSync(f.path, 'utf8');
    for (const line of text.split('\n').filter((l) => l.startsWith('=> '))) {
      t.false(line.includes(pinHex), `${f.path}: ${line.slice(0, 40)}`);
      if (line.includes('********')) masked++;
    }
  }
  // verify-pin-wrong (1), verify-pin-session (1), change-pin-same (2 runs, 1 line + 1 VERIFY)
  t.true(masked >= 4, `masked PIN commands: ${masked}`);
});

test('replaying every transcript against a copy of the state file matches byte for byte', async (t) => {
  const files = collectTranscripts([out]);
  t.true(files.length > 30);
  t.deepEqual(
    files.filter((f) => f.error).map((f) => f.error),
    [],
  );
  const replayOut = join(dir, 'replay-strict');
  const target = stateFileTarget(before);
  t.teardown(() => target.close());
  const r = await replayAll(files, target, { strict: true, pin: LAB_PIN, outDir: replayOut });
  const cases = r.suites[0]!.cases;
  t.deepEqual(
    cases.filter((c) => c.status !== 'passed').map((c) => `${c.name}: ${c.message}`),
    [],
  );
  t.is(cases.length, files.length);
  t.is(r.suites[0]!.name, 'replay');
});

test('without --pin the masked transcripts are reported as not replayable, the rest still match', async (t) => {
  const files = collectTranscripts([out]);
  const target = stateFileTarget(before);
  t.teardown(() => target.close());
  const r = await replayAll(files, target, { strict: true, outDir: join(dir, 'replay-nopin') });
  const cases = r.suites[0]!.cases;
  const skipped = cases.filter((c) => c.status === 'skipped');
  t.deepEqual(skipped.map((c) => c.name).sort(), [
    'conformance/change-pin-same',
    'conformance/verify-pin-session',
    'conformance/verify-pin-wrong',
  ]);
  for (const c of skipped) t.regex(c.message!, /not replayable: line \d+ has masked PIN bytes: give --pin/);
  t.deepEqual(
    cases.filter((c) => c.status === 'failed' || c.status === 'error').map((c) => `${c.name}: ${c.message}`),
    [],
  );
});

test('one flipped byte in a recorded answer fails exactly that case, at that line', async (t) => {
  const tampered = join(dir, 'tampered');
  cpSync(join(out, 'transcripts'), tampered, { recursive: true });
  const file = join(tampered, 'conformance', 'get-status.apdu');
  const lines = readFileSync(file, 'utf8').split('\n');
  // The GET STATUS answer: the first "<=" line after the one of SELECT with more than a status word.
  const idx = lines.findIndex((l, i) => l.startsWith('<= ') && l.length > 3 + 4 && lines[i - 1]!.startsWith('=> 8010'));
  t.true(idx > 0);
  const l = lines[idx]!;
  const pos = 3 + 6; // a data byte, not the status word
  lines[idx] = l.slice(0, pos) + (l[pos] === '0' ? '1' : '0') + l.slice(pos + 1);
  writeFileSync(file, lines.join('\n'));
  const target = stateFileTarget(before);
  t.teardown(() => target.close());
  const r = await replayAll(collectTranscripts([tampered]), target, {
    strict: true,
    pin: LAB_PIN,
    outDir: join(dir, 'replay-tampered'),
  });
  const bad = r.suites[0]!.cases.filter((c) => c.status !== 'passed');
  t.is(bad.length, 1);
  t.is(bad[0]!.name, 'conformance/get-status');
  t.is(bad[0]!.status, 'failed');
  t.is((bad[0]!.details!.mismatch as { line: number }).line, idx + 1);
  t.regex(bad[0]!.message!, new RegExp(`^line ${idx + 1}: different bytes: expected <= `));
  t.true(readdirSync(tampered).length > 0);
});

test('the run accounting counts a transfer only when the card signature verifies: a copy damaged on the way is not the card', (t) => {
  const pay = run.suites[0]!.cases.find((c) => c.name === 'pay-valid-handover')!;
  const { exchanges } = readTranscript(join(out, pay.transcript!));
  // Reassemble the PAY answer (61xx pieces and GET RESPONSE) into one handover.
  const start = exchanges.findIndex((x) => x.command[0] === 0x80 && x.command[1] === 0x30);
  t.true(start >= 0, 'the case sent a complete PAY');
  const parts: Uint8Array[] = [];
  for (let i = start; i < exchanges.length; i++) {
    const r = exchanges[i]!.response!;
    parts.push(r.subarray(0, r.length - 2));
    if (r[r.length - 2] === 0x90) break;
  }
  const handover = Uint8Array.from(Buffer.concat(parts));
  const transfer = decodeMessage('Handover', handover).transfer;
  const at = Buffer.from(handover).indexOf(Buffer.from(transfer));
  t.true(at > 0);
  const one = (answer: Uint8Array): Exchange[] => [
    { command: Uint8Array.from([0x80, 0x30, 0x00, 0x00, 0x01, 0x00]), response: Uint8Array.from([...answer, 0x90, 0x00]) },
  ];
  const good = moneyIn(one(handover));
  t.is(good.transfers.length, 1);
  t.is(good.transfers[0]!.amount, 100);
  // One byte of the transfer's signature flipped: it still decodes, it is not the card's signature.
  const damaged = handover.slice();
  damaged[at + transfer.length - 1]! ^= 0x01;
  t.is(decodeMessage('Handover', damaged).transfer.length, transfer.length);
  t.is(moneyIn(one(damaged)).transfers.length, 0);
  // The damaged copy and then the good one (a torn-tap retry): counted once.
  t.is(moneyIn([...one(damaged), ...one(handover)]).transfers.length, 1);
});

test('replay does what the control channel did: a cut armed in the transcript cuts again, the card comes back when the next answer is due; a reader-side "card gone" is not sent', async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'dt-lab-replay-control-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const state = join(work, 'card.state');
  copyFileSync(before, state);
  // Record by hand what the robustness suite does: SELECT, arm a cut after the next APDU, GET STATUS (lost),
  // a command the reader refused (stale handle), SELECT again once the card is back.
  const select = Uint8Array.from(Buffer.from('00a404000af0445457414c4c45540100', 'hex'));
  const status = Uint8Array.from(Buffer.from('8010000000', 'hex'));
  const liveStorage = FileStorage.open(state);
  const live = new SimulatedCard({ storage: liveStorage });
  live.powerOn();
  const a1 = await live.transmit(select);
  live.faults.arm({ cutAfterApdu: { index: 1 } });
  await t.throwsAsync(live.transmit(status));
  live.powerOn();
  const a3 = await live.transmit(select);
  liveStorage.close();
  const text =
    [
      '# dt-lab transcript v1',
      '# suite: robustness',
      '# case: hand',
      '# seq: 1',
      `=> ${Buffer.from(select).toString('hex')}`,
      `<= ${Buffer.from(a1).toString('hex')}`,
      '# control: {"command":"arm","plan":{"cutAfterApdu":{"index":1}}}',
      '=> 8010000000',
      '<=',
      '# no answer: answer of 0 byte(s) without a status word',
      '=> 8010000000',
      '<=',
      '# no answer: CARD_REMOVED: card left the field of R',
      `=> ${Buffer.from(select).toString('hex')}`,
      `<= ${Buffer.from(a3).toString('hex')}`,
      '# control: {"command":"disarm"}',
    ].join('\n') + '\n';
  writeFileSync(join(work, 'hand.apdu'), text);
  const target = stateFileTarget(before);
  try {
    const r = await replayAll(collectTranscripts([join(work, 'hand.apdu')]), target, { strict: true, outDir: work });
    t.deepEqual(
      r.suites[0]!.cases.map((c) => [c.status, c.message]),
      [['passed', undefined]],
    );
  } finally {
    await target.close();
  }
  // Without the control event the cut does not happen and the replay says where it differs.
  writeFileSync(join(work, 'hand.apdu'), text.replace(/# control: \{"command":"arm"[^\n]*\n/, ''));
  const again = stateFileTarget(before);
  try {
    const r = await replayAll(collectTranscripts([join(work, 'hand.apdu')]), again, { strict: true, outDir: work });
    t.regex(r.suites[0]!.cases[0]!.message ?? '', /^line 8: expected no answer/);
  } finally {
    await again.close();
  }
});
