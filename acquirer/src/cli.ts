/**
 * `dt-acquirer` command line.
 *
 * Exit codes: 0 clean shutdown (SIGINT/SIGTERM) or success; 1 unexpected
 * failure; 2 bad usage (unknown option, missing or invalid value); 3 bad
 * configuration (a certificate or key file is unreadable or does not verify,
 * or the acquirer certificate is not this bank's ACQUIRER certificate for this
 * key); 4 the service cannot start (database cannot be opened, port in use).
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { fromHex } from '@dt/protocol';
import { startAcquirer, loadTrust } from './server.ts';
import { AcquirerStore } from './store.ts';
import { readAcquirerKey } from './keyfile.ts';
import { nativeVerifier } from '@dt/protocol/native';

/** Exit codes of the CLI. */
export const ExitCode = { OK: 0, FAILURE: 1, USAGE: 2, CONFIG: 3, START: 4 } as const;

class ConfigError extends Error {}

/** Reads a certificate file: raw CBOR bytes, or hex text (whitespace ignored). */
function readCert(file: string, what: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (e) {
    throw new ConfigError(`cannot read ${what} file ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const text = raw.toString('latin1').replace(/\s+/g, '');
  if (text.length > 0 && /^[0-9a-fA-F]+$/.test(text) && text.length % 2 === 0) return fromHex(text);
  return new Uint8Array(raw);
}

function port(v: string): number {
  if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw new InvalidArgumentError('must be a TCP port number 0-65535');
  return Number(v);
}

function positiveInt(v: string): number {
  if (!/^[1-9]\d{0,14}$/.test(v)) throw new InvalidArgumentError('must be a positive integer');
  return Number(v);
}

function hexKid(v: string): Uint8Array {
  if (!/^[0-9a-fA-F]{32}$/.test(v)) throw new InvalidArgumentError('must be a 16-byte key id in hex (32 digits)');
  return fromHex(v);
}

const program = new Command()
  .name('dt-acquirer')
  .description('DT acquirer bridge: accepts signed terminal batches, stores them durably, forwards them to the ledger, serves outcomes and the revocation list.')
  .exitOverride()
  .configureOutput({ outputError: (s, write) => write(s) })
  .addHelpText(
    'after',
    `
Exit codes:
  0  clean shutdown (SIGINT/SIGTERM), --help, or success
  1  unexpected failure
  2  bad usage (unknown option, missing or invalid value)
  3  bad configuration (a certificate or key file unreadable, the certificates do not verify,
     or --cert is not an ACQUIRER certificate of the --bank-cert bank for the --key key)
  4  cannot start (database cannot be opened, port in use)`,
  );

program
  .command('serve')
  .description('run the acquirer HTTP service until SIGINT/SIGTERM')
  .requiredOption('--ledger <url>', 'base URL of the ledger (e.g. http://127.0.0.1:8080)')
  .requiredOption('--bank-cert <file>', "this acquirer's bank certificate (CWT; raw CBOR or hex); must be issued by the root with ACQUIRING permission")
  .requiredOption('--root <file>', 'the pinned issuer root certificate (CWT; raw CBOR or hex)')
  .requiredOption('--ledger-cert <file>', 'the ledger certificate (CWT; raw CBOR or hex), used to verify outcomes and revocation lists')
  .requiredOption('--key <file>', "this acquirer's key file (JSON {alg, secretKey, publicKey} as dt-ledger writes it, mode 0600): signs every settle request; never logged")
  .requiredOption('--cert <file>', "this acquirer's certificate (CWT; raw CBOR or hex): role ACQUIRER, issued by the --bank-cert bank for the --key key")
  .requiredOption('--db <file>', 'SQLite database file (created if missing)')
  .option('--port <n>', 'TCP port to listen on (0 = any free port)', port, 8081)
  .option('--host <addr>', 'address to listen on', '127.0.0.1')
  .option('--max-body <bytes>', 'largest accepted request body in bytes', positiveInt, 64 * 1024 * 1024)
  .option('--crl-refresh <seconds>', 'revocation list refresh period', positiveInt, 60)
  .option('--batches-per-call <n>', 'most terminal batches grouped into one ledger settle call', positiveInt, 32)
  .addOption(new Option('--log-level <level>', 'log level (requests and errors; bodies are never logged)').choices(['silent', 'error', 'warn', 'info', 'debug']).default('info'))
  .action(async (o: { ledger: string; bankCert: string; root: string; ledgerCert: string; key: string; cert: string; db: string; port: number; host: string; maxBody: number; crlRefresh: number; batchesPerCall: number; logLevel: string }) => {
    try {
      new URL(o.ledger);
    } catch {
      throw new CommanderError(ExitCode.USAGE, 'dt.badUrl', `error: --ledger is not a URL: ${o.ledger}`);
    }
    const root = readCert(o.root, 'root certificate');
    const bankCert = readCert(o.bankCert, 'bank certificate');
    const ledgerCert = readCert(o.ledgerCert, 'ledger certificate');
    const acquirerCert = readCert(o.cert, 'acquirer certificate');
    let acquirerSigner;
    try {
      acquirerSigner = readAcquirerKey(o.key);
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
    try {
      // Refuse to start unless this is an ACQUIRER certificate of our bank for our key (the ledger would refuse every settle call).
      loadTrust({ root, bankCert, ledgerCert, acquirerCert, acquirerKid: acquirerSigner.kid }, Math.floor(Date.now() / 1000), nativeVerifier);
    } catch (e) {
      throw new ConfigError(`certificates do not verify: ${(e as Error).message}`);
    }
    // Test-only fault injection (documented in README): SIGKILL this process right before
    // recording the Nth verified settle answer, to prove crash recovery.
    const killAt = Number(process.env.DT_ACQUIRER_FAULT_KILL_BEFORE_RECORD ?? 0);
    let answers = 0;
    const beforeRecord = killAt > 0 ? () => {
      if (++answers === killAt) process.kill(process.pid, 'SIGKILL');
    } : undefined;
    let acq;
    try {
      acq = await startAcquirer({
        ledgerUrl: o.ledger, root, bankCert, ledgerCert, acquirerCert, acquirerSigner, dbFile: o.db, port: o.port, host: o.host,
        maxBodyBytes: o.maxBody, crlRefreshMs: o.crlRefresh * 1000,
        forwarder: { maxBatchesPerCall: o.batchesPerCall, ...(beforeRecord ? { beforeRecord } : {}) },
        logger: o.logLevel === 'silent' ? false : { level: o.logLevel },
      });
    } catch (e) {
      process.stderr.write(`dt-acquirer: cannot start: ${(e as Error).message}\n`);
      process.exit(ExitCode.START);
    }
    process.stdout.write(`dt-acquirer listening on ${acq.url}\n`);
    const stop = () => {
      void acq.close().then(() => process.exit(ExitCode.OK));
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });

program
  .command('revoke-terminal')
  .description('revoke a terminal at this acquirer (takes effect at once, also for a running service on the same database)')
  .requiredOption('--db <file>', 'SQLite database file of the acquirer')
  .requiredOption('--kid <hex>', 'terminal key id (32 hex digits)', hexKid)
  .option('--reason <text>', 'reason kept with the revocation', 'revoked by operator')
  .action((o: { db: string; kid: Uint8Array; reason: string }) => {
    let store;
    try {
      store = new AcquirerStore(o.db);
    } catch (e) {
      process.stderr.write(`dt-acquirer: cannot open database: ${(e as Error).message}\n`);
      process.exit(ExitCode.START);
    }
    store.revokeTerminal(o.kid, o.reason, Date.now());
    store.close();
    process.stdout.write('terminal revoked\n');
  });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // --help and --version end here with exitCode 0.
    process.exit(e.exitCode === 0 ? ExitCode.OK : e.code === 'dt.badUrl' ? ExitCode.USAGE : e.exitCode === 1 ? ExitCode.USAGE : e.exitCode);
  }
  if (e instanceof ConfigError) {
    process.stderr.write(`dt-acquirer: ${e.message}\n`);
    process.exit(ExitCode.CONFIG);
  }
  process.stderr.write(`dt-acquirer: ${(e as Error).message}\n`);
  process.exit(ExitCode.FAILURE);
}
