/**
 * Framing of APDUs for the byte-oriented transports: USB HID reports and a
 * COBS/CRC-32 serial stream. Pure functions; transports move the bytes.
 *
 * @module
 */

export { HID_MAX_PAYLOAD, HID_PACKET_SIZE, HID_TAG_APDU, HidFramer, getPayload, isComplete, makeBlocks, reduceResponse } from './hid.ts';
export type { HidAccumulator } from './hid.ts';

export {
  SERIAL_BODY_OVERHEAD,
  SERIAL_FRAME_TYPE,
  SERIAL_MAX_PAYLOAD,
  SERIAL_NAK_REASON,
  SerialFrameDecoder,
  cobsDecode,
  cobsEncode,
  cobsMaxEncodedLength,
  crc32,
  decodeFrame,
  encodeFrame,
  nakReasonFor,
} from './serial.ts';
export type { SerialDecodeResult, SerialFrame, SerialFrameDecoderOptions, SerialFrameType } from './serial.ts';
