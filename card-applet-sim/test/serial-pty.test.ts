/**
 * The serial transport over a REAL pty pair made by socat
 * (`socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B`): the card on
 * one end, the host on the other, in-process and through `dt-card serve
 * --serial`. Skipped locally when socat is missing; never in CI.
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SerialHostTransport, getStatus, pay, selectApplet } from '@dt/protocol';
import { nodeTimers } from '@dt/protocol/native';
import { FileStorage, InProcessTransport, SerialCardEndpoint, SimulatedCard, openTty } from '../src/index.ts';
import { LOADED, assertValidHandover, readyCard, request, tempDir } from './helpers.ts';

const BIN = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'bin', 'dt-card.js');
const haveSocat = spawnSync('sh', ['-c', 'command -v socat'], { stdio: 'ignore' }).status === 0;
const run = haveSocat || process.env.CI === 'true';
const serial = run ? test.serial : test.serial.skip;
if (!run) test.skip('serial pty tests skipped locally: socat not installed', () => undefined);

/** Starts socat with a pty pair; resolves once both links exist. */
async function ptyPair(dir: string): Promise<{ card: string; host: string; socat: ChildProcess }> {
  const card = join(dir, 'card-tty');
  const host = join(dir, 'host-tty');
  const socat = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${card}`, `pty,raw,echo=0,link=${host}`], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  while (!(existsSync(card) && existsSync(host))) {
    if (Date.now() > deadline || socat.exitCode !== null) throw new Error('socat did not create the pty pair');
    await new Promise((r) => setTimeout(r, 20));
  }
  return { card, host, socat };
}

async function stopProcess(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await exited;
}

serial('serial over a socat pty: PAY, and a corrupted and a dropped frame recovered by retransmission', async (t) => {
  const dir = tempDir();
  const pair = await ptyPair(dir);
  const { card } = await readyCard();
  const deviceLink = openTty(pair.card);
  const hostLink = openTty(pair.host);
  const endpoint = new SerialCardEndpoint(card, deviceLink);
  const host = new SerialHostTransport(hostLink, { timers: nodeTimers, frameTimeoutMs: 1500, attempts: 4 });
  t.teardown(async () => {
    endpoint.stop();
    host.close();
    deviceLink.close();
    hostLink.close();
    await stopProcess(pair.socat);
  });
  await host.reset();
  await selectApplet(host);
  const req = request(6_000);
  assertValidHandover(await pay(host, req.bytes), req, 6_000);
  t.is(host.retransmissions, 0);

  card.faults.arm({ corruptFrame: 1 });
  t.is((await getStatus(host)).offlineValue, 6_000);
  // Once, or twice when the flipped byte (random position and value) is a frame delimiter: the
  // frame then arrives as two damaged ones, and each asks for the answer again.
  const afterCorrupt = host.retransmissions;
  t.true(afterCorrupt === 1 || afterCorrupt === 2, `the corrupted response was asked for again (${afterCorrupt} retransmissions)`);

  card.faults.arm({ dropFrame: 1 });
  const s = await getStatus(host);
  t.is(s.balance, LOADED[0]! + LOADED[1]! - 6_000);
  t.is(host.retransmissions, afterCorrupt + 1, 'the dropped response was asked for again, once');
  t.deepEqual(
    card.faults.events.map((e) => e.kind),
    ['corrupt-frame', 'drop-frame'],
  );
});

serial('dt-card serve --serial with --corrupt-frame: a host over the pty pays, recovering by retransmission', async (t) => {
  const dir = tempDir();
  const file = join(dir, 'serial.card');
  const prepared = await readyCard({ storage: FileStorage.create(file) });
  (prepared.storage as FileStorage).close();
  const pair = await ptyPair(dir);
  const cli = spawn(process.execPath, [BIN, 'serve', file, '--serial', pair.card, '--corrupt-frame', '2', '--json'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  cli.stdout.on('data', (d: Buffer) => lines.push(...d.toString('utf8').split('\n').filter(Boolean)));
  cli.stderr.on('data', (d: Buffer) => lines.push(d.toString('utf8')));
  const hostLink = openTty(pair.host);
  t.teardown(async () => {
    hostLink.close();
    await stopProcess(cli);
    await stopProcess(pair.socat);
  });
  const deadline = Date.now() + 60_000;
  while (!lines.some((l) => l.includes('"event":"serving"'))) {
    if (Date.now() > deadline || cli.exitCode !== null) throw new Error(`dt-card serve --serial did not start: ${lines.join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const host = new SerialHostTransport(hostLink, { timers: nodeTimers, frameTimeoutMs: 1500, attempts: 4 });
  await host.reset(); // frame 1
  await selectApplet(host); // frame 2 is corrupted, then resent
  t.true(host.retransmissions >= 1);
  const req = request(1_234);
  assertValidHandover(await pay(host, req.bytes), req, 1_234);
  host.close();
  await stopProcess(cli);
  t.true(
    lines.some((l) => l.includes('"event":"fault-summary"') && l.includes('corrupt-frame')),
    lines.join('\n'),
  );
  t.true(lines.some((l) => l.includes('"event":"stopped"')));
  // The payment is in the state file, for the next process that opens it.
  const reopened = FileStorage.open(file);
  const transport = new InProcessTransport(new SimulatedCard({ storage: reopened }));
  await selectApplet(transport);
  t.is((await getStatus(transport)).offlineValue, 1_234);
  reopened.close();
});
