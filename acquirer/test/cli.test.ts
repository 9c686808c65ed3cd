/**
 * The `dt-acquirer` command line: help, exit codes, and terminal revocation
 * against a running service's database.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { toHex } from '@dt/protocol';
import { startAcquirer, submitBatch, AcquirerHttpError } from '../src/index.ts';
import { acquirerIdentity, closedPort, makeBatch, makePki, makeTerminal, tempDir, type Party } from './fixtures.ts';

const BIN = fileURLToPath(new URL('../bin/dt-acquirer.js', import.meta.url));
const pki = makePki('cli');

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Writes a key file in the format `dt-ledger` writes (and the acquirer README documents). */
function keyFile(dir: string, name: string, p: Party, mode = 0o600): string {
  const f = join(dir, name);
  writeFileSync(f, JSON.stringify({ alg: 'ES256', secretKey: toHex(p.keys.secretKey), publicKey: toHex(p.keys.publicKey) }) + '\n', {
    mode,
  });
  chmodSync(f, mode);
  return f;
}

function certFiles(dir: string, hex = false): { root: string; bank: string; ledger: string; key: string; cert: string } {
  const w = (name: string, b: Uint8Array) => {
    const f = join(dir, name);
    writeFileSync(f, hex ? toHex(b) + '\n' : b);
    return f;
  };
  return {
    root: w('root.cert', pki.root.cert),
    bank: w('bank.cert', pki.acquiringBank.cert),
    ledger: w('ledger.cert', pki.ledger.cert),
    key: keyFile(dir, 'acquirer.key.json', pki.acquirer),
    cert: w('acquirer.cert', pki.acquirer.cert),
  };
}

