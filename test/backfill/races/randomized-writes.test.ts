/**
 * Randomized runs in each lock mode (docs/correctness.md `copy-excludes-delete`, `range-fence`,
 * `delete-fence`, `copy-never-overwrites`, `checkpoint-with-batch`, all at once): a 3-worker
 * backfill of 20,000 old persons while three service instances create, update, delete, add
 * distinct ids and merge, writes aimed just ahead of the running ranges' cursors; then the
 * stored tables and every instance's reads against the test's model. A write that still fails
 * with a deadlock (40P01: batches give way after batchLockTimeoutMs, well before Postgres's 1 s
 * deadlock check, so this is rare) is counted and treated as not done: the end state must then
 * show none of it. Seeds: see `raceSeeds` (race-support.ts).
 */
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import type { PersonRow } from '../../../src/repository/persons-repository.js';
import { pick, type ServiceInstance, seededRandom } from '../../support/concurrency.js';
import { describeOnRealServer } from '../../support/test-database.js';
import { expectNewTableCoversOld, raceEnvs, raceSeeds, runningCursors } from './race-support.js';

describeOnRealServer('backfill racing live writes (real server)', () => {
  const envs = raceEnvs();

  describe.each(
    raceSeeds().flatMap((seed) =>
      (['ranges', 'rows'] as const).map((mode) => [seed, mode] as const),
    ),
  )('randomized writes during a 3-worker backfill, seed %i, lockMode %s', (seed, lockMode) => {
    it('loses no write, resurrects nobody, never lowers a version, copies every surviving old row', {
      timeout: 120_000,
    }, async () => {
      await randomizedRun(seed, lockMode);
    });
  });

  /** A person as the test's model expects it. */
  interface Expected {
    readonly teamId: number;
    readonly id: string;
    readonly initialVersion: number;
    updates: number;
    readonly properties: Record<string, unknown>;
    readonly distinctIds: Set<string>;
    /** Position in key order of a seeded person; -1 for a person created during the run. */
    readonly index: number;
    /** Written to during the run (or created): checked through every instance. */
    touched: boolean;
    alive: boolean;
    busy: boolean;
  }

  async function randomizedRun(seed: number, lockMode: 'ranges' | 'rows') {
    const e = await envs.create('rnd');
    const runner = await e.addInstance({ handle: await envs.openFastHandle(4) });
    const writers = [
      await e.addInstance({ handle: await envs.openFastHandle(3) }),
      await e.addInstance({ handle: await envs.openFastHandle(3) }),
      await e.addInstance({ handle: await envs.openFastHandle(3) }),
    ];
    await e.control.startDualRead();

    // Several teams of uneven sizes (20,000 old persons), key order = (team_id, id).
    const teams: [number, number][] = [
      [41, 8_000],
      [42, 6_000],
      [43, 3_500],
      [44, 2_000],
      [45, 500],
    ];
    const persons = new Map<string, Expected>();
    const keyOrder: Expected[] = [];
    for (const [teamId, count] of teams) {
      const ids = await e.seed(teamId, count, `s${teamId}`);
      // Distinct id n got the n-th id of the sequence: key order is the order of n.
      expect(ids.every((id, i) => i === 0 || BigInt(id) > BigInt(ids[i - 1] as string))).toBe(true);
      for (const [i, id] of ids.entries()) {
        const p: Expected = {
          teamId,
          id,
          initialVersion: 0,
          updates: 0,
          properties: { n: i + 1, plan: 'free' },
          distinctIds: new Set([`s${teamId}-${i + 1}`]),
          index: keyOrder.length,
          touched: false,
          alive: true,
          busy: false,
        };
        persons.set(id, p);
        keyOrder.push(p);
      }
    }
    const teamIds = teams.map(([t]) => t);
    const createdDuringRun: Expected[] = [];

    // Targets are picked just ahead of the running ranges' cursors half of the time, so writes
    // land on keys batches are about to lock.
    let cursors: number[] = [];
    const indexAfter = (team: string, id: string) => {
      let lo = 0;
      let hi = keyOrder.length;
      const t = Number(team);
      const k = BigInt(id);
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        const p = keyOrder[mid] as Expected;
        if (p.teamId < t || (p.teamId === t && BigInt(p.id) <= k)) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    };

    const failures: string[] = [];
    let deadlocks = 0;
    let backfillDone = false;
    const counts = { create: 0, update: 0, delete: 0, add: 0, merge: 0 };

    const usable = (p: Expected | undefined) => (p?.alive && !p.busy ? p : undefined);
    const pickPerson = (random: () => number): Expected | undefined => {
      for (let attempt = 0; attempt < 20; attempt++) {
        const roll = random();
        const p =
          cursors.length > 0 && roll < 0.5
            ? keyOrder[pick(cursors, random) + Math.floor(random() * 120)]
            : roll < 0.6 && createdDuringRun.length > 0
              ? pick(createdDuringRun, random)
              : keyOrder[Math.floor(random() * keyOrder.length)];
        if (usable(p)) return p;
      }
      return undefined;
    };
    /** A merge partner of the same team: a key close to `p` (same batch, often), or any. */
    const pickPartner = (random: () => number, p: Expected): Expected | undefined => {
      for (let attempt = 0; attempt < 20; attempt++) {
        const q =
          p.index >= 0 && random() < 0.7
            ? keyOrder[p.index + Math.floor(random() * 61) - 30]
            : pick(keyOrder, random);
        if (q !== p && q?.teamId === p.teamId && usable(q)) return q;
      }
      return undefined;
    };

    const isDeadlock = (error: unknown) =>
      (error as { sqlState?: string }).sqlState === '40P01' ||
      (error as { code?: string }).code === '40P01';

    async function writerLoop(index: number, instance: ServiceInstance) {
      const random = seededRandom(seed * 1_000 + index);
      let n = 0;
      while (!backfillDone) {
        n++;
        const roll = random();
        const op =
          roll < 0.15
            ? 'create'
            : roll < 0.5
              ? 'update'
              : roll < 0.65
                ? 'delete'
                : roll < 0.8
                  ? 'add'
                  : 'merge';
        const tag = `w${index}-${n}`;
        try {
          if (op === 'create') {
            const teamId = pick(teamIds, random);
            const distinctIds = [`c-${tag}`, ...(random() < 0.5 ? [`c2-${tag}`] : [])];
            const created = await instance.repo.createPerson({
              teamId,
              distinctIds,
              properties: { created: tag },
            });
            if (created.status !== 'created') {
              failures.push(`${tag}: create ${created.status}`);
              continue;
            }
            counts.create++;
            const person: Expected = {
              teamId,
              id: created.person.id,
              initialVersion: created.person.version,
              updates: 0,
              properties: { created: tag },
              distinctIds: new Set(distinctIds),
              index: -1,
              touched: true,
              alive: true,
              busy: false,
            };
            persons.set(person.id, person);
            createdDuringRun.push(person);
            continue;
          }
          const p = pickPerson(random);
          if (!p) continue;
          if (op === 'merge') {
            const q = pickPartner(random, p);
            if (!q) continue;
            const [source, target] = random() < 0.5 ? [p, q] : [q, p];
            source.busy = true;
            target.busy = true;
            try {
              const outcome = await instance.repo.inTransaction(async (tx) => {
                const moved = await tx.moveDistinctIds(source.teamId, source.id, target.id);
                const deleted = await tx.deletePerson(source.teamId, source.id);
                return { moved, deleted };
              });
              if (outcome.moved.status !== 'moved' || !outcome.deleted) {
                failures.push(`${tag}: merge ${JSON.stringify(outcome)}`);
                continue;
              }
              const movedIds = [...outcome.moved.distinctIds].sort();
              const expectedMoved = [...source.distinctIds].sort();
              if (JSON.stringify(movedIds) !== JSON.stringify(expectedMoved)) {
                failures.push(`${tag}: merge moved ${movedIds} not ${expectedMoved}`);
              }
              for (const d of source.distinctIds) target.distinctIds.add(d);
              target.touched = true;
              source.distinctIds.clear();
              source.alive = false;
              counts.merge++;
            } finally {
              source.busy = false;
              target.busy = false;
            }
            continue;
          }
          p.busy = true;
          try {
            if (op === 'update') {
              const key = `u_${tag}`;
              const row: PersonRow | undefined = await instance.repo.updatePerson(p.teamId, p.id, {
                properties: { [key]: n },
              });
              if (!row) {
                failures.push(`${tag}: update of live person ${p.id} found nothing`);
                continue;
              }
              p.updates++;
              p.touched = true;
              p.properties[key] = n;
              if (row.version !== p.initialVersion + p.updates) {
                failures.push(
                  `${tag}: update returned version ${row.version}, expected ${p.initialVersion + p.updates}`,
                );
              }
              counts.update++;
            } else if (op === 'delete') {
              const deleted = await instance.repo.deletePerson(p.teamId, p.id);
              if (!deleted) failures.push(`${tag}: delete of live person ${p.id} deleted nothing`);
              p.alive = false;
              counts.delete++;
            } else {
              const distinctId = `a-${tag}`;
              const added = await instance.repo.addDistinctId(p.teamId, p.id, distinctId);
              if (added.status !== 'added') {
                failures.push(`${tag}: addDistinctId ${added.status}`);
                continue;
              }
              p.distinctIds.add(distinctId);
              p.touched = true;
              counts.add++;
            }
          } finally {
            p.busy = false;
          }
        } catch (error) {
          // A deadlock aborts the whole transaction: nothing of it happened (checked at the end,
          // since the model was not changed). Anything else is a failure.
          if (isDeadlock(error)) deadlocks++;
          else failures.push(`${tag}: ${op} threw ${(error as Error).message.slice(0, 300)}`);
        }
      }
    }

    const poller = (async () => {
      while (!backfillDone) {
        const running = await runningCursors(e);
        cursors = running
          .filter((r) => r.cursor_team !== null && r.cursor_id !== null)
          .map((r) => indexAfter(r.cursor_team as string, r.cursor_id as string));
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();

    const loops = writers.flatMap((w, i) => [writerLoop(2 * i, w), writerLoop(2 * i + 1, w)]);
    let batches = 0;
    runner.migration.events.on('backfill:batch', () => {
      batches++;
    });
    const retries: number[] = [];
    runner.migration.events.on('backfill:retry', ({ attempt }) => retries.push(attempt));
    let backfillResult: Awaited<ReturnType<typeof runner.migration.backfill>>;
    try {
      backfillResult = await runner.migration.backfill({
        workers: 3,
        batchSize: 50,
        targetBatchMs: 0,
        lockMode,
      });
    } finally {
      backfillDone = true;
      await Promise.all(loops);
      await poller;
    }
    const context = `seed ${seed}, lockMode ${lockMode}: ${JSON.stringify({ counts, deadlocks, batches, retries: retries.length, backfillMs: Math.round(backfillResult.ms) })}`;
    expect(failures, context).toEqual([]);
    expect(backfillResult, context).toMatchObject({ finished: true, aborted: false });
    // The writes really overlapped the backfill.
    expect(counts.update + counts.delete + counts.merge, context).toBeGreaterThan(50);

    // --- storage: every old row copied, no copy older than its old row, no orphan distinct id.
    await expectNewTableCoversOld(e);
    for (const teamId of teamIds) {
      expect(await e.orphanDistinctIds(teamId), `${context}: orphans of team ${teamId}`).toEqual(
        [],
      );
    }
    // The whole new table and distinct-ids table against the model: live persons all there at
    // the version their successful updates give, with every property they set and exactly
    // their distinct ids; dead (deleted or merged away) persons nowhere.
    const alive = [...persons.values()].filter((p) => p.alive);
    const dead = [...persons.values()].filter((p) => !p.alive);
    const stored = await sql<{
      id: string;
      in_old: boolean;
      in_new: boolean;
      version: string | null;
      properties: Record<string, unknown> | null;
    }>`
      SELECT COALESCE(n.id, o.id)::text AS id, o.id IS NOT NULL AS in_old, n.id IS NOT NULL AS in_new,
        COALESCE(n.version, 0)::text AS version, n.properties
      FROM ${sql.id(e.schema, 'posthog_person_new')} AS n
      FULL JOIN ${sql.id(e.schema, 'posthog_person')} AS o ON o.team_id = n.team_id AND o.id = n.id`.execute(
      e.admin.db,
    );
    const storedIds = await sql<{ person_id: string; distinct_id: string }>`
      SELECT person_id::text, distinct_id FROM ${sql.id(e.schema, 'posthog_persondistinctid')}`.execute(
      e.admin.db,
    );
    const rowsById = new Map(stored.rows.map((r) => [r.id, r]));
    const idsById = new Map<string, string[]>();
    for (const r of storedIds.rows) {
      idsById.set(r.person_id, [...(idsById.get(r.person_id) ?? []), r.distinct_id]);
    }
    const wrongStored: string[] = [];
    for (const p of alive) {
      const row = rowsById.get(p.id);
      if (!row?.in_new) {
        wrongStored.push(`${p.id} not in the new table`);
        continue;
      }
      if (Number(row.version) !== p.initialVersion + p.updates)
        wrongStored.push(
          `${p.id} version ${row.version}, expected ${p.initialVersion + p.updates}`,
        );
      for (const [k, v] of Object.entries(p.properties)) {
        if (row.properties?.[k] !== v) wrongStored.push(`${p.id} lost property ${k}`);
      }
      const got = (idsById.get(p.id) ?? []).sort().join(',');
      const want = [...p.distinctIds].sort().join(',');
      if (got !== want) wrongStored.push(`${p.id} distinct ids [${got}], expected [${want}]`);
    }
    for (const p of dead) {
      if (rowsById.has(p.id))
        wrongStored.push(`dead ${p.id} still stored (${JSON.stringify(rowsById.get(p.id))})`);
      if (idsById.has(p.id)) wrongStored.push(`dead ${p.id} still has distinct ids`);
    }
    expect(wrongStored.slice(0, 10), context).toEqual([]);
    expect(stored.rows.length, context).toBe(alive.length);

    // --- reads, through every instance: the persons written to (and a sample of the others),
    // by person id and by distinct id, their distinct ids, the counts; dead persons unreadable.
    const random = seededRandom(seed);
    const sample = (p: Expected) => p.touched || random() < 0.01;
    for (const [i, instance] of e.instances.entries()) {
      const wrong: string[] = [];
      for (const teamId of teamIds) {
        const expected = alive.filter((p) => p.teamId === teamId);
        const checked = expected.filter(sample);
        const where = `instance ${i}, team ${teamId}`;
        const count = await instance.repo.countPersons(teamId);
        if (count !== expected.length)
          wrong.push(`${where}: count ${count}, expected ${expected.length}`);
        const keys = checked.map((p) => ({ teamId, personId: p.id }));
        const got = new Map(
          (await instance.repo.fetchPersonsByPersonIds(keys)).map((r) => [r.id, r]),
        );
        const idsOf = new Map<string, string[]>();
        for (const d of await instance.repo.fetchDistinctIdsForPersons(keys)) {
          idsOf.set(d.personId, [...(idsOf.get(d.personId) ?? []), d.distinctId]);
        }
        for (const p of checked) {
          const row = got.get(p.id);
          if (!row) {
            wrong.push(`${where}: ${p.id} not readable`);
            continue;
          }
          if (row.version !== p.initialVersion + p.updates)
            wrong.push(
              `${where}: ${p.id} read at version ${row.version}, expected ${p.initialVersion + p.updates}`,
            );
          for (const [k, v] of Object.entries(p.properties)) {
            if (row.properties[k] !== v) wrong.push(`${where}: ${p.id} read without property ${k}`);
          }
          const ids = (idsOf.get(p.id) ?? []).sort().join(',');
          const want = [...p.distinctIds].sort().join(',');
          if (ids !== want)
            wrong.push(`${where}: ${p.id} distinct ids [${ids}], expected [${want}]`);
        }
        const pairs = checked.flatMap((p) =>
          [...p.distinctIds].map((distinctId) => ({ teamId, distinctId, id: p.id })),
        );
        const led = new Map(
          (await instance.repo.fetchPersonsByDistinctIds(pairs)).map((r) => [r.distinct_id, r.id]),
        );
        for (const pair of pairs) {
          if (led.get(pair.distinctId) !== pair.id)
            wrong.push(
              `${where}: ${pair.distinctId} leads to ${led.get(pair.distinctId)}, not ${pair.id}`,
            );
        }
        const deadHere = dead.filter((p) => p.teamId === teamId);
        if (deadHere.length > 0) {
          const resurrected = await instance.repo.fetchPersonsByPersonIds(
            deadHere.map((p) => ({ teamId, personId: p.id })),
          );
          for (const r of resurrected) wrong.push(`${where}: dead ${r.id} readable`);
        }
      }
      // Point reads of persons created during the run, by each of their distinct ids.
      for (const p of createdDuringRun.filter((c) => c.alive).slice(0, 10)) {
        for (const distinctId of p.distinctIds) {
          const row = await instance.repo.fetchPerson(p.teamId, distinctId);
          if (row?.id !== p.id)
            wrong.push(`instance ${i}: ${distinctId} -> ${row?.id}, not ${p.id}`);
        }
      }
      expect(wrong.slice(0, 10), context).toEqual([]);
    }
    console.info(context);
  }
});
