/**
 * fast-check arbitraries of hostile arguments: wrong types, huge and non-finite numbers, empty
 * and 10,000-character strings, quotes, dots, semicolons, unicode, NUL and lone surrogates,
 * BigInt, circular and deep objects, objects with extra keys, arrays where objects belong.
 */
import fc from 'fast-check';

/** Put in hostile strings: an error message containing it echoed a refused value. */
export const marker = 'SECRET-c0ffee';

const circularObject: Record<string, unknown> = { a: 1 };
circularObject.self = circularObject;
const circularArray: unknown[] = [1];
circularArray.push(circularArray);
let deepObject: Record<string, unknown> = {};
for (let i = 0; i < 5_000; i++) deepObject = { d: deepObject };

/** Strings an attacker or a bug would pass. */
export const hostileString = fc.constantFrom(
  '',
  ' ',
  "'",
  '"',
  ';',
  '.',
  'a.b.c',
  `${marker}'); DROP TABLE posthog_person; --`,
  `${marker}"; SELECT pg_sleep(10); --`,
  `${marker}.${marker};`,
  'ünïcödé ✓ 中文',
  '😀'.repeat(300),
  'é'.repeat(401),
  'x'.repeat(401),
  `${marker}${'x'.repeat(10_000)}`,
  `${marker}\u0000`,
  `${marker}\ud800`,
  '\udc00',
  '1 OR 1=1',
  '-1',
  '1.5',
  '1e3',
  '0x1F',
  ' 42',
  '42 ',
  '99999999999999999999',
  '-9223372036854775809',
  'NaN',
  'null',
  '[]',
  '{}',
);

/** Numbers no argument takes (and a few integers that some do). */
export const hostileNumber = fc.oneof(
  fc.constantFrom(
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    -0,
    0.5,
    -1,
    2 ** 31,
    2 ** 53,
    2 ** 63,
    Number.MAX_VALUE,
    Number.MIN_VALUE,
    -(2 ** 53) - 2,
  ),
  fc.double(),
  fc.integer(),
);

/** Values of the wrong kind. */
export const exotic = fc.constantFrom<unknown>(
  null,
  undefined,
  true,
  false,
  Symbol('s'),
  () => 1,
  new Date(Number.NaN),
  new Date('2024-01-01T00:00:00Z'),
  new Map([['a', 1]]),
  new Set([1]),
  Object.create(null),
  [],
  [1, 2],
  [['seed-1']],
  { length: 0 },
  new Uint8Array(2),
  circularObject,
  circularArray,
  deepObject,
  { toString: () => '1' },
  { valueOf: () => 1 },
  { teamId: 1 },
  { n: 10n },
  { f: () => 1 },
  { nan: Number.NaN },
  { [`${marker}\u0000`]: 1 },
  { s: `${marker}\ud800` },
);

/** Any bad value (some happen to be valid for some arguments: those calls may succeed). */
export const badValue: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: hostileString, weight: 2 },
  { arbitrary: hostileNumber, weight: 2 },
  { arbitrary: fc.bigInt(), weight: 1 },
  { arbitrary: exotic, weight: 3 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 1 },
  {
    arbitrary: fc.anything({
      maxDepth: 3,
      withBigInt: true,
      withBoxedValues: true,
      withDate: true,
      withMap: true,
      withSet: true,
      withNullPrototype: true,
      withSparseArray: true,
      withTypedArray: true,
      withUnicodeString: true,
    }),
    weight: 2,
  },
);

/** `valid` now and then, mostly a bad value. */
export function maybe<T>(valid: T, bad: fc.Arbitrary<unknown> = badValue): fc.Arbitrary<unknown> {
  return fc.oneof({ arbitrary: fc.constant(valid), weight: 1 }, { arbitrary: bad, weight: 3 });
}

/**
 * An options-like object: some of `fields` (each valid or bad), sometimes with extra keys, or
 * a value that is not an object at all.
 */
export function objectArg(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<unknown> {
  const record = fc.record(fields, { requiredKeys: [] });
  const extra = fc.dictionary(fc.string({ maxLength: 12 }), badValue, { maxKeys: 2 });
  return fc.oneof(
    { arbitrary: record, weight: 2 },
    {
      arbitrary: fc.tuple(record, extra).map(([known, more]) => ({ ...more, ...known })),
      weight: 2,
    },
    { arbitrary: badValue, weight: 1 },
  );
}

/** An array of valid and bad elements, or something that is not an array. */
export function arrayArg(element: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> {
  return fc.oneof(
    { arbitrary: fc.array(fc.oneof(element, badValue), { maxLength: 4 }), weight: 2 },
    { arbitrary: badValue, weight: 1 },
  );
}
