/**
 * The runner, the context and the CLI's usage errors, without pcscd: the
 * card is the firmware served in-process (TransportReader over an
 * InProcessTransport), the terminal a dt-pos directory certified by a real
 * ledger PKI.
 *
 * - verdicts: expect/check/fail -> failed, skip -> skipped, other
 *   exceptions -> error with a one-line message (no stack); each case has
 *   its transcript; Ctrl-C (the signal) stops at the next case boundary;
 * - non-TTY progress prints one line per finished case;
 * - the context picks readers by exact name or unique part, refuses payment
 *   suites without a revocation list, reads the CRL of a dt-pos journal
 *   read-only, and gives every terminal() a fresh journal;
 * - `dt-lab` usage errors exit 2 with a clear message; --help exits 0.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Writable } from 'node:stream';
import { FileStorage, InProcessTransport, SimulatedCard } from '@dt/card-applet-sim';
import { Journal, TransportReader, installRevocationList, loadIdentity } from '@dt/terminal';
import { getStatus, selectApplet } from '@dt/protocol';
import { createLabContext, matchReader, readJournalCrl, fetchCrl, LabConfigError } from '../src/context.ts';
import { runSuites, streamProgress, exitCodeOf } from '../src/runner.ts';
import { readTranscript } from '../src/transcript.ts';
import type { LabSuite } from '../src/suite.ts';
import { startLabWorld, nowSec, type LabWorld } from './helpers/lab-world.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const DT_LAB = resolve(HERE, '../bin/dt-lab.js');
const exec = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'dt-lab-runner-'));
let world: LabWorld;

test.before(async () => {
  world = await startLabWorld(dir, { load: 1_000_000 });
});
test.after.always(async () => {
  await world?.close();
  rmSync(dir, { recursive: true, force: true });
});

function inProcessReader(): { reader: TransportReader; close: () => void } {
  const storage = FileStorage.open(world.stateFile);
  const card = new SimulatedCard({ storage });
  return { reader: new TransportReader('in-process card', new InProcessTransport(card)), close: () => storage.close() };
}

test.serial('verdicts, transcripts, progress lines and stopping at a case boundary', async (t) => {
  const { reader, close } = inProcessReader();
  const ac = new AbortController();
  const handle = await createLabContext({ cardReader: reader, suites: ['conformance'], signal: ac.signal, tool: 'dt-lab test' });
  const suite: LabSuite = {
    name: 'conformance',
    description: 'runner fixture',
    async run(ctx, cases) {
      await cases.case('passes', 'reads the card status', async (c) => {
        const s = await ctx.openSession();
        try {
          await selectApplet(s);
          c.details.balance = (await getStatus(s)).balance;
        } finally {
          await s.release();
        }
      });
      await cases.case('fails', 'an expectation', async (c) => c.expect('status word', 0x6985, 0x9000, true));
      await cases.case('skips', 'a skip', async (c) => c.skip('needs a hand on the card'));
      await cases.case('errors', 'an unexpected exception', async () => {
        throw new TypeError('boom\nsecond line');
      });
      await cases.case('passes', 'a duplicate name gets its own transcript', async () => {
        ac.abort();
      });
      await cases.case('never-runs', 'after Ctrl-C', async (c) => c.fail('ran after the abort'));
      return {};
    },
  };
  let text = '';
  const sink = new Writable({
    write(chunk, _enc, cb) {
      text += String(chunk);
      cb();
    },
  }) as unknown as NodeJS.WriteStream;
  const out = join(dir, 'runner-out');
  try {
    const run = await runSuites(handle.context, [suite, suite], {
      outDir: out,
      recorder: handle.recorder,
      progress: streamProgress(sink, { tty: false }),
    });
    const cases = run.suites[0]!.cases;
    t.is(run.suites.length, 1, 'the second suite does not start after the abort');
    t.deepEqual(
      cases.map((c) => [c.name, c.status]),
      [
        ['passes', 'passed'],
        ['fails', 'failed'],
        ['skips', 'skipped'],
        ['errors', 'error'],
        ['passes', 'passed'],
      ],
    );
    t.is(cases[0]!.details?.balance, 1_000_000);
    t.is(cases[1]!.message, 'status word: expected 9000, got 6985');
    t.is(cases[2]!.message, 'needs a hand on the card');
    // One line: name and message, never the stack.
    t.is(cases[3]!.message, 'TypeError: boom second line');
    t.deepEqual(
      cases.map((c) => c.transcript),
      [
        'transcripts/conformance/passes.apdu',
        'transcripts/conformance/fails.apdu',
        'transcripts/conformance/skips.apdu',
        'transcripts/conformance/errors.apdu',
        'transcripts/conformance/passes-2.apdu',
      ],
    );
    t.true(readTranscript(join(out, cases[0]!.transcript!)).exchanges.length >= 1);
    t.deepEqual(run.summary, { total: 5, passed: 2, failed: 1, skipped: 1, errors: 1 });
    t.is(exitCodeOf(run), 1);
    t.true(run.options.interrupted as boolean);
    t.regex(text, /^PASSED  conformance\/passes \(\d+ ms\)$/m);
    t.regex(text, /^FAILED  conformance\/fails \(\d+ ms\): status word: expected 9000, got 6985$/m);
    t.regex(text, /^SKIPPED conformance\/skips/m);
    t.regex(text, /^ERROR   conformance\/errors/m);
  } finally {
    await handle.close();
    close();
  }
});

test.serial('the context: reader names, revocation list sources, a fresh journal per terminal()', async (t) => {
  t.is(matchReader(['ACS ACR122U 00 00', 'Virtual PCD 00 00'], 'Virtual PCD 00 00'), 'Virtual PCD 00 00');
  t.is(matchReader(['ACS ACR122U 00 00', 'Virtual PCD 00 00'], 'acr122'), 'ACS ACR122U 00 00');
  t.throws(() => matchReader(['Virtual PCD 00 00', 'Virtual PCD 00 01'], 'virtual'), {
    instanceOf: LabConfigError,
    message: /ambiguous[\s\S]*Virtual PCD 00 01/,
  });
  t.throws(() => matchReader(['Virtual PCD 00 00'], 'omnikey'), {
    instanceOf: LabConfigError,
    message: /no PC\/SC reader matches "omnikey"; readers:\n {2}Virtual PCD 00 00/,
  });

  const { reader, close } = inProcessReader();
  try {
    // No revocation list anywhere: the payment suites refuse to start; conformance runs without a terminal.
    await t.throwsAsync(
      createLabContext({
        cardReader: reader,
        terminalDir: world.terminalDir,
        suites: ['conformance', 'timing'],
        signal: new AbortController().signal,
        tool: 't',
      }),
      { instanceOf: LabConfigError, message: /^timing takes payments, which need a revocation list: no revocation list in the journal/ },
    );
    const noCrl = await createLabContext({
      cardReader: reader,
      terminalDir: world.terminalDir,
      suites: ['conformance'],
      signal: new AbortController().signal,
      tool: 't',
    });
    t.is(noCrl.context.terminal(), undefined);
    t.regex(noCrl.context.terminalMissing!, /no revocation list/);
    await noCrl.close();

    // The merchant's journal holds a list: it is read read-only and installed into the lab's own journals.
    const identity = loadIdentity(world.terminalDir, nowSec());
    const crl = await fetchCrl(world.ledgerUrl);
    const merchant = Journal.open(join(world.terminalDir, 'journal.sqlite'));
    installRevocationList(merchant, crl, identity, nowSec());
    merchant.close();
    t.deepEqual(readJournalCrl(join(world.terminalDir, 'journal.sqlite')), crl);
    const before = readFileSync(join(world.terminalDir, 'journal.sqlite'));
    const h = await createLabContext({
      cardReader: reader,
      terminalDir: world.terminalDir,
      suites: ['timing'],
      signal: new AbortController().signal,
      tool: 't',
    });
    const a = h.context.terminal()!;
    const b = h.context.terminal()!;
    t.not(a.journal, b.journal);
    t.is(a.journal.crl()?.version, b.journal.crl()?.version);
    t.truthy(a.journal.crl());
    t.is(h.context.terminalMissing, undefined);
    t.true(existsSync(h.context.workDir));
    await h.close();
    t.false(existsSync(h.context.workDir));
    t.deepEqual(readFileSync(join(world.terminalDir, 'journal.sqlite')), before, "the merchant's journal is not written");
  } finally {
    close();
  }
});

async function lab(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await exec(process.execPath, [DT_LAB, ...args], { env: { ...process.env, DT_LAB_PIN: '' }, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

test('dt-lab usage: --help tells the commands and exit codes; bad input exits 2 with a clear message', async (t) => {
  const help = await lab(['--help']);
  t.is(help.code, 0);
  for (const w of ['readers', 'run', 'replay', '130', 'conformance, robustness, timing, endurance']) t.true(help.stdout.includes(w), w);
  const unknown = await lab(['run', 'conformance', 'speed', '--reader', 'x']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /unknown suite speed; suites: conformance, robustness, timing, endurance/);
  const pin = await lab(['run', 'conformance', '--reader', 'x', '--pin', '12ab5']);
  t.is(pin.code, 2);
  t.regex(pin.stderr, /PIN must be 4 to 12 digits/);
  t.false(pin.stderr.includes('12ab5'), 'the PIN is not echoed');
  const taps = await lab(['run', '--reader', 'x', '--taps', 'many']);
  t.is(taps.code, 2);
  t.regex(taps.stderr, /--taps must be an integer/);
  const replay = await lab(['replay', dir]);
  t.is(replay.code, 2);
  t.regex(replay.stderr, /exactly one of --reader <name> \(a live card\) or --card <state file>/);
});

test('dt-lab run --ledger: not an http(s) URL is a usage error (2); a ledger that cannot be reached is exit 3 at the start, without --terminal too', async (t) => {
  const bad = await lab(['run', 'conformance', '--reader', 'x', '--ledger', 'notaurl']);
  t.is(bad.code, 2, bad.stderr);
  t.regex(bad.stderr, /--ledger must be an http\(s\) URL/);
  const out = join(dir, 'unreachable-out');
  const down = await lab(['run', 'conformance', '--reader', 'x', '--ledger', 'http://127.0.0.1:1', '--out', out]);
  t.is(down.code, 3, down.stderr);
  t.regex(down.stderr, /^dt-lab: cannot reach the ledger at http:\/\/127\.0\.0\.1:1: /);
  t.false(existsSync(out), 'no report of a run that did not start');
});

test('dt-lab run and replay --reader with pcscd unreachable: exit 3, both saying why (not exit 2 "no reader matches")', async (t) => {
  const env = { ...process.env, DT_LAB_PIN: '', PCSCLITE_CSOCK_NAME: join(dir, 'no-pcscd', 'pcscd.comm') };
  const transcript = join(dir, 'one.apdu');
  writeFileSync(transcript, '# dt-lab transcript v1\n=> 00a4040000\n<= 9000\n');
  for (const args of [
    ['run', 'conformance', '--reader', 'x', '--out', join(dir, 'no-pcscd-run')],
    ['replay', transcript, '--reader', 'x', '--out', join(dir, 'no-pcscd-replay')],
  ]) {
    const r = await exec(process.execPath, [DT_LAB, ...args], { env, timeout: 60_000 }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    t.is(r.code, 3, `${args[0]}: ${r.stderr}`);
    t.regex(r.stderr, /^dt-lab: no PC\/SC readers: pcscd is not running/, args[0]);
  }
});

test('TTY progress: one live status line rewritten in place, failures on their own line; --quiet shows failures only', (t) => {
  let text = '';
  const stream = Object.assign(
    new Writable({
      write(chunk, _enc, cb) {
        text += String(chunk);
        cb();
      },
    }),
    { columns: 80, isTTY: true },
  ) as unknown as NodeJS.WriteStream;
  const p = streamProgress(stream, { tty: true });
  p.caseStarted('timing', 'tap-latency', 1);
  p.caseProgress('timing', 'tap-latency', 'approved', 57, 200);
  p.caseFinished({ suite: 'timing', name: 'tap-latency', description: '', status: 'failed', durationMs: 12, message: 'p95' });
  p.close();
  t.true(text.includes('\r\x1b[K[timing 1] tap-latency …'));
  t.true(text.includes('\r\x1b[K[timing 1] tap-latency 57/200 approved'));
  t.regex(text, /FAILED  timing\/tap-latency \(12 ms\): p95\n$/);
  let quiet = '';
  const q = streamProgress(
    new Writable({
      write(c, _e, cb) {
        quiet += String(c);
        cb();
      },
    }) as unknown as NodeJS.WriteStream,
    { tty: false, quiet: true },
  );
  q.caseFinished({ suite: 'conformance', name: 'a', description: '', status: 'passed', durationMs: 1 });
  q.caseFinished({ suite: 'conformance', name: 'b', description: '', status: 'error', durationMs: 1, message: 'x' });
  t.is(quiet, 'ERROR   conformance/b (1 ms): x\n');
});
