/**
 * PC/SC readers through `nfc-pcsc` (contactless readers such as the ACS
 * ACR122U, and the simulated card in a real `pcscd` through vpcd).
 *
 * `nfc-pcsc` is wrapped, not trusted:
 * - `autoProcessing` is turned off (it would read NDEF/UIDs on its own);
 *   the DT kernel does its own SELECT, chaining, 61xx and 6Cxx handling
 *   through the protocol's `exchange` over this transport;
 * - the receive buffer is sized for the largest short R-APDU (256 data bytes
 *   + SW1 SW2): this toolkit never sends extended APDUs, so nothing longer
 *   can legitimately come back, and a buffer that is too small would fail
 *   with SCARD_E_INSUFFICIENT_BUFFER;
 * - `nfc-pcsc` drops connection errors (it emits the error object as an
 *   event name), so when a card is present but not connected this adapter
 *   connects itself and reports the failure (e.g. another process holds the
 *   reader exclusively) as a typed error, retrying until the wait ends;
 * - when the PC/SC context dies (pcscd restarted or crashed, reader
 *   unplugged with the service gone) the context is closed and recreated
 *   after a short delay, once pcscd accepts connections again (checked
 *   asynchronously: libpcsclite would spin on the event loop otherwise), so
 *   a terminal left running all day reconnects on its own;
 * - one exchange at a time per reader: a second session or a concurrent
 *   `transmit` gets the protocol's `TransportBusyError` (its `ExchangeGuard`);
 *   transmit failures are the protocol's typed errors (`CardRemovedError`
 *   when the card left the field, `TransportLinkError` otherwise);
 * - closing releases everything native: `nfc-pcsc`'s `NFC.close()` only
 *   stops the PC/SC context's own watcher thread, but `@pokusew/pcsclite`
 *   starts one more thread per reader (its status watch) with a libuv handle
 *   that only that reader's `close()` releases, and keeps the card handle
 *   until the reader is disconnected; left open, they keep the process
 *   alive for ever (a `dt-pos charge` that never exits after its outcome) and
 *   leak a thread per reader in a long-running till. {@link PcscReaders.close}
 *   and a lost context disconnect and close every reader, then the context,
 *   once those threads have settled into their wait (a close during their
 *   start-up could leave one running, or join one that never ends: see
 *   {@link releaseContext}).
 *
 * @module
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { connect } from 'node:net';
import {
  CardRemovedError,
  ExchangeGuard,
  ReaderUnavailableError,
  TransportLinkError,
  type TransmitOptions,
  type TransportError,
} from '@dt/protocol';
import { abortReason, checkAborted, sleep } from '../util/abort.ts';
import { GuardedTransport, waitWithTimeout, type CardReader, type CardSession, type WaitOptions } from './reader.ts';

/** Largest short response APDU: 256 data bytes + SW1 SW2. */
export const PCSC_RESPONSE_BUFFER = 258;

// ---------------------------------------------------------------- minimal typings of nfc-pcsc (it ships none)
/** The part of an nfc-pcsc `Reader` this adapter uses. */
export interface NfcReaderLike extends EventEmitter {
  readonly name: string;
  autoProcessing: boolean;
  card: { atr?: Uint8Array } | null;
  connection: unknown;
  connect(mode?: number): Promise<unknown>;
  disconnect(): Promise<unknown>;
  transmit(data: Uint8Array, responseMaxLength: number): Promise<Uint8Array>;
}
/**
 * The part of a raw `@pokusew/pcsclite` CardReader (nfc-pcsc's `reader.reader`)
 * that closing needs.
 */
export interface RawReaderLike {
  /** Stops the reader's status thread and releases its libuv handle. */
  close(): void;
  /** Releases the card handle; calls back at once when not connected. */
  disconnect?(disposition: number, cb: (err?: unknown) => void): void;
  readonly SCARD_LEAVE_CARD?: number;
  /** The state its status thread last reported; undefined until its first report. */
  readonly state?: number;
  on?(event: 'status', listener: () => void): unknown;
}
/** The part of an nfc-pcsc `NFC` this adapter uses. */
export interface NfcLike extends EventEmitter {
  close(): void;
  /** The raw readers by name (`NFC.readers` is `@pokusew/pcsclite`'s map). */
  readonly readers?: Record<string, RawReaderLike>;
  /** `@pokusew/pcsclite`'s context (nfc-pcsc's `NFC.pcsc`): `start` runs its watcher thread, in a `process.nextTick` after construction. */
  readonly pcsc?: { start?: (cb: (...args: unknown[]) => unknown) => unknown };
}
/** Builds a fresh PC/SC context (an `NFC` instance). */
export type NfcFactory = () => NfcLike;

