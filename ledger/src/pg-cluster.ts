/**
 * A throwaway PostgreSQL cluster for tests, benchmarks and local runs:
 * `initdb` + `pg_ctl` into a temp dir, listening only on a unix socket in that
 * dir (no TCP port, so parallel runs never collide). When running as root the
 * server runs as the `postgres` user (PostgreSQL refuses to run as root).
 *
 * @module
 */
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PostgresConfig } from './storage/postgres.ts';

/** Where Debian puts the server binaries. Override with `PG_BIN`. */
export const DEFAULT_PG_BIN = '/usr/lib/postgresql/15/bin';

/** A running throwaway cluster. */
export interface PgCluster {
  readonly dir: string;
  /** Connection settings for database `postgres` (use {@link createDatabase} for a fresh one). */
  readonly config: PostgresConfig;
  /** Creates a database and returns its connection settings. */
  createDatabase(name: string): PostgresConfig;
  /** Stops the server and deletes the directory. */
  stop(): void;
}

/** True when the PostgreSQL server binaries are installed. */
export function pgAvailable(bin = process.env.PG_BIN ?? DEFAULT_PG_BIN): boolean {
  return existsSync(join(bin, 'initdb')) && existsSync(join(bin, 'pg_ctl'));
}

/** Starts a throwaway cluster (synchronously; takes a few seconds). */
export function startPgCluster(opts: { bin?: string; fsync?: boolean } = {}): PgCluster {
  const bin = opts.bin ?? process.env.PG_BIN ?? DEFAULT_PG_BIN;
  const dir = mkdtempSync(join(tmpdir(), 'dt-pg-'));
  const asRoot = process.getuid?.() === 0;
  const run = (cmd: string, args: string[]) => {
    const full = join(bin, cmd);
    if (asRoot) execFileSync('runuser', ['-u', 'postgres', '--', full, ...args], { stdio: 'pipe' });
    else execFileSync(full, args, { stdio: 'pipe' });
  };
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    chownSync(dir, uid, gid);
    chmodSync(dir, 0o700);
  }
  const data = join(dir, 'data');
  const port = 5432; // only names the socket file inside `dir`: no TCP listener
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-instructions']);
  const serverOpts = [
    `-k ${dir}`,
    `-c listen_addresses=''`,
    `-p ${port}`,
    `-c fsync=${opts.fsync === false ? 'off' : 'on'}`,
    '-c max_connections=50',
  ].join(' ');
  run('pg_ctl', ['-D', data, '-w', '-t', '60', '-l', join(dir, 'server.log'), '-o', serverOpts, 'start']);
  const config: PostgresConfig = { host: dir, port, user: 'postgres', database: 'postgres' };
  let stopped = false;
  return {
    dir,
    config,
    createDatabase(name: string) {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error('database name must be a plain identifier');
      const psql = join(bin, 'psql');
      const args = [
        '-h',
        dir,
        '-p',
        String(port),
        '-U',
        'postgres',
        '-d',
        'postgres',
        '-v',
        'ON_ERROR_STOP=1',
        '-c',
        `CREATE DATABASE ${name}`,
      ];
      execFileSync(existsSync(psql) ? psql : 'psql', args, { stdio: 'pipe' });
      return { ...config, database: name };
    },
    stop() {
      if (stopped) return;
      stopped = true;
      try {
        run('pg_ctl', ['-D', data, '-w', '-m', 'immediate', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
