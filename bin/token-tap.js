#!/bin/sh
// 2>/dev/null; exec node --max-semi-space-size=1 --v8-pool-size=1 -- "$0" "$@"
// The CLI entry point; the code lives in dist/ (built by `npm run build`, which setup runs).
// Run as a program (`npx token-tap`, `./bin/token-tap.js`), the file is first a shell script: the
// line above (a comment to Node; to sh, a failing `//` then `exec`) replaces sh with Node started
// with serve's flags (src/ops/node-flags.ts), which V8 takes only at start-up: one process, the same
// PID, signals and exit codes, no NODE_OPTIONS to ask users for. `node [flags] bin/token-tap.js`
// skips that line and runs with the flags given (the Dockerfile's ENTRYPOINT gives the same ones).
import { existsSync } from 'node:fs';

const entry = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('token-tap: not built yet; run `npm run setup` (or `npm run build`) first\n');
  process.exit(1);
}
const { runCli } = await import(entry.href);
process.exitCode = await runCli(process.argv);
