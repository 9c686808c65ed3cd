/**
 * The terminal's identity: its key pair (generated on the terminal, never
 * leaves it), its certificate chain `[terminal cert, acquiring bank cert]`,
 * and the trust anchors every party pins (issuer root, ledger certificate).
 *
 * Files in the data directory:
 * - `terminal.key`: the secret key (hex JSON, file mode 0600);
 * - `identity.json`: chain, root and ledger certificate (public, hex);
 * - `certificate-request.cbor`: the request for the acquiring bank (after `init`).
 *
 * @module
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  bytesEqual,
  CURRENCY_KZT,
  fromHex,
  generateKeyPair,
  keyId,
  keyPairSigner,
  publicKeyOf,
  Role,
  toHex,
  verifyChain,
  verifyRoot,
  type KeyPair,
  type Signer,
} from '@dt/protocol';
import { TerminalError, TerminalErrorCode } from './errors.ts';
import { makeDirs, syncDir, writeFileDurable } from '@dt/protocol/fs';

/** Merchant identity certified in the terminal certificate. */
export interface MerchantIdentity {
  readonly id: string;
  readonly mcc: number;
  readonly name: string;
}

/** Everything the kernel and the sync client need to act as this terminal. */
export interface TerminalIdentity {
  readonly signer: Signer;
  readonly kid: Uint8Array;
  readonly publicKey: Uint8Array;
  /** `[terminal certificate, acquiring bank certificate]`. */
  readonly chain: Uint8Array[];
  readonly merchant: MerchantIdentity;
  readonly currency: number;
  /** Pinned issuer root certificate. */
  readonly root: Uint8Array;
  /** Ledger certificate (signs tokens, outcomes, revocation lists). */
  readonly ledgerCert: Uint8Array;
  /** Expiry (seconds) of the terminal certificate. */
  readonly certExpires: number;
}

/** Inputs of {@link buildIdentity}. */
export interface IdentityParts {
  readonly keyPair: KeyPair;
  readonly chain: readonly Uint8Array[];
  readonly root: Uint8Array;
  readonly ledgerCert: Uint8Array;
  readonly currency?: number;
}

/**
 * Verifies the parts and builds the identity: the root, the ledger
 * certificate, the chain up to the root (leaf role TERMINAL under an
 * ACQUIRING bank), and that the certified key is this terminal's key.
 * Throws (fail closed) when anything does not verify at `at`.
 */
export function buildIdentity(parts: IdentityParts, at: number): TerminalIdentity {
  try {
    const root = verifyRoot(parts.root, at);
    verifyChain([parts.ledgerCert], { root, at, leafRole: Role.LEDGER });
    const chain = verifyChain(parts.chain, { root, at, leafRole: Role.TERMINAL });
    const leaf = chain[0]!;
    if (!bytesEqual(leaf.publicKey, parts.keyPair.publicKey)) throw new Error('the certificate certifies another key');
    const m = leaf.claims.merchant!;
    return {
      signer: keyPairSigner(parts.keyPair),
      kid: keyId(parts.keyPair.publicKey),
      publicKey: parts.keyPair.publicKey,
      chain: [...parts.chain],
      merchant: { id: m.id, mcc: m.mcc, name: m.name },
      currency: parts.currency ?? leaf.claims.currency ?? CURRENCY_KZT,
      root: parts.root,
      ledgerCert: parts.ledgerCert,
      certExpires: leaf.claims.exp,
    };
  } catch (e) {
    throw new TerminalError(TerminalErrorCode.NOT_INITIALIZED, `terminal identity does not verify: ${(e as Error).message}`, {}, e);
  }
}

/** Writes a file atomically and durably (`@dt/protocol/fs`; exported here for the terminal's modules). */
export { writeFileDurable };

/** Paths of the identity files in a data directory. */
export function identityPaths(dataDir: string): { key: string; identity: string; request: string } {
  return {
    key: join(dataDir, 'terminal.key'),
    identity: join(dataDir, 'identity.json'),
    request: join(dataDir, 'certificate-request.cbor'),
  };
}

/** Generates the terminal key pair (OS CSPRNG) and stores it with mode 0600. Refuses to overwrite. */
export function createTerminalKey(dataDir: string): KeyPair {
  const p = identityPaths(dataDir).key;
  if (existsSync(p)) throw new TerminalError(TerminalErrorCode.CONFIG, `a terminal key already exists at ${p}`, { path: p });
  const kp = generateKeyPair((n) => new Uint8Array(randomBytes(n)));
  saveTerminalKey(dataDir, kp);
  return kp;
}

