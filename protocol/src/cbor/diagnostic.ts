/**
 * CBOR diagnostic notation (RFC 8949 section 8) for the values DT CBOR allows,
 * used by the CLIs and the lab transcripts to show messages to people.
 *
 * Signed objects inside byte strings stay as `h'...'`; pass
 * `{ expand: true }` to decode nested CBOR byte strings (COSE payloads,
 * protected headers) and show them as `<<...>>` (RFC 8610 appendix G.3).
 *
 * @module
 */
import { toHex } from '../bytes.ts';
import { decodeDeterministic, type CborValue } from './deterministic.ts';

/** Options of {@link toDiagnostic}. */
export interface DiagnosticOptions {
  /** Show byte strings that hold deterministic CBOR as embedded CBOR `<<...>>`. */
  readonly expand?: boolean;
  /** Indentation step in spaces; 0 prints on one line. */
  readonly indent?: number;
  /** Byte strings longer than this are shown shortened (`h'0102…' (1234 bytes)`); default unlimited. */
  readonly maxBytes?: number;
}

/**
 * Renders a decoded DT CBOR value as diagnostic notation.
 *
 * @example
 * toDiagnostic(new Map([[1, 'a'], [2, Uint8Array.of(1, 2)]])) // '{1: "a", 2: h\'0102\'}'
 */
export function toDiagnostic(value: CborValue, options: DiagnosticOptions = {}): string {
  return render(value, options, 0);
}

function tryEmbedded(bytes: Uint8Array): CborValue | undefined {
  // Only structured CBOR (array, map, tag) is shown as embedded: a short byte
  // string that happens to be a valid integer encoding is most likely not CBOR.
  const major = bytes.length > 1 ? bytes[0]! >> 5 : -1;
  if (major !== 4 && major !== 5 && major !== 6) return undefined;
  try {
    return decodeDeterministic(bytes, bytes.length);
  } catch {
    return undefined;
  }
}

function render(v: CborValue, o: DiagnosticOptions, depth: number): string {
  const step = o.indent ?? 0;
  const nl = (d: number) => (step > 0 ? '\n' + ' '.repeat(step * d) : '');
  const sep = step > 0 ? ',' : ', ';
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'string') return JSON.stringify(v);
  if (v instanceof Uint8Array) {
    if (o.expand) {
      const inner = tryEmbedded(v);
      if (inner !== undefined) return '<<' + render(inner, o, depth) + '>>';
    }
    if (o.maxBytes !== undefined && v.length > o.maxBytes) {
      return `h'${toHex(v.subarray(0, o.maxBytes))}…' (${v.length} bytes)`;
    }
    return `h'${toHex(v)}'`;
  }
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    return '[' + v.map((x) => nl(depth + 1) + render(x, o, depth + 1)).join(sep) + nl(depth) + ']';
  }
  if (v instanceof Map) {
    if (v.size === 0) return '{}';
    const parts = [...v].map(([k, x]) => nl(depth + 1) + render(k, o, depth + 1) + ': ' + render(x, o, depth + 1));
    return '{' + parts.join(sep) + nl(depth) + '}';
  }
  return `${v.tag}(${render(v.value, o, depth)})`;
}
