/**
 * The two-slot shadow journal: whatever prefix of a commit's write lands (a
 * torn write), the journal reads back exactly the old or the new record.
 */
import test from 'ava';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { concatBytes, sha256, toHex } from '@dt/protocol';
import { JOURNAL_SLOTS, MemoryStorage, ShadowJournal } from '../src/index.ts';

const body = (n: number, len = 300) => Uint8Array.from({ length: len }, (_, i) => (i * 7 + n) & 255);

test('blank storage loads as blank; commits alternate slots and the newest intact record wins', (t) => {
  const storage = new MemoryStorage();
  const j = new ShadowJournal(storage);
  t.deepEqual(j.load(), { kind: 'blank' });
  j.commit(body(1));
  j.commit(body(2));
  j.commit(body(3));
  t.deepEqual(storage.slots(), [...JOURNAL_SLOTS]);
  const again = new ShadowJournal(storage).load();
  t.is(again.kind, 'state');
  if (again.kind === 'state') {
    t.is(toHex(again.body), toHex(body(3)));
    t.is(again.seq, 3);
  }
});

test('a torn commit at every byte boundary leaves the old record or the new one, never anything else', (t) => {
  let checked = 0;
  for (const oldLen of [0, 1, 2]) {
    // 0: tearing the very first commit; 1, 2: tearing a later commit over either slot.
    const base = new MemoryStorage();
    const j = new ShadowJournal(base);
    j.load();
    for (let i = 1; i <= oldLen; i++) j.commit(body(i, 200 + i));
    const snapshot = base.snapshot();
    const next = body(99, 250);
    // Capture the record the next commit would write.
    let record: Uint8Array | undefined;
    let slot = -1;
    const probe = new ShadowJournal({
      read: (s) => new MemoryStorage(snapshot).read(s),
      write: (s, d) => {
        slot = s;
        record = d;
      },
    });
    probe.load();
    probe.commit(next);
    for (let keep = 0; keep <= record!.length; keep++) {
      // Fillers stand for erased (FF), zeroed and random cells; 'cut' leaves the slot
      // holding only the bytes written so far (a file or page that was truncated).
      for (const filler of [0x00, 0xff, 0x5a, 'cut'] as const) {
        const s = new MemoryStorage(snapshot);
        const old = s.read(slot) ?? new Uint8Array(0);
        let torn: Uint8Array;
        if (filler === 'cut') {
          torn = record!.slice(0, keep);
        } else {
          torn = new Uint8Array(Math.max(old.length, record!.length)).fill(filler);
          torn.set(old.subarray(0, torn.length));
          torn.set(record!.subarray(0, keep));
        }
        s.write(slot, keep === record!.length ? record! : torn);
        const got = new ShadowJournal(s).load();
        if (keep === record!.length) {
          t.is(got.kind, 'state');
          if (got.kind === 'state') t.is(toHex(got.body), toHex(next));
        } else if (oldLen === 0) {
          t.deepEqual(got, { kind: 'blank' }, `keep ${keep}`);
        } else {
          t.is(got.kind, 'state');
          if (got.kind === 'state') t.is(toHex(got.body), toHex(body(oldLen, 200 + oldLen)), `keep ${keep}`);
        }
        checked++;
      }
    }
  }
  t.log(`${checked} torn variants checked`);
});

