/**
 * The bank load order's schema (src/load.ts) against its CDDL in SPEC.md §7.6.1: the same keys,
 * names and optionality (the protocol's CDDL test covers the protocol's own schemas, not the
 * ledger's), and a marked order round trips with its mark while a bad mark is refused.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { coseSign1, type CborValue, encodeDeterministic, isDtError, keyPairSigner, generateKeyPair } from '@dt/protocol';
import { LOAD_CONTENT_TYPE, LoadOrderSchema, openLoadOrder, signLoadOrder } from '../src/load.ts';

const SPEC = readFileSync(fileURLToPath(new URL('../../protocol/SPEC.md', import.meta.url)), 'utf8');

test('SPEC.md §7.6.1 gives the CDDL of LoadOrder exactly (keys, names, optionality)', (t) => {
  const rule = /```cddl\nLoadOrder = \{\n([\s\S]*?)\n\}/.exec(SPEC);
  t.truthy(rule, 'SPEC.md has the LoadOrder rule');
  const members = rule![1]!.split('\n').map((line) => {
    const m = /^\s*(\?\s+)?(\d+)\s*=>\s*(.+?),\s*;\s*([A-Za-z]\w*)/.exec(line);
    if (!m) throw new Error(`unparsed CDDL member line: ${line}`);
    return { optional: m[1] !== undefined, key: Number(m[2]), name: m[4]!, mark: m[3] === 'Mark' };
  });
  t.deepEqual(
    members,
    (LoadOrderSchema.fields as readonly { key: number; name: string; optional?: boolean }[]).map((f) => ({
      optional: f.optional === true,
      key: f.key,
      name: f.name,
      mark: f.name === 'mark',
    })),
  );
});

test('a marked load order round trips with its mark; an unmarked one has none; a malformed mark is refused', (t) => {
  const bank = keyPairSigner(generateKeyPair((n) => new Uint8Array(randomBytes(n))));
  const base = { card: new Uint8Array(randomBytes(16)), amount: 500, id: new Uint8Array(randomBytes(16)), time: 1_800_000_000 };
  const mark = { merchants: ['pharmacy'], mccs: [5912], hops: 2 };
  t.deepEqual(openLoadOrder(signLoadOrder({ ...base, mark }, bank)).order.mark, mark);
  t.false('mark' in openLoadOrder(signLoadOrder(base, bank)).order);
  // key 5 holding a Mark with an unknown key: the payload is not a LoadOrder.
  const bad = encodeDeterministic(
    new Map<number, CborValue>([
      [0, 1],
      [1, base.card],
      [2, 500],
      [3, base.id],
      [4, base.time],
      [
        5,
        new Map([
          [3, 1],
          [9, 1],
        ]),
      ],
    ]),
  );
  const e = t.throws(() => openLoadOrder(coseSign1(bad, LOAD_CONTENT_TYPE, bank)), { message: /unknown map key/ });
  t.true(isDtError(e));
});
