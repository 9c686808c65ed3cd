/**
 * The two-slot shadow journal: whatever prefix of a commit's write lands (a
 * torn write), the journal reads back exactly the old or the new record.
 */
import test from 'ava';
import { toHex } from '@dt/protocol';
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
