/**
 * The `dt-pos` command, run as a real process (bin/dt-pos.js): --help covers
 * every command and the exit codes; init --dev self-provisions against a dev
 * PKI on disk; sync, charge on a serial wallet (socat pty), receipt, report
 * and status, with their JSON output and exit codes.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createDevPki, openTty, saveDevPki, SerialCardEndpoint } from '@dt/card-applet-sim';
import { issueCertificate, openSigned, Role, toHex, CURRENCY_KZT } from '@dt/protocol';
import { issueLedgerCert } from '@dt/ledger';
import { formatAmount, parseAmount } from '../src/cli/main.ts';
import { loadTerminalKey, TerminalError } from '../src/index.ts';
import { tempDir } from './helpers/fixtures.ts';
import { startWorld, worldCard } from './helpers/world.ts';

const BIN = fileURLToPath(new URL('../bin/dt-pos.js', import.meta.url));

function dtPos(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

test('amount parsing and formatting', (t) => {
  t.is(parseAmount('150'), 15000);
  t.is(parseAmount('150.5'), 15050);
  t.is(parseAmount('0.01'), 1);
  t.throws(() => parseAmount('1.234'));
  t.throws(() => parseAmount('-1'));
  t.throws(() => parseAmount('0'));
  t.is(formatAmount(15050), '150.50 KZT');
});

test('--help documents every command and the exit codes; a bad option is a usage error (2)', async (t) => {
  const h = await dtPos(['--help']);
  t.is(h.code, 0);
  for (const c of ['init', 'install-cert', 'charge', 'status', 'sync', 'report', 'receipt', 'readers'])
    t.regex(h.stdout, new RegExp(`\\n  ${c}\\b`));
  t.regex(h.stdout, /Exit codes:/);
  for (const c of ['charge', 'init', 'sync']) {
    const r = await dtPos([c, '--help']);
    t.is(r.code, 0);
    t.regex(r.stdout, /Usage: dt-pos/);
  }
  t.is((await dtPos(['charge'])).code, 2);
  t.is((await dtPos(['frobnicate'])).code, 2);
});

test('init --dev, sync, charge on a serial wallet, receipt, report, status, and sync to settlement', async (t) => {
  const { dir, cleanup } = tempDir('dt-pos-cli-');
  const procs: ChildProcess[] = [];
  const w = await startWorld(dir);
  t.teardown(async () => {
    for (const p of procs) p.kill('SIGTERM');
    await w.close();
    cleanup();
  });
  // The dev PKI on disk (dt-dev-pki v1, the format card-applet-sim's saveDevPki writes).
  const pkiDir = join(dir, 'pki');
  mkdirSync(pkiDir);
  const pki = w.tl.pki;
  const party = (p: { keys: { secretKey: Uint8Array }; cert: Uint8Array }) => ({ secretKey: toHex(p.keys.secretKey), cert: toHex(p.cert) });
  writeFileSync(
    join(pkiDir, 'dev-pki.json'),
    JSON.stringify({ format: 'dt-dev-pki', version: 1, issuer: party(pki.issuer), ledger: party(pki.ledger), bank: party(pki.bank) }),
  );
  const data = join(dir, 'pos');
  const D = ['--data-dir', data];

  const init = await dtPos([
    ...D,
    '--json',
    'init',
    '--merchant-id',
    'cli-shop',
    '--mcc',
    '5411',
    '--name',
    'CLI Shop',
    '--dev',
    pkiDir,
    '--acquirer',
    w.acquirer.url,
  ]);
  t.is(init.code, 0, init.stderr);
  const ij = JSON.parse(init.stdout) as { initialized: boolean; terminal: string };
  t.true(ij.initialized);
  t.is(statSync(join(data, 'terminal.key')).mode & 0o777, 0o600, 'terminal key readable by its owner only');
  t.true(existsSync(join(data, 'certificate-request.cbor')));
  t.false(init.stdout.includes('secretKey'), 'no key material in the output');

  // No revocation list yet: offline acceptance is stopped; sync fetches one.
  const st0 = JSON.parse((await dtPos([...D, '--json', 'status'])).stdout) as { offlineAcceptance: string };
  t.regex(st0.offlineAcceptance, /stopped \(NO_REVOCATION_LIST\)/);
  const s1 = await dtPos([...D, '--json', 'sync']);
  t.is(s1.code, 0, s1.stdout + s1.stderr);

  // A firmware card on a serial line (socat pty pair).
  const a = join(dir, 'pty-card');
  const b = join(dir, 'pty-pos');
  procs.push(spawn('socat', [`pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: 'ignore' }));
  for (let i = 0; i < 100 && !(existsSync(a) && existsSync(b)); i++) await new Promise((r) => setTimeout(r, 50));
  const card = await worldCard(w, 5_000_000);
  const link = openTty(a);
  const ep = new SerialCardEndpoint(card.card, link);
  t.teardown(() => {
    ep.stop();
    link.close();
  });

  const c1 = await dtPos([...D, '--json', 'charge', '150.50', '--reader', `serial:${b}`]);
  t.is(c1.code, 0, c1.stdout + c1.stderr);
  const cj = JSON.parse(c1.stdout) as { outcome: string; payment: { id: number; amount: number; state: string } };
  t.is(cj.outcome, 'APPROVED');
  t.is(cj.payment.amount, 15050);
  t.is(cj.payment.state, 'pending');

  // A serial path that does not exist: END (4), the path and the reason each said once.
  const gone = join(dir, 'no-such-port');
  const missing = await dtPos([...D, 'charge', '20', '--reader', `serial:${gone}`]);
  t.is(missing.code, 4, missing.stdout + missing.stderr);
  t.is(missing.stderr.trim(), `dt-pos: READER_UNAVAILABLE: cannot open ${gone}: No such file or directory`);

  const human = await dtPos([...D, 'charge', '20', '--reader', `serial:${b}`]);
  t.is(human.code, 0);
  t.regex(human.stdout, /^APPROVED 20\.00 KZT {2}receipt #2/);
  t.regex(human.stderr, /present card/);

  // Above the default floor limit (50 000 KZT): ONLINE REQUIRED, exit 3.
  const big = await dtPos([...D, '--json', 'charge', '60000', '--reader', `serial:${b}`]);
  t.is(big.code, 3);
  t.is((JSON.parse(big.stdout) as { outcome: string }).outcome, 'ONLINE_REQUIRED');

  const rc = await dtPos([...D, 'receipt', String(cj.payment.id)]);
  t.is(rc.code, 0);
  t.regex(rc.stdout, /Receipt #1 {2}CLI Shop/);
  t.regex(rc.stdout, /150\.50 KZT/);
  t.is((await dtPos([...D, 'receipt', '999'])).code, 2);

  const st = JSON.parse((await dtPos([...D, '--json', 'status'])).stdout) as { pending: { amount: number; count: number; since: number } };
  t.is(st.pending.amount, 17050);
  t.is(st.pending.count, 2);

  // Acquirer unreachable: exit 3 and the pending amount is reported.
  const off = await dtPos([...D, '--json', 'sync', '--acquirer', 'http://127.0.0.1:9']);
  t.is(off.code, 3);
  t.is((JSON.parse(off.stdout) as { pending: { amount: number } }).pending.amount, 17050);

  t.is((await dtPos([...D, 'sync'])).code, 0);
  await w.acquirer.forwardNow();
  t.is((await dtPos([...D, 'sync'])).code, 0);
  const rep = JSON.parse((await dtPos([...D, '--json', 'report'])).stdout) as {
    byState: Record<string, { count: number; amount: number }>;
    byDay: { day: string }[];
  };
  t.deepEqual(rep.byState.settled, { count: 2, amount: 17050 });
  t.is(rep.byDay[0]!.day, new Date().toISOString().slice(0, 10));
  const humanReport = await dtPos([...D, 'report']);
  t.regex(humanReport.stdout, /settled\s+2\s+170\.50 KZT/);
});

test('readers lists what it finds and never fails without hardware', async (t) => {
  const r = await dtPos(['--json', 'readers', '--wait', '1'], { PCSCLITE_CSOCK_NAME: '/nonexistent/pcscd.comm' });
  t.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { pcsc: unknown[]; hid: unknown[]; serial: unknown[] };
  t.true(Array.isArray(j.pcsc) && Array.isArray(j.hid) && Array.isArray(j.serial));
});

test('install-cert is atomic: a missing file is a usage error (2) and a chain that does not verify is refused (5), both leaving the working identity as it was; a good answer installs', async (t) => {
  const { dir, cleanup } = tempDir('dt-pos-install-');
  const w = await startWorld(dir);
  t.teardown(async () => {
    await w.close();
    cleanup();
  });
  const pki = w.tl.pki;
  const party = (p: { keys: { secretKey: Uint8Array }; cert: Uint8Array }) => ({ secretKey: toHex(p.keys.secretKey), cert: toHex(p.cert) });
  const pkiDir = join(dir, 'pki');
  mkdirSync(pkiDir);
  writeFileSync(
    join(pkiDir, 'dev-pki.json'),
    JSON.stringify({ format: 'dt-dev-pki', version: 1, issuer: party(pki.issuer), ledger: party(pki.ledger), bank: party(pki.bank) }),
  );
  const data = join(dir, 'pos');
  const D = ['--data-dir', data];
  t.is(
    (await dtPos([...D, 'init', '--merchant-id', 'm1', '--mcc', '5411', '--name', 'M1', '--dev', pkiDir, '--acquirer', w.acquirer.url]))
      .code,
    0,
  );
  const identityFile = join(data, 'identity.json');
  const working = readFileSync(identityFile, 'utf8');
  const files = () => readdirSync(data).sort();
  const before = files();

  // The certificates on disk, as a bank would hand them over.
  const certs = join(dir, 'certs');
  mkdirSync(certs);
  const kp = loadTerminalKey(data);
  const now = Math.floor(Date.now() / 1000);
  const termCert = issueCertificate(
    {
      iss: openSigned('Certificate', pki.bank.cert).message.sub,
      sub: 'terminal-m1',
      iat: now,
      nbf: now - 60,
      exp: now + 86_400,
      role: Role.TERMINAL,
      merchant: { id: 'm1', mcc: 5411, name: 'M1 renamed' },
      currency: CURRENCY_KZT,
      publicKey: kp.publicKey,
    },
    pki.bank.signer,
  );
  writeFileSync(join(certs, 'terminal.cert'), termCert);
  writeFileSync(join(certs, 'bank.cert'), pki.bank.cert);
  writeFileSync(join(certs, 'root.cert'), toHex(pki.issuer.cert)); // hex is accepted too
  writeFileSync(join(certs, 'ledger.cert'), pki.ledger.cert);
  const args = (o: Record<string, string> = {}) => {
    const f = { cert: 'terminal.cert', 'bank-cert': 'bank.cert', root: 'root.cert', 'ledger-cert': 'ledger.cert', ...o };
    return Object.entries(f).flatMap(([k, v]) => [`--${k}`, join(certs, v)]);
  };

  // A missing file: a clear message, the usage code, nothing touched.
  const missing = await dtPos([...D, 'install-cert', ...args({ cert: 'no-such.cert' })]);
  t.is(missing.code, 2, missing.stderr);
  t.regex(missing.stderr, /--cert \S*no-such\.cert: no such file/);
  t.notRegex(missing.stderr, /ENOENT/);
  t.is(readFileSync(identityFile, 'utf8'), working);

  // The bank's certificate where the terminal's belongs: it does not verify; refused, nothing touched, no temp file left.
  const wrong = await dtPos([...D, 'install-cert', ...args({ cert: 'bank.cert' })]);
  t.is(wrong.code, 5, wrong.stderr);
  t.regex(wrong.stderr, /not installed, the certificates do not verify: .*the installed identity is unchanged/);
  t.is(readFileSync(identityFile, 'utf8'), working);
  t.deepEqual(files(), before);
  const st = await dtPos([...D, '--json', 'status']);
  t.is(st.code, 0, 'the terminal still works');
  t.is((JSON.parse(st.stdout) as { merchant: { name: string } }).merchant.name, 'M1');

  // The good answer installs.
  const ok = await dtPos([...D, '--json', 'install-cert', ...args()]);
  t.is(ok.code, 0, ok.stderr);
  t.true((JSON.parse(ok.stdout) as { installed: boolean }).installed);
  t.is((JSON.parse((await dtPos([...D, '--json', 'status'])).stdout) as { merchant: { name: string } }).merchant.name, 'M1 renamed');
  t.deepEqual(
    files().filter((f) => f.includes('identity')),
    ['identity.json'],
  );
});

test('error codes are printed once: a terminal pinning another ledger gets BAD_RESPONSE for the revocation list, shown as "BAD_RESPONSE: …" (exit 6)', async (t) => {
  t.is(new TerminalError('BAD_RESPONSE', 'revocation list refused: KEY_MISMATCH').message, 'revocation list refused: KEY_MISMATCH');
  const { dir, cleanup } = tempDir('dt-pos-prefix-');
  const w = await startWorld(dir);
  t.teardown(async () => {
    await w.close();
    cleanup();
  });
  const pki = w.tl.pki;
  const now = Math.floor(Date.now() / 1000);
  // A second ledger certified by the same issuer: the terminal trusts it, but the acquirer's lists are signed by the real one.
  const other = issueLedgerCert(pki.issuer, { validity: { nbf: now - 60, exp: now + 86_400 } });
  const party = (p: { keys: { secretKey: Uint8Array }; cert: Uint8Array }) => ({ secretKey: toHex(p.keys.secretKey), cert: toHex(p.cert) });
  const pkiDir = join(dir, 'pki');
  mkdirSync(pkiDir);
  writeFileSync(
    join(pkiDir, 'dev-pki.json'),
    JSON.stringify({ format: 'dt-dev-pki', version: 1, issuer: party(pki.issuer), ledger: party(other), bank: party(pki.bank) }),
  );
  const D = ['--data-dir', join(dir, 'pos')];
  t.is(
    (await dtPos([...D, 'init', '--merchant-id', 'm2', '--mcc', '5411', '--name', 'M2', '--dev', pkiDir, '--acquirer', w.acquirer.url]))
      .code,
    0,
  );
  const s = await dtPos([...D, 'sync']);
  t.is(s.code, 6, s.stdout + s.stderr);
  t.regex(s.stdout, /^problem \(crl\): BAD_RESPONSE: revocation list refused: KEY_MISMATCH$/m);
  t.notRegex(s.stdout + s.stderr, /([A-Z_]{4,}): \1:/);
});

test('init --dev on a dt-ledger data directory: certified by its acquiring bank under that root, no dev-pki.json needed; an issuing-only bank or a directory without banks is refused (5), a missing --dev directory or a bad --reader is a usage error (2), and a refused init writes nothing', async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const LEDGER = fileURLToPath(new URL('../../ledger/bin/dt-ledger.js', import.meta.url));
  const dtLedger = (args: string[]) =>
    new Promise<number>((resolve) => spawn(process.execPath, [LEDGER, ...args], { stdio: 'ignore' }).on('exit', (c) => resolve(c ?? -1)));
  const L = join(dir, 'L');
  t.is(await dtLedger(['init', '-d', L]), 0);
  t.is(await dtLedger(['bank-add', '-d', L, '--name', 'issuer-only', '--perms', 'issuing']), 0);
  const none = await dtPos(['-d', join(dir, 'T0'), 'init', '--merchant-id', 'm', '--mcc', '5411', '--name', 'M', '--dev', L]);
  t.is(none.code, 5, none.stderr);
  t.regex(none.stderr, /no acquiring bank/);
  t.false(existsSync(join(dir, 'T0')), 'a refused init writes nothing: no key, no config');
  // A --dev directory that does not exist is a usage error (2), and nothing is written either.
  const missing = await dtPos([
    '-d',
    join(dir, 'T0'),
    'init',
    '--merchant-id',
    'm',
    '--mcc',
    '5411',
    '--name',
    'M',
    '--dev',
    join(dir, 'nope'),
  ]);
  t.is(missing.code, 2, missing.stderr);
  t.regex(missing.stderr, /--dev .*nope: no such directory/);
  t.false(existsSync(join(dir, 'T0')));
  // So is a --reader value that is no reader spec, checked before the terminal is touched.
  const badReader = await dtPos(['-d', join(dir, 'T0'), 'init', '--merchant-id', 'm', '--mcc', '5411', '--name', 'M', '--reader', 'bogus']);
  t.is(badReader.code, 2, badReader.stderr);
  t.regex(badReader.stderr, /unknown reader spec bogus/);
  t.false(existsSync(join(dir, 'T0')));
  const badCharge = await dtPos(['-d', join(dir, 'T0'), 'charge', '1', '--reader', 'bogus']);
  t.is(badCharge.code, 2, badCharge.stderr);
  t.is(await dtLedger(['bank-add', '-d', L, '--name', 'halyk']), 0);
  const r = await dtPos([
    '-d',
    join(dir, 'T'),
    '--json',
    'init',
    '--merchant-id',
    'shop-9',
    '--mcc',
    '5411',
    '--name',
    'Shop 9',
    '--dev',
    L,
  ]);
  t.is(r.code, 0, r.stderr);
  t.true(JSON.parse(r.stdout).initialized);
  const id = JSON.parse(readFileSync(join(dir, 'T', 'identity.json'), 'utf8')) as { chain: string[]; root: string };
  t.is(id.root, readFileSync(join(L, 'root.cert')).toString('hex'), 'the ledger directory root is pinned');
  t.is(id.chain[1], readFileSync(join(L, 'banks', 'halyk.cert')).toString('hex'), 'certified by the acquiring bank');
  t.false(readdirSync(join(dir, 'T')).some((f) => f.includes('dev-pki')));
  // What init prints names the bank that certified and the data directory as given, so the next command can be copied.
  const human = await dtPos(['-d', join(dir, 'T4'), 'init', '--merchant-id', 'shop-4', '--mcc', '5411', '--name', 'Shop 4', '--dev', L]);
  t.is(human.code, 0, human.stderr);
  t.regex(human.stdout, /certified for Shop 4 \(shop-4, MCC 5411\) by halyk \(--dev\)/);
  t.true(human.stdout.includes(`Run 'dt-pos -d ${join(dir, 'T4')} sync'`), human.stdout);
  const request = await dtPos(['-d', join(dir, 'T5'), 'init', '--merchant-id', 'shop-5', '--mcc', '5411', '--name', 'Shop 5']);
  t.is(request.code, 0, request.stderr);
  t.true(request.stdout.includes(`  dt-pos -d ${join(dir, 'T5')} install-cert --cert terminal.cert`), request.stdout);
  const status = await dtPos(['-d', join(dir, 'T'), 'status']);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /Shop 9 \(shop-9, MCC 5411\)/);
});

test('report and receipt on a data directory that holds no terminal (a mistyped --data-dir) are refused (5) and create nothing', async (t) => {
  const { dir, cleanup } = tempDir('dt-pos-cli-');
  t.teardown(cleanup);
  const missing = join(dir, 'no', 'such', 'terminal');
  for (const args of [['report'], ['receipt', '1']]) {
    const r = await dtPos(['-d', missing, ...args]);
    t.is(r.code, 5, r.stderr);
    t.regex(r.stderr, /NOT_INITIALIZED: no terminal in .*no[/]such[/]terminal \(no terminal\.key, no journal\.sqlite\): run dt-pos init/);
    t.is(r.stdout, '');
  }
  const json = await dtPos(['-d', missing, '--json', 'report']);
  t.is(json.code, 5, json.stderr);
  t.like(JSON.parse(json.stdout), { error: 'NOT_INITIALIZED' });
  t.false(existsSync(join(dir, 'no')), 'no directory or journal created');
});

test('--acquirer that is not an http(s) URL is a usage error (2) for init, sync and serve; a refused init writes nothing; an unreachable one is offline (3) and status tells the problem in words', async (t) => {
  const { dir, cleanup } = tempDir('dt-pos-cli-');
  t.teardown(cleanup);
  const T = join(dir, 'T');
  const init = await dtPos(['-d', T, 'init', '--merchant-id', 's', '--mcc', '5411', '--name', 'S', '--acquirer', 'notaurl']);
  t.is(init.code, 2, init.stderr);
  t.regex(init.stderr, /--acquirer <url>' argument 'notaurl' is invalid\. not a URL: notaurl/);
  t.false(existsSync(T), 'nothing written');
  for (const c of ['sync', 'serve']) {
    const r = await dtPos(['-d', T, c, '--acquirer', 'ftp://127.0.0.1:1']);
    t.is(r.code, 2, r.stderr);
    t.regex(r.stderr, /not an http\(s\) URL: ftp:\/\/127\.0\.0\.1:1/);
  }
  // An acquirer that is a URL but does not answer: offline (3), and status says so in words.
  const pkiDir = join(dir, 'pki');
  saveDevPki(pkiDir, createDevPki());
  t.is((await dtPos(['-d', T, 'init', '--merchant-id', 's', '--mcc', '5411', '--name', 'S', '--dev', pkiDir])).code, 0);
  t.is((await dtPos(['-d', T, 'sync', '--acquirer', 'http://127.0.0.1:1'])).code, 3);
  const status = await dtPos(['-d', T, 'status']);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /^Last successful sync: never; last problem: \d{4}-\d\d-\d\dT[\d:]+Z: outcomes NETWORK, crl NETWORK$/m);
});

test('init --merchant-id / --name empty or over 64 bytes: a usage error (2) before the key is made; the directory is not created', async (t) => {
  const { dir, cleanup } = tempDir('dt-pos-cli-');
  t.teardown(cleanup);
  const T = join(dir, 'T');
  for (const [id, name, message] of [
    ['', 'Shop', /--merchant-id must be 1 to 64 bytes of text \(got 0\)/],
    ['shop-1', 'x'.repeat(65), /--name must be 1 to 64 bytes of text \(got 65\)/],
    ['shop-1', 'ж'.repeat(33), /--name must be 1 to 64 bytes of text \(got 66\)/],
  ] as const) {
    const r = await dtPos(['-d', T, 'init', '--merchant-id', id, '--mcc', '5411', '--name', name]);
    t.is(r.code, 2, r.stderr);
    t.regex(r.stderr, message);
    t.false(existsSync(T), 'nothing written');
  }
  const ok = await dtPos(['-d', T, 'init', '--merchant-id', 'shop-1', '--mcc', '5411', '--name', 'ж'.repeat(32)]);
  t.is(ok.code, 0, ok.stderr);
});
