/**
 * The committed vectors are exactly what the generator produces from the
 * current code: byte-identical JSON, and no file more or less. A change to an
 * encoding, a schema or a signature rule therefore shows up here until the
 * vectors are regenerated (`npm run vectors -w protocol`) and reviewed.
 */
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { generateVectors } from '../scripts/gen-vectors.ts';
import { VECTORS_DIR } from '../scripts/vectors-lib.ts';

const generated = generateVectors();

test('the generator writes one file per message type plus cbor-invalid.json', (t) => {
  t.deepEqual([...generated.keys()].sort(), [
    'adjustment.json',
    'batch.json',
    'cbor-invalid.json',
    'certificate.json',
    'handover.json',
    'outcome.json',
    'payment-request.json',
    'revocation-list.json',
    'sync-receipt.json',
    'sync-request.json',
    'token.json',
    'transfer.json',
  ]);
});

test('committed vector files are the generated ones, byte for byte', (t) => {
  const committed = readdirSync(VECTORS_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort();
  t.deepEqual(committed, [...generated.keys()].sort(), 'vectors/ holds exactly the generated files');
  for (const [file, text] of generated) {
    const onDisk = readFileSync(join(VECTORS_DIR, file), 'utf8');
    t.true(onDisk === text, `${file} differs from the generator output: run \`npm run vectors -w protocol\``);
  }
});

test('the generator is deterministic (two runs give the same bytes)', (t) => {
  const again = generateVectors();
  for (const [file, text] of generated) t.is(again.get(file), text, file);
});

test('vectors/README.md documents the format', (t) => {
  const readme = readFileSync(join(VECTORS_DIR, 'README.md'), 'utf8');
  for (const word of ['decodeCbor', 'verifySigned', 'verifyChain', 'verifyRoot', 'sigStructure', 'privateKey', 'CBOR_DUPLICATE_KEY']) {
    t.true(readme.includes(word), `README mentions ${word}`);
  }
});
