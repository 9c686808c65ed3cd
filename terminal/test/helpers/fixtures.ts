/**
 * Test fixtures: a dev PKI, terminals, real firmware cards (simulated by
 * card-applet-sim, personalized and loaded with ledger-signed tokens),
 * journals in temp dirs and signed revocation lists.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStorage } from '@dt/firmware';
import {
  createDevPki,
  devIssuingBank,
  devLoad,
  InProcessTransport,
  issueDevTerminal,
  personalizeCard,
  SimulatedCard,
  type DevPki,
  type FaultPlan,
} from '@dt/card-applet-sim';
import { signMessage, type ApduTransport } from '@dt/protocol';
import {
  buildIdentity,
  Journal,
  TransportReader,
  DEFAULT_POLICY,
  type RiskPolicy,
  type TerminalIdentity,
  type PinPad,
  type PinPrompt,
} from '../../src/index.ts';

/** Seconds now. */
export const nowSec = (): number => Math.floor(Date.now() / 1000);

/** A temp directory removed by `cleanup`. */
export function tempDir(prefix = 'dt-pos-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A terminal identity certified by the dev bank. */
export function devTerminalIdentity(pki: DevPki, merchant = 'shop-1', mcc = 5411): TerminalIdentity {
  const t = issueDevTerminal(pki, { merchant, mcc, name: `Shop ${merchant}` });
  return buildIdentity({ keyPair: t.keys, chain: t.chain, root: pki.issuer.cert, ledgerCert: pki.ledger.cert }, nowSec());
}

/** A signed revocation list. */
export function signedCrl(pki: DevPki, version: number, revoked: Uint8Array[] = [], issued = nowSec()): Uint8Array {
  return signMessage('RevocationList', { version, issued, revoked }, pki.ledger.signer);
}

/** Card limits used by default in tests (tiyn). */
export const TEST_LIMITS = { perPayment: 5_000_000, offlineTotal: 20_000_000, offlineCount: 20, cvmLimit: 2_000_000 };

/** A personalized, loaded simulated card (real firmware) with its transport. */
export interface TestCard {
  readonly card: SimulatedCard;
  readonly storage: MemoryStorage;
  readonly transport: InProcessTransport;
  readonly kid: Uint8Array;
  readonly pin: string;
}

/** Makes a card with PIN 1234, the given limits, loaded with `amounts` (one token each). */
export async function makeCard(
  pki: DevPki,
  opts: { limits?: typeof TEST_LIMITS; amounts?: number[]; faults?: FaultPlan; storage?: MemoryStorage } = {},
): Promise<TestCard> {
  const storage = opts.storage ?? new MemoryStorage();
  const card = new SimulatedCard({ storage, ...(opts.faults ? { faults: opts.faults } : {}) });
  const transport = new InProcessTransport(card);
  const p = await personalizeCard(transport, devIssuingBank(pki), { pin: '1234', puk: '12345678', limits: opts.limits ?? TEST_LIMITS });
  await devLoad(transport, pki, opts.amounts ?? [1_000_000, 2_000_000, 3_000_000]);
  return { card, storage, transport, kid: p.cardKid, pin: '1234' };
}

/** A journal in a temp dir, holding a fresh revocation list. */
export function makeJournal(pki: DevPki, dir: string, revoked: Uint8Array[] = []): Journal {
  const j = Journal.open(join(dir, 'journal.sqlite'));
  j.storeCrl({ version: 1, issued: nowSec(), bytes: signedCrl(pki, 1, revoked), revoked });
  return j;
}

/** A PIN pad that types the scripted PINs in order (null = cancel) and records the prompts. */
export class ScriptedPinPad implements PinPad {
  readonly prompts: PinPrompt[] = [];
  readonly given: Uint8Array[] = [];
  constructor(private readonly script: (string | null)[]) {}
  async requestPin(prompt: PinPrompt): Promise<Uint8Array | null> {
    this.prompts.push(prompt);
    const next = this.script.shift();
    if (next === undefined || next === null) return null;
    const b = new Uint8Array([...next].map((c) => c.charCodeAt(0)));
    this.given.push(b);
    return b;
  }
}

/** Reader over a transport. */
export function readerFor(t: ApduTransport, name = 'sim', apduTimeoutMs = 5000): TransportReader {
  return new TransportReader(name, t, { apduTimeoutMs });
}

/** Policy for tests: PIN above 1 500 000, floor 5 000 000, cap 100 000 000. */
export const TEST_POLICY: RiskPolicy = { ...DEFAULT_POLICY, cvmLimit: 1_500_000, floorLimit: 5_000_000, pendingCap: 100_000_000 };

export { createDevPki };
