/**
 * Test harness: a private `pcscd` with the vpcd reader driver, for tests of
 * any package that need a real PC/SC stack.
 *
 * pcsc-lite 1.9 has its socket and pid file at fixed paths under
 * `/run/pcscd`, and refuses to start while another pcscd runs. To let tests
 * (and engineers, and a system pcscd) run side by side, each private daemon
 * runs in its own mount namespace (`unshare --mount`) with a temporary
 * directory bind-mounted over `/run/pcscd`. Clients find it through the
 * `PCSCLITE_CSOCK_NAME` environment variable, which libpcsclite reads, so
 * `nfc-pcsc`, `pcsc_scan` and `scriptor` all work against it. The vpcd driver
 * gets its own reader configuration (`pcscd -c <dir>`) with a free TCP port
 * instead of the fixed 35963 of `/etc/reader.conf.d/vpcd`.
 *
 * Needs root (mount namespaces, bind mounts) and the Debian packages
 * `pcscd` and `vsmartcard-vpcd`.
 *
 * Latency: Debian's vpcd (0.8) sends each command as two TCP writes (length,
 * then APDU) without TCP_NODELAY, and the card side's delayed ACK then costs
 * about 40 ms per APDU. The daemon is started with an LD_PRELOAD shim
 * (`card-applet-sim/native/vpcd-nodelay.c`, built by `npm run setup`) that
 * sets TCP_NODELAY on vpcd's sockets inside the real pcscd; the handle's
 * {@link PcscdHandle.vpcdNoDelay} says whether it is active (checked in the
 * daemon's `/proc/<pid>/maps`). Without the shim everything works, slower,
 * and a warning says why.
 *
 * @example
 * const pcscd = await startPcscd();
 * process.env.PCSCLITE_CSOCK_NAME = pcscd.socketPath; // before loading nfc-pcsc
 * const client = new VpcdClient(card, { port: pcscd.vpcdPort });
 * ...
 * await pcscd.stop();
 *
 * @module
 */

import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import {
  copyFileSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeDirs } from '@dt/protocol/fs';

/** Where Debian installs the vpcd reader driver. */
export const VPCD_DRIVER = '/usr/lib/pcsc/drivers/serial/libifdvpcd.so';

/**
 * The TCP_NODELAY shim for pcscd, as `npm run setup` builds it
 * (`card-applet-sim/native/build.sh`; never committed).
 */
export const VPCD_NODELAY_SHIM = fileURLToPath(new URL('../native/build/libdt-vpcd-nodelay.so', import.meta.url));

/** Whether vpcd's sockets in a private pcscd have TCP_NODELAY (see {@link VPCD_NODELAY_SHIM}). */
export interface VpcdNoDelay {
  /** True when the shim is mapped into the daemon (read from its `/proc/<pid>/maps`). */
  readonly active: boolean;
  /** Path of the shim the daemon was started with, if any. */
  readonly shim?: string;
  /** Why it is not active: disabled, not built, or not loaded. */
  readonly reason?: string;
}

/** Options of {@link startPcscd}. */
export interface StartPcscdOptions {
  /** TCP port of the first vpcd slot (slot 1 is port + 1); default: a free pair. */
  vpcdPort?: number;
  /** Time to wait for the daemon to be ready, in ms (default 15000). */
  timeoutMs?: number;
  /** Pass `-a` (log APDUs) and `-d` (debug) to pcscd; the log goes to `logPath`. */
  debug?: boolean;
  /**
   * Client socket path to serve, e.g. the `socketPath` of a daemon already
   * stopped: a pcscd restarted on the same path (libpcsclite reads
   * `PCSCLITE_CSOCK_NAME` once per process, so a client process can only
   * follow a restart there). Must end in `/pcscd.comm`; its directory is
   * created if missing, and what this call created is removed by `stop()`.
   * Default: a new temporary directory.
   */
  socketPath?: string;
  /**
   * The LD_PRELOAD shim that gives vpcd's sockets TCP_NODELAY (default
   * {@link VPCD_NODELAY_SHIM}); `false` starts pcscd without it (vpcd then
   * costs ~40 ms per APDU: for comparisons).
   */
  noDelayShim?: string | false;
}

