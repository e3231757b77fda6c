/**
 * Move a live Postgres persons table to a new table without downtime: the phase-aware
 * repository, the phase changes, the backfill, verification and cutover.
 *
 * @module pg-dual-read
 */
export type { BackfillEta } from './backfill/backfill-eta.js';
export type {
  BackfillRangeStatus,
  BackfillStatus,
  BackfillWorkerStatus,
} from './backfill/backfill-status.js';
export type { BackfillResult } from './backfill/run-backfill.js';
export type { InstallResult } from './control/install.js';
export type {
  DatabaseBackend,
  DatabaseHandle,
  ListenConnectionEvent,
  StopListening,
} from './db/database-handle.js';
export { type OpenDatabaseOptions, openDatabase } from './db/open-database.js';
export { PGliteDialect, type PGliteDialectConfig } from './db/pglite-dialect.js';
export {
  BackfillDataError,
  BackfillRefusedError,
  BackfillStoppedError,
  ConfigurationError,
  ControlSchemaTooNewError,
  ControlStateError,
  DualReadError,
  type DualReadErrorCode,
  InvalidOptionsError,
  NotInstalledError,
  OutcomeUnknownError,
  PhaseFenceTimeoutError,
  PhaseTransitionError,
  PreflightError,
  type PreflightProblem,
  QueryFailedError,
  TransitionRefusedError,
  UnexpectedResultError,
  type UnmetGuard,
  UuidTakenError,
  VerifyRefusedError,
} from './errors.js';
export { DualReadEmitter, type DualReadEvents } from './events.js';
export {
  type MetricDefinition,
  type MetricKey,
  meterName,
  metricDefinitions,
} from './metrics/metric-definitions.js';
export {
  createPersonsMigration,
  type MigrationStatus,
  PersonsMigration,
} from './migration/persons-migration.js';
export { type AgreeingClass, type MismatchClass, mismatchClasses } from './model/mismatch-class.js';
export { type Phase, type PhaseState, phases } from './model/phase.js';
export type { BackfillOptions, BatchLockMode } from './options/backfill-options.js';
export type { DiffedKey, DiffTablesOptions } from './options/diff-tables-options.js';
export type { PersonsMigrationOptions, ShadowReadsOptions } from './options/migration-options.js';
export type { PrepareOptions } from './options/prepare-options.js';
export type { VerifyOptions } from './options/verify-options.js';
export type { ClientStatus } from './phases/client-registry.js';
export type { PhaseChange } from './phases/phase-store.js';
export type { PhaseListenerState } from './phases/phase-watcher.js';
export type { StrayWrite } from './phases/stray-writes.js';
export type { PrepareResult } from './prepare/prepare.js';
export type {
  AddDistinctIdResult,
  AssertVersionResult,
  CreatePersonInput,
  CreatePersonResult,
  DistinctIdRow,
  MoveDistinctIdsResult,
  PersonId,
  PersonRow,
  PersonsPage,
  PersonsRepository,
  PersonUpdate,
  PersonWithDistinctId,
  TeamDistinctId,
  TeamPersonId,
} from './repository/persons-repository.js';
export type {
  MethodReadStats,
  ReadStats,
  ReadStatsMethod,
  ShadowReadStats,
} from './repository/read-stats.js';
export { type DiffTablesResult, diffTables } from './verify/diff-tables.js';
export type { RepairResult } from './verify/repair.js';
export type { VerificationResult } from './verify/run-verify.js';
export type {
  MismatchedKey,
  VerificationOutcome,
  VerificationSummary,
} from './verify/verification-store.js';
