/**
 * `dt-pos`: the merchant's command line for the DT POS terminal.
 *
 * Exit codes: {@link EXIT_CODES} (the one table: `--help` prints it, and
 * the root README's exit-code table repeats it, checked by a test).
 *
 * @module
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';
import {
  BankPermission,
  ErrorCode,
  formatTenge,
  fromHex,
  issueCertificate,
  keyPairSigner,
  openSigned,
  publicKeyOf,
  Role,
  toHex,
  CURRENCY_KZT,
  READER_SPEC_FORMS,
  TransportErrorCode,
  isTransportError,
  parseReaderSpec,
  exitCodesByName,
  exitCodesHelp,
  USAGE_EXIT_MEANING,
} from '@dt/protocol';
import { isHttpUrl } from '@dt/protocol/http';
import { TerminalError, TerminalErrorCode, isTerminalError } from '../errors.ts';
import {
  certificateRequest,
  createTerminalKey,
  identityPaths,
  installIdentity,
  loadIdentity,
  loadTerminalKey,
  writeFileDurable,
  type TerminalIdentity,
} from '../identity.ts';
import { DEFAULT_CONFIG, configPath, loadConfig, saveConfig, verifierByName, type TerminalConfig } from '../config.ts';
import { AdjustmentKind, Journal, type PaymentRecord } from '../journal/journal.ts';
import {
  AdjustmentRefusedError,
  adjustmentJson,
  adjustmentStateText,
  adjustmentSummary,
  adjustPayment,
  readPresentedCard,
} from '../adjust.ts';
import { PaymentKernel } from '../kernel/kernel.ts';
import { EndReason, type TapOutcome } from '../kernel/outcome.ts';
import type { PinPad, PinPrompt } from '../kernel/pinpad.ts';
import { SyncClient, type SyncProblem } from '../sync/client.ts';
import { PcscReaders } from '../transports/pcsc.ts';
import { openSerialReader } from '../transports/serial.ts';
import { listHidDevices, openHidReader } from '../transports/hid.ts';
import type { CardReader } from '../transports/reader.ts';
import { assessRisk, certifiedCrlMaxAge } from '../policy.ts';
import { lockDataDir } from '../service/lock.ts';
import { PosService } from '../service/service.ts';
import { openServiceReader } from '../service/reader.ts';
import { buildEcrApp, ecrToken, TOKEN_FILE } from '../service/ecr.ts';

/**
 * The exit codes of `dt-pos`, the one table: {@link ExitCode}, `--help` and
 * the README come from it. 0-3 mean the same for every command line of the
 * toolkit (0 ok, 1 refused by the business rules, 2 usage, 3 offline or
 * unreachable); 4 and up are this command's own.
 */
export const EXIT_CODES = [
  { code: 0, name: 'OK', meaning: 'success (charge: APPROVED; void, refund: recorded)' },
  {
    code: 1,
    name: 'DECLINED',
    meaning:
      "refused: charge DECLINED, a void or refund the terminal's rules refuse (refund --tap: not the paying card), or the acquirer refused what sync sent",
  },
  { code: 2, name: 'USAGE', meaning: USAGE_EXIT_MEANING },
  { code: 3, name: 'ONLINE_REQUIRED', meaning: 'offline: charge ONLINE REQUIRED, or the acquirer was unreachable (sync)' },
  { code: 4, name: 'END', meaning: 'END: no card, not a DT card, reader busy or unavailable, cancelled (Ctrl-C) (charge, refund --tap)' },
  { code: 5, name: 'NOT_INITIALIZED', meaning: 'terminal not initialized, or its configuration or certificates do not verify' },
  {
    code: 6,
    name: 'INTERNAL',
    meaning: 'internal or journal error (charge END INTERNAL_ERROR), or an acquirer answer the terminal does not trust',
  },
  { code: 7, name: 'PRESENT_CARD_AGAIN', meaning: 'PRESENT CARD AGAIN and the card was not presented again' },
  {
    code: 8,
    name: 'LOCKED',
    meaning: 'the data directory is in use by another dt-pos process (serve, charge or refund --tap: dt-pos.lock)',
  },
  { code: 9, name: 'LISTEN', meaning: 'serve cannot listen (address in use or not available)' },
] as const;

/** Exit codes of `dt-pos` by name (from {@link EXIT_CODES}). */
export const ExitCode = exitCodesByName(EXIT_CODES);

const EXIT_HELP = `
${exitCodesHelp(EXIT_CODES)}

Amounts are typed in tenge with up to two decimals (150, 150.5, 150.50) and shown
as tenge with two decimals (150.50 KZT); --json output gives integer tiyn (1 KZT = 100 tiyn).
Data directory: --data-dir, else $DT_POS_HOME, else ~/.dt-pos.`;

/** `serve` cannot listen: exit code 9 (LISTEN). */
class ListenError extends Error {}

/** A command-line mistake: exit code 2 (USAGE). */
export class UsageError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

const now = (): number => Math.floor(Date.now() / 1000);

/** Parses "150", "150.5", "150.50" tenge into tiyn; a {@link UsageError} otherwise. */
export function parseAmount(s: string): number {
  const m = /^(\d{1,13})(?:\.(\d{1,2}))?$/.exec(s.trim());
  if (!m) throw new UsageError(`not an amount: ${s} (use tenge with up to two decimals, e.g. 150.50)`);
  const tiyn = Number(m[1]) * 100 + Number((m[2] ?? '').padEnd(2, '0'));
  if (tiyn <= 0 || !Number.isSafeInteger(tiyn)) throw new UsageError('amount must be positive');
  return tiyn;
}

/** Formats tiyn as tenge, e.g. 15050 -> "150.50 KZT" (the toolkit's one format: `formatTenge`). */
export const formatAmount = formatTenge;

function iso(t: number | undefined): string {
  return t === undefined ? '-' : new Date(t * 1000).toISOString().replace('.000Z', 'Z');
}

interface Globals {
  dataDir: string;
  json: boolean;
}

function globals(cmd: Command): Globals {
  const o = cmd.optsWithGlobals() as { dataDir?: string; json?: boolean };
  return { dataDir: resolve(o.dataDir ?? process.env.DT_POS_HOME ?? join(homedir(), '.dt-pos')), json: o.json === true };
}

class Exit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

function out(g: Globals, json: unknown, human: string): void {
  process.stdout.write(g.json ? JSON.stringify(json, (_k, v: unknown) => (v instanceof Uint8Array ? toHex(v) : v)) + '\n' : human + '\n');
}

/**
 * Opens the data directory's journal. A directory with neither a terminal key nor a journal is no
 * terminal (a mistyped --data-dir): refused, and nothing is created there.
 */
