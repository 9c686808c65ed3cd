/**
 * Protocol benchmark: operations per second for encoding and decoding every
 * message type, ES256 signing, and verification with the reference
 * (`@noble/curves`) and the Node fast paths (`nativeVerifier`: the setup-built
 * addon, and `node:crypto`), on the committed test vectors; the native ones
 * also with a cold key (a different key each time, as a ledger among many
 * cards meets them: `node:crypto` then imports a KeyObject per key).
 *
 * Usage: `npm run bench -w protocol [-- --out FILE] [--time MS]`
 * - `--out FILE` or env `BENCH_OUT`: where the JSON goes (default
 *   `protocol/bench-results.json`, ignored by git);
 * - `--time MS` or env `BENCH_TIME_MS`: measuring time per operation
 *   (default 1000 ms; a short warm-up runs first).
 *
 * Writes JSON (machine-readable, for trends); prints progress and a short
 * table to stderr. Tests never assert on timings: this script is the place
 * for them.
 *
 * @module
 */
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

import { generateKeyPairSync, sign as nodeSign } from 'node:crypto';
import {
  P256_N,
  concatBytes,
  toHex,
  decodeMessage,
  encodeMessage,
  fromHex,
  nobleVerifier,
  openSigned,
  sign,
  verifySigned,
  type MessageName,
  type Verifier,
} from '../src/index.ts';
import { nativeVerifier, nativeVerifierBackend, nodeCryptoVerifier } from '../src/native.ts';
import { isSigned, loadVectorFiles } from './vectors-lib.ts';

interface Options {
  readonly out: string;
  readonly timeMs: number;
}

function parseArgs(argv: readonly string[]): Options {
  let out = process.env['BENCH_OUT'] || resolve(dirname(fileURLToPath(import.meta.url)), '..', 'bench-results.json');
  let timeMs = Number(process.env['BENCH_TIME_MS'] || 1000);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--out') out = resolve(argv[++i] ?? fail('--out needs a file'));
    else if (a.startsWith('--out=')) out = resolve(a.slice(6));
    else if (a === '--time') timeMs = Number(argv[++i]);
    else if (a.startsWith('--time=')) timeMs = Number(a.slice(7));
    else if (a === '--help' || a === '-h') {
      process.stderr.write('usage: bench.ts [--out FILE] [--time MS]   (env BENCH_OUT, BENCH_TIME_MS)\n');
      process.exit(0);
    } else fail(`unknown argument ${a}`);
  }
  if (!Number.isFinite(timeMs) || timeMs <= 0) fail('--time must be a positive number of milliseconds');
  return { out, timeMs };
}

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

/** `native`: `nativeVerifier` (the addon when built, see `nativeVerifierBackend` in the JSON); `node-crypto`: `nodeCryptoVerifier`. */
type Label = 'noble' | 'native' | 'node-crypto';

/** One measured operation. */
interface Result {
  readonly name: string;
  readonly group: 'encode' | 'decode' | 'sign' | 'verify';
  readonly message?: MessageName;
  readonly verifier?: Label;
  /** Verification: the same key every time (`warm`: parsed keys are cached) or a different one (`cold`). */
  readonly key?: 'warm' | 'cold';
  /** Size of the object the operation works on, bytes. */
  readonly bytes: number;
  readonly opsPerSec: number;
  readonly iterations: number;
  readonly elapsedMs: number;
}

interface Bench {
  readonly name: string;
  readonly group: Result['group'];
  readonly message?: MessageName;
  readonly verifier?: Label;
  readonly key?: 'warm' | 'cold';
  readonly bytes: number;
  readonly fn: () => unknown;
}

/** Runs `fn` repeatedly for about `timeMs` (after a warm-up of a tenth of that) and returns ops/s. */
function measure(fn: () => unknown, timeMs: number): { opsPerSec: number; iterations: number; elapsedMs: number } {
  let sink: unknown;
  const warmEnd = performance.now() + timeMs / 10;
  while (performance.now() < warmEnd) sink = fn();
  let iterations = 0;
  // Check the clock every `batch` calls so that cheap operations are not dominated by performance.now().
  let batch = 1;
  const start = performance.now();
  let now = start;
  while (now - start < timeMs) {
    for (let i = 0; i < batch; i++) sink = fn();
    iterations += batch;
    now = performance.now();
    if (now - start < timeMs / 20) batch *= 2;
  }
  if (sink === Symbol.for('never')) process.stderr.write(''); // keep the result observable
  const elapsedMs = now - start;
  return { opsPerSec: (iterations * 1000) / elapsedMs, iterations, elapsedMs };
}

