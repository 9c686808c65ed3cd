/**
 * `dt-acquirer` command line. Exit codes: {@link EXIT_CODES}.
 *
 * @module
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { pino, type Level } from 'pino';
import { fromHex, exitCodesByName, exitCodesHelp, USAGE_EXIT_MEANING } from '@dt/protocol';
import { startAcquirer, loadTrust } from './server.ts';
import { AcquirerStore } from './store.ts';
import { readAcquirerKey } from './keyfile.ts';
import { nativeVerifier } from '@dt/protocol/native';
import { isHttpUrl } from '@dt/protocol/http';

/**
 * The exit codes of `dt-acquirer`, the one table (`--help` prints it; the
 * root README repeats it, checked by a test). 0-3 mean the same for every
 * command line of the toolkit (this one has no business refusal and needs no
 * peer to start: the ledger is retried while the service runs); 4 and up are
 * its own.
 */
export const EXIT_CODES = [
  { code: 0, name: 'OK', meaning: 'success (serve: stopped by SIGINT/SIGTERM)' },
  { code: 2, name: 'USAGE', meaning: USAGE_EXIT_MEANING },
  {
    code: 4,
    name: 'CONFIG',
    meaning:
      'the certificates or the key do not verify (root, bank with ACQUIRING permission, ledger, the ACQUIRER certificate of --key), or the key file is readable by others',
  },
  { code: 5, name: 'START', meaning: 'serve cannot start (the database cannot be opened, the address is in use)' },
  { code: 6, name: 'INTERNAL', meaning: 'internal error' },
] as const;

/** Exit codes of `dt-acquirer` by name (from {@link EXIT_CODES}). */
export const ExitCode = exitCodesByName(EXIT_CODES);

/** Why the command failed, with its exit code. */
class CliError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

