/**
 * The terminal's risk policy (from its config file) and its evaluation
 * before a tap: floor limit, CVM limit, cap on pending (unverified) value,
 * and the age of the revocation list, after which offline acceptance first
 * narrows (a lower floor limit) and then stops. The list age at which it stops
 * is never above what the terminal's certificate allows (`crlMaxAge`, SPEC §3.3
 * and §7.7 cover rule 2): the ledger covers a double spend only for a terminal
 * that kept to it, so a config file cannot widen it.
 *
 * @module
 */
import { DEFAULT_TERMINAL_CRL_MAX_AGE, openSigned } from '@dt/protocol';
import { TerminalError, TerminalErrorCode } from './errors.ts';

/** Risk policy; amounts in tiyn, ages in seconds. */
export interface RiskPolicy {
  /** Largest amount accepted offline; above it the outcome is ONLINE_REQUIRED. */
  readonly floorLimit: number;
  /** Above this amount the terminal asks for the PIN (the card may ask below it too). */
  readonly cvmLimit: number;
  /** Cap on pending + submitted (unverified) value including the new payment. */
  readonly pendingCap: number;
  /** Revocation list older than this: the floor limit drops to {@link narrowedFloorLimit}. */
  readonly crlNarrowAfter: number;
  /** Floor limit while the revocation list is stale. */
  readonly narrowedFloorLimit: number;
  /**
   * Revocation list older than this (or none at all): no offline acceptance. Capped by the
   * certificate's `crlMaxAge` ({@link effectiveMaxCrlAge}).
   */
  readonly maxCrlAge: number;
  /** Torn attempts younger than this are retried with `retryOf` on the next tap. */
  readonly retryWindow: number;
}

/** Defaults: 50 000 KZT floor, PIN above 10 000 KZT, 500 000 KZT exposure, list stale after 1 day, refused after 3. */
export const DEFAULT_POLICY: RiskPolicy = {
  floorLimit: 5_000_000,
  cvmLimit: 1_000_000,
  pendingCap: 50_000_000,
  crlNarrowAfter: 86_400,
  narrowedFloorLimit: 500_000,
  maxCrlAge: 3 * 86_400,
  retryWindow: 600,
};

const KEYS = Object.keys(DEFAULT_POLICY) as (keyof RiskPolicy)[];

/** Validates a policy object read from a config file (unknown keys refused, every value a non-negative safe integer). */
export function parsePolicy(input: unknown): RiskPolicy {
  if (input === undefined) return DEFAULT_POLICY;
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw new TerminalError(TerminalErrorCode.CONFIG, 'policy must be an object');
  const out: Record<string, number> = { ...DEFAULT_POLICY };
  for (const [k, v] of Object.entries(input)) {
    if (!KEYS.includes(k as keyof RiskPolicy)) throw new TerminalError(TerminalErrorCode.CONFIG, `unknown policy key ${k}`, { key: k });
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
      throw new TerminalError(TerminalErrorCode.CONFIG, `policy.${k} must be a non-negative integer`, { key: k });
    out[k] = v;
  }
  const p = out as unknown as RiskPolicy;
  if (p.narrowedFloorLimit > p.floorLimit)
    throw new TerminalError(TerminalErrorCode.CONFIG, 'policy.narrowedFloorLimit must not exceed floorLimit');
  if (p.crlNarrowAfter > p.maxCrlAge) throw new TerminalError(TerminalErrorCode.CONFIG, 'policy.crlNarrowAfter must not exceed maxCrlAge');
  return p;
}

/** Why the policy refuses offline acceptance. */
export const RiskReason = {
  ABOVE_FLOOR_LIMIT: 'ABOVE_FLOOR_LIMIT',
  ABOVE_NARROWED_FLOOR_LIMIT: 'ABOVE_NARROWED_FLOOR_LIMIT',
  PENDING_CAP: 'PENDING_CAP',
  NO_REVOCATION_LIST: 'NO_REVOCATION_LIST',
  REVOCATION_LIST_TOO_OLD: 'REVOCATION_LIST_TOO_OLD',
} as const;
/** A risk refusal reason. */
export type RiskReason = (typeof RiskReason)[keyof typeof RiskReason];

/** Result of {@link assessRisk}. */
export type RiskDecision =
  | { readonly offline: true; readonly pinRequired: boolean; readonly floorLimit: number; readonly narrowed: boolean }
  | { readonly offline: false; readonly reason: RiskReason };

/** Inputs of {@link assessRisk}. */
export interface RiskInput {
  readonly amount: number;
  /** Unverified value already held (pending + submitted). */
  readonly pending: number;
  /** Issue time of the held revocation list, or undefined when the terminal has none. */
  readonly crlIssued: number | undefined;
  readonly now: number;
  /**
   * The list age the terminal's certificate allows ({@link certifiedCrlMaxAge}); default
   * `DEFAULT_TERMINAL_CRL_MAX_AGE` (3 days), what a certificate without the claim means.
   */
  readonly certifiedCrlMaxAge?: number;
}

/**
 * The oldest revocation list (seconds) the terminal certificate `cert` lets the terminal
 * accept offline payments with: its `crlMaxAge` claim, or `DEFAULT_TERMINAL_CRL_MAX_AGE`
 * (3 days) when it has none (SPEC §3.3). The certificate was verified when the identity
 * was built; this only reads the claim.
 */
export function certifiedCrlMaxAge(cert: Uint8Array): number {
  return openSigned('Certificate', cert).message.crlMaxAge ?? DEFAULT_TERMINAL_CRL_MAX_AGE;
}

/**
 * The list age beyond which no payment is taken offline: the smaller of the configured
 * `policy.maxCrlAge` and the certified value. A config may narrow the certificate's
 * policy, never widen it.
 */
export function effectiveMaxCrlAge(policy: RiskPolicy, certified: number = DEFAULT_TERMINAL_CRL_MAX_AGE): number {
  return Math.min(policy.maxCrlAge, certified);
}

/**
 * Decides whether a payment of `amount` may be taken offline. The list's age
 * counts from its issue time (signed by the ledger), not from when it was
 * fetched, so replaying an old list does not make it fresh; it may not exceed
 * {@link effectiveMaxCrlAge}.
 */
export function assessRisk(policy: RiskPolicy, r: RiskInput): RiskDecision {
  if (r.crlIssued === undefined) return { offline: false, reason: RiskReason.NO_REVOCATION_LIST };
  const age = Math.max(0, r.now - r.crlIssued);
  if (age > effectiveMaxCrlAge(policy, r.certifiedCrlMaxAge)) return { offline: false, reason: RiskReason.REVOCATION_LIST_TOO_OLD };
  const narrowed = age > policy.crlNarrowAfter;
  const floor = narrowed ? policy.narrowedFloorLimit : policy.floorLimit;
  if (r.amount > floor) return { offline: false, reason: narrowed ? RiskReason.ABOVE_NARROWED_FLOOR_LIMIT : RiskReason.ABOVE_FLOOR_LIMIT };
  if (r.pending + r.amount > policy.pendingCap) return { offline: false, reason: RiskReason.PENDING_CAP };
  return { offline: true, pinRequired: r.amount > policy.cvmLimit, floorLimit: floor, narrowed };
}
