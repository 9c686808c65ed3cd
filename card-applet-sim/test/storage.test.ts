import test from 'ava';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MemoryStorage } from '@dt/firmware';
import { CardStatusError, SW, getStatus, pay, selectApplet, verifyPin } from '@dt/protocol';
import {
  FaultInjectingStorage,
  FaultInjector,
  FileStorage,
  PowerCutError,
  SimulatedCard,
  StateFileError,
  InProcessTransport,
  devLoad,
} from '../src/index.ts';
import { LIMITS, LOADED, PIN, assertValidHandover, readyCard, request, tempDir, world } from './helpers.ts';

const TOTAL = LOADED[0]! + LOADED[1]!;

test('state file: created with mode 0600, one atomic durable file per write, nothing left behind', (t) => {
  const dir = tempDir();
  const path = join(dir, 'a.card');
  const s = FileStorage.create(path, { label: 'alice' });
  t.is(statSync(path).mode & 0o777, 0o600);
  s.write(0, Uint8Array.of(1, 2, 3));
  s.write(1, Uint8Array.of(4));
  s.write(0, Uint8Array.of(9));
  t.is(s.writeCount, 3);
  s.close();
  t.deepEqual(readdirSync(dir).sort(), ['a.card'], 'no temporary file and no lock left');
  const json = JSON.parse(readFileSync(path, 'utf8'));
  t.is(json.format, 'dt-card-sim');
  t.is(json.writes, 3);
  const again = FileStorage.open(path);
  t.deepEqual(again.read(0), Uint8Array.of(9));
  t.deepEqual(again.read(1), Uint8Array.of(4));
  t.is(again.read(2), undefined);
  t.is(again.meta.label, 'alice');
  again.close();
});

test('state file: every write replaces it whole with mode 0600 (even after a chmod), and a write that fails leaves no temporary file and no half-done state', (t) => {
  const dir = tempDir();
  const path = join(dir, 'w.card');
  const s = FileStorage.create(path, {}, { lock: false });
  s.write(0, Uint8Array.of(1));
  chmodSync(path, 0o644);
  s.write(1, Uint8Array.of(2));
  t.is(statSync(path).mode & 0o777, 0o600, 'it holds the secret key: 0600 again after each write');
  t.is(JSON.parse(readFileSync(path, 'utf8')).writes, 2);
  // The rename over the state file fails (a non-empty directory took its place).
  rmSync(path);
  mkdirSync(join(path, 'inside'), { recursive: true });
  t.throws(() => s.write(0, Uint8Array.of(3)));
  t.deepEqual(readdirSync(dir), ['w.card'], 'the temporary file is removed');
  t.is(s.writeCount, 2);
  t.deepEqual(s.read(0), Uint8Array.of(1), 'the failed write is not taken as done');
});

test('state file: refuses to overwrite, to open missing or malformed files, and to share a card between two users', (t) => {
  const dir = tempDir();
  const path = join(dir, 'b.card');
  const s = FileStorage.create(path);
  t.is(t.throws(() => FileStorage.create(path), { instanceOf: StateFileError }).code, 'STATE_EXISTS');
  t.is(t.throws(() => FileStorage.open(path), { instanceOf: StateFileError }).code, 'STATE_LOCKED', 'held by this process');
  s.close();
  FileStorage.open(path).close();
  t.is(t.throws(() => FileStorage.open(join(dir, 'none.card')), { instanceOf: StateFileError }).code, 'STATE_MISSING');
  const bad = join(dir, 'bad.card');
  for (const content of [
    'not json',
    '{"format":"other","version":1}',
    JSON.stringify({ format: 'dt-card-sim', version: 1, label: 'x', created: 'y', writes: 0, slots: { '-1': '' } }),
    JSON.stringify({ format: 'dt-card-sim', version: 1, label: 'x', created: 'y', writes: 0, slots: { '0': '%%%' } }),
  ]) {
    writeFileSync(bad, content);
    t.is(t.throws(() => FileStorage.open(bad, { lock: false }), { instanceOf: StateFileError }).code, 'STATE_INVALID', content);
  }
  // A lock left by a process that died is stale and taken over.
  writeFileSync(`${path}.lock`, '999999999\n');
  FileStorage.open(path).close();
  t.pass();
});

test('fault storage: a torn write keeps a prefix of the new bytes and the old rest; later writes are refused until revived', (t) => {
  const inner = new MemoryStorage();
  inner.write(0, Uint8Array.of(1, 1, 1, 1, 1, 1));
  const faults = new FaultInjector({ cutAtWrite: 2, torn: 3 });
  const s = new FaultInjectingStorage(inner, faults);
  s.write(1, Uint8Array.of(7));
  const e = t.throws(() => s.write(0, Uint8Array.of(2, 2, 2, 2, 2, 2)), { instanceOf: PowerCutError });
  t.regex(e.where, /write 2 \(slot 0\), torn after 3 of 6 bytes/);
  t.deepEqual(inner.read(0), Uint8Array.of(2, 2, 2, 1, 1, 1));
  t.throws(() => s.write(1, Uint8Array.of(8)), { instanceOf: PowerCutError });
  t.deepEqual(inner.read(1), Uint8Array.of(7), 'nothing reaches the memory without power');
  s.revive();
  s.write(1, Uint8Array.of(8));
  t.deepEqual(inner.read(1), Uint8Array.of(8));
  t.is(faults.writes, 3, 'the refused write never reached the fault counter');
});