/** A running private pcscd. */
export interface PcscdHandle {
  /** Path of its client socket: set `PCSCLITE_CSOCK_NAME` to this. */
  readonly socketPath: string;
  /** TCP port of vpcd slot 0 (reader "Virtual PCD 00 00"); slot 1 listens on port + 1. */
  readonly vpcdPort: number;
  /** Names of the two vpcd readers, as PC/SC lists them. */
  readonly readers: readonly [string, string];
  /** Environment for child processes (`pcsc_scan`, `scriptor`) that must use this daemon. */
  readonly env: NodeJS.ProcessEnv;
  /** pcscd's stdout/stderr log. */
  readonly logPath: string;
  /** Process id of the daemon. */
  readonly pid: number;
  /** Whether the TCP_NODELAY shim is active in the daemon (fast APDUs through vpcd). */
  readonly vpcdNoDelay: VpcdNoDelay;
  /** Stops the daemon and removes its temporary directory. */
  stop(): Promise<void>;
}

/** Why the harness cannot run here. */
export class PcscdUnavailableError extends Error {
  /** Stable code. */
  readonly code = 'PCSCD_UNAVAILABLE';

  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = 'PcscdUnavailableError';
  }
}

/**
 * Why {@link startPcscd} cannot work on this machine, or `undefined` when it
 * can: not root, or pcscd / the vpcd driver / unshare missing.
 */
export function pcscdUnavailableReason(): string | undefined {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root (mount namespace for a private pcscd)';
  for (const bin of ['pcscd', 'unshare', 'mount']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status !== 0) return `${bin} not installed`;
  }
  if (!existsSync(VPCD_DRIVER)) return `vpcd driver ${VPCD_DRIVER} not installed (Debian package vsmartcard-vpcd)`;
  return undefined;
}

