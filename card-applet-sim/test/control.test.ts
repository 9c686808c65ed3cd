/**
 * The card control channel (src/control.ts, `dt-card serve --control`).
 *
 * Part 1, no pcscd: the server over a real simulated card and a stand-in
 * holder: wire errors (bad JSON, oversize line, unknown command, bad plan)
 * answered while the server keeps serving; arm/disarm/events on the card's
 * fault injector; status from the committed memory; socket mode, stale and
 * live sockets, removal on close; client errors when the socket is gone.
 *
 * Part 2, a REAL private pcscd with `dt-card serve --vpcd --control` in a
 * child process: remove makes the reader report no card, insert brings it
 * back, remove with reinsertAfterMs comes back on its own, an armed
 * cutAfterApdu fires on the card in the reader and shows in events, status
 * matches `dt-card show`. Needs root and pcscd/vpcd; skipped locally without
 * them, never in CI.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { JOURNAL_SLOTS, MemoryStorage } from '@dt/firmware';
import { CLA, INS, SW, decodeResponse, encodeCommand, selectCommand, getStatus, selectApplet } from '@dt/protocol';
import {
  CardControlError,
  FaultInjector,
  FileStorage,
  InProcessTransport,
  MAX_CONTROL_LINE,
  VpcdClient,
  connectCardControl,
  parseFaultPlan,
  startCardControl,
  startPcscd,
} from '../src/index.ts';
import type { CardHolder, PcscdHandle } from '../src/index.ts';
import { LOADED, needsPcscd, readyCard, tempDir } from './helpers.ts';
import { nextCard, openReader, waitCard } from './nfc.ts';
import type { NfcReader } from './nfc.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const BIN = join(here, '..', 'bin', 'dt-card.js');

/** A holder that only records whether the card is in (no reader behind it). */
class FakeHolder implements CardHolder {
  connected = true;
  removes = 0;
  remove(): Promise<void> {
    this.removes++;
    this.connected = false;
    return Promise.resolve();
  }
  insert(): void {
    this.connected = true;
  }
  waitConnected(): Promise<void> {
    return Promise.resolve();
  }
}

/** Sends raw lines on a fresh connection and collects `n` answer lines. */
function rawExchange(path: string, payload: string, n: number): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ path });
    let buf = '';
    const out: Record<string, unknown>[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`only ${out.length} of ${n} answers: ${buf}`));
    }, 10_000);
    s.setEncoding('utf8');
    s.on('data', (c: string) => {
      buf += c;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        out.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
        buf = buf.slice(i + 1);
      }
      if (out.length >= n) {
        clearTimeout(timer);
        s.destroy();
        resolve(out);
      }
    });
    s.on('error', reject);
    s.write(payload);
  });
}

async function inProcessServer() {
  const storage = new MemoryStorage();
  const { card } = await readyCard({ storage });
  const holder = new FakeHolder();
  const dir = tempDir('dt-control-');
  const socketPath = join(dir, 'card.sock');
  const server = await startCardControl(socketPath, { card, holder, snapshot: () => storage.snapshot() });
  return { card, holder, dir, socketPath, server };
}

test('parseFaultPlan: accepts the plan fields, refuses wrong types, unknown fields and what the simulator refuses', (t) => {
  t.deepEqual(parseFaultPlan({ cutAfterApdu: { ins: 0x30 }, delayMs: 10 }), { cutAfterApdu: { ins: 0x30 }, delayMs: 10 });
  t.deepEqual(parseFaultPlan({ cutAtWrite: 2, torn: 5 }), { cutAtWrite: 2, torn: 5 });
  t.deepEqual(parseFaultPlan({ corruptFrame: 1, seed: 42 }), { corruptFrame: 1, seed: 42 });
  for (const bad of [
    null,
    [],
    'x',
    { cutAtWrite: '2' },
    { cutAtWrite: 0 },
    { nope: 1 },
    { cutAfterApdu: {} },
    { cutAfterApdu: { ins: 300 } },
    { cutBeforeApdu: { ins: 1, x: 1 } },
    { torn: 'yes', cutAtWrite: 1 },
    { torn: true },
    { delayMs: -1 },
    { seed: -1 },
    { seed: 2 ** 32 },
    { seed: 1.5 },
  ]) {
    const e = t.throws(() => parseFaultPlan(bad), undefined, JSON.stringify(bad));
    t.true(e instanceof CardControlError && e.code === 'BAD_PLAN', JSON.stringify(bad));
  }
});

