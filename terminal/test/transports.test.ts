/**
 * Serial and HID adapters end to end with the real firmware:
 * - serial: a real `socat` pty pair; the card-applet-sim serial endpoint on
 *   one end, the terminal's `serialport` adapter on the other; a dropped and
 *   a corrupted response frame are recovered by retransmission without the
 *   card running PAY twice;
 * - HID: a fake node-hid device (the node-hid API) in front of
 *   card-applet-sim's VirtualHidCard, so every report goes through the
 *   protocol's HID framing on both sides.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { openTty, SerialCardEndpoint, VirtualHidCard } from '@dt/card-applet-sim';
import { getStatus, selectApplet } from '@dt/protocol';
import { hidReader, openSerialReader, PaymentKernel } from '../src/index.ts';
import { FakeNodeHid } from './helpers/fake-hid.ts';
import { createDevPki, devTerminalIdentity, makeCard, makeJournal, tempDir, TEST_POLICY } from './helpers/fixtures.ts';

const pki = createDevPki();
const identity = devTerminalIdentity(pki);

async function ptyPair(t: { teardown: (f: () => void) => void }, dir: string): Promise<[string, string]> {
  const a = join(dir, 'pty-card');
  const b = join(dir, 'pty-pos');
  const socat: ChildProcess = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: 'ignore' });
  t.teardown(() => socat.kill('SIGTERM'));
  for (let i = 0; i < 100 && !(existsSync(a) && existsSync(b)); i++) await new Promise((r) => setTimeout(r, 50));
  if (!existsSync(a) || !existsSync(b)) throw new Error('socat did not create the pty pair');
  return [a, b];
}

test('serial wallet over a real socat pty pair: APPROVED; lost and damaged frames are retransmitted and PAY runs once', async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const [cardSide, posSide] = await ptyPair(t, dir);
  const c = await makeCard(pki);
  const link = openTty(cardSide);
  const endpoint = new SerialCardEndpoint(c.card, link);
  t.teardown(() => {
    endpoint.stop();
    link.close();
  });
  const reader = await openSerialReader(posSide, { frameTimeoutMs: 400, attempts: 5 });
  t.teardown(() => reader.close());
  const journal = makeJournal(pki, dir);
  t.teardown(() => journal.close());
  const kernel = new PaymentKernel({ identity, journal, policy: TEST_POLICY });
  t.is((await kernel.charge(reader, 61_000)).kind, 'APPROVED');

  // Now the device drops its 3rd response frame and corrupts its 6th: the host resends the
  // same frames, the device answers them from its cache; the payment still happens exactly once.
  const before = await statusVia(c.transport);
  c.card.faults.arm({ dropFrame: 3, corruptFrame: 6 });
  const o = await kernel.charge(reader, 39_000);
  t.is(o.kind, 'APPROVED');
  const after = await statusVia(c.transport);
  t.is(after.counter, before.counter + 1);
  t.is(before.balance - after.balance, 39_000);
  t.true(c.card.faults.events.length >= 2);
  t.is(journal.pendingSummary().amount, 100_000);
});

async function statusVia(t: Parameters<typeof getStatus>[0]) {
  await selectApplet(t);
  return getStatus(t);
}

test('HID wallet through the HID framing with a fake node-hid device: APPROVED, multi-report messages both ways', async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const c = await makeCard(pki);
  const hid = new FakeNodeHid(new VirtualHidCard(c.card));
  const reader = hidReader('hid:fake', hid);
  const journal = makeJournal(pki, dir);
  t.teardown(() => journal.close());
  const kernel = new PaymentKernel({ identity, journal, policy: TEST_POLICY });
  const o = await kernel.charge(reader, 88_000);
  t.is(o.kind, 'APPROVED');
  // A PaymentRequest of several hundred bytes needs many 64-byte reports.
  t.true(hid.written > 10);
  t.is(journal.listPayments()[0]!.amount, 88_000);
});