/** Reads a certificate file: raw CBOR bytes, or hex text (whitespace ignored). */
function readCert(file: string, what: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(ExitCode.USAGE, `cannot read ${what} file ${file}: ${code === 'ENOENT' ? 'no such file' : (code ?? 'error')}`);
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
  .description(
    'DT acquirer bridge: accepts signed terminal batches, stores them durably, forwards them to the ledger, serves outcomes and the revocation list.',
  )
  .exitOverride()
  .configureOutput({ outputError: (s, write) => write(s) })
  .addHelpText(
    'after',
    `
${exitCodesHelp(EXIT_CODES)}`,
  );

program
  .command('serve')
  .description('run the acquirer HTTP service until SIGINT/SIGTERM')
  .requiredOption('--ledger <url>', 'base URL of the ledger (e.g. http://127.0.0.1:8440, the default port of dt-ledger serve)')
  .requiredOption(
    '--bank-cert <file>',
    "this acquirer's bank certificate (CWT; raw CBOR or hex); must be issued by the root with ACQUIRING permission",
  )
  .requiredOption('--root <file>', 'the pinned issuer root certificate (CWT; raw CBOR or hex)')
  .requiredOption('--ledger-cert <file>', 'the ledger certificate (CWT; raw CBOR or hex), used to verify outcomes and revocation lists')
  .requiredOption(
    '--key <file>',
    "this acquirer's key file (JSON {alg, secretKey, publicKey} as dt-ledger writes it, mode 0600): signs every settle request; never logged",
  )
  .requiredOption(
    '--cert <file>',
    "this acquirer's certificate (CWT; raw CBOR or hex): role ACQUIRER, issued by the --bank-cert bank for the --key key",
  )
  .requiredOption('--db <file>', 'SQLite database file (created if missing; removed again if serve cannot start)')
  .option('--port <n>', 'TCP port to listen on (0 = any free port)', port, 8081)
  .option('--host <addr>', 'address to listen on', '127.0.0.1')
  .option('--max-body <bytes>', 'largest accepted request body in bytes', positiveInt, 64 * 1024 * 1024)
  .option('--crl-refresh <seconds>', 'revocation list refresh period', positiveInt, 60)
  .option('--batches-per-call <n>', 'most terminal batches grouped into one ledger settle call', positiveInt, 32)
  .addOption(
    new Option('--log-level <level>', 'request log (JSON lines on stderr: method, route, status, duration; never bodies or keys)')
      .choices(['silent', 'error', 'warn', 'info', 'debug'])
      .default('info'),
  )
  .action(
    async (o: {
      ledger: string;
      bankCert: string;
      root: string;
      ledgerCert: string;
      key: string;
      cert: string;
      db: string;
      port: number;
      host: string;
      maxBody: number;
      crlRefresh: number;
      batchesPerCall: number;
      logLevel: Level | 'silent';
    }) => {
      if (!isHttpUrl(o.ledger))
        throw new CliError(ExitCode.USAGE, `--ledger must be an http(s) URL, e.g. http://127.0.0.1:8440; got ${o.ledger}`);
      const root = readCert(o.root, 'root certificate');
      const bankCert = readCert(o.bankCert, 'bank certificate');
      const ledgerCert = readCert(o.ledgerCert, 'ledger certificate');
      const acquirerCert = readCert(o.cert, 'acquirer certificate');
      let acquirerSigner;
      try {
        acquirerSigner = readAcquirerKey(o.key);
      } catch (e) {
        // A key file that cannot be read is a usage error; one that is not a private ES256 key is configuration.
        const msg = (e as Error).message;
        throw new CliError(msg.startsWith('cannot read') ? ExitCode.USAGE : ExitCode.CONFIG, msg);
      }
      try {
        // Refuse to start unless this is an ACQUIRER certificate of our bank for our key (the ledger would refuse every settle call).
        loadTrust(
          { root, bankCert, ledgerCert, acquirerCert, acquirerKid: acquirerSigner.kid },
          Math.floor(Date.now() / 1000),
          nativeVerifier,
        );
      } catch (e) {
        throw new CliError(ExitCode.CONFIG, `certificates do not verify: ${(e as Error).message}`);
      }
      // Test-only fault injection (documented in README): SIGKILL this process right before
      // recording the Nth verified settle answer, to prove crash recovery.
      const killAt = Number(process.env.DT_ACQUIRER_FAULT_KILL_BEFORE_RECORD ?? 0);
      let answers = 0;
      const beforeRecord =
        killAt > 0
          ? () => {
              if (++answers === killAt) process.kill(process.pid, 'SIGKILL');
            }
          : undefined;
      // A database this start creates is removed again when the acquirer cannot start (nothing was recorded in it):
      // a failed start leaves the disk as it was, and a typo in --db does not leave a stray empty acquirer behind.
      const created = !existsSync(o.db);
      let acq;
      try {
        acq = await startAcquirer({
          ledgerUrl: o.ledger,
          root,
          bankCert,
          ledgerCert,
          acquirerCert,
          acquirerSigner,
          dbFile: o.db,
          port: o.port,
          host: o.host,
          maxBodyBytes: o.maxBody,
          crlRefreshMs: o.crlRefresh * 1000,
          forwarder: { maxBatchesPerCall: o.batchesPerCall, ...(beforeRecord ? { beforeRecord } : {}) },
          logger: pino({ level: o.logLevel }, pino.destination(2)),
        });
      } catch (e) {
        if (created) for (const f of [o.db, `${o.db}-wal`, `${o.db}-shm`, `${o.db}-journal`]) rmSync(f, { force: true });
        throw new CliError(ExitCode.START, `cannot start: ${(e as Error).message}`);
      }
      process.stdout.write(`dt-acquirer listening on ${acq.url}\n`);
      const stop = () => {
        void acq.close().then(() => process.exit(ExitCode.OK));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    },
  );

program
  .command('revoke-terminal')
  .description('revoke a terminal at this acquirer (takes effect at once, also for a running service on the same database)')
  .requiredOption('--db <file>', "the acquirer's SQLite database, the one serve --db uses (must exist)")
  .requiredOption('--kid <hex>', 'terminal key id (32 hex digits)', hexKid)
  .option('--reason <text>', 'reason kept with the revocation', 'revoked by operator')
  .action((o: { db: string; kid: Uint8Array; reason: string }) => {
    // The database must be an existing acquirer's: a mistyped path must not become an empty
    // database in which the revocation is recorded while the running service never sees it.
    if (!existsSync(o.db)) throw new CliError(ExitCode.USAGE, `cannot open the acquirer database ${o.db}: no such file`);
    let store;
    try {
      store = new AcquirerStore(o.db, { mustExist: true });
    } catch (e) {
      throw new CliError(ExitCode.START, `cannot open database: ${(e as Error).message}`);
    }
    store.revokeTerminal(o.kid, o.reason, Date.now());
    store.close();
    process.stdout.write('terminal revoked\n');
  });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  // Commander printed its own usage errors; --help and --version end here with exitCode 0.
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE);
  process.stderr.write(`dt-acquirer: ${(e as Error).message}\n`);
  process.exit(e instanceof CliError ? e.exitCode : ExitCode.INTERNAL);
}
