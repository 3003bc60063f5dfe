#!/usr/bin/env node
// The CLI entry point; the code lives in dist/ (built by `npm run build`, which setup runs).
import { existsSync } from 'node:fs';

const entry = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('token-tap: not built yet; run `npm run setup` (or `npm run build`) first\n');
  process.exit(1);
}
const { runCli } = await import(entry.href);
process.exitCode = await runCli(process.argv);
