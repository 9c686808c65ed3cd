/**
 * The README's "Operator guide", run as a person runs it: every step is one of
 * the toolkit's commands started as a process (no library calls), against a
 * private pcscd with simulated cards served through vpcd (`dt-card serve
 * --vpcd`). Checks every exit code, every balance and the books at the end:
 * ledger, bank, acquirer and terminal set up, a card issued and loaded, taps
 * over PC/SC, sync and settlement, the card synced, lost, blocked (declined at
 * the terminal after its next sync) and restored to the bank, loaded onto a
 * replacement card, which is unloaded back to the bank.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pcscdUnavailableReason, startPcscd, type PcscdHandle } from '@dt/card-applet-sim';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BIN: Record<string, string> = {
  'dt-ledger': 'ledger/bin/dt-ledger.js',
  'dt-acquirer': 'acquirer/bin/dt-acquirer.js',
  'dt-pos': 'terminal/bin/dt-pos.js',
  'dt-card': 'card-applet-sim/bin/dt-card.js',
  'dt-bank': 'bank/bin/dt-bank.js',
  'dt-wallet': 'bank/bin/dt-wallet.js',
};

interface Done {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command; `input` is its stdin (the guide's `printf '1234\n…' | cmd --pin-stdin`), else stdin is empty. */
function sh(cwd: string, env: NodeJS.ProcessEnv, cmd: string, ...args: string[]): Promise<Done> {
  return shIn(cwd, env, '', cmd, ...args);
}

