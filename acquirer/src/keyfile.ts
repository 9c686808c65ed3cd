/**
 * The acquirer's key file: the service key that signs its settle requests
 * (SPEC.md §7.7.2). Same format as the key files `dt-ledger` writes
 * (`dt-ledger bank-add` / `acquirer-add`: `acquirers/<name>.key.json`):
 *
 * ```json
 * {"alg":"ES256","secretKey":"<64 hex digits>","publicKey":"<130 hex digits, uncompressed P-256>"}
 * ```
 *
 * The file must be readable by its owner only (mode 0600 or stricter): a key
 * that others can read is refused, like ssh does. Errors never quote the file's
 * content.
 *
 * @module
 */
import { readFileSync, statSync } from 'node:fs';
import { fromHex, keyPairSigner, publicKeyOf, toHex, type Signer } from '@dt/protocol';

/** Reads and checks an acquirer key file; returns its signer. Throws an Error naming the problem (never the key). */
export function readAcquirerKey(file: string): Signer {
  let mode: number;
  let text: string;
  try {
    mode = statSync(file).mode;
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read the acquirer key file ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`, { cause: e });
  }
  if ((mode & 0o077) !== 0)
    throw new Error(`the acquirer key file ${file} is readable by others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
  let j: { alg?: unknown; secretKey?: unknown; publicKey?: unknown };
  try {
    j = JSON.parse(text) as typeof j;
  } catch {
    throw new Error(`the acquirer key file ${file} is not JSON`);
  }
  if (j.alg !== 'ES256' || typeof j.secretKey !== 'string' || !/^[0-9a-f]{64}$/i.test(j.secretKey) || typeof j.publicKey !== 'string') {
    throw new Error(`the acquirer key file ${file} is not an ES256 key file ({"alg":"ES256","secretKey":hex,"publicKey":hex})`);
  }
  let publicKey: Uint8Array;
  const secretKey = fromHex(j.secretKey.toLowerCase());
  try {
    publicKey = publicKeyOf(secretKey);
  } catch {
    throw new Error(`the acquirer key file ${file} holds no valid P-256 secret key`);
  }
  if (toHex(publicKey) !== j.publicKey.toLowerCase())
    throw new Error(`the acquirer key file ${file}: the public key does not match the secret key`);
  return keyPairSigner({ secretKey, publicKey });
}
