/**
 * `dt-card`: create, personalize, inspect, clone and serve simulated DT cards.
 *
 * Run `dt-card --help` (or `node card-applet-sim/bin/dt-card.js --help`).
 * Every command takes `--json` for machine-readable output (amounts in
 * integer tiyn); people read amounts in tenge with two decimals. Keys and
 * PINs are never printed. Exit codes: {@link EXIT_CODES}.
 *
 * @module
 */

import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { MemoryStorage } from '@dt/firmware';
import type { Storage } from '@dt/firmware';
import {
  CARD_TIME_AHEAD,
  CardStatusError,
  LIMITS,
  Personalized,
  describeSw,
  formatTenge,
  fromHex,
  getStatus,
  keyPairSigner,
  openSigned,
  publicKeyOf,
  selectApplet,
  swHex,
  toHex,
  exitCodesByName,
  exitCodesHelp,
  USAGE_EXIT_MEANING,
} from '@dt/protocol';
import { SimulatedCard } from './card.ts';
import { PIN, PUK, UsageError, readSecrets, secretOptions } from './secrets.ts';
import { isPowerCut } from './faults.ts';
import type { FaultPlan } from './faults.ts';
import { FileStorage, StateFileError, readStateFile } from './storage.ts';
import { InProcessTransport } from './inprocess.ts';
import { loadDevPki, loadOrCreateDevPki } from './devpki.ts';
import { DevLoadRefusedError, devIssuingBank, devLoad, limitsProblem, personalizeCard } from './personalize.ts';
import type { IssuingBank } from './personalize.ts';
import { VpcdClient, VPCD_CONTROL, VPCD_DEFAULT_PORT } from './vpcd.ts';
import {
  CardControlError,
  UNREADABLE_CARD_STATE,
  cardStateUnreadable,
  isUnreadableCardAnswer,
  parseFaultPlan,
  startCardControl,
} from './control.ts';
import type { CardControlServer } from './control.ts';
import { SerialCardEndpoint, openTty } from './serial.ts';

/**
 * The exit codes of `dt-card`, the one table (`--help` prints it; the root
 * README repeats it, checked by a test). 0-3 mean the same for every
 * command line of the toolkit; 4 and up are this command's own.
 */
export const EXIT_CODES = [
  { code: 0, name: 'OK', meaning: 'success (serve: stopped by SIGINT/SIGTERM)' },
  {
    code: 1,
    name: 'REFUSED',
    meaning:
      'refused: the card answered an error status word (e.g. 6986 already personalized), or load refused a card with offline payments or a sync pending (the card is unchanged)',
  },
  { code: 2, name: 'USAGE', meaning: USAGE_EXIT_MEANING },
  { code: 4, name: 'POWER_CUT', meaning: 'an injected fault cut the power of the card during the command' },
  {
    code: 5,
    name: 'STATE_FILE',
    meaning:
      "the card state file already exists or is invalid (not a state file, or the card's state in it is unreadable), or it or the control socket is in use by another process",
  },
  { code: 6, name: 'INTERNAL', meaning: 'internal error' },
] as const;

/** Exit codes of `dt-card` by name (from {@link EXIT_CODES}). */
export const ExitCode = exitCodesByName(EXIT_CODES);

const EXIT_HELP = `
${exitCodesHelp(EXIT_CODES)}

Amount options are integer tiyn (100 tiyn = 1 KZT); people read amounts in tenge
with two decimals (150.50 KZT); --json output keeps integer tiyn.`;

/** A refusal decided from the card's committed state before a command is sent (exit code 1, like the card's own). */
class CardRefusal extends Error {}

/** What the command needs is taken (the control socket of another serve): exit code 5, like a locked state file. */
class InUseError extends Error {}

/** The warning `clone` prints (and the README quotes). */
export const CLONE_WARNING = 'ATTACK TOOL: a clone double-spends and gets the card revoked';

