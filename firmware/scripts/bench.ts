/**
 * Firmware benchmark: bundle size (raw and gzip), QuickJS heap use, the
 * time of one PAY (the whole exchange: chained command, chain and signature
 * checks, signing, journal commit, GET RESPONSE) inside QuickJS and on Node,
 * and the ECDSA verifications and signatures the firmware performs per PAY
 * (counted in its own code: `crypto-count.ts`). Writes `bench-results.json`
 * next to package.json. No pass/fail thresholds: the numbers are for people
 * and CI artefacts.
 *
 * Each PAY is timed in wall-clock ms and in CPU ms of this process (`cpuMs`): on a
 * shared machine the CPU time is the figure to compare; the load average is recorded.
 *
 * Usage: `npm run bench -w firmware` (`BENCH_PAYS=N`: PAYs timed per engine,
 * default 8; `BENCH_OUT=FILE`: where to write, default firmware/bench-results.json).
 */
import { gzipSync } from 'node:zlib';
import { loadavg } from 'node:os';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ApduTransport } from '@dt/protocol';
import { Applet, MemoryStorage } from '../src/index.ts';
import { buildBundle } from './build.ts';
import { countPayCrypto } from './crypto-count.ts';
import { QuickJsCard } from './quickjs-card.ts';
import { Host, Ledger, T0, load, makePki, paymentRequest, personalize, seededRandom } from '../test/fixtures.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const PAYS = Number(process.env.BENCH_PAYS ?? 8);
const MEMORY_LIMIT = 16 * 1024 * 1024;

const pki = makePki('bench');
const ledger = new Ledger(pki);
// Generous limits so that every benchmark payment is accepted.
const limits = { perPayment: 1_000_000, offlineTotal: 10_000_000, offlineCount: 64, cvmLimit: 1_000_000 };

async function prepare(transport: ApduTransport): Promise<Host> {
  const host = new Host({ process: (a: Uint8Array) => transport.transmit(a) } as unknown as Applet);
  await personalize(host, pki, { limits });
  await load(host, ledger, 1_000_000, { values: [400_000, 300_000, 200_000, 100_000] });
  return host;
}

/** Wall-clock and CPU milliseconds of each timed PAY. */
interface PayTimes {
  readonly wall: number[];
  readonly cpu: number[];
}

/**
 * CPU time of this process in ms. The engines run in this one thread (quickjs-emscripten is
 * WebAssembly called synchronously); with V8's `--single-threaded` (the bench script's flag) no
 * compiler or GC helper thread adds to it, so it is the time the PAY kept a core busy: a figure
 * other jobs on the machine do not inflate the way they inflate wall-clock time.
 */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

async function timePays(host: Host): Promise<PayTimes> {
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < PAYS; i++) {
    const req = paymentRequest(pki, pki.terminal, { amount: 1_000 + i, time: T0 + i });
    const c0 = cpuMs();
    const start = performance.now();
    const r = await host.pay(req);
    wall.push(performance.now() - start);
    cpu.push(cpuMs() - c0);
    if (r.sw !== 0x9000) throw new Error(`PAY ${i} answered ${r.sw.toString(16)}`);
  }
  return { wall, cpu };
}

function stats(ms: number[]) {
  const s = [...ms].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 100) / 100;
  return { runs: s.length, medianMs: r(s[Math.floor(s.length / 2)]!), minMs: r(s[0]!), maxMs: r(s[s.length - 1]!) };
}

const loadBefore = loadavg().map((x) => Math.round(x * 100) / 100);
const bundle = await buildBundle();
const bytes = new TextEncoder().encode(bundle);

// Node.
const nodeApplet = new Applet({ storage: new MemoryStorage(), random: seededRandom('bench-card') });
const nodeHost = await prepare({ transmit: (a) => nodeApplet.process(a) });
const nodeTimes = await timePays(nodeHost);

// QuickJS, timed: nothing but the PAYs between the clock readings.
const card = await QuickJsCard.create({
  bundle,
  storage: new MemoryStorage(),
  random: seededRandom('bench-card'),
  memoryLimit: MEMORY_LIMIT,
});
const qjsTimes = await timePays(await prepare({ transmit: (a) => card.process(a) }));
card.dispose();