function shIn(cwd: string, env: NodeJS.ProcessEnv, input: string, cmd: string, ...args: string[]): Promise<Done> {
  return new Promise((done, fail) => {
    const p = spawn(process.execPath, [join(ROOT, BIN[cmd]!), ...args], {
      cwd,
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    p.stdin.end(input);
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', fail);
    p.on('close', (code) => done({ code, stdout, stderr }));
  });
}

/** Starts a server command; resolves with the process and the first URL it prints. */
function serve(cwd: string, env: NodeJS.ProcessEnv, cmd: string, ...args: string[]): Promise<{ p: ChildProcess; url: string }> {
  return new Promise((done, fail) => {
    const p = spawn(process.execPath, [join(ROOT, BIN[cmd]!), ...args], {
      cwd,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /https?:\/\/[0-9.]+:\d+/.exec(out);
      if (m) done({ p, url: m[0] });
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => fail(new Error(`${cmd} exited ${code}: ${out}${err}`)));
  });
}

/** Starts `dt-card serve --vpcd`; resolves when it is connected to pcscd. */
function serveCard(cwd: string, file: string, port: number): Promise<ChildProcess> {
  return new Promise((done, fail) => {
    const p = spawn(process.execPath, [join(ROOT, BIN['dt-card']!), 'serve', file, '--vpcd', '--port', String(port)], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (/ connected /.test(out)) done(p);
    });
    p.on('close', (code) => fail(new Error(`dt-card serve exited ${code}: ${out}`)));
  });
}

function stop(p: ChildProcess): Promise<void> {
  return new Promise((done) => {
    if (p.exitCode !== null) return done();
    p.removeAllListeners('close');
    p.once('close', () => done());
    p.kill('SIGTERM');
  });
}

const json = (d: Done): any => JSON.parse(d.stdout.trim().split('\n').at(-1)!);

test('the operator guide: ledger, bank, acquirer, terminal, a card issued, loaded, tapped over PC/SC, synced, lost, blocked, restored to a new card, unloaded; every exit code, balance and the books', async (t) => {
  const why = pcscdUnavailableReason();
  if (process.env.CI === 'true') t.is(why, undefined, `CI must run the operator guide: ${why}`);
  if (why !== undefined) {
    t.log(`pcscd unavailable (${why}): the guide needs a private pcscd`);
    t.pass();
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'dt-operator-'));
  const servers: ChildProcess[] = [];
  const pcscd: PcscdHandle = await startPcscd();
  t.teardown(async () => {
    for (const s of servers.reverse()) await stop(s);
    await pcscd.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const env = { PCSCLITE_CSOCK_NAME: pcscd.socketPath };
  const run = (cmd: string, ...args: string[]) => sh(dir, env, cmd, ...args);
  const ok = async (cmd: string, ...args: string[]): Promise<any> => {
    const r = await run(cmd, ...args, '--json');
    t.is(r.code, 0, `${cmd} ${args.join(' ')}: ${r.stdout}${r.stderr}`);
    return json(r);
  };
  /** `printf '<input>' | cmd ...`: the guide's way to give PINs and PUKs (--pin-stdin). */
  const runIn = (input: string, cmd: string, ...args: string[]) => shIn(dir, env, input, cmd, ...args);
  const okIn = async (input: string, cmd: string, ...args: string[]): Promise<any> => {
    const r = await runIn(input, cmd, ...args, '--json');
    t.is(r.code, 0, `${cmd} ${args.join(' ')}: ${r.stdout}${r.stderr}`);
    return json(r);
  };
  const B = 'L/banks/halyk.key.json';

  // 1. Issuer and ledger.
  await ok('dt-ledger', 'init', '-d', 'L');
  const bank = await ok('dt-ledger', 'bank-add', '-d', 'L', '--name', 'halyk', '--allocate', '100000000');
  t.is(bank.allocated, 100_000_000);
  await ok('dt-ledger', 'bank-credit-line', '-d', 'L', '--bank', 'halyk', '--amount', '1000000');
  const ledger = await serve(dir, env, 'dt-ledger', 'serve', '-d', 'L', '--port', '0', '--void-window', '4', '--log-level', 'silent');
  servers.push(ledger.p);
  const U = ledger.url;
  const acq = await serve(
    dir,
    env,
    'dt-acquirer',
    'serve',
    '--ledger',
    U,
    '--bank-cert',
    'L/banks/halyk.cert',
    '--root',
    'L/root.cert',
    '--ledger-cert',
    'L/ledger.cert',
    '--key',
    'L/acquirers/halyk.key.json',
    '--cert',
    'L/acquirers/halyk.cert',
    '--db',
    'acquirer.db',
    '--port',
    '0',
    '--crl-refresh',
    '1',
    '--log-level',
    'silent',
  );
  servers.push(acq.p);

  // 2. The merchant's terminal, certified by the bank.
  const init = await ok(
    'dt-pos',
    '-d',
    'T',
    'init',
    '--merchant-id',
    'shop-1',
    '--mcc',
    '5411',
    '--name',
    'Corner Shop',
    '--acquirer',
    acq.url,
  );
  t.false(init.initialized);
  const signed = await ok('dt-bank', 'sign-terminal', 'T/certificate-request.cbor', '--bank-key', B, '--out', 'terminal.cert');
  t.is(signed.terminal, init.terminal);
  await ok(
    'dt-pos',
    '-d',
    'T',
    'install-cert',
    '--cert',
    'terminal.cert',
    '--bank-cert',
    'L/banks/halyk.cert',
    '--root',
    'L/root.cert',
    '--ledger-cert',
    'L/ledger.cert',
  );
  t.true((await ok('dt-pos', '-d', 'T', 'sync')).online);

  // 3. A card issued, registered and loaded.
  await ok('dt-card', 'create', 'alice.card');
  const alice = await okIn(
    '1234\n12345678\n',
    'dt-bank',
    'issue',
    '--card',
    'alice.card',
    '--bank-key',
    B,
    '--pin-stdin',
    '--cvm-limit',
    '200',
    '--ledger',
    U,
  );
  t.true(alice.registered);
  const K = alice.card as string;
  await ok('dt-bank', 'load-order', '--bank-key', B, '--card-kid', K, '--amount', '500', '--out', 'order.cbor');
  t.is((await ok('dt-wallet', 'load', '500', '--order', 'order.cbor', '--card', 'alice.card', '--ledger', U)).balance, 50_000);
  // The same order again is refused before the card is touched.
  const again = await run('dt-wallet', 'load', '500', '--order', 'order.cbor', '--card', 'alice.card', '--ledger', U);
  t.is(again.code, 1, again.stderr);
  t.regex(again.stderr, /ALREADY_DELIVERED/);
  t.false((await ok('dt-wallet', 'status', '--card', 'alice.card')).syncPending);

  // 4. Taps over PC/SC: the card in pcscd's vpcd reader.
  const card = await serveCard(dir, 'alice.card', pcscd.vpcdPort);
  servers.push(card);
  t.is((await ok('dt-pos', '-d', 'T', 'charge', '120', '--reader', 'pcsc', '--timeout', '30')).outcome, 'APPROVED');
  t.is((await ok('dt-pos', '-d', 'T', 'charge', '30.50', '--reader', 'pcsc', '--timeout', '30')).outcome, 'APPROVED');
  const status = await ok('dt-wallet', 'status', '--reader', 'pcsc', '--ledger', U);
  t.is(status.balance, 50_000 - 12_000 - 3_050);
  t.deepEqual(status.offline, { count: 2, value: 15_050 });

  // 5. The terminal syncs: both payments settle at the ledger (the acquirer forwards them).
  let pending = 2;
  for (let i = 0; i < 20 && pending > 0; i++) pending = (await ok('dt-pos', '-d', 'T', 'sync')).pending.count;
  t.is(pending, 0);
  const report = await ok('dt-pos', '-d', 'T', 'report');
  t.deepEqual(report.byState.settled, { count: 2, amount: 15_050 });

  // 6. The card syncs: fresh tokens for what it holds.
  const synced = await ok('dt-wallet', 'sync', '--reader', 'pcsc', '--ledger', U);
  t.is(synced.payments, 2);
  t.is(synced.balance, 34_950);

  // 7. The card is lost: its bank blocks it; the terminal declines it after its next sync.
  const blocked = await ok('dt-bank', 'block-card', '--bank-key', B, '--card-kid', K, '--ledger', U);
  t.true(blocked.crlVersion >= 1);
  // The acquirer refreshes its list from the ledger every second here (--crl-refresh 1) and serves
  // what it holds: the terminal syncs until it holds a list that names the card.
  let crlVersion = 0;
  for (let i = 0; i < 40 && crlVersion < blocked.crlVersion; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 250));
    crlVersion = (await ok('dt-pos', '-d', 'T', 'sync')).crl?.version ?? 0;
  }
  t.true(crlVersion >= blocked.crlVersion, `the terminal holds list ${crlVersion}, the block made ${blocked.crlVersion}`);
  const declined = await run('dt-pos', '-d', 'T', 'charge', '10', '--reader', 'pcsc', '--timeout', '30', '--json');
  t.is(declined.code, 1, declined.stdout + declined.stderr);
  t.is(json(declined).outcome, 'DECLINED');
  const refusedSync = await run('dt-wallet', 'sync', '--reader', 'pcsc', '--ledger', U);
  t.is(refusedSync.code, 1, refusedSync.stderr);
  t.regex(refusedSync.stderr, /CARD_REVOKED/);
  await stop(card);

  // 8. After the void window the bank has the value restored, and loads it onto a new card.
  const early = await run('dt-bank', 'restore-card', '--bank-key', B, '--card-kid', K, '--ledger', U);
  if (early.code !== 0) {
    t.is(early.code, 1);
    t.regex(early.stderr, /TOO_EARLY/);
  }
  await new Promise((r) => setTimeout(r, 5000)); // the guide's `sleep 5`: the ledger's --void-window is 4 s
  const restored = await ok('dt-bank', 'restore-card', '--bank-key', B, '--card-kid', K, '--ledger', U, '--out', 'restitution.cose');
  t.is(restored.amount, 34_950);
  await ok('dt-card', 'create', 'bob.card');
  const bob = await okIn('4321\n87654321\n', 'dt-bank', 'issue', '--card', 'bob.card', '--bank-key', B, '--pin-stdin', '--ledger', U);
  t.is((await ok('dt-bank', 'load', '--bank-key', B, '--card-kid', bob.card, '--amount', '349.50', '--ledger', U)).state, 'pending');
  t.is((await ok('dt-wallet', 'sync', '--card', 'bob.card', '--ledger', U)).balance, 34_950);
  await okIn('4321\n2468\n', 'dt-wallet', 'change-pin', '--card', 'bob.card', '--pin-stdin');
  const wrong = await runIn('4321\n', 'dt-wallet', 'unload', '--card', 'bob.card', '--pin-stdin', '--ledger', U);
  t.is(wrong.code, 1, wrong.stderr);
  t.regex(wrong.stderr, /WRONG_PIN/);

  // 9. The holder unloads the new card: the value goes back to the bank, the card is empty.
  const unloaded = await okIn('2468\n', 'dt-wallet', 'unload', '--card', 'bob.card', '--pin-stdin', '--ledger', U);
  t.is(unloaded.redeemed, 34_950);
  t.is(unloaded.balance, 0);
  t.is((await ok('dt-wallet', 'status', '--card', 'bob.card')).balance, 0);

  // 10. The books: the bank has everything but what the merchant was paid.
  t.is((await ok('dt-bank', 'balance', '--bank-key', B, '--ledger', U)).balance, 100_000_000 - 15_050);
  const audit = await ok('dt-ledger', 'audit', '-d', 'L');
  t.true(audit.ok);
  t.is(audit.difference, 0);
  t.is(audit.redeemed, 15_050);
  t.is(audit.bankBalances, 100_000_000 - 15_050);
  t.is(audit.unspentTokens + audit.unspentChange + audit.pendingPayee + audit.pendingLoads, 0);
});
