/**
 * `@dt/firmware`: the DT wallet applet (card or hardware wallet), pure
 * TypeScript over a hardware abstraction ({@link Hal}). Runs on Node, in
 * embedded JS engines (QuickJS, the esbuild bundle in `dist/firmware.js`) and
 * is what `card-applet-sim` serves to pcscd, serial and HID hosts.
 *
 * @example
 * const card = new Applet({ storage: new MemoryStorage(), random });
 * card.powerOn();
 * const rsp = await card.process(encodeCommand(selectCommand()));
 *
 * @module
 */
export type { Hal, Storage, ConfirmationPrompt } from './hal.ts';
export { ATR } from './atr.ts';
export { MemoryStorage, type StorageSnapshot } from './memory-storage.ts';
export { Applet, AppletBusyError, AppletHaltedError, AppletPowerLostError, type AppletOptions } from './applet.ts';
export { ShadowJournal, JOURNAL_SLOTS, type JournalLoad } from './journal.ts';
export {
  CardStateSchema,
  CoinSchema,
  decodeState,
  encodeState,
  blankState,
  legacyTrustedTime,
  NONCE_MEMORY,
  type CardState,
  type Coin,
} from './state.ts';
