/**
 * SHA-256 for every engine: `fast-sha256` (plain 32-bit arithmetic with the rounds written out,
 * which an interpreter such as QuickJS, the card's engine, runs about 1.7 times as fast as
 * `@noble/hashes`' helper calls). One hash state is reused for every call (hashing is
 * synchronous, so calls never interleave), which spares the three buffers a fresh state
 * allocates; it is wiped after each digest, as `fast-sha256`'s own one-shot does (the card
 * hashes its state, key included, for its journal).
 *
 * This is the `default` target of the package import `#sha256` (package.json `imports`), which
 * the firmware bundle (esbuild, platform neutral) gets; Node resolves it to `sha256-node.ts`,
 * which hashes small inputs here too.
 *
 * @module
 */
import fastSha256 from 'fast-sha256';

const state = new fastSha256.Hash();

/** SHA-256 (FIPS 180-4) of `data`, as a new 32-byte array. */
export function sha256Digest(data: Uint8Array): Uint8Array {
  state.reset();
  state.update(data);
  const out = new Uint8Array(32);
  state.finish(out);
  // Wipes the buffers (the last block of `data` and its message schedule would stay there) and resets.
  state.clean();
  return out;
}
