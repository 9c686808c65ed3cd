/**
 * The card control channel: while `dt-card serve --vpcd --control <socket>`
 * serves a simulated card, a lab (the `dt-lab` robustness and endurance
 * suites) drives what a robot's hand and a fault injector would do to a real
 * card: take it out of the reader and put it back, arm and disarm faults,
 * read the faults that fired, and read the card's state out of band.
 *
 * Wire format: a Unix socket (mode 0600) speaking JSON lines. Each request is
 * one JSON object on one line (at most {@link MAX_CONTROL_LINE} bytes), each
 * answer one line:
 *
 * ```text
 * {"id":1,"command":"remove","reinsertAfterMs":500}   ->  {"id":1,"ok":true}
 * {"id":2,"command":"insert"}                         ->  {"id":2,"ok":true}
 * {"id":3,"command":"arm","plan":{"cutAfterApdu":{"ins":48}}}  ->  {"id":3,"ok":true}
 * {"id":4,"command":"disarm"}                         ->  {"id":4,"ok":true}
 * {"id":5,"command":"events"}                         ->  {"id":5,"ok":true,"events":[{"kind":"cut-after-apdu","where":"…"}]}
 * {"id":6,"command":"status"}                         ->  {"id":6,"ok":true,"status":{"readable":true,"personalized":true,"balance":…}}
 * garbage                                             ->  {"ok":false,"code":"BAD_JSON","message":"…"}
 * ```
 *
 * `id` is optional and echoed (the client uses it to match answers). Errors
 * carry a stable `code`: `BAD_JSON`, `LINE_TOO_LONG`, `BAD_REQUEST`,
 * `UNKNOWN_COMMAND`, `BAD_PLAN`, `NOT_CONNECTED`, `FAILED`. A bad request
 * never stops the server.
 *
 * `status` reads the card's committed memory the way `dt-card show` does (a
 * copy of it in a throw-away card: SELECT + GET STATUS), so it never sends an
 * APDU to the served card, works while the card is out of the reader, and
 * never returns keys, the PIN or the unblock code. A card whose committed
 * memory holds no intact record (it answers 6F00 to every command) is still a
 * status: `{"readable":false,"problem":UNREADABLE_CARD_STATE,"inReader":…}`,
 * no other field; the client's `status()` rejects it with
 * {@link CardControlError} `CARD_UNREADABLE` (it has no money fields to give).
 *
 * This package must not depend on `@dt/hardware-tests`: the client's shape
 * ({@link CardControlClient}) is the lab's `CardControl` interface, checked
 * structurally where the lab uses it.
 *
 * @module
 */

import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { MemoryStorage } from '@dt/firmware';
import { CardStatusError, FULLY_PERSONALIZED, SW, getStatus, selectApplet } from '@dt/protocol';
import { SimulatedCard } from './card.ts';
import { FaultInjector } from './faults.ts';
import type { ApduSelector, FaultEvent, FaultPlan } from './faults.ts';
import { InProcessTransport } from './inprocess.ts';

/** Longest request or answer line, in bytes (without the newline). */
export const MAX_CONTROL_LINE = 64 * 1024;

/** Longest `reinsertAfterMs` accepted (one hour): a removal meant to last longer is a `remove` without it. */
export const MAX_REINSERT_MS = 3_600_000;

/** The card's state as the control channel reports it (never key material, PIN or unblock code). */
export interface CardControlStatus {
  /** Fully personalized (key, certificates, PIN, config) and locked: ready to pay. */
  readonly personalized: boolean;
  /** Value on the card, in tiyn. */
  readonly balance: number;
  /** The card's transfer counter. */
  readonly counter: number;
  /** Offline value since the last sync, in tiyn. */
  readonly offlineTotal: number;
  /** Offline payments since the last sync. */
  readonly offlineCount: number;
  /** True while the card is in the reader (connected to the driver). */
  readonly inReader: boolean;
}