function openJournal(g: Globals): Journal {
  const file = join(g.dataDir, 'journal.sqlite');
  if (!existsSync(file) && !existsSync(identityPaths(g.dataDir).key))
    throw new TerminalError(
      TerminalErrorCode.NOT_INITIALIZED,
      `no terminal in ${g.dataDir} (no terminal.key, no journal.sqlite): run dt-pos init, or check --data-dir / $DT_POS_HOME`,
    );
  return Journal.open(file);
}

function requireIdentity(g: Globals): TerminalIdentity {
  return loadIdentity(g.dataDir, now());
}

// ---------------------------------------------------------------- readers
/** Opens a reader from a spec (the protocol's `parseReaderSpec`): `pcsc`, `pcsc:<name part>`, `serial:<path>`, `hid:<path>`. */
export async function openReader(spec: string, apduTimeoutMs?: number): Promise<{ reader: CardReader; close: () => Promise<void> }> {
  const parsed = parseReaderSpec(spec);
  if (parsed === undefined) throw new TerminalError(TerminalErrorCode.CONFIG, `unknown reader spec ${spec} (${READER_SPEC_FORMS})`);
  if (parsed.kind === 'pcsc') {
    const pcsc = new PcscReaders(apduTimeoutMs ? { apduTimeoutMs } : {});
    return { reader: pcsc.reader(parsed.name), close: () => pcsc.close() };
  }
  const r = parsed.kind === 'serial' ? await openSerialReader(parsed.path) : openHidReader(parsed.path);
  return { reader: r, close: () => r.close() };
}

// ---------------------------------------------------------------- PIN pad on the terminal's own keyboard
/**
 * PIN entry on the console: hidden input on a TTY (echoes `*`), or one line
 * from stdin when it is a pipe (an external PIN pad process). The digits go
 * into a fresh buffer for the kernel, which wipes it; nothing is logged.
 */
export class ConsolePinPad implements PinPad {
  #rl: ReturnType<typeof createInterface> | undefined;
  #lines: AsyncIterator<string> | undefined;

  /**
   * Stops reading stdin. A readline interface left open on a pipe keeps
   * the process alive until the other end closes: `charge` calls this after
   * the outcome so that it exits.
   */
  close(): void {
    this.#rl?.close();
    this.#rl = undefined;
    this.#lines = undefined;
  }

  /** {@inheritDoc PinPad.requestPin} */
  async requestPin(prompt: PinPrompt, signal: AbortSignal): Promise<Uint8Array | null> {
    const tries = prompt.triesLeft !== undefined ? ` (wrong PIN, ${prompt.triesLeft} tries left)` : '';
    for (;;) {
      process.stderr.write(`Enter PIN for ${formatAmount(prompt.amount)}${tries}, empty to cancel: `);
      const text = process.stdin.isTTY ? await this.#hidden(signal) : await this.#line(signal);
      process.stderr.write('\n');
      if (text === null || text.length === 0) return null;
      // A malformed entry is not sent to the card (it would cost nothing, but tells the holder nothing either).
      if (/^[0-9]{4,12}$/.test(text)) return pinDigits(text);
      process.stderr.write('A PIN is 4 to 12 digits.\n');
    }
  }

  #line(signal: AbortSignal): Promise<string | null> {
    if (!this.#lines) {
      this.#rl = createInterface({ input: process.stdin, terminal: false });
      this.#lines = this.#rl[Symbol.asyncIterator]();
    }
    const it = this.#lines;
    return new Promise((resolveP, reject) => {
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
      it.next().then((r) => resolveP(r.done ? null : r.value.trim()), reject);
    });
  }

  #hidden(signal: AbortSignal): Promise<string | null> {
    return new Promise((resolveP, reject) => {
      const stdin = process.stdin;
      let buf = '';
      stdin.setRawMode(true);
      stdin.resume();
      const done = (v: string | null, e?: unknown): void => {
        stdin.off('data', onData);
        stdin.setRawMode(false);
        stdin.pause();
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- a stdin error, passed on as it came
        if (e) reject(e);
        else resolveP(v);
      };
      const onData = (d: Buffer): void => {
        for (const ch of d.toString('utf8')) {
          if (ch === '\r' || ch === '\n') return done(buf);
          if (ch === '\u0003' || ch === '\u001b') return done(null);
          if (ch === '\u007f') {
            buf = buf.slice(0, -1);
            continue;
          }
          if (/[0-9]/.test(ch) && buf.length < 12) {
            buf += ch;
            process.stderr.write('*');
          }
        }
      };
      signal.addEventListener('abort', () => done(null, signal.reason), { once: true });
      stdin.on('data', onData);
    });
  }
}

function pinDigits(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
  return b;
}

// ---------------------------------------------------------------- commands
function outcomeExit(o: TapOutcome): number {
  switch (o.kind) {
    case 'APPROVED':
      return ExitCode.OK;
    case 'DECLINED':
      return ExitCode.DECLINED;
    case 'ONLINE_REQUIRED':
      return ExitCode.ONLINE_REQUIRED;
    case 'PRESENT_CARD_AGAIN':
      return ExitCode.PRESENT_CARD_AGAIN;
    default:
      return o.reason === EndReason.INTERNAL_ERROR ? ExitCode.INTERNAL : ExitCode.END;
  }
}

function receiptText(p: PaymentRecord, merchantName: string): string {
  return [
    `Receipt #${p.id}  ${merchantName} (${p.merchant}, MCC ${p.mcc})`,
    `  amount      ${formatAmount(p.amount)}`,
    `  time        ${iso(p.time)}`,
    `  card        ${toHex(p.card)} counter ${p.counter}`,
    `  verified    ${p.cvm === 1 ? 'PIN' : p.cvm === 2 ? 'on device' : 'no CVM'}`,
    `  transfer    ${toHex(p.transferHash)}`,
    `  state       ${p.state}${p.state === 'double_spent' ? (p.covered ? ' (covered)' : ' (NOT covered)') : ''}${p.outcomeCode ? ` ${p.outcomeCode}` : ''}`,
  ].join('\n');
}

function paymentJson(p: PaymentRecord): Record<string, unknown> {
  return {
    id: p.id,
    amount: p.amount,
    currency: p.currency,
    state: p.state,
    covered: p.covered ?? null,
    outcomeCode: p.outcomeCode ?? null,
    transfer: toHex(p.transferHash),
    card: toHex(p.card),
    counter: p.counter,
    time: p.time,
    approvedAt: p.approvedAt,
    cvm: p.cvm,
    merchant: p.merchant,
    mcc: p.mcc,
    batch: p.batchSeq ?? null,
  };
}

