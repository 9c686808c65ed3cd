/**
 * `dt-pos serve` with a hardware wallet on a cable, unplugged and plugged back under the running
 * service:
 * - serial, all real processes: `socat` makes a pty pair (the cable), `dt-card serve --serial`
 *   is the wallet on one end, `dt-pos serve --reader serial:<other end>` the terminal. Unplugged
 *   (the wallet and socat stop, the pty goes away): the service reports the reader `absent` at
 *   once, a payment meanwhile ends with `READER` (`READER_UNAVAILABLE`), nothing is charged;
 *   plugged back (a new pty pair on the same paths): the next payment opens it again and is
 *   APPROVED by the same process; the card lost exactly the approved amounts.
 * - HID, in process with an injected device layer (a fake node-hid device over the simulated
 *   card's HID endpoint): node-hid's `error` on unplug drops the reader (`absent`, a `reader`
 *   event), a payment meanwhile ends with `READER`, the device back: APPROVED, `ready`.
 *
 * The serial test needs socat, root and pcscd (the shop's init); CI has them; never skipped.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { VirtualHidCard } from '@dt/card-applet-sim';
import { openServiceReader, type ReaderStatus } from '../src/index.ts';
import { FakeNodeHid } from './helpers/fake-hid.ts';
import { tempDir } from './helpers/fixtures.ts';
import { cardBalance, ecrClient, serveCard, startServe, startShop, type Serve, type Shop, stopServedCards } from './helpers/serve.ts';
import { startService, terminalInWorld } from './helpers/service.ts';

let shop: Shop | undefined;
const running: Serve[] = [];
const cables: ChildProcess[] = [];
const tmp = tempDir('dt-pos-serve-wallet-');

test.after.always(async () => {
  await stopServedCards();
  for (const s of running) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  for (const c of cables) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await shop?.close();
  tmp.cleanup();
});

/** A socat pty pair linked at `a` and `b` (the cable); resolves once both ends exist. */
async function plugCable(a: string, b: string): Promise<{ unplug: () => Promise<void> }> {
  const socat = spawn('socat', [`pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: 'ignore' });
  cables.push(socat);
  const exited = new Promise<void>((r) => socat.on('exit', () => r()));
  for (let i = 0; i < 200 && !(existsSync(a) && existsSync(b)); i++) await new Promise((r) => setTimeout(r, 25));
  if (!existsSync(a) || !existsSync(b)) throw new Error('socat did not create the pty pair');
  return {
    unplug: async () => {
      socat.kill('SIGTERM');
      await exited;
    },
  };
}

interface View {
  state: string;
  reason: string | null;
  detail: string | null;
  payment: { receipt: number } | null;
}

test.serial(
  'serial wallet (real processes): unplugged under dt-pos serve, the reader is absent; plugged back, the next payment is APPROVED',
  async (t) => {
    shop = await startShop(tmp.dir);
    const { env, dataDir, stateFile } = shop;
    const cardEnd = join(tmp.dir, 'wallet-card');
    const posEnd = join(tmp.dir, 'wallet-pos');
    const before = await cardBalance(stateFile);

    let cable = await plugCable(cardEnd, posEnd);
    let wallet = await serveCard(['--serial', cardEnd, stateFile], env);
    const s = await startServe(dataDir, env, ['--reader', `serial:${posEnd}`]);
    running.push(s);
    const ecr = ecrClient(s.url, dataDir);
    const pay = async (reference: string, amount: number) => {
      const done = ecr.events((ev) => ev.some((e) => e.type === 'outcome' && e.data.reference === reference));
      const r = await ecr.call('POST', '/v1/payments', { amount, reference });
      t.is(r.status, 201, JSON.stringify(r.body));
      return (await done).find((e) => e.type === 'outcome')!.data;
    };
    const reader = async () => (await ecr.call<{ reader: ReaderStatus }>('GET', '/v1/status')).body.reader;

    t.is((await pay('w-1', 5000)).outcome, 'APPROVED');
    t.like(await reader(), { spec: `serial:${posEnd}`, state: 'ready' });

    // Unplugged: the wallet and the cable go away. The service sees the port fail at once.
    let mark = s.lines.length;
    await wallet.stop();
    await cable.unplug();
    await s.waitLine((l) => l.event === 'reader' && l.state === 'absent', 'the reader gone', mark);
    t.like(await reader(), { state: 'absent' });
    const meanwhile = await pay('w-2', 3000);
    t.is(meanwhile.outcome, 'END');
    t.is(meanwhile.reason, 'READER');
    t.like((await ecr.call<View>('GET', '/v1/payments/w-2')).body, {
      state: 'ended',
      reason: 'READER',
      detail: 'READER_UNAVAILABLE',
      payment: null,
    });

    // Plugged back (new ptys on the same paths): the next payment opens it again.
    mark = s.lines.length;
    cable = await plugCable(cardEnd, posEnd);
    wallet = await serveCard(['--serial', cardEnd, stateFile], env);
    t.is((await pay('w-3', 7000)).outcome, 'APPROVED');
    await s.waitLine((l) => l.event === 'reader' && l.state === 'ready', 'the reader back', mark);
    t.like(await reader(), { state: 'ready' });
    t.is(s.proc.exitCode, null, 'the same process served all of it');

    s.proc.kill('SIGTERM');
    t.is((await s.exited).code, 0);
    await wallet.stop();
    await cable.unplug();
    t.is(before - (await cardBalance(stateFile)), 12_000, 'the card paid w-1 and w-3, nothing for w-2');
  },
);

test('HID wallet (injected device layer): unplugged, the reader is dropped at once; plugged back, the next payment is APPROVED', async (t) => {
  const { id, journal, card } = await terminalInWorld(t, 'hid');
  const hid = new VirtualHidCard(card.card);
  let plugged = true;
  const opened: FakeNodeHid[] = [];
  const openHidDevice = (path: string): FakeNodeHid => {
    if (path !== '/dev/hidraw-wallet' || !plugged) throw new Error(`cannot open device ${path}`);
    const d = new FakeNodeHid(hid);
    opened.push(d);
    return d;
  };
  const changes: ReaderStatus[] = [];
  const holder: { changed?: () => void } = {};
  const rd = openServiceReader('hid:/dev/hidraw-wallet', () => holder.changed?.(), { openHidDevice });
  t.teardown(() => rd.close());
  const s = startService({ identity: id, journal, reader: rd.reader, readerStatus: () => rd.status() });
  t.teardown(() => s.svc.stop());
  holder.changed = () => {
    s.svc.readerChanged();
    changes.push(rd.status());
  };

  t.like(rd.status(), { state: 'absent' }, 'not opened before a tap needs it');
  t.is((await s.pay('h-1', 40_000)).outcome, 'APPROVED');
  t.like(rd.status(), { spec: 'hid:/dev/hidraw-wallet', state: 'ready' });

  // Unplugged: node-hid reports an error on the open device.
  plugged = false;
  opened[0]!.unplug();
  t.like(rd.status(), { state: 'absent' });
  t.regex(rd.status().detail ?? '', /HID device gone/);
  t.true(opened[0]!.closed, 'the dead handle is closed');
  t.true(s.events.some((e) => e.type === 'reader' && e.reader.state === 'absent'));
  const meanwhile = await s.pay('h-2', 10_000);
  t.is(meanwhile.outcome, 'END');
  t.is(meanwhile.reason, 'READER');
  t.like(s.svc.getPayment('h-2'), { state: 'ended', reason: 'READER', detail: 'READER_UNAVAILABLE', payment: null });

  // Plugged back: the next payment opens a new handle.
  plugged = true;
  t.is((await s.pay('h-3', 25_000)).outcome, 'APPROVED');
  t.is(opened.length, 2);
  t.false(
    s.events.some((e) => e.type === 'present_card_again' && e.reference === 'h-3'),
    'the first tap on the new handle went through',
  );
  t.like(rd.status(), { state: 'ready' });
  t.deepEqual(
    changes.map((c) => c.state),
    ['ready', 'absent', 'absent', 'ready'],
  );
  t.deepEqual(
    journal
      .listPayments()
      .map((p) => p.amount)
      .sort(),
    [25_000, 40_000],
  );
});