/**
 * Client of the control channel (see {@link connectCardControl}). Its
 * methods are exactly those of the lab's `CardControl`.
 */
export interface CardControlClient {
  /** Takes the card out of the reader; `reinsertAfterMs` puts it back after that long, otherwise it stays out until {@link insert}. */
  remove(reinsertAfterMs?: number): Promise<void>;
  /** Puts a removed card back into the reader; resolves once it is connected to the driver again. */
  insert(): Promise<void>;
  /** Arms a fault plan (each fault fires once, counted from now). */
  arm(plan: FaultPlan): Promise<void>;
  /** Clears the armed plan. */
  disarm(): Promise<void>;
  /** Faults that fired since the card was served. */
  events(): Promise<FaultEvent[]>;
  /** The card's state; rejects with {@link CardControlError} `CARD_UNREADABLE` when the card's state cannot be read (it answers 6F00). */
  status(): Promise<CardControlStatus>;
  /** Closes the connection to the control socket. */
  close(): Promise<void>;
}

/**
 * What holds the card in a reader: {@link VpcdClient} satisfies it.
 */
export interface CardHolder {
  /** Takes the card out (resolves once out). */
  remove(): Promise<void>;
  /** Puts it back (starts connecting). */
  insert(): void;
  /** Resolves once the card is connected to the reader again (rejects after `timeoutMs`). */
  waitConnected(timeoutMs?: number): Promise<void>;
  /** True while the card is in the reader. */
  readonly connected: boolean;
}

/** Options of {@link startCardControl}. */
export interface CardControlServerOptions {
  /** The served card (its fault injector is armed and read). */
  readonly card: SimulatedCard;
  /** What holds the card in the reader (the vpcd client). */
  readonly holder: CardHolder;
  /** The card's committed memory, slot by slot (e.g. from its {@link FileStorage}). */
  readonly snapshot: () => Map<number, Uint8Array>;
  /** How long `insert` waits for the reader connection (default 5000 ms). */
  readonly insertTimeoutMs?: number;
  /** Called for every request handled (for the serve log): command name and whether it succeeded. Never receives secrets. */
  readonly onCommand?: (command: string, ok: boolean, detail?: string) => void;
}

/** A running control server. */
export interface CardControlServer {
  /** Path of the socket. */
  readonly socketPath: string;
  /** Stops listening, disconnects clients and removes the socket file. Idempotent. */
  close(): Promise<void>;
}

/** A control request the server refused or could not carry out; `code` is the wire code. */
export class CardControlError extends Error {
  /** Stable code (see the module documentation). */
  readonly code: string;

  /** Builds the error. */
  constructor(code: string, message: string) {
    super(message);
    this.name = 'CardControlError';
    this.code = code;
  }
}

const PLAN_KEYS = new Set(['cutAtWrite', 'torn', 'cutBeforeApdu', 'cutAfterApdu', 'dropFrame', 'corruptFrame', 'delayMs', 'seed']);

/**
 * Reads a {@link FaultPlan} from untrusted JSON: only the plan's keys, each of
 * its type, then the simulator's own plan validation. The one fault-plan
 * parser: the `dt-card serve` fault flags go through it too. Throws
 * {@link CardControlError} `BAD_PLAN`.
 */
