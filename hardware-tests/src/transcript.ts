/**
 * APDU transcripts: the text format every lab case is saved in, its writer
 * and its strict, bounded parser.
 *
 * ```text
 * # dt-lab transcript v1
 * # tool: dt-lab 0.1.0
 * # suite: conformance
 * # case: select-dt-applet
 * # seq: 3
 * # reader: Virtual PCD 00 00
 * # atr: 3b88800144545741 4c4c455401
 * # time: 2026-11-23T14:00:00.000Z
 * => 00a404000af044545741 4c4c45540100
 * <= a5...9000
 * # 1.8 ms
 * => 8020000004********
 * <= 9000
 * => 803000000...
 * <= ~5a...6100
 * => 80ca0000
 * <=
 * # no answer: card left the field
 * ```
 *
 * - `# ` lines are comments. Before the first APDU, `# key: value` comments
 *   form the header (`suite`, `case`, `seq`, `reader`, `atr`, `time`, `tool`).
 *   `# <n> ms` after an answer is its round-trip time (informative).
 * - `# control: <json>` is something the lab did to a simulated card through
 *   its control channel (`dt-card serve --control`) at that point of the
 *   case, between two exchanges: `{"command":"arm","plan":{…}}` (a fault
 *   plan, with the `seed` of its randomness), `{"command":"disarm"}`,
 *   `{"command":"remove"}` (optionally `"reinsertAfterMs"`) and
 *   `{"command":"insert"}`. It is not a comment: replay does the same to the
 *   card before the next command, so that a case that cut the power or took
 *   the card away replays exactly (see replay.ts).
 * - `=> <hex>` is one command APDU exactly as sent (spaces between bytes are
 *   allowed). A byte written `**` is masked: it was a PIN or PUK digit, never
 *   written in clear (see {@link maskSecrets}).
 * - `<= <hex>` is the answer: data followed by SW1 SW2 (at least 2 bytes).
 *   `<= ~<hex>` marks an answer that is signed or random by nature (PAY,
 *   SYNC/LOAD BEGIN, GENERATE KEY and the GET RESPONSE pieces that continue
 *   them): replay against a live card compares it loosely (see replay.ts).
 *   `<=` with nothing after it means the command got no answer; the reason
 *   follows as `# no answer: <reason>`. A reason that starts with the
 *   reader's error code `CARD_REMOVED:` or `READER_UNAVAILABLE:` means the
 *   reader reported the card gone and the command did not reach the card;
 *   any other (e.g. an answer without a status word, as vpcd delivers a power
 *   cut) means it did.
 *
 * Every `=>` is followed by exactly one `<=` before the next `=>`.
 *
 * Bounds (a transcript is input like any other): an APDU holds at most
 * {@link MAX_APDU} bytes (the largest extended-length command), a line at
 * most {@link MAX_LINE} characters, a file at most {@link MAX_EXCHANGES}
 * exchanges and {@link MAX_FILE} bytes. Errors name the line.
 *
 * @module
 */
import { readFileSync, statSync } from 'node:fs';
import {
  SW,
  decodeMessage,
  fromHex,
  identifyCommand,
  isChainedBlock,
  isMoreData,
  mayCarrySecret,
  openSigned,
  parseCertificates,
  payloadHash,
  subjectKey,
  toHex,
  verifySigned,
  type CardCommandName,
} from '@dt/protocol';
import { parseFaultPlan, type FaultPlan } from '@dt/card-applet-sim';

/**
 * What the lab did to a simulated card through its control channel, as a
 * transcript records it (`# control: <json>`): only what changes the card.
 */
export type ControlEvent =
  | { readonly command: 'arm'; readonly plan: FaultPlan }
  | { readonly command: 'disarm' }
  | { readonly command: 'remove'; readonly reinsertAfterMs?: number }
  | { readonly command: 'insert' };

