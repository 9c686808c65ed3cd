/**
 * Builds the {@link LabContext} of a run from the CLI options: the reader
 * (PC/SC by name, or `serial:`/`hid:`), recorded so that every APDU of every
 * case lands in its transcript; lab terminals with journals of their own and
 * a verified revocation list; the ledger URL; the card control channel.
 *
 * @module
 */
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import {
  DEFAULT_POLICY,
  Journal,
  PaymentKernel,
  PcscReaders,
  installRevocationList,
  loadConfig,
  loadIdentity,
  openHidReader,
  openSerialReader,
  verifierByName,
  verifyRevocationList,
  type CardReader,
  type CardSession,
  type TerminalIdentity,
  type VerifierName,
} from '@dt/terminal';
import type { CardControl, LabContext, LabOptions, LabTerminal } from './suite.ts';
import type { SuiteName } from './model.ts';
import { Recorder } from './recorder.ts';
import { connectCardControl } from '@dt/card-applet-sim';
import { LIMITS, READER_SPEC_FORMS, parseReaderSpec } from '@dt/protocol';
import { HttpBadResponseError, HttpRefusedError, HttpUnreachableError, httpRequest } from '@dt/protocol/http';

/** A configuration or usage problem: `dt-lab` exits 2 with this message. */
export class LabConfigError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = 'LabConfigError';
  }
}

/** A peer the run needs (the ledger of --ledger, pcscd) cannot be reached: `dt-lab` exits 3. */
export class LabUnreachableError extends LabConfigError {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = 'LabUnreachableError';
  }
}

/** Defaults of {@link LabOptions}. */
export const DEFAULT_LAB_OPTIONS: LabOptions = { taps: 200, amount: 100, rounds: 2, cardTimeoutMs: 10_000, interactive: false };

/** Suites that take payments through a lab terminal (they need a revocation list to accept offline). */
export const PAYMENT_SUITES: readonly SuiteName[] = ['robustness', 'timing', 'endurance'];

/** Largest revocation list the lab downloads (the protocol's limit). */
const MAX_CRL = LIMITS.maxRevocationListSize;

/** Options of {@link createLabContext}. */
export interface ContextOptions {
  /** PC/SC reader name (exact, or a unique case-insensitive part), or `serial:<path>` / `hid:<path>`. */
  readonly reader?: string;
  /** A reader to use as it is (tests, in-process cards); `readerName` names it. */
  readonly cardReader?: CardReader;
  /** A dt-pos data directory: the lab terminal's identity. */
  readonly terminalDir?: string;
  /** Ledger base URL. */
  readonly ledgerUrl?: string;
  /** Control socket of a card served by `dt-card serve --control`. */
  readonly cardControl?: string;
  /** The card's PIN (for the PIN cases), never logged. */
  readonly pin?: string;
  /** Suites that will run (decides what must be available at start). */
  readonly suites: readonly SuiteName[];
  readonly options?: Partial<LabOptions>;
  /** Aborted on Ctrl-C. */
  readonly signal: AbortSignal;
  /** Progress sink (the runner's). */
  readonly progress?: (message: string, done?: number, total?: number) => void;
  /** Tool name and version for transcript headers. */
  readonly tool: string;
  /** Clock in seconds (terminal time). */
  readonly now?: () => number;
  /** Signature verifier of the lab terminal's kernel (default: the `verifier` of `--terminal`'s config.json, else native). */
  readonly verifier?: VerifierName;
}

/** Facts only this package's own suites use (the PIN, the recorder). */
export interface LabExtras {
  /** The `--pin`, when given: only the PIN cases use it; never log it. */
  readonly pin?: string;
  readonly recorder: Recorder;
}

const extras = new WeakMap<LabContext, LabExtras>();

/** The extras of a context built by {@link createLabContext} (undefined for other contexts). */
export function labExtras(ctx: LabContext): LabExtras | undefined {
  return extras.get(ctx);
}