/** Finds a TCP port p such that p and p + 1 are both free on all interfaces. */
export async function freePortPair(): Promise<number> {
  const listen = (port: number): Promise<{ port: number; close: () => Promise<void> } | undefined> =>
    new Promise((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(undefined));
      server.listen({ port, host: '0.0.0.0', exclusive: true }, () => {
        const addr = server.address();
        const p = typeof addr === 'object' && addr !== null ? addr.port : 0;
        resolve({ port: p, close: () => new Promise<void>((r) => server.close(() => r())) });
      });
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const a = await listen(0);
    if (a === undefined) continue;
    if (a.port >= 65535) {
      await a.close();
      continue;
    }
    const b = await listen(a.port + 1);
    await a.close();
    if (b !== undefined) {
      await b.close();
      return a.port;
    }
  }
  throw new Error('no free pair of TCP ports found');
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

async function waitFor(cond: () => boolean, timeoutMs: number, child: ChildProcess, what: string, logPath: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new PcscdUnavailableError(`pcscd exited (${child.exitCode ?? child.signalCode}) before ${what}; see ${logPath}`);
    }
    if (Date.now() > deadline) throw new PcscdUnavailableError(`pcscd: timed out waiting for ${what}; see ${logPath}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts a private pcscd with two vpcd readers on free TCP ports and waits
 * until it accepts clients and its vpcd ports listen.
 *
 * @throws PcscdUnavailableError when this machine cannot run it (see
 *   {@link pcscdUnavailableReason}) or the daemon does not come up.
 */
export async function startPcscd(options: StartPcscdOptions = {}): Promise<PcscdHandle> {
  const reason = pcscdUnavailableReason();
  if (reason !== undefined) throw new PcscdUnavailableError(`cannot start a private pcscd: ${reason}`);
  const vpcdPort = options.vpcdPort ?? (await freePortPair());
  const dir = mkdtempSync(join(tmpdir(), 'dt-pcscd-'));
  // pcscd always names its socket pcscd.comm inside the directory mounted over /run/pcscd.
  if (options.socketPath !== undefined && basename(options.socketPath) !== 'pcscd.comm') {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`startPcscd: socketPath must end in /pcscd.comm, got ${options.socketPath}`);
  }
  const runDir = options.socketPath !== undefined ? dirname(options.socketPath) : join(dir, 'run');
  const confDir = join(dir, 'reader.conf.d');
  // The topmost directory this call created for a given socketPath (undefined if it existed): stop() removes it.
  const createdRunDir = makeDirs(runDir);
  // A stale socket left by a killed daemon would look like readiness below.
  rmSync(join(runDir, 'pcscd.comm'), { force: true });
  mkdirSync(confDir);
  // DEVICENAME "/dev/null:<port>" makes vpcd listen for the card on <port>
  // (a host name instead of /dev/null would make it connect out).
  const hex = `0x${vpcdPort.toString(16).toUpperCase()}`;
  writeFileSync(
    join(confDir, 'vpcd'),
    `FRIENDLYNAME "Virtual PCD"\nDEVICENAME   /dev/null:${hex}\nLIBPATH      ${VPCD_DRIVER}\nCHANNELID    ${hex}\n`,
  );
  // The mount point must exist in the shared file system; the bind mount
  // itself stays inside the new namespace.
  makeDirs('/run/pcscd');
  const logPath = join(dir, 'pcscd.log');
  // pcscd writes its log straight into the file (no pipe through this process): the file exists
  // before pcscd starts, every line is in it as soon as pcscd writes it, and it outlives this process.
  const logFd = openSync(logPath, 'a', 0o600);
  const flags = ['--foreground', '-c', confDir, ...(options.debug ? ['--debug', '--apdu'] : [])];
  const shim = shimFor(options.noDelayShim, dir);
  // The shim goes into pcscd only (not unshare, sh or mount); its log lines land in pcscd's log.
  const preload = shim.path !== undefined ? `export LD_PRELOAD=${shellQuote(shim.path)} DT_VPCD_NODELAY_LOG=1 && ` : '';
  const script = `mount --bind ${shellQuote(runDir)} /run/pcscd && ${preload}exec pcscd ${flags.map(shellQuote).join(' ')}`;
  // unshare without --fork execs sh in the new namespace, and sh execs
  // pcscd: the child pid is the daemon's pid.
  const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  const socketPath = join(runDir, 'pcscd.comm');

  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
    if (options.socketPath !== undefined && createdRunDir !== undefined) rmSync(createdRunDir, { recursive: true, force: true });
  };

  try {
    await waitFor(() => existsSync(socketPath), options.timeoutMs ?? 15_000, child, 'its socket', logPath);
    await waitFor(
      () => portListening(vpcdPort) && portListening(vpcdPort + 1),
      options.timeoutMs ?? 15_000,
      child,
      'the vpcd ports',
      logPath,
    );
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  }
  const vpcdNoDelay = noDelayState(child.pid!, shim);
  if (!vpcdNoDelay.active && options.noDelayShim !== false) warnSlowVpcd(vpcdNoDelay.reason!);
  return {
    socketPath,
    vpcdPort,
    readers: ['Virtual PCD 00 00', 'Virtual PCD 00 01'],
    env: { ...process.env, PCSCLITE_CSOCK_NAME: socketPath },
    logPath,
    pid: child.pid!,
    vpcdNoDelay,
    stop,
  };
}

/** The shim to preload, or why there is none. */
function shimFor(option: string | false | undefined, dir: string): { path?: string; reason?: string } {
  if (option === false) return { reason: 'disabled (noDelayShim: false)' };
  const file = option ?? VPCD_NODELAY_SHIM;
  if (!existsSync(file)) {
    return {
      reason:
        option === undefined
          ? `shim not built: ${file} is missing (npm run setup builds it with card-applet-sim/native/build.sh)`
          : `shim ${file} not found`,
    };
  }
  // LD_PRELOAD splits its list on spaces and colons: a path with either goes through a copy.
  if (/[\s:]/.test(file)) {
    const copy = join(dir, basename(file).replace(/[\s:]/g, '_'));
    copyFileSync(file, copy);
    return { path: realpathSync(copy) };
  }
  return { path: realpathSync(file) };
}

/** Reads the daemon's memory map: the shim is active when the dynamic loader mapped it. */
function noDelayState(pid: number, shim: { path?: string; reason?: string }): VpcdNoDelay {
  if (shim.path === undefined) return { active: false, reason: shim.reason! };
  let maps: string;
  try {
    maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
  } catch (e) {
    return { active: false, shim: shim.path, reason: `cannot read /proc/${pid}/maps: ${(e as Error).message}` };
  }
  return maps.split('\n').some((line) => line.endsWith(` ${shim.path}`))
    ? { active: true, shim: shim.path }
    : { active: false, shim: shim.path, reason: `pcscd did not load ${shim.path} (see its log: the dynamic loader says why)` };
}

let warned = false;
/** Once per process: every APDU through vpcd will wait for a delayed ACK. */
function warnSlowVpcd(reason: string): void {
  if (warned) return;
  warned = true;
  process.stderr.write(
    `startPcscd: vpcd runs without TCP_NODELAY (${reason}): each APDU through the virtual reader costs about 40 ms more\n`,
  );
}

/** True when something listens on TCP `port` (from /proc/net/tcp, no connection made: vpcd takes one client only). */
function portListening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      // local_address is "IP:PORT" in hex; state 0A is LISTEN.
      if (cols.length > 3 && cols[1]!.endsWith(`:${hex}`) && cols[3] === '0A') return true;
    }
  }
  return false;
}
