/**
 * The simulated card's persistent memory in a file.
 *
 * The file is JSON with the slots as base64 (it holds the card's secret key
 * inside the applet's slots, so it is created with mode 0600 and its content
 * is never printed). Every {@link FileStorage.write} rewrites the whole file
 * atomically with `writeFileDurable` (`@dt/protocol/fs`): write a temporary
 * file, fsync it, rename it over the state file, fsync the directory. One slot write is therefore one durable file
 * write, which makes a power cut between two slot writes realistic: the file
 * always holds exactly the writes that completed, like an EEPROM.
 *
 * ```json
 * { "format": "dt-card-sim", "version": 1, "label": "alice",
 *   "created": "2026-11-23T11:00:00.000Z", "writes": 17,
 *   "slots": { "0": "base64…", "1": "base64…" } }
 * ```
 *
 * @module
 */

import { readFileSync, unlinkSync, existsSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import type { Storage } from '@dt/firmware';
import { writeFileDurable } from '@dt/protocol/fs';

/** Format tag of the state file. */
export const STATE_FORMAT = 'dt-card-sim';
/** Version of the state file layout. */
export const STATE_VERSION = 1;
/** Largest state file accepted when opening (bounds what a corrupt or hostile file can make us allocate). */
export const MAX_STATE_FILE = 4 * 1024 * 1024;
/** Largest single slot accepted. */
export const MAX_SLOT_SIZE = 512 * 1024;
/** Highest slot number accepted. */
export const MAX_SLOT = 0xffff;

/** Error opening or writing a state file; `code` is stable. */
export class StateFileError extends Error {
  /** `STATE_EXISTS`, `STATE_MISSING`, `STATE_INVALID`, `STATE_LOCKED`. */
  readonly code: 'STATE_EXISTS' | 'STATE_MISSING' | 'STATE_INVALID' | 'STATE_LOCKED';

  /** Builds the error. */
  constructor(code: StateFileError['code'], message: string) {
    super(message);
    this.name = 'StateFileError';
    this.code = code;
  }
}

/** Descriptive metadata kept next to the slots (never secret). */
export interface StateMeta {
  /** Free-form name of the card, e.g. the cardholder in a demo. */
  label: string;
  /** ISO 8601 creation time of the file. */
  created: string;
  /** Set on files made by `clone`: the file this one was copied from. */
  clonedFrom?: string;
}

interface StateFileJson {
  format: string;
  version: number;
  label: string;
  created: string;
  clonedFrom?: string;
  writes: number;
  slots: Record<string, string>;
}

/**
 * A {@link Storage} backed by one state file, durable per write.
 *
 * Use {@link FileStorage.create} for a new card and {@link FileStorage.open}
 * for an existing one. A process holds an exclusive lock file
 * (`<path>.lock`, containing its pid) while the storage is open, so two
 * processes never drive the same card file; call {@link close} to release it.
 */
export class FileStorage implements Storage {
  readonly #path: string;
  #slots: Map<number, Uint8Array>;
  #meta: StateMeta;
  #writes: number;
  #locked: boolean;

  private constructor(path: string, slots: Map<number, Uint8Array>, meta: StateMeta, writes: number, locked: boolean) {
    this.#path = path;
    this.#slots = slots;
    this.#meta = meta;
    this.#writes = writes;
    this.#locked = locked;
  }

  /**
   * Creates a new, empty state file (a blank card). Fails if the file exists.
   *
   * @throws StateFileError STATE_EXISTS.
   */
  static create(path: string, meta: Partial<StateMeta> = {}, options: { lock?: boolean } = {}): FileStorage {
    if (existsSync(path)) throw new StateFileError('STATE_EXISTS', `state file ${path} already exists`);
    const full: StateMeta = { label: meta.label ?? basename(path), created: meta.created ?? new Date().toISOString() };
    if (meta.clonedFrom !== undefined) full.clonedFrom = meta.clonedFrom;
    const lock = options.lock ?? true;
    if (lock) acquireLock(path);
    const storage = new FileStorage(path, new Map(), full, 0, lock);
    storage.#persist(storage.#slots, 0);
    return storage;
  }

  /**
   * Opens an existing state file and takes its lock (unless `lock: false`,
   * for read-only inspection where the caller never writes).
   *
   * @throws StateFileError STATE_MISSING, STATE_INVALID, STATE_LOCKED.
   */
  static open(path: string, options: { lock?: boolean } = {}): FileStorage {
    const { slots, meta, writes } = readStateFile(path);
    const lock = options.lock ?? true;
    if (lock) acquireLock(path);
    return new FileStorage(path, slots, meta, writes, lock);
  }

  /** Path of the state file. */
  get path(): string {
    return this.#path;
  }

  /** The file's metadata. */
  get meta(): Readonly<StateMeta> {
    return this.#meta;
  }

  /** Number of slot writes this file has seen since it was created. */
  get writeCount(): number {
    return this.#writes;
  }

  /** Slot numbers that hold data. */
  get slotNumbers(): number[] {
    return [...this.#slots.keys()].sort((a, b) => a - b);
  }

  /** Reads a slot (a copy); `undefined` when never written. */
  read(slot: number): Uint8Array | undefined {
    const data = this.#slots.get(slot);
    return data === undefined ? undefined : data.slice();
  }

  /**
   * Writes a slot durably: returns only after the new file is on disk and
   * renamed into place. If the process dies before the rename, the file keeps
   * the previous state, exactly as if the write never started.
   */
  write(slot: number, data: Uint8Array): void {
    checkSlot(slot);
    if (data.length > MAX_SLOT_SIZE) throw new RangeError(`slot data of ${data.length} bytes exceeds ${MAX_SLOT_SIZE}`);
    const next = new Map(this.#slots);
    next.set(slot, data.slice());
    this.#persist(next, this.#writes + 1);
    this.#slots = next;
    this.#writes++;
  }

  /** Releases the lock file. Further writes are refused. */
  close(): void {
    if (this.#locked) {
      releaseLock(this.#path);
      this.#locked = false;
    }
  }

  #persist(slots: Map<number, Uint8Array>, writes: number): void {
    const json: StateFileJson = {
      format: STATE_FORMAT,
      version: STATE_VERSION,
      label: this.#meta.label,
      created: this.#meta.created,
      writes,
      slots: {},
    };
    if (this.#meta.clonedFrom !== undefined) json.clonedFrom = this.#meta.clonedFrom;
    for (const [k, v] of [...slots.entries()].sort((a, b) => a[0] - b[0])) json.slots[String(k)] = Buffer.from(v).toString('base64');
    // It holds the card's secret key: mode 0600.
    writeFileDurable(this.#path, JSON.stringify(json, null, 1) + '\n', 0o600);
  }
}

/**
 * Parses and validates a state file.
 *
 * @throws StateFileError STATE_MISSING or STATE_INVALID.
 */
export function readStateFile(path: string): { slots: Map<number, Uint8Array>; meta: StateMeta; writes: number } {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR')
      throw new StateFileError('STATE_MISSING', `no state file at ${path} (create one with: dt-card create ${path})`);
    // A path that names no readable file (a directory, no permission) is, to its reader, no state file either.
    if (code === 'EISDIR') throw new StateFileError('STATE_MISSING', `no state file at ${path}: it is a directory`);
    if (code === 'EACCES') throw new StateFileError('STATE_MISSING', `state file ${path} cannot be read: permission denied`);
    throw e;
  }
  if (raw.length > MAX_STATE_FILE) throw new StateFileError('STATE_INVALID', `state file ${path} is larger than ${MAX_STATE_FILE} bytes`);
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new StateFileError('STATE_INVALID', `state file ${path} is not valid JSON`);
  }
  const bad = (why: string): never => {
    throw new StateFileError('STATE_INVALID', `state file ${path}: ${why}`);
  };
  if (typeof json !== 'object' || json === null) return bad('not an object');
  const j = json as Partial<StateFileJson>;
  if (j.format !== STATE_FORMAT) bad(`format is not ${STATE_FORMAT}`);
  if (j.version !== STATE_VERSION) bad(`unsupported version ${String(j.version)}`);
  if (typeof j.label !== 'string' || typeof j.created !== 'string') bad('label/created missing');
  if (typeof j.writes !== 'number' || !Number.isInteger(j.writes) || j.writes < 0) bad('writes is not a count');
  if (typeof j.slots !== 'object' || j.slots === null || Array.isArray(j.slots)) bad('slots is not an object');
  if (j.clonedFrom !== undefined && typeof j.clonedFrom !== 'string') bad('clonedFrom is not a string');
  const slots = new Map<number, Uint8Array>();
  for (const [k, v] of Object.entries(j.slots as Record<string, unknown>)) {
    const n = Number(k);
    if (!/^(0|[1-9][0-9]*)$/.test(k) || n > MAX_SLOT) bad(`slot key ${k} is not a slot number`);
    if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) bad(`slot ${k} is not base64`);
    const bytes = new Uint8Array(Buffer.from(v as string, 'base64'));
    if (bytes.length > MAX_SLOT_SIZE) bad(`slot ${k} is larger than ${MAX_SLOT_SIZE} bytes`);
    slots.set(n, bytes);
  }
  const meta: StateMeta = { label: j.label as string, created: j.created as string };
  if (j.clonedFrom !== undefined) meta.clonedFrom = j.clonedFrom;
  return { slots, meta, writes: j.writes as number };
}

function checkSlot(slot: number): void {
  if (!Number.isInteger(slot) || slot < 0 || slot > MAX_SLOT) throw new RangeError(`slot ${slot} outside 0..${MAX_SLOT}`);
}

function lockPath(path: string): string {
  return `${path}.lock`;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function acquireLock(path: string): void {
  const lp = lockPath(path);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(lp, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let pid: number;
      try {
        pid = Number.parseInt(readFileSync(lp, 'utf8'), 10);
      } catch {
        // Lock vanished between our attempt and the read: try again.
        continue;
      }
      if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) {
        throw new StateFileError('STATE_LOCKED', `card ${path} is in use by process ${pid}`);
      }
      // A stale lock of a process that died (e.g. a killed `dt-card serve`).
      try {
        unlinkSync(lp);
      } catch {
        // Someone else removed it first.
      }
    }
  }
  throw new StateFileError('STATE_LOCKED', `could not lock ${path}`);
}

function releaseLock(path: string): void {
  try {
    const pid = Number.parseInt(readFileSync(lockPath(path), 'utf8'), 10);
    if (pid === process.pid) unlinkSync(lockPath(path));
  } catch {
    // Already gone: nothing to release.
  }
}