/** Builds the `dt-pos` program (exported for tests of the help text). */
export function buildProgram(): Command {
  const program = new Command('dt-pos')
    .description('DT offline POS terminal: take Digital Tenge card payments offline, keep them safe, sync them later.')
    .option('-d, --data-dir <dir>', 'terminal data directory (keys, certificates, config.json, journal.sqlite)')
    .option('--json', 'machine-readable JSON output (one object per command)')
    .addHelpText('after', EXIT_HELP)
    .exitOverride()
    .showHelpAfterError();

  program
    .command('init')
    .description('create the terminal key and a certificate request for the acquiring bank; with --dev, certify it with a local dev PKI')
    .requiredOption('--merchant-id <id>', 'merchant id the acquiring bank registered (1-64 bytes)', textOption('--merchant-id', 64))
    .requiredOption('--mcc <code>', 'merchant category code (ISO 18245), 0..9999', intOption('--mcc', 0, 9999))
    .requiredOption('--name <name>', 'merchant name printed on receipts (1-64 bytes)', textOption('--name', 64))
    .option('--acquirer <url>', 'acquirer base URL for sync, e.g. http://127.0.0.1:8081', acquirerUrlOption)
    .option('--reader <spec>', 'default reader: pcsc, pcsc:<name>, serial:<path>, hid:<path>', readerSpecOption, 'pcsc')
    .option(
      '--dev <dir>',
      "development: self-provision with a local PKI: a dt-ledger data directory (its acquiring bank's key, root.cert, ledger.cert) or a dev PKI directory (dev-pki.json of dt-card)",
    )
    .option('--dev-bank <name>', 'with --dev on a dt-ledger data directory: the acquiring bank (banks/<name>.*; default: the only one)')
    .action(
      (
        o: { merchantId: string; mcc: number; name: string; acquirer?: string; reader: string; dev?: string; devBank?: string },
        cmd: Command,
      ) => {
        const g = globals(cmd);
        // The follow-up commands it prints name the data directory as it was given.
        const given = (cmd.optsWithGlobals() as { dataDir?: string }).dataDir;
        const dtPos = given !== undefined ? `dt-pos -d ${/^[\w./-]+$/.test(given) ? given : JSON.stringify(given)}` : 'dt-pos';
        // The dev PKI is read before anything is written: a refused init leaves the data directory as it was.
        if (o.dev !== undefined && !existsSync(o.dev)) throw new UsageError(`--dev ${o.dev}: no such directory`);
        const pki = o.dev !== undefined ? readDevPki(o.dev, o.devBank) : undefined;
        const paths = identityPaths(g.dataDir);
        const kp = existsSync(paths.key) ? loadTerminalKey(g.dataDir) : createTerminalKey(g.dataDir);
        const merchant = { id: o.merchantId, mcc: o.mcc, name: o.name };
        const cfg: TerminalConfig = {
          ...DEFAULT_CONFIG,
          ...(existsSync(configPath(g.dataDir)) ? loadConfig(g.dataDir) : {}),
          reader: o.reader,
          ...(o.acquirer ? { acquirerUrl: o.acquirer } : {}),
        };
        saveConfig(g.dataDir, cfg);
        const request = certificateRequest(kp, merchant, now());
        writeFileDurable(paths.request, request);
        const kid = toHex(keyPairSigner(kp).kid);
        if (!pki) {
          out(
            g,
            { initialized: false, terminal: kid, certificateRequest: paths.request },
            `Terminal key ${kid} created in ${g.dataDir}.\nSend ${paths.request} to your acquiring bank, then install its answer with:\n  ${dtPos} install-cert --cert terminal.cert --bank-cert bank.cert --root root.cert --ledger-cert ledger.cert`,
          );
          return;
        }
        const t = now();
        const cert = issueCertificate(
          {
            iss: openSigned('Certificate', pki.bank.cert).message.sub,
            sub: `terminal-${merchant.id}`,
            iat: t,
            nbf: t - 86_400,
            exp: t + 365 * 86_400,
            role: Role.TERMINAL,
            merchant,
            currency: CURRENCY_KZT,
            publicKey: kp.publicKey,
          },
          keyPairSigner({ secretKey: pki.bank.secretKey, publicKey: publicKeyOf(pki.bank.secretKey) }),
        );
        const id = installIdentity(g.dataDir, { chain: [cert, pki.bank.cert], root: pki.root, ledgerCert: pki.ledgerCert }, t);
        out(
          g,
          { initialized: true, terminal: kid, merchant, certExpires: id.certExpires, dataDir: g.dataDir },
          `Terminal ${kid} certified for ${merchant.name} (${merchant.id}, MCC ${merchant.mcc}) by ${openSigned('Certificate', pki.bank.cert).message.sub} (--dev); valid until ${iso(id.certExpires)}.\nRun '${dtPos} sync' to fetch the revocation list before taking payments.`,
        );
      },
    );

  program
    .command('install-cert')
    .description(
      "install the acquiring bank's answer to the certificate request (the chain and the trust anchors); atomic: verified with the terminal key before it replaces the installed identity, which a failed install leaves as it was",
    )
    .requiredOption('--cert <file>', 'terminal certificate issued by the bank (raw CBOR or hex)')
    .requiredOption('--bank-cert <file>', 'acquiring bank certificate')
    .requiredOption('--root <file>', 'issuer root certificate (the trust anchor to pin)')
    .requiredOption('--ledger-cert <file>', 'ledger certificate')
    .action((o: { cert: string; bankCert: string; root: string; ledgerCert: string }, cmd: Command) => {
      const g = globals(cmd);
      const parts = {
        chain: [readCert(o.cert, '--cert'), readCert(o.bankCert, '--bank-cert')],
        root: readCert(o.root, '--root'),
        ledgerCert: readCert(o.ledgerCert, '--ledger-cert'),
      };
      let id: TerminalIdentity;
      try {
        id = installIdentity(g.dataDir, parts, now());
      } catch (e) {
        if (isTerminalError(e) && e.code === TerminalErrorCode.NOT_INITIALIZED && existsSync(identityPaths(g.dataDir).key)) {
          throw new TerminalError(
            TerminalErrorCode.NOT_INITIALIZED,
            `not installed, the certificates do not verify: ${e.message}; the installed identity is unchanged`,
            {},
            e,
          );
        }
        throw e;
      }
      out(
        g,
        { installed: true, terminal: toHex(id.kid), merchant: id.merchant, certExpires: id.certExpires },
        `Installed: terminal ${toHex(id.kid)} for ${id.merchant.name}; valid until ${iso(id.certExpires)}.`,
      );
    });

  program
    .command('charge')
    .description('take a payment: wait for a tap on the reader, show progress and the outcome (PIN on this console when needed)')
    .argument('<amount>', 'amount in tenge, e.g. 150.50')
    .option('-r, --reader <spec>', 'reader: pcsc, pcsc:<name>, serial:<path>, hid:<path> (default from config.json)', readerSpecOption)
    .option(
      '-t, --timeout <seconds>',
      `how long to wait for the card (default: timeouts.cardMs of config.json, ${DEFAULT_CONFIG.timeouts.cardMs / 1000} s unless set)`,
      intOption('--timeout', 1, 86_400),
    )
    .option('--retries <n>', 'PRESENT CARD AGAIN rounds before giving up', intOption('--retries', 0, 100), 3)
    .action(async (amountText: string, o: { reader?: string; timeout?: number; retries: number }, cmd: Command) => {
      const g = globals(cmd);
      const amount = parseAmount(amountText);
      const identity = requireIdentity(g);
      const cfg = loadConfig(g.dataDir);
      // One process per data directory: a running `dt-pos serve` (or another charge) holds the journal.
      const lock = lockDataDir(g.dataDir);
      process.once('exit', () => lock.release());
      const journal = openJournal(g);
      const { reader, close } = await openReader(o.reader ?? cfg.reader);
      const ctl = new AbortController();
      const onSig = (): void => ctl.abort();
      process.once('SIGINT', onSig);
      const pinPad = new ConsolePinPad();
      try {
        const kernel = new PaymentKernel({
          identity,
          journal,
          policy: cfg.policy,
          pinPad,
          verifier: verifierByName(cfg.verifier),
          timeouts: { ...cfg.timeouts, ...(o.timeout ? { cardMs: o.timeout * 1000 } : {}) },
        });
        const say = (s: string): void => {
          if (!g.json) process.stderr.write(s + '\n');
        };
        let outcome: TapOutcome;
        for (let round = 0; ; round++) {
          outcome = await kernel.charge(reader, amount, {
            signal: ctl.signal,
            onProgress: (state) => {
              if (state === 'WAITING_FOR_CARD') say(`${formatAmount(amount)}: present card on ${reader.name}...`);
              else if (state === 'PAYING') say('processing, do not remove the card...');
            },
          });
          if (outcome.kind !== 'PRESENT_CARD_AGAIN' || round >= o.retries || ctl.signal.aborted) break;
          say('PRESENT CARD AGAIN');
        }
        const human =
          outcome.kind === 'APPROVED'
            ? `APPROVED ${formatAmount(outcome.payment.amount)}  receipt #${outcome.payment.id}${outcome.recovered ? ' (recovered torn tap)' : ''}${outcome.alreadyRecorded ? ' (already recorded)' : ''}`
            : `${outcome.kind.replace(/_/g, ' ')}: ${outcome.reason}${'detail' in outcome && outcome.detail ? ` (${outcome.detail})` : ''}`;
        out(
          g,
          outcome.kind === 'APPROVED'
            ? { outcome: 'APPROVED', payment: paymentJson(outcome.payment), recovered: outcome.recovered }
            : { outcome: outcome.kind, ...outcome, kind: undefined },
          human,
        );
        throw new Exit(outcomeExit(outcome));
      } finally {
        process.off('SIGINT', onSig);
        pinPad.close();
        await close();
        journal.close();
        lock.release();
      }
    });

  program
    .command('void')
    .description(
      'void a payment the ledger has not settled (pending or submitted): signed and journalled at once, sent with (or after) its handover at the next sync; the merchant is never credited and the card gets the value back at its next sync',
    )
    .argument('<receipt>', 'receipt number of the payment', intOption('receipt number', 1, Number.MAX_SAFE_INTEGER))
    .option('--reference <ref>', "the register's or operator's reference, 1-64 characters of A-Z a-z 0-9 . _ : - (informative)", refOption)
    .action((id: number, o: { reference?: string }, cmd: Command) => {
      const g = globals(cmd);
      const identity = requireIdentity(g);
      const journal = openJournal(g);
      try {
        const { adjustment, existing } = adjustPayment(journal, identity, {
          kind: AdjustmentKind.VOID,
          paymentId: id,
          ...(o.reference ? { reference: o.reference } : {}),
        });
        out(
          g,
          { outcome: 'VOIDED', existing, adjustment: adjustmentJson(adjustment) },
          `VOIDED receipt #${id} ${formatAmount(adjustment.amount)}${existing ? ' (voided before)' : ''}: ${adjustmentStateText(adjustment)}`,
        );
      } finally {
        journal.close();
      }
    });

  program
    .command('refund')
    .description(
      "refund a settled payment, in full or in part: signed and journalled at once, sent at the next sync; the ledger debits the merchant and credits the paying card at the card's next sync. The refunds of a payment never exceed its amount",
    )
    .argument('<receipt>', 'receipt number of the payment', intOption('receipt number', 1, Number.MAX_SAFE_INTEGER))
    .option('--amount <tenge>', 'amount to refund in tenge, e.g. 50.25 (default: all that is left to refund)')
    .option(
      '--reference <ref>',
      'reference of the refund, 1-64 characters of A-Z a-z 0-9 . _ : -; the same reference again refunds once',
      refOption,
    )
    .option('--tap', 'first read the card on the reader: refused unless it is the paying card (the holder sees the refund on their card)')
    .option(
      '-r, --reader <spec>',
      'reader for --tap: pcsc, pcsc:<name>, serial:<path>, hid:<path> (default from config.json)',
      readerSpecOption,
    )
    .option('-t, --timeout <seconds>', 'with --tap: how long to wait for the card (default: 30)', intOption('--timeout', 1, 86_400))
    .action(
      async (id: number, o: { amount?: string; reference?: string; tap?: boolean; reader?: string; timeout?: number }, cmd: Command) => {
        const g = globals(cmd);
        const amount = o.amount !== undefined ? parseAmount(o.amount) : undefined;
        if (!o.tap && (o.reader !== undefined || o.timeout !== undefined)) throw new UsageError('--reader and --timeout go with --tap');
        const identity = requireIdentity(g);
        const journal = openJournal(g);
        try {
          const p = journal.getPayment(id);
          if (!p) throw new TerminalError(TerminalErrorCode.NOT_FOUND, `no receipt #${id}`);
          if (o.tap) await checkPayingCard(g, p, o.reader, o.timeout);
          const { adjustment, existing } = adjustPayment(journal, identity, {
            kind: AdjustmentKind.REFUND,
            paymentId: id,
            ...(amount !== undefined ? { amount } : {}),
            ...(o.reference ? { reference: o.reference } : {}),
          });
          const left = adjustmentSummary(p, journal.adjustmentsOf(id)).refundable;
          out(
            g,
            { outcome: 'REFUNDED', existing, card: toHex(p.card), refundable: left, adjustment: adjustmentJson(adjustment) },
            [
              `REFUNDED ${formatAmount(adjustment.amount)} of receipt #${id} (${formatAmount(p.amount)})${existing ? ' (refunded before)' : ''} to card ${toHex(p.card)}: credited at the card's next sync`,
              `  ${adjustmentStateText(adjustment)}; left to refund: ${formatAmount(left)}`,
            ].join('\n'),
          );
        } finally {
          journal.close();
        }
      },
    );

  program
    .command('serve')
    .description(
      'run the terminal as a service: hold the reader, take payments for the cash register (ECR API) and the attendant screen on loopback, sync in the background; SIGTERM finishes the tap in progress, then stops',
    )
    .option('--host <address>', 'loopback address to listen on (127.0.0.1, ::1 or localhost)', '127.0.0.1')
    .option('--port <port>', 'TCP port (0: any free port, printed at start)', intOption('--port', 0, 65535), 8470)
    .option('--reader <spec>', 'reader: pcsc, pcsc:<name>, serial:<path>, hid:<path> (default from config.json)', readerSpecOption)
    .option('--acquirer <url>', 'acquirer base URL (default from config.json; none: no sync)', acquirerUrlOption)
    .option(
      '--sync-interval <seconds>',
      'seconds between sync rounds while the acquirer answers (revocation list refresh)',
      intOption('--sync-interval', 1, 86_400),
      60,
    )
    .option(
      '--card-timeout <seconds>',
      `seconds to wait for the card of a payment (default: timeouts.cardMs of config.json, ${DEFAULT_CONFIG.timeouts.cardMs / 1000} s unless set)`,
      intOption('--card-timeout', 1, 3600),
    )
    .action(
      async (
        o: { host: string; port: number; reader?: string; acquirer?: string; syncInterval: number; cardTimeout?: number },
        cmd: Command,
      ) => {
        const g = globals(cmd);
        if (!['127.0.0.1', '::1', 'localhost'].includes(o.host))
          throw new UsageError(`--host ${o.host}: the ECR API listens on loopback only (127.0.0.1, ::1, localhost)`);
        const identity = requireIdentity(g);
        const cfg = loadConfig(g.dataDir);
        const lock = lockDataDir(g.dataDir);
        process.once('exit', () => lock.release());
        const log = (event: string, data: Record<string, unknown>, human: string): void => {
          process.stdout.write(g.json ? JSON.stringify({ event, time: new Date().toISOString(), ...data }) + '\n' : `${human}\n`);
        };
        const journal = openJournal(g);
        const events: { service?: PosService } = {};
        const rd = openServiceReader(o.reader ?? cfg.reader, () => events.service?.readerChanged());
        let token: string;
        try {
          token = ecrToken(g.dataDir);
        } catch (e) {
          await rd.close();
          journal.close();
          lock.release();
          throw e;
        }
        const acquirerUrl = o.acquirer ?? cfg.acquirerUrl;
        const svc = new PosService({
          identity,
          journal,
          reader: rd.reader,
          readerStatus: () => rd.status(),
          policy: cfg.policy,
          timeouts: { ...cfg.timeouts, ...(o.cardTimeout ? { cardMs: o.cardTimeout * 1000 } : {}) },
          verifier: verifierByName(cfg.verifier),
          ...(acquirerUrl ? { acquirerUrl } : {}),
          syncIntervalMs: o.syncInterval * 1000,
        });
        events.service = svc;
        const unsubscribe = svc.subscribe((e) => {
          if (e.type === 'outcome')
            log(
              'outcome',
              { ...e },
              `${e.reference}: ${e.outcome.replace(/_/g, ' ')}${e.reason ? `: ${e.reason}` : ''}${e.detail ? ` (${e.detail})` : ''}`,
            );
          else if (e.type === 'phase') log('phase', { ...e }, `${e.reference}: ${e.phase.replace(/_/g, ' ')}`);
          else if (e.type === 'reader')
            log('reader', { ...e.reader }, `reader ${e.reader.spec}: ${e.reader.state}${e.reader.detail ? ` (${e.reader.detail})` : ''}`);
          else if (e.type === 'sync' && e.sync.state !== 'running')
            log('sync', { ...e.sync }, `sync: ${e.sync.state}${e.sync.lastProblem ? ` (${e.sync.lastProblem})` : ''}`);
        });
        svc.start();
        const app = buildEcrApp({ service: svc, token });
        let url: string;
        try {
          url = await app.listen({ host: o.host, port: o.port });
        } catch (e) {
          await svc.stop();
          await rd.close();
          journal.close();
          lock.release();
          throw new ListenError(`cannot listen on ${o.host}:${o.port}: ${(e as Error).message}`);
        }
        log(
          'listening',
          { url, pid: process.pid, tokenFile: join(g.dataDir, TOKEN_FILE), dataDir: g.dataDir },
          `dt-pos serve: ECR API and attendant screen on ${url} (token in ${join(g.dataDir, TOKEN_FILE)}); SIGTERM or Ctrl-C stops`,
        );
        await new Promise<void>((resolveStop) => {
          const onSignal = (sig: string): void => {
            process.off('SIGTERM', onSignal);
            process.off('SIGINT', onSignal);
            log('stopping', { signal: sig }, `dt-pos serve: ${sig}: finishing the tap in progress, then stopping`);
            resolveStop();
          };
          process.on('SIGTERM', onSignal);
          process.on('SIGINT', onSignal);
        });
        await svc.stop();
        unsubscribe();
        await app.close();
        await rd.close();
        journal.close();
        lock.release();
        log('stopped', {}, 'dt-pos serve: stopped');
      },
    );

  program
    .command('status')
    .description('terminal identity, pending (unverified) value and since when, revocation list age, last sync, torn taps')
    .action((_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const identity = requireIdentity(g);
      const cfg = loadConfig(g.dataDir);
      const journal = openJournal(g);
      try {
        const pending = journal.pendingSummary();
        const crl = journal.crl();
        const t = now();
        const risk = assessRisk(cfg.policy, {
          amount: 1,
          pending: pending.amount,
          crlIssued: crl?.issued,
          now: t,
          certifiedCrlMaxAge: certifiedCrlMaxAge(identity.chain[0]!),
        });
        const lastOk = journal.getMeta('lastSyncOk');
        const lastErr = journal.getMeta('lastSyncError');
        const torn = journal.tornAttempts();
        const data = {
          terminal: toHex(identity.kid),
          merchant: identity.merchant,
          certExpires: identity.certExpires,
          pending: { count: pending.count, amount: pending.amount, since: pending.since ?? null },
          crl: crl ? { version: crl.version, issued: crl.issued, ageSeconds: t - crl.issued, revoked: crl.count } : null,
          offlineAcceptance: risk.offline ? (risk.narrowed ? 'narrowed' : 'normal') : `stopped (${risk.reason})`,
          lastSyncOk: lastOk ? Number(lastOk) : null,
          lastSyncError: lastErr ? (JSON.parse(lastErr) as unknown) : null,
          openBatch: journal.openBatch()?.seq ?? null,
          tornTaps: torn.length,
          acquirer: cfg.acquirerUrl ?? null,
        };
        out(
          g,
          data,
          [
            `Terminal ${data.terminal}  ${identity.merchant.name} (${identity.merchant.id}, MCC ${identity.merchant.mcc})`,
            `Pending verification: ${formatAmount(pending.amount)} in ${pending.count} payment(s)${pending.since ? `, since ${iso(pending.since)}` : ''}`,
            `Revocation list: ${crl ? `v${crl.version}, issued ${iso(crl.issued)} (${Math.floor((t - crl.issued) / 3600)} h old), ${crl.count} revoked` : 'none (sync first)'}`,
            `Offline acceptance: ${data.offlineAcceptance}`,
            `Last successful sync: ${lastOk ? iso(Number(lastOk)) : 'never'}${data.lastSyncError ? `; last problem: ${syncErrorText(data.lastSyncError)}` : ''}`,
            `Torn taps awaiting the card: ${torn.length}${data.openBatch ? `; batch ${data.openBatch} awaiting acknowledgement` : ''}`,
          ].join('\n'),
        );
      } finally {
        journal.close();
      }
    });

  program
    .command('sync')
    .description(
      'send pending payments to the acquirer, apply ledger outcomes, fetch the revocation list (works offline: reports what is pending)',
    )
    .option('--acquirer <url>', 'acquirer base URL (default from config.json)', acquirerUrlOption)
    .action(async (o: { acquirer?: string }, cmd: Command) => {
      const g = globals(cmd);
      const identity = requireIdentity(g);
      const cfg = loadConfig(g.dataDir);
      const url = o.acquirer ?? cfg.acquirerUrl;
      if (!url) throw new TerminalError(TerminalErrorCode.CONFIG, 'no acquirer URL: pass --acquirer or set acquirerUrl in config.json');
      const journal = openJournal(g);
      try {
        const r = await new SyncClient({ identity, journal, acquirerUrl: url }).sync();
        const sent = r.batches.reduce((s, b) => s + b.total, 0);
        const adjSent = r.batches.reduce((s, b) => s + b.adjustments, 0);
        out(
          g,
          r,
          [
            r.online ? 'Online.' : 'OFFLINE: the acquirer could not be reached; payments stay queued.',
            `Sent ${r.batches.length} batch(es), ${formatAmount(sent)}${adjSent > 0 ? ` and ${adjSent} void(s)/refund(s)` : ''}; ${r.outcomes.applied} outcome(s) applied${r.crl ? `; revocation list v${r.crl.version}` : ''}.`,
            ...(r.outcomes.adjustments.accepted + r.outcomes.adjustments.refused > 0
              ? [
                  `Voids and refunds: ${r.outcomes.adjustments.accepted} confirmed, ${r.outcomes.adjustments.refused} refused by the ledger.`,
                ]
              : []),
            `Pending verification: ${formatAmount(r.pending.amount)} in ${r.pending.count} payment(s)${r.pending.since ? `, since ${iso(r.pending.since)}` : ''}.`,
            ...r.problems.map((p) => `problem (${p.step}): ${p.code}: ${p.message}`),
          ].join('\n'),
        );
        if (!r.online) throw new Exit(ExitCode.ONLINE_REQUIRED);
        if (r.problems.length > 0) throw new Exit(r.problems.every(refusedByAcquirer) ? ExitCode.DECLINED : ExitCode.INTERNAL);
      } finally {
        journal.close();
      }
    });

  program
    .command('report')
    .description('totals by state and per day (UTC), double spends covered or not')
    .action((_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const journal = openJournal(g);
      try {
        const byState = journal.totalsByState();
        const byDay = journal.totalsByDay();
        const ds = journal.doubleSpent();
        const lines = ['State         count  amount'];
        for (const [s, v] of Object.entries(byState))
          lines.push(`${s.padEnd(13)} ${String(v.count).padStart(5)}  ${formatAmount(v.amount)}`);
        lines.push(
          `double spent covered: ${formatAmount(ds.covered.amount)} (${ds.covered.count}); not covered: ${formatAmount(ds.uncovered.amount)} (${ds.uncovered.count})`,
          '',
          'Day         state         count  amount',
        );
        for (const d of byDay) lines.push(`${d.day}  ${d.state.padEnd(13)} ${String(d.count).padStart(5)}  ${formatAmount(d.amount)}`);
        const adj = journal.adjustmentTotals();
        const sum = (k: 'void' | 'refund', states: readonly string[]): { count: number; amount: number } =>
          Object.entries(adj[k])
            .filter(([st]) => states.includes(st))
            .reduce((a, [, v]) => ({ count: a.count + v.count, amount: a.amount + v.amount }), { count: 0, amount: 0 });
        const open = ['pending', 'submitted'];
        lines.push(
          '',
          `voids:   confirmed ${formatAmount(sum('void', ['accepted']).amount)} (${sum('void', ['accepted']).count}); pending ${formatAmount(sum('void', open).amount)} (${sum('void', open).count}); refused ${sum('void', ['refused']).count}`,
          `refunds: confirmed ${formatAmount(sum('refund', ['accepted']).amount)} (${sum('refund', ['accepted']).count}); pending ${formatAmount(sum('refund', open).amount)} (${sum('refund', open).count}); refused ${sum('refund', ['refused']).count}`,
        );
        out(g, { byState, byDay, doubleSpent: ds, adjustments: adj }, lines.join('\n'));
      } finally {
        journal.close();
      }
    });

  program
    .command('receipt')
    .description('print the receipt of a payment')
    .argument('<id>', 'receipt number', intOption('receipt number', 1, Number.MAX_SAFE_INTEGER))
    .action((id: number, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const journal = openJournal(g);
      try {
        const p = Number.isSafeInteger(id) ? journal.getPayment(id) : undefined;
        if (!p) throw new TerminalError(TerminalErrorCode.NOT_FOUND, `no receipt #${id}`);
        let name = p.merchant;
        try {
          name = requireIdentity(g).merchant.name;
        } catch {
          // The receipt stands on its own.
        }
        const adjustments = journal.adjustmentsOf(p.id);
        out(
          g,
          { ...paymentJson(p), adjustments: adjustments.map(adjustmentJson), ...adjustmentSummary(p, adjustments) },
          [
            receiptText(p, name),
            ...adjustments.map(
              (a) =>
                `  ${a.kind.padEnd(11)} ${formatAmount(a.amount)}${a.reference ? ` (${a.reference})` : ''}  ${iso(a.time)}: ${adjustmentStateText(a)}`,
            ),
          ].join('\n'),
        );
      } finally {
        journal.close();
      }
    });

  program
    .command('readers')
    .description('list PC/SC readers (with card presence), HID devices and serial ports')
    .option('--wait <seconds>', 'how long to wait for PC/SC readers', intOption('--wait', 0, 3600), 2)
    .action(async (o: { wait: number }, cmd: Command) => {
      const g = globals(cmd);
      const pcsc = new PcscReaders({ reconnectDelayMs: 60_000 });
      let readers: { name: string; cardPresent: boolean }[];
      let pcscError: string | undefined;
      try {
        await pcsc.waitForReaders(o.wait * 1000);
        await new Promise((r) => setTimeout(r, 300));
        readers = pcsc.list();
        pcscError = pcsc.contextError;
      } finally {
        await pcsc.close();
      }
      let hid: ReturnType<typeof listHidDevices> = [];
      try {
        hid = listHidDevices();
      } catch {
        // node-hid unavailable on this machine
      }
      let serial: { path: string; manufacturer?: string }[] = [];
      try {
        const require = createRequire(import.meta.url);
        const { SerialPort } = require('serialport') as typeof import('serialport');
        serial = (await SerialPort.list()).map((p) => ({ path: p.path, ...(p.manufacturer ? { manufacturer: p.manufacturer } : {}) }));
      } catch {
        // listing needs udevadm on Linux; ports can still be named by path
      }
      out(
        g,
        { pcsc: readers, pcscError: pcscError ?? null, hid, serial },
        [
          'PC/SC readers:',
          ...(readers.length
            ? readers.map((r) => `  pcsc:${r.name}${r.cardPresent ? '  [card present]' : ''}`)
            : [`  (none${pcscError ? `: ${pcscError}` : ''})`]),
          'HID devices:',
          ...(hid.length
            ? hid.map(
                (d) =>
                  `  hid:${d.path}  ${d.vendorId.toString(16).padStart(4, '0')}:${d.productId.toString(16).padStart(4, '0')} ${d.product ?? ''}`,
              )
            : ['  (none)']),
          'Serial ports:',
          ...(serial.length
            ? serial.map((s) => `  serial:${s.path} ${s.manufacturer ?? ''}`)
            : ['  (none listed; any port can be used as serial:<path>)']),
        ].join('\n'),
      );
    });

  return program;
}

