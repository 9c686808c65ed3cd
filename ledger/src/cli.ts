/**
 * `dt-ledger`: the ledger's command line (see README.md).
 *
 * Data directory layout (created by `init`):
 * - `issuer.key.json`, `ledger.key.json`, `banks/<name>.key.json`: key pairs, mode 0600 (never printed);
 * - `root.cert`, `ledger.cert`, `banks/<name>.cert`: certificates (COSE_Sign1 CWT bytes);
 * - `ledger.db`: the SQLite database (unless `--pg` selects PostgreSQL).
 *
 * @module
 */
import { Command, Option } from 'commander';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fromHex, publicKeyOf, toHex, type KeyPair } from '@dt/protocol';
import { Ledger } from './ledger.ts';
import { createIssuer, identityFrom, issueBank, issueLedgerCert, type Identity } from './pki.ts';
import { openSqliteStorage } from './storage/sqlite.ts';
import { openPostgresStorage } from './storage/postgres.ts';
import { startLedgerServer } from './server.ts';
import { nativeSigner } from './native-signer.ts';
import type { LedgerStorage } from './storage/types.ts';

const YEAR = 365 * 86400;
const nowSec = () => Math.floor(Date.now() / 1000);

/** Writes a key pair file readable only by its owner. */
export function writeKeyFile(path: string, keys: KeyPair): void {
  writeFileSync(path, JSON.stringify({ alg: 'ES256', secretKey: toHex(keys.secretKey), publicKey: toHex(keys.publicKey) }) + '\n', { mode: 0o600, flag: 'wx' });
  chmodSync(path, 0o600);
}

/** Reads a key pair file written by {@link writeKeyFile}, checking that the public key matches. */
export function readKeyFile(path: string): KeyPair {
  const j = JSON.parse(readFileSync(path, 'utf8')) as { secretKey: string; publicKey: string };
  const secretKey = fromHex(j.secretKey);
  const publicKey = publicKeyOf(secretKey);
  if (toHex(publicKey) !== j.publicKey) throw new Error(`${path}: public key does not match the secret key`);
  return { secretKey, publicKey };
}

/** The identities of a data directory. */
export interface DataDir {
  readonly dir: string;
  readonly issuer: Identity;
  readonly ledger: Identity;
  bank(name: string): Identity;
}

/** Opens the identities of a data directory created by `dt-ledger init`. */
export function openDataDir(dir: string): DataDir {
  const rootCert = new Uint8Array(readFileSync(join(dir, 'root.cert')));
  const ledgerCert = new Uint8Array(readFileSync(join(dir, 'ledger.cert')));
  return {
    dir,
    issuer: identityFrom(readKeyFile(join(dir, 'issuer.key.json')), [rootCert]),
    ledger: identityFrom(readKeyFile(join(dir, 'ledger.key.json')), [ledgerCert]),
    bank: (name) => identityFrom(readKeyFile(join(dir, 'banks', `${name}.key.json`)), [new Uint8Array(readFileSync(join(dir, 'banks', `${name}.cert`)))]),
  };
}

interface StorageOpts { data: string; pg?: string; db?: string }

async function openStorage(o: StorageOpts): Promise<LedgerStorage> {
  if (o.pg) return openPostgresStorage({ connectionString: o.pg });
  return openSqliteStorage(o.db ?? join(o.data, 'ledger.db'));
}

async function openLedger(o: StorageOpts & { voidWindow?: string }): Promise<Ledger> {
  const d = openDataDir(o.data);
  return Ledger.open({
    storage: await openStorage(o),
    signer: nativeSigner(d.ledger.keys),
    rootCert: d.issuer.cert,
    ledgerCert: d.ledger.cert,
    ...(o.voidWindow ? { voidWindow: Number(o.voidWindow) } : {}),
  });
}

function out(json: boolean, obj: unknown, text: string): void {
  process.stdout.write(json ? JSON.stringify(obj) + '\n' : text + '\n');
}

const storageOptions = (c: Command) =>
  c
    .requiredOption('-d, --data <dir>', 'data directory created by `dt-ledger init`')
    .option('--db <file>', 'SQLite database file (default: <data>/ledger.db)')
    .option('--pg <url>', 'use PostgreSQL at this connection string instead of SQLite (e.g. postgresql://user@/db?host=/run/postgresql)')
    .option('--json', 'machine-readable JSON output');

