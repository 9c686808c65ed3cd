/**
 * Counts the public-key operations the firmware performs per PAY: how many
 * ECDSA verifications and signatures a secure element would have to run.
 *
 * The count is taken for real, from the firmware's own code, without touching
 * it: the firmware is bundled (esbuild, as for the device) with the one import
 * of the P-256 instance (`protocol/src/crypto/p256.ts`, imported only by
 * `protocol/src/crypto/suite.ts`) redirected to a module that wraps
 * `p256.verify` and `p256.sign` with counters and calls the real ones. Every
 * signature check the applet makes (certificate chains, request signatures,
 * receipts, tokens) ends in `p256.verify`, or in `p256Prepared.verify` when it
 * verifies with a prepared key (its terminal's, from the second request of a
 * power session); every signature it makes in `p256.sign`. The bundle then runs a card in Node through the firmware
 * tests' host (personalize, LOAD, then PAYs at one terminal), and the counters
 * are read around each PAY. The host side (terminal, ledger) uses its own
 * copy of the protocol and is not counted.
 *
 * "Steady state" is every PAY after the first at the same terminal: a card
 * that keeps what it verified (the bank's and a terminal's certificates)
 * would verify less from then on.
 *
 * @module
 */
import { build, type Plugin } from 'esbuild';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Hal } from '../src/index.ts';
import { Host, Ledger, T0, load, makePki, paymentRequest, personalize, seededRandom } from '../test/fixtures.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The suite's P-256 instance (the only module that builds one; `suite.ts` imports it). */
const P256 = path.join(here, '..', '..', 'protocol', 'src', 'crypto', 'p256.ts');
const NS = 'dt-crypto-count';

/** Public-key operations of one command. */
export interface CryptoOps {
  /** ECDSA P-256 verifications (`p256.verify` calls). */
  readonly verifies: number;
  /** ECDSA P-256 signatures (`p256.sign` calls). */
  readonly signatures: number;
}

/** What {@link countPayCrypto} measured. */
export interface PayCryptoCount {
  /** The first PAY at the terminal. */
  readonly firstPay: CryptoOps;
  /** Every later PAY at the same terminal (equal for all of them, or the count throws). */
  readonly steadyPay: CryptoOps;
  /** PAYs made (the first included). */
  readonly pays: number;
  /** How it was counted. */
  readonly method: string;
}

/** Set when the bundler redirected the firmware's P-256 import (else nothing would be counted). */
let intercepted = false;

/** Redirects the firmware's P-256 import to a counting wrapper around the real one. */
const countingPlugin: Plugin = {
  name: 'dt-crypto-count',
  setup(b) {
    b.onResolve({ filter: /(^|\/)p256\.ts$/ }, (args) =>
      args.namespace === NS || path.resolve(args.resolveDir, args.path) !== P256 ? undefined : { path: 'p256', namespace: NS },
    );
    b.onLoad({ filter: /.*/, namespace: NS }, () => {
      intercepted = true;
      return {
        resolveDir: path.dirname(P256),
        loader: 'js',
        contents: `
          import * as real from ${JSON.stringify(P256)};
          const counts = (globalThis.__dtCryptoCount = globalThis.__dtCryptoCount || { verify: 0, sign: 0 });
          export * from ${JSON.stringify(P256)};
          export const p256 = Object.assign({}, real.p256, {
            verify(...a) { counts.verify++; return real.p256.verify(...a); },
            sign(...a) { counts.sign++; return real.p256.sign(...a); },
          });
          // A verification with a prepared key (the terminal's, while the card stays powered) is a verification.
          export const p256Prepared = Object.assign({}, real.p256Prepared, {
            verify(...a) { counts.verify++; return real.p256Prepared.verify(...a); },
          });
        `,
      };
    });
  },
};

interface CountingFirmware {
  readonly Applet: new (hal: Hal) => { process(apdu: Uint8Array): Promise<Uint8Array> };
}

