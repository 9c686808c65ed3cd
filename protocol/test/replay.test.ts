/**
 * Bounded per-party replay windows (src/replay.ts): the nonce memory of the
 * acquirer (terminal reads, SPEC.md §7.7.1) and of the ledger (acquirer settle
 * requests, §7.7.2). One party filling its window never refuses another; a
 * nonce is remembered for exactly the retention; every bound fails closed.
 */
import test from 'ava';
import { ReplayWindows } from '../src/index.ts';

const id = (n: number, len = 16) => new Uint8Array(len).fill(n);
const nonce = (n: number) => {
  const b = new Uint8Array(16);
  new DataView(b.buffer).setUint32(0, n);
  return b;
};

test('a nonce is new once, then replayed until its retention ends, then new again', (t) => {
  const w = new ReplayWindows({ retain: 600, perParty: 10, maxParties: 10 });
  t.is(w.add(id(1), nonce(1), 1000), 'ok');
  t.is(w.add(id(1), nonce(1), 1000), 'replayed');
  t.is(w.add(id(1), nonce(1), 1599), 'replayed');
  // The same nonce from another party is that party's business.
  t.is(w.add(id(2), nonce(1), 1599), 'ok');
  t.is(w.add(id(1), nonce(1), 1600), 'ok', 'forgotten exactly at first sight + retain');
});

test('one party that fills its window is refused; the others are not, and it recovers when its nonces expire', (t) => {
  const w = new ReplayWindows({ retain: 600, perParty: 5, maxParties: 100 });
  for (let i = 0; i < 5; i++) t.is(w.add(id(1), nonce(i), 1000 + i), 'ok');
  t.is(w.add(id(1), nonce(99), 1010), 'full');
  t.is(w.size(id(1), 1010), 5, 'a refused nonce is not recorded');
  for (let i = 0; i < 5; i++) t.is(w.add(id(2), nonce(1000 + i), 1010), 'ok', 'another party has its own window');
  // A replay is still reported as such when the window is full (the nonce is in it).
  t.is(w.add(id(1), nonce(0), 1011), 'replayed');
  // The oldest nonce expires at 1600: one slot frees.
  t.is(w.add(id(1), nonce(99), 1600), 'ok');
  t.is(w.add(id(1), nonce(100), 1600), 'full');
});

test('the number of windows is bounded; idle windows are dropped and free their place', (t) => {
  const w = new ReplayWindows({ retain: 100, perParty: 3, maxParties: 3 });
  for (let p = 1; p <= 3; p++) t.is(w.add(id(p), nonce(p), 0), 'ok');
  t.is(w.parties, 3);
  t.is(w.add(id(4), nonce(4), 50), 'full', 'a fourth party while three are live');
  t.is(w.parties, 3, 'a refused party gets no window');
  // Parties 1..3 keep their windows as long as they hold a live nonce; party 1 stays active.
  t.is(w.add(id(1), nonce(11), 60), 'ok');
  t.is(w.add(id(4), nonce(4), 100), 'ok', 'parties 2 and 3 went idle at 100: their windows are gone');
  t.is(w.parties, 2);
  t.is(w.size(id(2), 100), 0);
  t.is(w.add(id(1), nonce(11), 150), 'replayed', "party 1's later nonce is still remembered");
});

test('bounds must be positive integers', (t) => {
  for (const bad of [{ retain: 0 }, { perParty: -1 }, { maxParties: 1.5 }]) {
    t.throws(() => new ReplayWindows({ retain: 10, perParty: 10, maxParties: 10, ...bad }), { instanceOf: RangeError });
  }
});
