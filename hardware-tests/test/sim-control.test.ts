/**
 * The lab's in-process card control (`test/helpers/robustness-lab.ts` `SimControl`) answers `status` as the
 * control channel's client does, an unreadable card included.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { CardControlError, UNREADABLE_CARD_STATE } from '@dt/card-applet-sim';
import { SimControl, type SimReader } from './helpers/robustness-lab.ts';

test('SimControl.status: a card whose storage holds random bytes (it answers 6F00) rejects with CARD_UNREADABLE, as the control client does', async (t) => {
  const reader = { present: true } as unknown as SimReader;
  const control = new SimControl(
    reader,
    () =>
      new Map([
        [0, new Uint8Array(randomBytes(400))],
        [1, new Uint8Array(randomBytes(400))],
      ]),
  );
  const e = await t.throwsAsync(control.status(), { instanceOf: CardControlError });
  t.is(e?.code, 'CARD_UNREADABLE');
  t.is(e?.message, UNREADABLE_CARD_STATE);
});

test('SimControl.status: a blank card (empty storage) is read, not refused', async (t) => {
  const control = new SimControl({ present: false } as unknown as SimReader, () => new Map());
  const s = await control.status();
  t.false(s.personalized);
  t.false(s.inReader);
});
