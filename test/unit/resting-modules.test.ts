// What `token-tap serve` loads in its default configuration (no IdP, hook or exchange file): modules
// it does not use cost RSS at rest for the life of the process (issue 25's ≤ 70 MB). Each check runs
// in a fresh Node, as serve starts: the modules a test process has loaded already would hide a load.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';

const DIST_SRC = fileURLToPath(new URL('../../src/', import.meta.url));
const DEFAULT_ENV = { DATABASE_URL: 'postgres://u:p@localhost:5432/db', TOKEN_TAP_KEYS: `k1:${Buffer.alloc(32, 7).toString('base64')}` };

/** Runs `script` (an ES module) in a fresh node with only `env` (and PATH); its stdout parsed as JSON. */
function inFreshNode(script: string, env: Record<string, string> = {}): Record<string, unknown> {
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8' });
  expect(run.status, run.stderr).to.equal(0);
  return JSON.parse(run.stdout) as Record<string, unknown>;
}

/** The packages a compiled module's static imports reach, following the project's own modules (dynamic import() and require are not followed). */
function staticPackages(entry: string): Set<string> {
  const packages = new Set<string>();
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const text = readFileSync(file, 'utf8');
    for (const match of text.matchAll(/^\s*(?:import|export)\s(?:[^'";]*?\sfrom\s)?['"]([^'"]+)['"]/gm)) {
      const specifier = match[1]!;
      if (specifier.startsWith('.')) visit(path.resolve(path.dirname(file), specifier));
      else if (!specifier.startsWith('node:')) packages.add(specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]!);
    }
  };
  visit(entry);
  return packages;
}

describe('serve at rest loads only what its default configuration uses', () => {
  it("the CLI's static imports reach neither zod, yaml nor oauth4webapi (they load when a YAML file is checked, or an IdP called)", () => {
    const packages = staticPackages(path.join(DIST_SRC, 'cli/main.js'));
    expect(packages).to.include('pg').and.include('@grpc/grpc-js');
    for (const lazy of ['zod', 'yaml', 'oauth4webapi']) expect(packages, lazy).not.to.include(lazy);
  });

  it('reading the default configuration loads no zod; reading an IdP file loads it and checks the file as before', () => {
    const script = (withFile: boolean) => `
      import { createRequire } from 'node:module';
      const { loadSidecarConfig } = await import(${JSON.stringify(path.join(DIST_SRC, 'config/sidecar.js'))});
      let problems = [];
      try { loadSidecarConfig(process.env, {}); } catch (error) { problems = error.problems ?? [String(error)]; }
      const zodLoaded = Object.keys(createRequire(import.meta.url).cache).some((file) => file.includes('/node_modules/zod/'));
      process.stdout.write(JSON.stringify({ zodLoaded, problems, withFile: ${withFile} }));`;
    expect(inFreshNode(script(false), DEFAULT_ENV)).to.deep.equal({ zodLoaded: false, problems: [], withFile: false });
    const file = fileURLToPath(new URL('../../../test/fixtures/resting-modules-idps.yaml', import.meta.url));
    const read = inFreshNode(script(true), { ...DEFAULT_ENV, TOKEN_TAP_IDP_CONFIG: file });
    expect(read.zodLoaded).to.equal(true);
    expect(read.problems).to.deep.equal([
      `${file}: idps.acme.token_url must be https (plain http only for 127.0.0.1/localhost)`,
      `${file}: idps.acme.client_secret_env: environment variable ACME_SECRET (client_secret_env) is not set`,
      `${file}: idps.acme.refresh_token_policy.max_age must be a whole number and a unit s, m, h or d (e.g. 30s, 15m, 12h, 90d), above 0 and at most 3650d`,
      `${file}: idps.acme: unknown field "tokenurl" (known: issuer, jwks_uri, client_id, timeout_ms, token_url, client_secret_env, client_secret_file, revocation_url, auth_method, refresh_token_policy)`,
    ]);
  });

  it('pg loads without loading undici (its Cloudflare check builds a Response on a Node without navigator), and leaves the globals as they were', () => {
    const result = inFreshNode(`
      const before = 'navigator' in globalThis;
      await import(${JSON.stringify(path.join(DIST_SRC, 'lib/pg-preload.js'))});
      const pg = (await import('pg')).default;
      process.stdout.write(JSON.stringify({
        pool: typeof pg.Pool,
        undici: process.moduleLoadList.includes('NativeModule internal/deps/undici/undici'),
        navigatorAsBefore: ('navigator' in globalThis) === before,
      }));`);
    expect(result).to.deep.equal({ pool: 'function', undici: false, navigatorAsBefore: true });
  });
});
