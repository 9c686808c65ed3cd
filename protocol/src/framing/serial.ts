/**
 * Serial framing of APDUs: a COBS-encoded, CRC-32-checked, 0x00-delimited
 * byte stream for hardware wallets on a UART or USB CDC link.
 *
 * ```text
 * frame body (before COBS)
 *   offset 0      type     uint8      0x01 command APDU, 0x02 response APDU,
 *                                     0x03 error/NAK, 0x04 reset/ping
 *   offset 1      seq      uint8      sequence number, see SPEC.md
 *   offset 2      payload  n bytes    APDU bytes (types 1, 2), reason (3), empty (4)
 *   offset 2+n    crc      uint32 BE  CRC-32/IEEE over offsets 0 .. 1+n
 * on the wire
 *   COBS(body) 0x00                   COBS removes every 0x00 from the body,
 *                                     so 0x00 only ever marks the end of a frame
 * ```
 *
 * COBS and CRC-32 are implemented here (table driven) so that the firmware
 * and the host share one definition. All functions are pure.
 *
 * @module
 */

import { DtError, ErrorCode } from '../errors.ts';

/** Frame type byte (offset 0 of the body). */
export const SERIAL_FRAME_TYPE = {
  /** Host → device: payload is one command APDU. */
  COMMAND: 0x01,
  /** Device → host: payload is one response APDU (data | SW1 SW2). */
  RESPONSE: 0x02,
  /** Either direction: the frame with this seq was refused; payload is one reason byte. */
  ERROR: 0x03,
  /** Host → device: reset link state; the device answers RESET with the same seq (ping). */
  RESET: 0x04,
} as const;

/** A frame type listed in {@link SERIAL_FRAME_TYPE}. */
export type SerialFrameType = (typeof SERIAL_FRAME_TYPE)[keyof typeof SERIAL_FRAME_TYPE];

/** Reason byte carried by an ERROR (NAK) frame. */
export const SERIAL_NAK_REASON = {
  /** The received frame failed its CRC. */
  CRC: 0x01,
  /** The received frame could not be decoded (COBS, length, type). */
  MALFORMED: 0x02,
  /** The received frame exceeded the receiver's size limit. */
  TOO_LARGE: 0x03,
  /** A command arrived while the previous one was still being processed. */
  BUSY: 0x04,
} as const;

/** Default largest payload of one frame. */
export const SERIAL_MAX_PAYLOAD = 4096;

/** Bytes of a frame body besides the payload: type (1) + seq (1) + CRC (4). */
export const SERIAL_BODY_OVERHEAD = 6;

/** One decoded serial frame. */
export interface SerialFrame {
  /** Frame type, see {@link SERIAL_FRAME_TYPE}. */
  type: SerialFrameType;
  /** Sequence number 0..255. */
  seq: number;
  /** Payload bytes. */
  payload: Uint8Array;
}

/** One result of {@link SerialFrameDecoder.push}: a frame, or why bytes were dropped. */
export type SerialDecodeResult = { frame: SerialFrame } | { error: DtError };

// ---------------------------------------------------------------------------
// CRC-32/IEEE (as in Ethernet, zlib, PNG): polynomial 0x04C11DB7 processed
// bit-reflected (0xEDB88320), initial value 0xFFFFFFFF, input and output
// reflected, final XOR 0xFFFFFFFF. Check value of "123456789": 0xCBF43926.
// ---------------------------------------------------------------------------

const CRC_TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  return table;
})();

/**
 * CRC-32/IEEE of `data`, as an unsigned 32-bit number.
 *
 * @example crc32(new TextEncoder().encode('123456789')) === 0xcbf43926
 */
export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------
// COBS (Cheshire & Baker, "Consistent Overhead Byte Stuffing", 1999)
// ---------------------------------------------------------------------------

/** Largest COBS encoding of `n` bytes: one code byte per started 254-byte run, plus one. */
export function cobsMaxEncodedLength(n: number): number {
  return n + 1 + Math.floor(n / 254);
}

/**
 * COBS-encodes `data`; the result contains no 0x00 byte (the delimiter is
 * not included).
 *
 * The input is cut at each 0x00 and after every run of 254 non-zero bytes.
 * Each run is written as a code byte (run length + 1) followed by the run; a
 * code below 0xFF stands for the run followed by a 0x00, the code 0xFF for 254
 * bytes with no 0x00 after them. The implicit 0x00 after the last run is
 * dropped by the decoder; a 254-byte run at the very end gets no empty run
 * after it.
 *
 * @example cobsEncode(Uint8Array.of(0x11, 0x22, 0x00, 0x33)) // 03 11 22 02 33
 */
