/**
 * Draws the ETA's predictions over time from traces recorded by `bench/eta.ts`
 * (BENCH_TRACE=dir), one panel per case, as a standalone SVG (no dependency):
 *
 *   npx tsx bench/eta-chart.ts DIR [OUT.svg]     (or `npm run bench:eta-chart -- DIR`)
 *
 * Each panel: the predicted duration (elapsed + ETA) at each read, the ETA's range around it,
 * the actual duration, the goal's band around it (10% uniform, 20% otherwise), the moment 10%
 * of the rows were read, and for the ceiling and pause cases the moment of the change. The
 * predictions are this checkout's estimator replayed on the trace (`bench/eta-replay.ts`),
 * which reproduces what the run printed when the estimator is the one the run used.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { EtaTrace } from './eta.js';
import { type Judged, replay } from './eta-replay.js';

const cases = ['uniform', 'skewed', 'ceiling', 'pause', 'writes'] as const;
const panel = { width: 640, height: 170, left: 56, right: 16, top: 26, bottom: 30 };
const colors = { band: '#cfe3f7', line: '#1f5fa8', actual: '#222', goal: '#e3f4e1', mark: '#999' };

const fmt = (n: number) => n.toFixed(1);

/** One case's panel, its top at `y0`. */
function drawPanel(trace: EtaTrace, judged: Judged[], y0: number): string {
  const actual = trace.ms / 1_000;
  const goal = trace.name === 'uniform' ? 0.1 : 0.2;
  const tMax = actual;
  // Predictions far off (before a pause or a raised ceiling) are clipped at twice the actual.
  const yMax = 2 * actual;
  const plotW = panel.width - panel.left - panel.right;
  const plotH = panel.height - panel.top - panel.bottom;
  const x = (t: number) => panel.left + (Math.min(t, tMax) / tMax) * plotW;
  const y = (v: number) => y0 + panel.top + plotH - (Math.min(Math.max(v, 0), yMax) / yMax) * plotH;
  // No ETA while paused: the line breaks there rather than bridge the pause.
  const segments = splitAtGaps(judged.map((j) => ({ ...j, t: j.t / 1_000 })));
  const line = (ps: Point[]) =>
    ps.map((p) => `${fmt(x(p.t))},${fmt(y(p.finish / 1_000))}`).join(' ');
  const band = (ps: Point[]) =>
    [
      ...ps.map((p) => `${fmt(x(p.t))},${fmt(y(p.high / 1_000))}`),
      ...[...ps].reverse().map((p) => `${fmt(x(p.t))},${fmt(y(p.low / 1_000))}`),
    ].join(' ');
  const tenth = judged.find((j) => j.fraction >= 0.1);
  const change = judged.find((j) => j.afterChange);
  const parts = [
    `<text x="${panel.left}" y="${y0 + 16}" font-weight="bold">${trace.name}: took ${fmt(actual)} s</text>`,
    `<rect x="${panel.left}" y="${fmt(y(actual * (1 + goal)))}" width="${plotW}" height="${fmt(y(actual * (1 - goal)) - y(actual * (1 + goal)))}" fill="${colors.goal}"/>`,
    ...segments.map((ps) => `<polygon points="${band(ps)}" fill="${colors.band}" opacity="0.8"/>`),
    `<line x1="${panel.left}" x2="${panel.left + plotW}" y1="${fmt(y(actual))}" y2="${fmt(y(actual))}" stroke="${colors.actual}" stroke-dasharray="4 3"/>`,
    ...segments.map(
      (ps) =>
        `<polyline points="${line(ps)}" fill="none" stroke="${colors.line}" stroke-width="2"/>`,
    ),
    axis(y0, plotW, plotH, tMax, yMax),
  ];
  if (tenth) parts.push(marker(x(tenth.t / 1_000), y0, plotH, '10% read'));
  const beforePause = segments.length > 1 ? segments[0]?.at(-1) : undefined;
  if (trace.name === 'pause' && beforePause)
    parts.push(marker(x(beforePause.t), y0, plotH, 'paused'));
  if (change && (trace.name === 'ceiling' || trace.name === 'pause')) {
    parts.push(
      marker(x(change.t / 1_000), y0, plotH, trace.name === 'pause' ? 'resumed' : 'raised'),
    );
  }
  return parts.join('\n');
}

type Point = Judged & { readonly t: number };

/** Runs of predictions without a gap of more than 4 read intervals (a pause) between them. */
function splitAtGaps(points: Point[]): Point[][] {
  const gaps = points.slice(1).map((p, i) => p.t - (points[i]?.t ?? 0));
  const median = [...gaps].sort((a, b) => a - b)[Math.floor(gaps.length / 2)] ?? 0;
  const segments: Point[][] = [];
  for (const [i, p] of points.entries()) {
    const gap = i === 0 ? Number.POSITIVE_INFINITY : (gaps[i - 1] ?? 0);
    if (gap > 4 * median) segments.push([p]);
    else segments.at(-1)?.push(p);
  }
  return segments;
}

function marker(at: number, y0: number, plotH: number, label: string): string {
  return `<line x1="${fmt(at)}" x2="${fmt(at)}" y1="${y0 + panel.top}" y2="${y0 + panel.top + plotH}" stroke="${colors.mark}" stroke-dasharray="2 2"/>
<text x="${fmt(at + 3)}" y="${y0 + panel.top + 10}" fill="${colors.mark}" font-size="10">${label}</text>`;
}

function axis(y0: number, plotW: number, plotH: number, tMax: number, yMax: number): string {
  const bottom = y0 + panel.top + plotH;
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  return [
    `<line x1="${panel.left}" x2="${panel.left + plotW}" y1="${bottom}" y2="${bottom}" stroke="#666"/>`,
    `<line x1="${panel.left}" x2="${panel.left}" y1="${y0 + panel.top}" y2="${bottom}" stroke="#666"/>`,
    ...ticks.map(
      (f) =>
        `<text x="${fmt(panel.left + f * plotW)}" y="${bottom + 13}" font-size="10" text-anchor="middle">${fmt(f * tMax)} s</text>`,
    ),
    ...ticks.map(
      (f) =>
        `<text x="${panel.left - 4}" y="${fmt(bottom - f * plotH + 3)}" font-size="10" text-anchor="end">${fmt(f * yMax)} s</text>`,
    ),
  ].join('\n');
}

function main(dir: string | undefined, out = 'docs/eta-prediction.svg'): void {
  if (!dir) throw new Error('usage: tsx bench/eta-chart.ts DIR [OUT.svg]');
  const traces = cases
    .map((name) => join(dir, `${name}.json`))
    .filter((file) => existsSync(file))
    .map((file) => JSON.parse(readFileSync(file, 'utf8')) as EtaTrace);
  const legend = [
    'Predicted duration (elapsed + ETA, blue) and its range (light blue) at each read;',
    'the actual duration (dashed) and the goal around it (green: 10% uniform, 20% others).',
  ];
  const top = 36;
  const height = top + traces.length * panel.height;
  const panels = traces.map((trace, i) =>
    drawPanel(trace, replay(trace, true), top + i * panel.height),
  );
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${panel.width}" height="${height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
${legend.map((l, i) => `<text x="${panel.left}" y="${14 + i * 14}" font-size="11">${l}</text>`).join('\n')}
${panels.join('\n')}
</svg>
`;
  writeFileSync(out, svg);
  console.log(`wrote ${out} (${traces.map((t) => t.name).join(', ')})`);
}

main(process.argv[2], process.argv[3]);