export function parseFaultPlan(json: unknown): FaultPlan {
  const bad = (message: string): never => {
    throw new CardControlError('BAD_PLAN', message);
  };
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return bad('plan must be a JSON object');
  const o = json as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!PLAN_KEYS.has(k)) bad(`unknown plan field ${JSON.stringify(k).slice(0, 64)}`);
  const num = (k: string): number | undefined => {
    const v = o[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'number') return bad(`${k} must be a number`);
    return v;
  };
  const selector = (k: string): ApduSelector | undefined => {
    const v = o[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad(`${k} must be an object {index?, ins?}`);
    const s = v as Record<string, unknown>;
    for (const sk of Object.keys(s)) if (sk !== 'index' && sk !== 'ins') bad(`unknown field ${JSON.stringify(sk).slice(0, 64)} in ${k}`);
    const out: ApduSelector = {};
    if (s.index !== undefined) out.index = typeof s.index === 'number' ? s.index : bad(`${k}.index must be a number`);
    if (s.ins !== undefined) out.ins = typeof s.ins === 'number' ? s.ins : bad(`${k}.ins must be a number`);
    return out;
  };
  const plan: FaultPlan = {};
  const cutAtWrite = num('cutAtWrite');
  if (cutAtWrite !== undefined) plan.cutAtWrite = cutAtWrite;
  if (o.torn !== undefined) {
    if (typeof o.torn !== 'boolean' && typeof o.torn !== 'number') bad('torn must be true, false or a byte count');
    plan.torn = o.torn as boolean | number;
  }
  const before = selector('cutBeforeApdu');
  if (before !== undefined) plan.cutBeforeApdu = before;
  const after = selector('cutAfterApdu');
  if (after !== undefined) plan.cutAfterApdu = after;
  const dropFrame = num('dropFrame');
  if (dropFrame !== undefined) plan.dropFrame = dropFrame;
  const corruptFrame = num('corruptFrame');
  if (corruptFrame !== undefined) plan.corruptFrame = corruptFrame;
  const delayMs = num('delayMs');
  if (delayMs !== undefined) plan.delayMs = delayMs;
  const seed = num('seed');
  if (seed !== undefined) plan.seed = seed;
  if (plan.torn !== undefined && plan.torn !== false && plan.cutAtWrite === undefined) bad('torn needs cutAtWrite');
  try {
    // The simulator's own validation: positive 1-based counts, bytes, delays.
    new FaultInjector(plan);
  } catch (e) {
    bad(e instanceof Error ? e.message : String(e));
  }
  return plan;
}

/**
 * What `dt-card` (show, personalize, load, the serve warning) and the control channel's `status` say of a card
 * whose storage holds no intact record it can decode (slots of random bytes, damage outside a commit).
 */
export const UNREADABLE_CARD_STATE = "the card's state is unreadable (its storage holds no intact record; the card answers 6F00)";

/** True for the applet's answer to every command when its storage holds no intact record it can decode: 6F00. */
export function isUnreadableCardAnswer(e: unknown): boolean {
  return e instanceof CardStatusError && e.sw === SW.INTERNAL_ERROR;
}

/**
 * The card's state read from a copy of its committed memory, the way
 * `dt-card show` reads a state file: a throw-away simulated card over the
 * copy answers SELECT and GET STATUS. Start-up recovery the applet may run
 * (after a torn write) writes into the copy only; the served card runs the
 * same recovery at its own next power-up.
 */
export async function readCardStatus(slots: Map<number, Uint8Array>): Promise<Omit<CardControlStatus, 'inReader'>> {
  const copy = new SimulatedCard({ storage: new MemoryStorage(slots) });
  const t = new InProcessTransport(copy);
  await selectApplet(t);
  const s = await getStatus(t);
  return {
    personalized: s.locked && (s.personalized & FULLY_PERSONALIZED) === FULLY_PERSONALIZED,
    balance: s.balance,
    counter: s.counter,
    offlineTotal: s.offlineValue,
    offlineCount: s.offlineCount,
  };
}

/**
 * True when the card of `slots` (its committed memory) cannot be read: SELECT on a throw-away card over a copy
 * answers 6F00 ({@link isUnreadableCardAnswer}). Other failures are thrown.
 */
export async function cardStateUnreadable(slots: Map<number, Uint8Array>): Promise<boolean> {
  try {
    await readCardStatus(slots);
    return false;
  } catch (e) {
    if (isUnreadableCardAnswer(e)) return true;
    throw e;
  }
}

