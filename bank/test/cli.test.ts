/**
 * `dt-bank` and `dt-wallet` as processes: refusals and their exit codes, and
 * that a refused command leaves the card as it was (the simulated card's state
 * file byte for byte): a tampered certificate request, a key that is not the
 * certificate's, a bank without the permission, a load order for another card
 * or another amount, a ledger out of reach, a revoked card's sync, usage errors.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN: Record<string, string> = {
  'dt-ledger': 'ledger/bin/dt-ledger.js',
  'dt-pos': 'terminal/bin/dt-pos.js',
  'dt-card': 'card-applet-sim/bin/dt-card.js',
  'dt-bank': 'bank/bin/dt-bank.js',
  'dt-wallet': 'bank/bin/dt-wallet.js',
};

function run(cwd: string, cmd: string, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const p = spawn(process.execPath, [join(ROOT, BIN[cmd]!), ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => done({ code, stdout, stderr }));
  });
}

function serveLedger(cwd: string): Promise<{ p: ChildProcess; url: string }> {
  return new Promise((done, fail) => {
    const p = spawn(process.execPath, [join(ROOT, BIN['dt-ledger']!), 'serve', '-d', 'L', '--port', '0', '--log-level', 'silent'], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /http:\/\/[0-9.]+:\d+/.exec(out);
      if (m) done({ p, url: m[0] });
    });
    p.on('close', (code) => fail(new Error(`dt-ledger serve exited ${code}: ${out}`)));
  });
}

test('refusals: exit codes, and the card exactly as it was', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-bank-'));
  const servers: ChildProcess[] = [];
  t.teardown(() => {
    for (const p of servers) p.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });
  const ok = async (cmd: string, ...args: string[]) => {
    const r = await run(dir, cmd, ...args);
    t.is(r.code, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  await ok('dt-ledger', 'init', '-d', 'L');
  await ok('dt-ledger', 'bank-add', '-d', 'L', '--name', 'halyk', '--allocate', '10000000');
  await ok('dt-ledger', 'bank-add', '-d', 'L', '--name', 'issuer-only', '--perms', 'issuing');
  const B = 'L/banks/halyk.key.json';

  // Terminal certificate requests.
  await ok('dt-pos', '-d', 'T', 'init', '--merchant-id', 'shop-1', '--mcc', '5411', '--name', 'Shop');
  const req = readFileSync(join(dir, 'T/certificate-request.cbor'));
  const tampered = Buffer.from(req);
  tampered[tampered.length - 70] ^= 0x01; // a payload byte (the merchant name), under the signature
  writeFileSync(join(dir, 'tampered.cbor'), tampered);
  const bad = await run(dir, 'dt-bank', 'sign-terminal', 'tampered.cbor', '--bank-key', B, '--out', 'x.cert');
  t.is(bad.code, 1, bad.stderr);
  t.regex(bad.stderr, /does not verify/);
  t.false(existsSync(join(dir, 'x.cert')), 'nothing written');
  const noAcq = await run(
    dir,
    'dt-bank',
    'sign-terminal',
    'T/certificate-request.cbor',
    '--bank-key',
    'L/banks/issuer-only.key.json',
    '--out',
    'x.cert',
  );
  t.is(noAcq.code, 5, noAcq.stderr);
  t.regex(noAcq.stderr, /lacks the acquiring permission/);
  const mismatch = await run(
    dir,
    'dt-bank',
    'sign-terminal',
    'T/certificate-request.cbor',
    '--bank-key',
    B,
    '--bank-cert',
    'L/banks/issuer-only.cert',
    '--out',
    'x.cert',
  );
  t.is(mismatch.code, 5, mismatch.stderr);
  const wrongMerchant = await run(
    dir,
    'dt-bank',
    'sign-terminal',
    'T/certificate-request.cbor',
    '--bank-key',
    B,
    '--out',
    'x.cert',
    '--merchant-id',
    'shop-2',
  );
  t.is(wrongMerchant.code, 1, wrongMerchant.stderr);
  t.regex(wrongMerchant.stderr, /MERCHANT_MISMATCH/);
  t.false(existsSync(join(dir, 'x.cert')));
  const usage = await run(dir, 'dt-bank', 'load-order', '--bank-key', B, '--card-kid', 'zz', '--amount', '1', '--out', 'o');
  t.is(usage.code, 2);
  t.is((await run(dir, 'dt-bank', 'sign-terminal', 'missing.cbor', '--bank-key', B, '--out', 'x.cert')).code, 2);
  writeFileSync(join(dir, 'junk.cbor'), 'junk\n');
  const junk = await run(dir, 'dt-bank', 'sign-terminal', 'junk.cbor', '--bank-key', B, '--out', 'x.cert');
  t.is(junk.code, 1, junk.stderr);
  t.regex(junk.stderr, /^dt-bank: CBOR_MALFORMED: the certificate request does not verify: [a-z]/, 'the code once');
  // A mistyped --bank-key is named (not the root certificate its defaults would be next to); an --out that cannot be written is usage.
  const noKey = await run(dir, 'dt-bank', 'sign-terminal', 'T/certificate-request.cbor', '--bank-key', 'nokey.json', '--out', 'x.cert');
  t.is(noKey.code, 2, noKey.stderr);
  t.regex(noKey.stderr, /^dt-bank: --bank-key nokey\.json: no such file\n$/);
  const noDir = await run(dir, 'dt-bank', 'sign-terminal', 'T/certificate-request.cbor', '--bank-key', B, '--out', 'no/such/dir/x.cert');
  t.is(noDir.code, 2, noDir.stderr);
  t.regex(noDir.stderr, /--out no\/such\/dir\/x\.cert: cannot write there: ENOENT/);

  // Cards.
  const srv = await serveLedger(dir);
  servers.push(srv.p);
  const U = srv.url;
  await ok('dt-card', 'create', 'a.card');
  await ok('dt-card', 'create', 'b.card');
  // Limits that make no usable card are usage errors before the card is touched (no key generated on it).
  const blank = readFileSync(join(dir, 'a.card'));
  for (const [limit, why] of [
    [['--per-payment', '0'], /--per-payment must be positive/],
    [['--offline-total', '0'], /--offline-total must be positive/],
    [
      ['--per-payment', '500', '--offline-total', '400'],
      /per-payment limit \(500\.00 KZT\) is above the offline total limit \(400\.00 KZT\)/,
    ],
  ] as const) {
    const r = await run(dir, 'dt-bank', 'issue', '--card', 'a.card', '--bank-key', B, '--pin', '1234', '--puk', '12345678', ...limit);
    t.is(r.code, 2, r.stderr);
    t.regex(r.stderr, why);
    t.deepEqual(readFileSync(join(dir, 'a.card')), blank, 'the card is as it was');
  }
  const a = JSON.parse(
    (await ok('dt-bank', 'issue', '--card', 'a.card', '--bank-key', B, '--pin', '1234', '--puk', '12345678', '--ledger', U, '--json'))
      .stdout,
  );
  const b = JSON.parse(
    (await ok('dt-bank', 'issue', '--card', 'b.card', '--bank-key', B, '--pin', '1234', '--puk', '12345678', '--ledger', U, '--json'))
      .stdout,
  );
  // The limits' defaults are tenge in --help (amounts typed for dt-bank are tenge) and on the card.
  const help = (await ok('dt-bank', 'issue', '--help')).stdout.replace(/\s+/g, ' ');
  t.regex(help, /--per-payment <tenge> limit per offline payment \(default: 50000\.00 KZT\)/);
  t.regex(help, /--offline-total <tenge> limit of offline value between two syncs \(default: 100000\.00 KZT\)/);
  t.regex(help, /--cvm-limit <tenge> payments above this amount need the PIN \(default: 10000\.00 KZT\)/);
  t.like(a.limits, { perPayment: 50_000_00, offlineTotal: 100_000_00, cvmLimit: 10_000_00 });
  await ok('dt-bank', 'load-order', '--bank-key', B, '--card-kid', b.card, '--amount', '100', '--out', 'for-b.cbor');
  await ok('dt-bank', 'load-order', '--bank-key', B, '--card-kid', a.card, '--amount', '100', '--out', 'for-a.cbor');
  const before = readFileSync(join(dir, 'a.card'));
  const unchanged = (what: string) => t.deepEqual(readFileSync(join(dir, 'a.card')), before, `${what}: the card is unchanged`);

  const other = await run(dir, 'dt-wallet', 'load', '100', '--order', 'for-b.cbor', '--card', 'a.card', '--ledger', U);
  t.is(other.code, 1, other.stderr);
  t.regex(other.stderr, /CARD_MISMATCH/);
  unchanged('an order for another card');
  const amount = await run(dir, 'dt-wallet', 'load', '200', '--order', 'for-a.cbor', '--card', 'a.card', '--ledger', U);
  t.is(amount.code, 1, amount.stderr);
  t.regex(amount.stderr, /AMOUNT_MISMATCH/);
  unchanged('an order for another amount');
  const offline = await run(dir, 'dt-wallet', 'sync', '--card', 'a.card', '--ledger', 'http://127.0.0.1:9');
  t.is(offline.code, 3, offline.stderr);
  unchanged('a ledger out of reach');
  // Every ledger call of dt-bank out of reach is exit 3 (load and register post through the card sync client).
  for (const args of [
    ['load', '--bank-key', B, '--card-kid', a.card, '--amount', '1', '--ledger', 'http://127.0.0.1:9'],
    ['register', '--card', 'a.card', '--ledger', 'http://127.0.0.1:9'],
    ['balance', '--bank-key', B, '--ledger', 'http://127.0.0.1:9'],
  ]) {
    const r = await run(dir, 'dt-bank', ...args);
    t.is(r.code, 3, `dt-bank ${args[0]}: ${r.stderr}`);
    t.regex(r.stderr, /^dt-bank: UNREACHABLE: the ledger cannot be reached: /);
  }
  unchanged('dt-bank register with a ledger out of reach');
  // A --ledger that is no http(s) URL is a usage error of both commands, before anything is done.
  for (const [cmd, ...args] of [
    ['dt-bank', 'load', '--bank-key', B, '--card-kid', a.card, '--amount', '1', '--ledger', 'notaurl'],
    ['dt-bank', 'balance', '--bank-key', B, '--ledger', 'ftp://127.0.0.1'],
    ['dt-wallet', 'sync', '--card', 'a.card', '--ledger', 'notaurl'],
  ] as const) {
    const r = await run(dir, cmd, ...args);
    t.is(r.code, 2, `${cmd} ${args[0]}: ${r.stderr}`);
    t.regex(r.stderr, /option '--ledger <url>' argument '.*' is invalid\. not an http\(s\) URL/);
  }
  unchanged('a --ledger that is no URL');
  const bad2 = await run(dir, 'dt-wallet', 'load', '1.234', '--order', 'for-a.cbor', '--card', 'a.card', '--ledger', U);
  t.is(bad2.code, 2);
  const busy = await run(dir, 'dt-wallet', 'status', '--card', 'missing.card');
  t.is(busy.code, 2, busy.stderr);

  // Revoked: the bank blocks the card; its sync is refused before the card is touched.
  await ok('dt-bank', 'block-card', '--bank-key', B, '--card-kid', a.card, '--ledger', U);
  const revoked = await run(dir, 'dt-wallet', 'sync', '--card', 'a.card', '--ledger', U);
  t.is(revoked.code, 1, revoked.stderr);
  t.regex(revoked.stderr, /CARD_REVOKED/);
  unchanged('a revoked card');
  const early = await run(dir, 'dt-bank', 'restore-card', '--bank-key', B, '--card-kid', a.card, '--ledger', U);
  t.is(early.code, 1, early.stderr);
  t.regex(early.stderr, /TOO_EARLY/);
  // Another bank's card.
  const foreign = await run(
    dir,
    'dt-bank',
    'block-card',
    '--bank-key',
    'L/banks/issuer-only.key.json',
    '--card-kid',
    b.card,
    '--ledger',
    U,
  );
  t.is(foreign.code, 1, foreign.stderr);
  t.regex(foreign.stderr, /NOT_PERMITTED/);
  // A wrong PIN: refused (the card counts the try, nothing else).
  const wrong = await run(dir, 'dt-wallet', 'change-pin', '--card', 'b.card', '--pin', '9999', '--new-pin', '1111');
  t.is(wrong.code, 1);
  t.regex(wrong.stderr, /WRONG_PIN: wrong PIN or PUK: 2 tries left/);
  const st = JSON.parse((await ok('dt-wallet', 'status', '--card', 'b.card', '--json')).stdout);
  t.is(st.pinTries, 2);
  t.is(st.balance, 0);
  for (const r of [bad, other, amount, revoked, wrong])
    t.false(/(^|[^0-9a-f])(1234|12345678)([^0-9a-f]|$)/.test(r.stdout + r.stderr), 'no PIN or PUK printed');
});

test("a card that is not there is the card's failure, not the ledger's: a reader that times out, a missing or foreign state file", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-wallet-nocard-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // No pcscd behind this socket: the reader never sees a card.
  const env = { PCSCLITE_CSOCK_NAME: join(dir, 'no-pcscd.comm') };
  const timedOut = await runStdin(dir, '', env, 'dt-wallet', 'status', '--reader', 'pcsc', '--wait', '1', '--ledger', 'http://127.0.0.1:9');
  t.is(timedOut.code, 4, timedOut.stderr);
  t.regex(timedOut.stderr, /^dt-wallet: NO_CARD: pcscd is not running \(no socket at .*no-pcscd\.comm\): start pcscd/);
  t.notRegex(timedOut.stderr, /ledger|UNREACHABLE/);
  const missing = await run(dir, 'dt-wallet', 'status', '--card', 'nope.card', '--json');
  t.is(missing.code, 2, missing.stderr);
  t.is(JSON.parse(missing.stdout).error, 'STATE_MISSING');
  writeFileSync(join(dir, 'foreign.card'), '{}');
  const foreignWallet = await run(dir, 'dt-wallet', 'status', '--card', 'foreign.card', '--json');
  t.is(foreignWallet.code, 4, foreignWallet.stderr);
  t.is(JSON.parse(foreignWallet.stdout).error, 'STATE_INVALID');
});

/** Runs a command with `input` on its stdin; checks its argv in /proc (the secrets must not be there) before writing it. */
function runStdin(
  cwd: string,
  input: string,
  env: NodeJS.ProcessEnv,
  cmd: string,
  ...args: string[]
): Promise<{ code: number | null; stdout: string; stderr: string; argv: string }> {
  return new Promise((done) => {
    const p = spawn(process.execPath, [join(ROOT, BIN[cmd]!), ...args], {
      cwd,
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    // The process is alive (it waits for its stdin): what `ps` shows of it.
    const argv = readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
    let stdout = '';
    let stderr = '';
    p.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => done({ code, stdout, stderr, argv }));
    p.stdin!.end(input);
  });
}

test('PINs and PUKs from stdin or the environment: they work, wrong ones are refused, and they are nowhere in argv or output', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-bank-secrets-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ok = async (cmd: string, ...args: string[]) => {
    const r = await run(dir, cmd, ...args);
    t.is(r.code, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const PIN = '73915';
  const PUK = '6482047315';
  const NEW = '280461';
  const secrets = [PIN, PUK, NEW];
  const clean = (what: string, r: { stdout: string; stderr: string; argv?: string }) => {
    for (const s of secrets) {
      t.false((r.stdout + r.stderr).includes(s), `${what}: a secret in the output`);
      if (r.argv !== undefined) t.false(r.argv.includes(s), `${what}: a secret in argv`);
    }
  };
  await ok('dt-ledger', 'init', '-d', 'L');
  await ok('dt-ledger', 'bank-add', '-d', 'L', '--name', 'halyk', '--allocate', '10000000');
  const B = 'L/banks/halyk.key.json';
  await ok('dt-card', 'create', 'c.card');

  // Issue: PIN then PUK on stdin.
  const issued = await runStdin(
    dir,
    `${PIN}\n${PUK}\n`,
    {},
    'dt-bank',
    'issue',
    '--card',
    'c.card',
    '--bank-key',
    B,
    '--pin-stdin',
    '--json',
  );
  t.is(issued.code, 0, issued.stderr);
  t.truthy(JSON.parse(issued.stdout).card);
  clean('issue', issued);
  const state = () => readFileSync(join(dir, 'c.card'));
  const tries = async () => JSON.parse((await ok('dt-wallet', 'status', '--card', 'c.card', '--json')).stdout).pinTries as number;
  t.is(await tries(), 3);

  // Malformed, missing or doubly given secrets: usage (exit 2), the card not even opened.
  const before = state();
  for (const [input, args] of [
    [`${PIN}\n`, ['--pin-stdin']], // one line of two
    [`12ab\n${NEW}\n`, ['--pin-stdin']], // not digits
    ['', ['--pin-env', 'DT_NO_SUCH_VAR', '--new-pin-env', 'DT_NO_SUCH_VAR']],
    [`${PIN}\n${NEW}\n`, ['--pin-stdin', '--pin-env', 'X']],
  ] as const) {
    const r = await runStdin(dir, input, {}, 'dt-wallet', 'change-pin', '--card', 'c.card', ...args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    clean('usage', r);
    t.deepEqual(state(), before, 'a usage error leaves the card state file byte for byte');
  }

  // A wrong PIN (well formed) from the environment: refused, exit 1; the card counts the try and changes nothing else.
  const wrong = await runStdin(
    dir,
    '',
    { DT_PIN: '11111', DT_NEW: NEW },
    'dt-wallet',
    'change-pin',
    '--card',
    'c.card',
    '--pin-env',
    'DT_PIN',
    '--new-pin-env',
    'DT_NEW',
  );
  t.is(wrong.code, 1, wrong.stderr);
  t.regex(wrong.stderr, /WRONG_PIN: wrong PIN or PUK: 2 tries left/);
  clean('wrong PIN', wrong);
  t.is(await tries(), 2);

  // The right PIN from the environment: changed (and the try counter reset); then the new PIN works on stdin.
  const changed = await runStdin(
    dir,
    '',
    { DT_PIN: PIN, DT_NEW: NEW },
    'dt-wallet',
    'change-pin',
    '--card',
    'c.card',
    '--pin-env',
    'DT_PIN',
    '--new-pin-env',
    'DT_NEW',
  );
  t.is(changed.code, 0, changed.stderr);
  clean('change-pin', changed);
  t.is(await tries(), 3);
  const old = await runStdin(dir, `${PIN}\n${PIN}\n`, {}, 'dt-wallet', 'change-pin', '--card', 'c.card', '--pin-stdin');
  t.is(old.code, 1, 'the old PIN no longer works');
  clean('old PIN', old);

  // Block the PIN (two more wrong tries), then unblock with the PUK on stdin; a wrong PUK first.
  for (let i = 0; i < 2; i++)
    t.is((await runStdin(dir, `11111\n${PIN}\n`, {}, 'dt-wallet', 'change-pin', '--card', 'c.card', '--pin-stdin')).code, 1);
  t.is(await tries(), 0);
  const wrongPuk = await runStdin(dir, `99999999\n${PIN}\n`, {}, 'dt-wallet', 'unblock', '--card', 'c.card', '--pin-stdin');
  t.is(wrongPuk.code, 1, wrongPuk.stderr);
  clean('wrong PUK', wrongPuk);
  const unblocked = await runStdin(dir, `${PUK}\n${PIN}\n`, {}, 'dt-wallet', 'unblock', '--card', 'c.card', '--pin-stdin', '--json');
  t.is(unblocked.code, 0, unblocked.stderr);
  t.true(JSON.parse(unblocked.stdout).unblocked);
  clean('unblock', unblocked);
  t.is(await tries(), 3);
  const back = await runStdin(dir, `${PIN}\n${NEW}\n`, {}, 'dt-wallet', 'change-pin', '--card', 'c.card', '--pin-stdin');
  t.is(back.code, 0, `the PIN the unblock set works: ${back.stderr}`);
});

test('marked loads (SPEC §3.4, §7.6.1): --mark is validated, a marked load arrives as marked value, status shows it per mark class, the books hold', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-bank-mark-'));
  const servers: ChildProcess[] = [];
  t.teardown(() => {
    for (const p of servers) p.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });
  const ok = async (cmd: string, ...args: string[]) => {
    const r = await run(dir, cmd, ...args);
    t.is(r.code, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  await ok('dt-ledger', 'init', '-d', 'L');
  await ok('dt-ledger', 'bank-add', '-d', 'L', '--name', 'halyk', '--allocate', '10000000');
  const B = 'L/banks/halyk.key.json';
  const srv = await serveLedger(dir);
  servers.push(srv.p);
  const U = srv.url;
  await ok('dt-card', 'create', 'c.card');
  const c = JSON.parse(
    (await ok('dt-bank', 'issue', '--card', 'c.card', '--bank-key', B, '--pin', '1234', '--puk', '12345678', '--ledger', U, '--json'))
      .stdout,
  );
  // {1: ["pharmacy"], 3: 1}: payable to the merchant "pharmacy" only, one hop.
  const PHARMACY = 'a2018168706861726d6163790301';
  // Usage errors (exit 2), nothing signed or sent: not hex, not a Mark, a Mark naming no merchant and no MCC, not deterministic.
  for (const [mark, why] of [
    ['zz', /hex of a CBOR Mark/],
    ['a10901', /not a Mark of SPEC §3\.4/],
    ['a10301', /names no merchant id/],
    ['a20301018168706861726d616379', /not a Mark of SPEC §3\.4/],
  ] as const) {
    const r = await run(dir, 'dt-bank', 'load', '--bank-key', B, '--card-kid', c.card, '--amount', '1', '--ledger', U, '--mark', mark);
    t.is(r.code, 2, `${mark}: ${r.stderr}`);
    t.regex(r.stderr, why);
    const o = await run(
      dir,
      'dt-bank',
      'load-order',
      '--bank-key',
      B,
      '--card-kid',
      c.card,
      '--amount',
      '1',
      '--out',
      'bad.cbor',
      '--mark',
      mark,
    );
    t.is(o.code, 2, `${mark}: ${o.stderr}`);
    t.false(existsSync(join(dir, 'bad.cbor')));
  }
  const sent = JSON.parse(
    (await ok('dt-bank', 'load', '--bank-key', B, '--card-kid', c.card, '--amount', '30', '--ledger', U, '--mark', PHARMACY, '--json'))
      .stdout,
  );
  t.like(sent, { amount: 3_000, state: 'pending', mark: { merchants: ['pharmacy'], hops: 1 } });
  const text = await ok(
    'dt-bank',
    'load-order',
    '--bank-key',
    B,
    '--card-kid',
    c.card,
    '--amount',
    '20',
    '--out',
    'm.cbor',
    '--mark',
    PHARMACY,
  );
  t.regex(text.stdout, /20\.00 KZT for card [0-9a-f]{32} marked \(merchants pharmacy, hops 1\)/);
  await ok('dt-bank', 'load', '--bank-key', B, '--card-kid', c.card, '--amount', '100', '--ledger', U);
  // The cardholder hands in the marked order: LOAD delivers all three pending loads.
  await ok('dt-wallet', 'load', '20', '--order', 'm.cbor', '--card', 'c.card', '--ledger', U);
  const st = JSON.parse((await ok('dt-wallet', 'status', '--card', 'c.card', '--ledger', U, '--json')).stdout);
  t.is(st.balance, 15_000);
  t.deepEqual(
    [...st.ledger.byMark].sort((x: { mark: string | null }, y: { mark: string | null }) => String(x.mark).localeCompare(String(y.mark))),
    [
      { mark: PHARMACY, synced: 5_000, pendingLoads: 0 },
      { mark: null, synced: 10_000, pendingLoads: 0 },
    ],
  );
  const human = await ok('dt-wallet', 'status', '--card', 'c.card', '--ledger', U);
  t.regex(human.stdout, /unmarked: 100\.00 KZT synced, 0\.00 KZT waiting/);
  t.regex(human.stdout, /marked \(merchants pharmacy, hops 1\): 50\.00 KZT synced, 0\.00 KZT waiting/);
  // The same load id with another mark is another order: refused by the ledger (exit 1).
  const id = '00112233445566778899aabbccddeeff';
  await ok('dt-bank', 'load', '--bank-key', B, '--card-kid', c.card, '--amount', '5', '--ledger', U, '--id', id, '--mark', PHARMACY);
  const conflict = await run(dir, 'dt-bank', 'load', '--bank-key', B, '--card-kid', c.card, '--amount', '5', '--ledger', U, '--id', id);
  t.is(conflict.code, 1, conflict.stderr);
  t.regex(conflict.stderr, /ID_CONFLICT/);
  const audit = JSON.parse((await ok('dt-ledger', 'audit', '-d', 'L', '--json')).stdout);
  t.true(audit.ok);
  t.is(audit.pendingLoads, 500);
  t.is(audit.unspentTokens, 15_000);
});
