/**
 * End to end, as CI runs the lab: a private pcscd (vpcd driver), a real
 * ledger, a card state file personalized by the bank and loaded online, a
 * dt-pos terminal directory; then, as child processes with
 * PCSCLITE_CSOCK_NAME pointing at the private pcscd:
 *
 *   dt-card serve --vpcd --port <p> --control <sock> <state>
 *   dt-lab readers --json
 *   dt-lab run --reader "Virtual PCD 00 00" --terminal DIR --ledger URL --card-control SOCK --out OUT --taps 200
 *
 * The run must pass every suite and write report.json (a LabRun), report.xml
 * (JUnit with the same counts), report.html and a transcript per case; the
 * card's final state (dt-card show after the server stopped) must account
 * for exactly the value the card signed away in the run: no money lost or
 * created. Then the whole report (every suite, faults and card removals
 * included) replays against the copy of the card taken before the run, byte
 * for byte, and `--quiet` prints the summary line alone. This test process
 * never loads pcsclite.
 *
 * Never skipped: the CI image has pcscd and vsmartcard-vpcd, and the test
 * runs as root (startPcscd needs its own mount namespace).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPcscd, type PcscdHandle } from '@dt/card-applet-sim';
import { PHASES, SUITE_NAMES, type LabRun } from '../src/model.ts';
import { moneyIn, readTranscript, valueOut, type SignedTransfer } from '../src/transcript.ts';
import { LAB_PIN, startLabWorld, type LabWorld } from './helpers/lab-world.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const DT_LAB = resolve(HERE, '../bin/dt-lab.js');
const DT_CARD = resolve(HERE, '../../card-applet-sim/bin/dt-card.js');

interface Done {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(
  bin: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
  onStdout?: (all: string, p: ChildProcess) => void,
): Promise<Done> {
  return new Promise((done, fail) => {
    const p = spawn(process.execPath, [bin, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      onStdout?.(stdout, p);
    });
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      fail(new Error(`${bin} ${args.join(' ')} timed out after ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    p.on('error', fail);
    p.on('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}

/** The cards serveCard started: stopped in after.always, or a failed test's card would keep the worker alive. */
const served = new Set<() => Promise<number | null>>();

