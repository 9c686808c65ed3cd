/**
 * Tearing suite: a card's whole life (personalization, LOAD, PIN, PAY, SYNC,
 * LOAD again, more PAYs) is run once cleanly to count its storage writes; then
 * once per write point and per cut mode, with the power cut at that write:
 *
 * - `before`: the write does not happen;
 * - `torn`: a prefix of the new bytes lands, the rest of the slot keeps its
 *   old bytes (0xFF where there were none), as flash/EEPROM does;
 * - `after`: the write completes, then the power goes (the response is lost).
 *
 * After each cut the card is powered on again and the invariants are checked:
 * value on the card + value paid out == value loaded; no counter ever signed
 * twice (across every signature released in every run); every released
 * signature belongs to committed state; then the host recovers as a real one
 * would (torn-tap retry, repeated SYNC BEGIN/COMPLETE, re-verified PIN) and
 * the rest of the life must succeed, ending with a payment that passes
 * validateHandover.
 */
import test from 'ava';
import {
  createTrustStore,
  decodeMessage,
  INS,
  openSigned,
  payloadHash,
  PERSONALIZE_P1,
  sumAmounts,
  toHex,
  validateHandover,
  CardStatusSchema,
  decodeFormat,
  encodeFormat,
  Personalized,
  SetConfigSchema,
  SetPinSchema,
} from '@dt/protocol';
import { Applet, MemoryStorage, type Storage } from '../src/index.ts';
import { Host, Ledger, PIN, PUK, T0, makePki, paymentRequest, personalize, seededRandom } from './fixtures.ts';

type Mode = 'before' | 'torn' | 'after';

class PowerCut extends Error {
  constructor(readonly write: number) {
    super(`power cut at write ${write}`);
  }
}

/** Storage that counts writes, labels them with the operation in progress, and cuts the power at one of them. */
class CuttingStorage implements Storage {
  readonly inner = new MemoryStorage();
  writes = 0;
  labels: string[] = [];
  label = 'idle';
  cutAt = 0;
  mode: Mode = 'before';
  fired = false;

  read(slot: number): Uint8Array | undefined {
    return this.inner.read(slot);
  }

  write(slot: number, data: Uint8Array): void {
    this.writes++;
    this.labels.push(this.label);
    if (this.writes !== this.cutAt) {
      this.inner.write(slot, data);
      return;
    }
    this.fired = true;
    if (this.mode === 'after') {
      this.inner.write(slot, data);
    } else if (this.mode === 'torn') {
      const old = this.inner.read(slot) ?? new Uint8Array(0);
      const out = new Uint8Array(Math.max(old.length, data.length)).fill(0xff);
      out.set(old);
      // A deterministic, write-dependent tear point anywhere in the record.
      const keep = Math.floor((data.length * ((this.writes * 37) % 97)) / 97);
      out.set(data.subarray(0, keep));
      this.inner.write(slot, out);
    }
    throw new PowerCut(this.writes);
  }
}

const pki = makePki('tearing');
const ledger = new Ledger(pki);
const trust = createTrustStore({ root: pki.root.cert, ledgerCert: pki.ledger.cert, at: T0 });

/** Signatures released by every card of every run: `kid:counter` -> payload hash. */
const released = new Map<string, string>();

interface Released {
  kid: string;
  counter: number;
  hash: string;
  amount: number;
}

/** One card's life with recovery from one power cut. */
class Life {
  readonly storage = new CuttingStorage();
  readonly applet: Applet;
  readonly host: Host;
  readonly rng: (n: number) => Uint8Array;
  cuts = 0;
  cutLabel = '';
  loaded = 0;
  /** Transfers handed to the ledger in applied syncs (hash -> amount). */
  archive = new Map<string, number>();
  releasedTransfers: Released[] = [];
  releasedSyncs = new Map<string, number>();
  receipts = new Map<string, { receipt: Uint8Array; request: Uint8Array; loaded: number }>();
  noted = new Set<string>();

  constructor(
    readonly seed: string,
    cutAt: number,
    mode: Mode,
  ) {
    this.storage.cutAt = cutAt;
    this.storage.mode = mode;
    this.rng = seededRandom(`${seed}/host`);
    this.applet = new Applet({ storage: this.storage, random: seededRandom(seed) });
    this.host = new Host(this.applet);
  }

  problems: string[] = [];
  expect(ok: boolean, what: string): void {
    if (!ok) this.problems.push(what);
  }

  /** Runs `op`; on a power cut: power on, check the invariants, then `recover`. */
  async guard(label: string, op: () => Promise<void>, recover: () => Promise<void>): Promise<void> {
    this.storage.label = label;
    try {
      await op();
    } catch (e) {
      if (!(e instanceof PowerCut)) throw e;
      this.cuts++;
      this.cutLabel = label;
      this.applet.powerOn();
      await this.host.select();
      this.check(`after the cut in ${label}`);
      await recover();
    }
    this.check(`after ${label}`);
  }

