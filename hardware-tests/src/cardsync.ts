/**
 * Card SYNC (and LOAD) against the ledger's HTTP API, the way a cardholder's
 * app does it: SYNC BEGIN makes the card sign a SyncRequest over its offline
 * chain; the ledger answers with a signed SyncReceipt (fresh tokens for the
 * remaining value); SYNC COMPLETE hands the receipt to the card, which checks
 * the ledger's signature before it changes anything (SPEC.md §7.6).
 *
 * The lab uses it to reset the card's offline limits between rounds (timing,
 * endurance). It never signs anything itself.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { SYNC_CHALLENGE_LENGTH, syncBegin, syncComplete, type ApduTransport } from '@dt/protocol';

/** Largest SyncReceipt the lab accepts from a ledger (a card's receipt is a few KiB). */
const MAX_RECEIPT = 64 * 1024;

/** Result of {@link syncCard}. */
export type CardSyncResult =
  | { readonly ok: true; readonly receipt: Uint8Array }
  | { readonly ok: false; readonly status: number; readonly code: string; readonly message?: string };

/**
 * Runs SYNC (or LOAD with `load: true`) on the selected card in `t` against
 * `ledgerUrl`, with the protocol's card command set. A ledger refusal is a
 * result; card errors throw (`CardStatusError`), transport errors throw.
 */
export async function syncCard(
  t: ApduTransport,
  ledgerUrl: string,
  options: { load?: boolean; signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<CardSyncResult> {
  const load = options.load ?? false;
  const request = await syncBegin(t, new Uint8Array(randomBytes(SYNC_CHALLENGE_LENGTH)), {
    load,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 30_000);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  const res = await fetch(new URL('/v1/sync', ledgerUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/cbor' },
    body: Buffer.from(request),
    signal,
  });
  const length = Number(res.headers.get('content-length') ?? '0');
  if (length > MAX_RECEIPT) return { ok: false, status: res.status, code: 'TOO_LARGE', message: `ledger answer of ${length} bytes` };
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (bytes.length > MAX_RECEIPT)
    return { ok: false, status: res.status, code: 'TOO_LARGE', message: `ledger answer of ${bytes.length} bytes` };
  if (res.status !== 200) {
    let code = `HTTP_${res.status}`;
    let message: string | undefined;
    if ((res.headers.get('content-type') ?? '').includes('json')) {
      try {
        const j = JSON.parse(Buffer.from(bytes).toString('utf8')) as { code?: unknown; message?: unknown };
        if (typeof j.code === 'string') code = j.code;
        if (typeof j.message === 'string') message = j.message;
      } catch {
        // keep the HTTP code
      }
    }
    return { ok: false, status: res.status, code, ...(message ? { message } : {}) };
  }
  await syncComplete(t, bytes, { load, ...(options.signal ? { signal: options.signal } : {}) });
  return { ok: true, receipt: bytes };
}
