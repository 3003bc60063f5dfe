// The config files' problems name the file, the path and what was expected, never a value from the
// file: a broken file whose every value is a marker must yield problems without a marker in them.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { loadIdpConfig } from '../../src/config/idp-file.js';
import { loadHookConfig } from '../../src/config/hook-file.js';

const MARKER = 'SECRET-MARKER';

function file(content: unknown): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-config-values-'));
  const name = path.join(dir, 'config.json');
  writeFileSync(name, JSON.stringify(content));
  return name;
}

/** Every leaf of `shape` replaced by a marker string, numbered so that none is a prefix of another. */
function marked(shape: unknown, counter = { n: 0 }): unknown {
  if (Array.isArray(shape)) return shape.map((item) => marked(item, counter));
  if (shape !== null && typeof shape === 'object') return Object.fromEntries(Object.entries(shape).map(([key, value]) => [key, marked(value, counter)]));
  counter.n += 1;
  return `${MARKER}-${counter.n}-x`;
}

describe('config file problems quote no value from the file', () => {
  it('the IdP file: every field of every entry a marker', () => {
    const fields = {
      issuer: 1,
      jwks_uri: 1,
      client_id: 1,
      timeout_ms: 1,
      token_url: 1,
      client_secret_env: 1,
      client_secret_file: 1,
      revocation_url: 1,
      auth_method: 1,
      client_secret: 1,
    };
    const problems: string[] = [];
    const config = file({
      idps: {
        acme: marked(fields),
        beta: marked({ issuer: 1, jwks_uri: 1 }),
        gamma: marked({ client_secret_file: 1, token_url: 1, client_id: 1 }),
        delta: 'x',
      },
      colour: 1,
    });
    loadIdpConfig({ TOKEN_TAP_IDP_CONFIG: config }, problems);
    // A problem for (nearly) every field, each naming its path...
    for (const field of ['issuer', 'jwks_uri', 'timeout_ms', 'token_url', 'client_secret_env', 'revocation_url', 'auth_method', 'client_secret'])
      expect(problems.join('\n')).to.contain(`idps.acme.${field}`);
    expect(problems.join('\n')).to.contain('idps.gamma.client_secret_file: cannot read the file it names (ENOENT)').and.contain('unknown field "colour"');
    // ...and none quoting a value.
    expect(problems.filter((problem) => problem.includes(MARKER))).to.deep.equal([]);
  });

  it('the hook file: every field a marker', () => {
    const problems: string[] = [];
    const config = file(
      marked({
        authentication: { header: { name: 1, value_env: 1, value_file: 1, value: 1 } },
        freshness_wait_ms: 1,
        providers: [
          { okta_idp_id: 1, idp: 1, match: 1, identity_claims: { upstream_a: 1 }, access_claims: { upstream_b: 1 }, require_grant: 1, allow_unverified: 1 },
          { okta_idp_id: 1, idp: 1, identity_claims: { upstream_c: 1 } },
        ],
      }),
    );
    loadHookConfig({ TOKEN_TAP_HOOK_CONFIG: config }, problems);
    expect(problems.length).to.be.greaterThan(8);
    expect(problems.filter((problem) => problem.includes(MARKER))).to.deep.equal([]);
  });

  it('the hook file: a header secret file that cannot be read, or is empty, is not named by its path', () => {
    const dir = path.join(mkdtempSync(path.join(os.tmpdir(), 'token-tap-config-values-')), `${MARKER}-dir`);
    mkdirSync(dir);
    const empty = path.join(dir, 'empty');
    writeFileSync(empty, '');
    const provider = { okta_idp_id: '0oaA', idp: 'entra', identity_claims: { upstream_groups: 'groups' } };
    for (const [secretFile, expected] of [
      [path.join(dir, 'absent'), 'cannot read the file it names (ENOENT)'],
      [empty, 'the file it names is empty'],
    ] as const) {
      const problems: string[] = [];
      loadHookConfig({ TOKEN_TAP_HOOK_CONFIG: file({ authentication: { header: { value_file: secretFile } }, providers: [provider] }) }, problems);
      expect(problems.join('\n')).to.contain(`authentication.header.value_file: ${expected}`);
      expect(problems.filter((problem) => problem.includes(MARKER))).to.deep.equal([]);
    }
  });

  it('the hook file: a claim name with a line break is shown escaped, on one line', () => {
    const problems: string[] = [];
    const provider = { okta_idp_id: '0oaA', idp: 'entra', identity_claims: { 'upstream\nforged: line': 'groups' } };
    const config = file({ authentication: { header: { value_env: 'HOOK_SECRET' } }, providers: [provider] });
    loadHookConfig({ TOKEN_TAP_HOOK_CONFIG: config, HOOK_SECRET: 'x' }, problems);
    expect(problems).to.deep.equal([
      `${config}: providers[0].identity_claims: "upstream\\u000aforged: line" is not a usable claim name (letters, digits, _ . : -; starting with a letter or _)`,
    ]);
  });

  it('two hook providers with one Okta IdP id: named by position, not by the id', () => {
    const problems: string[] = [];
    const provider = { okta_idp_id: '0oaSECRETMARKER', idp: 'entra', identity_claims: { upstream_groups: 'groups' } };
    loadHookConfig(
      { TOKEN_TAP_HOOK_CONFIG: file({ authentication: { header: { value_env: 'HOOK_SECRET' } }, providers: [provider, provider] }), HOOK_SECRET: 'x' },
      problems,
    );
    expect(problems.join('\n')).to.contain('providers[1]: okta_idp_id is given twice').and.not.contain('0oaSECRETMARKER');
  });
});