/** A commander parser for a reference (the ECR API's pattern). */
function refOption(v: string): string {
  if (!/^[A-Za-z0-9._:-]{1,64}$/.test(v)) throw new InvalidArgumentError('a reference is 1 to 64 characters of A-Z a-z 0-9 . _ : -');
  return v;
}

/**
 * `refund --tap`: holds the data directory (the reader is this process's), waits for a card and
 * refuses (REFUSED, exit 1) unless it announces the payment's card id.
 */
async function checkPayingCard(g: Globals, p: PaymentRecord, spec: string | undefined, timeout: number | undefined): Promise<void> {
  const cfg = loadConfig(g.dataDir);
  const lock = lockDataDir(g.dataDir);
  const { reader, close } = await openReader(spec ?? cfg.reader).catch((e: unknown) => {
    lock.release();
    throw e;
  });
  const ctl = new AbortController();
  const onSig = (): void => ctl.abort();
  process.once('SIGINT', onSig);
  try {
    if (!g.json) process.stderr.write(`refund of receipt #${p.id}: present the paying card on ${reader.name}...\n`);
    let card: Uint8Array;
    try {
      card = await readPresentedCard(reader, { signal: ctl.signal, timeoutMs: (timeout ?? 30) * 1000 });
    } catch (e) {
      if (ctl.signal.aborted) throw new ReaderEnd('cancelled');
      if (isTerminalError(e, TerminalErrorCode.TIMEOUT)) throw new ReaderEnd('no card presented');
      if (isTerminalError(e, TerminalErrorCode.NOT_FOUND)) throw new ReaderEnd(e.message);
      throw e;
    }
    if (toHex(card) !== toHex(p.card))
      throw new AdjustmentRefusedError(
        'NOT_PAYING_CARD',
        `the card on the reader (${toHex(card)}) is not the card that paid receipt #${p.id}`,
      );
  } finally {
    process.off('SIGINT', onSig);
    await close();
    lock.release();
  }
}

