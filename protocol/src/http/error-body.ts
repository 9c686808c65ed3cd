/**
 * The one parser of the DT services' error bodies (SPEC.md §8.4). Every
 * refusal of the ledger and the acquirer carries a stable `code` (SPEC.md
 * §8.2, §8.3) and, apart from it, the failed check's own `detail` and an
 * `index` when there is one. Two forms are read:
 *
 * - JSON `{code, message?, detail?, index?}` (what the ledger and the acquirer
 *   send); the acquirer's `details` object is read too (`details.cause` is its
 *   detail, `details.index` its index);
 * - deterministic CBOR (`application/cbor`), the map
 *   `{1: code, 2: message, ? 3: detail, ? 4: index}`.
 *
 * Nothing in an error body is trusted: a `code` that is not a stable code's
 * shape (upper-case letters, digits and `_`, at most 64) becomes
 * `HTTP_<status>`, texts are cut to 200 characters, a body that parses as
 * neither form yields just `HTTP_<status>`.
 *
 * @module
 */
import { fromUtf8 } from '../bytes.ts';
import { decodeDeterministic, type CborValue } from '../cbor/deterministic.ts';

/** The parsed error body of a refusal. */
export interface ErrorBody {
  /** The stable code, or `HTTP_<status>` when the body carries none. */
  readonly code: string;
  readonly message?: string;
  readonly detail?: string;
  readonly index?: number;
}

/** Largest error body parsed (longer ones are not read: the status alone counts). */
export const MAX_ERROR_BODY = 64 * 1024;
/** Longest `message` or `detail` kept. */
const MAX_TEXT = 200;
/** Shape of a stable code (SPEC.md §8). */
const CODE = /^[A-Z][A-Z0-9_]{0,63}$/;

/** CBOR map keys of the binary form. */
export const ERROR_BODY_KEYS = { code: 1, message: 2, detail: 3, index: 4 } as const;

function text(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? v.slice(0, MAX_TEXT) : undefined;
}

function index(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined;
}

function build(status: number, code: unknown, message: unknown, detail: unknown, idx: unknown): ErrorBody {
  const m = text(message);
  const d = text(detail);
  const i = index(idx);
  return {
    code: typeof code === 'string' && CODE.test(code) ? code : `HTTP_${status}`,
    ...(m !== undefined ? { message: m } : {}),
    ...(d !== undefined ? { detail: d } : {}),
    ...(i !== undefined ? { index: i } : {}),
  };
}

function fromJson(status: number, bytes: Uint8Array): ErrorBody | undefined {
  let j: unknown;
  try {
    j = JSON.parse(fromUtf8(bytes));
  } catch {
    return undefined;
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) return undefined;
  const o = j as Record<string, unknown>;
  const details = typeof o.details === 'object' && o.details !== null ? (o.details as Record<string, unknown>) : {};
  return build(status, o.code, o.message, o.detail ?? details.cause, o.index ?? details.index);
}

function fromCbor(status: number, bytes: Uint8Array): ErrorBody | undefined {
  let v: CborValue;
  try {
    v = decodeDeterministic(bytes, MAX_ERROR_BODY);
  } catch {
    return undefined;
  }
  if (!(v instanceof Map)) return undefined;
  const k = ERROR_BODY_KEYS;
  return build(status, v.get(k.code), v.get(k.message), v.get(k.detail), v.get(k.index));
}

/**
 * Parses the error body of an answer with HTTP `status` and `contentType`: CBOR when the type says
 * `cbor`, JSON otherwise. Never throws.
 *
 * @example
 * parseErrorBody(404, 'application/json', utf8('{"code":"CARD_UNKNOWN","message":"no such card"}'));
 * // { code: 'CARD_UNKNOWN', message: 'no such card' }
 */
export function parseErrorBody(status: number, contentType: string | null | undefined, bytes: Uint8Array): ErrorBody {
  const fallback: ErrorBody = { code: `HTTP_${status}` };
  if (bytes.length === 0 || bytes.length > MAX_ERROR_BODY) return fallback;
  const cbor = (contentType ?? '').toLowerCase().includes('cbor');
  return (cbor ? fromCbor(status, bytes) : fromJson(status, bytes)) ?? fallback;
}