const int =
  (name: string, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  (v: string): number => {
    if (!/^[0-9]+$/.test(v)) throw new InvalidArgumentError(`${name} must be an integer`);
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    if (n > max) throw new InvalidArgumentError(`${name} must be an integer ${min}..${max}`);
    return n;
  };

const byte =
  (name: string) =>
  (v: string): number => {
    const m = /^(?:0x)?([0-9a-fA-F]{1,2})$/.exec(v);
    if (!m) throw new InvalidArgumentError(`${name} must be a byte in hex, e.g. 30`);
    return Number.parseInt(m[1]!, 16);
  };

/** `--subject`: the certificate's `sub`, 1 to 64 bytes of UTF-8 (checked before the card is touched). */
const subjectText = (v: string): string => {
  const n = Buffer.byteLength(v, 'utf8');
  if (n === 0 || n > 64) throw new InvalidArgumentError(`--subject must be 1 to 64 bytes of text (got ${n})`);
  return v;
};

const amountList = (v: string, prev: number[] = []): number[] => [...prev, ...v.split(',').map((s) => int('amount', 1)(s.trim()))];

interface Output {
  json: boolean;
}

function print(opts: Output, human: string, json: unknown): void {
  if (opts.json) process.stdout.write(JSON.stringify(json, jsonBytes) + '\n');
  else process.stdout.write(human + '\n');
}

function jsonBytes(_key: string, value: unknown): unknown {
  return value instanceof Uint8Array ? toHex(value) : value;
}

/** A storage that refuses writes: `show` only reads. */
class ReadOnlyStorage implements Storage {
  readonly #inner: Storage;
  constructor(inner: Storage) {
    this.#inner = inner;
  }
  read(slot: number): Uint8Array | undefined {
    return this.#inner.read(slot);
  }
  write(): void {
    throw new Error('read-only card view: the applet tried to write while showing state');
  }
}

/** Reads a secret key file: 64 hex digits, 32 raw bytes, or JSON `{ "secretKey": "<hex>" }`. */
function readKeyFile(path: string): Uint8Array {
  const raw = readArgFile(path);
  if (raw.length === 32) return new Uint8Array(raw);
  const text = raw.toString('utf8').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return fromHex(text);
  try {
    const json = JSON.parse(text) as { secretKey?: unknown; d?: unknown };
    const hex = typeof json.secretKey === 'string' ? json.secretKey : typeof json.d === 'string' ? json.d : undefined;
    if (hex !== undefined && /^[0-9a-fA-F]{64}$/.test(hex)) return fromHex(hex);
  } catch {
    // Not JSON: fall through to the error, which names no key material.
  }
  throw new UsageError(`${path}: not a P-256 secret key (expected 32 raw bytes, 64 hex digits, or JSON {"secretKey": hex})`);
}

/** Reads a certificate file: COSE_Sign1 bytes, or the same in hex or base64 text. */
function readCertFile(path: string): Uint8Array {
  const raw = readArgFile(path);
  const candidates: Uint8Array[] = [new Uint8Array(raw)];
  const text = raw.toString('utf8').trim();
  if (/^[0-9a-fA-F]+$/.test(text) && text.length % 2 === 0) candidates.push(fromHex(text));
  if (/^[A-Za-z0-9+/=\s]+$/.test(text)) candidates.push(new Uint8Array(Buffer.from(text, 'base64')));
  for (const c of candidates) {
    try {
      openSigned('Certificate', c);
      return c;
    } catch {
      // try the next encoding
    }
  }
  throw new UsageError(`${path}: not a DT certificate (COSE_Sign1 CWT, raw, hex or base64)`);
}

/** Reads a file named on the command line; missing or unreadable is a usage error. */
function readArgFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`${path}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : 'cannot be read'}`);
  }
}

/**
 * The fault flags of `serve` as a plan, read by the one plan parser (the control
 * channel's {@link parseFaultPlan}: field types, then the simulator's own checks).
 */
function faultPlan(o: Record<string, unknown>): FaultPlan {
  const selector = (index: unknown, ins: unknown): Record<string, unknown> | undefined =>
    index === undefined && ins === undefined
      ? undefined
      : { ...(index !== undefined ? { index } : {}), ...(ins !== undefined ? { ins } : {}) };
  return parseFaultPlan({
    cutAtWrite: o.cutAtWrite,
    torn: o.torn,
    cutBeforeApdu: selector(o.cutBeforeApdu, o.cutBeforeIns),
    cutAfterApdu: selector(o.cutAfterApdu, o.cutAfterIns),
    dropFrame: o.dropFrame,
    corruptFrame: o.corruptFrame,
    delayMs: o.delayMs,
  });
}