/** Starts `dt-card serve` and resolves once it is connected to vpcd. */
function serveCard(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ proc: ChildProcess; log: () => string; stop: () => Promise<number | null> }> {
  return new Promise((ready, fail) => {
    const proc = spawn(process.execPath, [DT_CARD, 'serve', '--exit-with-parent', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    let started = false;
    const exited = new Promise<number | null>((r) => proc.on('close', (c) => r(c)));
    const timer = setTimeout(() => fail(new Error(`dt-card serve did not connect:\n${log}`)), 30_000);
    const onData = (d: Buffer): void => {
      log += d.toString();
      if (!started && /"event":"connected"/.test(log)) {
        started = true;
        clearTimeout(timer);
        const stop = async () => (proc.exitCode !== null ? proc.exitCode : (proc.kill('SIGTERM'), exited));
        served.add(stop);
        ready({ proc, log: () => log, stop });
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.on('close', (c) => {
      if (!started) {
        clearTimeout(timer);
        fail(new Error(`dt-card serve exited with ${c}:\n${log}`));
      }
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), 'dt-lab-cli-'));
let world: LabWorld | undefined;
let pcscd: PcscdHandle | undefined;

test.after.always(async () => {
  await Promise.all([...served].map((stop) => stop()));
  await pcscd?.stop();
  await world?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('dt-lab readers, run (all suites) and the reports, against a dt-card card through pcscd', async (t) => {
  t.timeout(10 * 60_000);
  world = await startLabWorld(dir, { limits: { perPayment: 1_000_000, offlineTotal: 4_000_000, offlineCount: 8, cvmLimit: 500_000 } });
  pcscd = await startPcscd();
  // The PIN goes in the environment (never on a command line); the PIN cases run and must be masked.
  const env = { ...process.env, PCSCLITE_CSOCK_NAME: pcscd.socketPath, DT_LAB_PIN: LAB_PIN };
  const sock = join(dir, 'card.sock');
  const card = await serveCard(['--vpcd', '--port', String(pcscd.vpcdPort), '--control', sock, '--json', world.stateFile], env);
  const reader = pcscd.readers[0];
  const out = join(dir, 'report');
  let runResult: Done;
  try {
    // ---- readers
    const readers = await run(DT_LAB, ['readers', '--json', '--wait', '5'], env, 60_000);
    t.is(readers.code, 0, readers.stderr);
    const listed = JSON.parse(readers.stdout) as { readers: { name: string; cardPresent: boolean; atr?: string }[] };
    const ours = listed.readers.find((r) => r.name === reader);
    t.truthy(ours, readers.stdout);
    t.true(ours!.cardPresent);
    t.regex(ours!.atr ?? '', /^3b88800144545741/i); // "DTWALLET" ATR (SPEC §10.11)

    // ---- the empty reader (slot 1): one clear error at the start, exit 4 (no card)
    const empty = await run(
      DT_LAB,
      ['run', 'conformance', '--reader', pcscd.readers[1], '--card-timeout', '1', '--out', join(dir, 'empty')],
      env,
      60_000,
    );
    t.is(empty.code, 4, empty.stderr);
    t.regex(empty.stderr, /no card in "Virtual PCD 00 01" \(waited 1 s\)/);

    // ---- Ctrl-C: ends the current case, runs no further one, writes the reports of what ran, exits 130
    const partial = join(dir, 'interrupted');
    let interrupted = false;
    const stopped = await run(
      DT_LAB,
      ['run', 'conformance', '--reader', reader, '--out', partial, '--no-interactive'],
      env,
      120_000,
      (all, p) => {
        if (!interrupted && /PASSED {2}conformance\/select-dt-applet/.test(all)) {
          interrupted = true;
          p.kill('SIGINT');
        }
      },
    );
    t.is(stopped.code, 130, stopped.stderr);
    const partialRun = JSON.parse(readFileSync(join(partial, 'report.json'), 'utf8')) as LabRun;
    t.true(partialRun.options.interrupted as boolean);
    t.true(partialRun.summary.total >= 1 && partialRun.summary.total < 10, `${partialRun.summary.total} cases ran`);
    t.true(existsSync(join(partial, 'report.xml')) && existsSync(join(partial, 'report.html')));

    // ---- run (a copy of the card's memory first, for the replay below)
    copyFileSync(world.stateFile, join(dir, 'before.card'));
    runResult = await run(
      DT_LAB,
      [
        'run',
        '--reader',
        reader,
        '--terminal',
        world.terminalDir,
        '--ledger',
        world.ledgerUrl,
        '--card-control',
        sock,
        '--out',
        out,
        '--taps',
        '200',
        '--no-interactive',
      ],
      env,
      8 * 60_000,
    );
  } finally {
    const code = await card.stop();
    t.log(`dt-card serve exited ${code}`);
  }
  t.is(runResult.code, 0, `dt-lab run exit ${runResult.code}\n${runResult.stdout.slice(-4000)}\n${runResult.stderr.slice(-4000)}`);
  // Non-TTY progress: one line per finished case.
  t.regex(runResult.stdout, /PASSED  conformance\/select-dt-applet \(\d+ ms\)/);

  // ---- report.json
  const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as LabRun;
  t.is(report.format, 'dt-lab-report');
  t.deepEqual(
    report.suites.map((s) => s.name),
    [...SUITE_NAMES],
  );
  const cases = report.suites.flatMap((s) => s.cases);
  t.deepEqual(
    cases.filter((c) => c.status === 'failed' || c.status === 'error').map((c) => `${c.suite}/${c.name}: ${c.message}`),
    [],
  );
  t.is(report.summary.total, cases.length);
  t.is(report.summary.failed + report.summary.errors, 0);
  // With a terminal, a ledger, the PIN and the card control channel, CI skips nothing it can start.
  t.deepEqual(
    cases.filter((c) => c.status === 'skipped').map((c) => `${c.suite}/${c.name}: ${c.message}`),
    [],
  );
  const timing = report.suites.find((s) => s.name === 'timing')!.timing!;
  t.truthy(timing);
  for (const p of PHASES) t.is(timing.phases[p].n, 200, `phase ${p}`);

  // ---- report.xml: JUnit with the same counts
  const xml = readFileSync(join(out, 'report.xml'), 'utf8');
  t.regex(xml, /^<\?xml /);
  const attr = (name: string): number => Number(new RegExp(`<testsuites[^>]*\\s${name}="(\\d+)"`).exec(xml)?.[1]);
  t.is(attr('tests'), report.summary.total);
  t.is(attr('failures'), report.summary.failed);
  t.is(attr('errors'), report.summary.errors);
  t.is((xml.match(/<testcase /g) ?? []).length, report.summary.total);

  // ---- report.html
  t.true(readFileSync(join(out, 'report.html'), 'utf8').length > 1000);

  // ---- transcripts: one per case, all parse, no PIN in clear; the card's own handovers,
  //      sync requests and receipts account for the value it moved
  const transfers = new Map<string, SignedTransfer>();
  const voided = new Set<string>();
  // The run's first transcript (SELECT, GET STATUS, GET CERTIFICATES) gives the card key the accounting verifies transfers with.
  const keys = new Map<string, Uint8Array>();
  moneyIn(readTranscript(join(out, 'transcripts', 'run', 'card-info.apdu')).exchanges, keys);
  t.is(keys.size, 1, 'the card key from its certificates');
  const pinHex = Buffer.from(LAB_PIN).toString('hex');
  for (const c of cases) {
    t.truthy(c.transcript, `${c.suite}/${c.name} has a transcript`);
    const path = join(out, c.transcript!);
    t.true(existsSync(path), path);
    const tr = readTranscript(path);
    t.is(tr.header.case, c.name);
    t.false(
      readFileSync(path, 'utf8')
        .split('\n')
        .some((l) => l.startsWith('=> ') && l.includes(pinHex)),
      `${path} holds the PIN`,
    );
    const m = moneyIn(tr.exchanges, keys);
    for (const x of m.transfers) if (!transfers.has(x.nonce)) transfers.set(x.nonce, x);
    for (const v of m.voided) voided.add(v);
  }
  t.is(cases.find((c) => c.name === 'verify-pin-wrong')?.status, 'passed');
  const money = valueOut({ transfers: [...transfers.values()], voided: [...voided] });
  t.true(money.value > 0);
  t.deepEqual(report.card?.signedInRun, money);

  // ---- the card after the run (server stopped): no money lost or created
  const show = await run(resolve(HERE, '../../card-applet-sim/bin/dt-card.js'), ['show', '--json', world.stateFile], env, 60_000);
  t.is(show.code, 0, show.stderr);
  const state = JSON.parse(show.stdout) as { balance: number; syncPending: boolean };
  t.is(report.card?.balance, world.loaded, 'the card held what was loaded when the run started');
  t.is(
    state.balance,
    world.loaded - money.value + money.voidedValue,
    `loaded ${world.loaded}; signed ${money.value} in ${money.transfers} transfers, ${money.voidedValue} of it voided by the ledger`,
  );
  t.false(state.syncPending);

  // ---- replay: the WHOLE report (every suite's transcripts, faults and removals included, in recording
  //      order) against the copy taken before the run, byte for byte; --quiet prints the summary line only
  const replayOut = join(dir, 'replay');
  const replayed = await run(DT_LAB, ['replay', out, '--card', join(dir, 'before.card'), '--out', replayOut, '--quiet'], env, 300_000);
  const replayRun = JSON.parse(readFileSync(join(replayOut, 'report.json'), 'utf8')) as LabRun;
  t.deepEqual(
    replayRun.suites[0]!.cases.filter((c) => c.status !== 'passed').map((c) => `${c.name}: ${c.message}`),
    [],
  );
  t.is(replayed.code, 0, `${replayed.stdout.slice(-3000)}\n${replayed.stderr}`);
  t.is(replayRun.suites[0]!.name, 'replay');
  t.is(replayRun.summary.total, cases.length + 1, 'every case of the run, and the card-info probe');
  t.is(replayRun.summary.passed, cases.length + 1);
  t.is(
    replayed.stdout,
    `${cases.length + 1} cases: ${cases.length + 1} passed, 0 failed, 0 errors, 0 skipped\n`,
    '--quiet: the summary line and nothing else',
  );
});

/**
 * A replay's working directory: a private TMPDIR (where the state file's copy would be made), a one-APDU
 * transcript and a blank card state file.
 */
async function replayWork(
  t: ExecutionContext,
  prefix: string,
): Promise<{ work: string; tmp: string; env: NodeJS.ProcessEnv; apdu: string; card: string }> {
  const work = mkdtempSync(join(dir, prefix));
  const tmp = join(work, 'tmp');
  mkdirSync(tmp);
  const env = { ...process.env, TMPDIR: tmp };
  const apdu = join(work, 'select.apdu');
  writeFileSync(apdu, '=> 00a4040000\n');
  const card = join(work, 'blank.card');
  t.is((await run(DT_CARD, ['create', card], env, 60_000)).code, 0);
  return { work, tmp, env, apdu, card };
}

test('dt-lab replay refuses what it cannot replay before it starts: a missing transcript, a missing or foreign state file (exit 2), with no report and no temporary copy left', async (t) => {
  const { work, tmp, env, apdu, card } = await replayWork(t, 'replay-usage-');
  const foreign = join(work, 'foreign.card');
  writeFileSync(foreign, '{}');
  const out = join(work, 'out');
  const cases: [string[], RegExp][] = [
    [[join(work, 'nothere.apdu'), '--card', card], /nothere\.apdu: no such file or directory/],
    [[apdu, '--card', join(work, 'nothere.card')], /state file .*nothere\.card: no such file/],
    [[apdu, '--card', foreign], /state file .*foreign\.card: format is not dt-card-sim/],
  ];
  for (const [args, message] of cases) {
    const r = await run(DT_LAB, ['replay', ...args, '--out', out], env, 60_000);
    t.is(r.code, 2, r.stderr);
    t.regex(r.stderr, message);
    t.false(existsSync(out), 'no report directory');
    t.deepEqual(
      readdirSync(tmp).filter((f) => f.startsWith('dt-lab-replay-')),
      [],
      'no temporary copy of the state file left',
    );
  }
});

test('dt-lab replay: a --card that is a directory is refused (2, "not a file"); an --out that cannot be made is exit 5 before anything is replayed, with no copy left', async (t) => {
  const { work, tmp, env, apdu, card } = await replayWork(t, 'replay-out-');
  const isDir = await run(DT_LAB, ['replay', apdu, '--card', work, '--out', join(work, 'out')], env, 60_000);
  t.is(isDir.code, 2, isDir.stderr);
  t.regex(isDir.stderr, /state file .*replay-out-\w+: not a file/);
  const blocker = join(work, 'blocker');
  writeFileSync(blocker, 'a file');
  for (const out of [blocker, join(blocker, 'sub')]) {
    const r = await run(DT_LAB, ['replay', apdu, '--card', card, '--out', out], env, 60_000);
    t.is(r.code, 5, r.stderr);
    t.regex(r.stderr, /^dt-lab: the reports could not be written to .*blocker(\/sub)?: a file is in the way\n$/);
  }
  // Where nothing can be created (Node's recursive mkdir would never return there).
  const proc = await run(DT_LAB, ['replay', apdu, '--card', card, '--out', '/proc/dt-no-such/out'], env, 60_000);
  t.is(proc.code, 5, proc.stderr);
  t.regex(proc.stderr, /^dt-lab: the reports could not be written to \/proc\/dt-no-such\/out: it cannot be created there \(ENOENT\)\n$/);
  t.deepEqual(
    readdirSync(tmp).filter((f) => f.startsWith('dt-lab-replay-')),
    [],
    'no temporary copy of the state file left',
  );
});
