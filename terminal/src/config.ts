/**
 * The terminal's configuration file (`config.json` in the data directory):
 *
 * ```json
 * {
 *   "acquirerUrl": "http://127.0.0.1:8081",
 *   "reader": "pcsc",
 *   "policy": { "floorLimit": 5000000, "cvmLimit": 1000000, "pendingCap": 50000000,
 *               "crlNarrowAfter": 86400, "narrowedFloorLimit": 500000, "maxCrlAge": 259200, "retryWindow": 600 },
 *   "timeouts": { "cardMs": 60000, "tapMs": 10000, "pinMs": 60000 },
 *   "verifier": "native"
 * }
 * ```
 *
 * `verifier` chooses how the kernel checks the signatures of a handover:
 * `native` (default) through OpenSSL (`@dt/protocol/native`, about 13x faster
 * per handover on this project's benchmark, the largest phase of a tap) or
 * `noble`, the pure-JS reference. Both apply exactly the same rules (low-S,
 * valid points); the protocol's tests prove they agree on every vector.
 *
 * Amounts are in tiyn, ages in seconds. Unknown keys are refused so that a
 * typo in a limit cannot silently fall back to a default.
 *
 * @module
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TerminalError, TerminalErrorCode } from './errors.ts';
import { writeFileDurable } from './identity.ts';
import { DEFAULT_TIMEOUTS, type KernelTimeouts } from './kernel/kernel.ts';
import { DEFAULT_POLICY, parsePolicy, type RiskPolicy } from './policy.ts';
import { nobleVerifier, type Verifier } from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';

/** The parsed configuration. */
export interface TerminalConfig {
  /** Base URL of the acquirer (sync). */
  readonly acquirerUrl?: string;
  /** Default reader spec: `pcsc`, `pcsc:<name part>`, `serial:<path>`, `hid:<path>`. */
  readonly reader: string;
  readonly policy: RiskPolicy;
  readonly timeouts: KernelTimeouts;
  /** Signature verifier of the kernel. */
  readonly verifier: VerifierName;
}

/** The signature verifiers a terminal can use. */
export const VERIFIERS = ['native', 'noble'] as const;
export type VerifierName = (typeof VERIFIERS)[number];

/** Default configuration. */
export const DEFAULT_CONFIG: TerminalConfig = { reader: 'pcsc', policy: DEFAULT_POLICY, timeouts: DEFAULT_TIMEOUTS, verifier: 'native' };

/** The kernel's verifier for a name (`native`: OpenSSL through node:crypto; `noble`: the pure-JS reference). */
export function verifierByName(name: VerifierName): Verifier {
  return name === 'native' ? nativeVerifier : nobleVerifier;
}

/** Parses a verifier name (config file or command line). */
export function parseVerifierName(v: unknown): VerifierName {
  if (typeof v !== 'string' || !(VERIFIERS as readonly string[]).includes(v))
    throw new TerminalError(TerminalErrorCode.CONFIG, `verifier must be one of ${VERIFIERS.join(', ')}`);
  return v as VerifierName;
}

const TOP_KEYS = ['acquirerUrl', 'reader', 'policy', 'timeouts', 'verifier'];

/** Path of the config file in a data directory. */
export function configPath(dataDir: string): string {
  return join(dataDir, 'config.json');
}

/** Parses a configuration object (from JSON). */
export function parseConfig(input: unknown): TerminalConfig {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw new TerminalError(TerminalErrorCode.CONFIG, 'config must be a JSON object');
  const o = input as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!TOP_KEYS.includes(k)) throw new TerminalError(TerminalErrorCode.CONFIG, `unknown config key ${k}`, { key: k });
  if (o.acquirerUrl !== undefined) {
    if (typeof o.acquirerUrl !== 'string') throw new TerminalError(TerminalErrorCode.CONFIG, 'acquirerUrl must be a string');
    try {
      new URL(o.acquirerUrl);
    } catch {
      throw new TerminalError(TerminalErrorCode.CONFIG, 'acquirerUrl is not a URL');
    }
  }
  if (o.reader !== undefined && typeof o.reader !== 'string') throw new TerminalError(TerminalErrorCode.CONFIG, 'reader must be a string');
  const timeouts: Record<string, number> = { ...DEFAULT_TIMEOUTS };
  if (o.timeouts !== undefined) {
    if (typeof o.timeouts !== 'object' || o.timeouts === null)
      throw new TerminalError(TerminalErrorCode.CONFIG, 'timeouts must be an object');
    for (const [k, v] of Object.entries(o.timeouts)) {
      if (!(k in DEFAULT_TIMEOUTS)) throw new TerminalError(TerminalErrorCode.CONFIG, `unknown timeout ${k}`, { key: k });
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0)
        throw new TerminalError(TerminalErrorCode.CONFIG, `timeouts.${k} must be a positive integer (ms)`);
      timeouts[k] = v;
    }
  }
  return {
    ...(typeof o.acquirerUrl === 'string' ? { acquirerUrl: o.acquirerUrl } : {}),
    reader: typeof o.reader === 'string' ? o.reader : DEFAULT_CONFIG.reader,
    policy: parsePolicy(o.policy),
    timeouts: timeouts as unknown as KernelTimeouts,
    verifier: o.verifier === undefined ? DEFAULT_CONFIG.verifier : parseVerifierName(o.verifier),
  };
}

/** Loads `config.json` from the data directory (defaults when absent). */
export function loadConfig(dataDir: string): TerminalConfig {
  const p = configPath(dataDir);
  if (!existsSync(p)) return DEFAULT_CONFIG;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(p, 'utf8'));
  } catch (e) {
    throw new TerminalError(TerminalErrorCode.CONFIG, `${p} is not valid JSON`, { path: p }, e);
  }
  return parseConfig(json);
}

/** Writes `config.json` (durably). */
export function saveConfig(dataDir: string, c: TerminalConfig): void {
  writeFileDurable(
    configPath(dataDir),
    JSON.stringify(
      {
        ...(c.acquirerUrl ? { acquirerUrl: c.acquirerUrl } : {}),
        reader: c.reader,
        policy: c.policy,
        timeouts: c.timeouts,
        verifier: c.verifier,
      },
      null,
      2,
    ) + '\n',
  );
}
