/**
 * The PC/SC adapter through a real pcscd (started by the test, vpcd driver)
 * with the simulated card served into it by card-applet-sim's vpcd client:
 * payments, card removal and reinsertion, a torn tap recovered through a real
 * reader, the busy error, and context loss and recreation with a scripted
 * context (a real pcscd restart is in pcsc-restart.test.ts).
 *
 * Needs root, pcscd and vsmartcard-vpcd (CI runs as root; see README).
 */
import test from 'ava';
import { EventEmitter } from 'node:events';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MemoryStorage } from '@dt/firmware';
import {
  startPcscd,
  VpcdClient,
  SimulatedCard,
  InProcessTransport,
  personalizeCard,
  devIssuingBank,
  devLoad,
  createDevPki,
  type PcscdHandle,
} from '@dt/card-applet-sim';
import { INS, TransportBusyError } from '@dt/protocol';
import { PaymentKernel, PcscReaders, PCSC_RESPONSE_BUFFER, type CardReader, type PcscEvent, type TapOutcome } from '../src/index.ts';
import { devTerminalIdentity, makeJournal, tempDir, TEST_LIMITS, TEST_POLICY } from './helpers/fixtures.ts';

const pki = createDevPki();
const identity = devTerminalIdentity(pki);

async function loadedCard(): Promise<SimulatedCard> {
  const card = new SimulatedCard({ storage: new MemoryStorage() });
  const t = new InProcessTransport(card);
  await personalizeCard(t, devIssuingBank(pki), { pin: '1234', puk: '12345678', limits: TEST_LIMITS });
  await devLoad(t, pki, [1_000_000, 2_000_000]);
  return card;
}

// One pcscd for the file (the socket path is process-wide through PCSCLITE_CSOCK_NAME); tests run serially.
let pcscd: PcscdHandle;
test.serial.before(async () => {
  pcscd = await startPcscd();
  process.env.PCSCLITE_CSOCK_NAME = pcscd.socketPath;
});
test.serial.after.always(async () => {
  await pcscd?.stop();
});

/**
 * What a merchant does on PRESENT_CARD_AGAIN: ask for the card again. A
 * real reader may need a moment to see the card back in its field.
 */
async function tapUntilDone(kernel: PaymentKernel, reader: CardReader, amount: number): Promise<TapOutcome> {
  for (let i = 0; ; i++) {
    const o = await kernel.charge(reader, amount);
    if (o.kind !== 'PRESENT_CARD_AGAIN' || i === 20) return o;
    await new Promise((r) => setTimeout(r, 250));
  }
}

function kernelFor(t: { teardown: (f: () => void) => void }) {
  const { dir, cleanup } = tempDir();
  const journal = makeJournal(pki, dir);
  t.teardown(() => {
    journal.close();
    cleanup();
  });
  return { journal, kernel: new PaymentKernel({ identity, journal, policy: TEST_POLICY, timeouts: { cardMs: 10_000, tapMs: 10_000 } }) };
}

test.serial('a tap through real pcscd: APPROVED; NO_CARD after the card is taken away; APPROVED again after reinsertion', async (t) => {
  const { journal, kernel } = kernelFor(t);
  const events: PcscEvent[] = [];
  const pcsc = new PcscReaders({ onEvent: (e) => events.push(e) });
  t.teardown(() => pcsc.close());
  t.deepEqual(await pcsc.waitForReaders(10_000), [...pcscd.readers]);
  const reader = pcsc.reader(pcscd.readers[0]);
  const card = await loadedCard();
  const vpcd = new VpcdClient(card, { port: pcscd.vpcdPort });
  vpcd.start();
  t.teardown(() => vpcd.stop());
  const o1 = await kernel.charge(reader, 77_000);
  t.is(o1.kind, 'APPROVED');
  t.true(events.some((e) => e.type === 'card' && e.state === 'present'));

  await vpcd.stop();
  const k2 = new PaymentKernel({ identity, journal, policy: TEST_POLICY, timeouts: { cardMs: 1500 } });
  // Wait until PC/SC has seen the removal, then a tap with no card ends with NO_CARD.
  for (let i = 0; i < 50 && pcsc.list().find((r) => r.name === pcscd.readers[0])?.cardPresent; i++)
    await new Promise((r) => setTimeout(r, 100));
  t.deepEqual(await k2.charge(reader, 1000), { kind: 'END', reason: 'NO_CARD' });

  const vpcd2 = new VpcdClient(card, { port: pcscd.vpcdPort });
  vpcd2.start();
  t.teardown(() => vpcd2.stop());
  t.is((await kernel.charge(reader, 3_000)).kind, 'APPROVED');
  t.is(journal.listPayments().length, 2);
  t.is(PCSC_RESPONSE_BUFFER, 258);
});

