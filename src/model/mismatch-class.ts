/**
 * What a verification can say about one key.
 *
 * Mismatches (each makes a verification unclean, except `person_without_distinct_id`):
 * - `missing_in_new`: the old table has the key, the new one does not (not copied yet).
 * - `older_in_new`: the new row's version is below the old row's.
 * - `content_differs`: same version, different content in the compared columns.
 * - `resurrected`: the new table has a person the old table no longer has, with an id issued
 *   before `dual_read` began: a deleted (or merged-away) person copied back.
 * - `orphan_distinct_id`: distinct ids point at a person that exists in neither table (the key
 *   is the person they point at).
 * - `person_without_distinct_id`: a person with no distinct id. Reported, but does not make a
 *   verification unclean: PostHog-like data has such persons before any migration.
 *
 * @example
 * ```ts
 * const failing = mismatchClasses.filter((c) => c !== 'person_without_distinct_id');
 * ```
 */
export const mismatchClasses = [
  'missing_in_new',
  'older_in_new',
  'content_differs',
  'resurrected',
  'orphan_distinct_id',
  'person_without_distinct_id',
] as const;

/**
 * One of {@link mismatchClasses}.
 *
 * @example
 * ```ts
 * const fixable: MismatchClass[] = ['missing_in_new', 'older_in_new']; // what repair copies
 * ```
 */
export type MismatchClass = (typeof mismatchClasses)[number];

/**
 * Keys that agree, counted but never listed: `same` (same version and content),
 * `newer_in_new` (updated through the repository in `dual_read`), `created_in_new` (created
 * in `dual_read`, no old row expected).
 *
 * @example
 * ```ts
 * const { counts } = await migration.verify();
 * console.log(counts.newer_in_new, counts.created_in_new);
 * ```
 */
export const agreeingClasses = ['same', 'newer_in_new', 'created_in_new'] as const;

/**
 * One class of keys that agree: `same`, `newer_in_new` or `created_in_new`.
 *
 * @example
 * ```ts
 * const agreeing: AgreeingClass[] = ['same', 'newer_in_new', 'created_in_new'];
 * ```
 *
 * @useDeclaredType
 */
export type AgreeingClass = (typeof agreeingClasses)[number];

/** True for a class of keys that agree (counted, never listed). @internal */
export function isAgreeing(cls: string): cls is AgreeingClass {
  return (agreeingClasses as readonly string[]).includes(cls);
}

/** Mismatch classes computed per person key (re-checkable from both tables). @internal */
export const personClasses: readonly MismatchClass[] = [
  'missing_in_new',
  'older_in_new',
  'content_differs',
  'resurrected',
];

/** Classes that make a verification unclean. @internal */
export const failingClasses: readonly MismatchClass[] = mismatchClasses.filter(
  (c) => c !== 'person_without_distinct_id',
);

/** Classes `verify({ repair: true })` repairs: it only ever copies old rows. @internal */
export const repairableClasses: readonly MismatchClass[] = ['missing_in_new', 'older_in_new'];