/** A built context and what it holds open. */
export interface LabContextHandle {
  readonly context: LabContext;
  readonly recorder: Recorder;
  /** The lab terminal's signature verifier (reported in the run's options). */
  readonly verifier: VerifierName;
  /** Sets where progress goes (the runner installs its display). */
  setProgress(p: (message: string, done?: number, total?: number) => void): void;
  /** Closes journals, the reader, the control channel and removes the work directory. */
  close(): Promise<void>;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Picks a PC/SC reader: an exact name, else the one reader whose name holds
 * `wanted` case-insensitively; anything else is a {@link LabConfigError}
 * listing the readers.
 */
export function matchReader(names: readonly string[], wanted: string): string {
  if (names.includes(wanted)) return wanted;
  const hits = names.filter((n) => n.toLowerCase().includes(wanted.toLowerCase()));
  if (hits.length === 1) return hits[0]!;
  const list = names.length ? names.map((n) => `  ${n}`).join('\n') : '  (none)';
  if (hits.length > 1) throw new LabConfigError(`reader "${wanted}" is ambiguous; it matches:\n${hits.map((n) => `  ${n}`).join('\n')}`);
  return ((): never => {
    throw new LabConfigError(`no PC/SC reader matches "${wanted}"; readers:\n${list}`);
  })();
}

/** Reads the revocation list held in a dt-pos journal (opened read-only; the merchant's journal is never written). */
export function readJournalCrl(file: string): Uint8Array | undefined {
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    const row = db.prepare('SELECT bytes FROM crl WHERE id = 1').get() as { bytes: Buffer } | undefined;
    return row ? new Uint8Array(row.bytes) : undefined;
  } catch (e) {
    throw new LabConfigError(`cannot read the revocation list from ${file}: ${(e as Error).message}`);
  } finally {
    db?.close();
  }
}

/** GET /v1/crl from the ledger, bounded (`httpRequest` of `@dt/protocol/http`). */
export async function fetchCrl(ledgerUrl: string, signal?: AbortSignal): Promise<Uint8Array> {
  try {
    const r = await httpRequest(new URL('/v1/crl', ledgerUrl), { maxBytes: MAX_CRL, timeoutMs: 10_000, ...(signal ? { signal } : {}) });
    return r.body;
  } catch (e) {
    if (signal?.aborted) throw e;
    if (e instanceof HttpUnreachableError) throw new LabUnreachableError(`cannot reach the ledger at ${ledgerUrl}: ${e.message}`);
    if (e instanceof HttpRefusedError)
      throw new LabConfigError(`the ledger at ${ledgerUrl} answered HTTP ${e.status} ${e.code} to GET /v1/crl`);
    if (e instanceof HttpBadResponseError) throw new LabConfigError(`revocation list larger than ${MAX_CRL} bytes (${e.message})`);
    throw e;
  }
}

async function openReaderSpec(
  spec: string,
  o: ContextOptions,
  timeoutMs: number,
): Promise<{ reader: CardReader; name: string; close: () => Promise<void> }> {
  // A bare name is a PC/SC reader name (`--reader "ACR122"`); `pcsc` alone: the one reader there is.
  const parsed = parseReaderSpec(spec, { bareNames: true });
  if (parsed === undefined) throw new LabConfigError(`unknown reader ${JSON.stringify(spec)} (${READER_SPEC_FORMS}, or a reader name)`);
  if (parsed.kind !== 'pcsc') {
    const r = parsed.kind === 'serial' ? await openSerialReader(parsed.path) : openHidReader(parsed.path);
    return { reader: r, name: spec, close: () => r.close() };
  }
  const wanted = parsed.name ?? '';
  const pcsc = new PcscReaders({ apduTimeoutMs: 10_000, reconnectDelayMs: 1000 });
  try {
    const names = await pcsc.waitForReaders(Math.min(timeoutMs, 5000), o.signal);
    if (names.length === 0 && pcsc.contextError) throw new LabUnreachableError(`no PC/SC readers: ${pcsc.contextError}`);
    const name = matchReader(names, wanted);
    return { reader: pcsc.reader(new RegExp(`^${escapeRegExp(name)}$`)), name, close: () => pcsc.close() };
  } catch (e) {
    await pcsc.close();
    throw e;
  }
}

/** Connects to the control channel of a simulated card (`dt-card serve --control`). */
async function openControl(socket: string): Promise<CardControl> {
  try {
    return await connectCardControl(socket);
  } catch (e) {
    // The client's message already names the socket and what to run.
    throw new LabConfigError((e as Error).message);
  }
}

/**
 * Builds the context of a run. Fails with {@link LabConfigError} (exit 2)
 * when the reader does not exist, the terminal identity does not verify, or a
 * payment suite is requested without a usable revocation list.
 */
