/**
 * One HTTP exchange on the platform's `fetch`, the way every DT client does
 * it: a time limit on the whole exchange (headers and body) through an
 * `AbortSignal`, the caller's own signal honoured, a body read as a stream and
 * abandoned as soon as it passes the caller's byte bound (an error body: 64
 * KiB; a misbehaving peer cannot exhaust memory), and one typed error per way it fails
 * (`./errors.ts`). A non-2xx answer throws {@link HttpRefusedError} with its
 * error body parsed by {@link parseErrorBody}.
 *
 * @module
 */
import { HttpBadResponseError, HttpRefusedError, HttpUnreachableError } from './errors.ts';
import { MAX_ERROR_BODY, parseErrorBody } from './error-body.ts';

/** The `fetch` shape the helper needs (the global one by default; tests may wrap it). */
export type FetchLike = (input: string | URL, init: RequestInit) => Promise<Response>;

/** Options of {@link httpRequest}. */
export interface HttpRequestOptions {
  /** Default `GET`, or `POST` when there is a body. */
  readonly method?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: Uint8Array;
  /** Largest answer body accepted (bytes); a longer one is abandoned mid-stream ({@link HttpBadResponseError} `TOO_LARGE`). */
  readonly maxBytes: number;
  /** Time limit of the whole exchange, body included (default 30 000 ms). */
  readonly timeoutMs?: number;
  /** The caller's cancellation: when it fires, the exchange stops and its reason is thrown. */
  readonly signal?: AbortSignal;
  /** `fetch` implementation (default the global one). */
  readonly fetch?: FetchLike;
}

/** A 2xx answer, its body read within the bound. */
export interface HttpAnswer {
  readonly status: number;
  /** The answer's `content-type`, lower case, or `''`. */
  readonly contentType: string;
  readonly body: Uint8Array;
}

/** Default time limit of one exchange. */
export const DEFAULT_HTTP_TIMEOUT_MS = 30_000;

/** `url` without its query (error messages and `HttpUnreachableError.url` never carry query parameters). */
function bare(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

class TooLarge extends Error {}

/** Reads `res`'s body, giving up (and cancelling the stream) once it passes `max` bytes. */
async function readBounded(res: Response, max: number): Promise<Uint8Array> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > max) {
    await res.body?.cancel().catch(() => undefined);
    throw new TooLarge(`declared ${declared} bytes`);
  }
  if (!res.body) return new Uint8Array(0);
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    n += r.value.length;
    if (n > max) {
      await reader.cancel().catch(() => undefined);
      throw new TooLarge(`more than ${max} bytes`);
    }
    chunks.push(r.value);
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

/**
 * Whether `v` is an absolute http: or https: URL, the only kind {@link httpRequest} is given: what the
 * CLIs' `--ledger` / `--acquirer` options accept (anything else is their usage error, before anything is
 * written or sent).
 */
export function isHttpUrl(v: string): boolean {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    return false;
  }
  return u.protocol === 'http:' || u.protocol === 'https:';
}

/**
 * Sends one request and reads its answer within `maxBytes`.
 *
 * @throws {HttpUnreachableError} no answer: network, the time limit, a body that stopped arriving
 * @throws {HttpRefusedError} a status other than 2xx, with the stable code of its error body
 * @throws {HttpBadResponseError} `TOO_LARGE`: a 2xx answer over `maxBytes`
 * @throws the reason of `options.signal` when the caller cancelled
 *
 * @example
 * const { body } = await httpRequest(new URL('/v1/crl', base), { maxBytes: LIMITS.maxRevocationListSize, timeoutMs: 10_000 });
 */
export async function httpRequest(url: string | URL, options: HttpRequestOptions): Promise<HttpAnswer> {
  const u = new URL(url);
  const signal = options.signal;
  if (signal?.aborted) throw signal.reason;
  const timeout = AbortSignal.timeout(options.timeoutMs ?? DEFAULT_HTTP_TIMEOUT_MS);
  const both = signal ? AbortSignal.any([signal, timeout]) : timeout;
  const doFetch = options.fetch ?? fetch;
  const method = options.method ?? (options.body ? 'POST' : 'GET');
  const unreachable = (what: string, e: unknown): Error => {
    if (signal?.aborted) return signal.reason as Error;
    if (timeout.aborted)
      return new HttpUnreachableError(
        bare(u),
        `${method} ${bare(u)}: no answer within ${options.timeoutMs ?? DEFAULT_HTTP_TIMEOUT_MS} ms`,
        {
          timedOut: true,
          cause: e,
        },
      );
    return new HttpUnreachableError(bare(u), `${method} ${bare(u)}: ${what}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
  };
  let res: Response;
  try {
    res = await doFetch(u, {
      method,
      ...(options.headers ? { headers: { ...options.headers } } : {}),
      ...(options.body ? { body: options.body } : {}),
      signal: both,
    });
  } catch (e) {
    throw unreachable('unreachable', e);
  }
  const ok = res.status >= 200 && res.status < 300;
  const contentType = (res.headers.get('content-type') ?? '').toLowerCase();
  let body: Uint8Array;
  try {
    body = await readBounded(res, ok ? options.maxBytes : MAX_ERROR_BODY);
  } catch (e) {
    if (!(e instanceof TooLarge)) throw unreachable('the answer broke off', e);
    if (ok) throw new HttpBadResponseError(res.status, 'TOO_LARGE', `${method} ${bare(u)}: answer too large (${e.message})`);
    // An oversized error body is not read: the status alone tells the refusal.
    throw new HttpRefusedError(res.status, { code: `HTTP_${res.status}` });
  }
  if (!ok) throw new HttpRefusedError(res.status, parseErrorBody(res.status, contentType, body));
  return { status: res.status, contentType, body };
}
