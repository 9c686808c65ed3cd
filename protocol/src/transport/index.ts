/**
 * The one host-side transport layer: typed transport errors and their
 * classifier, the one-exchange-at-a-time guard, the serial and HID host
 * state machines over injected channels and timers, and reader specs. Pure:
 * the Node bindings (`serialport`, `node-hid`, PC/SC) live in the terminal,
 * Node's timers in `@dt/protocol/native`.
 *
 * @module
 */
export {
  CardRemovedError,
  ReaderUnavailableError,
  TransportBusyError,
  TransportError,
  TransportErrorCode,
  TransportLinkError,
  TransportTimeoutError,
  isTransportError,
  transportFailureOf,
} from './errors.ts';
export type { TransportFailure } from './errors.ts';
export { ExchangeGuard } from './guard.ts';
export { LocalAbort, delay } from './timers.ts';
export type { TransportTimers } from './timers.ts';
export { SerialHostTransport } from './serial.ts';
export type { ByteChannel, SerialHostOptions } from './serial.ts';
export { HidHostTransport } from './hid.ts';
export type { HidHostOptions, HidReportChannel } from './hid.ts';
export { READER_SPEC_FORMS, formatReaderSpec, parseReaderSpec } from './reader-spec.ts';
export type { ParseReaderSpecOptions, ReaderSpec } from './reader-spec.ts';
