#!/usr/bin/env node
// Lists functions of src/ longer than the limit (default 80 lines of body): long functions are
// split into named steps (CONTRIBUTING.md). A function whose body is one SQL statement may be
// longer: mark it with a comment `// one SQL statement` on the line before it.
// Usage: node scripts/check-function-length.mjs [srcDir] [limit]   (exit 1 when any is found)
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';

const root = process.argv[2] ?? 'src';
const limit = Number(process.argv[3] ?? 80);
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (path.endsWith('.ts')) files.push(path);
  }
})(root);

const found = [];
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const visit = (node) => {
    const isFunction =
      ts.isFunctionDeclaration(node) ||
      ts.isMethodDeclaration(node) ||
      ts.isArrowFunction(node) ||
      ts.isFunctionExpression(node) ||
      ts.isConstructorDeclaration(node);
    if (isFunction && node.body) {
      const first = source.getLineAndCharacterOfPosition(node.body.getStart()).line;
      const last = source.getLineAndCharacterOfPosition(node.body.getEnd()).line;
      const before = text.slice(0, node.getFullStart() + node.getLeadingTriviaWidth());
      const exempt = /\/\/ one SQL statement\s*$/.test(before.split('\n').slice(-3).join('\n'));
      if (last - first + 1 > limit && !exempt) {
        found.push(`${file}:${first + 1}: ${last - first + 1} lines (limit ${limit})`);
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
}
for (const line of found) console.log(line);
process.exitCode = found.length > 0 ? 1 : 0;