/** `refund --tap` ended at the reader (no card, not a DT card, cancelled): exit code 4 (END). */
class ReaderEnd extends Error {}

/** A commander parser for an integer option in [min, max] (a usage error otherwise). */
function intOption(name: string, min: number, max: number): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    return n;
  };
}

/** A sync problem that is the acquirer's refusal (its own stable code), not a terminal-side failure. */
function refusedByAcquirer(p: SyncProblem): boolean {
  const ours = new Set<string>([...Object.values(TerminalErrorCode), ...Object.values(ErrorCode)]);
  return !ours.has(p.code);
}

/** A `--reader` value: a reader spec the protocol's `parseReaderSpec` accepts, else a usage error (exit 2). */
/** The journal's last sync problem (`{at, problems: [{step, code}]}`) for people: `2026-12-07T01:19:00Z: outcomes NETWORK, crl NETWORK`. */
function syncErrorText(e: unknown): string {
  const { at, problems } = e as { at?: unknown; problems?: unknown };
  if (typeof at !== 'number' || !Array.isArray(problems)) return JSON.stringify(e);
  const list = (problems as { step?: unknown; code?: unknown }[]).map((p) => `${String(p.step)} ${String(p.code)}`).join(', ');
  return `${iso(at)}: ${list}`;
}

