import { openSigned, OutcomeStatus, type Outcome } from '@dt/protocol';
import type { LedgerStorage } from '../src/storage/types.ts';

/** Decodes signed outcomes (signature checked by the caller where it matters). */
export function outcomes(list: readonly Uint8Array[]): Outcome[] {
  return list.map((b) => openSigned('Outcome', b).message);
}

export const STATUS_NAME: Record<number, string> = Object.fromEntries(Object.entries(OutcomeStatus).map(([k, v]) => [v, k]));

const hex = (v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : String(v));

/** A canonical dump of the ledger's money state (order-independent). */
export async function stateDigest(storage: LedgerStorage, opts: { evidence?: boolean } = {}): Promise<string> {
  return storage.transaction(async (tx) => {
    const q = async (sql: string) => (await tx.all(sql)).map((r) => Object.values(r).map(hex).join(':')).sort();
    // Claims (spent, counters) are evidence: a refused request may record them (SPEC §7.7 step E).
    const evidence = opts.evidence ?? true;
    return JSON.stringify({
      transfers: await q(`SELECT hash, state FROM transfers`),
      ...(evidence
        ? { spent: await q(`SELECT card, id, by_hash FROM spent`), counters: await q(`SELECT card, counter, hash FROM counters`) }
        : {}),
      merchants: await q(`SELECT kid, balance FROM merchants`),
      verdicts: await q(`SELECT transfer, status, covered, terminal, amount FROM verdicts`),
      banks: await q(`SELECT kid, balance FROM banks`),
      revocations: await q(`SELECT card FROM revocations`),
      tokens: await q(`SELECT serial, card, value FROM tokens`),
      syncs: await q(`SELECT request FROM syncs`),
      loads: await q(`SELECT id, state FROM loads`),
    });
  });
}
