/**
 * What `dt-bank` and `dt-wallet` share: amounts in tenge, files named on the
 * command line, the bank's key and certificates, output, and the card in the
 * field (a card in a PC/SC reader, or a simulated card's state file run by
 * the real firmware in this process).
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import {
  BankPermission,
  fromHex,
  keyPairSigner,
  openSigned,
  publicKeyOf,
  Role,
  selectApplet,
  toHex,
  verifyChain,
  verifyRoot,
  isTransportError,
  ReaderUnavailableError,
  type ApduTransport,
  type Mark,
  type Signer,
} from '@dt/protocol';
import { HttpUnreachableError, isHttpUrl } from '@dt/protocol/http';
import { FileStorage, InProcessTransport, SimulatedCard, UsageError } from '@dt/card-applet-sim';
import { PcscReaders, TerminalError, TerminalErrorCode, pcscdAccepting, type CardSession } from '@dt/terminal';

// A command-line mistake (exit 2) and the ways to give a PIN or PUK: shared with dt-card (`@dt/card-applet-sim`).
export { UsageError, PIN, PUK, NEW_PIN, secretOptions, readSecrets, type SecretSpec } from '@dt/card-applet-sim';

/** A refusal with its exit code and a stable code for `--json`. */
export class CliFailure extends Error {
  /** Builds the failure. */
  constructor(
    readonly exitCode: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'CliFailure';
  }
}

/** Parses "150", "150.5", "150.50" tenge into tiyn (positive); a {@link UsageError} otherwise. */
export function parseTenge(s: string, what = 'amount'): number {
  const m = /^(\d{1,13})(?:\.(\d{1,2}))?$/.exec(s.trim());
  if (!m) throw new UsageError(`${what}: not an amount: ${s} (tenge with up to two decimals, e.g. 150.50)`);
  const tiyn = Number(m[1]) * 100 + Number((m[2] ?? '').padEnd(2, '0'));
  if (tiyn <= 0 || !Number.isSafeInteger(tiyn)) throw new UsageError(`${what} must be positive`);
  return tiyn;
}

/** Reads a file named by `option`; a missing or unreadable file is a usage error. */
export function readArg(file: string, option: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(
      `${option} ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : code === 'EACCES' ? 'permission denied' : 'cannot be read'}`,
    );
  }
}

/** Reads a binary COSE file (raw, or hex text). */
export function readCose(file: string, option: string): Uint8Array {
  const raw = readArg(file, option);
  const text = raw.toString('utf8').trim();
  return /^[0-9a-fA-F]+$/.test(text) && text.length % 2 === 0 ? fromHex(text) : new Uint8Array(raw);
}

/** A bank: its signer and certificate, verified under the pinned root, and the ledger certificate its cards pin. */
export interface BankIdentity {
  readonly signer: Signer;
  readonly cert: Uint8Array;
  readonly kid: Uint8Array;
  readonly perms: number;
  readonly name: string;
  readonly root: Uint8Array;
  readonly ledgerCert: Uint8Array;
}

/** Exit code a bank key that does not verify gets (each CLI passes its own). */
export interface BankFiles {
  bankKey: string;
  bankCert?: string;
  root: string;
  ledgerCert: string;
}

/**
 * Reads the bank's key file (`dt-ledger bank-add` writes `banks/<name>.key.json`, JSON
 * `{secretKey, publicKey}` in hex, mode 0600) and certificate (default: next to the key,
 * `<name>.cert`), the issuer root and the ledger certificate, and verifies before use:
 * the root is a valid ISSUER root, the bank certificate a valid BANK certificate under it
 * now, and the key the certificate's. `keyError` is the exit code when they do not verify.
 */
