/**
 * `@dt/protocol`: the DT offline payment protocol, pure TypeScript over
 * `Uint8Array` (no Node built-ins), usable in firmware, terminals and servers.
 *
 * @module
 */
export * from './errors.ts';
export * from './exit-codes.ts';
export * from './bytes.ts';
export * from './amounts.ts';
export * from './ids.ts';
export * from './crypto/suite.ts';
export * from './cbor/deterministic.ts';
export * from './cbor/diagnostic.ts';
export * from './schema/dsl.ts';
export * from './schema/messages.ts';
export * from './schema/acquirer.ts';
export * from './acquirer-codes.ts';
export * from './replay.ts';
export * from './cose/sign1.ts';
export * from './cose/cwt.ts';
export * from './certreq.ts';
export * from './codec.ts';
export * from './handover.ts';
export * from './adjustment.ts';
export * from './wallet.ts';
export * from './apdu/index.ts';
export * from './card/index.ts';
export * from './framing/index.ts';
export * from './transport/index.ts';
