/**
 * Issue 13, item 9: debug lines never print a whole error object or a driver message that
 * quotes a value. A driver error's `detail` (`Key (team_id, distinct_id)=(1, alice) already
 * exists`) and a data exception's message (`invalid input syntax for type bigint: "alice"`)
 * carry row values; every debug line that reports an error goes through `describeError`.
 * (The `%O` line of the shadow reads' bookkeeping, suspected in the audit, was not reachable
 * by a listener's error, which the emitter swallows; it is plain text now all the same.)
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeError } from '../../src/db/query-failed.js';
import { QueryFailedError, UuidTakenError } from '../../src/errors.js';

const driverError = (message: string, fields: Record<string, unknown>) =>
  Object.assign(new Error(message), fields);

describe('describeError', () => {
  it('keeps the SQLSTATE and the message, never the detail, where or parameters', () => {
    const line = describeError(
      driverError('duplicate key value violates unique constraint "k"', {
        code: '23505',
        detail: 'Key (team_id, distinct_id)=(1, secret-person-value) already exists.',
        where: 'SQL statement "INSERT ... secret-person-value"',
        params: ['secret-person-value'],
      }),
    );
    expect(line).toBe('SQLSTATE 23505: duplicate key value violates unique constraint "k"');
  });

  it('redacts the quoted value of a data exception', () => {
    const line = describeError(
      driverError('invalid input syntax for type bigint: "secret-person-value"', {
        code: '22P02',
      }),
    );
    expect(line).not.toContain('secret-person-value');
    expect(line).toContain('SQLSTATE 22P02');
  });

  it('describes the library’s own errors by class and code', () => {
    expect(describeError(new UuidTakenError('taken'))).toBe('UuidTakenError (UUID_TAKEN): taken');
    const failed = new QueryFailedError(
      'Query failed (SQLSTATE 57014: ...)',
      'SELECT',
      0,
      '57014',
      {
        cause: driverError('canceling statement due to statement timeout', { code: '57014' }),
      },
    );
    expect(describeError(failed)).toBe(
      'SQLSTATE 57014: canceling statement due to statement timeout',
    );
  });

  it('is what every debug line of src/ that reports an error uses: no %O, no raw .message', () => {
    const offenders: string[] = [];
    const files = (readdirSync('src', { recursive: true }) as string[])
      .filter((name) => name.endsWith('.ts'))
      .map((name) => join('src', name));
    for (const file of files) {
      readFileSync(file, 'utf8')
        .split('\n')
        .forEach((line, index) => {
          if (/\b(debug|log)\(/.test(line) && /%O|%o|\.message\b/.test(line)) {
            offenders.push(`${file}:${index + 1}: ${line.trim()}`);
          }
        });
    }
    expect(offenders).toEqual([]);
  });
});