/** How `show` names the personalization steps done (the bits of CardStatus `personalized`). */
const PERSONALIZED_BITS: [number, string][] = [
  [Personalized.KEY, 'key'],
  [Personalized.CERTIFICATES, 'certificates'],
  [Personalized.PIN, 'PIN'],
  [Personalized.CONFIG, 'config'],
];

/**
 * The card of a state file as its latest committed state answers SELECT and GET STATUS: a
 * read-only view, so it also works while another process serves the card.
 */
async function committedCard(file: string) {
  const state = readStateFile(file);
  const t = new InProcessTransport(new SimulatedCard({ storage: new ReadOnlyStorage(new MemoryStorage(state.slots)) }));
  try {
    const sel = await selectApplet(t);
    return { state, sel, status: await getStatus(t) };
  } catch (e) {
    // The applet answers 6F00 to every command when its storage holds no intact record it can decode (slots of
    // random bytes, damage outside a commit): the file is a state file, but the card in it cannot be read.
    if (isUnreadableCardAnswer(e)) throw new StateFileError('STATE_INVALID', `${file}: ${UNREADABLE_CARD_STATE}`);
    throw e;
  }
}

async function showCard(file: string, opts: Output): Promise<void> {
  const { state, sel, status: s } = await committedCard(file);
  const done = PERSONALIZED_BITS.filter(([b]) => (s.personalized & b) !== 0).map(([, n]) => n);
  const summary = {
    file: resolve(file),
    label: state.meta.label,
    created: state.meta.created,
    ...(state.meta.clonedFrom ? { clonedFrom: state.meta.clonedFrom } : {}),
    storageWrites: state.writes,
    applet: sel.applet,
    protocol: sel.protocol,
    capabilities: sel.capabilities,
    locked: s.locked,
    personalized: done,
    ...(s.card ? { card: toHex(s.card) } : {}),
    counter: s.counter,
    balance: s.balance,
    currency: s.currency ?? null,
    coins: s.coins,
    offlineValue: s.offlineValue,
    offlineCount: s.offlineCount,
    ...(s.limits ? { limits: s.limits } : {}),
    pinTries: s.pinTries,
    pukTries: s.pukTries,
    syncPending: s.syncPending,
    clockFloor: s.floor,
    ...(s.trusted !== undefined ? { trustedTime: s.trusted } : {}),
  };
  const lines = [
    `card file      ${summary.file}`,
    `label          ${summary.label}${state.meta.clonedFrom ? `  (CLONE of ${state.meta.clonedFrom})` : ''}`,
    `created        ${summary.created}   storage writes: ${summary.storageWrites}`,
    `applet         v${sel.applet}, protocol v${sel.protocol}, capabilities 0x${sel.capabilities.toString(16)}`,
    `personalized   ${done.length ? done.join(', ') : 'blank'}${s.locked ? ' (locked)' : ' (open)'}`,
    ...(s.card ? [`card key id    ${toHex(s.card)}`] : []),
    `counter        ${s.counter}`,
    `balance        ${formatTenge(s.balance)} in ${s.coins} coin(s)${s.currency ? `, currency ${s.currency}` : ''}`,
    `offline        ${formatTenge(s.offlineValue)} in ${s.offlineCount} payment(s) since the last sync`,
    ...(s.limits
      ? [
          `limits         per payment ${formatTenge(s.limits.perPayment)}, offline total ${formatTenge(s.limits.offlineTotal)}, offline count ${s.limits.offlineCount}, CVM above ${formatTenge(s.limits.cvmLimit)}`,
        ]
      : []),
    `PIN tries      ${s.pinTries} left${s.pinTries === 0 ? ' (BLOCKED)' : ''}, unblock tries ${s.pukTries} left`,
    `sync pending   ${s.syncPending ? 'yes (PAY refused until SYNC COMPLETE)' : 'no'}`,
    `clock floor    ${s.floor} (${new Date(s.floor * 1000).toISOString()})`,
    ...(s.trusted !== undefined
      ? [
          `trusted time   ${s.trusted} (${new Date(s.trusted * 1000).toISOString()}); PAY refused for requests after ${new Date((s.trusted + CARD_TIME_AHEAD) * 1000).toISOString()} until a sync`,
        ]
      : []),
  ];
  print(opts, lines.join('\n'), summary);
}

