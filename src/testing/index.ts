export {
  createPostHogPersonsSchema,
  type PersonsSchemaOptions,
  type SeedPersonsOptions,
  seedPersons,
} from './persons-fixture.js';