test('--help documents every serve option and the exit codes; exit 0', async (t) => {
  const r = await run(['serve', '--help']);
  t.is(r.code, 0);
  for (const o of [
    '--ledger',
    '--bank-cert',
    '--root',
    '--ledger-cert',
    '--key',
    '--cert',
    '--db',
    '--port',
    '--host',
    '--max-body',
    '--crl-refresh',
    '--batches-per-call',
    '--log-level',
  ]) {
    t.true(r.stdout.includes(o), o);
  }
  // The example is the ledger's own default port, as in every README command line.
  t.regex(r.stdout.replace(/\s+/g, ' '), /base URL of the ledger \(e\.g\. http:\/\/127\.0\.0\.1:8440,/);
  const top = await run(['--help']);
  t.is(top.code, 0);
  t.regex(top.stdout, /Exit codes:/);
  t.regex(top.stdout, /revoke-terminal/);
});

test('exit codes: 2 for bad usage (with a message) or a missing certificate file, 4 for certificates that do not verify, 5 when the service cannot start', async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const c = certFiles(dir);
  const me = ['--key', c.key, '--cert', c.cert];
  const base = [
    'serve',
    '--ledger',
    'http://127.0.0.1:1',
    '--root',
    c.root,
    '--bank-cert',
    c.bank,
    '--ledger-cert',
    c.ledger,
    ...me,
    '--log-level',
    'silent',
  ];
  t.is((await run(['serve'])).code, 2, 'missing required options');
  t.is((await run([...base, '--db', join(dir, 'a.db'), '--port', 'seventy'])).code, 2, 'invalid port');
  t.is((await run(['serve', '--bogus'])).code, 2, 'unknown option');
  const notUrl = await run([
    'serve',
    '--ledger',
    'not-a-url',
    '--root',
    c.root,
    '--bank-cert',
    c.bank,
    '--ledger-cert',
    c.ledger,
    ...me,
    '--db',
    join(dir, 'a.db'),
  ]);
  t.is(notUrl.code, 2);
  t.regex(notUrl.stderr, /^dt-acquirer: --ledger must be an http\(s\) URL, e\.g\. http:\/\/127\.0\.0\.1:8440; got not-a-url$/m);
  t.is(
    (
      await run([
        'serve',
        '--ledger',
        'http://127.0.0.1:1',
        '--root',
        c.root,
        '--bank-cert',
        c.bank,
        '--ledger-cert',
        c.ledger,
        '--db',
        join(dir, 'a.db'),
      ])
    ).code,
    2,
    'no --key/--cert',
  );
  const wrongBank = await run([
    'serve',
    '--ledger',
    'http://127.0.0.1:1',
    '--root',
    c.root,
    '--bank-cert',
    c.ledger,
    '--ledger-cert',
    c.ledger,
    ...me,
    '--db',
    join(dir, 'a.db'),
  ]);
  t.is(wrongBank.code, 4);
  t.regex(wrongBank.stderr, /certificates do not verify/);
  const missing = await run([
    'serve',
    '--ledger',
    'http://127.0.0.1:1',
    '--root',
    join(dir, 'missing'),
    '--bank-cert',
    c.bank,
    '--ledger-cert',
    c.ledger,
    ...me,
    '--db',
    join(dir, 'a.db'),
  ]);
  t.is(missing.code, 2, 'a file named on the command line is missing: usage');
  t.regex(missing.stderr, /cannot read root certificate file .*missing: no such file/);
  // The acquirer's own identity (exit 4, a missing key file 2, and the key never appears in what it prints):
  const serveWith = (key: string, cert: string) =>
    run([
      'serve',
      '--ledger',
      'http://127.0.0.1:1',
      '--root',
      c.root,
      '--bank-cert',
      c.bank,
      '--ledger-cert',
      c.ledger,
      '--key',
      key,
      '--cert',
      cert,
      '--db',
      join(dir, 'a.db'),
      '--log-level',
      'silent',
    ]);
  const secret = toHex(pki.acquirer.keys.secretKey);
  const cases: [string, string, string, RegExp, number][] = [
    ['a key file others can read', keyFile(dir, 'open.key.json', pki.acquirer, 0o644), c.cert, /readable by others/, 4],
    [
      'a key file that is not one',
      (writeFileSync(join(dir, 'bad.key.json'), 'not json', { mode: 0o600 }), join(dir, 'bad.key.json')),
      c.cert,
      /not JSON/,
      4,
    ],
    ['a missing key file', join(dir, 'none.key.json'), c.cert, /cannot read the acquirer key file/, 2],
    ['another key than the certificate', keyFile(dir, 'other.key.json', pki.acquiringBank), c.cert, /acquirer key is not the key/, 4],
    [
      "a terminal's certificate",
      c.key,
      (writeFileSync(join(dir, 'term.cert'), makeTerminal(pki, pki.acquiringBank).chain[0]!), join(dir, 'term.cert')),
      /CERT_WRONG_ROLE/,
      4,
    ],
    [
      "another bank's acquirer certificate",
      c.key,
      (writeFileSync(join(dir, 'other.cert'), makePki('cli other').acquirer.cert), join(dir, 'other.cert')),
      /CERT_CHAIN_BROKEN|BAD_SIGNATURE/,
      4,
    ],
  ];
  for (const [what, key, cert, message, code] of cases) {
    const r = await serveWith(key, cert);
    t.is(r.code, code, what);
    t.regex(r.stderr, message, what);
    t.false((r.stdout + r.stderr).includes(secret), `${what}: the key is never printed`);
  }
  const noDb = await run([...base, '--db', join(dir, 'no', 'such', 'dir', 'a.db'), '--port', '0']);
  t.is(noDb.code, 5);
  t.regex(noDb.stderr, /cannot start/);
  // The port is taken: exit 5, and a database this start created is gone again; one that was there stays.
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => taken.close());
  const busy = String((taken.address() as AddressInfo).port);
  const fresh = join(dir, 'fresh.db');
  const inUse = await run([...base, '--db', fresh, '--port', busy]);
  t.is(inUse.code, 5, inUse.stderr);
  t.regex(inUse.stderr, /cannot start/);
  t.deepEqual(
    readdirSync(dir).filter((f) => f.startsWith('fresh.db')),
    [],
    'no database file left behind by a start that failed',
  );
  const kept = join(dir, 'kept.db');
  writeFileSync(kept, '');
  t.is((await run([...base, '--db', kept, '--port', busy])).code, 5);
  t.true(existsSync(kept), 'a database that was there before stays');
});

