/**
 * `dt-bank`: the bank's command line (see README.md). An acquiring bank
 * certifies its merchants' terminals; an issuing bank personalizes cards,
 * registers them, signs load orders, and blocks and restores lost cards at
 * the ledger. The bank's key is the file `dt-ledger bank-add` wrote
 * (`banks/<name>.key.json`, mode 0600); it is verified with its certificate
 * under the issuer root before anything is signed, and never printed.
 *
 * Exit codes: {@link EXIT_CODES}. Amounts are typed in tenge (`150.50`);
 * `--json` output keeps integer tiyn.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import {
  BankPermission,
  CardStatusError,
  decodeDeterministic,
  decodeStruct,
  fromHex,
  getCertificates,
  isDtError,
  formatTenge,
  MarkSchema,
  openCertificateRequest,
  openSigned,
  subjectKey,
  toHex,
  verifyCoseSign1,
  WrongPinError,
  type Mark,
  exitCodesByName,
  exitCodesHelp,
  USAGE_EXIT_MEANING,
} from '@dt/protocol';
import { StateFileError, limitsProblem, personalizeCard } from '@dt/card-applet-sim';
import { CardSyncClient } from '@dt/terminal';
import { writeFileDurable } from '@dt/protocol/fs';
import { certifyTerminalKey, openRestitution, signCardBankRequest, signLoadOrder } from '@dt/ledger';
import {
  CliFailure,
  describeMark,
  UsageError,
  failureMessage,
  isNetworkError,
  isReaderError,
  kidOption,
  ledgerRequest,
  nowSec,
  output,
  parseTenge,
  readBank,
  readCose,
  readSecrets,
  requirePermission,
  secretOptions,
  PIN,
  PUK,
  withCard,
  type BankIdentity,
  type CardSpec,
  ledgerUrlOption,
} from './common.ts';

/**
 * The exit codes of `dt-bank`, the one table (`--help` prints it; the root
 * README repeats it, checked by a test). 0-3 mean the same for every command
 * line of the toolkit; 4 and up are this command's own.
 */
export const EXIT_CODES = [
  { code: 0, name: 'OK', meaning: 'success' },
  {
    code: 1,
    name: 'REFUSED',
    meaning: 'refused: the ledger said no (its code is printed), a certificate request does not verify, or the card refused a command',
  },
  { code: 2, name: 'USAGE', meaning: USAGE_EXIT_MEANING },
  { code: 3, name: 'UNREACHABLE', meaning: 'unreachable: the ledger of --ledger cannot be reached' },
  {
    code: 4,
    name: 'NO_CARD',
    meaning: 'no card: none in the reader in time, not a DT card, the reader busy, or the card state file invalid or in use',
  },
  { code: 5, name: 'BANK_KEYS', meaning: "the bank's key and certificates do not verify under the root, or the bank lacks the permission" },
  { code: 6, name: 'INTERNAL', meaning: 'internal error, or a ledger answer that is not the API' },
] as const;

/** Exit codes of `dt-bank` by name. */
export const ExitCode = exitCodesByName(EXIT_CODES);

const EXIT_HELP = `
${exitCodesHelp(EXIT_CODES)}

Amounts are typed in tenge with up to two decimals (150, 150.5, 150.50) and shown as
tenge with two decimals (150.50 KZT); --json output gives integer tiyn (1 KZT = 100 tiyn).
The bank's files: --bank-key is banks/<name>.key.json of \`dt-ledger bank-add\`; --bank-cert,
--root and --ledger-cert default to banks/<name>.cert, root.cert and ledger.cert of the same
data directory.`;

interface BankOpts {
  bankKey: string;
  bankCert?: string;
  root?: string;
  ledgerCert?: string;
  json?: boolean;
}

const tenge = (what: string) => (v: string) => {
  try {
    return parseTenge(v, what);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
};

const intIn = (name: string, min: number, max: number) => (v: string) => {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max)
    throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
  return n;
};

const MARK_HELP =
  'purpose binding (SPEC §3.4): the hex of the deterministic CBOR Mark {? 1: [merchant ids], ? 2: [MCCs], 3: hops}; the value reaches the card as tokens carrying it, payable only to those merchants or MCCs';

