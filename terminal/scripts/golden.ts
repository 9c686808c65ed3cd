/**
 * Regenerates the golden APDU transcripts of `test/golden/` from the real
 * firmware (see `test/helpers/golden.ts`): `npm run golden -w terminal`.
 * Writes one `<scenario>.apdu` per scenario and checks that each recorded
 * tap ended as the scenario expects, so a file is never written from a
 * session that went otherwise.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { GOLDEN_SCENARIOS, recordGolden } from '../test/helpers/golden.ts';

const dir = fileURLToPath(new URL('../test/golden/', import.meta.url));
for (const scenario of GOLDEN_SCENARIOS) {
  const { text, outcomes } = await recordGolden(scenario);
  scenario.expect.forEach((want, i) => {
    const got = outcomes[i];
    const reason = got && 'reason' in got ? got.reason : undefined;
    if (got?.kind !== want.kind || (want.reason !== undefined && reason !== want.reason)) {
      throw new Error(`${scenario.name}: tap ${i} ended ${got?.kind}/${String(reason)}, expected ${want.kind}/${want.reason ?? ''}`);
    }
  });
  writeFileSync(`${dir}${scenario.name}.apdu`, text);
  process.stdout.write(`${scenario.name}.apdu: ${text.split('\n').filter((l) => l.startsWith('=>')).length} exchanges\n`);
}