function issuingBankFrom(o: Record<string, unknown>): { bank: IssuingBank; dev?: string } {
  if (o.ledgerData !== undefined) {
    // The layout `dt-ledger init` / `dt-ledger bank add` write.
    const dir = o.ledgerData as string;
    const name = (o.bank as string | undefined) ?? 'bank';
    o = {
      ...o,
      bankKey: join(dir, 'banks', `${name}.key.json`),
      bankCert: join(dir, 'banks', `${name}.cert`),
      root: join(dir, 'root.cert'),
      ledgerCert: join(dir, 'ledger.cert'),
    };
  }
  const files = ['bankKey', 'bankCert', 'root', 'ledgerCert'].filter((k) => o[k] !== undefined);
  if (files.length > 0) {
    if (files.length !== 4) throw new UsageError('--bank-key, --bank-cert, --root and --ledger-cert go together');
    const secretKey = readKeyFile(o.bankKey as string);
    const signer = keyPairSigner({ secretKey, publicKey: publicKeyOf(secretKey) });
    const cert = readCertFile(o.bankCert as string);
    if (toHex(openSigned('Certificate', cert).message.cnf.coseKey.kid) !== toHex(signer.kid))
      throw new UsageError('--bank-key does not match --bank-cert');
    return { bank: { signer, cert, root: readCertFile(o.root as string), ledgerCert: readCertFile(o.ledgerCert as string) } };
  }
  const dir = (o.devPki as string | undefined) ?? 'dev-pki';
  const { pki, created } = devPkiArg(dir, () => loadOrCreateDevPki(dir));
  if (created) process.stderr.write(`dt-card: created a development PKI in ${resolve(dir)} (dev keys: never use in production)\n`);
  return { bank: devIssuingBank(pki), dev: dir };
}

/** Reads (or creates) the development PKI of `--dev-pki dir`; one that cannot be read or made is a usage error. */
function devPkiArg<T>(dir: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no dev-pki.json'
        : code === 'EEXIST' || code === 'ENOTDIR'
          ? 'not a directory'
          : code !== undefined
            ? `cannot be read or created: ${code}`
            : (e as Error).message;
    throw new UsageError(`--dev-pki ${dir}: not a usable development PKI (${why})`);
  }
}

