import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { expect, it } from 'vitest';
import { metricDefinitions } from '../../src/index.js';
import { describeOnRealServer, realServerUrl, uniqueSchemaName } from '../support/test-database.js';

/** One sample line of the Prometheus text format: its metric name and labels. */
interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

function parseSamples(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!match || line.startsWith('#')) continue;
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[key ?? ''] = value ?? '';
    }
    samples.push({ name: match[1] ?? '', labels, value: Number(match[3]) });
  }
  return samples;
}

/** The exporter's own labels, not the library's attributes. */
const exporterLabels = new Set(['otel_scope_name', 'otel_scope_version', 'le']);

describeOnRealServer('the ingestion-service example exports the metrics to Prometheus', () => {
  it('after a small migration, /metrics has every documented metric with its documented labels', async () => {
    const schema = uniqueSchemaName('demo');
    const url = realServerUrl() ?? '';
    const child = spawn('npx', ['tsx', 'examples/ingestion-service/main.ts'], {
      env: {
        ...process.env,
        DATABASE_URL: url,
        DEMO_SCHEMA: schema,
        DEMO_PERSONS: '1500',
        METRICS_PORT: '0',
        EXIT_AFTER_WORK: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = once(child, 'exit');
    try {
      const output: string[] = [];
      let port: number | undefined;
      for await (const line of createInterface({ input: child.stdout })) {
        output.push(line);
        port ??=
          Number(/metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(line)?.[1]) || undefined;
        if (line === 'work done') break;
      }
      expect(output.at(-1), `${output.join('\n')}\n${stderr}`).toBe('work done');
      expect(output).toContain('verify(): clean, 0 mismatched keys');
      expect(port).toBeGreaterThan(0);

      const response = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(response.status).toBe(200);
      const text = await response.text();
      const samples = parseSamples(text);

      for (const def of Object.values(metricDefinitions)) {
        const base = def.name.replaceAll('.', '_');
        const promName = def.kind === 'counter' ? `${base}_total` : base;
        const type = def.kind === 'counter' ? 'counter' : def.kind;
        expect(text, def.name).toContain(`# TYPE ${promName} ${type}`);
        const names =
          def.kind === 'histogram'
            ? [`${base}_bucket`, `${base}_sum`, `${base}_count`]
            : [promName];
        const mine = samples.filter((s) => names.includes(s.name));
        expect(mine.length, def.name).toBeGreaterThan(0);
        for (const sample of mine) {
          const labels = Object.keys(sample.labels).filter((l) => !exporterLabels.has(l));
          expect(labels.sort(), `${sample.name} ${JSON.stringify(sample.labels)}`).toEqual(
            [...def.attributes].sort(),
          );
          expect(sample.labels.migration).toBe('persons');
          expect(sample.labels.otel_scope_name).toBe('pg-dual-read');
        }
      }

      // Values that follow from what the example did.
      const value = (name: string, labels: Record<string, string>) =>
        samples
          .filter(
            (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
          )
          .reduce((n, s) => n + s.value, 0);
      expect(value('pg_dual_read_read_persons_total', { source: 'old' })).toBeGreaterThan(0);
      expect(value('pg_dual_read_read_persons_total', { source: 'new' })).toBeGreaterThan(0);
      const copiedLine = output.find((l) => l.startsWith('backfill: '));
      const copied = Number(/backfill: (\d+) rows copied/.exec(copiedLine ?? '')?.[1]);
      expect(value('pg_dual_read_backfill_rows_total', { kind: 'copied' })).toBe(copied);
      expect(value('pg_dual_read_backfill_progress', {})).toBe(1);
      expect(value('pg_dual_read_phase', { phase: 'dual_read' })).toBe(1);
      expect(value('pg_dual_read_phase', { phase: 'old' })).toBe(0);
      expect(
        value('pg_dual_read_write_duration_count', { method: 'createPerson' }),
      ).toBeGreaterThan(0);
      // Personal data never reaches the output or the metrics.
      expect(`${output.join('\n')}${text}`).not.toContain('@example.com');

      // It stops by itself once scraped after its work.
      const [code] = await exited;
      expect(code, stderr).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await client.query(`DROP SCHEMA IF EXISTS "${schema}_control" CASCADE`);
      await client.end();
    }
  }, 120_000);
});
