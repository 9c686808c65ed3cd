import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { signMessage } from '@dt/protocol';
import { openDataDir } from '../src/cli.ts';
import { Ledger } from '../src/ledger.ts';
import { buildLedgerApp } from '../src/server.ts';
import { openSqliteStorage } from '../src/storage/sqlite.ts';
import { nativeSigner } from '../src/native-signer.ts';
import { issueTerminal } from '../src/pki.ts';
import { signSettle } from '../src/testkit.ts';

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

test('dt-ledger bank-add writes the acquirer of an acquiring bank; acquirer-add; acquirer-block and acquirer-unblock take effect on the same database', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-ledger-cli-'));
  const data = join(dir, 'd');
  try {
    t.is(run('init', '-d', data).status, 0);
    const added = run('bank-add', '-d', data, '--name', 'acq', '--perms', 'acquiring', '--json');
    t.is(added.status, 0, added.stderr);
    const { acquirerKid } = JSON.parse(added.stdout) as { acquirerKid: string };
    t.regex(acquirerKid, /^[0-9a-f]{32}$/);
    t.is(statSync(join(data, 'acquirers', 'acq.key.json')).mode & 0o777, 0o600);
    const key = JSON.parse(readFileSync(join(data, 'acquirers', 'acq.key.json'), 'utf8')) as { secretKey: string };
    t.false(added.stdout.includes(key.secretKey), 'bank-add never prints a private key');
    // An issuing-only bank gets no acquirer, and cannot certify one.
    t.is(run('bank-add', '-d', data, '--name', 'iss', '--perms', 'issuing').status, 0);
    t.false(existsSync(join(data, 'acquirers', 'iss.key.json')));
    t.not(run('acquirer-add', '-d', data, '--bank', 'iss', '--name', 'x').status, 0);
    const second = run('acquirer-add', '-d', data, '--bank', 'acq', '--name', 'acq-2', '--json');
    t.is(second.status, 0, second.stderr);
    t.not(run('acquirer-add', '-d', data, '--bank', 'acq', '--name', 'acq-2').status, 0, 'an existing acquirer is not overwritten');

    // The data directory's acquirer signs settle requests the ledger on that database accepts, until it is blocked.
    const d = openDataDir(data);
    const acquirer = d.acquirer('acq');
    t.is(Buffer.from(acquirer.kid).toString('hex'), acquirerKid);
    const ask = async () => {
      const ledger = await Ledger.open({ storage: openSqliteStorage(join(data, 'ledger.db')), signer: nativeSigner(d.ledger.keys), rootCert: d.issuer.cert, ledgerCert: d.ledger.cert });
      const app = buildLedgerApp(ledger);
      try {
        // An empty-handed batch list is not allowed; a batch of the bank's terminal with no handover is.
        const bank = d.bank('acq');
        const now = Math.floor(Date.now() / 1000);
        const term = issueTerminal(bank, { validity: { nbf: now - 60, exp: now + 3600 }, merchant: { id: 'm', mcc: 5411, name: 'm' } });
        const batch = signMessage('Batch', { terminal: term.kid, seq: 1, time: now, chain: [...term.chain], handovers: [], crlVersion: 0 }, term.signer);
        const r = await app.inject({ method: 'POST', url: '/v1/settle', headers: { 'content-type': 'application/cose' }, payload: Buffer.from(signSettle(acquirer, [batch], { time: now })) });
        return { status: r.statusCode, code: r.statusCode === 200 ? undefined : (r.json() as { code: string }).code };
      } finally {
        await app.close();
        await ledger.storage.close();
      }
    };
    t.deepEqual(await ask(), { status: 200, code: undefined });
    const blocked = run('acquirer-block', '-d', data, '--kid', acquirerKid, '--reason', 'key on a stolen laptop', '--json');
    t.is(blocked.status, 0, blocked.stderr);
    t.like(JSON.parse(blocked.stdout), { kid: acquirerKid, blocked: true, changed: true });
    t.like(JSON.parse(run('acquirer-block', '-d', data, '--kid', acquirerKid, '--json').stdout), { changed: false });
    t.deepEqual(await ask(), { status: 403, code: 'ACQUIRER_UNKNOWN' });
    t.is(run('acquirer-unblock', '-d', data, '--kid', acquirerKid).status, 0);
    t.deepEqual(await ask(), { status: 200, code: undefined });
    t.not(run('acquirer-block', '-d', data, '--kid', 'not-hex').status, 0);
    const help = execFileSync(process.execPath, [BIN, '--help']).toString();
    for (const c of ['acquirer-add', 'acquirer-block', 'acquirer-unblock']) t.regex(help, new RegExp(`^  ${c} `, 'm'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
