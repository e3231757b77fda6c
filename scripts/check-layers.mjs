#!/usr/bin/env node
// Checks the layer map of CONTRIBUTING.md: a module of src/ imports only from its own folder or
// from a folder of a LOWER layer (never up, never a sibling folder of the same layer).
// Usage: node scripts/check-layers.mjs   (exit 1 and one line per offending import)
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/** Top-level folders (or files) of src/, lowest layer first. Keep in step with CONTRIBUTING.md. */
export const layers = [
  ['errors', 'util', 'model'],
  ['db', 'events'],
  ['options', 'metrics'],
  ['control', 'persons'],
  ['phases'],
  ['prepare', 'repository'],
  ['backfill'],
  ['verify'],
  ['cutover'],
  ['migration'],
  ['cli', 'testing'],
  ['index'],
];

const root = resolve(process.argv[2] ?? 'src');
const layerOf = new Map(layers.flatMap((names, level) => names.map((name) => [name, level])));
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (/\.ts$/.test(name) && !name.endsWith('.d.ts')) files.push(path);
  }
})(root);

const topOf = (file) => relative(root, file).split('/')[0].replace(/\.ts$/, '');
const importRe = /(?:import|export)\s[^'"]*?from\s*['"](\.[^'"]+)['"]/g;
const problems = [];
for (const file of files) {
  const from = topOf(file);
  if (!layerOf.has(from)) problems.push(`${relative(root, file)}: folder "${from}" has no layer`);
  for (const [, spec] of readFileSync(file, 'utf8').matchAll(importRe)) {
    const to = topOf(resolve(dirname(file), spec));
    if (to === from) continue;
    const [a, b] = [layerOf.get(from), layerOf.get(to)];
    if (a === undefined || b === undefined) continue;
    if (b > a) problems.push(`${relative(root, file)} imports ${spec}: ${from} (layer ${a}) reaches up to ${to} (layer ${b})`);
    else if (b === a) problems.push(`${relative(root, file)} imports ${spec}: ${from} and ${to} are siblings of layer ${a}`);
  }
}
for (const problem of problems) console.log(problem);
process.exitCode = problems.length > 0 ? 1 : 0;
