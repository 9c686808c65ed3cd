/**
 * File-system helpers the command-line tools share (Node only).
 *
 * @module
 */
import { chmodSync, closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * Creates `path` and its missing parents like `mkdirSync(path, { recursive: true, mode })` and
 * returns the first directory it created (undefined when `path` existed), but one level at a
 * time: Node's recursive mkdir loops forever under a file system that refuses to create and
 * also says the parent is missing (`/proc/x`), where this fails at once with the error of the
 * first directory that cannot be made (ENOENT, EACCES, ENOTDIR, EEXIST for a file, ...).
 */
export function makeDirs(path: string, mode?: number): string | undefined {
  const missing: string[] = [];
  for (let p = resolve(path); ; p = dirname(p)) {
    let isDir: boolean;
    try {
      isDir = statSync(p).isDirectory();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(p) === p) throw e;
      missing.push(p);
      continue;
    }
    if (!isDir) throw Object.assign(new Error(`EEXIST: file already exists, mkdir '${missing.at(-1) ?? p}'`), { code: 'EEXIST', path: p });
    break;
  }
  for (const p of missing.reverse()) {
    try {
      mkdirSync(p, mode === undefined ? {} : { mode });
    } catch (e) {
      // Made by someone else meanwhile: fine, as with recursive mkdir.
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(p).isDirectory()) throw e;
    }
  }
  return missing[0];
}

/**
 * Writes a file atomically and durably: a temporary file next to it (mode `mode`), fsync,
 * rename over `path`, fsync of the directory (where the file system allows it), so that after a
 * crash `path` holds either its old content or all of the new. Missing parents are created
 * ({@link makeDirs}). The temporary file is removed when anything fails.
 */
export function writeFileDurable(path: string, data: string | Uint8Array, mode = 0o644): void {
  const dir = dirname(resolve(path));
  makeDirs(dir);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, data, { mode });
    const fd = openSync(tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  chmodSync(path, mode);
  syncDir(dir);
}

/** fsyncs a directory so that a rename in it is durable (a file system that refuses it keeps the rename atomic all the same). */
export function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems refuse to fsync a directory.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
