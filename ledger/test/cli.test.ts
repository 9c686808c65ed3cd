import test from 'ava';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { pgAvailable, startPgCluster } from '../src/pg-cluster.ts';
import { randomBytes } from 'node:crypto';
import {
  CURRENCY_KZT,
  decodeDeterministic,
  encodeDeterministic,
  OutcomeStatus,
  ReferenceWallet,
  signMessage,
  verifySigned,
} from '@dt/protocol';
import { defaultValidators, openDataDir, POOL_MIN_CORES } from '../src/cli.ts';
import { Ledger } from '../src/ledger.ts';
import { buildLedgerApp } from '../src/server.ts';
import { openSqliteStorage } from '../src/storage/sqlite.ts';
import { nativeSigner } from '../src/native-signer.ts';
import { DEFAULT_CARD_LIMITS, issueCard, issueTerminal } from '../src/pki.ts';
import { signLoadOrder } from '../src/load.ts';
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
    t.is(run('init', '-d', data).status, 4, 'init refuses an initialized directory');
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
    t.is(run('acquirer-add', '-d', data, '--bank', 'iss', '--name', 'x').status, 2, 'an issuing-only bank: a usage error');
    const second = run('acquirer-add', '-d', data, '--bank', 'acq', '--name', 'acq-2', '--json');
    t.is(second.status, 0, second.stderr);
    t.is(run('acquirer-add', '-d', data, '--bank', 'acq', '--name', 'acq-2').status, 4, 'an existing acquirer is not overwritten');

    // The data directory's acquirer signs settle requests the ledger on that database accepts, until it is blocked.
    const d = openDataDir(data);
    const acquirer = d.acquirer('acq');
    t.is(Buffer.from(acquirer.kid).toString('hex'), acquirerKid);
    const ask = async () => {
      const ledger = await Ledger.open({
        storage: openSqliteStorage(join(data, 'ledger.db')),
        signer: nativeSigner(d.ledger.keys),
        rootCert: d.issuer.cert,
        ledgerCert: d.ledger.cert,
      });
      const app = buildLedgerApp(ledger);
      try {
        // An empty-handed batch list is not allowed; a batch of the bank's terminal with no handover is.
        const bank = d.bank('acq');
        const now = Math.floor(Date.now() / 1000);
        const term = issueTerminal(bank, { validity: { nbf: now - 60, exp: now + 3600 }, merchant: { id: 'm', mcc: 5411, name: 'm' } });
        const batch = signMessage(
          'Batch',
          { terminal: term.kid, seq: 1, time: now, chain: [...term.chain], handovers: [], crlVersion: 0 },
          term.signer,
        );
        const r = await app.inject({
          method: 'POST',
          url: '/v1/settle',
          headers: { 'content-type': 'application/cose' },
          payload: Buffer.from(signSettle(acquirer, [batch], { time: now })),
        });
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
    t.is(run('acquirer-block', '-d', data, '--kid', 'not-hex').status, 2);
    const help = execFileSync(process.execPath, [BIN, '--help']).toString();
    for (const c of ['acquirer-add', 'acquirer-block', 'acquirer-unblock']) t.regex(help, new RegExp(`^  ${c} `, 'm'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Runs `dt-ledger serve` until `during` resolves, then SIGTERM; gives stdout, stderr and the exit code. */
async function serving(
  args: string[],
  during: (url: string) => Promise<void>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, [BIN, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
  const url = await new Promise<string>((resolve, reject) => {
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(stdout);
      if (m) resolve(m[1]!);
    });
    void exited.then((c) => reject(new Error(`dt-ledger serve exited ${c}: ${stderr}`)));
  });
  try {
    await during(url);
  } finally {
    p.kill('SIGTERM');
  }
  return { code: await exited, stdout, stderr };
}

test('dt-ledger exit codes: usage 2, not initialized 4, already initialized 4, PostgreSQL unreachable 3; --help lists them; amounts in tenge', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-ledger-codes-'));
  const data = join(dir, 'd');
  try {
    const help = run('--help');
    t.is(help.status, 0);
    t.regex(help.stdout, /Exit codes:\n  0   success/);
    t.is(run('audit', '-d', data, '--frobnicate').status, 2);
    t.is(run('allocate', '-d', data, '--bank', 'b', '--amount', '12.5').status, 2, 'an amount is integer tiyn');
    const none = run('audit', '-d', data);
    t.is(none.status, 4);
    t.regex(none.stderr, /not an initialized data directory/);
    writeFileSync(join(dir, 'a-file'), '');
    const notDir = run('init', '-d', join(dir, 'a-file'));
    t.is(notDir.status, 2, notDir.stderr);
    t.regex(notDir.stderr, /-d .*a-file: cannot create the data directory: ENOTDIR/);
    // Where nothing can be created and the parent "is missing" too (Node's recursive mkdir never returns there).
    const proc = spawnSync(process.execPath, [BIN, 'init', '-d', '/proc/dt-no-such'], { encoding: 'utf8', timeout: 60_000 });
    t.is(proc.signal, null, 'init returned');
    t.is(proc.status, 2, proc.stderr);
    t.regex(proc.stderr, /-d \/proc\/dt-no-such: cannot create the data directory: ENOENT/);
    t.is(run('init', '-d', data).status, 0);
    t.is(run('init', '-d', data).status, 4);
    t.is(run('bank-add', '-d', data, '--name', 'b1', '--allocate', '150000').status, 0);
    const human = run('audit', '-d', data);
    t.regex(human.stdout, /issued +1500\.00 KZT/);
    t.regex(human.stdout, /difference +0\.00 KZT/);
    const bankKey = readFileSync(join(data, 'banks', 'b1.key.json'));
    const again = run('bank-add', '-d', data, '--name', 'b1');
    t.is(again.status, 4, 'the bank exists already: nothing overwritten');
    t.regex(again.stderr, /^dt-ledger: bank b1 exists already\n$/);
    t.deepEqual(readFileSync(join(data, 'banks', 'b1.key.json')), bankKey);
    // Only init creates a database: a mistyped --db, or a directory without its ledger.db, is refused, never a new empty ledger.
    const typo = run('audit', '-d', data, '--db', join(dir, 'typo.db'));
    t.is(typo.status, 2, typo.stderr);
    t.regex(typo.stderr, /--db .*typo\.db: no such database file/);
    t.false(existsSync(join(dir, 'typo.db')));
    t.is(run('audit', '-d', data, '--db', join(dir, 'no', 'such', 'dir.db')).status, 2);
    const bare = join(dir, 'bare');
    mkdirSync(bare);
    const noDb = run('acquirer-block', '-d', bare, '--kid', '00'.repeat(16));
    t.is(noDb.status, 4, noDb.stderr);
    t.regex(noDb.stderr, /has no ledger database \(no ledger\.db/);
    t.false(existsSync(join(bare, 'ledger.db')));
    t.is(run('bank-add', '-d', data, '--name', 'bad name').status, 2);
    // An allocation that would take the issued total past a safe integer is refused and changes nothing: audit still reads the books.
    const huge = run('allocate', '-d', data, '--bank', 'b1', '--amount', String(Number.MAX_SAFE_INTEGER - 150000 + 1));
    t.is(huge.status, 1, huge.stderr);
    t.regex(huge.stderr, /the issued total would exceed 9007199254740991 tiyn/);
    t.is(run('allocate', '-d', data, '--bank', 'b1', '--amount', String(Number.MAX_SAFE_INTEGER - 150000)).status, 0, 'up to the limit');
    const full = run('audit', '-d', data);
    t.is(full.status, 0, full.stderr);
    t.regex(full.stdout, /issued +90071992547409\.91 KZT/);
    const nobank = run('allocate', '-d', data, '--bank', 'nobank', '--amount', '5');
    t.is(nobank.status, 2, 'a bank the data directory does not hold is a bad --bank value');
    t.regex(nobank.stderr, /has no bank nobank \(banks: b1\b.*; add one with dt-ledger bank-add\)/);
    const pg = run('init', '-d', join(dir, 'pg'), '--pg', `postgresql://postgres@/nodb?host=${join(dir, 'no-socket-here')}`);
    t.is(pg.status, 3, pg.stderr);
    t.regex(pg.stderr, /cannot reach PostgreSQL/);
    const notUrl = run('audit', '-d', data, '--pg', 'ledger');
    t.is(notUrl.status, 2, 'a --pg that is no postgresql:// URL is a bad value, not an unreachable server');
    t.regex(notUrl.stderr, /option '--pg <url>' argument 'ledger' is invalid\. must be a postgresql:\/\/ connection URL/);
    t.false(existsSync(join(dir, 'pg', 'issuer.key.json')), 'no key is written when the database cannot be opened');
    t.is(run('init', '-d', join(dir, 'pg')).status, 0, 'so init can run again');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('dt-ledger serve logs one JSON line per request on stderr (method, route, status, duration), never a body or a query string; --log-level warn logs none', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-ledger-log-'));
  const data = join(dir, 'd');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.is(run('init', '-d', data).status, 0);
  const secret = 'PIN-1234-SECRET';
  const r = await serving(['-d', data, '--port', '0'], async (url) => {
    t.is((await fetch(`${url}/v1/health`)).status, 200);
    t.is((await fetch(`${url}/v1/crl?token=${secret}`)).status, 200);
    t.is(
      (
        await fetch(`${url}/v1/sync`, {
          method: 'POST',
          headers: { 'content-type': 'application/cbor' },
          body: new TextEncoder().encode(secret),
        })
      ).status,
      400,
    );
  });
  t.is(r.code, 0, r.stderr);
  // JSON lines (node may print a warning of its own first).
  const lines = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const requests = lines.filter((l) => l.msg === 'request');
  t.deepEqual(
    requests.map((l) => [l.method, l.route, l.status]),
    [
      ['GET', '/v1/health', 200],
      ['GET', '/v1/crl', 200],
      ['POST', '/v1/sync', 400],
    ],
  );
  for (const l of requests) {
    t.is(typeof l.durationMs, 'number');
    t.is(l.level, 30);
  }
  t.false(r.stderr.includes(secret), 'no body or query string in the log');
  const quiet = await serving(['-d', data, '--port', '0', '--log-level', 'warn'], async (url) => {
    t.is((await fetch(`${url}/v1/health`)).status, 200);
  });
  t.false(quiet.stderr.includes('"msg":"request"'));
  t.is(run('serve', '-d', data, '--log-level', 'chatty').status, 2);
});

test('dt-ledger init --pg creates the database in PostgreSQL, like every database command', async (t) => {
  if (!pgAvailable()) {
    if (process.env.CI) t.fail('PostgreSQL server binaries are required in CI');
    else t.log('PostgreSQL not installed: skipped');
    return;
  }
  const cluster = startPgCluster({ fsync: false });
  const dir = mkdtempSync(join(tmpdir(), 'dt-ledger-pg-'));
  t.teardown(() => {
    cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const db = cluster.createDatabase('cli_init');
  const url = `postgresql://${db.user}@/${db.database}?host=${String(db.host)}`;
  const data = join(dir, 'd');
  const init = run('init', '-d', data, '--pg', url, '--json');
  t.is(init.status, 0, init.stderr);
  t.is((JSON.parse(init.stdout) as { storage: string }).storage, 'postgres');
  t.false(existsSync(join(data, 'ledger.db')), 'no SQLite file');
  t.is(run('bank-add', '-d', data, '--pg', url, '--name', 'b1', '--allocate', '5000').status, 0);
  const audit = run('audit', '-d', data, '--pg', url, '--json');
  t.is(audit.status, 0, audit.stderr);
  t.like(JSON.parse(audit.stdout), { ok: true, issued: 5000 });
});

test('dt-ledger serve starts its validator pool (--validators 2) and settles a payment through it: the start line and /v1/metrics name the threads', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-ledger-pool-'));
  const data = join(dir, 'd');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.is(run('init', '-d', data).status, 0);
  t.is(run('bank-add', '-d', data, '--name', 'acq', '--allocate', '100000').status, 0);
  const d = openDataDir(data);
  const bank = d.bank('acq');
  const now = Math.floor(Date.now() / 1000);
  const validity = { nbf: now - 60, exp: now + 86400 };
  const card = issueCard(bank, { validity, limits: DEFAULT_CARD_LIMITS });
  const wallet = new ReferenceWallet({ signer: card.signer, chain: card.chain });
  const term = issueTerminal(bank, { validity, merchant: { id: 'm', mcc: 5411, name: 'm' } });
  const post = async (url: string, body: Uint8Array, type = 'application/cbor') => {
    const r = await fetch(url, { method: 'POST', headers: { 'content-type': type }, body: Buffer.from(body) });
    t.is(r.status, 200, await r.clone().text());
    return new Uint8Array(await r.arrayBuffer());
  };
  const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1]);
  const r = await serving(['-d', data, '--port', '0', '--validators', '2'], async (url) => {
    await post(`${url}/v1/cards`, encodeDeterministic([...card.chain]));
    await post(
      `${url}/v1/loads`,
      signLoadOrder({ card: card.kid, amount: 5000, id: new Uint8Array(randomBytes(16)), time: now }, bank.signer),
    );
    wallet.completeSync(await post(`${url}/v1/sync`, wallet.beginSync(new Uint8Array(randomBytes(16)))), d.ledger.keys.publicKey);
    const request = {
      amount: 1200,
      currency: CURRENCY_KZT,
      terminal: term.kid,
      merchant: 'm',
      mcc: 5411,
      nonce: new Uint8Array(randomBytes(16)),
      time: now,
      chain: [...term.chain],
    };
    const { handover } = wallet.pay(request);
    const batch = signMessage(
      'Batch',
      { terminal: term.kid, seq: 1, time: now, chain: [...term.chain], handovers: [handover], crlVersion: 0 },
      term.signer,
    );
    const answer = decodeDeterministic(
      await post(`${url}/v1/settle`, signSettle(d.acquirer('acq'), [batch], { time: now }), 'application/cose'),
    ) as Uint8Array[][];
    t.is(verifySigned('Outcome', answer[0]![0]!, d.ledger.keys.publicKey).message.status, OutcomeStatus.SETTLED);
    const m = await (await fetch(`${url}/v1/metrics`)).text();
    t.is(metric(m, 'dt_ledger_validator_threads'), 2);
    t.is(metric(m, 'dt_ledger_validator_restarts_total'), 0);
    t.is(metric(m, 'dt_ledger_transfers_settled_total'), 1);
  });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /listening on http:\/\/\S+ \(sqlite, 2 validator threads\)/);
  const main = await serving(['-d', data, '--port', '0', '--validators', '0'], async (url) => {
    t.is(metric(await (await fetch(`${url}/v1/metrics`)).text(), 'dt_ledger_validator_threads'), 0);
  });
  t.regex(main.stdout, /\(sqlite, validation in the main thread\)/);
  t.is(run('serve', '-d', data, '--validators', 'two').status, 2);
  t.regex(run('serve', '--help').stdout, /--validators <n>/);
});

test("serve's default --validators: one per core on PostgreSQL, on SQLite one per core from 4 cores and none below; the help says what applies here, and serve on SQLite without the option starts so", async (t) => {
  t.is(POOL_MIN_CORES, 4);
  t.deepEqual(
    [1, 2, 3, 4, 8, 64].map((c) => defaultValidators('sqlite', c)),
    [0, 0, 0, 4, 8, 64],
  );
  t.deepEqual(
    [1, 2, 3, 4, 8, 64].map((c) => defaultValidators('postgres', c)),
    [1, 2, 3, 4, 8, 64],
  );
  const cores = availableParallelism();
  const here = defaultValidators('sqlite');
  t.is(here, cores >= 4 ? cores : 0);
  const help = run('serve', '--help').stdout.replace(/\s+/g, ' ');
  t.true(
    help.includes(
      `(default: one per core with --pg; with SQLite one per core from 4 cores, none below (here, with ${cores} cores: ${cores} with --pg, ${here} with SQLite))`,
    ),
    help,
  );
  const dir = mkdtempSync(join(tmpdir(), 'dt-ledger-default-'));
  const data = join(dir, 'd');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.is(run('init', '-d', data).status, 0);
  const r = await serving(['-d', data, '--port', '0'], async (url) => {
    const m = await (await fetch(`${url}/v1/metrics`)).text();
    t.is(Number(/^dt_ledger_validator_threads (\d+)$/m.exec(m)?.[1]), here);
  });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, here === 0 ? /\(sqlite, validation in the main thread\)/ : new RegExp(`\\(sqlite, ${here} validator threads\\)`));
  if (!pgAvailable()) {
    if (process.env.CI) t.fail('PostgreSQL server binaries are required in CI');
    else t.log('PostgreSQL not installed: the --pg default not checked');
    return;
  }
  const cluster = startPgCluster({ fsync: false });
  t.teardown(() => cluster.stop());
  const db = cluster.createDatabase('cli_default_validators');
  const url = `postgresql://${db.user}@/${db.database}?host=${String(db.host)}`;
  const pgData = join(dir, 'pg');
  t.is(run('init', '-d', pgData, '--pg', url).status, 0);
  const pg = await serving(['-d', pgData, '--pg', url, '--port', '0'], async (u) => {
    t.is(Number(/^dt_ledger_validator_threads (\d+)$/m.exec(await (await fetch(`${u}/v1/metrics`)).text())?.[1]), cores);
  });
  t.is(pg.code, 0, pg.stderr);
  t.regex(pg.stdout, new RegExp(`\\(postgres, ${cores} validator threads\\)`));
});