test('serve accepts hex certificate files and stops cleanly on SIGTERM; revoke-terminal takes effect on the running service', async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const c = certFiles(dir, true);
  const db = join(dir, 'acq.db');
  // Debug logging: even then the acquirer key is never logged.
  const p = spawn(
    process.execPath,
    [
      BIN,
      'serve',
      '--ledger',
      `http://127.0.0.1:${await closedPort()}`,
      '--root',
      c.root,
      '--bank-cert',
      c.bank,
      '--ledger-cert',
      c.ledger,
      '--key',
      c.key,
      '--cert',
      c.cert,
      '--db',
      db,
      '--port',
      '0',
      '--log-level',
      'debug',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
  let out = '';
  p.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const url = await new Promise<string>((resolve) => {
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
  });
  const term = makeTerminal(pki, pki.acquiringBank);
  t.is((await submitBatch(url, makeBatch(term, 1, []))).seq, 1);
  const r = await run(['revoke-terminal', '--db', db, '--kid', toHex(term.kid), '--reason', 'lost']);
  t.is(r.code, 0, r.stderr);
  const err = await submitBatch(url, makeBatch(term, 2, [])).catch((e: unknown) => e);
  t.true(err instanceof AcquirerHttpError && err.code === 'TERMINAL_REVOKED');
  t.is((await run(['revoke-terminal', '--db', db, '--kid', 'nothex'])).code, 2);
  // A mistyped database path is refused (exit 2) and creates nothing: the revocation must not
  // land in an empty database the running service never reads.
  const missing = join(dir, 'acq-typo.db');
  const typo = await run(['revoke-terminal', '--db', missing, '--kid', toHex(term.kid)]);
  t.is(typo.code, 2, typo.stderr);
  t.regex(typo.stderr, /cannot open the acquirer database .*acq-typo\.db: no such file/);
  t.notRegex(typo.stdout, /revoked/);
  t.false(existsSync(missing));
  // Wait until the forwarder made its first (signed) settle call to the unreachable ledger.
  for (;;) {
    const h = (await (await fetch(`${url}/v1/health`)).json()) as { lastForwardError: string | null };
    if (h.lastForwardError !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  p.kill('SIGTERM');
  t.is(await exited, 0);
  t.false(out.includes(toHex(pki.acquirer.keys.secretKey)), 'the acquirer key is never logged');
  // The library refuses a second service on the same port as a start failure, not a crash.
  const acq = await startAcquirer({
    ledgerUrl: 'http://127.0.0.1:1',
    root: pki.root.cert,
    bankCert: pki.acquiringBank.cert,
    ledgerCert: pki.ledger.cert,
    ...acquirerIdentity(pki),
    dbFile: join(dir, 'b.db'),
    autoForward: false,
  });
  const port = new URL(acq.url).port;
  const busy = await run([
    'serve',
    '--ledger',
    'http://127.0.0.1:1',
    '--root',
    c.root,
    '--bank-cert',
    c.bank,
    '--ledger-cert',
    c.ledger,
    '--key',
    c.key,
    '--cert',
    c.cert,
    '--db',
    join(dir, 'c.db'),
    '--port',
    port,
    '--log-level',
    'silent',
  ]);
  await acq.close();
  t.is(busy.code, 5);
});

test("serve logs one JSON line per request on stderr in the ledger's format (method, route, status, duration), never a body or a query string", async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const c = certFiles(dir);
  const p = spawn(
    process.execPath,
    [
      BIN,
      'serve',
      '--ledger',
      `http://127.0.0.1:${await closedPort()}`,
      '--root',
      c.root,
      '--bank-cert',
      c.bank,
      '--ledger-cert',
      c.ledger,
      '--key',
      c.key,
      '--cert',
      c.cert,
      '--db',
      join(dir, 'log.db'),
      '--port',
      '0',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
  const url = await new Promise<string>((resolve) => {
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
  });
  const secret = 'PIN-1234-SECRET';
  await fetch(`${url}/v1/health?x=${secret}`);
  await fetch(`${url}/v1/batches`, {
    method: 'POST',
    headers: { 'content-type': 'application/cbor' },
    body: new TextEncoder().encode(secret),
  });
  p.kill('SIGTERM');
  t.is(await exited, 0);
  const requests = stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === 'request');
  t.deepEqual(
    requests.map((l) => [l.method, l.route, l.status]),
    [
      ['GET', '/v1/health', 200],
      ['POST', '/v1/batches', 400],
    ],
  );
  for (const l of requests) t.is(typeof l.durationMs, 'number');
  t.false(stderr.includes(secret));
});
