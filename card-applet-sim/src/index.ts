/**
 * `@dt/card-applet-sim`: the DT wallet applet (`@dt/firmware`) hosted on a
 * PC. A {@link SimulatedCard} keeps its memory in a state file
 * ({@link FileStorage}) and is served to hosts through:
 *
 * - {@link InProcessTransport} (unit tests), and a USB HID wallet
 *   ({@link VirtualHidCard}, a `HidReportChannel`);
 * - {@link VpcdClient}: a real `pcscd` through the vsmartcard vpcd driver;
 * - {@link SerialCardEndpoint}: a serial device (e.g. a `socat` pty) with the
 *   protocol's COBS + CRC-32 framing.
 *
 * Hosts talk to the HID and serial devices with the protocol's
 * `HidHostTransport` and `SerialHostTransport` (`@dt/protocol`), the same
 * host-side layer the terminal ships.
 *
 * Faults ({@link FaultPlan}) cut the power at any storage write or APDU, drop
 * or corrupt frames and add delays. {@link startPcscd} runs a private pcscd
 * for tests. {@link startCardControl} / {@link connectCardControl}: the card
 * control channel of `dt-card serve --control` (remove/insert the card, arm
 * faults, read its state) for the lab. The `dt-card` CLI (src/cli.ts) wraps it all.
 *
 * @module
 */

export { SimulatedCard, CardNotPoweredError, nodeRandom, systemClock, sleep } from './card.ts';
export type { AppletFactory, AppletLike, SimulatedCardOptions } from './card.ts';
export { FaultInjector, FaultInjectingStorage, PowerCutError, isPowerCut } from './faults.ts';
export type { ApduSelector, FaultEvent, FaultPlan } from './faults.ts';
export { FileStorage, StateFileError, readStateFile, STATE_FORMAT, STATE_VERSION } from './storage.ts';
export type { StateMeta } from './storage.ts';
export { InProcessTransport, VirtualHidCard } from './inprocess.ts';
export type { InProcessTransportOptions, VirtualHidCardOptions } from './inprocess.ts';
export { SerialCardEndpoint, createLinkPair, openTty } from './serial.ts';
export type { ByteLink, SerialCardEndpointOptions } from './serial.ts';
export { VpcdClient, VPCD_CONTROL, VPCD_DEFAULT_PORT } from './vpcd.ts';
export {
  startCardControl,
  connectCardControl,
  parseFaultPlan,
  readCardStatus,
  CardControlError,
  UNREADABLE_CARD_STATE,
  isUnreadableCardAnswer,
  MAX_CONTROL_LINE,
  MAX_REINSERT_MS,
} from './control.ts';
export type {
  CardControlClient,
  CardControlServer,
  CardControlServerOptions,
  CardControlStatus,
  CardHolder,
  ConnectCardControlOptions,
} from './control.ts';
export type { VpcdClientEvents, VpcdClientOptions } from './vpcd.ts';
export { startPcscd, pcscdUnavailableReason, freePortPair, PcscdUnavailableError, VPCD_DRIVER, VPCD_NODELAY_SHIM } from './pcscd.ts';
export type { PcscdHandle, StartPcscdOptions, VpcdNoDelay } from './pcscd.ts';
export {
  createDevPki,
  saveDevPki,
  loadDevPki,
  loadOrCreateDevPki,
  issueDevTerminal,
  devPaymentRequest,
  devToken,
  DEV_PKI_FILE,
} from './devpki.ts';
export type { CreateDevPkiOptions, DevParty, DevPki, DevTerminal } from './devpki.ts';
// The card's command set (selectApplet, getStatus, pay, ...) is the protocol's (`@dt/protocol`, SPEC §9-10).
export { personalizeCard, devLoad, devIssuingBank, DevLoadRefusedError, limitsProblem } from './personalize.ts';
export type { CardLimits, DevLoadResult, IssuingBank, PersonalizeOptions, PersonalizeResult } from './personalize.ts';
export { UsageError, PIN, PUK, NEW_PIN, secretOptions, readSecrets } from './secrets.ts';
export type { SecretSpec } from './secrets.ts';
