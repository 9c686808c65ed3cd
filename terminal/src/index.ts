/**
 * `@dt/terminal`: the DT point-of-sale terminal. Payment kernel, device
 * adapters behind one `ApduTransport`, the durable journal, risk policy,
 * sync client and the `dt-pos` CLI.
 *
 * @module
 */
export * from './errors.ts';
export * from './policy.ts';
export * from './identity.ts';
export * from './journal/journal.ts';
export * from './journal/schema.ts';
export * from './adjust.ts';
export * from './kernel/outcome.ts';
export * from './kernel/pinpad.ts';
export * from './kernel/kernel.ts';
export * from './transports/reader.ts';
export * from './util/abort.ts';
export * from './sync/crl.ts';
export * from './sync/client.ts';
export * from './cardsync/client.ts';
export * from './transports/pcsc.ts';
export * from './transports/serial.ts';
export * from './transports/hid.ts';
export * from './config.ts';
export * from './service/lock.ts';
export * from './service/service.ts';
export * from './service/reader.ts';
export * from './service/ecr.ts';
