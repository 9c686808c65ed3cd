/**
 * Loads the committed test vectors (`protocol/vectors/*.json`) and runs the
 * API call an invalid vector names. Shared by the conformance, native,
 * mutation and independent tests and by the benchmark, so that every one of
 * them reads the vectors the same way a foreign implementation would
 * (format: `protocol/vectors/README.md`).
 *
 * @module
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  decodeDeterministic,
  decodeMessage,
  fromHex,
  isDtError,
  nobleVerifier,
  openSigned,
  verifyChain,
  verifyRoot,
  verifySigned,
  type ErrorCode,
  type MessageName,
  type Role,
  type SignedMessageName,
  type Verifier,
} from '../src/index.ts';

/** Directory of the committed vectors. */
export const VECTORS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'vectors');

/** Public and private parts of a published test key (hex). */
export interface KeyJson {
  readonly name: string;
  readonly privateKey: string;
  readonly publicKey: string;
  readonly x: string;
  readonly y: string;
  readonly kid: string;
}

/** A valid vector. Signed ones carry the COSE parts and the signer. */
export interface ValidVectorJson {
  readonly name: string;
  readonly description: string;
  readonly hex: string;
  readonly signer?: KeyJson;
  readonly protected?: string;
  readonly payload?: string;
  readonly signature?: string;
  readonly sigStructure?: string;
  readonly payloadHash?: string;
  /** Transfers only: `outputId(payloadHash, i)` for each output. */
  readonly outputIds?: readonly string[];
  readonly decoded: unknown;
}

/** The API calls invalid vectors are written for. */
export type VectorCall = 'decodeCbor' | 'decode' | 'verifySigned' | 'verifyRoot' | 'verifyChain';

/** An invalid vector: `call` with `hex` and `params` must fail with `error`. */
export interface InvalidVectorJson {
  readonly name: string;
  readonly description: string;
  readonly call: VectorCall;
  readonly hex?: string;
  readonly params: {
    readonly message?: MessageName;
    readonly publicKey?: string;
    readonly maxSize?: number;
    readonly at?: number;
    readonly expectedKid?: string;
    readonly chain?: readonly string[];
    readonly root?: string;
    readonly leafRole?: number;
  };
  readonly error: ErrorCode;
}

/** A certificate chain that must verify. */
export interface ValidChainJson {
  readonly name: string;
  readonly chain: readonly string[];
  readonly root: string;
  readonly rootKid: string;
  readonly at: number;
  readonly leafRole: number;
  readonly leafKid: string;
}

/** One vector file. */
export interface VectorFileJson {
  readonly format: 'dt-vectors-1';
  readonly description: string;
  readonly message?: MessageName;
  readonly contentType?: string | null;
  /** The integer content format signers write (SPEC §4.1). */
  readonly contentFormat?: number | null;
  readonly maxSize?: number;
  readonly keys?: Record<string, KeyJson>;
  readonly valid: readonly ValidVectorJson[];
  readonly validChains?: readonly ValidChainJson[];
  readonly invalid: readonly InvalidVectorJson[];
}

/** Reads every committed vector file: file name → parsed JSON, sorted by name. */
export function loadVectorFiles(dir: string = VECTORS_DIR): Map<string, VectorFileJson> {
  const out = new Map<string, VectorFileJson>();
  for (const f of readdirSync(dir)
    .filter((n) => n.endsWith('.json'))
    .sort()) {
    out.set(f, JSON.parse(readFileSync(join(dir, f), 'utf8')) as VectorFileJson);
  }
  return out;
}

/** True for a message that travels as a COSE_Sign1. */
export function isSigned(name: MessageName): name is SignedMessageName {
  return name !== 'Handover';
}

/**
 * Runs the call an invalid vector names, with the verifier given. Returns
 * normally when the call succeeds (which for an invalid vector is a failure
 * of the implementation under test); throws whatever the call throws.
 *
 * - `decodeCbor`: `decodeDeterministic(hex, params.maxSize)`;
 * - `decode`: `openSigned(params.message, hex)` for signed messages (COSE and
 *   payload schema, no signature check), `decodeMessage` for a Handover;
 * - `verifySigned`: `verifySigned(params.message, hex, params.publicKey)`;
 * - `verifyRoot`: `verifyRoot(hex, params.at, params.expectedKid)`;
 * - `verifyChain`: `verifyChain(params.chain, { root: verifyRoot(params.root, params.at), at, leafRole })`.
 */
export function runVectorCall(
  call: VectorCall,
  hex: string | undefined,
  params: InvalidVectorJson['params'],
  verifier: Verifier = nobleVerifier,
): unknown {
  return runVectorCallBytes(call, hex === undefined ? undefined : fromHex(hex), params, verifier);
}

/** {@link runVectorCall} on bytes rather than hex (used by the mutation test). */
export function runVectorCallBytes(
  call: VectorCall,
  bytes: Uint8Array | undefined,
  params: InvalidVectorJson['params'],
  verifier: Verifier = nobleVerifier,
): unknown {
  const need = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`vector lacks ${what}`);
    return v;
  };
  switch (call) {
    case 'decodeCbor':
      return decodeDeterministic(need(bytes, 'hex'), params.maxSize);
    case 'decode': {
      const name = need(params.message, 'params.message');
      return isSigned(name) ? openSigned(name, need(bytes, 'hex')) : decodeMessage(name, need(bytes, 'hex'));
    }
    case 'verifySigned': {
      const name = need(params.message, 'params.message');
      if (!isSigned(name)) throw new Error(`${name} is not signed`);
      return verifySigned(name, need(bytes, 'hex'), fromHex(need(params.publicKey, 'params.publicKey')), verifier);
    }
    case 'verifyRoot':
      return verifyRoot(
        need(bytes, 'hex'),
        need(params.at, 'params.at'),
        params.expectedKid === undefined ? undefined : fromHex(params.expectedKid),
        verifier,
      );
    case 'verifyChain': {
      const at = need(params.at, 'params.at');
      const root = verifyRoot(fromHex(need(params.root, 'params.root')), at, undefined, verifier);
      return verifyChain(need(params.chain, 'params.chain').map(fromHex), {
        root,
        at,
        leafRole: need(params.leafRole, 'params.leafRole') as Role,
        verifier,
      });
    }
  }
}

/**
 * Runs an invalid vector and returns the error code it failed with, or
 * `'OK'` when it did not fail, or `'NOT_DT_ERROR'` when it failed with
 * something other than a `DtError`.
 */
export function outcomeOf(run: () => unknown): string {
  try {
    run();
    return 'OK';
  } catch (e) {
    return isDtError(e) ? e.code : 'NOT_DT_ERROR';
  }
}