test('tearing on the state file: every write of LOAD + VERIFY PIN + PAY + PAY cut (torn), invariants hold, the card still works', async (t) => {
  const { pki } = world();
  const dir = tempDir();
  const base = join(dir, 'base.card');
  const prepared = await readyCard({ storage: FileStorage.create(base) });
  (prepared.storage as FileStorage).close();
  const LOAD = 10_000;

  // The scenario: a load, the PIN, a payment above the CVM limit, a small payment.
  const scenario = async (tr: InProcessTransport, signed: Map<number, Uint8Array>, paid: { value: number }) => {
    await devLoad(tr, pki, [LOAD]);
    await selectApplet(tr);
    await verifyPin(tr, PIN);
    for (const amount of [LIMITS.cvmLimit + 5_000, 3_000]) {
      const req = request(amount);
      const h = await pay(tr, req.bytes);
      const transfer = assertValidHandover(h, req, amount);
      t.false(signed.has(transfer.counter), `counter ${transfer.counter} signed twice`);
      signed.set(transfer.counter, h);
      paid.value += amount;
    }
  };

  // A clean run counts the write points.
  const cleanPath = join(dir, 'clean.card');
  copyFileSync(base, cleanPath);
  const cleanStorage = FileStorage.open(cleanPath);
  const clean = new SimulatedCard({ storage: cleanStorage });
  await scenario(new InProcessTransport(clean), new Map(), { value: 0 });
  const points = clean.faults.writes;
  cleanStorage.close();
  t.true(points >= 6, `write points: ${points}`);

  let cuts = 0;
  for (let k = 1; k <= points; k++) {
    const path = join(dir, `cut-${k}.card`);
    copyFileSync(base, path);
    const storage = FileStorage.open(path);
    const card = new SimulatedCard({ storage, faults: { cutAtWrite: k, torn: true } });
    const tr = new InProcessTransport(card);
    const signed = new Map<number, Uint8Array>();
    const paid = { value: 0 };
    await t.throwsAsync(scenario(tr, signed, paid), { instanceOf: PowerCutError }, `cut at write ${k}`);
    cuts += card.faults.events.length;
    storage.close();

    // Power returns: a new process opens the file (what is on disk is all there is).
    const reopened = FileStorage.open(path);
    const card2 = new SimulatedCard({ storage: reopened });
    const tr2 = new InProcessTransport(card2);
    await selectApplet(tr2);
    let s = await getStatus(tr2);
    const value = s.balance + s.offlineValue;
    t.true(value === TOTAL || value === TOTAL + LOAD, `cut ${k}: value is the old or the new total, never another (${value})`);
    if (value === TOTAL) {
      // The load did not complete: a pending one is completed, a lost BEGIN is redone.
      await devLoad(tr2, pki, [LOAD]);
      await selectApplet(tr2);
      s = await getStatus(tr2);
    }
    t.false(s.syncPending);
    t.is(s.balance + s.offlineValue, TOTAL + LOAD, `cut ${k}: value on the card plus value paid equals value loaded`);
    t.true(s.offlineValue >= paid.value, `cut ${k}: every handover that left the card is committed`);
    t.true(s.offlineValue <= paid.value + LIMITS.cvmLimit + 5_000, `cut ${k}: at most the interrupted payment is committed unseen`);
    for (const counter of signed.keys()) t.true(counter <= s.counter, `cut ${k}: signed counter ${counter} is committed`);
    // The card still works, and never reuses a counter it signed.
    const req = request(1_000);
    const transfer = assertValidHandover(await pay(tr2, req.bytes), req, 1_000);
    t.is(transfer.counter, s.counter + 1, `cut ${k}: next counter`);
    t.false(signed.has(transfer.counter), `cut ${k}: counter not reused`);
    reopened.close();
  }
  t.is(cuts, points, 'every write point was cut once');
  t.log(`tearing on the state file: cut ${cuts} of ${points} write points`);
});

test('the PIN retry counter cannot be saved by cutting the power after a wrong guess', async (t) => {
  const { card, transport } = await readyCard();
  await selectApplet(transport);
  // The first write of VERIFY PIN is the decrement; let it through and cut
  // the power right after the applet compared (before any answer).
  card.faults.arm({ cutAfterApdu: { index: 1 } });
  await t.throwsAsync(verifyPin(transport, '0000'), { instanceOf: PowerCutError });
  await selectApplet(transport);
  t.is((await getStatus(transport)).pinTries, 2);
  const e = await t.throwsAsync(verifyPin(transport, '0001'), { instanceOf: CardStatusError });
  t.is(e.sw, SW.wrongPin(1));
});