test('a seeded plan is deterministic: the same seed corrupts the same byte the same way, and tears the same write at the same length', (t) => {
  const frame = new Uint8Array(64).map((_, i) => i);
  const corrupt = (seed: number) => {
    const f = new FaultInjector({ corruptFrame: 1, seed });
    return [toHexBytes(f.onOutgoingFrame(frame)!), f.events[0]!.where];
  };
  t.deepEqual(corrupt(7), corrupt(7));
  t.notDeepEqual(corrupt(7)[0], toHexBytes(frame), 'the frame is corrupted');
  const tear = (seed: number) => {
    const f = new FaultInjector();
    f.arm({ cutAtWrite: 1, torn: true, seed });
    return f.onWrite(1, new Uint8Array(200).fill(0xab), undefined)!.where;
  };
  t.is(tear(99), tear(99));
  t.not(new Set([1, 2, 3, 4, 5, 6].map(tear)).size, 1, 'different seeds tear at different lengths');
});

const toHexBytes = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('server: arm/disarm/events drive the card, status reads committed state, wire errors are answered and the server keeps serving', async (t) => {
  const { card, holder, socketPath, server } = await inProcessServer();
  t.teardown(() => server.close());
  t.is(statSync(socketPath).mode & 0o777, 0o600);
  const c = await connectCardControl(socketPath);
  t.teardown(() => c.close());

  const st = await c.status();
  t.deepEqual(st, {
    personalized: true,
    balance: LOADED[0]! + LOADED[1]!,
    counter: st.counter,
    offlineTotal: 0,
    offlineCount: 0,
    inReader: true,
  });
  // The same as GET STATUS on the card itself.
  const direct = await (async () => {
    const tr = new InProcessTransport(card);
    await selectApplet(tr);
    return getStatus(tr);
  })();
  t.is(st.counter, direct.counter);
  t.is(st.balance, direct.balance);

  await c.arm({ cutAfterApdu: { ins: INS.GET_STATUS } });
  t.deepEqual(card.faults.plan, { cutAfterApdu: { ins: INS.GET_STATUS } });
  const tr = new InProcessTransport(card);
  await selectApplet(tr);
  await t.throwsAsync(getStatus(tr), { message: /power cut/ });
  const ev = await c.events();
  t.is(ev.length, 1);
  t.is(ev[0]!.kind, 'cut-after-apdu');
  await c.disarm();
  t.deepEqual(card.faults.plan, {});

  await c.remove();
  t.false((await c.status()).inReader);
  t.is(holder.removes, 1);
  await c.insert();
  t.true((await c.status()).inReader);
  await c.remove(50);
  t.false(holder.connected);
  for (let i = 0; i < 250 && !holder.connected; i++) await new Promise((r) => setTimeout(r, 20));
  t.true(holder.connected, 'reinsertAfterMs put the card back');

  await t.throwsAsync(c.arm({ cutAtWrite: 0 } as never), { instanceOf: CardControlError, message: /cutAtWrite/ });
  await t.throwsAsync(c.remove(-5), { instanceOf: CardControlError, message: /reinsertAfterMs/ });

  const big = 'x'.repeat(MAX_CONTROL_LINE + 10);
  const answers = await rawExchange(
    socketPath,
    `not json\n${big}\n{"command":"dance","id":7}\n[1]\n{"id":8,"command":"arm","plan":{"dropFrame":"1"}}\n${'y'.repeat(3 * MAX_CONTROL_LINE)}\n{"id":9,"command":"status"}\n`,
    7,
  );
  t.deepEqual(
    answers.map((a) => a.code ?? 'ok'),
    ['BAD_JSON', 'LINE_TOO_LONG', 'UNKNOWN_COMMAND', 'BAD_REQUEST', 'BAD_PLAN', 'LINE_TOO_LONG', 'ok'],
  );
  t.is(answers[2]!.id, 7);
  t.is((answers[6]!.status as { balance: number }).balance, LOADED[0]! + LOADED[1]!);
  t.is((answers[6]!.status as { readable: boolean }).readable, true);
  t.true(answers.every((a) => a.ok === (a.code === undefined)));
  // The first client still works.
  t.true((await c.status()).personalized);
});