test.serial(
  'torn tap through a real reader: the card loses power right after signing; PRESENT_CARD_AGAIN, then the retry recovers the same payment',
  async (t) => {
    const { journal, kernel } = kernelFor(t);
    const pcsc = new PcscReaders();
    t.teardown(() => pcsc.close());
    await pcsc.waitForReaders(10_000);
    const reader = pcsc.reader(pcscd.readers[0]);
    const card = await loadedCard();
    const vpcd = new VpcdClient(card, { port: pcscd.vpcdPort, reinsertDelayMs: 1000 });
    vpcd.start();
    t.teardown(() => vpcd.stop());
    // The first GET RESPONSE after PAY: the card has signed and committed; the field is lost.
    card.faults.arm({ cutAfterApdu: { ins: INS.GET_RESPONSE } });
    let o1 = await kernel.charge(reader, 150_000);
    // A PRESENT_CARD_AGAIN before PAY reached the card (the reader still settling after the
    // previous test's card left) carries no torn attempt: the merchant simply asks again.
    for (let i = 0; i < 20 && o1.kind === 'PRESENT_CARD_AGAIN' && o1.tornAttempt === undefined; i++) {
      await new Promise((r) => setTimeout(r, 250));
      o1 = await kernel.charge(reader, 150_000);
    }
    t.is(o1.kind, 'PRESENT_CARD_AGAIN');
    t.truthy(o1.kind === 'PRESENT_CARD_AGAIN' && o1.tornAttempt);
    t.is(journal.tornAttempts().length, 1);
    // The customer presents the card again (it is back in the field after the reinsert delay).
    const o2 = await tapUntilDone(kernel, reader, 150_000);
    t.is(o2.kind, 'APPROVED');
    t.true(o2.kind === 'APPROVED' && o2.recovered);
    t.is(journal.listPayments().length, 1);
    t.is(journal.pendingSummary().amount, 150_000);
  },
);

test.serial('one session per reader: a second waitForCard on the same reader gets TransportBusyError', async (t) => {
  const pcsc = new PcscReaders();
  t.teardown(() => pcsc.close());
  await pcsc.waitForReaders(10_000);
  const reader = pcsc.reader(pcscd.readers[0]);
  const card = await loadedCard();
  const vpcd = new VpcdClient(card, { port: pcscd.vpcdPort });
  vpcd.start();
  t.teardown(() => vpcd.stop());
  const s = await reader.waitForCard({ timeoutMs: 10_000 });
  await t.throwsAsync(reader.waitForCard({ timeoutMs: 100 }), { instanceOf: TransportBusyError });
  await s.release();
  const s2 = await reader.waitForCard({ timeoutMs: 10_000 });
  await s2.release();
});