export async function createLabContext(o: ContextOptions): Promise<LabContextHandle> {
  const now = o.now ?? (() => Math.floor(Date.now() / 1000));
  const options: LabOptions = { ...DEFAULT_LAB_OPTIONS, ...o.options };
  const closers: (() => unknown)[] = [];
  const closeAll = async (): Promise<void> => {
    for (const c of closers.reverse()) {
      try {
        await c();
      } catch {
        // keep closing the rest
      }
    }
    closers.length = 0;
  };
  try {
    const workDir = mkdtempSync(join(tmpdir(), 'dt-lab-'));
    closers.push(() => rmSync(workDir, { recursive: true, force: true }));

    // ---- terminal identity and revocation list, checked before any card is touched
    let identity: TerminalIdentity | undefined;
    let verifier: VerifierName = o.verifier ?? 'native';
    let crl: Uint8Array | undefined;
    let terminalMissing: string | undefined;
    if (o.terminalDir) {
      const dir = resolve(o.terminalDir);
      try {
        identity = loadIdentity(dir, now());
        if (!o.verifier) verifier = loadConfig(dir).verifier;
      } catch (e) {
        throw new LabConfigError(`--terminal ${dir}: ${(e as Error).message}`);
      }
      let source: string;
      if (o.ledgerUrl) {
        crl = await fetchCrl(o.ledgerUrl, o.signal);
        source = `ledger ${o.ledgerUrl}`;
      } else {
        const jf = join(dir, 'journal.sqlite');
        crl = existsSync(jf) ? readJournalCrl(jf) : undefined;
        source = `journal ${jf}`;
      }
      if (crl) {
        try {
          const list = verifyRevocationList(crl, identity, now());
          if (now() - list.issued > DEFAULT_POLICY.maxCrlAge) {
            terminalMissing = `the revocation list from the ${source} is ${Math.floor((now() - list.issued) / 3600)} h old (offline acceptance stops after ${DEFAULT_POLICY.maxCrlAge / 3600} h): refresh it with dt-pos sync, or give --ledger <url>`;
            crl = undefined;
          }
        } catch (e) {
          terminalMissing = `the revocation list from the ${source} does not verify: ${(e as Error).message}`;
          crl = undefined;
        }
      } else {
        terminalMissing = `no revocation list in the ${source}: give --ledger <url>, or run dt-pos sync for that terminal first`;
      }
      if (!crl) {
        const needing = o.suites.filter((s) => PAYMENT_SUITES.includes(s));
        if (needing.length > 0)
          throw new LabConfigError(
            `${needing.join(', ')} ${needing.length > 1 ? 'take' : 'takes'} payments, which need a revocation list: ${terminalMissing}`,
          );
        identity = undefined;
      }
    } else {
      terminalMissing = 'no lab terminal: give --terminal <dt-pos data dir> (see dt-pos init)';
      // A --ledger that cannot be reached is said at the start (exit 3), as with a terminal, not as a sync case's error.
      if (o.ledgerUrl) await fetchCrl(o.ledgerUrl, o.signal);
    }

    const control = o.cardControl ? await openControl(o.cardControl) : undefined;
    if (control) closers.push(() => control.close());

    // ---- the reader
    let raw: CardReader;
    let readerName: string;
    if (o.cardReader) {
      raw = o.cardReader;
      readerName = o.cardReader.name;
      closers.push(() => o.cardReader!.close());
    } else {
      if (!o.reader) throw new LabConfigError('give --reader <name> (see dt-lab readers)');
      const opened = await openReaderSpec(o.reader, o, options.cardTimeoutMs);
      raw = opened.reader;
      readerName = opened.name;
      closers.push(opened.close);
    }
    const recorder = new Recorder({ tool: o.tool, reader: readerName, secrets: o.pin ? [new TextEncoder().encode(o.pin)] : [] });
    const reader = recorder.wrapReader(raw);

    let progress = o.progress ?? (() => {});
    let journals = 0;
    const openJournals: Journal[] = [];
    closers.push(() => {
      for (const j of openJournals) j.close();
    });

    const terminal = (): LabTerminal | undefined => {
      if (!identity || !crl) return undefined;
      const journal = Journal.open(join(workDir, `journal-${++journals}.sqlite`));
      openJournals.push(journal);
      installRevocationList(journal, crl, identity, now());
      const kernel = new PaymentKernel({
        identity,
        journal,
        policy: DEFAULT_POLICY,
        verifier: verifierByName(verifier),
        timeouts: { cardMs: options.cardTimeoutMs, tapMs: 15_000 },
        now,
      });
      return { identity, journal, kernel };
    };

    const context: LabContext = {
      readerName,
      reader,
      async openSession(): Promise<CardSession> {
        return reader.waitForCard({ signal: o.signal, timeoutMs: options.cardTimeoutMs });
      },
      terminal,
      ...(terminalMissing && !crl ? { terminalMissing } : {}),
      ...(o.ledgerUrl ? { ledgerUrl: o.ledgerUrl } : {}),
      // What the control channel does to the card is part of each case's transcript (replay does it again).
      ...(control ? { control: recorder.wrapControl(control) } : {}),
      options,
      signal: o.signal,
      progress: (m, d, t) => progress(m, d, t),
      workDir,
    };
    extras.set(context, { ...(o.pin ? { pin: o.pin } : {}), recorder });
    return {
      context,
      recorder,
      verifier,
      setProgress(p) {
        progress = p;
      },
      close: closeAll,
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}