test('server: status of a card whose committed memory holds no intact record (it answers 6F00) is a readable:false status saying so, not FAILED; the client rejects it with CARD_UNREADABLE; the server keeps serving', async (t) => {
  const storage = new MemoryStorage();
  const { card } = await readyCard({ storage });
  for (const slot of JOURNAL_SLOTS) storage.write(slot, new Uint8Array(randomBytes(300)));
  const holder = new FakeHolder();
  const socketPath = join(tempDir('dt-control-'), 'card.sock');
  const server = await startCardControl(socketPath, { card, holder, snapshot: () => storage.snapshot() });
  t.teardown(() => server.close());
  const problem = "the card's state is unreadable (its storage holds no intact record; the card answers 6F00)";
  const [answer] = await rawExchange(socketPath, '{"id":1,"command":"status"}\n', 1);
  t.deepEqual(answer, { id: 1, ok: true, status: { readable: false, problem, inReader: true } });
  const c = await connectCardControl(socketPath);
  t.teardown(() => c.close());
  const e = await t.throwsAsync(c.status(), { instanceOf: CardControlError });
  t.is(e.code, 'CARD_UNREADABLE');
  t.is(e.message, `card control status: ${problem}`);
  await c.remove();
  t.deepEqual((await rawExchange(socketPath, '{"command":"status"}\n', 1))[0], {
    ok: true,
    status: { readable: false, problem, inReader: false },
  });
  await c.arm({ delayMs: 1 });
  t.deepEqual(card.faults.plan, { delayMs: 1 });
});

test('server: refuses a live socket, replaces a stale one, never replaces a plain file; close removes the socket; client errors are clear', async (t) => {
  const { card, holder, dir, socketPath, server } = await inProcessServer();
  await t.throwsAsync(startCardControl(socketPath, { card, holder, snapshot: () => new Map() }), { message: /in use/ });

  const c = await connectCardControl(socketPath, { timeoutMs: 2000 });
  await server.close();
  t.false(existsSync(socketPath), 'socket removed on close');
  await t.throwsAsync(c.status(), { message: /closed|socket/ });
  await t.throwsAsync(connectCardControl(socketPath), { message: /no such socket.*dt-card serve/ });

  // A stale socket: bound by a process that did not remove it (a Unix socket nobody listens on).
  const stale = join(dir, 'stale.sock');
  const { spawnSync } = await import('node:child_process');
  const py = spawnSync('python3', ['-c', `import socket; s=socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(stale)})`]);
  if (py.status === 0) {
    await t.throwsAsync(connectCardControl(stale), { message: /stale/ });
    const s2 = await startCardControl(stale, { card, holder, snapshot: () => new Map() });
    t.is(statSync(stale).mode & 0o777, 0o600);
    await s2.close();
  }
  const plain = join(dir, 'plain');
  writeFileSync(plain, 'keep me');
  await t.throwsAsync(startCardControl(plain, { card, holder, snapshot: () => new Map() }), { message: /not a socket/ });
  t.true(existsSync(plain));

  // A server that never answers: the request times out.
  const mute = join(dir, 'mute.sock');
  const srv = createServer(() => undefined);
  await new Promise<void>((r) => srv.listen(mute, () => r()));
  const m = await connectCardControl(mute, { timeoutMs: 200 });
  await t.throwsAsync(m.disarm(), { message: /no answer to disarm within 200 ms/ });
  srv.close();
  await m.close().catch(() => undefined);
});

