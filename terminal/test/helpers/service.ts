/**
 * Helpers for the in-process tests of {@link PosService}: timers the test fires by hand (so the
 * sync loop's waits are seen and never slept), a service on the real world (ledger, acquirer,
 * journal, kernel) with them, and payments followed to their outcome through the service's events.
 */
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { TransportTimers } from '@dt/protocol';
import {
  Journal,
  PosService,
  SyncClient,
  type CardReader,
  type PosServiceOptions,
  type ServiceEvent,
  type SyncState,
  type TerminalIdentity,
} from '../../src/index.ts';
import { startWorld, worldCard, worldTerminal, type World } from './world.ts';
import { TEST_POLICY, tempDir, type TestCard } from './fixtures.ts';

/** One wait the code under test scheduled. */
export interface ManualTimer {
  readonly ms: number;
  readonly fn: () => void;
  cancelled: boolean;
  fired: boolean;
}

/** Timers that only fire when the test says so; every wait scheduled is recorded. */
export class ManualTimers implements TransportTimers {
  readonly all: ManualTimer[] = [];
  #waiters: (() => void)[] = [];

  readonly schedule = (fn: () => void, ms: number): unknown => {
    const t: ManualTimer = { ms, fn, cancelled: false, fired: false };
    this.all.push(t);
    for (const w of this.#waiters.splice(0)) w();
    return t;
  };

  readonly cancel = (handle: unknown): void => {
    (handle as ManualTimer).cancelled = true;
  };

  /** The timers scheduled and neither fired nor cancelled. */
  get pending(): ManualTimer[] {
    return this.all.filter((t) => !t.fired && !t.cancelled);
  }

  /** Resolves with the one pending timer once there is one (the code under test is then waiting). */
  async waiting(): Promise<ManualTimer> {
    for (;;) {
      const p = this.pending;
      if (p.length > 1) throw new Error(`${p.length} timers pending, expected one`);
      if (p.length === 1) return p[0]!;
      await new Promise<void>((r) => this.#waiters.push(r));
    }
  }

  /** Fires `t` (it must be pending). */
  fire(t: ManualTimer): void {
    if (t.fired || t.cancelled) throw new Error('timer not pending');
    t.fired = true;
    t.fn();
  }
}

/** A journal of `id` that already holds the acquirer's revocation list (first contact, as `dt-pos sync` does). */
export async function syncedJournal(w: World, id: TerminalIdentity, name: string): Promise<Journal> {
  const journal = Journal.open(join(w.dir, `${name}.sqlite`));
  const r = await new SyncClient({ identity: id, journal, acquirerUrl: w.acquirer.url, retry: { attempts: 1 } }).sync();
  if (!r.online || !journal.crl()) throw new Error(`first sync failed: ${JSON.stringify(r.problems)}`);
  return journal;
}

/** A world (ledger, acquirer) in a temp dir, a terminal of it with a synced journal, and a loaded card; all closed at teardown. */
export async function terminalInWorld(
  t: { teardown: (f: () => void | Promise<void>) => void },
  name: string,
): Promise<{ w: World; id: TerminalIdentity; journal: Journal; card: TestCard }> {
  const { dir, cleanup } = tempDir(`dt-pos-service-${name}-`);
  const w = await startWorld(dir);
  t.teardown(async () => {
    await w.close();
    cleanup();
  });
  const id = worldTerminal(w);
  const journal = await syncedJournal(w, id, name);
  t.teardown(() => journal.close());
  return { w, id, journal, card: await worldCard(w, 3_000_000) };
}

/** A started service with manual timers, and its events. */
export interface TestService {
  readonly svc: PosService;
  readonly timers: ManualTimers;
  readonly events: ServiceEvent[];
  /** Sync states after each round (the `sync` events other than `running`). */
  rounds(): SyncState[];
  /** Resolves at the next sync event that is not `running` (a round ended) after the events seen so far. */
  roundEnd(): Promise<SyncState>;
  /** Starts a payment and resolves with its `outcome` event. */
  pay(reference: string, amount: number): Promise<Extract<ServiceEvent, { type: 'outcome' }>>;
}

/** Builds and starts a {@link PosService} over the world's real components. */
export function startService(
  opts: Partial<PosServiceOptions> & { identity: TerminalIdentity; journal: Journal; reader: CardReader },
): TestService {
  const timers = new ManualTimers();
  const events: ServiceEvent[] = [];
  const svc = new PosService({
    readerStatus: () => ({ spec: 'test', state: 'ready' }),
    policy: TEST_POLICY,
    timers,
    ...opts,
  });
  const listeners = new Set<(e: ServiceEvent) => void>();
  svc.subscribe((e) => {
    events.push(e);
    for (const l of [...listeners]) l(e);
  });
  const next = <T>(pick: (e: ServiceEvent) => T | undefined): Promise<T> =>
    new Promise((resolve) => {
      const l = (e: ServiceEvent): void => {
        const v = pick(e);
        if (v !== undefined) {
          listeners.delete(l);
          resolve(v);
        }
      };
      listeners.add(l);
    });
  svc.start();
  return {
    svc,
    timers,
    events,
    rounds: () => events.flatMap((e) => (e.type === 'sync' && e.sync.state !== 'running' ? [e.sync] : [])),
    roundEnd: () => next((e) => (e.type === 'sync' && e.sync.state !== 'running' ? e.sync : undefined)),
    async pay(reference, amount) {
      const done = next((e) => (e.type === 'outcome' && e.reference === reference ? e : undefined));
      svc.startPayment(reference, amount);
      return done;
    },
  };
}

/**
 * An HTTP proxy in front of the acquirer that can hold requests (they wait until `release`) and
 * answer `GET /v1/crl` with the first list it passed on (a replayed old, genuinely signed list).
 */
export interface AcquirerProxy {
  readonly url: string;
  /** Requests waiting while held. */
  readonly held: string[];
  hold(): void;
  release(): void;
  /** Resolves once a request is being held. */
  holding(): Promise<string>;
  replayOldCrl: boolean;
  /** The CRL bodies passed on, oldest first. */
  readonly crls: Uint8Array[];
  close(): Promise<void>;
}

/** Starts an {@link AcquirerProxy} to `target` (a base URL). */
export async function startAcquirerProxy(target: () => string): Promise<AcquirerProxy> {
  let holding = false;
  let gate: Promise<void> = Promise.resolve();
  let open: () => void = () => {};
  const holdWaiters: ((p: string) => void)[] = [];
  const held: string[] = [];
  const crls: Uint8Array[] = [];
  const forward = (req: IncomingMessage, res: ServerResponse, body: Buffer): void => {
    const u = new URL(req.url ?? '/', target());
    const out = request(u, { method: req.method, headers: { ...req.headers, host: u.host } }, (up) => {
      const chunks: Buffer[] = [];
      up.on('data', (c: Buffer) => chunks.push(c));
      up.on('end', () => {
        const b = Buffer.concat(chunks);
        if (req.method === 'GET' && u.pathname === '/v1/crl' && up.statusCode === 200) {
          if (proxy.replayOldCrl && crls.length > 0) {
            const old = crls[0]!;
            res.writeHead(200, { 'content-type': up.headers['content-type'] ?? 'application/cbor', 'content-length': old.length });
            res.end(Buffer.from(old));
            return;
          }
          crls.push(new Uint8Array(b));
        }
        const headers = { ...up.headers };
        delete headers['transfer-encoding'];
        res.writeHead(up.statusCode ?? 502, { ...headers, 'content-length': b.length });
        res.end(b);
      });
    });
    out.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    out.end(body);
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = `${req.method} ${req.url}`;
      if (holding) {
        held.push(path);
        for (const w of holdWaiters.splice(0)) w(path);
        void gate.then(() => {
          held.splice(held.indexOf(path), 1);
          forward(req, res, Buffer.concat(chunks));
        });
      } else forward(req, res, Buffer.concat(chunks));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const proxy: AcquirerProxy = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    held,
    hold() {
      holding = true;
      gate = new Promise((r) => (open = r));
    },
    release() {
      holding = false;
      open();
    },
    holding: () => (held.length > 0 ? Promise.resolve(held[0]!) : new Promise((r) => holdWaiters.push(r))),
    replayOldCrl: false,
    crls,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
  return proxy;
}
