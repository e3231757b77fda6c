/**
 * Keeps database passwords out of what the CLI prints. Every line the CLI writes goes through
 * {@link redactSecrets}, so a password cannot leak through an error message the CLI did not
 * write itself (a driver error, node's argument parser).
 * @internal
 */

// scheme://user:password@  ->  scheme://user:***@
const credentialsInUrl = /([a-z][a-z0-9+.-]*:\/\/[^\s:/?#@]*):[^\s@/]*@/gi;

/**
 * The password of a database URL, raw and percent-decoded (both can appear in messages), or
 * nothing when the URL has none or does not parse.
 *
 * @example
 * ```ts
 * passwordsOf('postgres://app:p%40ss@db/prod'); // ['p%40ss', 'p@ss']
 * ```
 * @internal
 */
export function passwordsOf(databaseUrl: string | undefined): string[] {
  if (!databaseUrl) return [];
  let raw: string | undefined;
  try {
    raw = new URL(databaseUrl).password;
  } catch {
    // Not a WHATWG URL (e.g. a bracketless IPv6 host): take what sits between ':' and '@'.
    raw = /^[a-z][a-z0-9+.-]*:\/\/[^:/?#@]*:([^@]*)@/i.exec(databaseUrl)?.[1];
  }
  if (!raw) return [];
  let decoded = raw;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    // keep the raw form only
  }
  return [...new Set([raw, decoded])].filter((p) => p.length > 0);
}

/**
 * Replaces the credentials of any `scheme://user:password@` in `text` with `***`, and every
 * occurrence of the given passwords (in case a message quotes one on its own). Passwords
 * shorter than 4 characters are only removed from URLs: replacing every `a` would leave
 * nothing readable.
 *
 * @example
 * ```ts
 * redactSecrets('cannot reach postgres://app:hunter2@db/prod', ['hunter2']);
 * // 'cannot reach postgres://app:***@db/prod'
 * ```
 * @internal
 */
export function redactSecrets(text: string, passwords: readonly string[]): string {
  let result = text.replace(credentialsInUrl, '$1:***@');
  for (const password of passwords) {
    if (password.length >= 4) result = result.split(password).join('***');
  }
  return result;
}
