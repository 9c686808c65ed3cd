/**
 * The PC/SC adapter across a real pcscd restart: a tap through a private
 * pcscd; the daemon stops (the adapter reports the readers gone while the
 * event loop keeps running); a new daemon starts on the same socket path and
 * vpcd ports; the simulated card reconnects; the adapter recreates its
 * context and the next tap succeeds; then the daemon crashes (SIGKILL, its
 * socket file left behind), the loop stays live again, and a third daemon
 * serves the next tap, all in this one process.
 *
 * Its own file (own ava process): PCSCLITE_CSOCK_NAME is read once per
 * process, and this test restarts the daemon the other PC/SC tests share.
 *
 * Needs root, pcscd and vsmartcard-vpcd (CI runs as root; see README).
 */
import test from 'ava';
import { existsSync } from 'node:fs';
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
import { PaymentKernel, PcscReaders, type PcscEvent } from '../src/index.ts';
import { devTerminalIdentity, makeJournal, tempDir, TEST_LIMITS, TEST_POLICY } from './helpers/fixtures.ts';

const pki = createDevPki();
const identity = devTerminalIdentity(pki);

const daemons: PcscdHandle[] = [];
test.serial.after.always(async () => {
  // Newest first: an older handle's stop() removes the shared socket directory.
  for (const d of daemons.reverse()) await d.stop().catch(() => undefined);
});

async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

test.serial(
  'pcscd stops and a new one starts on the same socket: the loop stays live, the readers go and come back, the next tap is APPROVED',
  async (t) => {
    t.timeout(90_000);
    const first = await startPcscd();
    daemons.push(first);
    process.env.PCSCLITE_CSOCK_NAME = first.socketPath;

    const card = new SimulatedCard({ storage: new MemoryStorage() });
    const ct = new InProcessTransport(card);
    await personalizeCard(ct, devIssuingBank(pki), { pin: '1234', puk: '12345678', limits: TEST_LIMITS });
    await devLoad(ct, pki, [1_000_000, 2_000_000]);

    const { dir, cleanup } = tempDir();
    const journal = makeJournal(pki, dir);
    t.teardown(() => {
      journal.close();
      cleanup();
    });
    const kernel = new PaymentKernel({ identity, journal, policy: TEST_POLICY, timeouts: { cardMs: 10_000, tapMs: 10_000 } });

    const events: PcscEvent[] = [];
    const pcsc = new PcscReaders({ reconnectDelayMs: 200, onEvent: (e) => events.push(e) });
    t.teardown(() => pcsc.close());
    const vpcd = new VpcdClient(card, { port: first.vpcdPort, reconnectMs: 200 });
    vpcd.start();
    t.teardown(() => vpcd.stop());
    t.deepEqual(await pcsc.waitForReaders(10_000), [...first.readers]);
    const reader = pcsc.reader(first.readers[0]);
    t.is((await kernel.charge(reader, 10_000)).kind, 'APPROVED');

    // The daemon goes away. A 50 ms interval measures that the event loop keeps turning.
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 50);
    t.teardown(() => clearInterval(ticker));
    await first.stop();
    t.true(await until(() => pcsc.readerNames.length === 0, 10_000), 'readers reported gone');
    t.truthy(pcsc.contextError);
    const before = ticks;
    await new Promise((r) => setTimeout(r, 5000));
    t.log(`ticks in 5 s without pcscd: ${ticks - before}`);
    // Generous liveness bound (100 would be on time): a spinning native call would give ~0.
    t.true(ticks - before >= 20, `event loop starved: ${ticks - before} ticks in 5 s`);
    // No card can be found meanwhile.
    t.deepEqual(await new PaymentKernel({ identity, journal, policy: TEST_POLICY, timeouts: { cardMs: 500 } }).charge(reader, 1000), {
      kind: 'END',
      reason: 'NO_CARD',
    });

    // A new daemon on the same socket path and vpcd ports.
    const second = await startPcscd({ socketPath: first.socketPath, vpcdPort: first.vpcdPort });
    daemons.push(second);
    t.is(second.socketPath, first.socketPath);
    t.deepEqual(await pcsc.waitForReaders(20_000), [...second.readers]);
    t.true(events.some((e) => e.type === 'context' && e.state === 'lost'));
    t.true(events.filter((e) => e.type === 'context' && e.state === 'up').length >= 2, 'context recreated');
    const o2 = await kernel.charge(reader, 20_000);
    t.is(o2.kind, 'APPROVED');
    t.is(journal.listPayments().length, 2);

    // pcscd crashes: SIGKILL leaves its socket file behind, with nobody accepting on it.
    // (libpcsclite's context set-up would spin on the event loop here; the adapter checks first.)
    process.kill(second.pid, 'SIGKILL');
    t.true(await until(() => pcsc.readerNames.length === 0, 10_000), 'readers reported gone after the crash');
    t.true(existsSync(second.socketPath), 'the crashed daemon left its socket');
    const beforeCrash = ticks;
    await new Promise((r) => setTimeout(r, 3000));
    t.log(`ticks in 3 s with a stale socket: ${ticks - beforeCrash}`);
    t.true(ticks - beforeCrash >= 12, `event loop starved: ${ticks - beforeCrash} ticks in 3 s`);
    t.regex(pcsc.contextError ?? '', /pcscd is not running/);

    const third = await startPcscd({ socketPath: first.socketPath, vpcdPort: first.vpcdPort });
    daemons.push(third);
    t.deepEqual(await pcsc.waitForReaders(20_000), [...third.readers]);
    t.is((await kernel.charge(reader, 30_000)).kind, 'APPROVED');
    t.is(journal.listPayments().length, 3);
    clearInterval(ticker);
  },
);
