/**
 * Shared fixtures of the simulator tests: a dev PKI, a terminal, and cards
 * personalized and loaded through real APDUs (no shortcut into the applet's
 * state), plus the checks the tests share.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStorage } from '@dt/firmware';
import type { Storage } from '@dt/firmware';
import { createTrustStore, validateHandover } from '@dt/protocol';
import {
  InProcessTransport,
  SimulatedCard,
  createDevPki,
  devIssuingBank,
  devLoad,
  devPaymentRequest,
  issueDevTerminal,
  pcscdUnavailableReason,
  personalizeCard,
  systemClock,
} from '../src/index.ts';
import type { DevPki, DevTerminal, FaultPlan, SimulatedCardOptions } from '../src/index.ts';

export const LIMITS = { perPayment: 50_000, offlineTotal: 200_000, offlineCount: 10, cvmLimit: 20_000 };
export const PIN = '1234';
export const PUK = '12345678';
/** What fixtures load onto every card: two tokens. */
export const LOADED = [30_000, 40_000];

let shared: { pki: DevPki; terminal: DevTerminal } | undefined;

/** One dev PKI and terminal per test process (key generation is the slow part). */
export function world(): { pki: DevPki; terminal: DevTerminal } {
  if (shared === undefined) {
    const pki = createDevPki();
    shared = { pki, terminal: issueDevTerminal(pki, { merchant: 'sim-shop', mcc: 5411 }) };
  }
  return shared;
}

/** The directories {@link tempDir} made in this test file, removed after its last test (ava runs each file in its own worker). */
const made: string[] = [];
test.after.always(() => {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A temporary directory for one test (removed after the file's last test). */
export function tempDir(prefix = 'dt-card-test-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

/**
 * A card personalized by the dev bank and loaded with {@link LOADED}, over
 * `storage` (memory by default), through the in-process transport.
 */
export async function readyCard(
  options: { storage?: Storage; faults?: FaultPlan; limits?: typeof LIMITS } & Partial<SimulatedCardOptions> = {},
): Promise<{ card: SimulatedCard; transport: InProcessTransport; storage: Storage; cardKid: Uint8Array; publicKey: Uint8Array }> {
  const { pki } = world();
  const storage = options.storage ?? new MemoryStorage();
  const card = new SimulatedCard({ ...options, storage });
  const transport = new InProcessTransport(card);
  const p = await personalizeCard(transport, devIssuingBank(pki), { pin: PIN, puk: PUK, limits: options.limits ?? LIMITS });
  await devLoad(transport, pki, LOADED);
  return { card, transport, storage, cardKid: p.cardKid, publicKey: p.publicKey };
}

/** A fresh payment request from the fixture terminal. */
export function request(amount: number, extra: { retryOf?: Uint8Array; nonce?: Uint8Array } = {}): ReturnType<typeof devPaymentRequest> {
  return devPaymentRequest(world().terminal, amount, extra);
}

/**
 * Validates a handover as the terminal would (SPEC.md §7.4 steps 1-7) against the
 * request it answers; throws with the validation code otherwise.
 * Returns the transfer.
 */
export function assertValidHandover(handover: Uint8Array, req: { nonce: Uint8Array; time: number }, amount: number) {
  const { pki, terminal } = world();
  const trust = createTrustStore({ root: pki.issuer.cert, ledgerCert: pki.ledger.cert, at: systemClock() });
  const v = validateHandover(handover, {
    trust,
    request: {
      amount,
      currency: 398,
      terminal: terminal.signer.kid,
      merchant: terminal.merchant,
      mcc: terminal.mcc,
      nonce: req.nonce,
      time: req.time,
    },
  });
  if (!v.ok) throw new Error(`handover invalid: ${v.code} ${v.detail ?? ''}`);
  return v.transfer;
}

/**
 * Whether a test needing root and pcscd runs here: it always runs in CI
 * (CI=true), where a missing component must fail the test, never skip it.
 */
export function needsPcscd(): { run: boolean; reason?: string } {
  const reason = pcscdUnavailableReason();
  if (reason === undefined || process.env.CI === 'true') return { run: true };
  return { run: false, reason };
}
