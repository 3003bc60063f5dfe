// `npm test` on a machine without Postgres on 127.0.0.1:5432: the runner starts a throwaway
// cluster (the machine's initdb/pg_ctl) or stops before any test with one line saying what to do.
// The shared server on 5432 is never stopped: the runner is pointed at closed ports instead.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import pg from 'pg';
import { freePort } from '../support/ports.js';

const RUNNER = fileURLToPath(new URL('../run.js', import.meta.url));

function runner(args: string[], env: Record<string, string | undefined>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const childEnv = { ...process.env, ...env };
  for (const [key, value] of Object.entries(env)) if (value === undefined) delete childEnv[key];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [RUNNER, ...args], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('test runner: finding Postgres (test/run.ts)', function () {
  this.timeout(60_000);

  it('a configured Postgres that does not answer stops the run before any test, in one line', async () => {
    const closed = await freePort();
    const result = await runner(['integration'], { TOKEN_TAP_TEST_ADMIN_URL: `postgres://postgres@127.0.0.1:${closed}/test`, CI: 'true' });
    expect(result.code).to.equal(2);
    const lines = result.stderr.trim().split('\n');
    expect(lines, result.stderr).to.have.length(1);
    expect(lines[0]).to.match(new RegExp(`^token-tap tests: no Postgres answers at TOKEN_TAP_TEST_ADMIN_URL \\(127\\.0\\.0\\.1:${closed}: ECONNREFUSED\\)`));
    expect(result.stdout).to.not.match(/passing|passed/);
  });

  it('without one on the default address, it starts a throwaway cluster, and removes it at exit', async () => {
    const closed = await freePort();
    const result = await runner(['--check-postgres'], {
      TOKEN_TAP_TEST_ADMIN_URL: undefined,
      TOKEN_TAP_TEST_PG_PROBE_URL: `postgres://postgres@127.0.0.1:${closed}/test`,
    });
    expect(result.code, result.stderr).to.equal(0);
    const match = /^test Postgres: throwaway \(127\.0\.0\.1:(\d+)\)$/m.exec(result.stdout);
    expect(match, result.stdout).to.not.equal(null);
    const client = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${match![1]}/postgres`, connectionTimeoutMillis: 2_000 });
    client.on('error', () => undefined);
    const error = await client.connect().then(
      () => undefined,
      (caught: NodeJS.ErrnoException) => caught,
    );
    await client.end().catch(() => undefined);
    expect(error?.code, 'the throwaway cluster is gone after the run').to.equal('ECONNREFUSED');
  });

  it('uses the machine server when 127.0.0.1:5432 answers (as CI does)', async () => {
    const result = await runner(['--check-postgres'], { TOKEN_TAP_TEST_ADMIN_URL: undefined, TOKEN_TAP_TEST_PG_PROBE_URL: undefined });
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout).to.contain('test Postgres: machine (127.0.0.1:5432)');
  });
});