/** Where libpcsclite looks for pcscd: `$PCSCLITE_CSOCK_NAME`, else the Debian default. */
export function pcscdSocketPath(): string {
  return process.env.PCSCLITE_CSOCK_NAME ?? '/run/pcscd/pcscd.comm';
}

/**
 * The real factory: `new NFC()` from nfc-pcsc, loaded lazily (so the native
 * module is only needed when used). `@pokusew/pcsclite`'s constructor
 * retries `SCardEstablishContext` in a loop on the JavaScript thread for as
 * long as it returns SCARD_E_NO_SERVICE, i.e. forever while pcscd is down,
 * so the factory refuses at once when the daemon's socket is absent (the
 * caller retries later); {@link PcscReaders} also checks that the daemon
 * accepts before calling it (see {@link pcscdAccepting}).
 */
export const defaultNfcFactory: NfcFactory = () => {
  const socket = pcscdSocketPath();
  if (!existsSync(socket)) throw new ReaderUnavailableError(`pcscd is not running (no socket at ${socket})`, { socket });
  const require = createRequire(import.meta.url);
  const { NFC } = require('nfc-pcsc') as { NFC: new (logger?: unknown) => NfcLike };
  return new NFC();
};

/**
 * Whether pcscd accepts clients on `socket`: connects to the Unix socket
 * and hangs up at once (pcscd drops a client that closes before its first
 * request). Resolves `undefined` when it does, else why not.
 *
 * Why: libpcsclite's `SCardEstablishContext` fails with
 * SCARD_E_NO_SERVICE when nobody accepts on the socket, and
 * `@pokusew/pcsclite`'s constructor retries that in a tight loop on the
 * calling (JavaScript) thread until the daemon answers: with the socket
 * missing, or left behind by a daemon that crashed (SIGKILL leaves it), the
 * whole process would spin. Checking asynchronously first keeps the event
 * loop free; only a daemon that dies between this check and the context
 * set-up (a window of microseconds) can still make it spin, until a daemon
 * answers again.
 */
export function pcscdAccepting(socket: string = pcscdSocketPath(), timeoutMs = 2000): Promise<string | undefined> {
  if (!existsSync(socket)) return Promise.resolve(`pcscd is not running (no socket at ${socket})`);
  return new Promise((resolve) => {
    const s = connect({ path: socket });
    const done = (reason: string | undefined): void => {
      clearTimeout(timer);
      s.removeAllListeners();
      s.on('error', () => {});
      s.destroy();
      resolve(reason);
    };
    const timer = setTimeout(() => done(`pcscd does not answer on ${socket}`), timeoutMs);
    s.once('connect', () => done(undefined));
    s.once('error', (e) => done(`pcscd is not running (${socket}: ${describe(e)})`));
  });
}

/** Options of {@link PcscReaders}. */
export interface PcscOptions {
  /** Context factory (tests may pass one; default nfc-pcsc). */
  readonly nfcFactory?: NfcFactory;
  /**
   * Checked before each context is created: `undefined` when the service is
   * up, else why not (the adapter retries after `reconnectDelayMs`).
   * Default: {@link pcscdAccepting} with the default factory, none with a
   * custom one.
   */
  readonly serviceCheck?: () => Promise<string | undefined>;
  /** Delay before recreating a lost context, ms (default 1000). */
  readonly reconnectDelayMs?: number;
  /** Per-APDU time limit, ms (default 5000). */
  readonly apduTimeoutMs?: number;
  /** Observer for diagnostics (never receives APDU contents). */
  readonly onEvent?: (event: PcscEvent) => void;
}

