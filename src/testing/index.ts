/**
 * Helpers for your own test suites: a PostHog-like persons schema, seeded persons, and
 * `assertVerifiesClean` to end a test with the migration's verification.
 *
 * @module pg-dual-read/testing
 */
export {
  type AssertVerifiesCleanOptions,
  assertVerifiesClean,
  VerificationAssertionError,
} from './assert-verifies-clean.js';
export {
  createPostHogPersonsSchema,
  type PersonsSchemaOptions,
  type SeedPersonsOptions,
  seedPersons,
} from './persons-fixture.js';