/** Builds the `dt-ledger` program (exported for tests). */
export function buildProgram(): Command {
  const program = new Command('dt-ledger')
    .description('DT reference ledger and notary: issuance, loads, syncs, settlement of offline transfers, double-spend proofs, revocation')
    .showHelpAfterError();

  program
    .command('init')
    .description('create the issuer root and the ledger key and certificate in a new data directory (private keys are written with mode 0600 and never printed)')
    .requiredOption('-d, --data <dir>', 'data directory to create')
    .option('--issuer-name <name>', 'subject name of the issuer root', 'DT issuer')
    .option('--json', 'machine-readable JSON output')
    .action(async (o: { data: string; issuerName: string; json?: boolean }) => {
      if (existsSync(join(o.data, 'issuer.key.json'))) throw new Error(`${o.data} is already initialized`);
      mkdirSync(join(o.data, 'banks'), { recursive: true, mode: 0o700 });
      const now = nowSec();
      const validity = { nbf: now - 86400, exp: now + 10 * YEAR };
      const issuer = createIssuer({ now, name: o.issuerName });
      const ledger = issueLedgerCert(issuer, { validity });
      writeKeyFile(join(o.data, 'issuer.key.json'), issuer.keys);
      writeKeyFile(join(o.data, 'ledger.key.json'), ledger.keys);
      writeFileSync(join(o.data, 'root.cert'), issuer.cert);
      writeFileSync(join(o.data, 'ledger.cert'), ledger.cert);
      // Create the database (and the signed empty revocation list).
      const l = await openLedger({ data: o.data });
      await l.storage.close();
      out(!!o.json, { data: o.data, issuerKid: toHex(issuer.kid), ledgerKid: toHex(ledger.kid) },
        `initialized ${o.data}\nissuer root kid ${toHex(issuer.kid)}\nledger kid      ${toHex(ledger.kid)}`);
    });

  storageOptions(
    program
      .command('bank-add')
      .description('certify a bank under the issuer root, register it with the ledger, and optionally allocate value to it')
      .requiredOption('--name <name>', 'bank name (also the key file name under <data>/banks)')
      .addOption(new Option('--perms <perms>', 'comma-separated permissions').choices(['issuing', 'acquiring', 'issuing,acquiring', 'acquiring,issuing']).default('issuing,acquiring'))
      .option('--allocate <amount>', 'value (tiyn) the issuer allocates to the bank'),
  ).action(async (o: StorageOpts & { name: string; perms: string; allocate?: string; json?: boolean }) => {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(o.name)) throw new Error('bank name: letters, digits, _ and - only');
    const d = openDataDir(o.data);
    const now = nowSec();
    const perms = (o.perms.includes('issuing') ? 1 : 0) | (o.perms.includes('acquiring') ? 2 : 0);
    const bank = issueBank(d.issuer, { name: o.name, perms, validity: { nbf: now - 86400, exp: now + 5 * YEAR } });
    writeKeyFile(join(o.data, 'banks', `${o.name}.key.json`), bank.keys);
    writeFileSync(join(o.data, 'banks', `${o.name}.cert`), bank.cert);
    const l = await openLedger(o);
    try {
      await l.registerBank(bank.cert);
      if (o.allocate) await l.allocate(bank.kid, Number(o.allocate), new Uint8Array(randomBytes(16)));
    } finally {
      await l.storage.close();
    }
    out(!!o.json, { name: o.name, kid: toHex(bank.kid), perms, allocated: Number(o.allocate ?? 0) }, `bank ${o.name} kid ${toHex(bank.kid)} perms ${o.perms}${o.allocate ? ` allocated ${o.allocate}` : ''}`);
  });

  storageOptions(
    program
      .command('allocate')
      .description('the issuer allocates new value (tiyn) to a registered bank')
      .requiredOption('--bank <name>', 'bank name under <data>/banks')
      .requiredOption('--amount <amount>', 'value in tiyn'),
  ).action(async (o: StorageOpts & { bank: string; amount: string; json?: boolean }) => {
    const d = openDataDir(o.data);
    const l = await openLedger(o);
    try {
      await l.allocate(d.bank(o.bank).kid, Number(o.amount), new Uint8Array(randomBytes(16)));
    } finally {
      await l.storage.close();
    }
    out(!!o.json, { bank: o.bank, amount: Number(o.amount) }, `allocated ${o.amount} to ${o.bank}`);
  });

  storageOptions(
    program
      .command('serve')
      .description('run the ledger HTTP API (POST /v1/settle, /v1/sync, /v1/loads, /v1/cards; GET /v1/crl, /v1/health, /v1/metrics)')
      .option('-p, --port <port>', 'TCP port (0: any free port)', '8440')
      .option('--host <host>', 'listen address', '127.0.0.1')
      .option('--void-window <seconds>', 'seconds after which an unsubmitted transfer is voided at the next sync', String(7 * 86400)),
  ).action(async (o: StorageOpts & { port: string; host: string; voidWindow: string; json?: boolean }) => {
    const ledger = await openLedger(o);
    const srv = await startLedgerServer({ ledger, port: Number(o.port), host: o.host });
    out(!!o.json, { url: srv.url, storage: ledger.storage.kind }, `dt-ledger listening on ${srv.url} (${ledger.storage.kind})`);
    const stop = async () => {
      await srv.close();
      await ledger.storage.close();
      process.exit(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });

  storageOptions(
    program
      .command('audit')
      .description('check the supply invariant (issued = bank balances + pending loads + unspent tokens and change + pending payee value + value redeemed to merchants) and list double-spend proofs and revocations; exits 1 when the invariant fails'),
  ).action(async (o: StorageOpts & { json?: boolean }) => {
    const ledger = await openLedger(o);
    let report;
    try {
      report = await ledger.audit();
    } finally {
      await ledger.storage.close();
    }
    const lines = [
      `supply invariant: ${report.ok ? 'OK' : 'FAILED'}`,
      `  issued            ${report.issued}`,
      `  bank balances     ${report.bankBalances}`,
      `  pending loads     ${report.pendingLoads}`,
      `  unspent tokens    ${report.unspentTokens}`,
      `  unspent change    ${report.unspentChange}`,
      `  pending payee     ${report.pendingPayee}`,
      `  redeemed          ${report.redeemed} (of which covered double spends ${report.covered})`,
      `  difference        ${report.difference}`,
      `double-spend proofs: ${report.proofs.length}`,
      ...report.proofs.map((p) => `  card ${p.card} first ${p.first} second ${p.second} at ${p.time}`),
      `revocations (list version ${report.crlVersion}): ${report.revocations.length}`,
      ...report.revocations.map((r) => `  card ${r.card} in version ${r.version} at ${r.time}`),
    ];
    out(!!o.json, report, lines.join('\n'));
    if (!report.ok) process.exitCode = 1;
  });
  return program;
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('dt-ledger.js') || process.argv[1]?.endsWith('dt-ledger')) {
  buildProgram().parseAsync(process.argv).catch((e: unknown) => {
    process.stderr.write(`dt-ledger: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(2);
  });
}