/** Reads a control event from untrusted JSON text; throws a plain Error saying what is wrong. */
export function parseControlEvent(text: string): ControlEvent {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    throw new Error('control event is not JSON');
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new Error('control event must be a JSON object');
  const o = j as Record<string, unknown>;
  const keys = Object.keys(o).sort().join(',');
  switch (o.command) {
    case 'arm':
      if (keys !== 'command,plan') throw new Error('arm takes exactly "plan"');
      return { command: 'arm', plan: parseFaultPlan(o.plan) };
    case 'disarm':
    case 'insert':
      if (keys !== 'command') throw new Error(`${o.command} takes no fields`);
      return { command: o.command };
    case 'remove':
      if (keys === 'command') return { command: 'remove' };
      if (
        keys !== 'command,reinsertAfterMs' ||
        typeof o.reinsertAfterMs !== 'number' ||
        !Number.isSafeInteger(o.reinsertAfterMs) ||
        o.reinsertAfterMs < 0
      ) {
        throw new Error('remove takes only "reinsertAfterMs", a non-negative integer');
      }
      return { command: 'remove', reinsertAfterMs: o.reinsertAfterMs };
    default:
      throw new Error('control command must be arm, disarm, remove or insert');
  }
}

/** First line of every transcript. */
export const TRANSCRIPT_MAGIC = '# dt-lab transcript v1';
/** Largest APDU a transcript may hold: an extended command (4 + 3 + 65535 + 2). */
export const MAX_APDU = 65_544;
/** Longest line: `<= ~` plus the hex of the largest APDU, with a margin for spaces. */
export const MAX_LINE = 4 + 2 * MAX_APDU + 1024;
/** Most exchanges in one transcript. */
export const MAX_EXCHANGES = 100_000;
/** Largest transcript file. */
export const MAX_FILE = 64 * 1024 * 1024;

/** One recorded command and its answer. */
export interface Exchange {
  /** The command as sent; masked bytes hold 0 here and are flagged in `mask`. */
  readonly command: Uint8Array;
  /** Per byte of `command`: 0 clear, {@link MASK_PIN} or {@link MASK_UNKNOWN}; present when any byte is masked. */
  readonly mask?: Uint8Array;
  /** The answer (data | SW1 SW2), or undefined when there was none. */
  readonly response?: Uint8Array;
  /** Why there was no answer. */
  readonly noAnswer?: string;
  /** The answer is signed or random by nature (`<= ~`). */
  readonly loose?: boolean;
  /** Round-trip time in milliseconds, when known. */
  readonly ms?: number;
  /** What the lab did to the card through its control channel right before this command. */
  readonly before?: readonly ControlEvent[];
}

/** A parsed exchange with the line numbers of its two lines (1-based). */
export interface ParsedExchange extends Exchange {
  readonly commandLine: number;
  readonly responseLine: number;
}

/** A parsed transcript. */
export interface Transcript {
  /** Header fields (`# key: value` before the first APDU). */
  readonly header: Readonly<Record<string, string>>;
  readonly exchanges: readonly ParsedExchange[];
  /** Control events after the last exchange (replay applies them too: the next case starts from there). */
  readonly after?: readonly ControlEvent[];
}

/** Header of a transcript as written. */
export interface TranscriptHeader {
  readonly tool: string;
  readonly suite: string;
  readonly case: string;
  readonly seq: number;
  readonly reader: string;
  readonly atr?: Uint8Array;
  readonly time: string;
}

/** A transcript that does not parse; `line` is 1-based (0: the file as a whole). */
export class TranscriptError extends Error {
  /** Builds the error. */
  constructor(
    readonly line: number,
    message: string,
    readonly file?: string,
  ) {
    super(`${file ? `${file}:` : ''}${line > 0 ? `${line}: ` : ' '}${message}`);
    this.name = 'TranscriptError';
  }
}

function hexLine(bytes: Uint8Array, mask?: Uint8Array): string {
  if (!mask) return toHex(bytes);
  let s = '';
  for (let i = 0; i < bytes.length; i++)
    s += mask[i] === MASK_PIN ? '**' : mask[i] === MASK_UNKNOWN ? '??' : bytes[i]!.toString(16).padStart(2, '0');
  return s;
}

/** Header values are single-line text: control characters would let a reader name forge lines. */
function clean(value: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are what it removes
  return value.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, 512);
}

