/**
 * `dt-ledger`: the ledger's command line (see README.md).
 *
 * Data directory layout (created by `init`):
 * - `issuer.key.json`, `ledger.key.json`, `banks/<name>.key.json`: key pairs, mode 0600 (never printed);
 * - `root.cert`, `ledger.cert`, `banks/<name>.cert`: certificates (COSE_Sign1 CWT bytes);
 * - `acquirers/<name>.key.json`, `acquirers/<name>.cert`: an acquirer's service key and its certificate
 *   (role ACQUIRER, issued by an acquiring bank: `bank-add` writes one named like the bank,
 *   `acquirer-add` more); `dt-acquirer serve --key --cert` reads them;
 * - `ledger.db`: the SQLite database (unless `--pg` selects PostgreSQL).
 *
 * Exit codes: {@link EXIT_CODES}. Amounts on the command line are integer
 * tiyn; people read them in tenge with two decimals; `--json` keeps tiyn.
 *
 * @module
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { pino, type Level } from 'pino';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { randomBytes } from 'node:crypto';
import {
  BankPermission,
  formatTenge,
  fromHex,
  openSigned,
  publicKeyOf,
  subjectKey,
  toHex,
  bytesEqual,
  type KeyPair,
  exitCodesByName,
  exitCodesHelp,
  USAGE_EXIT_MEANING,
} from '@dt/protocol';
import { Ledger, LedgerError } from './ledger.ts';
import { createIssuer, identityFrom, issueAcquirer, issueBank, issueLedgerCert, type Identity } from './pki.ts';
import { blockAcquirer, unblockAcquirer } from './acquirers.ts';
import { openSqliteStorage } from './storage/sqlite.ts';
import { openPostgresStorage } from './storage/postgres.ts';
import { LedgerSchemaError } from './storage/migrations.ts';
import { startLedgerServer } from './server.ts';
import { createValidatorPool, type ValidatorPool, type ValidatorPoolOptions } from './pool.ts';
import { nativeSigner } from './native-signer.ts';
import type { LedgerStorage } from './storage/types.ts';
import { makeDirs } from '@dt/protocol/fs';

/**
 * The exit codes of `dt-ledger`, the one table (`--help` prints it; the root
 * README repeats it, checked by a test). 0-3 mean the same for every
 * command line of the toolkit; 4 and up are this command's own.
 */
export const EXIT_CODES = [
  { code: 0, name: 'OK', meaning: 'success (serve: stopped by SIGINT/SIGTERM)' },
  {
    code: 1,
    name: 'REFUSED',
    meaning: "refused: the ledger's rules said no (e.g. INSUFFICIENT_ALLOCATION), or audit found the supply invariant broken",
  },
  { code: 2, name: 'USAGE', meaning: USAGE_EXIT_MEANING },
  { code: 3, name: 'UNREACHABLE', meaning: 'unreachable: the PostgreSQL server of --pg cannot be reached or refused the connection' },
  {
    code: 4,
    name: 'DATA_DIR',
    meaning:
      'the data directory is not initialized, already initialized, already holds the bank or acquirer named, or holds keys that do not verify, or the database is not a ledger database or has a newer schema version',
  },
  { code: 5, name: 'START', meaning: 'serve cannot listen (address in use or not available)' },
  { code: 6, name: 'INTERNAL', meaning: 'internal error' },
] as const;

/** Exit codes of `dt-ledger` by name (from {@link EXIT_CODES}). */
export const ExitCode = exitCodesByName(EXIT_CODES);

const EXIT_HELP = `
${exitCodesHelp(EXIT_CODES)}

Amounts are given in integer tiyn (100 tiyn = 1 KZT) and shown in tenge with two
decimals (1500.00 KZT); --json output keeps integer tiyn.`;

/** Why a command failed, with its exit code. */
class CliError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Commander parser of an amount in tiyn. */
function tiyn(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n <= 0)
    throw new InvalidArgumentError('must be a positive integer amount in tiyn (100 tiyn = 1 KZT)');
  return n;
}

