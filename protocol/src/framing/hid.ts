/**
 * HID framing of APDUs over fixed-size USB HID reports (64 bytes by default),
 * in the channel / tag / sequence style of hardware-wallet HID transports.
 *
 * One message (a command APDU from the host, or a response APDU from the
 * device) is cut into reports:
 *
 * ```text
 * every report
 *   offset 0  channel   uint16 BE  chosen by the host, echoed by the device
 *   offset 2  tag       uint8      0x05 = APDU
 *   offset 3  sequence  uint16 BE  0 for the first report, +1 per report
 * report with sequence 0
 *   offset 5  length    uint16 BE  total message length in bytes (0..65535)
 *   offset 7  data      first (packetSize - 7) bytes of the message
 * report with sequence > 0
 *   offset 5  data      next (packetSize - 5) bytes of the message
 * unused bytes at the end of the last report are 0x00
 * ```
 *
 * The functions here are pure; moving reports (node-hid, WebHID, the HID
 * report-id prefix some platforms need) is the transport's job.
 *
 * @module
 */

import { DtError, ErrorCode } from '../errors.ts';

/** Default HID report size in bytes. */
export const HID_PACKET_SIZE = 64;

/** Tag byte of reports carrying an APDU. */
export const HID_TAG_APDU = 0x05;

/** Largest message one HID exchange can carry (the length field is 16 bits). */
export const HID_MAX_PAYLOAD = 0xffff;

/** Header size of the first report: channel (2) + tag (1) + sequence (2) + length (2). */
const FIRST_HEADER = 7;
/** Header size of the following reports: channel (2) + tag (1) + sequence (2). */
const NEXT_HEADER = 5;

/**
 * Reassembly state of one message, as returned by {@link reduceResponse}.
 * Treat it as opaque and immutable; `undefined` is the empty state.
 */
export interface HidAccumulator {
  /** Total message length, known once the report with sequence 0 arrived. */
  expected?: number;
  /** Message bytes received so far. */
  data: Uint8Array;
  /** Sequence number of the next report expected. */
  sequence: number;
}

function checkChannel(channel: number): void {
  if (!Number.isInteger(channel) || channel < 0 || channel > 0xffff) {
    throw new RangeError('HID channel must be an integer 0..65535');
  }
}

/**
 * Cuts a message into HID reports of `packetSize` bytes.
 *
 * An empty message still produces one report (length 0).
 *
 * @throws DtError TOO_LARGE when the payload exceeds 65535 bytes;
 *   RangeError for a channel outside 0..65535 or a packet size below 8.
 * @example
 * makeBlocks(0x0101, Uint8Array.of(0xe0, 0x01, 0x00, 0x00, 0x00))
 * // [01 01 05 00 00 00 05 E0 01 00 00 00 00 ... 00] (64 bytes)
 */
export function makeBlocks(channel: number, payload: Uint8Array, packetSize: number = HID_PACKET_SIZE): Uint8Array[] {
  checkChannel(channel);
  if (!Number.isInteger(packetSize) || packetSize < FIRST_HEADER + 1) {
    throw new RangeError(`HID packet size must be an integer of at least ${FIRST_HEADER + 1}`);
  }
  if (payload.length > HID_MAX_PAYLOAD) {
    throw new DtError(ErrorCode.TOO_LARGE, `HID message of ${payload.length} bytes exceeds ${HID_MAX_PAYLOAD}`, {
      length: payload.length,
      limit: HID_MAX_PAYLOAD,
    });
  }
  const blocks: Uint8Array[] = [];
  let offset = 0;
  let sequence = 0;
  do {
    const block = new Uint8Array(packetSize); // zero padded
    block[0] = channel >>> 8;
    block[1] = channel & 0xff;
    block[2] = HID_TAG_APDU;
    block[3] = sequence >>> 8;
    block[4] = sequence & 0xff;
    let start = NEXT_HEADER;
    if (sequence === 0) {
      block[5] = payload.length >>> 8;
      block[6] = payload.length & 0xff;
      start = FIRST_HEADER;
    }
    const chunk = payload.subarray(offset, offset + packetSize - start);
    block.set(chunk, start);
    offset += chunk.length;
    blocks.push(block);
    sequence++;
  } while (offset < payload.length);
  return blocks;
}

/**
 * Adds one received report to the reassembly state and returns the new state
 * (the old one is left untouched). Start with `undefined`.
 *
 * Reports may be longer than needed (trailing padding is ignored) but must
 * hold their header.
 *
 * @throws DtError FRAME_CHANNEL when the report is for another channel;
 *   FRAME_MALFORMED when it is shorter than its header or its tag is not 0x05;
 *   FRAME_SEQUENCE when its sequence number is not the next one expected, or
 *   when the message is already complete.
 */
