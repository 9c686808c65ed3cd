/**
 * The robustness and endurance suites run directly (not through the CLI)
 * the way `dt-lab run` runs them against a simulated card: a REAL private
 * pcscd, the card served by `dt-card serve --vpcd --control <socket>` in a
 * child process, the terminal's PC/SC reader (nfc-pcsc), the control
 * channel through `connectCardControl`, and a real ledger over HTTP for the
 * sync.
 *
 * Needs root, pcscd and vsmartcard-vpcd: skipped locally without them,
 * never skipped in CI (CI=true).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import type { ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  FileStorage,
  connectCardControl,
  pcscdUnavailableReason,
  startPcscd,
  type CardControlClient,
  type PcscdHandle,
} from '@dt/card-applet-sim';
import { PcscReaders } from '@dt/terminal';
import { robustness } from '../src/suites/robustness.ts';
import { endurance } from '../src/suites/endurance.ts';
import type { CardControl, LabContext } from '../src/suite.ts';
import { TEST_OPTIONS, recordingRunner, startLabWorld, type LabWorld } from './helpers/robustness-lab.ts';

const reason = pcscdUnavailableReason();
const run = reason === undefined || process.env.CI === 'true';
const serial = run ? test.serial : test.serial.skip;
if (!run) test.serial.skip(`pcscd tests skipped locally: ${reason}`, () => undefined);

const require = createRequire(import.meta.url);
// The package's entry is src/index.ts; its CLI is bin/dt-card.js next to src/.
const DT_CARD = join(dirname(dirname(require.resolve('@dt/card-applet-sim'))), 'bin', 'dt-card.js');

interface Live {
  world: LabWorld;
  pcscd: PcscdHandle;
  serve: ChildProcessByStdio<null, Readable, Readable>;
  log: string[];
  pcsc: PcscReaders;
  control: CardControlClient;
  ctx: LabContext;
  cardDir: string;
}
let live: Live | undefined;

test.serial.before(async () => {
  if (!run) return;
  const pcscd = await startPcscd();
  // libpcsclite reads it once, at the first PC/SC call of the process.
  process.env.PCSCLITE_CSOCK_NAME = pcscd.socketPath;
  // A card file made and loaded through the ledger, then served by the CLI.
  const cardDir = mkdtempSync(join(tmpdir(), 'dt-lab-card-'));
  const file = join(cardDir, 'lab.card');
  const storage = FileStorage.create(file);
  const world = await startLabWorld({
    storage,
    limits: { perPayment: 5_000_000, offlineTotal: 10_000_000, offlineCount: 10, cvmLimit: 1_000_000 },
  });
  storage.close();
  const socketPath = join(world.dir, 'card.sock');
  const serve = spawn(
    process.execPath,
    [
      DT_CARD,
      'serve',
      file,
      '--vpcd',
      '--port',
      String(pcscd.vpcdPort),
      '--slot',
      '0',
      '--control',
      socketPath,
      '--json',
      '--exit-with-parent',
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const log: string[] = [];
  serve.stdout.on('data', (d: Buffer) => log.push(...d.toString('utf8').split('\n').filter(Boolean)));
  serve.stderr.on('data', (d: Buffer) => log.push(d.toString('utf8')));
  const deadline = Date.now() + 60_000;
  while (!log.some((l) => l.includes('"code":"power-on"'))) {
    if (Date.now() > deadline || serve.exitCode !== null) throw new Error(`dt-card serve did not connect: ${log.join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const pcsc = new PcscReaders();
  await pcsc.waitForReaders(10_000);
  const reader = pcsc.reader(pcscd.readers[0]!);
  const control = await connectCardControl(socketPath);
  // The client has exactly the lab's CardControl shape (checked here by the compiler).
  const asLab: CardControl = control;
  const options = { ...TEST_OPTIONS, cardTimeoutMs: 10_000, rounds: 2 };
  const ctx: LabContext = {
    readerName: reader.name,
    reader,
    openSession: () => reader.waitForCard({ timeoutMs: options.cardTimeoutMs }),
    terminal: () => world.terminal(),
    ledgerUrl: world.server.url,
    control: asLab,
    options,
    signal: new AbortController().signal,
    progress: () => undefined,
    workDir: world.dir,
  };
  live = { world, pcscd, serve, log, pcsc, control, ctx, cardDir };
});

test.serial.after.always(async () => {
  if (!live) return;
  await live.control.close().catch(() => undefined);
  await live.pcsc.close();
  if (live.serve.exitCode === null) {
    const exited = new Promise((r) => live!.serve.once('exit', r));
    live.serve.kill('SIGTERM');
    await exited;
  }
  await live.pcscd.stop();
  await live.world.close();
  rmSync(live.cardDir, { recursive: true, force: true });
});

serial('through pcscd and dt-card serve --control: every robustness case passes, value conserved, nothing left armed', async (t) => {
  const { ctx, control } = live!;
  const start = await control.status();
  const runner = recordingRunner();
  await robustness.run(ctx, runner);
  for (const c of runner.cases) t.is(c.status, 'passed', `${c.name}: ${c.message ?? ''} ${JSON.stringify(c.details)}`);
  t.is(runner.cases.length, 9);
  const events = (await control.events()).map((e) => e.kind);
  t.deepEqual(events, ['cut-after-apdu', 'cut-before-apdu', 'cut-at-write', 'cut-at-write', 'cut-at-write', 'corrupt-frame']);
  const end = await control.status();
  t.true(end.inReader);
  const approved = live!.world.journals.flatMap((j) => j.listPayments()).reduce((s, p) => s + p.amount, 0);
  const orphaned = runner.cases.reduce((s, c) => s + ((c.details.sums as { orphaned?: number } | undefined)?.orphaned ?? 0), 0);
  t.is(start.balance - end.balance, approved + orphaned);
  // The card process logged the control requests (never anything secret).
  t.true(live!.log.some((l) => l.includes('"event":"control-request"') && l.includes('"command":"arm"')));
});

serial('through pcscd: endurance pays to the card limits, syncs through the ledger and pays again', async (t) => {
  const { ctx } = live!;
  const runner = recordingRunner();
  const out = await endurance.run(ctx, runner);
  t.deepEqual(
    runner.cases.map((c) => [c.name, c.status, c.message]),
    [
      ['round-1-pay-to-limits', 'passed', undefined],
      ['round-1-sync', 'passed', undefined],
      ['round-2-pay-to-limits', 'passed', undefined],
      ['round-2-sync', 'passed', undefined],
    ],
  );
  const [r1, r2] = out.endurance!.rounds;
  t.is(r1!.sync, 'synced');
  t.is(r1!.balanceBefore - r1!.balanceAfter, r1!.paid);
  // A full round after the sync: all ten offline payments again.
  t.is(r2!.payments, 10);
  t.is(r2!.balanceBefore, r1!.balanceAfter);
  t.true((await live!.world.ledger.audit()).ok);
});