/** A text option the certificate request carries: 1 to `max` bytes of UTF-8 (the protocol's `text(max)`), else a usage error. */
function textOption(name: string, max: number): (v: string) => string {
  return (v) => {
    const n = Buffer.byteLength(v, 'utf8');
    if (n === 0 || n > max) throw new InvalidArgumentError(`${name} must be 1 to ${max} bytes of text (got ${n})`);
    return v;
  };
}

/** An `--acquirer` value: an http(s) URL, else a usage error (before anything is written or sent). */
function acquirerUrlOption(v: string): string {
  if (!URL.canParse(v)) throw new InvalidArgumentError(`not a URL: ${v} (e.g. http://127.0.0.1:8081)`);
  if (!isHttpUrl(v)) throw new InvalidArgumentError(`not an http(s) URL: ${v} (e.g. http://127.0.0.1:8081)`);
  return v;
}

function readerSpecOption(v: string): string {
  if (parseReaderSpec(v) === undefined) throw new InvalidArgumentError(`unknown reader spec ${v} (${READER_SPEC_FORMS})`);
  return v;
}

/** Reads a certificate file named by `option` (raw CBOR or hex); a missing or unreadable file is a usage error. */
function readCert(file: string, option: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(
      `${option} ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : code === 'EACCES' ? 'permission denied' : 'cannot be read'}`,
    );
  }
  const text = raw.toString('utf8').trim();
  return /^[0-9a-fA-F]+$/.test(text) && text.length % 2 === 0 ? fromHex(text) : new Uint8Array(raw);
}

