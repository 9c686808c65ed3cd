/**
 * Through a REAL pcscd (started here, private to this test process) with the
 * vsmartcard vpcd driver:
 * - slot 0: a card served in-process by VpcdClient, read by nfc-pcsc
 *   (autoProcessing off, 61xx handled by the protocol's exchange);
 * - slot 1: a card served by the `dt-card serve --vpcd` CLI, looked at with
 *   pcsc_scan and scriptor.
 *
 * Needs root and the Debian packages pcscd, vsmartcard-vpcd, pcsc-tools.
 * Skipped locally without them; never skipped in CI (CI=true).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import type { ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ATR } from '@dt/firmware';
import {
  CLA,
  INS,
  SW,
  decodeMessage,
  decodeResponse,
  encodeCommand,
  exchange,
  openSigned,
  selectCommand,
  getStatus,
  pay,
  selectApplet,
} from '@dt/protocol';
import type { ApduTransport } from '@dt/protocol';
import { FileStorage, SimulatedCard, VpcdClient, startPcscd } from '../src/index.ts';
import type { PcscdHandle } from '../src/index.ts';
import { LOADED, assertValidHandover, needsPcscd, readyCard, request, tempDir } from './helpers.ts';
import { nextCard, nfcTransport, openReader, waitCard } from './nfc.ts';
import type { NfcReader } from './nfc.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const BIN = join(here, '..', 'bin', 'dt-card.js');
const SCRIPTS = join(here, '..', 'scripts');
const atrHex = [...ATR].map((b) => b.toString(16).toUpperCase().padStart(2, '0')).join(' ');

const gate = needsPcscd();
const serial = gate.run ? test.serial : test.serial.skip;
if (!gate.run) test.serial.skip(`pcscd tests skipped locally: ${gate.reason}`, () => undefined);

interface Ctx {
  pcscd: PcscdHandle;
  card: SimulatedCard;
  storage: FileStorage;
  client: VpcdClient;
  reader: NfcReader;
  nfc: { close(): void };
  transport: ApduTransport;
  cli: ChildProcessByStdio<null, Readable, Readable>;
  cliOut: string[];
  dir: string;
}
let ctx: Ctx;

/** Runs a command to completion (asynchronously: the vpcd client in this process must keep answering). */
function run(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
  until?: (out: string) => boolean,
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const stop = (): void => {
      child.kill('SIGINT');
    };
    const timer = setTimeout(stop, timeoutMs);
    const onData = (d: Buffer): void => {
      out += d.toString('utf8');
      if (until?.(out)) stop();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

test.before(async () => {
  if (!gate.run) return;
  const pcscd = await startPcscd();
  // libpcsclite reads this once, at the first PC/SC call of the process.
  process.env.PCSCLITE_CSOCK_NAME = pcscd.socketPath;
  const dir = tempDir();

  // Slot 0: personalized and loaded in-process, then served to pcscd.
  const storage = FileStorage.create(join(dir, 'slot0.card'));
  const { card } = await readyCard({ storage });
  card.powerOff();
  const client = new VpcdClient(card, { port: pcscd.vpcdPort, slot: 0, reinsertDelayMs: 1000 });
  client.start();

  // Slot 1: a card made and served by the CLI.
  const file1 = join(dir, 'slot1.card');
  for (const args of [
    ['create', file1, '--label', 'slot1'],
    ['personalize', file1, '--pin', '1234', '--puk', '12345678', '--dev-pki', join(dir, 'pki'), '--load', '5000'],
  ]) {
    const r = await run(process.execPath, [BIN, ...args], process.env, 60_000);
    if (r.code !== 0) throw new Error(`dt-card ${args[0]} failed: ${r.out}`);
  }
  const cli = spawn(
    process.execPath,
    [BIN, 'serve', file1, '--vpcd', '--port', String(pcscd.vpcdPort), '--slot', '1', '--json', '--exit-with-parent'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const cliOut: string[] = [];
  cli.stdout.on('data', (d: Buffer) => cliOut.push(...d.toString('utf8').split('\n').filter(Boolean)));
  cli.stderr.on('data', (d: Buffer) => cliOut.push(d.toString('utf8')));

  const deadline = Date.now() + 60_000;
  // pcscd powers a card up when it notices it: then it is usable.
  while (!cliOut.some((l) => l.includes('"code":"power-on"'))) {
    if (Date.now() > deadline || cli.exitCode !== null) throw new Error(`dt-card serve did not connect: ${cliOut.join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const { nfc, reader } = await openReader(pcscd.readers[0]);
  await waitCard(reader);
  ctx = { pcscd, card, storage, client, reader, nfc, transport: nfcTransport(reader), cli, cliOut, dir };
});

test.after.always(async () => {
  if (ctx === undefined) return;
  ctx.nfc.close();
  if (ctx.cli.exitCode === null) {
    const exited = new Promise((r) => ctx.cli.once('exit', r));
    ctx.cli.kill('SIGTERM');
    await exited;
  }
  await ctx.client.stop();
  ctx.storage.close();
  await ctx.pcscd.stop();
});

serial('pcscd + nfc-pcsc: SELECT, and a PAY whose request needs chaining and whose handover needs GET RESPONSE', async (t) => {
  const log: { command: Uint8Array; sw: number }[] = [];
  const recorded: ApduTransport = {
    async transmit(apdu, o) {
      const r = await ctx.transport.transmit(apdu, o);
      log.push({ command: apdu, sw: decodeResponse(r).sw });
      return r;
    },
  };
  const fci = await selectApplet(recorded);
  t.is(fci.applet, 1);
  const before = await getStatus(recorded);
  t.is(before.balance, LOADED[0]! + LOADED[1]!);
  const req = request(11_111);
  const handover = await pay(recorded, req.bytes);
  const transfer = assertValidHandover(handover, req, 11_111);
  t.is(transfer.counter, before.counter + 1);
  const payApdus = log.filter((e) => e.command[1] === INS.PAY);
  t.true(payApdus.length >= 3, `chained PAY: ${payApdus.length} APDUs`);
  t.true(payApdus.slice(0, -1).every((e) => e.command[0] === (CLA.PROPRIETARY | CLA.CHAINING) && e.sw === SW.OK));
  t.is(payApdus.at(-1)!.sw & 0xff00, 0x6100, '61xx after the last block');
  const gets = log.filter((e) => e.command[1] === INS.GET_RESPONSE);
  t.true(gets.length >= 2, `GET RESPONSE x${gets.length}`);
  t.is(gets.at(-1)!.sw, SW.OK);
  t.true(handover.length > 1000);
  const after = await getStatus(recorded);
  t.is(after.balance + after.offlineValue, LOADED[0]! + LOADED[1]!);
});

serial('pcsc_scan sees the card served by `dt-card serve --vpcd` with its ATR', async (t) => {
  // pcsc_scan prints one block per reader: " Reader 1: Virtual PCD 00 01", its state and ATR.
  const slot1 = (out: string): string =>
    out.split(/\n(?= Reader \d+: )/).find((b) => b.includes(` Reader 1: ${ctx.pcscd.readers[1]}`)) ?? '';
  const r = await run('pcsc_scan', ['-n'], ctx.pcscd.env, 15_000, (out) => /Card inserted/.test(slot1(out)) && slot1(out).includes(atrHex));
  const block = slot1(r.out);
  t.regex(block, /Card state: Card inserted/, r.out);
  t.true(block.includes(`ATR: ${atrHex}`), r.out);
  t.true(
    ctx.cliOut.some((l) => l.includes('"event":"connected"')),
    ctx.cliOut.join('\n'),
  );
});

serial('scriptor: the select-status script answers 9000 to every command (card served by the CLI)', async (t) => {
  const r = await run('scriptor', ['-r', ctx.pcscd.readers[1], join(SCRIPTS, 'select-status.apdu')], ctx.pcscd.env, 30_000);
  t.is(r.code, 0, r.out);
  // scriptor ends each answer with "SW1 SW2 : <meaning>".
  const statusWords = [...r.out.matchAll(/([0-9A-F]{2}) ([0-9A-F]{2}) : /g)].map((m) => `${m[1]}${m[2]}`);
  t.deepEqual(statusWords, ['9000', '9000'], r.out);
  t.true(ctx.cliOut.some((l) => l.includes('"event":"apdu"') && l.includes('"sw":"9000"')));
});

serial('scriptor: the certificates script gets 61xx and the rest of the chain through GET RESPONSE', async (t) => {
  const r = await run('scriptor', ['-r', ctx.pcscd.readers[1], join(SCRIPTS, 'select-certificates.apdu')], ctx.pcscd.env, 30_000);
  t.is(r.code, 0, r.out);
  const statusWords = [...r.out.matchAll(/([0-9A-F]{2}) ([0-9A-F]{2}) : /g)].map((m) => `${m[1]}${m[2]}`);
  t.is(statusWords.length, 4, r.out);
  t.is(statusWords[0], '9000', 'SELECT');
  t.is(statusWords[1], '6100', 'GET CERTIFICATES: 256 bytes and 256 or more pending');
  t.regex(statusWords[2]!, /^61[0-9A-F]{2}$/, 'first GET RESPONSE: more pending');
  t.is(statusWords[3], '9000', 'the last GET RESPONSE completes the chain');
});

serial('power cut during PAY through vpcd: the card leaves the reader, returns in the old state, and pays again', async (t) => {
  await selectApplet(ctx.transport);
  const before = await getStatus(ctx.transport);
  // Cut the power at PAY's commit (its first storage write).
  ctx.card.faults.arm({ cutAtWrite: 1, torn: true });
  const reinserted = nextCard(ctx.reader);
  const req = request(2_222);
  await t.throwsAsync(pay(ctx.transport, req.bytes));
  t.is(ctx.card.faults.events.at(-1)?.kind, 'cut-at-write');
  await reinserted;
  await selectApplet(ctx.transport);
  const after = await getStatus(ctx.transport);
  t.is(after.counter, before.counter, 'the torn commit left the old state');
  t.is(after.balance, before.balance);
  // The same terminal tries again with a new request: paid once.
  const again = request(2_222);
  assertValidHandover(await pay(ctx.transport, again.bytes), again, 2_222);
  const final = await getStatus(ctx.transport);
  t.is(final.counter, before.counter + 1);
  t.is(final.balance + final.offlineValue, LOADED[0]! + LOADED[1]!);
});

serial('power cut after PAY through vpcd: the handover is lost, the retry (retryOf) gets it back byte for byte', async (t) => {
  await selectApplet(ctx.transport);
  const before = await getStatus(ctx.transport);
  // The chained PAY runs at its last block: cut the power right after it.
  const req = request(3_333);
  const blocks = Math.ceil(req.bytes.length / 255);
  ctx.card.faults.arm({ cutAfterApdu: { index: blocks } });
  const reinserted = nextCard(ctx.reader);
  await t.throwsAsync(pay(ctx.transport, req.bytes));
  await reinserted;
  await selectApplet(ctx.transport);
  const mid = await getStatus(ctx.transport);
  t.is(mid.counter, before.counter + 1, 'signed and committed before the answer was lost');
  t.deepEqual(mid.lastNonce, req.nonce);
  const h1 = await pay(ctx.transport, request(3_333, { retryOf: req.nonce }).bytes);
  assertValidHandover(h1, req, 3_333);
  t.is(openSigned('Transfer', decodeMessage('Handover', h1).transfer).message.counter, before.counter + 1);
  t.is((await getStatus(ctx.transport)).counter, before.counter + 1, 'nothing new signed');
});

serial('reader power-off mid-chain (SCardDisconnect UNPOWER) clears the half-received PAY; nothing is signed', async (t) => {
  await selectApplet(ctx.transport);
  const before = await getStatus(ctx.transport);
  const req = request(1_000).bytes;
  const first = encodeCommand({ cla: 0x90, ins: INS.PAY, p1: 0, p2: 0, data: req.subarray(0, 255) });
  t.is(decodeResponse(await ctx.transport.transmit(first)).sw, SW.OK, 'first block buffered');
  await new Promise<void>((resolve, reject) =>
    ctx.reader.reader.disconnect(ctx.reader.reader.SCARD_UNPOWER_CARD, (e) => (e ? reject(e) : resolve())),
  );
  ctx.reader.connection = null;
  await ctx.reader.connect();
  // The rest of the chain arrives at a card that lost its RAM: the last
  // block alone is a (truncated) request and is refused.
  const rest = [];
  for (let o = 255; o < req.length; o += 255) {
    const last = o + 255 >= req.length;
    rest.push(
      encodeCommand({ cla: last ? 0x80 : 0x90, ins: INS.PAY, p1: 0, p2: 0, data: req.subarray(o, o + 255), ...(last ? { le: 256 } : {}) }),
    );
  }
  const sws: number[] = [];
  for (const b of rest) sws.push(decodeResponse(await ctx.transport.transmit(b)).sw);
  t.not(sws.at(-1), SW.OK);
  t.not(sws.at(-1)! & 0xff00, 0x6100);
  await selectApplet(ctx.transport);
  t.is((await getStatus(ctx.transport)).counter, before.counter);
  const r = await exchange(ctx.transport, selectCommand());
  t.is(r.sw, SW.OK);
});