/** Refuses a live socket at `path`; removes a stale one (a socket nobody accepts on). Never removes anything but a socket. */
async function clearStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) throw new Error(`control socket path ${path} exists and is not a socket: refusing to replace it`);
  const live = await new Promise<boolean>((resolve) => {
    const s = createConnection({ path });
    const timer = setTimeout(() => done(true), 2000);
    function done(v: boolean): void {
      clearTimeout(timer);
      s.removeAllListeners();
      s.on('error', () => undefined);
      s.destroy();
      resolve(v);
    }
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
  if (live) throw new Error(`control socket ${path} is in use (another dt-card serve --control is running)`);
  unlinkSync(path);
}

/**
 * Starts the control server on `socketPath` (mode 0600). Refuses a path where
 * a server already answers; replaces a stale socket left by a process that
 * died; never replaces a file that is not a socket.
 */
export async function startCardControl(socketPath: string, options: CardControlServerOptions): Promise<CardControlServer> {
  await clearStaleSocket(socketPath);
  const { card, holder, snapshot } = options;
  const insertTimeoutMs = options.insertTimeoutMs ?? 5000;
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const note = options.onCommand ?? (() => undefined);

  const insert = async (): Promise<void> => {
    holder.insert();
    try {
      await holder.waitConnected(insertTimeoutMs);
    } catch {
      throw new CardControlError(
        'NOT_CONNECTED',
        `the card is back in, but the reader driver did not accept it within ${insertTimeoutMs} ms (is pcscd running?); it keeps trying`,
      );
    }
  };

  const handle = async (req: Record<string, unknown>): Promise<Record<string, unknown>> => {
    const command = req.command;
    if (typeof command !== 'string') throw new CardControlError('BAD_REQUEST', 'request needs a "command" string');
    switch (command) {
      case 'remove': {
        const after = req.reinsertAfterMs;
        if (after !== undefined && (typeof after !== 'number' || !Number.isInteger(after) || after < 0 || after > MAX_REINSERT_MS)) {
          throw new CardControlError('BAD_REQUEST', `reinsertAfterMs must be an integer 0..${MAX_REINSERT_MS}`);
        }
        await holder.remove();
        if (after !== undefined) {
          const timer = setTimeout(() => {
            timers.delete(timer);
            holder.insert();
          }, after);
          timers.add(timer);
        }
        return {};
      }
      case 'insert':
        for (const t of timers) clearTimeout(t);
        timers.clear();
        await insert();
        return {};
      case 'arm':
        card.faults.arm(parseFaultPlan(req.plan));
        return {};
      case 'disarm':
        card.faults.disarm();
        return {};
      case 'events':
        return { events: card.faults.events.map((e) => ({ kind: e.kind, where: e.where })) };
      case 'status': {
        let status;
        try {
          status = await readCardStatus(snapshot());
        } catch (e) {
          // A damaged card is a legitimate lab subject: say what is wrong with it, not that the request failed.
          if (isUnreadableCardAnswer(e)) return { status: { readable: false, problem: UNREADABLE_CARD_STATE, inReader: holder.connected } };
          throw e;
        }
        return { status: { readable: true, ...status, inReader: holder.connected } };
      }
      default:
        throw new CardControlError(
          'UNKNOWN_COMMAND',
          `unknown command ${JSON.stringify(command).slice(0, 64)} (remove, insert, arm, disarm, events, status)`,
        );
    }
  };

  const answer = (socket: Socket, id: unknown, body: Record<string, unknown>): void => {
    if (socket.destroyed) return;
    const idField = typeof id === 'number' || typeof id === 'string' ? { id } : {};
    socket.write(JSON.stringify({ ...idField, ...body }) + '\n');
  };

  const onLine = async (socket: Socket, line: string): Promise<void> => {
    let req: unknown;
    try {
      req = JSON.parse(line);
    } catch {
      note('?', false, 'BAD_JSON');
      answer(socket, undefined, { ok: false, code: 'BAD_JSON', message: 'a request is one JSON object per line' });
      return;
    }
    if (typeof req !== 'object' || req === null || Array.isArray(req)) {
      answer(socket, undefined, { ok: false, code: 'BAD_REQUEST', message: 'a request is a JSON object' });
      return;
    }
    const r = req as Record<string, unknown>;
    const name = typeof r.command === 'string' ? r.command.slice(0, 32) : '?';
    try {
      const result = await handle(r);
      note(name, true);
      answer(socket, r.id, { ok: true, ...result });
    } catch (e) {
      const code = e instanceof CardControlError ? e.code : 'FAILED';
      const message = e instanceof Error ? e.message : String(e);
      note(name, false, code);
      answer(socket, r.id, { ok: false, code, message });
    }
  };

  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buffer = '';
    let discarding = false;
    // One request at a time per connection, answered in order.
    let queue: Promise<void> = Promise.resolve();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      for (;;) {
        const nl = buffer.indexOf('\n');
        if (nl < 0) break;
        const line = buffer.slice(0, nl).replace(/\r$/, '');
        buffer = buffer.slice(nl + 1);
        if (discarding) {
          // The end of an oversize line: already answered.
          discarding = false;
          continue;
        }
        if (Buffer.byteLength(line, 'utf8') > MAX_CONTROL_LINE) {
          note('?', false, 'LINE_TOO_LONG');
          queue = queue.then(() =>
            answer(socket, undefined, { ok: false, code: 'LINE_TOO_LONG', message: `a request line is at most ${MAX_CONTROL_LINE} bytes` }),
          );
          continue;
        }
        if (line.trim() === '') continue;
        queue = queue.then(() => onLine(socket, line));
      }
      if (!discarding && Buffer.byteLength(buffer, 'utf8') > MAX_CONTROL_LINE) {
        // Bounded memory: drop the oversize line now, answer once, skip to its newline.
        buffer = '';
        discarding = true;
        note('?', false, 'LINE_TOO_LONG');
        queue = queue.then(() =>
          answer(socket, undefined, { ok: false, code: 'LINE_TOO_LONG', message: `a request line is at most ${MAX_CONTROL_LINE} bytes` }),
        );
      } else if (discarding) buffer = '';
    });
  });

  // The socket is created with mode 0600 (umask), then chmod'ed in case the
  // file system ignores the umask for sockets: only the card's owner (root in
  // the lab) may pull the card or cut its power.
  let oldMask: number | undefined;
  try {
    oldMask = process.umask(0o177);
  } catch {
    // Worker threads cannot change the umask: the chmod below still applies.
  }
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    if (oldMask !== undefined) process.umask(oldMask);
  }
  chmodSync(socketPath, 0o600);

  let closed: Promise<void> | undefined;
  return {
    socketPath,
    close() {
      closed ??= (async () => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        for (const s of sockets) s.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        try {
          if (lstatSync(socketPath).isSocket()) unlinkSync(socketPath);
        } catch {
          // already removed
        }
      })();
      return closed;
    },
  };
}

