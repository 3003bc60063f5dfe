// Runs every property of test/support/properties.ts many times and prints runs and any
// counterexample. Usage: node dist/scripts/fuzz.js [runs per property, default 100000]
import fc from 'fast-check';
import { properties } from '../test/support/properties.js';

const numRuns = Number(process.argv[2] ?? 100_000);
let failed = 0;
for (const { name, property } of properties) {
  const started = Date.now();
  const details = fc.check(property, { numRuns });
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  if (details.failed) {
    failed += 1;
    process.stdout.write(
      `FAIL  ${name}\n      after ${details.numRuns} runs (seed ${details.seed}, path ${details.counterexamplePath}):\n      ${fc.stringify(details.counterexample)}\n      ${String(details.errorInstance ?? '')}\n`,
    );
  } else {
    process.stdout.write(`ok    ${name}\n      ${details.numRuns} runs, ${details.numSkips} skipped, ${seconds} s, seed ${details.seed}\n`);
  }
}
process.stdout.write(`${properties.length - failed} passed, ${failed} failed\n`);
process.exitCode = failed > 0 ? 1 : 0;