  note(kid: string, counter: number, hash: string, what: string): void {
    const key = `${kid}:${counter}`;
    const before = released.get(key);
    this.expect(before === undefined || before === hash, `counter ${counter} signed twice (${what})`);
    released.set(key, hash);
  }

  /** Notes an applied receipt: its request's history went to the ledger, its load arrived. */
  noteReceipt(): void {
    const s = this.applet.committedState;
    if (!s.receipt) return;
    const k = toHex(s.receipt);
    if (this.noted.has(k)) return;
    const r = this.receipts.get(k);
    this.expect(r !== undefined, 'the card applied a receipt the ledger never issued');
    if (!r) return;
    this.noted.add(k);
    this.loaded += r.loaded;
    for (const b of openSigned('SyncRequest', r.request).message.history) {
      const o = openSigned('Transfer', b);
      this.archive.set(toHex(payloadHash(o.cose)), o.message.amount);
    }
  }

  check(where: string): void {
    this.noteReceipt();
    const s = this.applet.committedState;
    const history = s.history.map((b) => {
      const o = openSigned('Transfer', b);
      return { hash: toHex(payloadHash(o.cose)), amount: o.message.amount, counter: o.message.counter, kid: toHex(o.message.card) };
    });
    const balance = sumAmounts(s.coins.map((c) => c.value));
    const paidOut = sumAmounts([...this.archive.values()]) + sumAmounts(history.map((h) => h.amount));
    this.expect(balance + paidOut === this.loaded, `${where}: value on card ${balance} + paid out ${paidOut} != loaded ${this.loaded}`);
    // Signatures present on the card will leave it (retry, sync): they count as released.
    for (const h of history) this.note(h.kid, h.counter, h.hash, `${where}, history`);
    const committed = new Set([...history.map((h) => h.hash), ...this.archive.keys()]);
    for (const r of this.releasedTransfers) {
      this.expect(committed.has(r.hash), `${where}: released transfer ${r.counter} is not in committed state`);
      this.expect(r.counter <= s.counter, `${where}: released counter ${r.counter} above the card's ${s.counter}`);
    }
    const applied = new Set([...this.noted].map((k) => toHex(payloadHash(openSigned('SyncRequest', this.receipts.get(k)!.request).cose))));
    for (const [hash, counter] of this.releasedSyncs) {
      const pending = s.pending ? toHex(payloadHash(openSigned('SyncRequest', s.pending).cose)) : '';
      this.expect(hash === pending || applied.has(hash), `${where}: released sync request ${counter} neither pending nor applied`);
    }
  }

  sw(r: { sw: number }, what: string): void {
    if (r.sw !== 0x9000) throw new Error(`${what}: SW ${r.sw.toString(16)}`);
  }