/** Diagnostic events of {@link PcscReaders}. */
export type PcscEvent =
  | { type: 'context'; state: 'up' | 'lost'; detail?: string }
  | { type: 'reader'; state: 'added' | 'removed'; reader: string }
  | { type: 'card'; state: 'present' | 'removed'; reader: string }
  | { type: 'connect-error'; reader: string; detail: string };

interface ReaderSlot {
  nfc: NfcReaderLike;
  present: boolean;
  /** When the card was seen (ms), to give nfc-pcsc's own connect a head start. */
  presentSince: number;
  connected: boolean;
  lastConnectError?: string;
}

/**
 * The PC/SC subsystem: tracks readers and cards across context losses. Get a
 * {@link CardReader} for one reader with {@link reader}.
 *
 * @example
 * const pcsc = new PcscReaders();
 * const reader = pcsc.reader(/ACR122|Virtual PCD 00 00/);
 * const outcome = await kernel.charge(reader, 1500);
 * await pcsc.close();
 */
export class PcscReaders {
  readonly #factory: NfcFactory;
  readonly #serviceCheck: (() => Promise<string | undefined>) | undefined;
  readonly #reconnectDelayMs: number;
  readonly #apduTimeoutMs: number;
  readonly #onEvent: (e: PcscEvent) => void;
  readonly #slots = new Map<string, ReaderSlot>();
  readonly #changed = new EventEmitter();
  #nfc: NfcLike | undefined;
  /** What the context's native threads last reported, and when (see {@link releaseContext}). */
  #activity: NativeActivity | undefined;
  #closed = false;
  #restartTimer: NodeJS.Timeout | undefined;
  #contextError: string | undefined;

  /** Starts the PC/SC context. */
  constructor(options: PcscOptions = {}) {
    this.#factory = options.nfcFactory ?? defaultNfcFactory;
    this.#serviceCheck = options.serviceCheck ?? (options.nfcFactory === undefined ? () => pcscdAccepting() : undefined);
    this.#reconnectDelayMs = options.reconnectDelayMs ?? 1000;
    this.#apduTimeoutMs = options.apduTimeoutMs ?? 5000;
    this.#onEvent = options.onEvent ?? (() => {});
    this.#changed.setMaxListeners(0);
    this.#start();
  }