/** Builds the firmware with counted P-256 calls (ESM, neutral platform like the device bundle) and imports it. */
async function loadCountingFirmware(): Promise<CountingFirmware> {
  const dir = mkdtempSync(path.join(tmpdir(), 'dt-fw-count-'));
  try {
    const r = await build({
      entryPoints: [path.join(here, '..', 'src', 'index.ts')],
      bundle: true,
      platform: 'neutral',
      // The workspace's sources, as the firmware bundle build takes them (scripts/build.ts).
      conditions: ['dt-source', 'module'],
      mainFields: ['module', 'main'],
      format: 'esm',
      target: 'es2020',
      write: false,
      logLevel: 'warning',
      plugins: [countingPlugin],
    });
    // Fail closed: a firmware that reached P-256 another way would count zero operations.
    if (!intercepted) throw new Error(`the firmware bundle does not import ${P256}: the counting wrapper was not applied`);
    const file = path.join(dir, 'firmware-counting.mjs');
    writeFileSync(file, r.outputFiles[0]!.text);
    return (await import(pathToFileURL(file).href)) as CountingFirmware;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The counters the wrapper keeps (created by the bundle on load). */
function counters(): { verify: number; sign: number } {
  const c = (globalThis as { __dtCryptoCount?: { verify: number; sign: number } }).__dtCryptoCount;
  if (!c) throw new Error('the counting firmware did not install its counters');
  return c;
}

/**
 * Personalizes and loads a card running the counting firmware, makes `pays`
 * PAYs (at least 2) at one terminal and returns the operations of the first
 * and of the later ones.
 */
export async function countPayCrypto(pays = 5): Promise<PayCryptoCount> {
  if (!Number.isInteger(pays) || pays < 2) throw new RangeError('pays must be an integer >= 2');
  const fw = await loadCountingFirmware();
  const { MemoryStorage } = await import('../src/index.ts');
  const pki = makePki('crypto-count');
  const ledger = new Ledger(pki);
  const applet = new fw.Applet({ storage: new MemoryStorage(), random: seededRandom('crypto-count') });
  const host = new Host(applet as never);
  await personalize(host, pki, {
    limits: { perPayment: 1_000_000, offlineTotal: 10_000_000, offlineCount: Math.max(pays, 2), cvmLimit: 1_000_000 },
  });
  await load(host, ledger, 1_000_000, { values: [400_000, 300_000, 200_000, 100_000] });
  const per: CryptoOps[] = [];
  for (let i = 0; i < pays; i++) {
    // The request is signed by the host before the count starts: only the card's work is counted.
    const req = paymentRequest(pki, pki.terminal, { amount: 1_000 + i, time: T0 + i });
    const c = counters();
    const v0 = c.verify;
    const s0 = c.sign;
    const r = await host.pay(req);
    if (r.sw !== 0x9000) throw new Error(`PAY ${i + 1} answered ${r.sw.toString(16)}`);
    per.push({ verifies: c.verify - v0, signatures: c.sign - s0 });
  }
  // A PAY always verifies the terminal's request and signs the transfer: zero means the count missed them.
  if (per.some((p) => p.verifies === 0 || p.signatures === 0))
    throw new Error(`no P-256 operation counted in a PAY: ${JSON.stringify(per)}`);
  const later = per.slice(1);
  const steady = later[later.length - 1]!;
  if (!later.every((p) => p.verifies === steady.verifies && p.signatures === steady.signatures)) {
    throw new Error(`PAY crypto operations not steady after the first payment: ${JSON.stringify(per)}`);
  }
  return {
    firstPay: per[0]!,
    steadyPay: steady,
    pays,
    method: `the firmware bundled with its P-256 import wrapped by counters (p256.verify and p256Prepared.verify, p256.sign), run in Node; ${pays} PAYs at one terminal after personalization and a LOAD; steady = PAYs 2..${pays} (all equal)`,
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  console.log(JSON.stringify(await countPayCrypto(), null, 2));
}
