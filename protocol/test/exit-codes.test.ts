/** The exit-code helpers every CLI builds its `ExitCode` names and `--help` block with (src/exit-codes.ts). */
import test from 'ava';

import { USAGE_EXIT_MEANING, exitCodesByName, exitCodesHelp } from '../src/index.ts';

const TABLE = [
  { code: 0, name: 'OK', meaning: 'success' },
  { code: 2, name: 'USAGE', meaning: USAGE_EXIT_MEANING },
  { code: 130, name: 'INTERRUPTED', meaning: 'interrupted' },
] as const;

test('exitCodesByName gives each row its code under its name, and cannot be changed', (t) => {
  const ExitCode = exitCodesByName(TABLE);
  t.deepEqual({ ...ExitCode }, { OK: 0, USAGE: 2, INTERRUPTED: 130 });
  const usage: 2 = ExitCode.USAGE; // the literal type of the row's code
  t.is(usage, 2);
  t.throws(() => {
    (ExitCode as unknown as Record<string, number>)['OK'] = 1;
  });
});

test('exitCodesHelp prints one line a row, the code padded to three columns', (t) => {
  t.is(exitCodesHelp(TABLE), `Exit codes:\n  0   success\n  2   ${USAGE_EXIT_MEANING}\n  130 interrupted`);
});