const kidArg = (v: string): Uint8Array => {
  try {
    return kidOption(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
};

/**
 * `--mark <hex>`: the deterministic CBOR of a Mark (SPEC §3.4), e.g. `a1...`: merchant ids (key 1)
 * and/or MCCs (key 2), hops (key 3). One naming neither could never be spent, so it is refused too.
 */
const markArg = (v: string): Mark => {
  if (!/^(?:[0-9a-fA-F]{2})+$/.test(v) || v.length > 2 * 400)
    throw new InvalidArgumentError('--mark must be the hex of a CBOR Mark (SPEC §3.4), at most 400 bytes');
  let m: Mark;
  try {
    m = decodeStruct(MarkSchema, decodeDeterministic(fromHex(v.toLowerCase()), 400));
  } catch (e) {
    throw new InvalidArgumentError(`--mark is not a Mark of SPEC §3.4: ${(e as Error).message}`);
  }
  if (m.merchants === undefined && m.mccs === undefined)
    throw new InvalidArgumentError('--mark names no merchant id (key 1) and no MCC (key 2): its value could be paid nowhere');
  return m;
};

function bankOptions(c: Command): Command {
  return c
    .requiredOption('--bank-key <file>', "the bank's key file (banks/<name>.key.json of dt-ledger bank-add; never printed)")
    .option('--bank-cert <file>', "the bank's certificate (default: <name>.cert next to the key)")
    .option('--root <file>', 'issuer root certificate (default: root.cert of the data directory of the key)')
    .option('--ledger-cert <file>', 'ledger certificate (default: ledger.cert of the data directory of the key)')
    .option('--json', 'machine-readable JSON output (amounts in integer tiyn)');
}

function cardOptions(c: Command): Command {
  return c
    .option('--card <file>', 'a simulated card: its state file (dt-card create), run here by the real firmware')
    .option('--reader <spec>', 'a card in a PC/SC reader: pcsc (the first reader) or pcsc:<reader name part>')
    .option('--wait <seconds>', 'how long to wait for the card in the reader', intIn('--wait', 1, 3600), 10);
}

/** The bank of the options, verified. */
function bank(o: BankOpts): BankIdentity {
  // The key first: the other files' defaults are found next to it, so a mistyped --bank-key is named as such.
  if (!existsSync(o.bankKey)) throw new UsageError(`--bank-key ${o.bankKey}: no such file`);
  const data = dirname(dirname(resolve(o.bankKey)));
  const def = (given: string | undefined, file: string, option: string): string => {
    if (given !== undefined) return given;
    const p = join(data, file);
    if (!existsSync(p)) throw new UsageError(`${option}: not given, and ${p} does not exist`);
    return p;
  };
  return readBank(
    {
      bankKey: o.bankKey,
      ...(o.bankCert !== undefined ? { bankCert: o.bankCert } : {}),
      root: def(o.root, 'root.cert', '--root'),
      ledgerCert: def(o.ledgerCert, 'ledger.cert', '--ledger-cert'),
    },
    ExitCode.BANK_KEYS,
    nowSec(),
  );
}

/** Refuses (exit 2) an --out whose directory is not there or not writable: checked before anything is signed or sent. */
function checkOut(path: string | undefined): void {
  if (path === undefined) return;
  try {
    accessSync(dirname(resolve(path)), constants.W_OK);
  } catch (e) {
    throw new UsageError(`--out ${path}: cannot write there: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Writes a file atomically and durably (`writeFileDurable`): a failed write leaves the old file; a directory is never created. */
function writeOut(path: string, data: Uint8Array): void {
  // checkOut ran before anything was signed; the directory may have gone since.
  if (!existsSync(dirname(resolve(path)))) throw new UsageError(`--out ${path}: cannot write there: ENOENT`);
  try {
    // Durable before the command says it wrote it: temp file, fsync, rename, directory fsync.
    writeFileDurable(path, data, 0o644);
  } catch (e) {
    // A directory that is not writable is the command line's mistake (--out), not an internal error.
    throw new UsageError(`--out ${path}: cannot write: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** A ledger answer that is a refusal: exit 1 with its stable code. */
function refusal(status: number, json: Record<string, unknown>): CliFailure {
  const code = typeof json.code === 'string' ? json.code : `HTTP_${status}`;
  const message = typeof json.message === 'string' ? json.message.replace(/^[A-Z_]+: /, '') : `the ledger answered ${status}`;
  return new CliFailure(status >= 500 ? ExitCode.INTERNAL : ExitCode.REFUSED, code, message);
}

function iso(t: number): string {
  return new Date(t * 1000).toISOString().replace('.000Z', 'Z');
}

/** Builds the `dt-bank` program. */
export function buildProgram(): Command {
  const program = new Command('dt-bank')
    .description(
      "the bank's tools: certify terminals, issue (personalize and register) cards, sign load orders, block and restore lost cards at the ledger",
    )
    .showHelpAfterError()
    .exitOverride()
    .addHelpText('after', EXIT_HELP);

  bankOptions(
    program
      .command('sign-terminal')
      .description(
        "verify a terminal's certificate request (dt-pos init writes certificate-request.cbor: the terminal key signs its own public key and merchant) and certify the key under this acquiring bank; writes the terminal certificate for dt-pos install-cert",
      )
      .argument('<request>', 'the certificate request file')
      .requiredOption('--out <file>', 'where to write the terminal certificate')
      .option('--days <n>', 'validity in days', intIn('--days', 1, 3650), 365)
      .option(
        '--crl-max-age <seconds>',
        'certified revocation-list age policy (default: absent, 3 days)',
        intIn('--crl-max-age', 60, 30 * 86400),
      )
      .option('--merchant-id <id>', "refuse the request unless it names this merchant id (the bank's own record)"),
  ).action((file: string, o: BankOpts & { out: string; days: number; crlMaxAge?: number; merchantId?: string }) => {
    checkOut(o.out);
    const b = bank(o);
    requirePermission(b, BankPermission.ACQUIRING, ExitCode.BANK_KEYS);
    const raw = readCose(file, '<request>');
    let req;
    try {
      req = openCertificateRequest(raw);
    } catch (e) {
      throw new CliFailure(
        ExitCode.REFUSED,
        isDtError(e) ? e.code : 'MALFORMED',
        // The code is printed once, in front (the protocol's error messages begin with it).
        `the certificate request does not verify: ${isDtError(e) ? e.message.replace(`${e.code}: `, '') : (e as Error).message}`,
      );
    }
    if (o.merchantId !== undefined && req.merchant.id !== o.merchantId)
      throw new CliFailure(ExitCode.REFUSED, 'MERCHANT_MISMATCH', `the request names merchant ${req.merchant.id}, not ${o.merchantId}`);
    const now = nowSec();
    const cert = certifyTerminalKey(
      { signer: b.signer, name: b.name },
      {
        publicKey: req.publicKey,
        merchant: req.merchant,
        validity: { nbf: now - 86_400, exp: now + o.days * 86_400 },
        iat: now,
        ...(o.crlMaxAge !== undefined ? { crlMaxAge: o.crlMaxAge } : {}),
      },
    );
    writeOut(o.out, cert);
    const exp = now + o.days * 86_400;
    output(
      !!o.json,
      { terminal: toHex(req.kid), merchant: req.merchant, bank: toHex(b.kid), expires: exp, out: resolve(o.out) },
      `certified terminal ${toHex(req.kid)} for ${req.merchant.name} (${req.merchant.id}, MCC ${req.merchant.mcc}) under bank ${b.name}, valid until ${iso(exp)}: ${o.out}\nthe merchant installs it with: dt-pos install-cert --cert ${o.out} --bank-cert <bank cert> --root <root.cert> --ledger-cert <ledger.cert>`,
    );
  });

  cardOptions(
    bankOptions(
      secretOptions(
        program
          .command('issue')
          .description(
            'personalize a blank card as this issuing bank (the card makes its key; the bank certifies it with the limits; chain, pinned root and ledger certificates, PIN, PUK, lock) and, with --ledger, register it with the ledger so that it can be loaded',
          )
          .option('--subject <text>', "card certificate subject (e.g. the holder's account reference)", 'card')
          .addOption(
            new Option('--per-payment <tenge>', 'limit per offline payment')
              .argParser(tenge('--per-payment'))
              .default(50_000_00, formatTenge(50_000_00)),
          )
          .addOption(
            new Option('--offline-total <tenge>', 'limit of offline value between two syncs')
              .argParser(tenge('--offline-total'))
              .default(100_000_00, formatTenge(100_000_00)),
          )
          .option('--offline-count <n>', 'limit of offline payments between two syncs (1..64)', intIn('--offline-count', 1, 64), 10)
          .addOption(
            new Option('--cvm-limit <tenge>', 'payments above this amount need the PIN')
              .argParser(tenge('--cvm-limit'))
              .default(10_000_00, formatTenge(10_000_00)),
          )
          .option('--ledger <url>', 'register the card with the ledger at this URL (POST /v1/cards)', ledgerUrlOption),
        [PIN, PUK],
      ),
    ),
  ).action(
    async (
      o: BankOpts &
        CardSpec & {
          subject: string;
          perPayment: number;
          offlineTotal: number;
          offlineCount: number;
          cvmLimit: number;
          ledger?: string;
        },
    ) => {
      const limits = { perPayment: o.perPayment, offlineTotal: o.offlineTotal, offlineCount: o.offlineCount, cvmLimit: o.cvmLimit };
      const bad = limitsProblem(limits);
      if (bad) throw new UsageError(`--per-payment / --offline-total: ${bad}`);
      const [pin, puk] = readSecrets(o as unknown as Record<string, unknown>, [PIN, PUK]) as [string, string];
      const b = bank(o);
      requirePermission(b, BankPermission.ISSUING, ExitCode.BANK_KEYS);
      const p = await withCard(o, (c) =>
        personalizeCard(
          c.transport,
          { signer: b.signer, cert: b.cert, root: b.root, ledgerCert: b.ledgerCert },
          {
            pin,
            puk,
            subject: o.subject,
            limits,
          },
        ),
      );
      let registered = false;
      if (o.ledger !== undefined) await register(o.ledger, [p.certificate, b.cert]).then(() => (registered = true));
      output(
        !!o.json,
        { card: toHex(p.cardKid), bank: toHex(b.kid), limits, registered },
        `issued card ${toHex(p.cardKid)} by ${b.name}: per payment ${formatTenge(limits.perPayment)}, offline ${formatTenge(limits.offlineTotal)} in ${limits.offlineCount} payment(s), PIN above ${formatTenge(limits.cvmLimit)}${registered ? '; registered with the ledger' : '; not registered yet (dt-bank register)'}`,
      );
    },
  );

  cardOptions(
    program
      .command('register')
      .description('register a personalized card with the ledger (its chain read from the card: GET CERTIFICATES); idempotent')
      .requiredOption('--ledger <url>', 'ledger base URL', ledgerUrlOption)
      .option('--json', 'machine-readable JSON output'),
  ).action(async (o: CardSpec & { ledger: string; json?: boolean }) => {
    const chain = await withCard(o, (c) => getCertificates(c.transport));
    const kid = await register(o.ledger, chain);
    output(!!o.json, { card: kid, registered: true }, `card ${kid} registered with the ledger`);
  });

  bankOptions(
    program
      .command('load-order')
      .description(
        'sign a load order (SPEC §7.6.1) for a card of this issuing bank and write it to a file: the cardholder or a branch hands it to the ledger with dt-wallet load --order, or dt-bank load sends it',
      )
      .requiredOption('--card-kid <hex>', "the card's key id (32 hex digits; dt-wallet status shows it)", kidArg)
      .requiredOption('--amount <tenge>', 'amount to load', tenge('--amount'))
      .requiredOption('--out <file>', 'where to write the signed order')
      .option('--id <hex>', 'load id (32 hex digits; default random): the same id again is the same order (idempotent)', kidArg)
      .option('--mark <hex>', MARK_HELP, markArg),
  ).action((o: BankOpts & { cardKid: Uint8Array; amount: number; out: string; id?: Uint8Array; mark?: Mark }) => {
    checkOut(o.out);
    const b = bank(o);
    requirePermission(b, BankPermission.ISSUING, ExitCode.BANK_KEYS);
    const id = o.id ?? new Uint8Array(randomBytes(16));
    const order = signLoadOrder(
      { card: o.cardKid, amount: o.amount, id, time: nowSec(), ...(o.mark ? { mark: o.mark } : {}) } as never,
      b.signer,
    );
    writeOut(o.out, order);
    output(
      !!o.json,
      { card: toHex(o.cardKid), amount: o.amount, id: toHex(id), ...(o.mark ? { mark: o.mark } : {}), out: resolve(o.out) },
      `load order ${toHex(id)}: ${formatTenge(o.amount)} for card ${toHex(o.cardKid)}${o.mark ? ` marked (${describeMark(o.mark)})` : ''}: ${o.out}`,
    );
  });

  bankOptions(
    program
      .command('load')
      .description(
        "sign a load order and send it to the ledger (POST /v1/loads): the amount moves from the bank's balance to a pending load, delivered at the card's next sync (dt-wallet sync or load)",
      )
      .requiredOption('--card-kid <hex>', "the card's key id", kidArg)
      .requiredOption('--amount <tenge>', 'amount to load', tenge('--amount'))
      .requiredOption('--ledger <url>', 'ledger base URL', ledgerUrlOption)
      .option('--id <hex>', 'load id (32 hex digits; default random; the same id again is idempotent)', kidArg)
      .option('--mark <hex>', MARK_HELP, markArg),
  ).action(async (o: BankOpts & { cardKid: Uint8Array; amount: number; ledger: string; id?: Uint8Array; mark?: Mark }) => {
    const b = bank(o);
    requirePermission(b, BankPermission.ISSUING, ExitCode.BANK_KEYS);
    const id = o.id ?? new Uint8Array(randomBytes(16));
    const order = signLoadOrder(
      { card: o.cardKid, amount: o.amount, id, time: nowSec(), ...(o.mark ? { mark: o.mark } : {}) } as never,
      b.signer,
    );
    const a = await new CardSyncClient({ ledgerUrl: o.ledger }).submitLoadOrder(order);
    if (!a.ok)
      throw new CliFailure(a.status >= 500 ? ExitCode.INTERNAL : ExitCode.REFUSED, a.code, (a.message ?? a.code).replace(/^[A-Z_]+: /, ''));
    output(
      !!o.json,
      { ...a, ...(o.mark ? { mark: o.mark } : {}) },
      `load ${a.id}: ${formatTenge(a.amount)} for card ${a.card}${o.mark ? ` marked (${describeMark(o.mark)})` : ''}: ${a.state} (delivered at the card's next sync${o.mark ? ' as tokens carrying the mark' : ''})`,
    );
  });

  bankOptions(
    program
      .command('block-card')
      .description(
        'block a lost or stolen card of this issuing bank at the ledger (SPEC §7.9): the ledger revokes it, terminals get the new revocation list at their next sync, and after the void window dt-bank restore-card brings its value back',
      )
      .requiredOption('--card-kid <hex>', "the card's key id", kidArg)
      .requiredOption('--ledger <url>', 'ledger base URL', ledgerUrlOption),
  ).action(async (o: BankOpts & { cardKid: Uint8Array; ledger: string }) => {
    const b = bank(o);
    requirePermission(b, BankPermission.ISSUING, ExitCode.BANK_KEYS);
    const r = await ledgerRequest(
      o.ledger,
      'POST',
      '/v1/cards/block',
      signCardBankRequest('block', { card: o.cardKid, time: nowSec() } as never, b.signer),
    );
    if (r.status !== 200) throw refusal(r.status, r.json);
    const j = r.json as { card: string; crlVersion: number; blockedAt: number; restoreAfter: number };
    output(
      !!o.json,
      j,
      `card ${j.card} blocked at ${iso(j.blockedAt)}: revoked in revocation list v${j.crlVersion}; its value can be restored from ${iso(j.restoreAfter)} (dt-bank restore-card)`,
    );
  });

  bankOptions(
    program
      .command('restore-card')
      .description(
        "after the void window since its block, have the ledger credit a blocked card's value to this bank (its last synced holdings less what settled from its offline chain) against a ledger-signed restitution record; load it onto a replacement card with dt-bank load or load-order",
      )
      .requiredOption('--card-kid <hex>', "the card's key id", kidArg)
      .requiredOption('--ledger <url>', 'ledger base URL', ledgerUrlOption)
      .option('--out <file>', 'where to write the restitution record (COSE_Sign1 signed by the ledger)'),
  ).action(async (o: BankOpts & { cardKid: Uint8Array; ledger: string; out?: string }) => {
    checkOut(o.out);
    const b = bank(o);
    requirePermission(b, BankPermission.ISSUING, ExitCode.BANK_KEYS);
    const r = await ledgerRequest(
      o.ledger,
      'POST',
      '/v1/cards/restore',
      signCardBankRequest('restore', { card: o.cardKid, time: nowSec() } as never, b.signer),
    );
    if (r.status !== 200) throw refusal(r.status, r.json);
    const j = r.json as { card: string; amount: number; cancelledLoads: number; record: string };
    if (typeof j.record !== 'string' || typeof j.amount !== 'number')
      throw new CliFailure(ExitCode.INTERNAL, 'BAD_RESPONSE', 'the ledger answered the restore without a record');
    // The record must be the ledger's (the key the bank's cards pin).
    try {
      const rec = openRestitution(fromHex(j.record));
      verifyCoseSign1(rec.cose, subjectKey(openSigned('Certificate', b.ledgerCert).message).publicKey);
      if (toHex(rec.record.card) !== toHex(o.cardKid) || rec.record.amount !== j.amount) throw new Error('record and answer differ');
    } catch (e) {
      throw new CliFailure(
        ExitCode.INTERNAL,
        'BAD_RESPONSE',
        `the restitution record does not verify with the ledger key: ${(e as Error).message}`,
      );
    }
    if (o.out !== undefined) writeOut(o.out, fromHex(j.record));
    output(
      !!o.json,
      j,
      `restored ${formatTenge(j.amount)} of card ${j.card} to bank ${b.name}${j.cancelledLoads > 0 ? ` (and ${formatTenge(j.cancelledLoads)} of pending loads returned)` : ''}${o.out ? `; record: ${o.out}` : ''}`,
    );
  });

  bankOptions(
    program
      .command('balance')
      .description("this bank's balance and credit line at the ledger (GET /v1/banks/<kid>)")
      .requiredOption('--ledger <url>', 'ledger base URL', ledgerUrlOption),
  ).action(async (o: BankOpts & { ledger: string }) => {
    const b = bank(o);
    const r = await ledgerRequest(o.ledger, 'GET', `/v1/banks/${toHex(b.kid)}`);
    if (r.status !== 200) throw refusal(r.status, r.json);
    const j = r.json as { bank: string; balance: number; creditLine: number };
    output(
      !!o.json,
      { ...j, name: b.name },
      `bank ${b.name} (${j.bank}): balance ${formatTenge(j.balance)}, credit line ${formatTenge(j.creditLine)}`,
    );
  });

  return program;
}

/** Registers a card chain with the ledger; answers the card's kid. */
async function register(ledger: string, chain: readonly Uint8Array[]): Promise<string> {
  const r = await new CardSyncClient({ ledgerUrl: ledger }).registerCard(chain);
  if (!r.ok)
    throw new CliFailure(r.status >= 500 ? ExitCode.INTERNAL : ExitCode.REFUSED, r.code, (r.message ?? r.code).replace(/^[A-Z_]+: /, ''));
  return r.kid;
}

/** The exit code of an error a command threw. */
export function exitCodeOf(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
  if (e instanceof UsageError) return ExitCode.USAGE;
  if (e instanceof CliFailure) return e.exitCode;
  if (e instanceof StateFileError) return e.code === 'STATE_MISSING' ? ExitCode.USAGE : ExitCode.NO_CARD;
  if (e instanceof WrongPinError || e instanceof CardStatusError)
    return e instanceof CardStatusError && e.sw === 0x6a82 ? ExitCode.NO_CARD : ExitCode.REFUSED;
  if (isReaderError(e)) return ExitCode.NO_CARD;
  if (isNetworkError(e)) return ExitCode.UNREACHABLE;
  return ExitCode.INTERNAL;
}

/** A stable code for `--json` error output. */
function errorCode(e: unknown): string {
  if (e instanceof CliFailure) return e.code;
  if (e instanceof UsageError) return 'USAGE';
  if (e instanceof StateFileError) return e.code;
  if (e instanceof CardStatusError) return 'CARD_REFUSED';
  // In the order of exitCodeOf: a reader's timeout is the reader's, not the ledger's.
  if (isReaderError(e)) return 'NO_CARD';
  if (isNetworkError(e)) return 'UNREACHABLE';
  return 'INTERNAL';
}

/** Runs the CLI with `argv` (process.argv form). */
export async function main(argv: string[] = process.argv): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    const code = exitCodeOf(e);
    if (!(e instanceof CommanderError)) {
      const message = failureMessage(e);
      if (argv.includes('--json')) process.stdout.write(JSON.stringify({ error: errorCode(e), message }) + '\n');
      process.stderr.write(`dt-bank: ${errorCode(e) === 'USAGE' ? '' : `${errorCode(e)}: `}${message}\n`);
    }
    process.exitCode = code;
  }
}
