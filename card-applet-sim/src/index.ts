/**
 * `@dt/card-applet-sim`: the DT wallet applet (`@dt/firmware`) hosted on a
 * PC. A {@link SimulatedCard} keeps its memory in a state file
 * ({@link FileStorage}) and is served to hosts through:
 *
 * - {@link InProcessTransport} (unit tests), and HID framing through an
 *   injectable device interface ({@link VirtualHidCard}, {@link HidTransport});
 * - {@link VpcdClient}: a real `pcscd` through the vsmartcard vpcd driver;
 * - {@link SerialCardEndpoint}: a serial device (e.g. a `socat` pty) with the
 *   protocol's COBS + CRC-32 framing, and {@link SerialTransport} for hosts.
 *
 * Faults ({@link FaultPlan}) cut the power at any storage write or APDU, drop
 * or corrupt frames and add delays. {@link startPcscd} runs a private pcscd
 * for tests. {@link startCardControl} / {@link connectCardControl}: the card
 * control channel of `dt-card serve --control` (remove/insert the card, arm
 * faults, read its state) for the lab. The `dt-card` CLI (src/cli.ts) wraps it all.
 *
 * @module
 */

export { SimulatedCard, CardBusyError, CardNotPoweredError, nodeRandom, systemClock, sleep } from './card.ts';
export type { AppletFactory, AppletLike, SimulatedCardOptions } from './card.ts';
export { FaultInjector, FaultInjectingStorage, PowerCutError, isPowerCut } from './faults.ts';
export type { ApduSelector, FaultEvent, FaultPlan } from './faults.ts';
export { FileStorage, StateFileError, readStateFile, writeFileAtomic, STATE_FORMAT, STATE_VERSION } from './storage.ts';
export type { StateMeta } from './storage.ts';
export { InProcessTransport, VirtualHidCard, HidTransport, HidDisconnectedError, TransportTimeoutError } from './inprocess.ts';
export type { HidDevice, HidTransportOptions, InProcessTransportOptions, VirtualHidCardOptions } from './inprocess.ts';
export { SerialCardEndpoint, SerialTransport, SerialLinkError, createLinkPair, openTty } from './serial.ts';
export type { ByteLink, SerialCardEndpointOptions, SerialTransportOptions } from './serial.ts';
export { VpcdClient, VPCD_CONTROL, VPCD_DEFAULT_PORT } from './vpcd.ts';
export {
  startCardControl,
  connectCardControl,
  parseFaultPlan,
  readCardStatus,
  CardControlError,
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
export { personalizeCard, devLoad, devIssuingBank, DevLoadRefusedError } from './personalize.ts';
export type { CardLimits, DevLoadResult, IssuingBank, PersonalizeOptions, PersonalizeResult } from './personalize.ts';
