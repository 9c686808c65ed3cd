/**
 * Helpers for the `dt-pos serve` tests: a private pcscd (vpcd), the real ledger and acquirer,
 * a terminal data directory initialized by `dt-pos init --dev`, a firmware card in a
 * `dt-card` state file served to pcscd by `dt-card serve --vpcd` (a process), and
 * `dt-pos serve` as a process with an ECR client.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemoryStorage } from '@dt/firmware';
import { FileStorage, InProcessTransport, SimulatedCard, startPcscd, type PcscdHandle } from '@dt/card-applet-sim';
import { selectApplet, toHex } from '@dt/protocol';
import { readCardState } from '../../src/index.ts';
import { startWorld, worldCard, type World } from './world.ts';

export const DT_POS = fileURLToPath(new URL('../../bin/dt-pos.js', import.meta.url));
export const DT_CARD = fileURLToPath(new URL('../../../card-applet-sim/bin/dt-card.js', import.meta.url));

/** A finished process. */
export interface Done {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `dt-pos` to its end (a hang detector kills it after `killAfterMs`). */
export function dtPos(args: string[], env: NodeJS.ProcessEnv, killAfterMs = 60_000): Promise<Done> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [DT_POS, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), killAfterMs);
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Every card `serveCard` started that has not exited yet (see {@link stopServedCards}). */
const servedCards = new Set<() => Promise<void>>();

/**
 * Stops every card `serveCard` started that still runs. For `test.after.always`: a test that
 * failed half-way leaves its card served, and the card's pipes would keep the test worker
 * alive until ava's timeout.
 */
export async function stopServedCards(): Promise<void> {
  await Promise.all([...servedCards].map((stop) => stop()));
}

/** `dt-card serve --vpcd` (or `--serial <path>`) as a process; resolves once it is connected to the reader (serving on the port). */
export function serveCard(args: string[], env: NodeJS.ProcessEnv): Promise<{ stop: () => Promise<void> }> {
  return new Promise((ready, fail) => {
    const proc = spawn(process.execPath, [DT_CARD, 'serve', '--json', '--exit-with-parent', ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    let up = false;
    const exited = new Promise<void>((r) => proc.on('close', () => r()));
    const stop = async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    };
    servedCards.add(stop);
    void exited.then(() => servedCards.delete(stop));
    proc.stdout.on('data', (d: Buffer) => {
      log += d.toString();
      if (!up && /"event":"connected"|"event":"serving","transport":"serial"/.test(log)) {
        up = true;
        ready({ stop });
      }
    });
    proc.stderr.on('data', (d: Buffer) => (log += d.toString()));
    proc.on('close', (c) => {
      if (!up) fail(new Error(`dt-card serve exited ${c}:\n${log}`));
    });
  });
}

/** One JSON line `dt-pos serve --json` printed. */
export type ServeLine = { event: string } & Record<string, unknown>;

/** A running `dt-pos serve`. */
export interface Serve {
  readonly proc: ChildProcess;
  readonly url: string;
  readonly lines: ServeLine[];
  /** Resolves with the first line from index `from` on (seen so far or later) that matches. */
  waitLine(pred: (l: ServeLine) => boolean, what: string, from?: number): Promise<ServeLine>;
  /** Resolves when the process has exited. */
  readonly exited: Promise<Done>;
}

/** Starts `dt-pos serve --json --port 0` and waits for its `listening` line. */
export function startServe(dataDir: string, env: NodeJS.ProcessEnv, more: string[] = []): Promise<Serve> {
  return new Promise((ready, fail) => {
    const proc = spawn(process.execPath, [DT_POS, '--data-dir', dataDir, '--json', 'serve', '--port', '0', ...more], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: ServeLine[] = [];
    const waiters: { pred: (l: ServeLine) => boolean; resolve: (l: ServeLine) => void }[] = [];
    let stdout = '';
    let stderr = '';
    let partial = '';
    let up = false;
    // A hang detector, not a timing assertion.
    const timer = setTimeout(() => proc.kill('SIGKILL'), 300_000);
    const exited = new Promise<Done>((r) =>
      proc.on('exit', (code, signal) => {
        clearTimeout(timer);
        r({ code, signal, stdout, stderr });
      }),
    );
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      partial += d.toString();
      let at: number;
      while ((at = partial.indexOf('\n')) >= 0) {
        const text = partial.slice(0, at);
        partial = partial.slice(at + 1);
        let line: ServeLine;
        try {
          line = JSON.parse(text) as ServeLine;
        } catch {
          continue;
        }
        lines.push(line);
        for (const w of [...waiters])
          if (w.pred(line)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(line);
          }
        if (!up && line.event === 'listening') {
          up = true;
          ready({
            proc,
            url: line.url as string,
            lines,
            exited,
            waitLine(pred, what, from = 0) {
              const seen = lines.slice(from).find(pred);
              if (seen) return Promise.resolve(seen);
              return new Promise((resolve, reject) => {
                waiters.push({ pred, resolve });
                void exited.then((d) =>
                  reject(new Error(`dt-pos serve exited (${d.code ?? d.signal}) before ${what}:\n${d.stdout}\n${d.stderr}`)),
                );
              });
            },
          });
        }
      }
    });
    void exited.then((d) => {
      if (!up) fail(new Error(`dt-pos serve exited ${d.code ?? d.signal} before listening:\n${d.stdout}\n${d.stderr}`));
    });
  });
}