function benches(): Bench[] {
  const out: Bench[] = [];
  let transferSig: { sig: Uint8Array; msg: Uint8Array; pk: Uint8Array; sk: Uint8Array; hex: Uint8Array } | undefined;
  for (const [, f] of loadVectorFiles()) {
    const name = f.message;
    if (name === undefined) continue;
    // The largest valid vector of each type: the realistic worst case for that message.
    const v = [...f.valid].sort((a, b) => b.hex.length - a.hex.length)[0]!;
    const bytes = fromHex(v.hex);
    if (isSigned(name)) {
      const { message } = openSigned(name, bytes);
      const payload = fromHex(v.payload!);
      out.push({ name: `encode ${name}`, group: 'encode', message: name, bytes: payload.length, fn: () => encodeMessage(name, message) });
      out.push({
        name: `decode ${name} (COSE + payload, no signature check)`,
        group: 'decode',
        message: name,
        bytes: bytes.length,
        fn: () => openSigned(name, bytes),
      });
      if (name === 'Transfer') {
        transferSig = {
          sig: fromHex(v.signature!),
          msg: fromHex(v.sigStructure!),
          pk: fromHex(v.signer!.publicKey),
          sk: fromHex(v.signer!.privateKey),
          hex: bytes,
        };
      }
    } else {
      const message = decodeMessage(name, bytes);
      out.push({ name: `encode ${name}`, group: 'encode', message: name, bytes: bytes.length, fn: () => encodeMessage(name, message) });
      out.push({ name: `decode ${name}`, group: 'decode', message: name, bytes: bytes.length, fn: () => decodeMessage(name, bytes) });
    }
  }
  if (!transferSig) throw new Error('transfer.json has no valid vector');
  const t = transferSig;
  out.push({ name: 'sign ES256 (Transfer Sig_structure, noble)', group: 'sign', bytes: t.msg.length, fn: () => sign(t.msg, t.sk) });
  const verifiers: Array<[Label, Verifier]> = [
    ['noble', nobleVerifier],
    ['native', nativeVerifier],
    ['node-crypto', nodeCryptoVerifier],
  ];
  // Cold keys: more distinct keys than node:crypto's KeyObject cache holds, each verified in turn.
  const cold = Array.from({ length: 5000 }, () => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = publicKey.export({ format: 'jwk' });
    const pk = concatBytes(
      Uint8Array.of(4),
      new Uint8Array(Buffer.from(jwk.x!, 'base64url')),
      new Uint8Array(Buffer.from(jwk.y!, 'base64url')),
    );
    let sig: Uint8Array = new Uint8Array(nodeSign('sha256', t.msg, { key: privateKey, dsaEncoding: 'ieee-p1363' }));
    // Low-S form, as DT signers make them (the verifiers refuse high S).
    const sv = BigInt(`0x${toHex(sig.subarray(32))}`);
    if (sv > P256_N / 2n) sig = concatBytes(sig.subarray(0, 32), fromHex((P256_N - sv).toString(16).padStart(64, '0')));
    return { pk, sig };
  });
  let next = 0;
  for (const [label, verifier] of verifiers) {
    if (label !== 'noble')
      out.push({
        name: `verify ES256 (${label}, a cold key each time)`,
        group: 'verify',
        verifier: label,
        key: 'cold',
        bytes: t.msg.length,
        fn: () => {
          const c = cold[next++ % cold.length]!;
          if (!verifier.verify(c.sig, t.msg, c.pk)) throw new Error('benchmark signature did not verify');
        },
      });
    out.push({
      name: `verify ES256 (${label})`,
      group: 'verify',
      verifier: label,
      key: 'warm',
      bytes: t.msg.length,
      fn: () => {
        if (!verifier.verify(t.sig, t.msg, t.pk)) throw new Error('benchmark signature did not verify');
      },
    });
    out.push({
      name: `verifySigned Transfer (${label})`,
      group: 'verify',
      message: 'Transfer',
      verifier: label,
      bytes: t.hex.length,
      fn: () => verifySigned('Transfer', t.hex, t.pk, verifier),
    });
  }
  return out;
}

function main(): void {
  const opts = parseArgs(process.argv.slice(2));
  const list = benches();
  const results: Result[] = [];
  list.forEach((b, i) => {
    process.stderr.write(`[${String(i + 1).padStart(2)}/${list.length}] ${b.name} ... `);
    const m = measure(b.fn, opts.timeMs);
    process.stderr.write(`${Math.round(m.opsPerSec)} ops/s\n`);
    results.push({
      name: b.name,
      group: b.group,
      ...(b.message ? { message: b.message } : {}),
      ...(b.verifier ? { verifier: b.verifier } : {}),
      ...(b.key ? { key: b.key } : {}),
      bytes: b.bytes,
      ...m,
    });
  });
  const report = {
    tool: '@dt/protocol bench',
    date: new Date().toISOString(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    timeMsPerOperation: opts.timeMs,
    nativeVerifierBackend,
    results,
  };
  writeFileSync(opts.out, JSON.stringify(report, null, 2) + '\n');
  const w = Math.max(...results.map((r) => r.name.length));
  process.stderr.write(`\n${'operation'.padEnd(w)}  ${'ops/s'.padStart(10)}  ${'bytes'.padStart(8)}\n`);
  for (const r of results)
    process.stderr.write(`${r.name.padEnd(w)}  ${Math.round(r.opsPerSec).toString().padStart(10)}  ${String(r.bytes).padStart(8)}\n`);
  const noble = results.find((r) => r.name === 'verify ES256 (noble)')!;
  const native = results.find((r) => r.name === 'verify ES256 (native)')!;
  process.stderr.write(`\nnative verify is ${(native.opsPerSec / noble.opsPerSec).toFixed(1)}x noble; results in ${opts.out}\n`);
}

main();
