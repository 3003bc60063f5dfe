// Runs the test layers with mocha from code (as node-oidc-provider does): `node dist/test/run.js
// [unit|integration|e2e|faults ...]` (or TOKEN_TAP_TEST_LAYERS=unit,e2e). In CI, `.only` fails the run. Ends with an "N passed, N failed" line.
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Mocha from 'mocha';
import { ensureTestPostgres, PostgresUnavailable } from './support/postgres-preflight.js';
import { prometheusBinaries, PrometheusUnavailable } from './support/prometheus-preflight.js';

const LAYERS = ['unit', 'integration', 'e2e', 'faults'];
const here = path.dirname(fileURLToPath(import.meta.url));

function testFiles(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((entry) => {
      const full = path.join(dir, entry);
      if (statSync(full).isDirectory()) return testFiles(full);
      return entry.endsWith('.test.js') ? [full] : [];
    });
}

// Layers from the arguments, else from TOKEN_TAP_TEST_LAYERS (how the fresh-clone test runs `.ci/run`
// on a clone with the unit layer only), else all.
const fromArgs = process.argv.slice(2).filter((arg) => arg !== '--check-postgres');
const requested = fromArgs.length > 0 ? fromArgs : (process.env.TOKEN_TAP_TEST_LAYERS?.split(',').filter(Boolean) ?? []);
const unknown = requested.filter((layer) => !LAYERS.includes(layer));
if (unknown.length > 0) {
  process.stderr.write(`unknown test layer(s): ${unknown.join(', ')}; choose from ${LAYERS.join(', ')}\n`);
  process.exit(2);
}
const layers = requested.length > 0 ? requested : LAYERS;

// The alert tests (unit: promtool; e2e: a real Prometheus) need Prometheus's binaries: checked first.
if (!process.argv.includes('--check-postgres')) {
  try {
    prometheusBinaries();
  } catch (error) {
    if (!(error instanceof PrometheusUnavailable)) throw error;
    process.stderr.write(`token-tap tests: ${error.message}\n`);
    process.exit(2);
  }
}

// Every layer but unit needs Postgres: find one before any test runs (support/postgres-preflight.ts).
// `--check-postgres` (tests of this) stops after saying which; TOKEN_TAP_TEST_PG_PROBE_URL moves
// the probe of the machine's server off 127.0.0.1:5432.
const checkOnly = process.argv.includes('--check-postgres');
if (checkOnly || layers.some((layer) => layer !== 'unit')) {
  try {
    const found = await ensureTestPostgres(process.env, process.env.TOKEN_TAP_TEST_PG_PROBE_URL || undefined);
    process.env.TOKEN_TAP_TEST_ADMIN_URL = found.url;
    process.stdout.write(`test Postgres: ${found.source} (${new URL(found.url).host})\n`);
  } catch (error) {
    if (!(error instanceof PostgresUnavailable)) throw error;
    process.stderr.write(`token-tap tests: ${error.message}\n`);
    process.exit(2);
  }
  if (checkOnly) process.exit(0);
}

const mocha = new Mocha({
  forbidOnly: Boolean(process.env.CI),
  timeout: 30_000,
  slow: 2_000,
  reporter: 'spec',
});
for (const layer of layers) for (const file of testFiles(path.join(here, layer))) mocha.addFile(file);

await mocha.loadFilesAsync();
const runner = mocha.run((failures) => {
  const stats = runner.stats!;
  process.stdout.write(`\n${stats.passes} passed, ${failures} failed${stats.pending ? `, ${stats.pending} skipped` : ''}\n`);
  process.exitCode = failures > 0 ? 1 : 0;
});
