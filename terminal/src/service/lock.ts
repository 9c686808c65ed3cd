/**
 * One process per terminal data directory: the lock file `dt-pos.lock`.
 *
 * The lock is a file holding the owner's pid, created atomically: the pid is written and
 * fsynced into a private temporary file, which is then hard-linked to `dt-pos.lock`
 * (`link` fails when the name exists, so of two processes exactly one gets it). A lock whose
 * pid is no longer alive (a crashed `dt-pos serve`, a power cut) is stale: it is moved aside
 * with an atomic `rename` and taken, and the mover checks that what it moved was the stale
 * lock (a live owner's lock moved by mistake is put back and the directory is reported busy).
 *
 * `dt-pos serve` holds it for its whole life; `dt-pos charge` holds it for one payment, so a
 * charge and a service never share the journal.
 *
 * @module
 */
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { TerminalError, TerminalErrorCode } from '../errors.ts';

/** File name of the lock in the data directory. */
export const LOCK_FILE = 'dt-pos.lock';

/** A held lock. */
export interface DataDirLock {
  readonly path: string;
  /** Removes the lock file if it is still ours. Idempotent. */
  release(): void;
}

/** True when a process with this pid exists (EPERM: it exists, owned by someone else). */
export function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(path: string): number | undefined {
  try {
    const text = readFileSync(path, 'utf8').trim();
    return /^\d{1,10}$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

function writeTemp(path: string): void {
  const fd = openSync(path, 'wx', 0o644);
  try {
    writeSync(fd, `${process.pid}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Takes the lock of `dataDir` or throws a {@link TerminalError} `LOCKED` naming the owner's pid.
 * `what` names the taker in the message (e.g. `dt-pos serve`).
 */
export function lockDataDir(dataDir: string): DataDirLock {
  const path = join(dataDir, LOCK_FILE);
  const temp = join(dataDir, `${LOCK_FILE}.${process.pid}`);
  try {
    unlinkSync(temp);
  } catch {
    // not there: the normal case
  }
  writeTemp(temp);
  try {
    for (let round = 0; round < 3; round++) {
      try {
        linkSync(temp, path);
        let released = false;
        return {
          path,
          release() {
            if (released) return;
            released = true;
            if (readPid(path) === process.pid) unlinkSync(path);
          },
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const owner = readPid(path);
      if (owner !== undefined && owner !== process.pid && pidAlive(owner)) throw busy(path, owner);
      // Stale (dead pid, or an unreadable half-written file of a crash): move it aside atomically.
      const aside = join(dataDir, `${LOCK_FILE}.stale.${process.pid}`);
      try {
        renameSync(path, aside);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // someone else moved it: try again
        throw e;
      }
      const moved = readPid(aside);
      if (moved !== undefined && moved !== owner && pidAlive(moved)) {
        // A live process took it between our read and our rename: give it back.
        try {
          linkSync(aside, path);
        } finally {
          unlinkSync(aside);
        }
        throw busy(path, moved);
      }
      unlinkSync(aside);
    }
    throw busy(path, readPid(path));
  } finally {
    unlinkSync(temp);
  }
}

function busy(path: string, pid: number | undefined): TerminalError {
  return new TerminalError(
    TerminalErrorCode.LOCKED,
    `the data directory is in use by another dt-pos process${pid === undefined ? '' : ` (pid ${pid})`}: ${path}`,
    { path, ...(pid === undefined ? {} : { pid }) },
  );
}