/** Options of {@link connectCardControl}. */
export interface ConnectCardControlOptions {
  /** Time limit of each request, in ms (default 10 000). */
  readonly timeoutMs?: number;
  /** Time limit of the connection, in ms (default 5000). */
  readonly connectTimeoutMs?: number;
}

/**
 * Connects to the control socket of `dt-card serve --control <socketPath>`.
 * Every request has a time limit; a gone socket rejects pending and later
 * requests with a clear error.
 */
export async function connectCardControl(socketPath: string, options: ConnectCardControlOptions = {}): Promise<CardControlClient> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = createConnection({ path: socketPath });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`card control socket ${socketPath} did not accept within ${connectTimeoutMs} ms`));
    }, connectTimeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why =
        e.code === 'ENOENT'
          ? 'no such socket'
          : e.code === 'ECONNREFUSED'
            ? 'nobody listens on it (stale socket)'
            : e.code === 'EACCES'
              ? 'permission denied'
              : e.message;
      reject(
        new Error(
          `cannot reach the card control socket ${socketPath}: ${why} (is \`dt-card serve --vpcd --control ${socketPath}\` running?)`,
        ),
      );
    });
  });
  const pending = new Map<number, { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  let gone: Error | undefined;
  let nextId = 1;
  // A different id space per client keeps stray answers of another connection from matching.
  const base = randomBytes(2).readUInt16BE(0) * 1_000_000;
  let buffer = '';
  socket.setEncoding('utf8');
  const fail = (e: Error): void => {
    gone ??= e;
    for (const [, p] of pending) {
      clearTimeout(p.timer);
      p.reject(gone);
    }
    pending.clear();
  };
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    if (buffer.length > 4 * MAX_CONTROL_LINE) {
      fail(new Error('card control: answer line too long'));
      socket.destroy();
      return;
    }
    for (;;) {
      const nl = buffer.indexOf('\n');
      if (nl < 0) break;
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      const id = msg.id;
      if (typeof id !== 'number') continue;
      const p = pending.get(id);
      if (p === undefined) continue;
      pending.delete(id);
      clearTimeout(p.timer);
      p.resolve(msg);
    }
  });
  socket.on('error', (e) => fail(new Error(`card control socket ${socketPath}: ${e.message}`)));
  socket.on('close', () => fail(new Error(`card control socket ${socketPath} closed (did dt-card serve stop?)`)));

  const request = (command: string, fields: Record<string, unknown> = {}): Promise<Record<string, unknown>> => {
    if (gone) return Promise.reject(gone);
    const id = base + nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`card control: no answer to ${command} within ${timeoutMs} ms`));
      }, timeoutMs);
      pending.set(id, {
        timer,
        reject,
        resolve: (msg) => {
          if (msg.ok === true) resolve(msg);
          else
            reject(
              new CardControlError(
                typeof msg.code === 'string' ? msg.code : 'FAILED',
                `card control ${command}: ${typeof msg.message === 'string' ? msg.message : 'refused'}`,
              ),
            );
        },
      });
      socket.write(JSON.stringify({ id, command, ...fields }) + '\n');
    });
  };

  return {
    async remove(reinsertAfterMs?: number) {
      await request('remove', reinsertAfterMs === undefined ? {} : { reinsertAfterMs });
    },
    async insert() {
      await request('insert');
    },
    async arm(plan: FaultPlan) {
      await request('arm', { plan });
    },
    async disarm() {
      await request('disarm');
    },
    async events() {
      const r = await request('events');
      if (!Array.isArray(r.events)) throw new Error('card control: events answer without events');
      return r.events.map((e: unknown) => {
        const o = e as Record<string, unknown>;
        return { kind: String(o.kind) as FaultEvent['kind'], where: String(o.where) };
      });
    },
    async status() {
      const r = await request('status');
      const s = r.status as Record<string, unknown> | undefined;
      if (typeof s === 'object' && s !== null && s.readable === false)
        throw new CardControlError(
          'CARD_UNREADABLE',
          `card control status: ${typeof s.problem === 'string' ? s.problem : UNREADABLE_CARD_STATE}`,
        );
      const numbers = ['balance', 'counter', 'offlineTotal', 'offlineCount'] as const;
      if (
        typeof s !== 'object' ||
        s === null ||
        numbers.some((k) => typeof s[k] !== 'number') ||
        typeof s.personalized !== 'boolean' ||
        typeof s.inReader !== 'boolean'
      ) {
        throw new Error('card control: malformed status answer');
      }
      return {
        personalized: s.personalized as boolean,
        balance: s.balance as number,
        counter: s.counter as number,
        offlineTotal: s.offlineTotal as number,
        offlineCount: s.offlineCount as number,
        inReader: s.inReader as boolean,
      };
    },
    async close() {
      if (socket.destroyed) return;
      await new Promise<void>((resolve) => {
        socket.once('close', () => resolve());
        socket.end();
        // A server that does not hang up: do not wait forever.
        setTimeout(() => socket.destroy(), 1000).unref();
      });
    },
  };
}
