/**
 * The `dt-acquirer` command line: help, exit codes, and terminal revocation
 * against a running service's database.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { toHex } from '@dt/protocol';
import { startAcquirer, submitBatch, AcquirerHttpError } from '../src/index.ts';
import { closedPort, makeBatch, makePki, makeTerminal, tempDir } from './fixtures.ts';

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

function certFiles(dir: string, hex = false): { root: string; bank: string; ledger: string } {
  const w = (name: string, b: Uint8Array) => {
    const f = join(dir, name);
    writeFileSync(f, hex ? toHex(b) + '\n' : b);
    return f;
  };
  return { root: w('root.cert', pki.root.cert), bank: w('bank.cert', pki.acquiringBank.cert), ledger: w('ledger.cert', pki.ledger.cert) };
}

test('--help documents every serve option and the exit codes; exit 0', async (t) => {
  const r = await run(['serve', '--help']);
  t.is(r.code, 0);
  for (const o of ['--ledger', '--bank-cert', '--root', '--ledger-cert', '--db', '--port', '--host', '--max-body', '--crl-refresh', '--batches-per-call', '--log-level']) {
    t.true(r.stdout.includes(o), o);
  }
  const top = await run(['--help']);
  t.is(top.code, 0);
  t.regex(top.stdout, /Exit codes:/);
  t.regex(top.stdout, /revoke-terminal/);
});

test('exit codes: 2 for bad usage (with a message) or a missing certificate file, 4 for certificates that do not verify, 5 when the service cannot start', async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const c = certFiles(dir);
  const base = ['serve', '--ledger', 'http://127.0.0.1:1', '--root', c.root, '--bank-cert', c.bank, '--ledger-cert', c.ledger, '--log-level', 'silent'];
  t.is((await run(['serve'])).code, 2, 'missing required options');
  t.is((await run([...base, '--db', join(dir, 'a.db'), '--port', 'seventy'])).code, 2, 'invalid port');
  t.is((await run(['serve', '--bogus'])).code, 2, 'unknown option');
  const notUrl = await run(['serve', '--ledger', 'not-a-url', '--root', c.root, '--bank-cert', c.bank, '--ledger-cert', c.ledger, '--db', join(dir, 'a.db')]);
  t.is(notUrl.code, 2);
  t.regex(notUrl.stderr, /^dt-acquirer: --ledger must be an http\(s\) URL, e\.g\. http:\/\/127\.0\.0\.1:8440; got not-a-url$/m);
  const wrongBank = await run(['serve', '--ledger', 'http://127.0.0.1:1', '--root', c.root, '--bank-cert', c.ledger, '--ledger-cert', c.ledger, '--db', join(dir, 'a.db')]);
  t.is(wrongBank.code, 4);
  t.regex(wrongBank.stderr, /certificates do not verify/);
  const missing = await run(['serve', '--ledger', 'http://127.0.0.1:1', '--root', join(dir, 'missing'), '--bank-cert', c.bank, '--ledger-cert', c.ledger, '--db', join(dir, 'a.db')]);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /cannot read root certificate file .*missing: no such file/);
  const noDb = await run([...base, '--db', join(dir, 'no', 'such', 'dir', 'a.db'), '--port', '0']);
  t.is(noDb.code, 5);
  t.regex(noDb.stderr, /cannot start/);
});

test('serve accepts hex certificate files and stops cleanly on SIGTERM; revoke-terminal takes effect on the running service', async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const c = certFiles(dir, true);
  const db = join(dir, 'acq.db');
  const p = spawn(process.execPath, [BIN, 'serve', '--ledger', `http://127.0.0.1:${await closedPort()}`, '--root', c.root, '--bank-cert', c.bank, '--ledger-cert', c.ledger, '--db', db, '--port', '0', '--log-level', 'silent'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
  const url = await new Promise<string>((resolve) => {
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (\S+)/.exec(out);
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
  p.kill('SIGTERM');
  t.is(await exited, 0);
  // The library refuses a second service on the same port as a start failure, not a crash.
  const acq = await startAcquirer({ ledgerUrl: 'http://127.0.0.1:1', root: pki.root.cert, bankCert: pki.acquiringBank.cert, ledgerCert: pki.ledger.cert, dbFile: join(dir, 'b.db'), autoForward: false });
  const port = new URL(acq.url).port;
  const busy = await run(['serve', '--ledger', 'http://127.0.0.1:1', '--root', c.root, '--bank-cert', c.bank, '--ledger-cert', c.ledger, '--db', join(dir, 'c.db'), '--port', port, '--log-level', 'silent']);
  await acq.close();
  t.is(busy.code, 5);
});

test('serve logs one JSON line per request on stderr in the ledger\'s format (method, route, status, duration), never a body or a query string', async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const c = certFiles(dir);
  const p = spawn(process.execPath, [BIN, 'serve', '--ledger', `http://127.0.0.1:${await closedPort()}`, '--root', c.root, '--bank-cert', c.bank, '--ledger-cert', c.ledger, '--db', join(dir, 'log.db'), '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
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
  await fetch(`${url}/v1/batches`, { method: 'POST', headers: { 'content-type': 'application/cbor' }, body: new TextEncoder().encode(secret) });
  p.kill('SIGTERM');
  t.is(await exited, 0);
  const requests = stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'request');
  t.deepEqual(requests.map((l) => [l.method, l.route, l.status]), [['GET', '/v1/health', 200], ['POST', '/v1/batches', 400]]);
  for (const l of requests) t.is(typeof l.durationMs, 'number');
  t.false(stderr.includes(secret));
});
