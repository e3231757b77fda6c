/**
 * What the benchmarks (and the soak) share: numeric settings from the environment, a seeded
 * random generator, and the seeding plan that spreads a table's rows over teams in interleaved
 * chunks (so ids grow across all teams, as in production, and no team is one contiguous block
 * of the heap).
 */

/** The number in environment variable `name` (>= 0), or `fallback` when unset or empty. */
export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number >= 0`);
  return value;
}

/** One `seedPersons` call of {@link interleavedSeedJobs}. */
export interface SeedJob {
  readonly teamId: number;
  readonly count: number;
  readonly chunk: number;
}

/**
 * `seedPersons` calls for `rows` persons over `teams` teams of equal size (teams 1..teams), in
 * chunks of about `chunk` rows: round k seeds the k-th chunk of every team, so ids grow over
 * time across all teams.
 */
export function interleavedSeedJobs(rows: number, teams: number, chunk: number): SeedJob[] {
  const jobs: SeedJob[] = [];
  const sizes = Array.from(
    { length: teams },
    (_, t) => Math.floor(rows / teams) + (t < rows % teams ? 1 : 0),
  );
  const chunks = Math.max(1, Math.ceil(Math.max(...sizes) / chunk));
  for (let k = 0; k < chunks; k++) {
    for (const [index, size] of sizes.entries()) {
      const count = Math.floor(size / chunks) + (k < size % chunks ? 1 : 0);
      if (count > 0) jobs.push({ teamId: index + 1, count, chunk: k });
    }
  }
  return jobs;
}

/** A seeded generator of numbers in [0, 1) (xorshift32): the same seed, the same sequence. */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x1_0000_0000;
  };
}