test('VpcdClient.remove/insert: the connection closes and stays closed past every reconnect delay until insert', async (t) => {
  const { card } = await readyCard();
  card.powerOff();
  const conns: Socket[] = [];
  const server = createServer((s) => {
    conns.push(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as { port: number }).port;
  const client = new VpcdClient(card, { port, reconnectMs: 20, reinsertDelayMs: 20 });
  t.teardown(() => client.stop());
  const reasons: string[] = [];
  client.on('disconnected', (r) => reasons.push(r));
  client.start();
  await client.waitConnected(5000);
  card.powerOn();
  const closed = new Promise((r) => conns[0]!.once('close', r));
  await client.remove();
  await closed;
  t.false(client.connected);
  t.false(client.present);
  t.false(card.powered, 'out of the reader, without power');
  t.deepEqual(reasons, ['removed']);
  await new Promise((r) => setTimeout(r, 300));
  t.is(conns.length, 1, 'no reconnection while removed');
  client.insert();
  t.true(client.present);
  await client.waitConnected(5000);
  t.is(conns.length, 2);
  t.is(client.connections, 2);
});

// ---------------------------------------------------------------- through a real pcscd

const gate = needsPcscd();
const serial = gate.run ? test.serial : test.serial.skip;
if (!gate.run) test.serial.skip(`pcscd tests skipped locally: ${gate.reason}`, () => undefined);

function run(args: string[], timeoutMs = 60_000): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

function waitEvent(reader: NfcReader, event: string, timeoutMs = 15_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reader.off(event, on);
      reject(new Error(`no ${event} in ${reader.name} within ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (): void => {
      clearTimeout(timer);
      resolve();
    };
    reader.once(event, on);
  });
}

interface Live {
  pcscd: PcscdHandle;
  serve: ChildProcessByStdio<null, Readable, Readable>;
  log: string[];
  file: string;
  socketPath: string;
  reader: NfcReader;
  nfc: { close(): void };
}
let live: Live | undefined;

test.serial.before(async () => {
  if (!gate.run) return;
  const pcscd = await startPcscd();
  process.env.PCSCLITE_CSOCK_NAME = pcscd.socketPath;
  const dir = tempDir('dt-control-pcscd-');
  const file = join(dir, 'lab.card');
  for (const args of [
    ['create', file],
    ['personalize', file, '--pin', '1234', '--puk', '12345678', '--dev-pki', join(dir, 'pki'), '--load', '5000,7000'],
  ]) {
    const r = await run(args);
    if (r.code !== 0) throw new Error(`dt-card ${args[0]} failed: ${r.out}${r.err}`);
  }
  const socketPath = join(dir, 'control.sock');
  const serve = spawn(
    process.execPath,
    [
      BIN,
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
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const log: string[] = [];
  serve.stdout.on('data', (d: Buffer) => log.push(...d.toString('utf8').split('\n').filter(Boolean)));
  serve.stderr.on('data', (d: Buffer) => log.push(d.toString('utf8')));
  const deadline = Date.now() + 60_000;
  while (!log.some((l) => l.includes('"code":"power-on"'))) {
    if (Date.now() > deadline || serve.exitCode !== null) throw new Error(`dt-card serve did not connect: ${log.join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const { nfc, reader } = await openReader(pcscd.readers[0]!);
  await waitCard(reader);
  live = { pcscd, serve, log, file, socketPath, reader, nfc };
});

test.serial.after.always(async () => {
  if (live === undefined) return;
  live.nfc.close();
  if (live.serve.exitCode === null) {
    const exited = new Promise((r) => live!.serve.once('exit', r));
    live.serve.kill('SIGTERM');
    await exited;
  }
  await live.pcscd.stop();
});

serial('pcscd: remove takes the card out of the reader until insert; remove with reinsertAfterMs comes back alone', async (t) => {
  const { reader, socketPath } = live!;
  const c = await connectCardControl(socketPath);
  t.teardown(() => c.close());
  t.true((await c.status()).inReader);
  const off = waitEvent(reader, 'card.off');
  await c.remove();
  await off;
  t.is(reader.card, null, 'the reader reports no card');
  t.false((await c.status()).inReader);
  // It stays out: no card event for a while (longer than the 300 ms auto-reinsert after a power cut).
  const early = await nextCard(reader, 1200).then(
    () => 'card',
    () => 'none',
  );
  t.is(early, 'none');
  const back = nextCard(reader);
  await c.insert();
  await back;
  t.true((await c.status()).inReader);
  await waitCard(reader);

  // Out long enough for pcscd's presence poll to see it go (a shorter absence may pass unnoticed).
  const off2 = waitEvent(reader, 'card.off');
  const back2 = nextCard(reader);
  await c.remove(1500);
  await off2;
  await back2;
  await waitCard(reader);
  t.true((await c.status()).inReader);
});

serial('pcscd: an armed cutAfterApdu fires on the served card, shows in events, and the card comes back working', async (t) => {
  const { reader, socketPath } = live!;
  const c = await connectCardControl(socketPath);
  t.teardown(() => c.close());
  const before = (await c.events()).length;
  await c.arm({ cutAfterApdu: { ins: INS.GET_STATUS } });
  const send = async (apdu: Uint8Array) => decodeResponse(new Uint8Array(await reader.transmit(Buffer.from(apdu), 258)));
  t.is((await send(encodeCommand(selectCommand()))).sw, SW.OK);
  await t.throwsAsync(send(encodeCommand({ cla: CLA.PROPRIETARY, ins: INS.GET_STATUS, p1: 0, p2: 0, le: 256 })));
  const ev = await c.events();
  t.is(ev.length, before + 1);
  t.is(ev.at(-1)!.kind, 'cut-after-apdu');
  t.regex(ev.at(-1)!.where, /INS 10/);
  // The card comes back by itself 300 ms later; pcscd may or may not have seen it go
  // (its presence poll can miss a short absence), so ask until it answers.
  let selected: number | undefined;
  for (let i = 0; i < 100 && selected !== SW.OK; i++) {
    selected = await send(encodeCommand(selectCommand())).then(
      (r) => r.sw,
      () => undefined,
    );
    if (selected !== SW.OK) await new Promise((r) => setTimeout(r, 150));
  }
  // Fired once: the same command now answers.
  t.is(selected, SW.OK);
  t.is((await send(encodeCommand({ cla: CLA.PROPRIETARY, ins: INS.GET_STATUS, p1: 0, p2: 0, le: 256 }))).sw, SW.OK);
  await c.disarm();
  t.true(live!.log.some((l) => l.includes('"event":"control-request"') && l.includes('"command":"arm"')));
});

serial('pcscd: status matches dt-card show; a second serve on the same socket is refused; SIGTERM removes the socket', async (t) => {
  const { file, socketPath } = live!;
  // The served socket answers bad requests and keeps serving.
  const bad = await rawExchange(socketPath, `{oops\n${'z'.repeat(MAX_CONTROL_LINE + 1)}\n{"command":"fly"}\n`, 3);
  t.deepEqual(
    bad.map((a) => a.code),
    ['BAD_JSON', 'LINE_TOO_LONG', 'UNKNOWN_COMMAND'],
  );
  const c = await connectCardControl(socketPath);
  const st = await c.status();
  await c.close();
  const show = await run(['show', file, '--json']);
  t.is(show.code, 0, show.err);
  const s = JSON.parse(show.out) as { balance: number; counter: number; offlineValue: number; offlineCount: number; locked: boolean };
  t.deepEqual(
    {
      balance: st.balance,
      counter: st.counter,
      offlineTotal: st.offlineTotal,
      offlineCount: st.offlineCount,
      personalized: st.personalized,
    },
    { balance: s.balance, counter: s.counter, offlineTotal: s.offlineValue, offlineCount: s.offlineCount, personalized: s.locked },
  );
  t.is(st.balance, 12_000);
  // Never key material, PIN or PUK in the answer.
  t.deepEqual(Object.keys(st).sort(), ['balance', 'counter', 'inReader', 'offlineCount', 'offlineTotal', 'personalized']);

  // Another card served with the same control socket path: refused while the first one lives.
  const dir2 = tempDir('dt-control-2-');
  const other = join(dir2, 'other.card');
  FileStorage.create(other).close();
  const second = await run(
    ['serve', other, '--vpcd', '--port', String(live!.pcscd.vpcdPort), '--slot', '1', '--control', socketPath],
    20_000,
  );
  t.is(second.code, 5, 'in use by another process');
  t.regex(second.err, /control socket .* is in use/);
  t.true(existsSync(socketPath));
  const serialToo = await run(['serve', other, '--serial', '/dev/null', '--control', join(dir2, 'x.sock')], 20_000);
  t.is(serialToo.code, 2);
  t.regex(serialToo.err, /--control needs --vpcd/);

  const exited = new Promise((r) => live!.serve.once('exit', r));
  live!.serve.kill('SIGTERM');
  await exited;
  t.false(existsSync(socketPath), 'socket removed on exit');
});