/** Commander parser of a non-negative integer. */
function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('must be a non-negative integer');
  return n;
}

const YEAR = 365 * 86400;
const nowSec = () => Math.floor(Date.now() / 1000);

/** Writes a key pair file readable only by its owner. */
export function writeKeyFile(path: string, keys: KeyPair): void {
  writeFileSync(path, JSON.stringify({ alg: 'ES256', secretKey: toHex(keys.secretKey), publicKey: toHex(keys.publicKey) }) + '\n', {
    mode: 0o600,
    flag: 'wx',
  });
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
  /** An acquirer written by `bank-add` or `acquirer-add`: chain `[acquirer cert, its bank's cert]`. */
  acquirer(name: string): Identity;
}

/** Opens the identities of a data directory created by `dt-ledger init`. */
export function openDataDir(dir: string): DataDir {
  if (!existsSync(join(dir, 'root.cert')))
    throw new CliError(ExitCode.DATA_DIR, `${dir} is not an initialized data directory (no root.cert; run dt-ledger init -d ${dir})`);
  const inDir = <T>(what: string, f: () => T): T => {
    try {
      return f();
    } catch (e) {
      throw new CliError(
        ExitCode.DATA_DIR,
        `${dir}: ${what}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : (e as Error).message}`,
        { cause: e },
      );
    }
  };
  // A bank or acquirer named on the command line that this directory does not hold is a usage error, with the names it holds.
  const known = (kind: 'banks' | 'acquirers', name: string): void => {
    if (existsSync(join(dir, kind, `${name}.key.json`)) || existsSync(join(dir, kind, `${name}.cert`))) return;
    const names = existsSync(join(dir, kind))
      ? readdirSync(join(dir, kind))
          .filter((f) => f.endsWith('.cert'))
          .map((f) => f.slice(0, -'.cert'.length))
          .sort()
      : [];
    const what = kind === 'banks' ? 'bank' : 'acquirer';
    throw new CliError(
      ExitCode.USAGE,
      `${dir} has no ${what} ${name} (${names.length > 0 ? `${kind}: ${names.join(', ')}` : `no ${kind} yet`}; add one with dt-ledger ${what}-add)`,
    );
  };
  const rootCert = inDir('root.cert', () => new Uint8Array(readFileSync(join(dir, 'root.cert'))));
  const ledgerCert = inDir('ledger.cert', () => new Uint8Array(readFileSync(join(dir, 'ledger.cert'))));
  return {
    dir,
    issuer: inDir('issuer key', () => identityFrom(readKeyFile(join(dir, 'issuer.key.json')), [rootCert])),
    ledger: inDir('ledger key', () => identityFrom(readKeyFile(join(dir, 'ledger.key.json')), [ledgerCert])),
    bank: (name) => {
      known('banks', name);
      return inDir(`bank ${name}`, () =>
        identityFrom(readKeyFile(join(dir, 'banks', `${name}.key.json`)), [
          new Uint8Array(readFileSync(join(dir, 'banks', `${name}.cert`))),
        ]),
      );
    },
    acquirer: (name) => {
      known('acquirers', name);
      return inDir(`acquirer ${name}`, () => {
        const cert = new Uint8Array(readFileSync(join(dir, 'acquirers', `${name}.cert`)));
        // Its bank: the bank certificate of this directory whose key signed it.
        const signer = openSigned('Certificate', cert).cose.kid;
        const bankCert = readdirSync(join(dir, 'banks'))
          .filter((f) => f.endsWith('.cert'))
          .map((f) => new Uint8Array(readFileSync(join(dir, 'banks', f))))
          .find((c) => bytesEqual(subjectKey(openSigned('Certificate', c).message).kid, signer));
        if (!bankCert) throw new Error(`its bank is not in ${join(dir, 'banks')}`);
        return identityFrom(readKeyFile(join(dir, 'acquirers', `${name}.key.json`)), [cert, bankCert]);
      });
    },
  };
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Certifies a new acquirer key under an acquiring bank and writes `acquirers/<name>.key.json` (0600) and `.cert`. */
function writeAcquirer(dir: string, bank: Identity, name: string, now: number): Identity {
  if (((openSigned('Certificate', bank.cert).message.perms ?? 0) & BankPermission.ACQUIRING) === 0)
    throw new CliError(ExitCode.USAGE, 'the bank lacks the acquiring permission');
  makeDirs(join(dir, 'acquirers'), 0o700);
  if (existsSync(join(dir, 'acquirers', `${name}.key.json`))) throw new CliError(ExitCode.DATA_DIR, `acquirer ${name} exists already`);
  const acq = issueAcquirer(bank, { name, validity: { nbf: now - 86400, exp: now + 2 * YEAR } });
  writeKeyFile(join(dir, 'acquirers', `${name}.key.json`), acq.keys);
  writeFileSync(join(dir, 'acquirers', `${name}.cert`), acq.cert);
  return acq;
}

/** `--pg`: a postgres:// or postgresql:// URL (anything else the driver would read as a host name and report as unreachable). */
function pgOption(v: string): string {
  if (!/^postgres(ql)?:\/\//.test(v))
    throw new InvalidArgumentError('must be a postgresql:// connection URL, e.g. postgresql://user@/db?host=/run/postgresql');
  return v;
}

function kidOption(v: string): Uint8Array {
  if (!/^[0-9a-fA-F]{32}$/.test(v)) throw new InvalidArgumentError('must be a 16-byte key id in hex (32 digits)');
  return fromHex(v.toLowerCase());
}

interface StorageOpts {
  data: string;
  pg?: string;
  db?: string;
}

/** A database that is not the ledger's, or of a newer schema version (left as it was): exit 4. */
function schemaError(e: unknown): CliError | undefined {
  if (e instanceof LedgerSchemaError) return new CliError(ExitCode.DATA_DIR, e.message, { cause: e });
  if ((e as { code?: unknown }).code === 'SQLITE_NOTADB')
    return new CliError(ExitCode.DATA_DIR, `not a ledger database: ${(e as Error).message}`, { cause: e });
  return undefined;
}

/**
 * Opens the ledger database of `o`. Only `init` creates one (`create`): every other command needs the
 * database to be there, so that a mistyped `--db` (or a data directory `init` did not finish) is an
 * error instead of a new, empty ledger that audits as balanced or records a block nobody reads.
 */
async function openStorage(o: StorageOpts, { create = false }: { create?: boolean } = {}): Promise<LedgerStorage> {
  if (!o.pg && !create) {
    if (o.db !== undefined && !existsSync(o.db))
      throw new CliError(ExitCode.USAGE, `--db ${o.db}: no such database file (dt-ledger init creates it)`);
    if (o.db === undefined && !existsSync(join(o.data, 'ledger.db')))
      throw new CliError(
        ExitCode.DATA_DIR,
        `${o.data} has no ledger database (no ledger.db; run dt-ledger init -d ${o.data}, or pass the --db or --pg it was initialized with)`,
      );
  }
  if (o.pg) {
    try {
      return await openPostgresStorage({ connectionString: o.pg });
    } catch (e) {
      const s = schemaError(e);
      if (s) throw s;
      // Connection refused, no socket, unknown database, authentication: the server is not there for us.
      throw new CliError(
        ExitCode.UNREACHABLE,
        `cannot reach PostgreSQL at --pg: ${(e as Error).message || (e as NodeJS.ErrnoException).code}`,
        { cause: e },
      );
    }
  }
  try {
    return openSqliteStorage(o.db ?? join(o.data, 'ledger.db'));
  } catch (e) {
    throw schemaError(e) ?? e;
  }
}

async function openLedger(o: StorageOpts & { voidWindow?: number }): Promise<Ledger> {
  const d = openDataDir(o.data);
  return Ledger.open({
    storage: await openStorage(o),
    signer: nativeSigner(d.ledger.keys),
    rootCert: d.issuer.cert,
    ledgerCert: d.ledger.cert,
    ...(o.voidWindow !== undefined ? { voidWindow: o.voidWindow } : {}),
  });
}

/** What {@link openServeLedger} opens the ledger with. */
export interface ServeLedgerOptions {
  readonly storage: LedgerStorage;
  readonly ledgerKeys: KeyPair;
  readonly rootCert: Uint8Array;
  readonly ledgerCert: Uint8Array;
  readonly voidWindow?: number;
  /** Validator worker threads (`--validators`); 0: none, the main thread validates. */
  readonly validators: number;
  readonly onWorkerExit?: ValidatorPoolOptions['onWorkerExit'];
}

/** Cores from which `serve` validates on a pool by default over SQLite (below, the main thread validates). */
export const POOL_MIN_CORES = 4;

/**
 * `serve`'s default `--validators` over `storage` on a machine of `cores` (default: the available
 * parallelism). PostgreSQL: one thread per core, since the main thread waits for the server's
 * answers and the threads validate meanwhile (on 2 cores 0.027 of the verify ceiling with 2
 * threads against 0.021 without). SQLite: one per core from {@link POOL_MIN_CORES} cores, none
 * below; there the main thread never waits, and on 2 cores the pool took 1.2 to 1.5 times the CPU
 * per settled transfer at 0..5 history hops and 2.8 to 3.7 times at 63, and settled about as many
 * or half as many: copying jobs and answers between threads and the threads' own heaps cost more
 * than the second core gave (ledger/bench/headline.ts `--validators 0` against `2`; ledger/README.md).
 */
export function defaultValidators(storage: 'sqlite' | 'postgres', cores: number = availableParallelism()): number {
  return storage === 'postgres' || cores >= POOL_MIN_CORES ? cores : 0;
}

/**
 * The ledger as `dt-ledger serve` opens it: its validator pool (`--validators` threads, unless 0)
 * and `Ledger.open` settling through it. Exported for the headline bench, which measures exactly
 * this. On failure the pool is closed (the storage is the caller's); `close` closes the storage, then the pool.
 */
export async function openServeLedger(o: ServeLedgerOptions): Promise<{ ledger: Ledger; pool?: ValidatorPool; close(): Promise<void> }> {
  let pool: ValidatorPool | undefined;
  try {
    pool =
      o.validators === 0
        ? undefined
        : await createValidatorPool({
            rootCert: o.rootCert,
            ledgerCert: o.ledgerCert,
            at: nowSec(),
            workers: o.validators,
            ...(o.onWorkerExit ? { onWorkerExit: o.onWorkerExit } : {}),
          });
    const ledger = await Ledger.open({
      storage: o.storage,
      signer: nativeSigner(o.ledgerKeys),
      rootCert: o.rootCert,
      ledgerCert: o.ledgerCert,
      ...(o.voidWindow !== undefined ? { voidWindow: o.voidWindow } : {}),
      ...(pool ? { validator: pool } : {}),
    });
    return {
      ledger,
      ...(pool ? { pool } : {}),
      async close() {
        await o.storage.close();
        await pool?.close();
      },
    };
  } catch (e) {
    await pool?.close();
    throw e;
  }
}

function out(json: boolean, obj: unknown, text: string): void {
  process.stdout.write(json ? JSON.stringify(obj) + '\n' : text + '\n');
}

const databaseOptions = (c: Command) =>
  c
    .option('--db <file>', 'SQLite database file (default: <data>/ledger.db)')
    .option(
      '--pg <url>',
      'use PostgreSQL at this connection string instead of SQLite (e.g. postgresql://user@/db?host=/run/postgresql)',
      pgOption,
    )
    .option('--json', 'machine-readable JSON output (amounts in integer tiyn)');

const storageOptions = (c: Command) => databaseOptions(c.requiredOption('-d, --data <dir>', 'data directory created by `dt-ledger init`'));

/** Builds the `dt-ledger` program (exported for tests). */
export function buildProgram(): Command {
  const program = new Command('dt-ledger')
    .description('DT reference ledger and notary: issuance, loads, syncs, settlement of offline transfers, double-spend proofs, revocation')
    .showHelpAfterError()
    .exitOverride()
    .addHelpText('after', EXIT_HELP);

  databaseOptions(
    program
      .command('init')
      .description(
        'create the issuer root and the ledger key and certificate in a new data directory (private keys are written with mode 0600 and never printed), and the database (SQLite in the directory, or --pg)',
      )
      .requiredOption('-d, --data <dir>', 'data directory to create')
      .option('--issuer-name <name>', 'subject name of the issuer root', 'DT issuer'),
  ).action(async (o: StorageOpts & { issuerName: string; json?: boolean }) => {
    if (existsSync(join(o.data, 'issuer.key.json'))) throw new CliError(ExitCode.DATA_DIR, `${o.data} is already initialized`);
    try {
      makeDirs(join(o.data, 'banks'), 0o700);
    } catch (e) {
      // A file in the way, a parent that cannot be written: the -d named on the command line is not usable.
      throw new CliError(
        ExitCode.USAGE,
        `-d ${o.data}: cannot create the data directory: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      );
    }
    const now = nowSec();
    const validity = { nbf: now - 86400, exp: now + 10 * YEAR };
    const issuer = createIssuer({ now, name: o.issuerName });
    const ledger = issueLedgerCert(issuer, { validity });
    // The database first: when it cannot be opened (PostgreSQL out of reach) no key is written and init can run again.
    const storage = await openStorage(o, { create: true });
    let kind;
    try {
      writeKeyFile(join(o.data, 'issuer.key.json'), issuer.keys);
      writeKeyFile(join(o.data, 'ledger.key.json'), ledger.keys);
      writeFileSync(join(o.data, 'root.cert'), issuer.cert);
      writeFileSync(join(o.data, 'ledger.cert'), ledger.cert);
      // Create the schema (and the signed empty revocation list).
      const l = await Ledger.open({ storage, signer: nativeSigner(ledger.keys), rootCert: issuer.cert, ledgerCert: ledger.cert });
      kind = l.storage.kind;
    } finally {
      await storage.close();
    }
    out(
      !!o.json,
      { data: o.data, storage: kind, issuerKid: toHex(issuer.kid), ledgerKid: toHex(ledger.kid) },
      `initialized ${o.data} (${kind})\nissuer root kid ${toHex(issuer.kid)}\nledger kid      ${toHex(ledger.kid)}`,
    );
  });

  storageOptions(
    program
      .command('bank-add')
      .description(
        'certify a bank under the issuer root, register it with the ledger, and optionally allocate value to it; an acquiring bank also gets its acquirer key and certificate (acquirers/<name>.key.json, .cert)',
      )
      .requiredOption('--name <name>', 'bank name (also the key file name under <data>/banks)')
      .addOption(
        new Option('--perms <perms>', 'comma-separated permissions')
          .choices(['issuing', 'acquiring', 'issuing,acquiring', 'acquiring,issuing'])
          .default('issuing,acquiring'),
      )
      .option('--allocate <tiyn>', 'value (integer tiyn) the issuer allocates to the bank', tiyn),
  ).action(async (o: StorageOpts & { name: string; perms: string; allocate?: number; json?: boolean }) => {
    if (!NAME.test(o.name)) throw new CliError(ExitCode.USAGE, 'bank name: letters, digits, _ and - only');
    const d = openDataDir(o.data);
    const now = nowSec();
    const perms = (o.perms.includes('issuing') ? 1 : 0) | (o.perms.includes('acquiring') ? 2 : 0);
    // Checked before anything is written: a bank (or its acquirer) of this name is never half added or overwritten.
    if (existsSync(join(o.data, 'banks', `${o.name}.key.json`)) || existsSync(join(o.data, 'banks', `${o.name}.cert`)))
      throw new CliError(ExitCode.DATA_DIR, `bank ${o.name} exists already`);
    if ((perms & BankPermission.ACQUIRING) !== 0 && existsSync(join(o.data, 'acquirers', `${o.name}.key.json`)))
      throw new CliError(ExitCode.DATA_DIR, `acquirer ${o.name} exists already (the acquirer of bank ${o.name} takes its name)`);
    const bank = issueBank(d.issuer, { name: o.name, perms, validity: { nbf: now - 86400, exp: now + 5 * YEAR } });
    // The database first: when it cannot be opened nothing is written and bank-add can run again.
    const l = await openLedger(o);
    let acq;
    try {
      writeKeyFile(join(o.data, 'banks', `${o.name}.key.json`), bank.keys);
      writeFileSync(join(o.data, 'banks', `${o.name}.cert`), bank.cert);
      // An acquiring bank's acquirer (the service key that signs its settle requests), named like the bank.
      acq = (perms & BankPermission.ACQUIRING) !== 0 ? writeAcquirer(o.data, bank, o.name, now) : undefined;
      await l.registerBank(bank.cert);
      if (o.allocate) await l.allocate(bank.kid, o.allocate, new Uint8Array(randomBytes(16)));
    } finally {
      await l.storage.close();
    }
    out(
      !!o.json,
      { name: o.name, kid: toHex(bank.kid), perms, allocated: o.allocate ?? 0, ...(acq ? { acquirerKid: toHex(acq.kid) } : {}) },
      `bank ${o.name} kid ${toHex(bank.kid)} perms ${o.perms}${o.allocate ? ` allocated ${formatTenge(o.allocate)}` : ''}${acq ? `\nacquirer ${o.name} kid ${toHex(acq.kid)} (acquirers/${o.name}.key.json, acquirers/${o.name}.cert)` : ''}`,
    );
  });

  storageOptions(
    program
      .command('allocate')
      .description('the issuer allocates new value (tiyn) to a registered bank')
      .requiredOption('--bank <name>', 'bank name under <data>/banks')
      .requiredOption('--amount <tiyn>', 'value in integer tiyn (100 tiyn = 1 KZT)', tiyn),
  ).action(async (o: StorageOpts & { bank: string; amount: number; json?: boolean }) => {
    const d = openDataDir(o.data);
    const kid = d.bank(o.bank).kid;
    const l = await openLedger(o);
    try {
      await l.allocate(kid, o.amount, new Uint8Array(randomBytes(16)));
    } finally {
      await l.storage.close();
    }
    out(!!o.json, { bank: o.bank, amount: o.amount }, `allocated ${formatTenge(o.amount)} to ${o.bank}`);
  });

  storageOptions(
    program
      .command('bank-credit-line')
      .description(
        "the issuer grants a registered bank a credit line: its balance may go down to minus this amount to pay covers of double spends (its floor, SPEC §7.6.2; loads never go below 0); 0 removes it; refused (exit 1) when the bank's balance is already below the new floor",
      )
      .requiredOption('--bank <name>', 'bank name under <data>/banks')
      .requiredOption('--amount <tiyn>', 'credit line in integer tiyn (100 tiyn = 1 KZT), 0 for none', nonNegativeInt),
  ).action(async (o: StorageOpts & { bank: string; amount: number; json?: boolean }) => {
    const d = openDataDir(o.data);
    const kid = d.bank(o.bank).kid;
    const l = await openLedger(o);
    try {
      await l.setCreditLine(kid, o.amount);
    } finally {
      await l.storage.close();
    }
    out(
      !!o.json,
      { bank: o.bank, creditLine: o.amount },
      `credit line of ${o.bank}: ${formatTenge(o.amount)} (floor ${formatTenge(-o.amount)})`,
    );
  });

  storageOptions(
    program
      .command('serve')
      .description(
        'run the ledger HTTP API (POST /v1/settle, /v1/sync, /v1/defund, /v1/loads, /v1/cards, /v1/cards/block, /v1/cards/restore; GET /v1/crl, /v1/cards/<kid>, /v1/banks/<kid>, /v1/health, /v1/metrics)',
      )
      .option('-p, --port <port>', 'TCP port (0: any free port)', '8440')
      .option('--host <host>', 'listen address', '127.0.0.1')
      .option(
        '--void-window <seconds>',
        'seconds after which an unsubmitted transfer is voided at the next sync',
        nonNegativeInt,
        7 * 86400,
      )
      .addOption(
        new Option(
          '--validators <n>',
          `worker threads that validate handovers and find their evidence while the main thread records and judges (0: the main thread validates). A thread that dies fails the settle calls it had in hand (rolled back, 500) and is replaced (default: one per core with --pg; with SQLite one per core from ${POOL_MIN_CORES} cores, none below (here, with ${availableParallelism()} cores: ${defaultValidators('postgres')} with --pg, ${defaultValidators('sqlite')} with SQLite))`,
        ).argParser(nonNegativeInt),
      )
      .addOption(
        new Option('--log-level <level>', 'request log (JSON lines on stderr: method, route, status, duration; never bodies or keys)')
          .choices(['silent', 'error', 'warn', 'info', 'debug'])
          .default('info'),
      ),
  ).action(
    async (
      o: StorageOpts & { port: string; host: string; voidWindow: number; validators?: number; logLevel: Level | 'silent'; json?: boolean },
    ) => {
      const port = Number(o.port);
      if (!/^\d{1,5}$/.test(o.port) || port > 65535)
        throw new CliError(ExitCode.USAGE, `--port must be a TCP port number 0-65535, got ${o.port}`);
      const logger = pino({ level: o.logLevel }, pino.destination(2));
      const d = openDataDir(o.data);
      const storage = await openStorage(o);
      let opened;
      try {
        opened = await openServeLedger({
          storage,
          ledgerKeys: d.ledger.keys,
          rootCert: d.issuer.cert,
          ledgerCert: d.ledger.cert,
          voidWindow: o.voidWindow,
          validators: o.validators ?? defaultValidators(storage.kind),
          onWorkerExit: ({ worker, error }) =>
            logger.error({ worker, err: error.message }, 'validator thread died: its settle calls failed (rolled back); replaced'),
        });
      } catch (e) {
        await storage.close();
        throw e;
      }
      const { ledger, pool } = opened;
      let srv;
      try {
        srv = await startLedgerServer({ ledger, port, host: o.host, logger, ...(pool ? { validators: pool } : {}) });
      } catch (e) {
        await opened.close();
        throw new CliError(ExitCode.START, `cannot listen on ${o.host}:${o.port}: ${(e as Error).message}`, { cause: e });
      }
      const threads = pool?.size ?? 0;
      out(
        !!o.json,
        { url: srv.url, storage: ledger.storage.kind, validators: threads },
        `dt-ledger listening on ${srv.url} (${ledger.storage.kind}, ${threads ? `${threads} validator threads` : 'validation in the main thread'})`,
      );
      const stop = async () => {
        await srv.close();
        await opened.close();
        process.exit(ExitCode.OK);
      };
      process.once('SIGINT', () => void stop());
      process.once('SIGTERM', () => void stop());
    },
  );

  program
    .command('acquirer-add')
    .description(
      'certify another acquirer key under an acquiring bank of the data directory (acquirers/<name>.key.json, mode 0600, and acquirers/<name>.cert); the ledger accepts its settle requests while the bank is registered and the acquirer is not blocked',
    )
    .requiredOption('-d, --data <dir>', 'data directory created by `dt-ledger init`')
    .requiredOption('--bank <name>', 'acquiring bank name under <data>/banks')
    .requiredOption('--name <name>', 'acquirer name (file name under <data>/acquirers)')
    .option('--json', 'machine-readable JSON output')
    .action((o: { data: string; bank: string; name: string; json?: boolean }) => {
      if (!NAME.test(o.name)) throw new CliError(ExitCode.USAGE, 'acquirer name: letters, digits, _ and - only');
      const acq = writeAcquirer(o.data, openDataDir(o.data).bank(o.bank), o.name, nowSec());
      out(
        !!o.json,
        { name: o.name, bank: o.bank, kid: toHex(acq.kid) },
        `acquirer ${o.name} of bank ${o.bank} kid ${toHex(acq.kid)} (acquirers/${o.name}.key.json, acquirers/${o.name}.cert)`,
      );
    });

  storageOptions(
    program
      .command('acquirer-block')
      .description(
        'block an acquirer key: its settle requests are refused (403 ACQUIRER_UNKNOWN) from now on, also by a running `serve` on the same database',
      )
      .requiredOption('--kid <hex>', 'acquirer key id (32 hex digits)', kidOption)
      .option('--reason <text>', 'reason kept with the block', 'blocked by operator'),
  ).action(async (o: StorageOpts & { kid: Uint8Array; reason: string; json?: boolean }) => {
    const storage = await openStorage(o);
    let changed;
    try {
      changed = await blockAcquirer(storage, o.kid, o.reason, nowSec());
    } finally {
      await storage.close();
    }
    out(!!o.json, { kid: toHex(o.kid), blocked: true, changed }, `acquirer ${toHex(o.kid)} ${changed ? 'blocked' : 'was already blocked'}`);
  });

  storageOptions(
    program
      .command('acquirer-unblock')
      .description('lift the block of an acquirer key')
      .requiredOption('--kid <hex>', 'acquirer key id (32 hex digits)', kidOption),
  ).action(async (o: StorageOpts & { kid: Uint8Array; json?: boolean }) => {
    const storage = await openStorage(o);
    let changed;
    try {
      changed = await unblockAcquirer(storage, o.kid);
    } finally {
      await storage.close();
    }
    out(!!o.json, { kid: toHex(o.kid), blocked: false, changed }, `acquirer ${toHex(o.kid)} ${changed ? 'unblocked' : 'was not blocked'}`);
  });

  storageOptions(
    program
      .command('audit')
      .description(
        'check the supply invariant (issued = bank balances + pending loads + unspent tokens and change + pending payee value + value redeemed to merchants) and list double-spend proofs and revocations; exits 1 when the invariant fails (amounts in tenge; --json: integer tiyn)',
      ),
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
      `  issued            ${formatTenge(report.issued)}`,
      `  bank balances     ${formatTenge(report.bankBalances)}`,
      `  pending loads     ${formatTenge(report.pendingLoads)}`,
      `  unspent tokens    ${formatTenge(report.unspentTokens)}`,
      `  unspent change    ${formatTenge(report.unspentChange)}`,
      `  pending payee     ${formatTenge(report.pendingPayee)}`,
      `  redeemed          ${formatTenge(report.redeemed)} (of which covered double spends ${formatTenge(report.covered)})`,
      `  pending refunds   ${formatTenge(report.pendingRefunds)}`,
      `  difference        ${formatTenge(report.difference)}`,
      `double-spend proofs: ${report.proofs.length}`,
      ...report.proofs.map((p) => `  card ${p.card} first ${p.first} second ${p.second} at ${p.time}`),
      `revocations (list version ${report.crlVersion}): ${report.revocations.length}`,
      ...report.revocations.map((r) => `  card ${r.card} in version ${r.version} at ${r.time}`),
    ];
    out(!!o.json, report, lines.join('\n'));
    if (!report.ok) process.exitCode = ExitCode.REFUSED;
  });
  return program;
}

/** The exit code for an error a command threw ({@link EXIT_CODES}). */
export function exitCodeOf(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
  if (e instanceof CliError) return e.exitCode;
  if (e instanceof LedgerError) return ExitCode.REFUSED;
  return ExitCode.INTERNAL;
}

/** Runs the CLI with `argv` (process.argv form); sets `process.exitCode` (serve keeps running). */
export async function main(argv: string[] = process.argv): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    // Commander printed its own usage errors and --help.
    if (!(e instanceof CommanderError)) process.stderr.write(`dt-ledger: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = exitCodeOf(e);
  }
}
