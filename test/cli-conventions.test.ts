/**
 * The command-line conventions every CLI of the toolkit shares, checked on
 * the real processes:
 *
 * - one exit-code table: each command's `--help` prints its "Exit codes:"
 *   rows, and they are exactly that command's rows of the root README's
 *   table (README.md "Exit codes"); 0-3 mean the same everywhere;
 * - a bad option is a usage error: exit 2, with a message;
 * - a reader that closes the pipe early (`--help | head -1`) is no error: exit 0, no
 *   EPIPE trace; every launcher takes that guard from `@dt/protocol/cli`;
 * - `npx dt-…` from directories nested inside the repository runs this
 *   checkout's command, with the npm registry unreachable (so nothing was
 *   fetched), and a name that is not installed is refused, never downloaded.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Each command as a user runs it: its launcher, and the README name. */
const COMMANDS: { name: string; argv: string[] }[] = [
  { name: 'dt-pos', argv: [join(ROOT, 'terminal/bin/dt-pos.js')] },
  { name: 'dt-card', argv: [join(ROOT, 'card-applet-sim/bin/dt-card.js')] },
  { name: 'dt-ledger', argv: [join(ROOT, 'ledger/bin/dt-ledger.js')] },
  { name: 'dt-acquirer', argv: [join(ROOT, 'acquirer/bin/dt-acquirer.js')] },
  { name: 'dt-bank', argv: [join(ROOT, 'bank/bin/dt-bank.js')] },
  { name: 'dt-wallet', argv: [join(ROOT, 'bank/bin/dt-wallet.js')] },
  { name: 'dt-lab', argv: [join(ROOT, 'hardware-tests/bin/dt-lab.js')] },
  { name: 'npm run demo', argv: ['--conditions=dt-source', '--import', 'tsx', join(ROOT, 'scripts/story.ts')] },
];

interface Done {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Done> {
  return new Promise((done, fail) => {
    const p = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', fail);
    p.on('close', (code) => done({ code, stdout, stderr }));
  });
}

/** The "Exit codes:" rows of a help text: code and meaning. */
function helpRows(help: string): [number, string][] {
  const at = help.indexOf('\nExit codes:\n');
  if (at < 0) return [];
  const rows: [number, string][] = [];
  for (const line of help.slice(at + '\nExit codes:\n'.length).split('\n')) {
    const m = /^ {2}(\d+) +(\S.*)$/.exec(line);
    if (!m) break;
    rows.push([Number(m[1]), m[2]!]);
  }
  return rows;
}

/** The README table's rows per command. */
function readmeRows(): Map<string, [number, string][]> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = /\n## Exit codes\n([\s\S]*?)\n## /.exec(readme)?.[1] ?? '';
  const out = new Map<string, [number, string][]>();
  for (const line of section.split('\n')) {
    const m = /^\| `([^`]+)` \| (\d+) \| (.+) \|$/.exec(line);
    if (!m) continue;
    out.set(m[1]!, [...(out.get(m[1]!) ?? []), [Number(m[2]), m[3]!]]);
  }
  return out;
}

const SHARED: Record<number, RegExp> = { 0: /./, 1: /^refused: /, 2: /^usage: /, 3: /^(offline|unreachable): / };

for (const c of COMMANDS) {
  test(`${c.name}: --help lists the exit codes of the README table, word for word; a bad option exits 2 with a message`, async (t) => {
    const help = await run(process.execPath, [...c.argv, '--help']);
    t.is(help.code, 0, help.stderr);
    const rows = helpRows(help.stdout);
    t.true(rows.length >= 3, `${c.name} --help has an "Exit codes:" table:\n${help.stdout}`);
    t.deepEqual(rows, readmeRows().get(c.name), `${c.name}: --help and README.md's exit-code table differ`);
    t.deepEqual(
      rows.map(([code]) => code),
      [...rows.map(([code]) => code)].sort((a, b) => a - b),
      'in code order',
    );
    for (const [code, meaning] of rows)
      if (code in SHARED) t.regex(meaning, SHARED[code]!, `${c.name} code ${code} keeps the shared meaning`);
    t.true(rows.some(([code]) => code === 0) && rows.some(([code]) => code === 2));
    const bad = await run(process.execPath, [...c.argv, '--no-such-option']);
    t.is(bad.code, 2, `${c.name} --no-such-option: ${bad.stdout}${bad.stderr}`);
    t.regex(bad.stderr, /unknown option/);
  });
}

for (const c of COMMANDS) {
  test(`${c.name} --help into a pipe its reader has already closed (\`| head -1\`): exit 0, no EPIPE trace`, async (t) => {
    const r = await new Promise<{ code: number | null; stderr: string }>((done, fail) => {
      const p = spawn(process.execPath, [...c.argv, '--help'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      // Closed before the command (which takes a while to start) writes anything: its writes get EPIPE.
      p.stdout.destroy();
      let stderr = '';
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.on('error', fail);
      p.on('close', (code) => done({ code, stderr }));
    });
    t.is(r.code, 0, r.stderr);
    t.notRegex(r.stderr, /EPIPE|Error/);
  });
}

test('every command takes its closed-pipe guard from @dt/protocol/cli, the one implementation: its launcher calls ignoreClosedPipes and handles no EPIPE itself', (t) => {
  for (const c of COMMANDS) {
    const launcher = c.argv.find((a) => a.startsWith(ROOT))!;
    const text = readFileSync(launcher, 'utf8');
    t.regex(text, /['"]@dt\/protocol\/cli['"]/, `${c.name}: ${launcher}`);
    t.regex(text, /\bignoreClosedPipes\(\)/, `${c.name}: ${launcher}`);
    t.notRegex(text, /EPIPE/, `${c.name}: ${launcher} repeats the guard`);
  }
});

test('the README table has no command that does not exist', (t) => {
  t.deepEqual(
    [...readmeRows().keys()],
    COMMANDS.map((c) => c.name),
  );
});

test('npx dt-… from nested directories inside the repository runs this checkout (registry unreachable); a name not installed is refused, not fetched', async (t) => {
  // Any registry request fails at once: what runs must come from the repository.
  const env = { npm_config_registry: 'http://127.0.0.1:9/', npm_config_fetch_retries: '0', npm_config_offline: 'true', CI: 'true' };
  for (const dir of ['terminal/src/cli', 'docs', 'hardware-tests/test/helpers', 'protocol']) {
    for (const name of ['dt-pos', 'dt-card', 'dt-ledger', 'dt-acquirer', 'dt-bank', 'dt-wallet', 'dt-lab']) {
      const r = await run('npx', [name, '--help'], { cwd: join(ROOT, dir), env });
      t.is(r.code, 0, `npx ${name} in ${dir}: ${r.stderr}`);
      t.regex(r.stdout, new RegExp(`^Usage: ${name} `, 'm'), `npx ${name} in ${dir}`);
      t.regex(r.stdout, /\nExit codes:\n/);
    }
  }
  // .npmrc yes=false: npx stops instead of installing a package that is not here (even with CI=true).
  const missing = await run('npx', ['dt-no-such-command', '--help'], { cwd: join(ROOT, 'docs'), env });
  t.not(missing.code, 0);
  t.notRegex(missing.stdout, /Usage:/);
  t.regex(readFileSync(join(ROOT, '.npmrc'), 'utf8'), /^yes=false$/m);
});