export function reduceResponse(acc: HidAccumulator | undefined, block: Uint8Array, channel: number): HidAccumulator {
  if (block.length < NEXT_HEADER) {
    throw new DtError(ErrorCode.FRAME_MALFORMED, `HID report of ${block.length} bytes is shorter than its header`, {
      length: block.length,
    });
  }
  const got = (block[0]! << 8) | block[1]!;
  if (got !== channel) {
    throw new DtError(ErrorCode.FRAME_CHANNEL, `HID report for channel ${got}, expected ${channel}`, {
      channel: got,
      expected: channel,
    });
  }
  if (block[2] !== HID_TAG_APDU) {
    throw new DtError(ErrorCode.FRAME_MALFORMED, `HID report tag ${block[2]} is not the APDU tag 5`, {
      tag: block[2]!,
    });
  }
  const sequence = (block[3]! << 8) | block[4]!;
  const want = acc?.sequence ?? 0;
  if (acc !== undefined && isComplete(acc)) {
    throw new DtError(ErrorCode.FRAME_SEQUENCE, `HID report ${sequence} after the message was complete`, { sequence });
  }
  if (sequence !== want) {
    throw new DtError(ErrorCode.FRAME_SEQUENCE, `HID report ${sequence} out of order, expected ${want}`, {
      sequence,
      expected: want,
    });
  }

  if (sequence === 0) {
    if (block.length < FIRST_HEADER) {
      throw new DtError(ErrorCode.FRAME_MALFORMED, `first HID report of ${block.length} bytes has no length field`, {
        length: block.length,
      });
    }
    const expected = (block[5]! << 8) | block[6]!;
    const take = Math.min(expected, block.length - FIRST_HEADER);
    return { expected, data: block.slice(FIRST_HEADER, FIRST_HEADER + take), sequence: 1 };
  }

  // sequence > 0 implies acc was set by the report with sequence 0.
  const prev = acc as HidAccumulator;
  const expected = prev.expected as number;
  const take = Math.min(expected - prev.data.length, block.length - NEXT_HEADER);
  // The message is not complete yet, so a report without data is truncated.
  if (take === 0) {
    throw new DtError(ErrorCode.FRAME_MALFORMED, 'HID report carries no message data', { sequence });
  }
  const data = new Uint8Array(prev.data.length + take);
  data.set(prev.data, 0);
  data.set(block.subarray(NEXT_HEADER, NEXT_HEADER + take), prev.data.length);
  return { expected, data, sequence: sequence + 1 };
}

/** True when the state holds a whole message. */
export function isComplete(acc: HidAccumulator | undefined): boolean {
  return acc !== undefined && acc.expected !== undefined && acc.data.length === acc.expected;
}

/**
 * The reassembled message.
 *
 * @throws DtError FRAME_MALFORMED when the message is not complete yet.
 */
export function getPayload(acc: HidAccumulator | undefined): Uint8Array {
  if (acc === undefined || !isComplete(acc)) {
    throw new DtError(ErrorCode.FRAME_MALFORMED, 'HID message is not complete', {
      received: acc?.data.length ?? 0,
      expected: acc?.expected ?? -1,
    });
  }
  return acc.data;
}

/**
 * Convenience wrapper around {@link makeBlocks} and {@link reduceResponse} for
 * one channel: frames outgoing messages and reassembles incoming ones.
 *
 * @example
 * const framer = new HidFramer(0x0101);
 * for (const report of framer.frame(apdu)) await device.write(report);
 * let message; while (!(message = framer.push(await device.read()))) {}
 */
export class HidFramer {
  /** Channel written into outgoing reports and required on incoming ones. */
  readonly channel: number;
  /** Report size in bytes. */
  readonly packetSize: number;
  #acc: HidAccumulator | undefined;

  /** Creates a framer for `channel` with reports of `packetSize` bytes. */
  constructor(channel: number, packetSize: number = HID_PACKET_SIZE) {
    checkChannel(channel);
    this.channel = channel;
    this.packetSize = packetSize;
  }

  /** Reports for one outgoing message, see {@link makeBlocks}. */
  frame(payload: Uint8Array): Uint8Array[] {
    return makeBlocks(this.channel, payload, this.packetSize);
  }

  /**
   * Adds one incoming report; returns the message once complete (and starts
   * over), `undefined` while more reports are needed. On error the partial
   * message is dropped and the error thrown.
   */
  push(block: Uint8Array): Uint8Array | undefined {
    let next: HidAccumulator;
    try {
      next = reduceResponse(this.#acc, block, this.channel);
    } catch (e) {
      this.#acc = undefined;
      throw e;
    }
    if (isComplete(next)) {
      this.#acc = undefined;
      return next.data;
    }
    this.#acc = next;
    return undefined;
  }

  /** Drops a partially received message. */
  reset(): void {
    this.#acc = undefined;
  }
}