/** Stores a given key pair as the terminal key (mode 0600); refuses to overwrite. For provisioning tools and tests. */
export function saveTerminalKey(dataDir: string, keyPair: KeyPair): void {
  const p = identityPaths(dataDir).key;
  if (existsSync(p)) throw new TerminalError(TerminalErrorCode.CONFIG, `a terminal key already exists at ${p}`, { path: p });
  writeFileDurable(p, JSON.stringify({ v: 1, secretKey: toHex(keyPair.secretKey) }) + '\n', 0o600);
}

/** Loads the terminal key pair. */
export function loadTerminalKey(dataDir: string): KeyPair {
  const p = identityPaths(dataDir).key;
  if (!existsSync(p)) throw new TerminalError(TerminalErrorCode.NOT_INITIALIZED, `no terminal key at ${p}; run dt-pos init`, { path: p });
  try {
    const j = JSON.parse(readFileSync(p, 'utf8')) as { secretKey?: unknown };
    if (typeof j.secretKey !== 'string') throw new Error('no secretKey');
    const secretKey = fromHex(j.secretKey);
    return { secretKey, publicKey: publicKeyOf(secretKey) };
  } catch {
    // Never echo the file content: it is a secret.
    throw new TerminalError(TerminalErrorCode.CONFIG, `the terminal key file ${p} is unreadable`, { path: p });
  }
}

/** The public part of the identity as stored in `identity.json`. */
export interface StoredIdentity {
  readonly chain: Uint8Array[];
  readonly root: Uint8Array;
  readonly ledgerCert: Uint8Array;
}

function identityJson(id: StoredIdentity): string {
  return JSON.stringify({ v: 1, chain: id.chain.map(toHex), root: toHex(id.root), ledgerCert: toHex(id.ledgerCert) }, null, 2) + '\n';
}

/** Stores the certificate chain and trust anchors, unverified (provisioning tools and tests; `install-cert` uses {@link installIdentity}). */
export function saveIdentity(dataDir: string, id: StoredIdentity): void {
  writeFileDurable(identityPaths(dataDir).identity, identityJson(id));
}

/**
 * Installs a certificate chain and trust anchors atomically: they are
 * written to a temporary file next to `identity.json`, read back from it and
 * verified with the terminal key at `at` (the same check every command
 * makes when it loads the identity), and only then renamed over
 * `identity.json`. When anything fails the temporary file is removed and the
 * installed identity, if any, is left exactly as it was.
 *
 * @throws TerminalError NOT_INITIALIZED (no terminal key, or the parts do
 *   not verify), CONFIG (the key file is unreadable).
 */
export function installIdentity(dataDir: string, id: StoredIdentity, at: number): TerminalIdentity {
  const target = identityPaths(dataDir).identity;
  const keyPair = loadTerminalKey(dataDir);
  const tmp = `${target}.${process.pid}.installing`;
  try {
    makeDirs(dirname(target));
    writeFileSync(tmp, identityJson(id), { mode: 0o644 });
    const fd = openSync(tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // Verify what is on disk, not what we meant to write.
    const identity = buildIdentity({ keyPair, ...readStoredIdentity(tmp) }, at);
    renameSync(tmp, target);
    syncDir(dirname(target));
    return identity;
  } finally {
    rmSync(tmp, { force: true });
  }
}

function readStoredIdentity(p: string): StoredIdentity {
  try {
    const j = JSON.parse(readFileSync(p, 'utf8')) as { chain: string[]; root: string; ledgerCert: string };
    return { chain: j.chain.map(fromHex), root: fromHex(j.root), ledgerCert: fromHex(j.ledgerCert) };
  } catch (e) {
    throw new TerminalError(TerminalErrorCode.CONFIG, `${p} is not a valid identity file`, { path: p }, e);
  }
}

/** Loads and verifies the full identity of the terminal in `dataDir` at time `at`. */
export function loadIdentity(dataDir: string, at: number): TerminalIdentity {
  const p = identityPaths(dataDir).identity;
  if (!existsSync(p))
    throw new TerminalError(
      TerminalErrorCode.NOT_INITIALIZED,
      `no certificate at ${p}; install the acquiring bank's answer or run dt-pos init --dev`,
      { path: p },
    );
  return buildIdentity({ keyPair: loadTerminalKey(dataDir), ...readStoredIdentity(p) }, at);
}

// ---------------------------------------------------------------- certificate request
// The request `init` writes (its format, builder and verifier are the protocol's, SPEC §5.5).
export { CERT_REQUEST_CONTENT_TYPE, CertificateRequestSchema, certificateRequest } from '@dt/protocol';
