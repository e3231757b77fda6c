import { invalidArgument, isPlainObject, textProblem } from './call-arguments.js';

/**
 * A JSON object argument (`properties`, `propertiesLastUpdatedAt`, ...) checked and serialised
 * before any statement: what `JSON.stringify` would silently change or fail on, or Postgres'
 * `jsonb` refuse, is refused here with an error naming the argument (never its content).
 */

/** Deeper than this is refused (a recursive walk, and JSON.stringify, would overflow the stack). */
const maxDepth = 100;
/** More values than this is refused (shared sub-objects could make the walk exponential). */
const maxValues = 1_000_000;

const allowed =
  'must hold only plain objects, arrays, strings, finite numbers, booleans, null and Dates';

interface Walk {
  values: number;
  readonly ancestors: Set<object>;
}

/**
 * `value` as JSON text for a `jsonb` parameter, or an {@link InvalidOptionsError} naming
 * `argument`. It must be a plain object whose values are plain objects, arrays, strings
 * (no NUL, no lone surrogate: `jsonb` refuses both), finite numbers, booleans, null or valid
 * Dates (written as ISO strings); `undefined` values are left out, as `JSON.stringify` does.
 * Refused: BigInt, NaN and Infinity (JSON would write null), functions, symbols, Maps and other
 * class instances, circular references, more than 100 levels of nesting. @internal
 *
 * @example
 * ```ts
 * const json = toJsonText({ plan: 'paid', seats: 3 }, 'update.properties'); // '{"plan":"paid","seats":3}'
 * ```
 */
export function toJsonText(value: unknown, argument: string): string {
  if (!isPlainObject(value)) {
    throw invalidArgument(argument, 'must be a plain object of JSON values, e.g. { plan: "paid" }');
  }
  let problem: string | undefined;
  try {
    problem = jsonProblem(value, 0, { values: 0, ancestors: new Set() });
  } catch {
    // A getter or a Proxy that throws: the caller's object, not a bug of ours.
    problem = 'must be readable (a property getter threw)';
  }
  if (problem) throw invalidArgument(argument, problem);
  try {
    return JSON.stringify(value);
  } catch {
    throw invalidArgument(argument, 'must be serialisable by JSON.stringify');
  }
}

/** Why `value` (at `depth`) is not JSON that jsonb stores as given, or undefined. */
function jsonProblem(value: unknown, depth: number, walk: Walk): string | undefined {
  if (++walk.values > maxValues) return `must hold at most ${maxValues} values`;
  switch (typeof value) {
    case 'string':
      return textProblem(value);
    case 'number':
      return Number.isFinite(value)
        ? undefined
        : 'must not hold NaN or Infinity (JSON has no such number)';
    case 'boolean':
    case 'undefined':
      return undefined;
    case 'bigint':
      return 'must not hold a BigInt (JSON has none): convert it to a string or a number';
    case 'object':
      return value === null ? undefined : objectProblem(value, depth, walk);
    default:
      return 'must not hold a function or a symbol';
  }
}

function objectProblem(value: object, depth: number, walk: Walk): string | undefined {
  if (value instanceof Date) {
    return Number.isNaN(value.getTime()) ? 'must not hold an invalid Date' : undefined;
  }
  if (walk.ancestors.has(value)) return 'must not be circular (an object that contains itself)';
  if (depth >= maxDepth) return `must not nest more than ${maxDepth} levels deep`;
  if (!Array.isArray(value) && !isPlainObject(value)) return allowed;
  walk.ancestors.add(value);
  let problem: string | undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length && !problem; i++) {
      problem = jsonProblem(value[i], depth + 1, walk);
    }
  } else {
    for (const key of Object.keys(value)) {
      problem = keyProblem(key) ?? jsonProblem(value[key], depth + 1, walk);
      if (problem) break;
    }
  }
  walk.ancestors.delete(value);
  return problem;
}

function keyProblem(key: string): string | undefined {
  const problem = textProblem(key);
  return problem ? `keys ${problem}` : undefined;
}
