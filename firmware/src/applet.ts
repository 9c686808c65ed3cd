/**
 * The DT wallet applet: APDU dispatcher and command handlers over a
 * {@link Hal}. One instance is one card (or hardware wallet).
 *
 * Rules every handler follows:
 * - RAM state is never modified in place: a handler builds the next
 *   {@link CardState}, commits it through the journal, and only then adopts
 *   it and answers. Anything that leaves the card (a signature above all) is
 *   sent after the commit that accounts for it.
 * - Input is decoded with size limits and verified before it is trusted; any
 *   decoding or verification failure is a status word, never a crash.
 * - A storage write that throws is a power cut: the applet stops (process()
 *   rethrows and refuses further commands) until {@link Applet.powerOn}.
 *
 * @module
 */
import {
  addAmounts,
  bytesEqual,
  keyId,
  CARD_TIME_AHEAD,
  concatBytes,
  CardApduProcessor,
  CardStatusError,
  CLA,
  constantTimeEqual,
  payeeMark,
  CURRENCY_KZT,
  Cvm,
  DT_AID,
  DtError,
  ErrorCode,
  encodeDeterministic,
  encodeMessage,
  encodeResponse,
  generateKeyPair,
  INS,
  keyPairSigner,
  LIMITS,
  openSigned,
  outputId,
  PERSONALIZE_P1,
  Role,
  sha256,
  signEncoded,
  signMessage,
  subjectKey,
  sumAmounts,
  SW,
  SYNC_P1,
  toHex,
  verifyChain,
  verifyCoseSign1,
  verifyRoot,
  verifySigned,
  publicKeyOf,
  nobleVerifier,
  prepareKey,
  preparedVerifier,
  type PreparedKey,
  type Verifier,
  selectInputs,
  type Certificate,
  type CertificateMemo,
  type CommandApdu,
  type ResponseApdu,
  type Signer,
  type Transfer,
  type VerifiedCertificate,
  DEFAULT_MAX_COMMAND_DATA,
  SELECT_P1P2,
  DEFAULT_PIN_TRIES,
  DEFAULT_PUK_TRIES,
  SYNC_CHALLENGE_LENGTH,
  WRITE_CERTIFICATES_MAX_SIZE,
  APPLET_VERSION,
  Capability,
  CardStatusSchema,
  ChangePinSchema,
  decodeFormat,
  encodeFormat,
  Personalized,
  PIN_LENGTH,
  PROTOCOL_VERSION,
  PUK_LENGTH,
  SelectResponseSchema,
  SetConfigSchema,
  SetPinSchema,
  UnblockPinSchema,
  WriteCertificatesSchema,
} from '@dt/protocol';
import type { Hal } from './hal.ts';
import { ShadowJournal } from './journal.ts';
import { blankState, CERT_MEMO_SIZE, decodeState, encodeState, NONCE_MEMORY, PIN_FIELD, type CardState, type Coin } from './state.ts';

/** Options of {@link Applet}. */
export interface AppletOptions {
  /**
   * Bound on the data of one (chained) command, in bytes. Default 65535, the
   * most a short-APDU chain carries by default; a SyncReceipt with many
   * tokens needs this much.
   */
  readonly maxCommandData?: number;
}

/** Error thrown by {@link Applet.process} after a storage failure until the next power-on. */
export class AppletHaltedError extends Error {
  /** Builds the error. */
  constructor() {
    super('applet halted after a storage failure: power it on again');
    this.name = 'AppletHaltedError';
  }
}

/** Error thrown by {@link Applet.process} when called while a previous command is still being processed. */
export class AppletBusyError extends Error {
  /** Builds the error. */
  constructor() {
    super('applet busy: one command at a time');
    this.name = 'AppletBusyError';
  }
}

/**
 * Error with which a command that was waiting (for `Hal.confirm`) when the
 * card was powered off and on again ends: its session is gone, so it neither
 * commits nor answers.
 */
export class AppletPowerLostError extends Error {
  /** Builds the error. */
  constructor() {
    super('power was lost while the command was waiting');
    this.name = 'AppletPowerLostError';
  }
}

/** Facts derived from the history (decoded once per state, not stored twice). */
interface HistoryEntry {
  readonly amount: number;
  readonly nonce: Uint8Array;
  readonly inputs: readonly Uint8Array[];
  readonly hash: Uint8Array;
}

/** Facts derived from the personalization data (certificates parsed once). */
interface Trust {
  readonly root: VerifiedCertificate;
  readonly ledger: VerifiedCertificate;
  readonly card: Certificate;
  /** Key id of the issuing bank: the `kid` header of the card certificate. */
  readonly bankKid: Uint8Array;
  readonly limits: NonNullable<Certificate['limits']>;
  readonly currency: number;
}

const EMPTY = new Uint8Array(0);

function fail(sw: number): never {
  throw new CardStatusError(sw);
}

/** Runs `f`; any DtError (bad encoding, bad signature, bad chain) becomes status word `sw`. */
function checked<T>(sw: number, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof DtError) fail(sw);
    throw e;
  }
}

function ok(data: Uint8Array = EMPTY): ResponseApdu {
  return { data, sw: SW.OK };
}

/** Right-pads a PIN to the stored field length so comparisons always cover the same length. */
function padPin(pin: Uint8Array): Uint8Array {
  const out = new Uint8Array(PIN_FIELD).fill(0xff);
  out.set(pin.subarray(0, PIN_FIELD));
  return out;
}