/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: a reference independent of the firmware's tables. */
function crc32cReference(b: Uint8Array): number {
  let c = 0xffffffff;
  for (const x of b) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

const u32be = (n: number) => Uint8Array.of(n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);

test('a commit writes the DTS2 layout: magic, seq, length, CRC-32C and CRC-32 over header and body, body (SPEC §10.10)', (t) => {
  // The check values of the references themselves (the standard check input "123456789").
  t.is(crc32cReference(new TextEncoder().encode('123456789')), 0xe3069283);
  t.is(zlibCrc32(new TextEncoder().encode('123456789')), 0xcbf43926);
  const s = new MemoryStorage();
  const j = new ShadowJournal(s);
  j.load();
  j.commit(body(1));
  const b = body(2, 5000);
  j.commit(b);
  const raw = s.read(JOURNAL_SLOTS[1])!;
  const header = concatBytes(new TextEncoder().encode('DTS2'), u32be(2), u32be(b.length));
  const whole = concatBytes(header, b);
  t.is(toHex(raw), toHex(concatBytes(header, u32be(crc32cReference(whole)), u32be(zlibCrc32(whole)), b)));
});

test('a DTS2 record with any one bit changed (header, either CRC, body) is not intact: the other slot is read', (t) => {
  const s = new MemoryStorage();
  const j = new ShadowJournal(s);
  j.load();
  j.commit(body(1, 40));
  j.commit(body(2, 40));
  const good = s.read(JOURNAL_SLOTS[1])!;
  let flips = 0;
  for (let i = 0; i < good.length; i++) {
    for (let bit = 0; bit < 8; bit++) {
      const bad = good.slice();
      bad[i]! ^= 1 << bit;
      const c = new MemoryStorage(s.snapshot());
      c.write(JOURNAL_SLOTS[1], bad);
      const got = new ShadowJournal(c).load();
      // The check covers the header too: a changed sequence number or length is refused like a changed body.
      if (got.kind !== 'state' || toHex(got.body) !== toHex(body(1, 40))) t.fail(`byte ${i} bit ${bit}: ${got.kind}`);
      flips++;
    }
  }
  t.is(flips, good.length * 8);
});

test('a DTS1 record (SHA-256 check, written by earlier firmware) is read; the next commit writes DTS2 with the next sequence number, which wins', (t) => {
  const b = body(7, 600);
  const header = concatBytes(new TextEncoder().encode('DTS1'), u32be(41), u32be(b.length));
  const s = new MemoryStorage();
  s.write(JOURNAL_SLOTS[1], concatBytes(header, sha256(concatBytes(header, b)), b));
  const j = new ShadowJournal(s);
  const got = j.load();
  t.deepEqual(got.kind === 'state' ? [toHex(got.body), got.seq] : got, [toHex(b), 41]);
  // The same record with its SHA-256 damaged is not intact (one non-empty slot: blank, its first commit cut).
  const damaged = new MemoryStorage(s.snapshot());
  const d = damaged.read(JOURNAL_SLOTS[1])!;
  d[20]! ^= 1;
  damaged.write(JOURNAL_SLOTS[1], d);
  t.deepEqual(new ShadowJournal(damaged).load(), { kind: 'blank' });
  j.commit(body(8, 300));
  const raw = s.read(JOURNAL_SLOTS[0])!;
  t.is(new TextDecoder().decode(raw.subarray(0, 4)), 'DTS2');
  const again = new ShadowJournal(s).load();
  t.deepEqual(again.kind === 'state' ? [toHex(again.body), again.seq] : again, [toHex(body(8, 300)), 42]);
});

test('two damaged slots are reported as corrupt, not blank', (t) => {
  const s = new MemoryStorage();
  const j = new ShadowJournal(s);
  j.load();
  j.commit(body(1));
  j.commit(body(2));
  for (const slot of JOURNAL_SLOTS) {
    const d = s.read(slot)!;
    d[50] ^= 1;
    s.write(slot, d);
  }
  t.deepEqual(new ShadowJournal(s).load(), { kind: 'corrupt' });
});

test('MemoryStorage copies on read and write; snapshot/restore clone all slots', (t) => {
  const s = new MemoryStorage();
  const d = Uint8Array.of(1, 2, 3);
  s.write(4, d);
  d[0] = 9;
  t.is(s.read(4)![0], 1);
  s.read(4)![1] = 9;
  t.is(s.read(4)![1], 2);
  const snap = s.snapshot();
  s.write(4, Uint8Array.of(7));
  const clone = new MemoryStorage(snap);
  t.deepEqual([...clone.read(4)!], [1, 2, 3]);
  s.restore(snap);
  t.deepEqual([...s.read(4)!], [1, 2, 3]);
  t.is(s.read(5), undefined);
  t.throws(() => s.write(-1, d));
});
