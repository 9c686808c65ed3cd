/**
 * `@dt/acquirer`: the acquirer bridge between POS terminals and the ledger.
 *
 * - {@link startAcquirer}: the HTTP service (admission, durable queue,
 *   forwarder, outcomes, revocation list, health, metrics).
 * - Terminal-side client: {@link submitBatch}, {@link fetchOutcomes},
 *   {@link fetchAllOutcomes}, {@link fetchCrl}, {@link signRequest}.
 * - Wire objects: {@link BatchAck}, {@link OutcomePage}; stable error codes:
 *   {@link AcquirerErrorCode}.
 *
 * @module
 */
export { startAcquirer, loadTrust, type AcquirerConfig, type RunningAcquirer } from './server.ts';
export type { ForwardResult, ForwarderOptions } from './forwarder.ts';
export { AcquirerError, AcquirerErrorCode, HTTP_STATUS, isAcquirerError } from './errors.ts';
export { AcquirerStore, BatchState, type StoredBatch, type StoredOutcome } from './store.ts';
export { admitBatch, verifyTerminalChain, type AdmittedBatch, type TrustConfig } from './verify.ts';
export { signRequest, parseAuthHeader, AUTH_CONTENT_TYPE, AUTH_SCHEME, RequestAuthSchema, type RequestAuth } from './auth.ts';
export { encodeAck, decodeAck, encodeOutcomePage, decodeOutcomePage, BatchAckSchema, type BatchAck, type OutcomePage } from './wire.ts';
export { submitBatch, fetchOutcomes, fetchAllOutcomes, fetchCrl, AcquirerHttpError, type ClientOptions } from './client.ts';
