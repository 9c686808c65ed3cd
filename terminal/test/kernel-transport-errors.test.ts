/**
 * How the kernel maps a failed exchange, by the error's type (the protocol's
 * `transportFailureOf`): a card removed, a broken link, a timeout or a reader
 * gone is a lost card (PRESENT CARD AGAIN; a PAY whose answer is lost leaves
 * the attempt torn, and the next tap recovers the one signed transfer); a
 * `TransportBusyError` or any untyped error is a bug: END INTERNAL_ERROR,
 * nothing approved, the PAY attempt kept torn in the journal. Real firmware
 * behind the in-process transport; the failure is injected at SELECT or PAY.
 */
import test from 'ava';
import {
  CardRemovedError,
  identifyCommand,
  isChainedBlock,
  ReaderUnavailableError,
  TransportBusyError,
  TransportLinkError,
  TransportTimeoutError,
  toHex,
  type ApduTransport,
} from '@dt/protocol';
import { PowerCutError } from '@dt/card-applet-sim';
import { PaymentKernel, type TapOutcome } from '../src/index.ts';
import { createDevPki, devTerminalIdentity, makeCard, makeJournal, readerFor, tempDir, TEST_POLICY } from './helpers/fixtures.ts';

const pki = createDevPki();
const identity = devTerminalIdentity(pki);

/** Forwards to `inner`, but the first `at` command (after the card ran it, for PAY) fails with `error()`. */
function failOnce(inner: ApduTransport, at: 'SELECT' | 'PAY', error: () => unknown): ApduTransport {
  let armed = true;
  return {
    async transmit(apdu, o) {
      const command = identifyCommand(apdu);
      if (armed && at === 'SELECT' && command === 'SELECT') {
        armed = false;
        throw error();
      }
      const r = await inner.transmit(apdu, o);
      if (armed && at === 'PAY' && command === 'PAY' && !isChainedBlock(apdu)) {
        armed = false;
        // The card signed and committed; its answer is replaced by the failure.
        throw error();
      }
      return r;
    },
  };
}

async function tap(t: { teardown: (f: () => void) => void }, at: 'SELECT' | 'PAY', error: () => unknown) {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const journal = makeJournal(pki, dir);
  t.teardown(() => journal.close());
  const kernel = new PaymentKernel({ identity, journal, policy: TEST_POLICY, timeouts: { cardMs: 2000, tapMs: 8000, pinMs: 2000 } });
  const card = await makeCard(pki);
  const reader = readerFor(failOnce(card.transport, at, error));
  const first = await kernel.charge(reader, 12_000);
  return { first, journal, kernel, reader };
}

const LOST: [string, () => unknown, string][] = [
  ['CardRemovedError', () => new CardRemovedError('card left the field of R', { reader: 'R' }), 'CARD_REMOVED'],
  ['TransportLinkError', () => new TransportLinkError('serial device did not answer frame 7 after 4 attempts'), 'TRANSPORT_LINK'],
  ['TransportTimeoutError', () => new TransportTimeoutError('no answer from R within 200 ms', 200), 'TRANSPORT_TIMEOUT'],
  ['ReaderUnavailableError', () => new ReaderUnavailableError('reader R unplugged'), 'READER_UNAVAILABLE'],
  ["the simulator's PowerCutError (a CardRemovedError)", () => new PowerCutError('after APDU 3'), 'CARD_REMOVED'],
];

for (const [name, error, code] of LOST) {
  test(`${name} at SELECT: a lost card, PRESENT_CARD_AGAIN NO_ANSWER (${code})`, async (t) => {
    const { first, journal } = await tap(t, 'SELECT', error);
    t.deepEqual(first, { kind: 'PRESENT_CARD_AGAIN', reason: 'NO_ANSWER', detail: code });
    t.is(journal.tornAttempts().length, 0, 'no PAY was sent');
  });

  test(`${name} for the PAY answer: a lost card, PRESENT_CARD_AGAIN with a torn attempt, and the next tap recovers it once`, async (t) => {
    const { first, journal, kernel, reader } = await tap(t, 'PAY', error);
    t.like(first, { kind: 'PRESENT_CARD_AGAIN', reason: 'NO_ANSWER', detail: code });
    t.is(journal.tornAttempts().length, 1);
    t.is((first as Extract<TapOutcome, { kind: 'PRESENT_CARD_AGAIN' }>).tornAttempt, toHex(journal.tornAttempts()[0]!.nonce));
    const again = await kernel.charge(reader, 12_000);
    t.like(again, { kind: 'APPROVED', recovered: true });
    t.is(journal.listPayments().length, 1);
  });
}

const BUGS: [string, () => unknown, string][] = [
  ['TransportBusyError (an exchange raced another)', () => new TransportBusyError('R'), 'READER_BUSY'],
  ['an untyped Error', () => new Error('undefined is not a function'), 'Error'],
  ['a TypeError', () => new TypeError("Cannot read properties of undefined (reading 'length')"), 'TypeError'],
];

for (const [name, error, detail] of BUGS) {
  test(`${name} at SELECT: a bug, END INTERNAL_ERROR (not a lost card)`, async (t) => {
    const { first, journal } = await tap(t, 'SELECT', error);
    t.deepEqual(first, { kind: 'END', reason: 'INTERNAL_ERROR', detail });
    t.is(journal.listPayments().length, 0);
  });

  test(`${name} for the PAY answer: END INTERNAL_ERROR, nothing approved, the attempt kept torn in the journal`, async (t) => {
    const { first, journal, kernel, reader } = await tap(t, 'PAY', error);
    t.deepEqual(first, { kind: 'END', reason: 'INTERNAL_ERROR', detail });
    t.is(journal.listPayments().length, 0, 'nothing approved');
    t.is(journal.tornAttempts().length, 1, 'the card may have signed: the attempt is journalled torn');
    // The card did sign: the next tap names the torn attempt and records the transfer once.
    t.like(await kernel.charge(reader, 12_000), { kind: 'APPROVED', recovered: true });
    t.is(journal.listPayments().length, 1);
  });
}
