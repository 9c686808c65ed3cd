import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';

const BIN = fileURLToPath(new URL('../bin/dt-ledger.js', import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });

test('dt-ledger init, bank-add, audit: keys stay private, audit fails (exit 1) when the books do not balance', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-ledger-cli-'));
  const data = join(dir, 'd');
  try {
    const init = run('init', '-d', data, '--json');
    t.is(init.status, 0, init.stderr);
    const keys = JSON.parse(readFileSync(join(data, 'ledger.key.json'), 'utf8')) as { secretKey: string };
    t.false(init.stdout.includes(keys.secretKey), 'init never prints a private key');
    t.is(statSync(join(data, 'issuer.key.json')).mode & 0o777, 0o600);
    t.not(run('init', '-d', data).status, 0, 'init refuses an initialized directory');
    t.is(run('bank-add', '-d', data, '--name', 'b1', '--allocate', '5000').status, 0);
    const ok = run('audit', '-d', data, '--json');
    t.is(ok.status, 0);
    t.like(JSON.parse(ok.stdout), { ok: true, issued: 5000, bankBalances: 5000, difference: 0 });
    // Value created out of thin air: the audit must catch it.
    const db = new Database(join(data, 'ledger.db'));
    db.prepare(`UPDATE banks SET balance = balance + 1`).run();
    db.close();
    const bad = run('audit', '-d', data, '--json');
    t.is(bad.status, 1);
    t.like(JSON.parse(bad.stdout), { ok: false, difference: -1 });
    t.regex(run('audit', '-d', data).stdout, /supply invariant: FAILED/);
    const help = execFileSync(process.execPath, [BIN, '--help']).toString();
    for (const c of ['init', 'bank-add', 'allocate', 'serve', 'audit']) t.regex(help, new RegExp(`^  ${c} `, 'm'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
