/**
 * The DT card's contract (SPEC §9–10), shared by the applet and every host:
 * constant tables (`constants.ts`), the command formats (`formats.ts`), one
 * builder per command (`commands.ts`), one parser per answer (`decode.ts`),
 * the host command set over an `ApduTransport` (`command-set.ts`), result
 * types (`types.ts`) and the one input-selection rule (`selection.ts`).
 *
 * Errors are those of the layers below: parsers throw `DtError` (codes of
 * `errors.ts`), status words other than 9000 become the APDU layer's
 * `CardStatusError` / `WrongPinError`; this layer adds none of its own.
 *
 * @module
 */
export {
  APPLET_VERSION,
  CardCommand,
  Capability,
  DEFAULT_PIN_TRIES,
  DEFAULT_PUK_TRIES,
  FORMAT_MAX_SIZE,
  FRESH_ANSWER_COMMANDS,
  FULLY_PERSONALIZED,
  Personalized,
  PIN_LENGTH,
  PROTOCOL_VERSION,
  PUK_LENGTH,
  SECRET_COMMANDS,
  STEP_INS,
  SYNC_CHALLENGE_LENGTH,
  WRITE_CERTIFICATES_MAX_SIZE,
} from './constants.ts';
export type { CardCommandName, CommandHeader } from './constants.ts';
export {
  CARD_FORMATS,
  CardStatusSchema,
  ChangePinSchema,
  SelectResponseSchema,
  SetConfigSchema,
  SetPinSchema,
  UnblockPinSchema,
  WriteCertificatesSchema,
  decodeFormat,
  decodeFormatLenient,
  encodeFormat,
  formatKey,
} from './formats.ts';
export type { CardStatus, ChangePin, SelectResponse, SetConfig, SetPin, UnblockPin, WriteCertificates } from './formats.ts';
export {
  buildCommand,
  changePinCommand,
  generateKeyCommand,
  getCertificatesCommand,
  getStatusCommand,
  loadBeginCommand,
  loadCompleteCommand,
  lockCommand,
  payCommand,
  selectCommand,
  setConfigCommand,
  setPinCommand,
  syncBeginCommand,
  syncCompleteCommand,
  unblockPinCommand,
  verifyPinCommand,
  writeCertificatesCommand,
} from './commands.ts';
export {
  MAX_SELECT_ANSWER,
  answerIsFresh,
  hasCapability,
  identifyCommand,
  isChainedBlock,
  mayCarrySecret,
  parseApplicationInfo,
  parseCardStatus,
  parseCertificates,
  parseLastNonce,
  parsePinResult,
  parsePublicKey,
  parseSelectResponse,
} from './decode.ts';
export type { CommandLike } from './decode.ts';
export {
  changePin,
  generateKey,
  getCertificates,
  getStatus,
  lockPersonalization,
  pay,
  selectApplet,
  setConfig,
  setPin,
  syncBegin,
  syncComplete,
  unblockPin,
  verifyPin,
  writeCertificates,
} from './command-set.ts';
export type { PinInput } from './command-set.ts';
export { selectInputs } from './selection.ts';
export type { ApplicationInfo, PinResult, SpendableCoin } from './types.ts';