function isDigits(b: Uint8Array, min: number, max: number): boolean {
  if (b.length < min || b.length > max) return false;
  for (const c of b) if (c < 0x30 || c > 0x39) return false;
  return true;
}

function checkTime(c: Certificate, at: number): boolean {
  return c.nbf <= at && at <= c.exp;
}

/**
 * The card's memo of verified certificate signatures over the committed list `memo`
 * (SPEC §10.7 step 2): an entry is SHA-256(issuer key id || certificate bytes), so a
 * certificate that differs in any byte (a reissued or revoked-and-replaced one, another
 * signature) or names another issuer key is verified afresh. `next()` is the list to
 * commit: the entries this PAY used or added, most recent last, at most
 * {@link CERT_MEMO_SIZE}.
 */
function certificateMemo(memo: readonly Uint8Array[]): CertificateMemo & { next(): Uint8Array[] } {
  const used: Uint8Array[] = [];
  const entry = (issuerKid: Uint8Array, bytes: Uint8Array) => sha256(concatBytes(issuerKid, bytes));
  const use = (e: Uint8Array) => {
    if (!used.some((u) => bytesEqual(u, e))) used.push(e);
  };
  return {
    known(issuerKid, bytes) {
      const e = entry(issuerKid, bytes);
      // Public digests of public certificates: plain comparison is fine.
      const hit = memo.some((m) => bytesEqual(m, e));
      if (hit) use(e);
      return hit;
    },
    verified(issuerKid, bytes) {
      use(entry(issuerKid, bytes));
    },
    next() {
      const kept = memo.filter((m) => !used.some((u) => bytesEqual(u, m)));
      return [...kept, ...used].slice(-CERT_MEMO_SIZE);
    },
  };
}

/**
 * The wallet applet. Construct it over a {@link Hal}; it reads its state at
 * once (as {@link powerOn} does). Feed it raw command APDUs with
 * {@link process}; it answers raw response APDUs (data | SW1 SW2), doing
 * command chaining and GET RESPONSE itself.
 *
 * @example
 * const card = new Applet({ storage: new MemoryStorage(), random: (n) => crypto.getRandomValues(new Uint8Array(n)) });
 * const rsp = await card.process(encodeCommand(selectCommand())); // ... 90 00
 */
export class Applet {
  readonly #hal: Hal;
  readonly #options: AppletOptions;
  readonly #journal: ShadowJournal;
  #processor!: CardApduProcessor;
  // ---- persistent (mirrors the committed journal record)
  #state: CardState = blankState();
  #corrupt = false;
  // ---- derived from #state (recomputed on adopt)
  #history: HistoryEntry[] = [];
  #trust: Trust | undefined;
  #signer: Signer | undefined;
  #tokens: ReadonlyMap<string, { bytes: Uint8Array; expires: number | undefined; index: number }> | undefined;
  /** True until the first adoption after a power-on: nothing derived may be kept. */
  #fresh = true;
  // ---- volatile
  #selected = false;
  #pinVerified = false;
  #halted = false;
  #storageFailed = false;
  #busy = false;
  /** Incremented by every power-on: a command started in an earlier session must not continue. */
  #epoch = 0;
  /**
   * The last certified terminal key whose request this session verified, and, from its second
   * request on, that key prepared for verification (its multiples precomputed: see
   * `prepareKey`). RAM only, one key: lost at power-off, so a card powered by each tap's field
   * never builds it, and a device that stays powered (a hardware wallet, a card left in a
   * reader) verifies each further request at that terminal in about a third of the time.
   */
  #terminalSeen: Uint8Array | undefined;
  #terminalKey: PreparedKey | undefined;
  /** Set when preparing a key failed in this power session (out of memory): not tried again until power-on. */
  #prepareFailed = false;