  async personalize(): Promise<void> {
    // Recovery as a personalization bureau does it: read the progress bits and
    // finish; before the certificate is written the key is simply generated again.
    await this.guard(
      'personalization',
      () => personalize(this.host, pki).then(() => undefined),
      async () => {
        const st = decodeFormat(CardStatusSchema, (await this.host.status()).data);
        if (st.locked) return;
        if ((st.personalized & Personalized.CERTIFICATES) === 0) {
          await personalize(this.host, pki);
          return;
        }
        const enc = (x: string) => new TextEncoder().encode(x);
        if ((st.personalized & Personalized.PIN) === 0) {
          this.sw(
            await this.host.cmd(
              INS.PERSONALIZE,
              PERSONALIZE_P1.SET_PIN,
              encodeFormat(SetPinSchema, { pin: enc(PIN), puk: enc(PUK) }),
              false,
            ),
            'set pin',
          );
        }
        if ((st.personalized & Personalized.CONFIG) === 0) {
          this.sw(
            await this.host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.SET_CONFIG, encodeFormat(SetConfigSchema, { floor: T0 - 100 }), false),
            'config',
          );
        }
        this.sw(await this.host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.LOCK, undefined, false), 'lock');
      },
    );
  }

  /** LOAD (or SYNC when amount is 0) with the host's recovery: BEGIN again (same pending request), COMPLETE again. */
  async syncOrLoad(amount: number, values?: number[]): Promise<void> {
    const isLoad = amount > 0;
    const label = isLoad ? 'LOAD' : 'SYNC';
    let lastRequest: number | undefined;
    const run = async () => {
      const begin = await this.host.syncBegin(this.rng(16), isLoad);
      this.sw(begin, `${label} begin`);
      const req = openSigned('SyncRequest', begin.data);
      this.note(toHex(req.message.card), req.message.counter, toHex(payloadHash(req.cose)), `${label} request`);
      this.releasedSyncs.set(toHex(payloadHash(req.cose)), req.message.counter);
      lastRequest = req.message.counter;
      // The ledger is idempotent: the same request gets the same receipt.
      let entry = [...this.receipts.values()].find((e) => toHex(e.request) === toHex(begin.data));
      if (!entry) {
        const receipt = ledger.receipt(begin.data, { loaded: amount, ...(values ? { values } : {}) });
        entry = { receipt, request: begin.data, loaded: amount };
        this.receipts.set(toHex(receipt), entry);
      }
      const done = await this.host.syncComplete(entry.receipt, isLoad);
      // 6985 after a cut: the receipt was applied before the power went.
      if (done.sw === 0x6985 && this.applet.committedState.receipt && toHex(this.applet.committedState.receipt) === toHex(entry.receipt))
        return;
      this.sw(done, `${label} complete`);
    };
    const recover = async () => {
      // Only COMPLETE clears a pending sync: no sync pending and a counter at
      // or past the request we were given means our receipt was applied.
      const st = decodeFormat(CardStatusSchema, (await this.host.status()).data);
      if (lastRequest && !st.syncPending && st.counter >= lastRequest) return;
      await run();
    };
    await this.guard(label, run, recover);
  }

  async pay(amount: number, terminal = pki.terminal, pin = false): Promise<void> {
    const first = this.rng(16);
    const attempt = async (nonce: Uint8Array, retryOf?: Uint8Array) => {
      this.storage.label = pin ? 'VERIFY PIN' : 'PAY';
      if (pin) this.sw(await this.host.verifyPin(PIN), 'verify pin');
      this.storage.label = 'PAY';
      const req = paymentRequest(pki, terminal, { amount, nonce, ...(retryOf ? { retryOf } : {}) });
      const r = await this.host.pay(req);
      this.sw(r, 'pay');
      const o = openSigned('Transfer', decodeMessage('Handover', r.data).transfer);
      const hash = toHex(payloadHash(o.cose));
      this.note(toHex(o.message.card), o.message.counter, hash, 'PAY');
      this.releasedTransfers.push({ kid: toHex(o.message.card), counter: o.message.counter, hash, amount: o.message.amount });
      const v = validateHandover(r.data, {
        trust,
        request: [
          openSigned('PaymentRequest', req).message,
          ...(retryOf ? [{ ...openSigned('PaymentRequest', req).message, nonce: retryOf }] : []),
        ],
      });
      this.expect(v.ok, `handover invalid: ${JSON.stringify(v.ok ? '' : v.code)}`);
    };
    // Torn tap: the terminal retries naming the interrupted nonce.
    await this.guard(
      pin ? 'PAY+PIN' : 'PAY',
      () => attempt(first),
      () => attempt(this.rng(16), first),
    );
  }

  /** A wrong PIN: the try is spent by a commit before the comparison, so no cut can give it back. */
  async wrongPin(): Promise<void> {
    const tries = async () => decodeFormat(CardStatusSchema, (await this.host.status()).data).pinTries;
    const before = await tries();
    await this.guard(
      'VERIFY PIN',
      async () => {
        const r = await this.host.verifyPin('0000');
        this.expect(r.sw === (0x63c0 | (before - 1)), `wrong PIN answered ${r.sw.toString(16)}`);
      },
      async () => {
        const after = await tries();
        this.expect(after === before || after === before - 1, `PIN tries ${after} after a cut, ${before} before`);
      },
    );
  }

  async life(): Promise<void> {
    await this.personalize();
    await this.syncOrLoad(100_000, [60_000, 30_000, 10_000]);
    await this.wrongPin();
    await this.pay(5_000);
    await this.pay(20_000, pki.terminal, true);
    await this.pay(3_000, pki.canteen);
    await this.syncOrLoad(0);
    await this.pay(1_000);
    await this.syncOrLoad(50_000);
    await this.pay(2_000);
  }
}

test('tearing: a power cut at every storage write of a card life, in every mode, keeps value, counters and signatures consistent', async (t) => {
  // Clean run: count and label the write points.
  const clean = new Life('clean', 0, 'before');
  await clean.life();
  t.deepEqual(clean.problems, []);
  const points = clean.storage.writes;
  const byOp = new Map<string, number>();
  for (const l of clean.storage.labels) byOp.set(l, (byOp.get(l) ?? 0) + 1);
  t.true(points >= 15, `a life has many writes (${points})`);

  const modes: Mode[] = ['before', 'torn', 'after'];
  let cuts = 0;
  const failures: string[] = [];
  for (let n = 1; n <= points; n++) {
    for (const mode of modes) {
      const life = new Life(`cut-${n}-${mode}`, n, mode);
      try {
        await life.life();
      } catch (e) {
        failures.push(`write ${n} (${clean.storage.labels[n - 1]}) ${mode}: ${(e as Error).message}`);
        continue;
      }
      if (!life.storage.fired) failures.push(`write ${n} ${mode}: the cut never fired`);
      cuts += life.cuts;
      // The card still works: one more payment after its whole life.
      await life.pay(500);
      for (const p of life.problems) failures.push(`write ${n} (${clean.storage.labels[n - 1]}) ${mode}: ${p}`);
    }
  }
  const summary = `tearing: ${points} write points x ${modes.length} modes = ${cuts} power cuts (${[...byOp].map(([k, v]) => `${k} ${v}`).join(', ')}), ${released.size} distinct signed counters checked`;
  t.log(summary);
  console.log(summary);
  t.deepEqual(failures, []);
  t.is(cuts, points * modes.length);
});
