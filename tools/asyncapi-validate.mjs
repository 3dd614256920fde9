#!/usr/bin/env node
// Validate AsyncAPI documents with the official parser (@asyncapi/parser).
//
//   node tools/asyncapi-validate.mjs [--strict] FILE...
//
// Prints one line per diagnostic (severity, rule code, JSON path, message) and a summary per
// file. Exit status: 0 when every document parses without errors (with --strict: also without
// warnings), 1 when one does not, 2 for a usage error or an unreadable file. `npm ci` in this
// folder installs the parser (tests/integration/test_asyncapi_parser.py does it once).
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { DiagnosticSeverity, Parser } from '@asyncapi/parser';

const SEVERITY = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

async function validate(parser, file, strict) {
  const path = resolve(file);
  const text = await readFile(path, 'utf8');
  const { document, diagnostics } = await parser.parse(text, { source: path });
  const failing = diagnostics.filter(
    (d) =>
      d.severity === DiagnosticSeverity.Error ||
      (strict && d.severity === DiagnosticSeverity.Warning),
  );
  for (const d of diagnostics) {
    const where = d.path.length ? d.path.join('.') : '(document)';
    console.log(`${file}: ${SEVERITY[d.severity]} ${d.code} at ${where}: ${d.message}`);
  }
  const ok = document !== undefined && failing.length === 0;
  console.log(`${file}: ${ok ? 'valid' : 'INVALID'} (${diagnostics.length} diagnostic(s))`);
  return ok;
}

async function main(argv) {
  const strict = argv.includes('--strict');
  const files = argv.filter((arg) => arg !== '--strict');
  if (files.length === 0 || files.some((arg) => arg.startsWith('--'))) {
    console.error('usage: node asyncapi-validate.mjs [--strict] FILE...');
    return 2;
  }
  const parser = new Parser();
  let ok = true;
  for (const file of files) {
    try {
      ok = (await validate(parser, file, strict)) && ok;
    } catch (error) {
      console.error(`${file}: cannot validate: ${error.message}`);
      return 2;
    }
  }
  return ok ? 0 : 1;
}

process.exitCode = await main(process.argv.slice(2));