  /** Names of the readers currently known. */
  get readerNames(): string[] {
    return [...this.#slots.keys()];
  }

  /** The last context error while the context is down, if any. */
  get contextError(): string | undefined {
    return this.#contextError;
  }

  /** Snapshot of readers and whether a card is present. */
  list(): { name: string; cardPresent: boolean }[] {
    return [...this.#slots.entries()].map(([name, s]) => ({ name, cardPresent: s.present }));
  }

  /** Waits until at least one reader is known (or the time runs out); returns the names. */
  async waitForReaders(timeoutMs: number, signal?: AbortSignal): Promise<string[]> {
    const until = Date.now() + timeoutMs;
    while (this.#slots.size === 0 && Date.now() < until) await this.#waitChange(Math.max(1, until - Date.now()), signal);
    return this.readerNames;
  }

  /**
   * A {@link CardReader} for the first reader whose name matches `match`
   * (a substring or a RegExp; default: any reader). The reader may come and
   * go; the CardReader follows it.
   */
  reader(match?: string | RegExp): PcscCardReader {
    return new PcscCardReader(this, match, this.#apduTimeoutMs);
  }

  /**
   * Stops the context and releases every native resource (card handles,
   * per-reader status threads, the context's thread), so nothing PC/SC keeps
   * the process alive afterwards. Idempotent.
   */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    const released = this.#stop();
    this.#changed.emit('change');
    await released;
  }

  // ---- internals used by PcscCardReader
  /** @internal */
  findSlot(match: string | RegExp | undefined): { name: string; slot: ReaderSlot } | undefined {
    for (const [name, slot] of this.#slots) {
      if (match === undefined || (typeof match === 'string' ? name.includes(match) : match.test(name))) return { name, slot };
    }
    return undefined;
  }

  /** @internal Waits for any change of readers/cards, at most `ms`. */
  #waitChange(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#changed.off('change', done);
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => {
        clearTimeout(timer);
        this.#changed.off('change', done);
        reject(abortReason(signal!));
      };
      const timer = setTimeout(done, ms);
      this.#changed.once('change', done);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** @internal */
  waitChange(ms: number, signal?: AbortSignal): Promise<void> {
    return this.#waitChange(ms, signal);
  }

  /** @internal */
  get closed(): boolean {
    return this.#closed;
  }

  /** @internal Connects a present card when nfc-pcsc failed to (its connect errors are swallowed). */
  async ensureConnected(name: string, slot: ReaderSlot): Promise<void> {
    if (slot.connected && slot.nfc.connection) return;
    try {
      // A stale handle (the card was reset or re-inserted faster than the status poll saw): drop it first.
      if (slot.nfc.connection) await slot.nfc.disconnect().catch(() => {});
      await slot.nfc.connect();
      slot.connected = true;
      slot.lastConnectError = undefined;
    } catch (e) {
      slot.lastConnectError = describe(e);
      this.#onEvent({ type: 'connect-error', reader: name, detail: slot.lastConnectError });
      throw new ReaderUnavailableError(`cannot connect to the card in ${name}: ${slot.lastConnectError}`, { reader: name }, e);
    }
  }

  #start(): void {
    if (this.#closed) return;
    const check = this.#serviceCheck;
    if (check === undefined) {
      this.#create();
      return;
    }
    check().then(
      (reason) => {
        if (this.#closed || this.#nfc) return;
        if (reason === undefined) this.#create();
        else this.#lost(reason);
        this.#changed.emit('change');
      },
      (e: unknown) => {
        if (!this.#closed && !this.#nfc) this.#lost(describe(e));
      },
    );
  }

  #create(): void {
    let nfc: NfcLike;
    try {
      nfc = this.#factory();
    } catch (e) {
      this.#lost(describe(e));
      return;
    }
    this.#nfc = nfc;
    this.#activity = trackNativeActivity(nfc);
    this.#contextError = undefined;
    this.#onEvent({ type: 'context', state: 'up' });
    nfc.on('reader', (r: NfcReaderLike) => this.#addReader(r));
    nfc.on('error', (e: unknown) => {
      if (this.#nfc === nfc) this.#lost(describe(e));
    });
  }

  #addReader(r: NfcReaderLike): void {
    r.autoProcessing = false;
    const slot: ReaderSlot = { nfc: r, present: false, presentSince: 0, connected: false };
    this.#slots.set(r.name, slot);
    this.#onEvent({ type: 'reader', state: 'added', reader: r.name });
    r.on('card', () => {
      if (!slot.present) slot.presentSince = Date.now();
      slot.present = true;
      slot.connected = true;
      this.#onEvent({ type: 'card', state: 'present', reader: r.name });
      this.#changed.emit('change');
    });
    r.on('card.off', () => {
      slot.present = false;
      slot.connected = false;
      this.#onEvent({ type: 'card', state: 'removed', reader: r.name });
      this.#changed.emit('change');
    });
    // nfc-pcsc emits the connect error object itself as the event name: catch-all for
    // 'error' only; a present-but-unconnected card is found by the status watch below.
    r.on('error', () => {});
    const raw = (r as unknown as { reader?: EventEmitter & { state?: number; SCARD_STATE_PRESENT?: number } }).reader;
    raw?.on('status', (status: { state: number }) => {
      const presentBit = raw.SCARD_STATE_PRESENT ?? 0x20;
      const present = (status.state & presentBit) !== 0;
      if (present && !slot.present) {
        slot.present = true;
        slot.presentSince = Date.now();
        this.#changed.emit('change');
      } else if (!present && slot.present) {
        slot.present = false;
        slot.connected = false;
        this.#changed.emit('change');
      }
    });
    r.on('end', () => {
      if (this.#slots.get(r.name) === slot) this.#slots.delete(r.name);
      this.#onEvent({ type: 'reader', state: 'removed', reader: r.name });
      this.#changed.emit('change');
    });
    this.#changed.emit('change');
  }

  /** Drops the context; resolves once its native resources are released (see {@link releaseContext}). */
  #stop(): Promise<void> {
    const nfc = this.#nfc;
    const slots = [...this.#slots.values()];
    this.#nfc = undefined;
    this.#slots.clear();
    if (!nfc) return Promise.resolve();
    nfc.removeAllListeners('reader');
    // A reader announced while the context closes (its first list may still come: releaseContext
    // waits for it) must not act on its own: nfc-pcsc would read a present card and throw its error.
    nfc.on('reader', (r: NfcReaderLike) => {
      r.autoProcessing = false;
      r.on('error', () => {});
    });
    nfc.on('error', () => {});
    return releaseContext(
      nfc,
      slots.map((s) => rawReaderOf(s.nfc)).filter((r): r is RawReaderLike => r !== undefined),
      this.#activity,
    );
  }

  #lost(detail: string): void {
    // Reported once per reason, not on every retry while the service stays down.
    if (this.#contextError !== detail) this.#onEvent({ type: 'context', state: 'lost', detail });
    this.#contextError = detail;
    void this.#stop();
    this.#changed.emit('change');
    if (this.#closed || this.#restartTimer) return;
    // Recreate the context: pcscd may come back (service restart, reader re-plugged).
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      this.#start();
      this.#changed.emit('change');
    }, this.#reconnectDelayMs);
    this.#restartTimer.unref?.();
  }
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The raw pcsclite reader behind an nfc-pcsc reader, when it has one (fakes in tests may not). */
function rawReaderOf(r: NfcReaderLike): RawReaderLike | undefined {
  const raw = (r as unknown as { reader?: Partial<RawReaderLike> }).reader;
  return raw && typeof raw.close === 'function' ? (raw as RawReaderLike) : undefined;
}

/**
 * How long {@link releaseContext} waits at most for `@pokusew/pcsclite`'s threads to settle (a
 * pcscd that does not answer: the close goes ahead).
 */
export const THREADS_SETTLE_MS = 3000;
/** How long the native threads must have been quiet before {@link releaseContext} closes them. */
export const THREADS_QUIET_MS = 100;

/** What a PC/SC context's native threads have reported: the watcher's first reader list, and the time of the latest report. */
export interface NativeActivity {
  /** Resolves with the watcher thread's first reader list (or its first error). */
  readonly firstList: Promise<void>;
  /** `Date.now()` of the latest reader list or reader status; 0 before any. */
  lastAt(): number;
}

/**
 * Follows what the context's native threads report: its watcher's reader lists and every reader's
 * status. Call it in the tick that built the context: `@pokusew/pcsclite` calls `start` in the next
 * one. A context without that shape (a fake) has no threads: `undefined`.
 */
export function trackNativeActivity(nfc: NfcLike): NativeActivity | undefined {
  const p = nfc.pcsc;
  const start = p?.start;
  if (p === undefined || typeof start !== 'function') return undefined;
  let last = 0;
  const seen = new WeakSet<object>();
  const mark = (): void => {
    last = Date.now();
  };
  let listed!: () => void;
  const firstList = new Promise<void>((r) => (listed = r));
  Object.defineProperty(p, 'start', {
    configurable: true,
    writable: true,
    value: (cb: (...args: unknown[]) => unknown) =>
      start.call(p, (...args: unknown[]) => {
        mark();
        listed();
        const result = cb(...args);
        // The readers this list announced: each has just started its status thread.
        for (const r of Object.values(nfc.readers ?? {})) {
          if (r && typeof r.on === 'function' && !seen.has(r)) {
            seen.add(r);
            r.on('status', mark);
          }
        }
        return result;
      }),
  });
  return { firstList, lastAt: () => last };
}

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Releases a PC/SC context: disconnects every reader's card handle, waits until its native threads
 * have settled, closes every reader (its status thread and libuv handle), then the context.
 *
 * Why in this order and not earlier:
 * - `@pokusew/pcsclite` starts the context's watcher in a `process.nextTick` after construction,
 *   and `PCSCLite.close()` before that tick leaves the watcher to start afterwards and run for
 *   ever; waiting one `setImmediate` puts the close after it.
 * - Its `close()` (the context's and each reader's) cancels the thread's `SCardGetStatusChange`
 *   with `SCardCancel` for at most 50 ms, then joins the thread on the JavaScript thread. A close
 *   just after a thread reported (its first status, say) can miss the wait the thread goes back
 *   into, and the join then waits for the next change on that reader, which may never come: the
 *   process hangs (seen: a `dt-pos charge` cancelled with Ctrl-C as it started, on a loaded
 *   machine). So, when `activity` follows the threads ({@link trackNativeActivity}), the close
 *   waits for the watcher's first reader list, each reader's first status, and then until the
 *   threads have been quiet for {@link THREADS_QUIET_MS}, all bounded by {@link THREADS_SETTLE_MS}.
 *   A close long after the last report (every close but one at start-up) waits for nothing.
 * - Readers are taken from the context's own map as well as from the slots, so one announced in the
 *   same tick is closed too.
 *
 * Errors are ignored: the context may already be dead (pcscd gone), and every step is idempotent.
 */
export async function releaseContext(nfc: NfcLike, known: readonly RawReaderLike[] = [], activity?: NativeActivity): Promise<void> {
  await new Promise<void>((r) => setImmediate(r));
  const deadline = Date.now() + THREADS_SETTLE_MS;
  const readers = new Set<RawReaderLike>(known);
  /** Adds the readers of the context's own map (one may have been announced meanwhile). */
  const collect = (): void => {
    try {
      for (const r of Object.values(nfc.readers ?? {})) if (r && typeof r.close === 'function') readers.add(r);
    } catch {
      // no reader map on this context
    }
  };
  collect();
  const disconnectAll = (): Promise<unknown> =>
    Promise.all(
      [...readers].map(
        (r) =>
          new Promise<void>((done) => {
            if (typeof r.disconnect !== 'function') return done();
            try {
              r.disconnect(r.SCARD_LEAVE_CARD ?? 0, () => done());
            } catch {
              done();
            }
          }),
      ),
    );
  // The card handles first: releasing one changes its reader's state, which its thread then reports.
  await disconnectAll();
  if (activity !== undefined) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([activity.firstList, new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, deadline - Date.now()))))]);
    clearTimeout(timer);
    for (;;) {
      collect();
      const now = Date.now();
      const quietFor = now - activity.lastAt();
      if (now >= deadline || ([...readers].every((r) => r.state !== undefined) && quietFor >= THREADS_QUIET_MS)) break;
      await pause(Math.min(Math.max(1, THREADS_QUIET_MS - quietFor), 10));
    }
    // A reader announced meanwhile may have connected its card.
    await disconnectAll();
  }
  // From here to the context's close nothing yields: no reader can be announced in between.
  collect();
  for (const r of readers) {
    try {
      r.close();
    } catch {
      // already closed, or its reader went away
    }
  }
  try {
    nfc.close();
  } catch {
    // already gone
  }
}

/** Maps a pcsclite transmit failure to a typed error (the card left the field, or the link to the reader failed). */
function transmitError(reader: string, e: unknown): TransportError {
  const msg = describe(e);
  const inner = describe((e as { previous?: unknown })?.previous ?? '');
  // SCARD_W_REMOVED_CARD 0x80100069, SCARD_W_RESET_CARD 0x80100068, SCARD_E_NO_SMARTCARD 0x8010000C,
  // SCARD_E_NOT_TRANSACTED 0x80100016 (the card lost power mid-command).
  if (/0x80100069|0x80100068|0x8010000C|0x80100016|removed|No card/i.test(`${msg} ${inner}`)) {
    return new CardRemovedError(`card left the field of ${reader}`, { reader }, e);
  }
  return new TransportLinkError(`PC/SC transmit failed on ${reader}: ${msg} ${inner}`.trim(), { reader }, e);
}

/** One PC/SC reader as a {@link CardReader}. */
export class PcscCardReader implements CardReader {
  readonly #pcsc: PcscReaders;
  readonly #match: string | RegExp | undefined;
  readonly #lock: ExchangeGuard;
  readonly #apduTimeoutMs: number;

  /** Use {@link PcscReaders.reader}. */
  constructor(pcsc: PcscReaders, match: string | RegExp | undefined, apduTimeoutMs: number) {
    this.#pcsc = pcsc;
    this.#match = match;
    this.#apduTimeoutMs = apduTimeoutMs;
    this.#lock = new ExchangeGuard(match === undefined ? 'pcsc' : String(match));
  }

  /** Name of the matched reader, or the match pattern while none is present. */
  get name(): string {
    return this.#pcsc.findSlot(this.#match)?.name ?? (this.#match === undefined ? 'pcsc' : String(this.#match));
  }

  /** {@inheritDoc CardReader.waitForCard} */
  async waitForCard(options: WaitOptions = {}): Promise<CardSession> {
    checkAborted(options.signal);
    this.#lock.acquire();
    try {
      const found = await waitWithTimeout((signal) => this.#waitPresent(signal), options);
      return this.#session(found.name, found.slot);
    } catch (e) {
      this.#lock.release();
      throw e;
    }
  }

  async #waitPresent(signal: AbortSignal | undefined): Promise<{ name: string; slot: ReaderSlot }> {
    for (;;) {
      checkAborted(signal);
      if (this.#pcsc.closed) throw new ReaderUnavailableError('PC/SC closed');
      const found = this.#pcsc.findSlot(this.#match);
      if (found && found.slot.present && (found.slot.connected || Date.now() - found.slot.presentSince > 400)) {
        try {
          await this.#pcsc.ensureConnected(found.name, found.slot);
          return found;
        } catch {
          // Someone else holds the card, or it is half-inserted: wait and retry.
          await sleep(200, signal);
          continue;
        }
      }
      await this.#pcsc.waitChange(found?.slot.present ? 100 : 500, signal);
    }
  }

  #session(name: string, slot: ReaderSlot): CardSession {
    let open = true;
    let first = true;
    const lock = this.#lock;
    const pcsc = this.#pcsc;
    const once = async (apdu: Uint8Array, signal: AbortSignal | undefined): Promise<Uint8Array> => {
      if (!open) throw new CardRemovedError('session released', { reader: name });
      if (!slot.present || !slot.connected) throw new CardRemovedError(`no card in ${name}`, { reader: name });
      checkAborted(signal);
      // pcsclite cannot cancel a transmit: on abort we stop waiting; the reply, if any, is dropped.
      const p = slot.nfc.transmit(Buffer.from(apdu.buffer, apdu.byteOffset, apdu.byteLength), PCSC_RESPONSE_BUFFER).then(
        (r) => new Uint8Array(r),
        (e: unknown) => {
          // Whatever happened, this connection is no longer trusted: the next session reconnects.
          slot.connected = false;
          throw transmitError(name, e);
        },
      );
      if (!signal) return p;
      return new Promise<Uint8Array>((resolve, reject) => {
        const onAbort = (): void => {
          p.catch(() => {});
          reject(abortReason(signal));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
      });
    };
    const raw = {
      async transmit(apdu: Uint8Array, o: TransmitOptions = {}): Promise<Uint8Array> {
        const signal = o.signal as AbortSignal | undefined;
        const isFirst = first;
        first = false;
        try {
          return await once(apdu, signal);
        } catch (e) {
          // A card re-inserted (or reset) just before the session started leaves a stale
          // handle: reconnect and send the session's FIRST command once more. Only the
          // first: it is the kernel's SELECT, which changes nothing on the card, so a
          // repeat is harmless; later commands are never repeated (PAY must not be).
          if (!isFirst || !(e instanceof CardRemovedError) || signal?.aborted) throw e;
          await sleep(150, signal);
          if (!slot.present) throw e;
          await pcsc.ensureConnected(name, slot);
          return once(apdu, signal);
        }
      },
    };
    const guarded = new GuardedTransport(raw, name, this.#apduTimeoutMs);
    const atr = slot.nfc.card?.atr;
    return {
      reader: name,
      ...(atr ? { atr: new Uint8Array(atr) } : {}),
      transmit: (apdu, o) => guarded.transmit(apdu, o),
      async release() {
        if (!open) return;
        open = false;
        lock.release();
      },
    };
  }

  /** Nothing to free per reader (the {@link PcscReaders} owns the context). */
  async close(): Promise<void> {}
}