/** A scripted PC/SC context: readers and failures on demand, at exact points (the real restart is in pcsc-restart.test.ts). */
class FakeNfc extends EventEmitter {
  closed = false;
  close(): void {
    this.closed = true;
  }
}
class FakeReader extends EventEmitter {
  autoProcessing = true;
  card: { atr?: Uint8Array } | null = null;
  connection: unknown = null;
  constructor(
    readonly name: string,
    readonly answer: (apdu: Uint8Array) => Uint8Array,
  ) {
    super();
  }
  async connect(): Promise<unknown> {
    this.connection = {};
    return this.connection;
  }
  async disconnect(): Promise<unknown> {
    this.connection = null;
    return undefined;
  }
  async transmit(data: Uint8Array): Promise<Uint8Array> {
    return this.answer(new Uint8Array(data));
  }
  insert(): void {
    this.card = {};
    this.connection = {};
    this.emit('card', {});
  }
}

test.serial(
  'context lost (pcscd gone): the adapter closes it, recreates it, finds the reader again and serves the next session',
  async (t) => {
    const contexts: FakeNfc[] = [];
    const pcsc = new PcscReaders({
      reconnectDelayMs: 50,
      nfcFactory: () => {
        const n = new FakeNfc();
        contexts.push(n);
        return n as never;
      },
    });
    t.teardown(() => pcsc.close());
    const ok = () => Uint8Array.of(0x90, 0x00);
    const r1 = new FakeReader('ACS ACR122U', ok);
    contexts[0]!.emit('reader', r1);
    t.false(r1.autoProcessing, 'autoProcessing turned off');
    r1.insert();
    const reader = pcsc.reader('ACR122');
    const s1 = await reader.waitForCard({ timeoutMs: 1000 });
    t.deepEqual(await s1.transmit(Uint8Array.of(0, 0xa4, 4, 0)), Uint8Array.of(0x90, 0x00));
    await s1.release();
    // The service dies: the context reports an error; readers are gone.
    contexts[0]!.emit('error', new Error('SCardGetStatusChange error: RPC transport error.(0x80100013)'));
    // The old context is released once its readers are (after the current tick: see releaseContext).
    for (let i = 0; i < 50 && !contexts[0]!.closed; i++) await new Promise((r) => setTimeout(r, 10));
    t.true(contexts[0]!.closed);
    t.deepEqual(pcsc.readerNames, []);
    await t.throwsAsync(reader.waitForCard({ timeoutMs: 30 }), { code: 'TIMEOUT' });
    // A new context comes up after the delay; the reader reappears with a card.
    for (let i = 0; i < 50 && contexts.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    t.is(contexts.length, 2);
    const r2 = new FakeReader('ACS ACR122U', () => Uint8Array.of(0x61, 0x10));
    contexts[1]!.emit('reader', r2);
    r2.insert();
    const s2 = await reader.waitForCard({ timeoutMs: 1000 });
    t.deepEqual(await s2.transmit(Uint8Array.of(0, 0xa4, 4, 0)), Uint8Array.of(0x61, 0x10));
    await s2.release();
  },
);

test.serial(
  'closing a context at any moment of its start-up ends, and the process then exits by itself (no native thread left in its wait)',
  async (t) => {
    // A card in slot 0: a reader announced while its context closes must leave the card alone (nfc-pcsc would read it and throw).
    const vpcd = new VpcdClient(await loadedCard(), { port: pcscd.vpcdPort });
    vpcd.start();
    t.teardown(() => vpcd.stop());
    await vpcd.waitConnected(10_000);
    // A child process: a close that joined a thread stuck in SCardGetStatusChange would block its JavaScript thread for ever.
    const child = spawn(
      process.execPath,
      ['--conditions=dt-source', '--import', 'tsx', fileURLToPath(new URL('./helpers/pcsc-close-child.ts', import.meta.url)), '27'],
      { env: { ...process.env, PCSCLITE_CSOCK_NAME: pcscd.socketPath }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    // A hang detector, not a timing assertion: 27 start-ups and closes take a few seconds.
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('close', (c, s) => r([c, s])));
    clearTimeout(timer);
    t.is(signal, null, `the child hung after: ${out}`);
    t.is(code, 0, out);
    t.is(out.match(/^closed \d+$/gm)?.length, 27, out);
  },
);