/** An ECR API client with the data directory's token. */
export function ecrClient(url: string, dataDir: string) {
  const token = readFileSync(join(dataDir, 'ecr.token'), 'utf8').trim();
  return {
    token,
    async call<T = Record<string, unknown>>(
      method: string,
      path: string,
      body?: unknown,
      auth = `Bearer ${token}`,
    ): Promise<{ status: number; body: T }> {
      const r = await fetch(url + path, {
        method,
        headers: { authorization: auth, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
      });
      return { status: r.status, body: (await r.json()) as T };
    },
    /** Reads the event stream until `until` says stop (or the stream ends); returns the events. */
    async events(until: (events: { type: string; data: Record<string, unknown> }[]) => boolean, signal?: AbortSignal) {
      const r = await fetch(url + '/v1/events', { headers: { authorization: `Bearer ${token}` }, ...(signal ? { signal } : {}) });
      const got: { type: string; data: Record<string, unknown> }[] = [];
      const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return got;
          buf += value;
          let at: number;
          while ((at = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, at);
            buf = buf.slice(at + 2);
            const type = /^event: (.*)$/m.exec(block)?.[1];
            const data = /^data: (.*)$/m.exec(block)?.[1];
            if (type && data) got.push({ type, data: JSON.parse(data) as Record<string, unknown> });
            if (until(got)) return got;
          }
        }
      } finally {
        await reader.cancel().catch(() => {});
      }
    },
  };
}

/** The balance of the card in a dt-card state file (the file must not be served at the time). */
export async function cardBalance(stateFile: string): Promise<number> {
  const storage = FileStorage.open(stateFile);
  try {
    const t = new InProcessTransport(new SimulatedCard({ storage }));
    await selectApplet(t);
    return (await readCardState(t)).balance;
  } finally {
    storage.close();
  }
}

/** A shop: world (ledger + acquirer), private pcscd, an initialized and synced terminal, a loaded card state file. */
export interface Shop {
  readonly world: World;
  readonly pcscd: PcscdHandle;
  readonly env: NodeJS.ProcessEnv;
  readonly dataDir: string;
  readonly stateFile: string;
  readonly reader: string;
  readonly pin: string;
  close(): Promise<void>;
}

/** Builds a {@link Shop} in `dir`. */
export async function startShop(dir: string, limits?: Parameters<typeof worldCard>[2]): Promise<Shop> {
  const world = await startWorld(dir);
  const pcscd = await startPcscd();
  const env = { ...process.env, PCSCLITE_CSOCK_NAME: pcscd.socketPath };
  const pkiDir = join(dir, 'pki');
  mkdirSync(pkiDir);
  const pki = world.tl.pki;
  const party = (p: { keys: { secretKey: Uint8Array }; cert: Uint8Array }) => ({ secretKey: toHex(p.keys.secretKey), cert: toHex(p.cert) });
  writeFileSync(
    join(pkiDir, 'dev-pki.json'),
    JSON.stringify({ format: 'dt-dev-pki', version: 1, issuer: party(pki.issuer), ledger: party(pki.ledger), bank: party(pki.bank) }),
  );
  const dataDir = join(dir, 'pos');
  const D = ['--data-dir', dataDir];
  const init = await dtPos(
    [
      ...D,
      'init',
      '--merchant-id',
      'serve-shop',
      '--mcc',
      '5411',
      '--name',
      'Serve Shop',
      '--dev',
      pkiDir,
      '--acquirer',
      world.acquirer.url,
      '--reader',
      `pcsc:${pcscd.readers[0]}`,
    ],
    env,
  );
  if (init.code !== 0) throw new Error(`dt-pos init: ${init.code}\n${init.stdout}${init.stderr}`);
  const sync = await dtPos([...D, 'sync'], env);
  if (sync.code !== 0) throw new Error(`dt-pos sync: ${sync.code}\n${sync.stdout}${sync.stderr}`);
  const card = await worldCard(
    world,
    5_000_000,
    limits ?? { perPayment: 1_000_000, offlineTotal: 4_000_000, offlineCount: 20, cvmLimit: 10_000 },
  );
  const stateFile = join(dir, 'card.state');
  const fs = FileStorage.create(stateFile, { label: 'serve' });
  for (const [slot, bytes] of (card.storage as MemoryStorage).snapshot()) fs.write(slot, bytes);
  fs.close();
  return {
    world,
    pcscd,
    env,
    dataDir,
    stateFile,
    reader: pcscd.readers[0]!,
    pin: card.pin,
    async close() {
      await pcscd.stop();
      await world.close();
    },
  };
}
