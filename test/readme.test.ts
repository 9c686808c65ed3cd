/**
 * The README's two commands are the contract with a new user: the first runs
 * the main job, the second every test, and `.ci/run` runs exactly the second.
 * The main job itself (the story) is run by story.test.ts; this file runs the
 * protocol walkthrough (`npm run walkthrough`).
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const run = promisify(execFile);

function readmeCommands(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  // The first fenced shell block of the README holds the two commands.
  const block = /```(?:sh|bash|shell)\n([\s\S]*?)```/.exec(readme);
  if (!block) throw new Error('README.md has no shell code block');
  return block[1]!
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

test('README starts with exactly two commands: main job, then tests', (t) => {
  const commands = readmeCommands();
  t.is(commands.length, 2);
  t.regex(commands[0]!, /npm run demo/);
  t.regex(commands[1]!, /npm test/);
});

test('.ci/run runs the README test command', (t) => {
  const ci = readFileSync(join(ROOT, '.ci/run'), 'utf8');
  const lines = ci
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  t.true(lines.includes(readmeCommands()[1]!), '.ci/run must contain the README test command verbatim');
  t.true(lines.includes('export CI=true'));
});

test('every workspace package has a README section', (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { workspaces: string[] };
  for (const ws of pkg.workspaces) t.regex(readme, new RegExp(`^##+ .*\`${ws}/\``, 'm'), `README section for ${ws}/`);
});

test('the protocol walkthrough runs the protocol for real and rejects a tampered transfer', async (t) => {
  const { stdout } = await run(
    process.execPath,
    ['--conditions=dt-source', '--import', 'tsx', 'scripts/demo.ts', '--json', '--amount', '7000'],
    { cwd: ROOT },
  );
  const out = JSON.parse(stdout) as { steps: { step: string; detail: string }[]; transfer: { hex: string; diagnostic: string } };
  t.true(out.steps.some((s) => s.step.startsWith('Terminal verified') && s.detail.includes('10000 = 7000 + 3000')));
  t.true(out.steps.some((s) => s.step.startsWith('A tampered transfer') && s.detail.includes('BAD_SIGNATURE')));
  // The amount above the card's CVM limit (5000) is signed with cvm = OFFLINE_PIN (1): key 13.
  t.regex(out.transfer.diagnostic, /13: 1\b/);
  t.regex(out.transfer.diagnostic, /^18\(\[/);
});

test('the protocol walkthrough refuses bad input with a clear message and exit code 2', async (t) => {
  const err = await t.throwsAsync(
    run(process.execPath, ['--conditions=dt-source', '--import', 'tsx', 'scripts/demo.ts', '--amount', 'lots'], { cwd: ROOT }),
  );
  const e = err as unknown as { code: number; stderr: string };
  t.is(e.code, 2);
  t.regex(e.stderr, /--amount must be an integer/);
});

test('the README main job (npm run demo) is the end-to-end story that story.test.ts runs', (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  t.is(pkg.scripts['demo'], 'node --conditions=dt-source --import tsx scripts/story.ts');
  t.is(pkg.scripts['walkthrough'], 'node --conditions=dt-source --import tsx scripts/demo.ts');
});