/**
 * Reads a local PKI for `init --dev`: a dt-ledger data directory (`root.cert`, `ledger.cert`,
 * `banks/<name>.key.json` and `.cert` of an acquiring bank, as `dt-ledger init` and `bank-add`
 * write them), else a dev PKI directory (`dev-pki.json`: dt-dev-pki v1, as card-applet-sim's
 * `saveDevPki` writes it).
 */
function readDevPki(
  dir: string,
  bankName?: string,
): { root: Uint8Array; ledgerCert: Uint8Array; bank: { secretKey: Uint8Array; cert: Uint8Array } } {
  if (existsSync(join(dir, 'root.cert')) && existsSync(join(dir, 'banks'))) return readLedgerDataDir(dir, bankName);
  const p = join(dir, 'dev-pki.json');
  if (!existsSync(p))
    throw new TerminalError(TerminalErrorCode.CONFIG, `no dev PKI at ${p} and ${dir} is no dt-ledger data directory`, { path: p });
  try {
    const j = JSON.parse(readFileSync(p, 'utf8')) as {
      format?: string;
      issuer: { cert: string };
      ledger: { cert: string };
      bank: { secretKey: string; cert: string };
    };
    if (j.format !== 'dt-dev-pki') throw new Error('not a dt-dev-pki file');
    const bankCert = fromHex(j.bank.cert);
    const claims = openSigned('Certificate', bankCert).message;
    if (claims.role !== Role.BANK || ((claims.perms ?? 0) & BankPermission.ACQUIRING) === 0) throw new Error('the dev bank cannot acquire');
    return {
      root: fromHex(j.issuer.cert),
      ledgerCert: fromHex(j.ledger.cert),
      bank: { secretKey: fromHex(j.bank.secretKey), cert: bankCert },
    };
  } catch (e) {
    // Never echo the file: it holds secret keys.
    throw new TerminalError(TerminalErrorCode.CONFIG, `${p} is not a usable dev PKI: ${(e as Error).message}`, { path: p });
  }
}

