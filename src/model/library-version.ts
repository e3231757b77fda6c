/**
 * This library's version, as in package.json (a test keeps them equal), and the protocol its
 * repository speaks: which phases and rules it knows. A client registry row with a lower
 * protocol is an instance that would not route writes right after a phase this version adds.
 *
 * | protocol | knows |
 * |---|---|
 * | 1 | `old`, `dual_read` (before the client registry: such instances never register) |
 * | 2 | `new` (deletes remove the old row too), `finalized` (the consolidated table), the stray-write marker |
 *
 * @example
 * ```ts
 * if (client.protocol < clientProtocol) console.warn(`${client.service} runs ${client.libraryVersion}`);
 * ```
 */
export const libraryVersion = '0.1.0';

/** See {@link libraryVersion}. */
export const clientProtocol = 2;