export function readBank(o: BankFiles, keyError: number, now: number): BankIdentity {
  const certFile = o.bankCert ?? o.bankKey.replace(/\.key\.json$/, '.cert');
  const rawKey = readArg(o.bankKey, '--bank-key').toString('utf8');
  let secretKey: Uint8Array;
  try {
    const j = JSON.parse(rawKey) as { secretKey?: unknown };
    if (typeof j.secretKey !== 'string' || !/^[0-9a-fA-F]{64}$/.test(j.secretKey)) throw new Error('no secretKey');
    secretKey = fromHex(j.secretKey.toLowerCase());
  } catch {
    // Never echo the file: it holds the key.
    throw new UsageError(`--bank-key ${o.bankKey}: not a key file of dt-ledger (JSON {"secretKey": hex})`);
  }
  const signer = keyPairSigner({ secretKey, publicKey: publicKeyOf(secretKey) });
  const cert = readCose(certFile, '--bank-cert');
  const root = readCose(o.root, '--root');
  const ledgerCert = readCose(o.ledgerCert, '--ledger-cert');
  try {
    const anchor = verifyRoot(root, now);
    const [bank] = verifyChain([cert], { root: anchor, at: now, leafRole: Role.BANK });
    verifyChain([ledgerCert], { root: anchor, at: now, leafRole: Role.LEDGER });
    if (toHex(bank!.kid) !== toHex(signer.kid)) throw new Error("the key is not the bank certificate's");
    return {
      signer,
      cert,
      kid: bank!.kid,
      perms: bank!.claims.perms ?? 0,
      name: openSigned('Certificate', cert).message.sub,
      root,
      ledgerCert,
    };
  } catch (e) {
    throw new CliFailure(keyError, 'BANK_KEYS', `the bank's key and certificates do not verify: ${(e as Error).message}`);
  }
}

/** Refuses (with `exitCode`) a bank that lacks `perm`. */
export function requirePermission(bank: BankIdentity, perm: number, exitCode: number): void {
  if ((bank.perms & perm) === 0)
    throw new CliFailure(
      exitCode,
      'NOT_PERMITTED',
      `bank ${bank.name} lacks the ${perm === BankPermission.ISSUING ? 'issuing' : 'acquiring'} permission`,
    );
}

/** The card in the field for one command. */
export interface OpenCard {
  readonly transport: ApduTransport;
  /** Where it is: the reader name or the state file. */
  readonly where: string;
  close(): Promise<void>;
}

/** Where the card is: `--card <state file>` or `--reader pcsc[:<name>]`. */
export interface CardSpec {
  card?: string;
  reader?: string;
  /** Seconds to wait for a card in the reader. */
  wait?: number;
}

/**
 * Opens the card of a command: a simulated card's state file (locked for the command; the
 * real firmware runs in this process) or the card on a PC/SC reader (waits `wait` seconds for
 * it). Then SELECTs the DT applet.
 */
export async function openCard(spec: CardSpec): Promise<OpenCard> {
  if ((spec.card === undefined) === (spec.reader === undefined))
    throw new UsageError('name the card: --card <state file> (a simulated card) or --reader pcsc[:<reader name>]');
  let opened: OpenCard;
  if (spec.card !== undefined) {
    const storage = FileStorage.open(spec.card);
    const transport = new InProcessTransport(new SimulatedCard({ storage }));
    opened = { transport, where: spec.card, close: async () => storage.close() };
  } else {
    const r = spec.reader!;
    if (r !== 'pcsc' && !r.startsWith('pcsc:')) throw new UsageError(`--reader ${r}: use pcsc or pcsc:<reader name>`);
    // A daemon that is not there is said so at once (the reader layer would wait the whole --wait for it, then say no card).
    const down = await pcscdAccepting();
    if (down !== undefined) throw new ReaderUnavailableError(`${down}: start pcscd (e.g. pcscd --foreground) and try again`, {});
    const pcsc = new PcscReaders();
    let session: CardSession;
    try {
      session = await pcsc.reader(r === 'pcsc' ? undefined : r.slice(5)).waitForCard({ timeoutMs: (spec.wait ?? 10) * 1000 });
    } catch (e) {
      await pcsc.close();
      throw e;
    }
    opened = {
      transport: session,
      where: session.reader,
      close: async () => {
        await session.release();
        await pcsc.close();
      },
    };
  }
  try {
    await selectApplet(opened.transport);
  } catch (e) {
    await opened.close();
    throw e;
  }
  return opened;
}