// QuickJS, the same life again for the heap figures, sampled after every APDU: QuickJS's count walks
// the whole heap (about 0.7 ms a sample, some 7 ms a PAY), so it is kept out of the timed PAYs.
const sampled = await QuickJsCard.create({
  bundle,
  storage: new MemoryStorage(),
  random: seededRandom('bench-card'),
  memoryLimit: MEMORY_LIMIT,
});
const afterLoad = sampled.memory().usedBytes;
let peak = afterLoad;
const sampledHost = await prepare({
  transmit: async (a) => {
    const r = await sampled.process(a);
    peak = Math.max(peak, sampled.memory().usedBytes);
    return r;
  },
});
for (let i = 0; i < PAYS; i++) {
  const r = await sampledHost.pay(paymentRequest(pki, pki.terminal, { amount: 1_000 + i, time: T0 + i }));
  if (r.sw !== 0x9000) throw new Error(`PAY ${i} answered ${r.sw.toString(16)} (heap run)`);
}
const afterPays = sampled.memory().usedBytes;
sampled.dispose();

/** True when a card personalizes, loads and pays three times at one terminal inside QuickJS with a heap limit of `limit` bytes. */
async function paysWithin(limit: number): Promise<boolean> {
  let c: QuickJsCard | undefined;
  try {
    c = await QuickJsCard.create({ bundle, storage: new MemoryStorage(), random: seededRandom('bench-card'), memoryLimit: limit });
    const card = c;
    const host = await prepare({ transmit: (a) => card.process(a) });
    // Three PAYs at one terminal: the second prepares the terminal's key (its table stays in the heap), the third uses it.
    for (let i = 0; i < 3; i++) {
      const r = await host.pay(paymentRequest(pki, pki.terminal, { amount: 1_000 + i, time: T0 + i }));
      if (r.sw !== 0x9000) return false;
    }
    return true;
  } catch {
    return false;
  } finally {
    try {
      c?.dispose();
    } catch {
      // A runtime that hit its limit may refuse to free cleanly; it is dropped anyway.
    }
  }
}

// Smallest heap limit (64 KiB resolution) under which the whole life still works.
let lo = 64 * 1024;
let hi = MEMORY_LIMIT;
while (hi - lo > 64 * 1024) {
  const mid = Math.floor((lo + hi) / 2 / 65536) * 65536;
  if (await paysWithin(mid)) hi = mid;
  else lo = mid;
}

// What a secure element would have to compute per PAY (its 50-100 ms per operation is the budget question).
const cryptoPerPay = await countPayCrypto(5);

const singleThreaded = process.execArgv.includes('--single-threaded');
const results = {
  date: new Date().toISOString(),
  node: process.version,
  // The machine's 1/5/15-minute load averages before and after the timed PAYs: what the wall-clock figures carry.
  loadAverage: { before: loadBefore, after: loadavg().map((x) => Math.round(x * 100) / 100) },
  cpuTime: singleThreaded
    ? 'process CPU time (user + system) around each PAY, V8 --single-threaded: the one thread that runs both engines'
    : 'process CPU time (user + system) around each PAY; V8 NOT single-threaded: its helper threads may add to it',
  bundle: { file: 'dist/firmware.js', bytes: bytes.length, gzipBytes: gzipSync(bytes, { level: 9 }).length },
  quickjs: {
    memoryLimitBytes: MEMORY_LIMIT,
    heapAfterBundleLoadBytes: afterLoad,
    heapPeakBytes: peak,
    heapAfterPaysBytes: afterPays,
    smallestWorkingLimitBytes: hi,
    pay: stats(qjsTimes.wall),
    payCpu: stats(qjsTimes.cpu),
  },
  nodePay: stats(nodeTimes.wall),
  nodePayCpu: stats(nodeTimes.cpu),
  cryptoPerPay,
  slowdown: Math.round((stats(qjsTimes.cpu).medianMs / stats(nodeTimes.cpu).medianMs) * 10) / 10,
  notes:
    'heap*Bytes: QuickJS computeMemoryUsage().memory_used_size sampled after every APDU of a second, untimed run of the same life (personalization, LOAD, the same PAYs; the count walks the whole heap, so the timed PAYs run without it) (QuickJS estimate of all its objects, which is larger than what the malloc limit counts); smallestWorkingLimitBytes: smallest setMemoryLimit (64 KiB steps) under which loading the bundle, personalization, a LOAD and three PAYs at one terminal (the second prepares its key, the third verifies with it) all succeed: the figure to size an embedded heap by.',
  note: 'pay / nodePay: wall-clock ms; payCpu / nodePayCpu: CPU ms of the same PAYs (see cpuTime); slowdown: QuickJS CPU ÷ Node CPU. PAY = one full PAY exchange (chained PaymentRequest, terminal chain + request verification, ECDSA signature, journal commit, handover through GET RESPONSE); pure-JS P-256 (@noble/curves) in both engines',
};
writeFileSync(process.env.BENCH_OUT || path.join(here, '..', 'bench-results.json'), JSON.stringify(results, null, 2) + '\n');
console.log(JSON.stringify(results, null, 2));
