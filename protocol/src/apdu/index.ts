/**
 * APDU layer: constant tables, the short-APDU codec with chaining, typed card
 * status errors, the exchange logic for both the reader and the card, and
 * recorded exchanges with their replay and recording transports.
 *
 * @module
 */

export {
  CLA,
  DT_AID,
  INS,
  PERSONALIZE_P1,
  SELECT_P1P2,
  SW,
  SW_TABLE,
  SYNC_P1,
  describeSw,
  isMoreData,
  isWrongLe,
  isWrongPin,
  swHex,
  swInfo,
  swLength,
} from './constants.ts';
export type { Ins, SwInfo } from './constants.ts';

export {
  CardStatusError,
  DEFAULT_MAX_COMMAND_DATA,
  MAX_SHORT_DATA,
  MAX_SHORT_LE,
  WrongPinError,
  chainCommand,
  decodeCommand,
  decodeResponse,
  encodeCommand,
  encodeResponse,
  getResponseCommand,
  isOk,
  statusError,
} from './codec.ts';
export type { CommandApdu, ResponseApdu } from './codec.ts';

export {
  AbortError,
  CardApduProcessor,
  CommandAssembler,
  DEFAULT_MAX_RESPONSE,
  ResponseSender,
  exchange,
  throwIfAborted,
  transmitOk,
} from './exchange.ts';
export type {
  AbortSignalLike,
  ApduTransport,
  AssemblerResult,
  CardCommandHandler,
  CommandAssemblerOptions,
  ExchangeOptions,
  TransmitOptions,
} from './exchange.ts';

export { MAX_RECORDED_EXCHANGES, RecordStore, RecordStoreError, recordingTransport, replayTransport } from './record-store.ts';
export type { RecordedExchange, RecordStoreErrorCode, ReplayTransportOptions } from './record-store.ts';