/** Renders a transcript (header, exchanges, and the control events after the last one) as text. */
export function formatTranscript(header: TranscriptHeader, exchanges: readonly Exchange[], after: readonly ControlEvent[] = []): string {
  const lines = [
    TRANSCRIPT_MAGIC,
    `# tool: ${clean(header.tool)}`,
    `# suite: ${clean(header.suite)}`,
    `# case: ${clean(header.case)}`,
    `# seq: ${header.seq}`,
    `# reader: ${clean(header.reader)}`,
    ...(header.atr ? [`# atr: ${toHex(header.atr)}`] : []),
    `# time: ${clean(header.time)}`,
  ];
  const control = (e: ControlEvent): string => `# control: ${JSON.stringify(e)}`;
  for (const x of exchanges) {
    for (const e of x.before ?? []) lines.push(control(e));
    lines.push(`=> ${hexLine(x.command, x.mask)}`);
    if (x.response === undefined) {
      lines.push('<=');
      lines.push(`# no answer: ${clean(x.noAnswer ?? 'unknown')}`);
    } else {
      lines.push(`<= ${x.loose ? '~' : ''}${toHex(x.response)}`);
    }
    if (x.ms !== undefined) lines.push(`# ${x.ms.toFixed(1)} ms`);
  }
  for (const e of after) lines.push(control(e));
  return lines.join('\n') + '\n';
}

function parseHex(text: string, line: number, allowMask: boolean, file?: string): { bytes: Uint8Array; mask?: Uint8Array } {
  const compact = text.replace(/[ \t]+/g, '');
  if (compact.length % 2 !== 0) throw new TranscriptError(line, 'odd number of hex digits', file);
  const n = compact.length / 2;
  if (n > MAX_APDU) throw new TranscriptError(line, `APDU of ${n} bytes exceeds ${MAX_APDU}`, file);
  if (!allowMask || !/[*?]/.test(compact)) {
    if (!/^[0-9a-fA-F]*$/.test(compact)) throw new TranscriptError(line, 'not hex', file);
    return { bytes: fromHex(compact.toLowerCase()) };
  }
  const bytes = new Uint8Array(n);
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const pair = compact.slice(2 * i, 2 * i + 2);
    if (pair === '**') mask[i] = MASK_PIN;
    else if (pair === '??') mask[i] = MASK_UNKNOWN;
    else if (/^[0-9a-fA-F]{2}$/.test(pair)) bytes[i] = Number.parseInt(pair, 16);
    else throw new TranscriptError(line, `not hex, ** or ?? at byte ${i}`, file);
  }
  return { bytes, mask };
}

/**
 * Parses a transcript, strictly: unknown line kinds, a `<=` without its
 * `=>`, a `=>` without its `<=`, odd hex, oversize lines or APDUs are errors
 * with the line number.
 */
export function parseTranscript(text: string, file?: string): Transcript {
  if (text.length > MAX_FILE) throw new TranscriptError(0, `transcript larger than ${MAX_FILE} bytes`, file);
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const header: Record<string, string> = {};
  const exchanges: ParsedExchange[] = [];
  let pending: { command: Uint8Array; mask?: Uint8Array; before?: ControlEvent[]; line: number } | undefined;
  let last: { index: number } | undefined;
  let seenApdu = false;
  let expectNoAnswerReason = false;
  let events: ControlEvent[] = [];
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const raw = lines[i]!.replace(/\r$/, '');
    if (raw.length > MAX_LINE) throw new TranscriptError(n, `line longer than ${MAX_LINE} characters`, file);
    const line = raw.trimEnd();
    if (i === 0 && line !== TRANSCRIPT_MAGIC)
      throw new TranscriptError(1, `not a dt-lab transcript (first line must be "${TRANSCRIPT_MAGIC}")`, file);
    if (line === '') continue;
    if (line.startsWith('#')) {
      const body = line.slice(1).trim();
      if (expectNoAnswerReason && /^no answer:/.test(body)) {
        const idx = last!.index;
        exchanges[idx] = { ...exchanges[idx]!, noAnswer: body.slice('no answer:'.length).trim() };
        expectNoAnswerReason = false;
        continue;
      }
      if (body.startsWith('control:')) {
        if (events.length >= MAX_EXCHANGES) throw new TranscriptError(n, `more than ${MAX_EXCHANGES} control events in a row`, file);
        try {
          events.push(parseControlEvent(body.slice('control:'.length).trim()));
        } catch (e) {
          throw new TranscriptError(n, (e as Error).message, file);
        }
        expectNoAnswerReason = false;
        continue;
      }
      const ms = /^(\d+(?:\.\d+)?) ms$/.exec(body);
      if (ms && last) {
        exchanges[last.index] = { ...exchanges[last.index]!, ms: Number(ms[1]) };
        continue;
      }
      const kv = /^([a-z][a-z0-9-]*): ?(.*)$/.exec(body);
      if (kv && !seenApdu && !(kv[1]! in header)) header[kv[1]!] = kv[2]!;
      continue;
    }
    expectNoAnswerReason = false;
    if (line.startsWith('=>')) {
      if (pending) throw new TranscriptError(n, `command without an answer (the command of line ${pending.line} has no "<=" line)`, file);
      if (exchanges.length >= MAX_EXCHANGES) throw new TranscriptError(n, `more than ${MAX_EXCHANGES} exchanges`, file);
      const { bytes, mask } = parseHex(line.slice(2), n, true, file);
      if (bytes.length === 0) throw new TranscriptError(n, 'empty command', file);
      pending = { command: bytes, ...(mask ? { mask } : {}), ...(events.length ? { before: events } : {}), line: n };
      events = [];
      seenApdu = true;
      continue;
    }
    if (line.startsWith('<=')) {
      if (!pending) throw new TranscriptError(n, 'answer without a command ("<=" must follow a "=>" line)', file);
      let rest = line.slice(2).trim();
      const loose = rest.startsWith('~');
      if (loose) rest = rest.slice(1).trim();
      const base = {
        command: pending.command,
        ...(pending.mask ? { mask: pending.mask } : {}),
        ...(pending.before ? { before: pending.before } : {}),
        commandLine: pending.line,
        responseLine: n,
      };
      if (rest === '') {
        if (loose) throw new TranscriptError(n, '"~" needs an answer', file);
        exchanges.push({ ...base, noAnswer: 'no answer' });
        expectNoAnswerReason = true;
      } else {
        const { bytes } = parseHex(rest, n, false, file);
        if (bytes.length < 2) throw new TranscriptError(n, 'an answer holds at least SW1 SW2', file);
        exchanges.push({ ...base, response: bytes, ...(loose ? { loose: true } : {}) });
      }
      last = { index: exchanges.length - 1 };
      pending = undefined;
      continue;
    }
    throw new TranscriptError(n, `unknown line (expected "# ", "=> " or "<= "): ${line.slice(0, 40)}`, file);
  }
  if (pending) throw new TranscriptError(pending.line, 'command without an answer at the end of the transcript', file);
  return { header, exchanges, ...(events.length ? { after: events } : {}) };
}