/** Runs `f` on the card of `spec`, closing it whatever happens. */
export async function withCard<T>(spec: CardSpec, f: (c: OpenCard) => Promise<T>): Promise<T> {
  const c = await openCard(spec);
  try {
    return await f(c);
  } finally {
    await c.close();
  }
}

/** Writes the command's answer: JSON (bytes in hex) or text. */
export function output(json: boolean, obj: unknown, human: string): void {
  process.stdout.write(json ? JSON.stringify(obj, (_k, v: unknown) => (v instanceof Uint8Array ? toHex(v) : v)) + '\n' : human + '\n');
}

/** Whether an error is the reader's: no card, reader busy or gone, card removed, link or timeout. */
export function isReaderError(e: unknown): boolean {
  return isTransportError(e) || (e instanceof TerminalError && e.code === TerminalErrorCode.TIMEOUT);
}

/** Whether an error is the network's (the ledger out of reach). */
export function isNetworkError(e: unknown): boolean {
  const err = e as { name?: string; cause?: { code?: string }; code?: string };
  return (
    e instanceof HttpUnreachableError ||
    err?.name === 'TimeoutError' ||
    (e instanceof TypeError && /fetch failed/.test(e.message)) ||
    ['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ECONNRESET'].includes(err?.cause?.code ?? err?.code ?? '')
  );
}

/** The message a command prints for an error it threw: the ledger's being out of reach said so (a reader's timeout is the reader's). */
export function failureMessage(e: unknown): string {
  if (isNetworkError(e) && !isReaderError(e)) return `the ledger cannot be reached: ${(e as Error).message}`;
  return e instanceof Error ? e.message : String(e);
}

/** Seconds of the system clock. */
export const nowSec = (): number => Math.floor(Date.now() / 1000);

/** A key id option: 32 hex digits. */
export function kidOption(v: string): Uint8Array {
  if (!/^[0-9a-fA-F]{32}$/.test(v)) throw new UsageError(`not a key id: ${v} (32 hex digits)`);
  return fromHex(v.toLowerCase());
}

/** The `--ledger <url>` option's value: an http(s) URL, else a usage error (exit 2) before anything is done. */
export function ledgerUrlOption(v: string): string {
  if (!isHttpUrl(v)) throw new InvalidArgumentError('not an http(s) URL (e.g. http://127.0.0.1:8440)');
  return v;
}

/** Small JSON/CBOR HTTP client of the ledger API (bank routes). */
export async function ledgerRequest(
  ledgerUrl: string,
  method: 'GET' | 'POST',
  path: string,
  body?: Uint8Array,
): Promise<{ status: number; json: Record<string, unknown> }> {
  let url: URL;
  try {
    url = new URL(path, ledgerUrl);
  } catch {
    throw new UsageError(`--ledger ${ledgerUrl}: not a URL`);
  }
  const res = await fetch(url, {
    method,
    ...(body ? { headers: { 'content-type': 'application/cbor' }, body: Buffer.from(body) } : {}),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  if (text.length > 256 * 1024) throw new CliFailure(6, 'BAD_RESPONSE', 'the ledger answered more than 256 KiB');
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = {};
  }
  return { status: res.status, json };
}

/** A mark (SPEC §3.4) for people: its merchant ids, MCCs and hops. */
export function describeMark(m: Mark): string {
  return [
    ...(m.merchants ? [`merchants ${m.merchants.join(',')}`] : []),
    ...(m.mccs ? [`MCCs ${m.mccs.join(',')}`] : []),
    `hops ${m.hops}`,
  ].join(', ');
}