/** Creates a state file named on the command line; a directory that does not exist or cannot be written is a usage error. */
function createStateFile(...args: Parameters<typeof FileStorage.create>): FileStorage {
  try {
    return FileStorage.create(...args);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EACCES' || code === 'EROFS')
      throw new UsageError(
        `cannot create ${args[0]}: ${code === 'ENOENT' || code === 'ENOTDIR' ? 'no such directory' : 'permission denied'}`,
      );
    throw e;
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Opens the card file for a command that changes it, runs `f`, and releases the lock. */
async function withCard<T>(file: string, f: (t: InProcessTransport) => Promise<T>): Promise<T> {
  const storage = FileStorage.open(file);
  try {
    const card = new SimulatedCard({ storage });
    return await f(new InProcessTransport(card));
  } finally {
    storage.close();
  }
}

function addFaultOptions(cmd: Command): Command {
  return cmd
    .option('--cut-at-write <n>', 'cut the power during the n-th storage write (1-based, counted from start)', int('--cut-at-write', 1))
    .addOption(
      new Option('--torn [bytes]', 'with --cut-at-write: tear the write (keep a random prefix, or exactly <bytes> new bytes)').argParser(
        int('--torn'),
      ),
    )
    .option('--cut-before-apdu <n>', 'cut the power when the n-th APDU arrives, before the applet runs it', int('--cut-before-apdu', 1))
    .option(
      '--cut-before-ins <hex>',
      'cut the power when an APDU with this INS arrives (first one), e.g. 30 for PAY',
      byte('--cut-before-ins'),
    )
    .option('--cut-after-apdu <n>', 'run the n-th APDU, then cut the power before its response leaves', int('--cut-after-apdu', 1))
    .option(
      '--cut-after-ins <hex>',
      'run the first APDU with this INS, then cut the power before its response leaves',
      byte('--cut-after-ins'),
    )
    .option(
      '--drop-frame <n>',
      'drop the n-th frame the card sends (vpcd: R-APDU, the card leaves the field; serial: frame)',
      int('--drop-frame', 1),
    )
    .option('--corrupt-frame <n>', 'flip one byte of the n-th frame the card sends', int('--corrupt-frame', 1))
    .option('--delay-ms <ms>', 'delay every response by this many milliseconds', int('--delay-ms'));
}

async function serve(file: string, o: Record<string, unknown>, opts: Output): Promise<void> {
  if ((o.vpcd ? 1 : 0) + (o.serial ? 1 : 0) !== 1) throw new UsageError('serve needs exactly one of --vpcd or --serial <path>');
  if (o.control !== undefined && !o.vpcd)
    throw new UsageError('--control needs --vpcd (it takes the card out of the vpcd reader and puts it back)');
  if (o.vpcd && (o.port as number) + (o.slot as number) > 65535)
    throw new UsageError(`--port ${o.port as number} + --slot ${o.slot as number} is not a TCP port (at most 65535)`);
  if (o.control !== undefined && !isDirectory(dirname(resolve(o.control as string))))
    throw new UsageError(`--control ${o.control as string}: no such directory for the socket`);
  const storage = FileStorage.open(file);
  const card = new SimulatedCard({ storage, faults: faultPlan(o) });
  // The committed memory, as `show` reads it from the file.
  const snapshot = (): Map<number, Uint8Array> => new Map(storage.slotNumbers.map((n) => [n, storage.read(n)!] as const));
  // A card whose state is damaged is still served (a lab may test how terminals take a card that answers 6F00),
  // but say so once: every command it gets will be answered 6F00. The check is a diagnostic: it never stops serve.
  if (await cardStateUnreadable(snapshot()).catch(() => false))
    process.stderr.write(`dt-card: warning: ${file}: ${UNREADABLE_CARD_STATE}: serving it anyway, it answers 6F00 to every command\n`);
  const log = (event: string, fields: Record<string, unknown> = {}): void => {
    if (opts.json) process.stdout.write(JSON.stringify({ time: new Date().toISOString(), event, ...fields }, jsonBytes) + '\n');
    else {
      const rest = Object.entries(fields)
        .map(([k, v]) => `${k}=${v instanceof Uint8Array ? toHex(v) : String(v)}`)
        .join(' ');
      process.stdout.write(`${new Date().toISOString()} ${event}${rest ? ' ' + rest : ''}\n`);
    }
  };
  const apduFields = (cmd: Uint8Array, rsp: Uint8Array | undefined): Record<string, unknown> => {
    const f: Record<string, unknown> = { ins: (cmd[1] ?? 0).toString(16).padStart(2, '0'), length: cmd.length };
    // Only headers and status words are logged: command data can hold a PIN.
    if (rsp !== undefined && rsp.length >= 2) {
      const sw = (rsp[rsp.length - 2]! << 8) | rsp[rsp.length - 1]!;
      f.sw = swHex(sw);
      f.status = describeSw(sw);
      f.responseLength = rsp.length;
    } else f.sw = 'none (no answer)';
    return f;
  };
  let stop: () => Promise<void>;
  if (o.vpcd) {
    const client = new VpcdClient(card, {
      host: o.host as string,
      port: o.port as number,
      slot: o.slot as number,
    });
    let control: CardControlServer | undefined;
    if (o.control !== undefined) {
      try {
        control = await startCardControl(resolve(o.control as string), {
          card,
          holder: client,
          snapshot,
          onCommand: (command, ok, detail) => log('control-request', { command, ok, ...(detail ? { code: detail } : {}) }),
        });
      } catch (e) {
        storage.close();
        throw new InUseError((e as Error).message);
      }
    }
    client.on('connected', () => log('connected', { reader: `vpcd ${o.host}:${client.port}` }));
    client.on('disconnected', (reason) => log('disconnected', { reason }));
    client.on('apdu', (c, r) => log('apdu', apduFields(c, r)));
    client.on('fault', (d) => log('fault', { description: d }));
    // pcscd polls get-ATR about twice a second: log power changes only.
    client.on('control', (c) => {
      if (c !== VPCD_CONTROL.GET_ATR) log('control', { code: ['power-off', 'power-on', 'reset'][c] ?? c });
    });
    let lastWarning = '';
    client.on('warning', (e) => {
      // Connection refused repeats every retry while pcscd is down: log changes only.
      if (e.message !== lastWarning) log('warning', { message: e.message });
      lastWarning = e.message;
    });
    client.start();
    log('serving', {
      transport: 'vpcd',
      host: o.host,
      port: client.port,
      slot: o.slot,
      atr: card.atr,
      ...(control ? { control: control.socketPath } : {}),
    });
    stop = async () => {
      await control?.close();
      await client.stop();
    };
  } else {
    const path = o.serial as string;
    let link;
    try {
      link = openTty(path);
    } catch (e) {
      storage.close();
      const code = (e as NodeJS.ErrnoException).code;
      const why: Record<string, string> = {
        ENOENT: 'no such device',
        ENOTDIR: 'no such device',
        EACCES: 'permission denied',
        EISDIR: 'is a directory',
        ERR_TTY_INIT_FAILED: 'not a terminal device (a tty, or one end of a socat pty pair)',
      };
      if (code !== undefined && why[code] !== undefined) throw new UsageError(`--serial ${path}: ${why[code]}`);
      throw e;
    }
    const endpoint = new SerialCardEndpoint(card, link, {
      onApdu: (c, r) => log('apdu', apduFields(c, r)),
      onFrameError: (e) => log('frame-error', { code: e.code }),
    });
    log('serving', { transport: 'serial', path });
    stop = async () => {
      endpoint.stop();
      link.close();
    };
  }
  await new Promise<void>((done) => {
    const onSignal = (): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      done();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    if (o.exitWithParent) {
      // The process that started this one is gone (it was killed, so no SIGTERM came): stop as on a signal, instead
      // of reconnecting to a vpcd port that another pcscd may own by now.
      const parent = process.ppid;
      const watch = setInterval(() => {
        if (process.ppid === parent) return;
        clearInterval(watch);
        log('parent-exited', { parent });
        onSignal();
      }, PARENT_POLL_MS);
      watch.unref();
    }
  });
  await stop();
  for (const e of card.faults.events) log('fault-summary', { kind: e.kind, where: e.where });
  storage.close();
  log('stopped');
}

/** Builds the `dt-card` command tree. */
export function buildProgram(): Command {
  const program = new Command();
  program
    .name('dt-card')
    .description('Simulated DT wallet cards: create, personalize, inspect, clone, and serve them to pcscd (vpcd) or a serial port')
    .showHelpAfterError()
    .exitOverride()
    .addHelpText('after', EXIT_HELP)
    .configureOutput({ outputError: (s, write) => write(s) });

  program
    .command('create')
    .description('create a blank card (a new state file, mode 0600); personalize it next')
    .argument('<file>', 'state file to create (must not exist)')
    .option('--label <label>', 'a name for the card, shown by `show`')
    .option('--json', 'machine-readable output')
    .action((file: string, o: { label?: string; json?: boolean }) => {
      const storage = createStateFile(file, o.label !== undefined ? { label: o.label } : {});
      storage.close();
      print({ json: !!o.json }, `created blank card ${resolve(file)}`, { file: resolve(file), label: storage.meta.label });
    });

  secretOptions(
    program
      .command('personalize')
      .description(
        'personalize a blank card as its issuing bank: key generated on the card, certificate, PIN, limits, lock. ' +
          'Uses --ledger-data (the ledger PKI tooling) or --bank-key/--bank-cert/--root/--ledger-cert when given, else a development PKI in --dev-pki (created if missing)',
      )
      .argument('<file>', 'card state file')
      .option('--dev-pki <dir>', 'development PKI directory (created if missing)', 'dev-pki')
      .option(
        '--ledger-data <dir>',
        'the ledger PKI directory of `dt-ledger init` (root.cert, ledger.cert, banks/<name>.key.json and .cert)',
      )
      .option('--bank <name>', 'with --ledger-data: the issuing bank (banks/<name>.*)', 'bank')
      .option('--bank-key <file>', 'issuing bank secret key (32 raw bytes, 64 hex digits, or JSON {"secretKey": hex})')
      .option('--bank-cert <file>', 'issuing bank certificate (COSE_Sign1, raw/hex/base64)')
      .option('--root <file>', 'issuer root certificate the card pins')
      .option('--ledger-cert <file>', 'ledger certificate the card pins'),
    [PIN, PUK],
  )
    .option('--subject <text>', 'card certificate subject (1-64 bytes)', subjectText, 'card')
    .option('--per-payment <tiyn>', 'limit per offline payment', int('--per-payment'), 50_000_00)
    .option('--offline-total <tiyn>', 'limit of offline value since the last sync', int('--offline-total'), 100_000_00)
    .option(
      '--offline-count <n>',
      `limit of offline payments since the last sync (1..${LIMITS.maxHistory})`,
      int('--offline-count', 1, LIMITS.maxHistory),
      10,
    )
    .option('--cvm-limit <tiyn>', 'payments above this amount need the PIN', int('--cvm-limit'), 10_000_00)
    .option('--confirm', 'hardware wallet: ask the holder on the device before each payment')
    .option('--load <amounts>', 'dev PKI only: load these amounts (comma separated, one token each) after personalizing', amountList)
    .option('--json', 'machine-readable output')
    .action(async (file: string, o: Record<string, unknown>) => {
      // The initial PIN, then the unblock code: from stdin, the environment or (discouraged) the command line.
      const [pin, puk] = readSecrets(o, [PIN, PUK]) as [string, string];
      const limits = {
        perPayment: o.perPayment as number,
        offlineTotal: o.offlineTotal as number,
        offlineCount: o.offlineCount as number,
        cvmLimit: o.cvmLimit as number,
      };
      const bad = limitsProblem(limits);
      if (bad) throw new UsageError(`--per-payment / --offline-total: ${bad}`);
      if (!existsSync(file)) throw new UsageError(`no card file ${file} (create it first: dt-card create ${file})`);
      // A locked card refuses every personalization command (6986): refuse it here, before a
      // development PKI is created for a card that cannot use it.
      if ((await committedCard(file)).status.locked)
        throw new CardRefusal(`${file} is already personalized and locked (the card would answer 6986)`);
      const { bank, dev } = issuingBankFrom(o);
      if (o.load !== undefined && dev === undefined) throw new UsageError('--load needs the dev PKI (it signs with the dev ledger key)');
      const result = await withCard(file, async (t) => {
        const p = await personalizeCard(t, bank, {
          pin,
          puk,
          subject: o.subject as string,
          limits,
          confirm: !!o.confirm,
        });
        if (o.load !== undefined) await devLoad(t, loadDevPki(dev!), o.load as number[]);
        return p;
      });
      print(
        { json: !!o.json },
        `personalized ${resolve(file)}: card key id ${toHex(result.cardKid)}${o.load ? `, loaded ${(o.load as number[]).map(formatTenge).join(' + ')}` : ''}`,
        {
          file: resolve(file),
          card: result.cardKid,
          certificate: result.certificate,
          ...(dev ? { devPki: resolve(dev) } : {}),
          loaded: o.load ?? [],
        },
      );
    });

  program
    .command('load')
    .description(
      'DEV ONLY: load value onto a personalized card with the dev ledger key (no spent set; refuses cards with offline payments since their last sync)',
    )
    .argument('<file>', 'card state file')
    .argument('<amounts>', 'amounts in tiyn (100 = 1 KZT), comma separated (one token each)', amountList)
    .option('--dev-pki <dir>', 'development PKI directory', 'dev-pki')
    .option('--json', 'machine-readable output')
    .action(async (file: string, amounts: number[], o: { devPki: string; json?: boolean }) => {
      const pki = devPkiArg(o.devPki, () => loadDevPki(o.devPki));
      // Read the committed card first, as show and personalize do: an unreadable card state is exit 5 with one
      // line saying so, not the card's 6F00 answer to the load's first command.
      await committedCard(file);
      const r = await withCard(file, (t) => devLoad(t, pki, amounts));
      print(
        { json: !!o.json },
        `loaded ${amounts.map(formatTenge).join(' + ')} onto ${resolve(file)} (${r.tokens.length} token(s) on the card)`,
        {
          file: resolve(file),
          loaded: amounts,
          tokens: r.tokens.length,
        },
      );
    });

  program
    .command('show')
    .description(
      'show the card state: counter, balance, offline totals since sync, limits, PIN tries (never keys); works while the card is served',
    )
    .argument('<file>', 'card state file')
    .option('--json', 'machine-readable output')
    .action(async (file: string, o: { json?: boolean }) => showCard(file, { json: !!o.json }));

  program
    .command('clone')
    .description(`copy a card with its keys and state. ${CLONE_WARNING}`)
    .argument('<source>', 'card state file to copy')
    .argument('<target>', 'new state file (must not exist)')
    .option('--json', 'machine-readable output')
    .action((source: string, target: string, o: { json?: boolean }) => {
      process.stderr.write(`${CLONE_WARNING}\n`);
      const state = readStateFile(source);
      const copy = createStateFile(
        target,
        { label: `${state.meta.label} (clone)`, created: new Date().toISOString(), clonedFrom: resolve(source) },
        { lock: true },
      );
      try {
        // Slot by slot, in slot order: each is one durable write, and the
        // applet's journal reads the pair consistently once all are there.
        for (const [slot, data] of [...state.slots.entries()].sort((a, b) => a[0] - b[0])) copy.write(slot, data);
      } finally {
        copy.close();
      }
      print({ json: !!o.json }, `cloned ${resolve(source)} -> ${resolve(target)}`, {
        source: resolve(source),
        target: resolve(target),
        warning: CLONE_WARNING,
      });
    });

  addFaultOptions(
    program
      .command('serve')
      .description(
        'serve a card until SIGINT/SIGTERM: to pcscd through the vpcd driver (--vpcd) or on a serial device with COBS/CRC-32 framing (--serial)',
      )
      .argument('<file>', 'card state file')
      .option('--vpcd', 'connect to pcscd\'s vpcd driver (the card appears in reader "Virtual PCD 00 <slot>")')
      .option('--slot <n>', 'vpcd reader slot 0..15: port = --port + n', int('--slot', 0, 15), 0)
      .option('--host <host>', 'vpcd host', '127.0.0.1')
      .option('--port <port>', 'vpcd port of slot 0', int('--port', 1, 65535), VPCD_DEFAULT_PORT)
      .option('--serial <path>', 'serial device or pty to serve on, e.g. one end of a socat pty pair')
      .option(
        '--control <socket>',
        'with --vpcd: card control channel on this Unix socket (mode 0600, JSON lines; removed on exit): remove/insert the card, arm/disarm faults, fault events, card status',
      )
      .option('--json', 'log events as JSON lines')
      .option(
        '--exit-with-parent',
        'stop (as on SIGTERM) when the process that started this one exits; for test harnesses and supervisors',
      ),
  ).action(async (file: string, o: Record<string, unknown>) => serve(file, o, { json: !!o.json }));

  return program;
}

/** How often `serve --exit-with-parent` checks its parent (ms). */
const PARENT_POLL_MS = 500;

/** The exit code for an error a command threw. */
function exitCodeOf(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
  if (e instanceof UsageError) return ExitCode.USAGE;
  // A fault plan the flags spell wrong (e.g. --torn without --cut-at-write) is a usage error.
  if (e instanceof CardControlError && e.code === 'BAD_PLAN') return ExitCode.USAGE;
  if (e instanceof CardStatusError || e instanceof DevLoadRefusedError || e instanceof CardRefusal) return ExitCode.REFUSED;
  if (isPowerCut(e)) return ExitCode.POWER_CUT;
  if (e instanceof StateFileError) return e.code === 'STATE_MISSING' ? ExitCode.USAGE : ExitCode.STATE_FILE;
  if (e instanceof InUseError) return ExitCode.STATE_FILE;
  return ExitCode.INTERNAL;
}

/** Runs the CLI with `argv` (default `process.argv`); sets the exit code ({@link EXIT_CODES}) on failure. */
export async function main(argv: string[] = process.argv): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    // Commander has printed its own message (usage errors, --help).
    if (!(e instanceof CommanderError)) {
      const msg = e instanceof CardStatusError ? `the card refused: ${e.message}` : e instanceof Error ? e.message : String(e);
      process.stderr.write(`dt-card: ${msg}\n`);
    }
    process.exitCode = exitCodeOf(e);
  }
}