/** Reads and parses a transcript file (size checked before reading). */
export function readTranscript(path: string): Transcript {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (e) {
    throw new TranscriptError(0, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, path);
  }
  if (size > MAX_FILE) throw new TranscriptError(0, `transcript larger than ${MAX_FILE} bytes`, path);
  return parseTranscript(readFileSync(path, 'utf8'), path);
}

// ------------------------------------------------------------------ masking

/**
 * True when `apdu` is a command whose data may hold a PIN or PUK (VERIFY,
 * CHANGE, UNBLOCK PIN, PERSONALIZE SET PIN, whatever their CLA and P2): the
 * protocol's {@link mayCarrySecret}.
 */
export function carriesPin(apdu: Uint8Array): boolean {
  return mayCarrySecret(apdu);
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = from; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Mask value of a byte of the `--pin` secret (written `**`; replay puts `--pin` back). */
export const MASK_PIN = 1;
/** Mask value of a byte of a possible secret the lab does not know (written `??`; never replayable). */
export const MASK_UNKNOWN = 2;

/**
 * The mask of a command before it is written to a transcript. Rule (the lab
 * guide states it): in the data field (after the 5-byte header) of VERIFY PIN,
 * CHANGE PIN, UNBLOCK PIN and PERSONALIZE SET PIN,
 *
 * - every occurrence of a secret the lab knows (`secrets`: the `--pin`
 *   digits) is masked as `**`, so that replay can put it back from `--pin`;
 * - every other run of 4 to 16 ASCII digits (the shape of a PIN or PUK) is
 *   masked as `??` unless it is one of `publicValues` (wrong PINs the lab made
 *   up itself: random digits unrelated to the real PIN, kept in clear so
 *   that the cases using them replay byte for byte).
 *
 * Returns undefined when nothing is masked.
 */
export function maskSecrets(
  apdu: Uint8Array,
  secrets: readonly Uint8Array[],
  publicValues: readonly Uint8Array[] = [],
): Uint8Array | undefined {
  if (!carriesPin(apdu) || apdu.length <= 5) return undefined;
  const mask = new Uint8Array(apdu.length);
  let any = false;
  for (const s of secrets) {
    if (s.length === 0) continue;
    let at = indexOf(apdu, s, 5);
    while (at >= 0) {
      for (let i = at; i < at + s.length; i++) mask[i] = MASK_PIN;
      any = true;
      at = indexOf(apdu, s, at + s.length);
    }
  }
  const isDigit = (b: number): boolean => b >= 0x30 && b <= 0x39;
  let i = 5;
  while (i < apdu.length) {
    if (!isDigit(apdu[i]!) || mask[i]) {
      i++;
      continue;
    }
    let j = i;
    while (j < apdu.length && isDigit(apdu[j]!) && !mask[j]) j++;
    const run = apdu.subarray(i, j);
    if (run.length >= 4 && run.length <= 16 && !publicValues.some((p) => p.length === run.length && indexOf(run, p, 0) === 0)) {
      for (let k = i; k < j; k++) mask[k] = MASK_UNKNOWN;
      any = true;
    }
    i = j;
  }
  return any ? mask : undefined;
}

/**
 * Rebuilds a masked command with `pin`: each maximal run of masked bytes must
 * be exactly as long as the PIN and is filled with its digits. Returns
 * undefined when that cannot be done (no PIN, or a run of another length:
 * the command held a secret that was not `--pin`).
 */
export function unmask(command: Uint8Array, mask: Uint8Array, pin: Uint8Array | undefined): Uint8Array | undefined {
  if (!pin || pin.length === 0) return undefined;
  const out = command.slice();
  let i = 0;
  while (i < mask.length) {
    if (!mask[i]) {
      i++;
      continue;
    }
    if (mask[i] !== MASK_PIN) return undefined;
    let j = i;
    while (j < mask.length && mask[j] === MASK_PIN) j++;
    if (j - i !== pin.length) return undefined;
    out.set(pin, i);
    i = j;
  }
  return out;
}

// ------------------------------------------------------------------ accounting

/** A transfer the card signed, as seen in a transcript. */
export interface SignedTransfer {
  /** Nonce of the transfer (hex): the same transfer handed over again (torn-tap retry) has the same nonce. */
  readonly nonce: string;
  /** Payload hash of the transfer (hex): what a SyncReceipt's `voided` names. */
  readonly hash: string;
  readonly amount: number;
  readonly counter: number;
}

/** What the transcripts show about value leaving (and coming back to) the card. */
export interface CardMoney {
  /** Every transfer the card signed (distinct by nonce). */
  readonly transfers: readonly SignedTransfer[];
  /** Payload hashes (hex) the ledger voided in receipts the card accepted (the value came back). */
  readonly voided: readonly string[];
}

/**
 * Opens a transfer and checks the card's signature on it with one of the
 * card keys seen in the run (`keys`: kid hex -> public key). A copy damaged
 * on the way (a flipped byte: the robustness suite does that on purpose)
 * does not verify and is not counted: only what the card really signed is.
 */
function transferOf(signed: Uint8Array, keys: ReadonlyMap<string, Uint8Array>): SignedTransfer | undefined {
  const { message } = openSigned('Transfer', signed);
  const key = keys.get(toHex(message.card));
  if (key === undefined) return undefined;
  const { cose } = verifySigned('Transfer', signed, key);
  return { nonce: toHex(message.nonce), hash: toHex(payloadHash(cose)), amount: message.amount, counter: message.counter };
}

/** The card key a certificate certifies (kid hex and public key), or undefined when it does not decode. */
function certifiedKey(cert: Uint8Array | undefined): [string, Uint8Array] | undefined {
  if (cert === undefined) return undefined;
  try {
    const { publicKey, kid } = subjectKey(openSigned('Certificate', cert).message);
    return [toHex(kid), publicKey];
  } catch {
    return undefined;
  }
}

/**
 * Reassembles commands and answers: for each command that completes (the
 * last block of a chain), its whole data, and its whole answer when it
 * came back complete (61xx pieces gathered through GET RESPONSE).
 */
function* completedCommands(
  exchanges: readonly Exchange[],
): Generator<{ name: CardCommandName | undefined; data: Uint8Array; sw: number; answer: Uint8Array }> {
  let chain: Uint8Array[] = [];
  let pending: { name: CardCommandName | undefined; data: Uint8Array; parts: Uint8Array[] } | undefined;
  for (const x of exchanges) {
    const c = x.command;
    const r = x.response;
    if (identifyCommand(c) === 'GET_RESPONSE' && pending && r && r.length >= 2) {
      pending.parts.push(r.subarray(0, r.length - 2));
      const sw = (r[r.length - 2]! << 8) | r[r.length - 1]!;
      if (isMoreData(sw)) continue;
      yield { name: pending.name, data: pending.data, sw, answer: Uint8Array.from(Buffer.concat(pending.parts)) };
      pending = undefined;
      continue;
    }
    pending = undefined;
    if (c.length < 4) {
      chain = [];
      continue;
    }
    const lc = c.length > 5 && c[4]! > 0 && c.length >= 5 + c[4]! ? c[4]! : 0;
    const data = c.subarray(5, 5 + lc);
    if (isChainedBlock(c)) {
      chain.push(data);
      continue;
    }
    const whole = Uint8Array.from(Buffer.concat([...chain, data]));
    chain = [];
    if (!r || r.length < 2) continue;
    const sw = (r[r.length - 2]! << 8) | r[r.length - 1]!;
    const name = identifyCommand(c);
    if (isMoreData(sw)) {
      pending = { name, data: whole, parts: [r.subarray(0, r.length - 2)] };
      continue;
    }
    yield { name, data: whole, sw, answer: r.subarray(0, r.length - 2) };
  }
}

/**
 * The money the card moved, read from exchanges: transfers from the
 * Handovers of PAY commands answered 9000 and from the histories of the
 * SyncRequests it answered to SYNC/LOAD BEGIN (so a transfer whose
 * handover was lost or damaged is still counted once the card syncs), and
 * the hashes voided by the SyncReceipts it accepted (SYNC/LOAD COMPLETE
 * answered 9000). Value that left the card = sum over distinct transfers
 * minus those voided. A transfer counts only when the card's signature on
 * it verifies (key from the certificates the card presented in the run):
 * a copy damaged on the way is not the card's. Data that does not decode
 * is ignored (the suites check it).
 */
export function moneyIn(exchanges: readonly Exchange[], keys: Map<string, Uint8Array> = new Map()): CardMoney {
  // Commands the card completed (9000), named by the protocol's command table.
  const completed = [...completedCommands(exchanges)].filter((k) => k.sw === SW.OK);
  // The card keys (`keys`, by key id, extended here; pass one map through a whole run): the
  // leaf of each handover's chain and of GET CERTIFICATES answers. A damaged certificate
  // yields another key with another id, which no transfer names.
  for (const k of completed) {
    try {
      const leaf =
        k.name === 'PAY'
          ? decodeMessage('Handover', k.answer).chain[0]
          : k.name === 'GET_CERTIFICATES'
            ? parseCertificates(k.answer, 64 * 1024)[0]
            : undefined;
      const ck = certifiedKey(leaf);
      if (ck) keys.set(ck[0], ck[1]);
    } catch {
      // does not decode: no key from it
    }
  }
  const transfers = new Map<string, SignedTransfer>();
  const voided = new Set<string>();
  const add = (signed: Uint8Array): void => {
    try {
      const t = transferOf(signed, keys);
      if (t && !transfers.has(t.nonce)) transfers.set(t.nonce, t);
    } catch {
      // not a transfer, or not the card's signature (damaged on the way)
    }
  };
  for (const k of completed) {
    try {
      if (k.name === 'PAY') add(decodeMessage('Handover', k.answer).transfer);
      else if (k.name === 'SYNC_BEGIN' || k.name === 'LOAD_BEGIN')
        for (const h of openSigned('SyncRequest', k.answer).message.history) add(h);
      else if (k.name === 'SYNC_COMPLETE' || k.name === 'LOAD_COMPLETE')
        for (const v of openSigned('SyncReceipt', k.data).message.voided) voided.add(toHex(v));
    } catch {
      // does not decode: nothing to account
    }
  }
  return { transfers: [...transfers.values()], voided: [...voided] };
}

/** Transfers the card signed in `exchanges` (see {@link moneyIn}). */
export function transfersIn(exchanges: readonly Exchange[], keys?: Map<string, Uint8Array>): SignedTransfer[] {
  return [...moneyIn(exchanges, keys).transfers];
}

/** Value that left the card according to `money`: distinct transfers not voided. */
export function valueOut(money: CardMoney): { transfers: number; value: number; voided: number; voidedValue: number } {
  const v = new Set(money.voided);
  let value = 0;
  let voidedValue = 0;
  let voidedCount = 0;
  for (const t of money.transfers) {
    value += t.amount;
    if (v.has(t.hash)) {
      voidedValue += t.amount;
      voidedCount++;
    }
  }
  return { transfers: money.transfers.length, value, voided: voidedCount, voidedValue };
}