  /** Creates the applet and powers it on. */
  constructor(hal: Hal, options: AppletOptions = {}) {
    this.#hal = hal;
    this.#options = options;
    // Every storage write goes through this wrapper so that a throwing write
    // (power cut) is recognised however deep in a handler it happens.
    const storage = hal.storage;
    this.#journal = new ShadowJournal({
      read: (slot) => storage.read(slot),
      write: (slot, data) => {
        try {
          storage.write(slot, data);
        } catch (e) {
          this.#storageFailed = true;
          throw e;
        }
      },
    });
    this.powerOn();
  }

  /**
   * Power-on reset: re-reads the committed state from storage and clears all
   * volatile state (selection, PIN-verified flag, pending command chain and
   * GET RESPONSE data).
   */
  powerOn(): void {
    this.#epoch++;
    this.#busy = false;
    this.#processor = new CardApduProcessor((cmd) => this.#dispatch(cmd), {
      maxData: this.#options.maxCommandData ?? DEFAULT_MAX_COMMAND_DATA,
    });
    this.#selected = false;
    this.#pinVerified = false;
    this.#halted = false;
    this.#storageFailed = false;
    this.#corrupt = false;
    this.#fresh = true;
    this.#terminalSeen = undefined;
    this.#terminalKey = undefined;
    this.#prepareFailed = false;
    const found = this.#journal.load();
    if (found.kind === 'corrupt') {
      this.#corrupt = true;
      this.#adopt(blankState());
      return;
    }
    if (found.kind === 'blank') {
      this.#adopt(blankState());
      return;
    }
    try {
      this.#adopt(decodeState(found.body));
    } catch {
      // An intact record that does not decode can only come from another
      // firmware version or a bug: refuse to work rather than guess.
      this.#corrupt = true;
      this.#adopt(blankState());
    }
  }

  /**
   * Processes one command APDU and returns the response APDU (data | SW1 SW2).
   *
   * @throws whatever `Storage.write` threw (a power cut); afterwards every call
   *   throws {@link AppletHaltedError} until {@link powerOn}.
   * @throws AppletBusyError when called before the previous call settled (a
   *   card processes one command at a time; only `Hal.confirm` can make a
   *   command wait).
   */
  async process(command: Uint8Array): Promise<Uint8Array> {
    if (this.#halted) throw new AppletHaltedError();
    if (this.#busy) throw new AppletBusyError();
    this.#busy = true;
    const epoch = this.#epoch;
    try {
      return await this.#processor.process(command);
    } catch (e) {
      if (e instanceof AppletPowerLostError) throw e;
      if (this.#storageFailed) {
        this.#halted = true;
        throw e;
      }
      // A bug, not a power cut: answer 6F00 and fall back to the committed
      // state (handlers never change RAM state before their commit).
      this.powerOn();
      return encodeResponse(EMPTY, SW.INTERNAL_ERROR);
    } finally {
      if (epoch === this.#epoch) this.#busy = false;
    }
  }

  /**
   * The key id of the terminal whose key is prepared for verification in RAM (see
   * `prepareKey`), or undefined: for tests and diagnostics (a public key id, nothing secret).
   */
  get preparedTerminal(): Uint8Array | undefined {
    return this.#terminalKey && this.#terminalSeen ? keyId(this.#terminalSeen) : undefined;
  }

  /**
   * A copy of the committed state, for hosts (state files, clone tools) and
   * tests. It contains the card's secret key and PIN: never log or display it.
   */
  get committedState(): CardState {
    return structuredCloneState(this.#state);
  }

  // ------------------------------------------------------------------ state

  /**
   * Makes `s` the RAM state and derives its facts. A handler builds the next state from the
   * current one without changing anything in place, so a member that is the very same object
   * (array, byte string) as in the current state holds the same bytes: its derived facts are
   * kept instead of parsed again (a PAY would otherwise re-parse the whole history, the
   * certificates and the tokens at every commit). `added`: the facts of history entries this
   * commit appends, when the handler has them already.
   */
  #adopt(s: CardState, added: readonly HistoryEntry[] = []): void {
    const before = this.#state;
    const beforeHistory = this.#history;
    const beforeTrust = this.#trust;
    const fresh = this.#fresh;
    this.#fresh = false;
    this.#state = s;
    let keep = 0;
    if (!fresh) while (keep < before.history.length && keep < s.history.length && before.history[keep] === s.history[keep]) keep++;
    const history = beforeHistory.slice(0, keep);
    for (let i = keep; i < s.history.length; i++) {
      const hint = added[i - before.history.length];
      if (i >= before.history.length && keep === before.history.length && hint) {
        history.push(hint);
        continue;
      }
      const { message, cose } = openSigned('Transfer', s.history[i]!);
      history.push({ amount: message.amount, nonce: message.nonce, inputs: message.inputs, hash: sha256(cose.payload) });
    }
    this.#history = history;
    if (fresh || s.tokens !== before.tokens) this.#tokens = undefined;
    if (fresh || s.secretKey !== before.secretKey || s.publicKey !== before.publicKey) {
      this.#signer = s.secretKey
        ? keyPairSigner({ secretKey: s.secretKey, publicKey: s.publicKey ?? publicKeyOf(s.secretKey) })
        : undefined;
    }
    if (!fresh && s.chain === before.chain && s.root === before.root && s.ledger === before.ledger) {
      this.#trust = beforeTrust;
      return;
    }
    this.#trust = undefined;
    if (s.chain && s.root && s.ledger) {
      // Verified when written (WRITE CERTIFICATES); the journal's hash protects
      // them since, so they are only parsed here.
      const root = openSigned('Certificate', s.root).message;
      const ledger = openSigned('Certificate', s.ledger).message;
      const cardCert = openSigned('Certificate', s.chain[0]!);
      const card = cardCert.message;
      this.#trust = {
        root: { bytes: s.root, claims: root, ...subjectKey(root) },
        ledger: { bytes: s.ledger, claims: ledger, ...subjectKey(ledger) },
        card,
        bankKid: cardCert.cose.kid,
        limits: card.limits!,
        currency: card.currency ?? CURRENCY_KZT,
      };
    }
  }

  /** Commits `next` durably, then makes it the RAM state (`added`: see {@link #adopt}). */
  #commit(next: CardState, added?: readonly HistoryEntry[]): void {
    this.#journal.commit(encodeState(next));
    this.#adopt(next, added);
  }

  /** Serial (hex) -> index, bytes and expiry of the card's tokens, parsed once per token list. */
  #tokenFacts(): ReadonlyMap<string, { bytes: Uint8Array; expires: number | undefined; index: number }> {
    if (!this.#tokens) {
      const m = new Map<string, { bytes: Uint8Array; expires: number | undefined; index: number }>();
      this.#state.tokens.forEach((t, index) => {
        const tok = openSigned('Token', t).message;
        m.set(toHex(tok.serial), { bytes: t, expires: tok.expires, index });
      });
      this.#tokens = m;
    }
    return this.#tokens;
  }

  #kid(): Uint8Array {
    return this.#signer!.kid;
  }

  #balance(): number {
    return sumAmounts(this.#state.coins.map((c) => c.value));
  }

  // ------------------------------------------------------------------ dispatch

  async #dispatch(cmd: CommandApdu): Promise<ResponseApdu> {
    if (this.#corrupt) fail(SW.INTERNAL_ERROR);
    if (cmd.cla === CLA.ISO) {
      if (cmd.ins === INS.SELECT) return this.#select(cmd);
      fail(SW.INS_NOT_SUPPORTED);
    }
    if (cmd.cla !== CLA.PROPRIETARY) fail(SW.CLA_NOT_SUPPORTED);
    const known = Object.values(INS) as number[];
    if (!known.includes(cmd.ins) || cmd.ins === INS.SELECT || cmd.ins === INS.GET_RESPONSE) fail(SW.INS_NOT_SUPPORTED);
    if (!this.#selected) fail(SW.COMMAND_NOT_ALLOWED);
    switch (cmd.ins) {
      case INS.GET_STATUS:
        this.#p1p2(cmd, 0);
        return this.#status();
      case INS.GET_CERTIFICATES:
        this.#p1p2(cmd, 0);
        if (!this.#state.chain) fail(SW.CONDITIONS_NOT_SATISFIED);
        return ok(encodeDeterministic(this.#state.chain));
      case INS.VERIFY_PIN:
        this.#p1p2(cmd, 0);
        return this.#verifyPin(cmd.data);
      case INS.CHANGE_PIN:
        this.#p1p2(cmd, 0);
        return this.#changePin(cmd.data);
      case INS.UNBLOCK_PIN:
        this.#p1p2(cmd, 0);
        return this.#unblockPin(cmd.data);
      case INS.PAY:
        this.#p1p2(cmd, 0);
        return this.#pay(cmd.data);
      case INS.PERSONALIZE:
        return this.#personalize(cmd);
      case INS.LOAD:
      case INS.SYNC:
        return this.#sync(cmd, cmd.ins === INS.LOAD);
      default:
        return fail(SW.INS_NOT_SUPPORTED);
    }
  }

  #p1p2(cmd: CommandApdu, p1: number): void {
    if (cmd.p1 !== p1 || cmd.p2 !== 0) fail(SW.INCORRECT_P1P2);
  }

  #select(cmd: CommandApdu): ResponseApdu {
    if (cmd.p1 !== SELECT_P1P2.P1_BY_NAME || cmd.p2 !== SELECT_P1P2.P2_FIRST) fail(SW.INCORRECT_P1P2);
    if (!cmd.data || !bytesEqual(cmd.data, DT_AID)) {
      this.#selected = false;
      this.#pinVerified = false;
      fail(SW.APP_NOT_FOUND);
    }
    // A new selection is a new session: nothing verified carries over.
    this.#selected = true;
    this.#pinVerified = false;
    let caps = Capability.PAY | Capability.SYNC | Capability.LOAD | Capability.OFFLINE_PIN | Capability.MARKS | Capability.RETRY;
    if (this.#hal.confirm) caps |= Capability.ON_DEVICE_CONFIRM;
    return ok(
      encodeFormat(SelectResponseSchema, {
        applet: APPLET_VERSION,
        protocol: PROTOCOL_VERSION,
        capabilities: caps,
        locked: this.#state.locked,
        maxCommand: this.#options.maxCommandData ?? DEFAULT_MAX_COMMAND_DATA,
        ...(this.#signer ? { card: this.#kid() } : {}),
      }),
    );
  }

  #status(): ResponseApdu {
    const s = this.#state;
    let personalized = 0;
    if (s.secretKey) personalized |= Personalized.KEY;
    if (s.chain) personalized |= Personalized.CERTIFICATES;
    if (s.pin) personalized |= Personalized.PIN;
    if (s.configured) personalized |= Personalized.CONFIG;
    const last = this.#history.length > 0 ? this.#history[this.#history.length - 1]! : undefined;
    return ok(
      encodeFormat(CardStatusSchema, {
        locked: s.locked,
        ...(this.#signer ? { card: this.#kid() } : {}),
        counter: s.counter,
        balance: this.#balance(),
        offlineValue: sumAmounts(this.#history.map((h) => h.amount)),
        offlineCount: this.#history.length,
        ...(this.#trust ? { limits: this.#trust.limits, currency: this.#trust.currency } : {}),
        pinTries: s.pinTries,
        pukTries: s.pukTries,
        pinVerified: this.#pinVerified,
        syncPending: s.pending !== undefined,
        floor: s.floor,
        coins: s.coins.length,
        personalized,
        ...(last ? { lastNonce: last.nonce } : {}),
        ...(s.chain && s.trusted !== undefined ? { trusted: s.trusted } : {}),
      }),
    );
  }

  // ------------------------------------------------------------------ personalization

  #personalize(cmd: CommandApdu): ResponseApdu {
    if (cmd.p2 !== 0) fail(SW.INCORRECT_P1P2);
    const known = Object.values(PERSONALIZE_P1) as number[];
    if (!known.includes(cmd.p1)) fail(SW.INCORRECT_P1P2);
    if (this.#state.locked) fail(SW.COMMAND_NOT_ALLOWED);
    const s = this.#state;
    const data = cmd.data ?? EMPTY;
    switch (cmd.p1) {
      case PERSONALIZE_P1.GENERATE_KEY: {
        if (data.length !== 0) fail(SW.WRONG_LENGTH);
        // The certificate binds the key: once written, the key may not change.
        if (s.chain) fail(SW.CONDITIONS_NOT_SATISFIED);
        const kp = generateKeyPair((n) => this.#hal.random(n));
        this.#commit({ ...s, secretKey: kp.secretKey, publicKey: kp.publicKey });
        return ok(kp.publicKey);
      }
      case PERSONALIZE_P1.WRITE_CERTIFICATES: {
        if (!s.secretKey || !s.publicKey) fail(SW.CONDITIONS_NOT_SATISFIED);
        const w = checked(SW.WRONG_DATA, () => decodeFormat(WriteCertificatesSchema, data, WRITE_CERTIFICATES_MAX_SIZE));
        const floor = Math.max(s.floor, w.time);
        checked(SW.WRONG_DATA, () => {
          const root = verifyRoot(w.root, floor);
          const [card] = verifyChain(w.chain, { root, at: floor, leafRole: Role.CARD });
          verifyChain([w.ledger], { root, at: floor, leafRole: Role.LEDGER });
          if (!bytesEqual(card!.publicKey, s.publicKey!)) throw new DtError(ErrorCode.KEY_MISMATCH, 'card certificate is for another key');
        });
        // Before the lock the floor holds only personalization times (PAY needs a locked
        // card), all from the issuing bank: they are the card's first trusted time.
        this.#commit({ ...s, chain: w.chain, root: w.root, ledger: w.ledger, floor, trusted: Math.max(s.trusted ?? 0, floor) });
        return ok();
      }
      case PERSONALIZE_P1.SET_PIN: {
        const p = checked(SW.WRONG_DATA, () => decodeFormat(SetPinSchema, data));
        if (!isDigits(p.pin, PIN_LENGTH.min, PIN_LENGTH.max) || !isDigits(p.puk, PUK_LENGTH.min, PUK_LENGTH.max)) fail(SW.WRONG_DATA);
        const pinMax = p.pinTries ?? DEFAULT_PIN_TRIES;
        const pukMax = p.pukTries ?? DEFAULT_PUK_TRIES;
        this.#commit({ ...s, pin: padPin(p.pin), puk: padPin(p.puk), pinMax, pinTries: pinMax, pukMax, pukTries: pukMax });
        return ok();
      }
      case PERSONALIZE_P1.SET_CONFIG: {
        const c = checked(SW.WRONG_DATA, () => decodeFormat(SetConfigSchema, data));
        const floor = Math.max(s.floor, c.floor ?? 0);
        this.#commit({
          ...s,
          floor,
          // The issuing bank's time, like WRITE CERTIFICATES (SPEC §10.8).
          ...(c.floor !== undefined ? { trusted: Math.max(s.trusted ?? 0, floor) } : {}),
          confirm: c.confirm ?? s.confirm,
          configured: true,
        });
        return ok();
      }
      default: {
        // LOCK
        if (data.length !== 0) fail(SW.WRONG_LENGTH);
        if (!s.secretKey || !s.chain || !s.pin) fail(SW.CONDITIONS_NOT_SATISFIED);
        this.#commit({ ...s, locked: true });
        return ok();
      }
    }
  }

  // ------------------------------------------------------------------ PIN

  /**
   * Checks `candidate` against the stored secret with the retry counter
   * decremented and committed BEFORE the comparison, so cutting the power
   * after a wrong guess cannot save a try. Returns true on a match (counter
   * restored, committed again).
   */
  #tryPin(kind: 'pin' | 'puk', candidate: Uint8Array): boolean {
    const s = this.#state;
    const tries = kind === 'pin' ? s.pinTries : s.pukTries;
    if (tries === 0) fail(SW.PIN_BLOCKED);
    const decremented: CardState = kind === 'pin' ? { ...s, pinTries: tries - 1 } : { ...s, pukTries: tries - 1 };
    this.#commit(decremented);
    const stored = kind === 'pin' ? s.pin! : s.puk!;
    const valid = candidate.length <= PIN_FIELD && constantTimeEqual(padPin(candidate), stored);
    if (!valid) return false;
    const restored: CardState = kind === 'pin' ? { ...this.#state, pinTries: s.pinMax } : { ...this.#state, pukTries: s.pukMax };
    this.#commit(restored);
    return true;
  }

  #requireLocked(): void {
    if (!this.#state.locked) fail(SW.CONDITIONS_NOT_SATISFIED);
  }

  #verifyPin(data: Uint8Array | undefined): ResponseApdu {
    this.#requireLocked();
    if (!data || data.length === 0) {
      // ISO/IEC 7816-4: VERIFY without data asks for the retry counter.
      if (this.#pinVerified) return ok();
      if (this.#state.pinTries === 0) fail(SW.PIN_BLOCKED);
      fail(SW.wrongPin(this.#state.pinTries));
    }
    if (!isDigits(data, PIN_LENGTH.min, PIN_LENGTH.max)) fail(SW.WRONG_DATA);
    this.#pinVerified = false;
    if (!this.#tryPin('pin', data)) fail(SW.wrongPin(this.#state.pinTries));
    this.#pinVerified = true;
    return ok();
  }

  #changePin(data: Uint8Array | undefined): ResponseApdu {
    this.#requireLocked();
    const c = checked(SW.WRONG_DATA, () => decodeFormat(ChangePinSchema, data ?? EMPTY));
    if (!isDigits(c.current, PIN_LENGTH.min, PIN_LENGTH.max) || !isDigits(c.next, PIN_LENGTH.min, PIN_LENGTH.max)) fail(SW.WRONG_DATA);
    this.#pinVerified = false;
    if (!this.#tryPin('pin', c.current)) fail(SW.wrongPin(this.#state.pinTries));
    this.#commit({ ...this.#state, pin: padPin(c.next) });
    return ok();
  }

  #unblockPin(data: Uint8Array | undefined): ResponseApdu {
    this.#requireLocked();
    const u = checked(SW.WRONG_DATA, () => decodeFormat(UnblockPinSchema, data ?? EMPTY));
    if (!isDigits(u.puk, PUK_LENGTH.min, PUK_LENGTH.max) || !isDigits(u.next, PIN_LENGTH.min, PIN_LENGTH.max)) fail(SW.WRONG_DATA);
    this.#pinVerified = false;
    if (!this.#tryPin('puk', u.puk)) fail(SW.wrongPin(this.#state.pukTries));
    const s = this.#state;
    this.#commit({ ...s, pin: padPin(u.next), pinTries: s.pinMax });
    return ok();
  }

  // ------------------------------------------------------------------ PAY

  /**
   * The verifier of a request signed by `terminalKey`, a key whose certificate chain has just
   * verified: the prepared key when it is that terminal's again (prepared at its second request
   * of this power session), else the reference verifier. Same answers either way.
   */
  #requestVerifier(terminalKey: Uint8Array): Verifier {
    if (this.#terminalKey?.isFor(terminalKey)) return preparedVerifier(this.#terminalKey);
    if (this.#terminalSeen !== undefined && bytesEqual(this.#terminalSeen, terminalKey)) {
      if (this.#prepareFailed) return nobleVerifier;
      try {
        this.#terminalKey = prepareKey(terminalKey);
      } catch {
        // The table did not fit (a device heap too small for its 520 points; in QuickJS the first
        // PAY's peak is larger, so `test/quickjs.test.ts` finds none): verify without it for the
        // rest of this power session rather than fail the payment or try again each time.
        this.#prepareFailed = true;
        return nobleVerifier;
      }
      return preparedVerifier(this.#terminalKey);
    }
    this.#terminalSeen = terminalKey.slice();
    this.#terminalKey = undefined;
    return nobleVerifier;
  }

  async #pay(data: Uint8Array | undefined): Promise<ResponseApdu> {
    this.#requireLocked();
    // The PIN verification is consumed by this PAY whatever its outcome.
    const pinVerified = this.#pinVerified;
    this.#pinVerified = false;
    const trust = this.#trust!;
    const s = this.#state;

    // 1. The request and the terminal: decode, verify the chain up to the
    //    pinned root (role TERMINAL under an ACQUIRING bank) and the signature.
    const { cose, message: req } = checked(SW.WRONG_DATA, () => openSigned('PaymentRequest', data ?? EMPTY));
    // The card has no trusted clock: it never checks validity before its floor.
    const at = Math.max(req.time, s.floor);
    const memo = certificateMemo(s.certMemo ?? []);
    const terminal = checked(SW.WRONG_DATA, () => {
      if (!checkTime(trust.root.claims, at)) throw new DtError(ErrorCode.CERT_EXPIRED, 'pinned root not valid at this time');
      const [leaf] = verifyChain(req.chain, { root: trust.root, at, leafRole: Role.TERMINAL, memo });
      verifyCoseSign1(cose, leaf!.publicKey, this.#requestVerifier(leaf!.publicKey));
      return leaf!;
    });
    const merchant = terminal.claims.merchant!;
    if (!bytesEqual(req.terminal, terminal.kid) || req.merchant !== merchant.id || req.mcc !== merchant.mcc) fail(SW.WRONG_DATA);

    // 1a. Time bound (SPEC §10.7 step 2a): the request time is the terminal's claim; the card
    //     signs nothing dated more than CARD_TIME_AHEAD after the last time its bank or the
    //     ledger gave it, so a certified terminal cannot move the card (and its floor) months
    //     ahead. No trusted time at all (cannot happen on a locked card) refuses everything.
    if (req.time > (s.trusted ?? 0) + CARD_TIME_AHEAD) fail(SW.CONDITIONS_NOT_SATISFIED);

    // 2. Torn-tap retry: the same handover again, nothing new signed.
    if (req.retryOf && s.last && bytesEqual(s.last.nonce, req.retryOf) && bytesEqual(s.last.payee, req.terminal)) {
      return ok(s.last.handover);
    }

    // 3. Conditions.
    if (s.pending) fail(SW.CONDITIONS_NOT_SATISFIED);
    const seen = s.nonces.some((n) => bytesEqual(n, req.nonce)) || this.#history.some((h) => bytesEqual(h.nonce, req.nonce));
    if (seen) fail(SW.DATA_INVALID);
    if (req.currency !== trust.currency) fail(SW.WRONG_DATA);
    if (!checkTime(trust.card, at)) fail(SW.CONDITIONS_NOT_SATISFIED);
    const limits = trust.limits;
    const spent = sumAmounts(this.#history.map((h) => h.amount));
    if (req.amount > limits.perPayment) fail(SW.CONDITIONS_NOT_SATISFIED);
    if (addAmounts(spent, req.amount) > limits.offlineTotal) fail(SW.CONDITIONS_NOT_SATISFIED);
    if (this.#history.length + 1 > Math.min(limits.offlineCount, LIMITS.maxHistory)) fail(SW.CONDITIONS_NOT_SATISFIED);
    // The one selection rule of the protocol (SPEC §10.7), shared with the reference wallet.
    const inputs = selectInputs(s.coins, req.amount, req.merchant, req.mcc, at);
    if (!inputs) fail(SW.CONDITIONS_NOT_SATISFIED);

    //    The handover will carry every token the chain's inputs come from, in
    //    order of first use along the chain (history, then this transfer).
    //    The card's tokens are those of its last receipt, in the receipt's order (SYNC COMPLETE
    //    keeps them together), so the handover names them by index in the receipt (SPEC §3.8).
    const tokenBySerial = this.#tokenFacts();
    const tokens: Uint8Array[] = [];
    const receiptTokens: number[] = [];
    const included = new Set<string>();
    for (const ids of [...this.#history.map((h) => h.inputs), inputs.map((c) => c.id)]) {
      for (const id of ids) {
        const k = toHex(id);
        const tok = tokenBySerial.get(k);
        if (!tok || included.has(k)) continue;
        // A verifier rejects a handover with any token expired at the
        // transfer time: refuse now (sync needed) rather than sign value away.
        if (tok.expires !== undefined && tok.expires < req.time) fail(SW.CONDITIONS_NOT_SATISFIED);
        included.add(k);
        if (s.receipt) receiptTokens.push(tok.index);
        else tokens.push(tok.bytes);
      }
    }

    // 4. Cardholder verification.
    let cvm: number = pinVerified ? Cvm.OFFLINE_PIN : Cvm.NONE;
    if (this.#hal.confirm && s.confirm === 1) {
      let approved = false;
      const epoch = this.#epoch;
      try {
        approved =
          (await this.#hal.confirm({ amount: req.amount, currency: req.currency, merchant: merchant.name, mcc: req.mcc })) === true;
      } catch {
        // A failing screen or button is no approval: fail closed.
      }
      // The holder may have pulled the card (or unplugged the wallet) meanwhile.
      if (epoch !== this.#epoch) throw new AppletPowerLostError();
      if (!approved) fail(SW.CONDITIONS_NOT_SATISFIED);
      if (cvm === Cvm.NONE) cvm = Cvm.ON_DEVICE;
    }
    if (req.amount > limits.cvmLimit && cvm === Cvm.NONE) fail(SW.SECURITY_NOT_SATISFIED);

    // 5. The transfer: payee output, then change (SPEC.md §7.3 "Transfer (PAY)").
    const total = sumAmounts(inputs.map((c) => c.value));
    const mark = inputs[0]!.mark;
    const pm = payeeMark(mark);
    const change = total - req.amount;
    const kid = this.#kid();
    const transfer: Transfer = {
      card: kid,
      counter: s.counter + 1,
      prev: s.prev,
      inputs: inputs.map((c) => c.id),
      outputs: [
        { value: req.amount, owner: req.terminal, ...(pm ? { mark: pm } : {}) },
        ...(change > 0 ? [{ value: change, owner: kid, ...(mark ? { mark } : {}) }] : []),
      ],
      amount: req.amount,
      currency: req.currency,
      payee: req.terminal,
      merchant: req.merchant,
      mcc: req.mcc,
      nonce: req.nonce,
      time: req.time,
      cvm,
    };
    // Encoded once: the same payload is signed and hashed.
    const payload = encodeMessage('Transfer', transfer);
    const signed = signEncoded('Transfer', payload, this.#signer!);
    const hash = sha256(payload);

    // 6. The handover. The issuing bank's certificate is left out when the terminal
    //    says it holds it (SPEC §3.6 `banks`, §3.8): the chain is then [card].
    //    The history up to the transfer the request's `held` names is left out too: the terminal
    //    holds it (SPEC §3.6 held, §3.8 after) and puts it back before it validates.
    const bankHeld = req.banks?.some((b) => bytesEqual(b, trust.bankKid)) ?? false;
    const heldAt = req.held ? this.#history.findIndex((h) => bytesEqual(h.hash, req.held!)) : -1;
    const handover = encodeMessage('Handover', {
      transfer: signed,
      chain: bankHeld ? [s.chain![0]!] : s.chain!,
      ...(tokens.length > 0 ? { tokens } : {}),
      history: heldAt >= 0 ? s.history.slice(heldAt + 1) : s.history,
      ...(s.receipt ? { receipt: s.receipt } : {}),
      ...(receiptTokens.length > 0 ? { receiptTokens } : {}),
      ...(heldAt >= 0 ? { after: req.held! } : {}),
    });

    // 7. Commit counter, chain, coins and the handover, THEN answer.
    const spentIds = new Set(inputs.map((c) => toHex(c.id)));
    const expiries = inputs.map((c) => c.expires).filter((e): e is number => e !== undefined);
    const coins = s.coins.filter((c) => !spentIds.has(toHex(c.id)));
    if (change > 0) {
      coins.push({
        id: outputId(hash, 1),
        value: change,
        ...(mark ? { mark } : {}),
        ...(expiries.length > 0 ? { expires: Math.min(...expiries) } : {}),
      });
    }
    this.#commit(
      {
        ...s,
        counter: transfer.counter,
        prev: hash,
        history: [...s.history, signed],
        coins,
        nonces: [...s.nonces, req.nonce].slice(-NONCE_MEMORY),
        last: { nonce: req.nonce, payee: req.terminal, handover },
        floor: Math.max(s.floor, req.time),
        certMemo: memo.next(),
      },
      [{ amount: transfer.amount, nonce: transfer.nonce, inputs: transfer.inputs, hash }],
    );
    return ok(handover);
  }

  // ------------------------------------------------------------------ SYNC / LOAD

  #sync(cmd: CommandApdu, load: boolean): ResponseApdu {
    if (cmd.p2 !== 0 || (cmd.p1 !== SYNC_P1.BEGIN && cmd.p1 !== SYNC_P1.COMPLETE)) fail(SW.INCORRECT_P1P2);
    this.#requireLocked();
    const s = this.#state;
    const data = cmd.data ?? EMPTY;
    if (cmd.p1 === SYNC_P1.BEGIN) {
      if (data.length !== SYNC_CHALLENGE_LENGTH) fail(SW.WRONG_LENGTH);
      // A repeated BEGIN answers the pending request: no second counter.
      if (s.pending) return ok(s.pending);
      const request = signMessage(
        'SyncRequest',
        {
          card: this.#kid(),
          counter: s.counter + 1,
          prev: s.prev,
          history: s.history,
          holdings: s.coins.map((c) => c.id),
          balance: this.#balance(),
          challenge: data,
        },
        this.#signer!,
      );
      this.#commit({ ...s, counter: s.counter + 1, pending: request });
      return ok(request);
    }

    // COMPLETE
    if (!s.pending) fail(SW.CONDITIONS_NOT_SATISFIED);
    const trust = this.#trust!;
    const pending = openSigned('SyncRequest', s.pending);
    const kid = this.#kid();
    const { cose, message: r } = checked(SW.WRONG_DATA, () => verifySigned('SyncReceipt', data, trust.ledger.publicKey));
    const at = Math.max(r.time, s.floor);
    if (!checkTime(trust.ledger.claims, at)) fail(SW.WRONG_DATA);
    if (!bytesEqual(r.card, kid) || r.counter !== pending.message.counter) fail(SW.WRONG_DATA);
    if (!bytesEqual(r.request, sha256(pending.cose.payload))) fail(SW.WRONG_DATA);
    if (load && r.loaded === 0) fail(SW.WRONG_DATA);
    // Voided orphans: the card knows the amount of those in the history this
    // request handed in. An orphan of an earlier chain (the void window ran out
    // after the sync that reported it) is no longer on the card, so its value
    // cannot be checked here; with such hashes the receipt may only give more,
    // never less, than the value the card can account for (SPEC §7.6).
    let voidedValue = 0;
    let unknownVoided = 0;
    const voided = new Set<string>();
    for (const v of r.voided) {
      if (voided.has(toHex(v))) fail(SW.WRONG_DATA);
      voided.add(toHex(v));
      const h = this.#history.find((e) => bytesEqual(e.hash, v));
      if (h) voidedValue = addAmounts(voidedValue, h.amount);
      else unknownVoided++;
    }
    const held = new Set(s.coins.map((c) => toHex(c.id)));
    const serials = new Set<string>();
    const coins: Coin[] = [];
    for (const t of r.tokens) {
      const token = checked(SW.WRONG_DATA, () => verifySigned('Token', t, trust.ledger.publicKey).message);
      const id = toHex(token.serial);
      if (!bytesEqual(token.owner, kid) || token.currency !== trust.currency) fail(SW.WRONG_DATA);
      if (token.expires !== undefined && token.expires < at) fail(SW.WRONG_DATA);
      if (held.has(id) || serials.has(id)) fail(SW.WRONG_DATA);
      serials.add(id);
      coins.push({
        id: token.serial,
        value: token.value,
        ...(token.mark ? { mark: token.mark } : {}),
        ...(token.expires !== undefined ? { expires: token.expires } : {}),
      });
    }
    // Merchant refunds the ledger credits (SPEC §7.7.3) come in too; `refunded` absent counts as 0.
    const expected = checked(SW.WRONG_DATA, () =>
      addAmounts(addAmounts(addAmounts(pending.message.balance, r.loaded), r.refunded ?? 0), voidedValue),
    );
    // Value redeemed to the issuing bank (revoked card, SPEC §7.6) leaves the card:
    // tokens + redeemed must match, so a redeemed above everything fails the check.
    const received = checked(SW.WRONG_DATA, () => addAmounts(sumAmounts(coins.map((c) => c.value)), r.redeemed ?? 0));
    if (unknownVoided === 0 ? received !== expected : received <= expected) fail(SW.WRONG_DATA);
    const { last: _last, pending: _pending, ...rest } = s;
    this.#commit({
      ...rest,
      coins,
      tokens: r.tokens,
      history: [],
      prev: sha256(cose.payload),
      receipt: data.slice(),
      floor: Math.max(s.floor, r.time),
      // The ledger's time, verified with its signature: the card's new trusted time (SPEC §10.8).
      trusted: Math.max(s.trusted ?? 0, r.time),
    });
    return ok();
  }
}

function structuredCloneState(s: CardState): CardState {
  return decodeState(encodeState(s));
}