/** The acquiring bank of a dt-ledger data directory, for `init --dev`. */
function readLedgerDataDir(
  dir: string,
  bankName?: string,
): { root: Uint8Array; ledgerCert: Uint8Array; bank: { secretKey: Uint8Array; cert: Uint8Array } } {
  const banks = join(dir, 'banks');
  try {
    const acquiring = readdirSync(banks)
      .filter((f) => f.endsWith('.cert'))
      .map((f) => ({ name: f.slice(0, -'.cert'.length), cert: new Uint8Array(readFileSync(join(banks, f))) }))
      .filter((x) => (bankName === undefined || x.name === bankName) && existsSync(join(banks, `${x.name}.key.json`)))
      .filter((x) => {
        const c = openSigned('Certificate', x.cert).message;
        return c.role === Role.BANK && ((c.perms ?? 0) & BankPermission.ACQUIRING) !== 0;
      });
    if (acquiring.length === 0) throw new Error(bankName ? `no acquiring bank ${bankName}` : 'no acquiring bank (dt-ledger bank-add)');
    if (acquiring.length > 1) throw new Error(`several acquiring banks (${acquiring.map((x) => x.name).join(', ')}): pass --dev-bank`);
    const bank = acquiring[0]!;
    const j = JSON.parse(readFileSync(join(banks, `${bank.name}.key.json`), 'utf8')) as { secretKey?: unknown };
    if (typeof j.secretKey !== 'string' || !/^[0-9a-f]{64}$/.test(j.secretKey)) throw new Error(`banks/${bank.name}.key.json holds no key`);
    return {
      root: new Uint8Array(readFileSync(join(dir, 'root.cert'))),
      ledgerCert: new Uint8Array(readFileSync(join(dir, 'ledger.cert'))),
      bank: { secretKey: fromHex(j.secretKey), cert: bank.cert },
    };
  } catch (e) {
    // Never echo a key file.
    throw new TerminalError(TerminalErrorCode.CONFIG, `${dir} is not a usable dt-ledger data directory: ${(e as Error).message}`, {
      path: dir,
    });
  }
}

function exitCodeOf(e: unknown): number {
  if (e instanceof Exit) return e.code;
  if (e instanceof UsageError) return ExitCode.USAGE;
  if (e instanceof ListenError) return ExitCode.LISTEN;
  if (e instanceof ReaderEnd) return ExitCode.END;
  if (isTerminalError(e)) {
    if (e.code === TerminalErrorCode.REFUSED) return ExitCode.DECLINED;
    if (e.code === TerminalErrorCode.LOCKED) return ExitCode.LOCKED;
    if (e.code === TerminalErrorCode.NOT_INITIALIZED || e.code === TerminalErrorCode.CONFIG) return ExitCode.NOT_INITIALIZED;
    if (e.code === TerminalErrorCode.NOT_FOUND) return ExitCode.USAGE;
  }
  if (isTransportError(e, TransportErrorCode.READER_UNAVAILABLE) || isTransportError(e, TransportErrorCode.READER_BUSY))
    return ExitCode.END;
  return ExitCode.INTERNAL;
}

/** Runs the CLI with `argv` (process.argv form); resolves to the exit code. */
export async function run(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return ExitCode.OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0) return ExitCode.OK;
      return ExitCode.USAGE;
    }
    const code = exitCodeOf(e);
    if (!(e instanceof Exit)) {
      const json = process.argv.includes('--json') || argv.includes('--json');
      const msg = e instanceof Error ? e.message : String(e);
      const errorCode =
        isTerminalError(e) || isTransportError(e)
          ? e.code
          : e instanceof UsageError
            ? 'USAGE'
            : e instanceof ListenError
              ? 'LISTEN'
              : e instanceof ReaderEnd
                ? 'END'
                : 'INTERNAL';
      if (json) process.stdout.write(JSON.stringify({ error: errorCode, message: msg }) + '\n');
      else process.stderr.write(`dt-pos: ${errorCode === 'USAGE' ? '' : `${errorCode}: `}${msg}\n`);
    }
    return code;
  }
}
