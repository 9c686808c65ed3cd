/**
 * `@dt/acquirer`: the acquirer bridge between POS terminals and the ledger.
 *
 * - {@link startAcquirer}: the HTTP service (admission, durable queue,
 *   forwarder, outcomes, revocation list, health, metrics).
 * - Client functions of the acquirer API: {@link submitBatch},
 *   {@link fetchOutcomes}, {@link fetchAllOutcomes}, {@link fetchCrl}
 *   (one call each over `AcquirerClient` of `@dt/protocol/http`, which the
 *   POS sync uses directly), {@link signRequest}.
 * - Wire objects: {@link BatchAck}, {@link OutcomePage}; stable error codes:
 *   {@link AcquirerErrorCode} (defined in `@dt/protocol`, SPEC.md §8.3).
 *
 * @module
 */
export { startAcquirer, loadTrust, type AcquirerConfig, type LoadedTrust, type RunningAcquirer } from './server.ts';
export { readAcquirerKey } from './keyfile.ts';
export type { ForwardResult, ForwarderOptions } from './forwarder.ts';
export { AcquirerError, AcquirerErrorCode, HTTP_STATUS, isAcquirerError } from './errors.ts';
export { AcquirerStore, BatchState, type StoredBatch, type StoredOutcome } from './store.ts';
export { ACQUIRER_MIGRATIONS, AcquirerSchemaError, migrateAcquirerStore, type AcquirerMigration } from './schema.ts';
export { admitBatch, verifyTerminalChain, type AdmittedBatch, type TrustConfig } from './verify.ts';
// The wire objects are defined once in @dt/protocol (SPEC.md §7.7.1); re-exported under their historical names.
export {
  signAcquirerRequest as signRequest,
  parseAcquirerAuth as parseAuthHeader,
  ACQUIRER_AUTH_CONTENT_TYPE as AUTH_CONTENT_TYPE,
  ACQUIRER_AUTH_SCHEME as AUTH_SCHEME,
  RequestAuthSchema,
  type RequestAuth,
  encodeBatchAck as encodeAck,
  decodeBatchAck as decodeAck,
  encodeOutcomePage,
  decodeOutcomePage,
  BatchAckSchema,
  type BatchAck,
  type OutcomePage,
} from '@dt/protocol';
export { submitBatch, fetchOutcomes, fetchAllOutcomes, fetchCrl, AcquirerHttpError, type ClientOptions } from './client.ts';
