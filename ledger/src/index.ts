/**
 * `@dt/ledger`: the reference ledger and notary. See README.md.
 *
 * @module
 */
export * from './ledger.ts';
export * from './pki.ts';
export * from './load.ts';
export * from './cardloss.ts';
export * from './native-signer.ts';
export * from './storage/types.ts';
export { LedgerStore, StoreTx, type NewTransfer, type SupplyTotals } from './store.ts';
export {
  RowTypeError,
  type AcquirerBlockRow,
  type AllocationRow,
  type BankRow,
  type CardRow,
  type CrlRow,
  type LoadRow,
  type LoadState,
  type TransferRow,
  type TransferState,
  type VerdictRow,
} from './storage/rows.ts';
export { openSqliteStorage, migrateSqlite, type SqliteStorageOptions } from './storage/sqlite.ts';
export { openPostgresStorage, migratePostgres, type PostgresConfig, type PostgresStorageOptions } from './storage/postgres.ts';
export { LEDGER_MIGRATIONS, LedgerSchemaError, type LedgerMigration, type LedgerSchemaProblem } from './storage/migrations.ts';
export * from './server.ts';
export * from './errors.ts';
export * from './acquirers.ts';
export * from './validation.ts';
export * from './pool.ts';
export { startPgCluster, pgAvailable, type PgCluster } from './pg-cluster.ts';
export { buildProgram, openDataDir, readKeyFile, writeKeyFile, type DataDir } from './cli.ts';