export function cobsEncode(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(cobsMaxEncodedLength(data.length));
  let codeAt = 0; // where the code byte of the current run goes
  let o = 1;
  let code = 1; // run length + 1
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (b === 0) {
      out[codeAt] = code;
      codeAt = o++;
      code = 1;
      continue;
    }
    out[o++] = b;
    code++;
    if (code === 0xff && i + 1 < data.length) {
      // Full run of 254: close it, no implicit zero; start a new one only if
      // input remains.
      out[codeAt] = code;
      codeAt = o++;
      code = 1;
    }
  }
  out[codeAt] = code;
  return out.slice(0, o);
}

/**
 * Decodes COBS bytes (without the 0x00 delimiter).
 *
 * @throws DtError FRAME_MALFORMED when the input is empty, contains 0x00, or
 *   a code byte points past the end.
 */
export function cobsDecode(encoded: Uint8Array): Uint8Array {
  if (encoded.length === 0) throw new DtError(ErrorCode.FRAME_MALFORMED, 'empty COBS block');
  const out = new Uint8Array(encoded.length); // decoding never grows the data
  let o = 0;
  let i = 0;
  while (i < encoded.length) {
    const code = encoded[i++]!;
    if (code === 0) throw new DtError(ErrorCode.FRAME_MALFORMED, 'COBS block contains 0x00', { offset: i - 1 });
    const end = i + code - 1;
    if (end > encoded.length) {
      throw new DtError(ErrorCode.FRAME_MALFORMED, 'COBS code byte points past the end of the block', { offset: i - 1 });
    }
    for (; i < end; i++) {
      const b = encoded[i]!;
      if (b === 0) throw new DtError(ErrorCode.FRAME_MALFORMED, 'COBS block contains 0x00', { offset: i });
      out[o++] = b;
    }
    // A code below 0xFF stands for its run plus a 0x00, except after the last run.
    if (code !== 0xff && i < encoded.length) out[o++] = 0;
  }
  return out.slice(0, o);
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

function isFrameType(t: number): t is SerialFrameType {
  return t >= SERIAL_FRAME_TYPE.COMMAND && t <= SERIAL_FRAME_TYPE.RESET;
}

function tooLarge(length: number, limit: number): DtError {
  return new DtError(ErrorCode.TOO_LARGE, `serial frame payload of ${length} bytes exceeds ${limit}`, { length, limit });
}

/**
 * Encodes one frame for the wire: COBS(type | seq | payload | CRC-32 BE) then 0x00.
 *
 * @throws DtError TOO_LARGE when the payload exceeds `maxPayload` (default 4096);
 *   FRAME_MALFORMED for an unknown type or a seq outside 0..255.
 */
export function encodeFrame(frame: SerialFrame, maxPayload: number = SERIAL_MAX_PAYLOAD): Uint8Array {
  const { type, seq, payload } = frame;
  if (!isFrameType(type)) throw new DtError(ErrorCode.FRAME_MALFORMED, `unknown serial frame type ${type}`, { type });
  if (!Number.isInteger(seq) || seq < 0 || seq > 0xff) {
    throw new DtError(ErrorCode.FRAME_MALFORMED, 'serial frame seq must be a byte (0..255)', { field: 'seq' });
  }
  if (payload.length > maxPayload) throw tooLarge(payload.length, maxPayload);

  const body = new Uint8Array(payload.length + SERIAL_BODY_OVERHEAD);
  body[0] = type; // offset 0: type
  body[1] = seq; // offset 1: seq
  body.set(payload, 2); // offset 2: payload
  const crc = crc32(body.subarray(0, 2 + payload.length));
  const at = 2 + payload.length; // offset 2+n: CRC-32, big-endian
  body[at] = crc >>> 24;
  body[at + 1] = (crc >>> 16) & 0xff;
  body[at + 2] = (crc >>> 8) & 0xff;
  body[at + 3] = crc & 0xff;

  const encoded = cobsEncode(body);
  const wire = new Uint8Array(encoded.length + 1);
  wire.set(encoded, 0);
  wire[encoded.length] = 0x00; // delimiter
  return wire;
}

/**
 * Decodes one frame from its COBS bytes (the 0x00 delimiter removed).
 *
 * Checks, in order: COBS validity, minimum body length (6), payload size,
 * CRC, frame type.
 *
 * @throws DtError FRAME_MALFORMED (bad COBS, body too short, unknown type),
 *   TOO_LARGE (payload over `maxPayload`), FRAME_CRC (checksum mismatch).
 */
export function decodeFrame(encoded: Uint8Array, maxPayload: number = SERIAL_MAX_PAYLOAD): SerialFrame {
  const body = cobsDecode(encoded);
  if (body.length < SERIAL_BODY_OVERHEAD) {
    throw new DtError(ErrorCode.FRAME_MALFORMED, `serial frame body of ${body.length} bytes is shorter than 6`, {
      length: body.length,
    });
  }
  const n = body.length - SERIAL_BODY_OVERHEAD;
  if (n > maxPayload) throw tooLarge(n, maxPayload);
  const at = 2 + n;
  const got = ((body[at]! << 24) | (body[at + 1]! << 16) | (body[at + 2]! << 8) | body[at + 3]!) >>> 0;
  const want = crc32(body.subarray(0, at));
  if (got !== want) {
    throw new DtError(ErrorCode.FRAME_CRC, 'serial frame CRC mismatch', {
      length: body.length,
      seq: body[1]!,
    });
  }
  const type = body[0]!;
  if (!isFrameType(type)) throw new DtError(ErrorCode.FRAME_MALFORMED, `unknown serial frame type ${type}`, { type });
  return { type, seq: body[1]!, payload: body.slice(2, at) };
}

/**
 * The {@link SERIAL_NAK_REASON} byte to send back for a decode error.
 */
export function nakReasonFor(error: DtError): number {
  if (error.code === ErrorCode.FRAME_CRC) return SERIAL_NAK_REASON.CRC;
  if (error.code === ErrorCode.TOO_LARGE) return SERIAL_NAK_REASON.TOO_LARGE;
  return SERIAL_NAK_REASON.MALFORMED;
}

/** Options of {@link SerialFrameDecoder}. */
export interface SerialFrameDecoderOptions {
  /** Largest payload accepted (default 4096); bounds the bytes buffered. */
  maxPayload?: number;
}

/**
 * Streaming decoder: feed it the bytes read from the port in any chunking,
 * get back whole frames and the errors of the frames it dropped.
 *
 * Bytes are buffered up to the next 0x00. An empty block (two delimiters in a
 * row) is skipped silently, so a sender may precede a frame with 0x00 to
 * flush any partial garbage at the receiver. A block that fails to decode
 * yields an error and decoding resumes after its delimiter. A block that grows
 * beyond the largest valid encoded frame yields one TOO_LARGE error at once;
 * its bytes are discarded up to the next 0x00, so the buffer never exceeds
 * that size.
 */
export class SerialFrameDecoder {
  readonly #maxPayload: number;
  readonly #buffer: Uint8Array;
  #length = 0;
  #discarding = false;

  /** Creates a decoder with an empty buffer. */
  constructor(options: SerialFrameDecoderOptions = {}) {
    this.#maxPayload = options.maxPayload ?? SERIAL_MAX_PAYLOAD;
    this.#buffer = new Uint8Array(cobsMaxEncodedLength(this.#maxPayload + SERIAL_BODY_OVERHEAD));
  }

  /** Bytes currently buffered (an incomplete frame). */
  get buffered(): number {
    return this.#length;
  }

  /** Drops any partial frame. */
  reset(): void {
    this.#length = 0;
    this.#discarding = false;
  }

  /** Consumes a chunk of received bytes; returns the frames and errors it completed, in order. */
  push(chunk: Uint8Array): SerialDecodeResult[] {
    const results: SerialDecodeResult[] = [];
    let start = 0;
    for (;;) {
      const zero = chunk.indexOf(0, start);
      const end = zero < 0 ? chunk.length : zero;
      if (!this.#discarding && end > start) {
        if (this.#length + (end - start) > this.#buffer.length) {
          results.push({
            error: new DtError(
              ErrorCode.TOO_LARGE,
              `serial frame longer than ${this.#buffer.length} encoded bytes (payload limit ${this.#maxPayload}); dropped`,
              { limit: this.#maxPayload },
            ),
          });
          this.#discarding = true;
          this.#length = 0;
        } else {
          this.#buffer.set(chunk.subarray(start, end), this.#length);
          this.#length += end - start;
        }
      }
      if (zero < 0) break;
      // Delimiter: finish the current block.
      if (!this.#discarding && this.#length > 0) {
        try {
          results.push({ frame: decodeFrame(this.#buffer.subarray(0, this.#length), this.#maxPayload) });
        } catch (e) {
          if (!(e instanceof DtError)) throw e;
          results.push({ error: e });
        }
      }
      this.#discarding = false;
      this.#length = 0;
      start = zero + 1;
    }
    return results;
  }
}
