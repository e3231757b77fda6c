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
