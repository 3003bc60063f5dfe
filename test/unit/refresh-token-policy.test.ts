// The refresh-token policy's pure parts: durations, the refresh_token_policy block of the IdP file
// (every problem at once, never a value), and the decision core (which grant gets which action at t).
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { loadIdpConfig } from '../../src/config/idp-file.js';
import { loadSidecarConfig } from '../../src/config/sidecar.js';
import { ConfigError } from '../../src/config/values.js';
import { formatDuration, parseDuration } from '../../src/config/refresh-token-policy.js';
import { decide, factsOf, writtenByUnknownWriter, type GrantFacts } from '../../src/policy/decide.js';
import { buildReport, formatReportText } from '../../src/policy/report.js';

const S = 1_000;
const D = 86_400_000;

function idpFile(yaml: string): string {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'token-tap-policy-')), 'idps.yaml');
  writeFileSync(file, yaml);
  return file;
}

describe('refresh-token policy: durations', () => {
  it('reads a whole number and one of s, m, h, d', () => {
    expect(parseDuration('1s')).to.equal(S);
    expect(parseDuration('15m')).to.equal(15 * 60 * S);
    expect(parseDuration('12h')).to.equal(12 * 3_600 * S);
    expect(parseDuration('90d')).to.equal(90 * D);
    expect(parseDuration(' 7d ')).to.equal(7 * D);
  });

  it('refuses anything else: no unit, other units, fractions, signs, zero, over ten years', () => {
    for (const text of ['', '90', 'd', '1.5h', '-1d', '+1d', '0s', '1w', '1 d', '1D', '3651d', '10ms', 'P1D', '99999999s']) {
      expect(parseDuration(text), text).to.equal(undefined);
    }
    expect(parseDuration('3650d')).to.equal(3_650 * D);
  });

  it('formats back to the shortest exact text', () => {
    for (const text of ['90d', '36h', '90s', '15m', '1s']) expect(formatDuration(parseDuration(text)!)).to.equal(text);
    expect(formatDuration(parseDuration('86400s')!)).to.equal('1d');
  });
});

describe('refresh-token policy: TOKEN_TAP_POLICY_*', () => {
  const valid = { DATABASE_URL: 'postgres://u:p@localhost:5432/db', TOKEN_TAP_KEYS: `k1:${Buffer.alloc(32, 7).toString('base64')}` };

  it('runs every 15 minutes by default, and takes a duration such as 1s', () => {
    expect(loadSidecarConfig(valid).policy).to.deep.include({ intervalMs: 15 * 60 * S, maxPerRun: 500, maxPerIdp: 100 });
    expect(loadSidecarConfig({ ...valid, TOKEN_TAP_POLICY_INTERVAL: '1s', TOKEN_TAP_POLICY_MAX_PER_IDP: '7' }).policy).to.deep.include({
      intervalMs: S,
      maxPerIdp: 7,
    });
  });

  it('refuses an interval that is no duration, with the other problems', () => {
    let error: unknown;
    try {
      loadSidecarConfig({ ...valid, TOKEN_TAP_POLICY_INTERVAL: '900', TOKEN_TAP_POLICY_MAX_PER_RUN: '0' });
    } catch (caught) {
      error = caught;
    }
    expect(error).to.be.instanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join('\n');
    expect(problems)
      .to.include('TOKEN_TAP_POLICY_INTERVAL must be a whole number and a unit')
      .and.to.include('TOKEN_TAP_POLICY_MAX_PER_RUN must be a positive integer');
  });
});

describe('refresh-token policy: TOKEN_TAP_FINGERPRINT_KEY', () => {
  const file = () => idpFile('idps:\n  acme:\n    issuer: https://acme.example\n    client_id: c1\n    refresh_token_policy:\n      max_age: 1d\n');
  const env = { DATABASE_URL: 'postgres://u:p@localhost:5432/db', TOKEN_TAP_KEYS: `k1:${Buffer.alloc(32, 7).toString('base64')}` };

  it('a policy refuses to start without it (fingerprints would follow the active key), naming the IdP', () => {
    let error: unknown;
    try {
      loadSidecarConfig({ ...env, TOKEN_TAP_IDP_CONFIG: file() });
    } catch (caught) {
      error = caught;
    }
    expect(error).to.be.instanceOf(ConfigError);
    expect((error as ConfigError).problems.join('\n')).to.include('TOKEN_TAP_FINGERPRINT_KEY is not set, and acme has a refresh_token_policy');
  });

  it('starts with it, and without it when no IdP has a policy', () => {
    expect(
      loadSidecarConfig({ ...env, TOKEN_TAP_IDP_CONFIG: file(), TOKEN_TAP_FINGERPRINT_KEY: Buffer.alloc(32, 8).toString('base64') }).policy.policies.size,
    ).to.equal(1);
    expect(loadSidecarConfig(env).policy.policies.size).to.equal(0);
  });
});

describe('refresh-token policy: the IdP file', () => {
  const entry = (policy: string) =>
    `idps:\n  acme:\n    token_url: https://acme.example/token\n    client_id: c1\n    client_secret_env: ACME_SECRET\n    revocation_url: https://acme.example/revoke\n${policy}`;
  const env = (file: string) => ({ TOKEN_TAP_IDP_CONFIG: file, ACME_SECRET: 's3cret-value' });

  it('reads max_age, idle_max and rotate_every into ms per IdP', () => {
    const problems: string[] = [];
    const config = loadIdpConfig(env(idpFile(entry('    refresh_token_policy:\n      max_age: 90d\n      idle_max: 30d\n      rotate_every: 7d\n'))), problems);
    expect(problems).to.deep.equal([]);
    expect(config.policies.get('acme')).to.deep.equal({ maxAgeMs: 90 * D, idleMaxMs: 30 * D, rotateEveryMs: 7 * D });
  });

  it('an IdP without the block has no policy', () => {
    const problems: string[] = [];
    expect(loadIdpConfig(env(idpFile(entry(''))), problems).policies.size).to.equal(0);
    expect(problems).to.deep.equal([]);
  });

  it('reports every problem at once, naming the path, never quoting the value', () => {
    const problems: string[] = [];
    const file = idpFile(entry('    refresh_token_policy:\n      max_age: ninety-days-SECRETISH\n      idle_max: 12\n      rotate: 7d\n'));
    loadIdpConfig(env(file), problems);
    expect(problems.some((problem) => problem.includes('idps.acme.refresh_token_policy.max_age must be a whole number and a unit'))).to.equal(
      true,
      problems.join('\n'),
    );
    expect(problems.some((problem) => problem.includes('idps.acme.refresh_token_policy.idle_max must be'))).to.equal(true, problems.join('\n'));
    expect(problems.some((problem) => problem.includes('unknown field(s) "rotate"'))).to.equal(true, problems.join('\n'));
    expect(problems.join('\n')).not.to.include('SECRETISH');
  });

  it('refuses an empty policy, one that is no mapping, rotate_every without a client, and rotate_every not shorter than max_age', () => {
    const cases: Array<[string, string]> = [
      [entry('    refresh_token_policy: {}\n'), 'names none of max_age, idle_max, rotate_every'],
      [entry('    refresh_token_policy: 30d\n'), 'must be a mapping'],
      [
        'idps:\n  acme:\n    issuer: https://acme.example\n    client_id: c1\n    refresh_token_policy:\n      rotate_every: 1d\n',
        "rotate_every needs the IdP's token_url",
      ],
      [entry('    refresh_token_policy:\n      max_age: 1d\n      rotate_every: 24h\n'), 'rotate_every must be shorter than max_age'],
    ];
    for (const [yaml, expected] of cases) {
      const problems: string[] = [];
      const config = loadIdpConfig(env(idpFile(yaml)), problems);
      expect(problems.join('\n'), yaml).to.include(expected);
      expect(config.policies.size).to.equal(0);
    }
  });

  it('a verification-only IdP may expire (max_age, idle_max) without a client: the grant is erased, not revoked at the IdP', () => {
    const problems: string[] = [];
    const config = loadIdpConfig(
      { TOKEN_TAP_IDP_CONFIG: idpFile('idps:\n  acme:\n    issuer: https://acme.example\n    client_id: c1\n    refresh_token_policy:\n      max_age: 1d\n') },
      problems,
    );
    expect(problems).to.deep.equal([]);
    expect(config.policies.get('acme')).to.deep.equal({ maxAgeMs: D });
  });
});

describe('refresh-token policy: which grant gets which action at time t', () => {
  const t0 = new Date('2026-01-01T00:00:00Z');
  const at = (ms: number) => new Date(t0.getTime() + ms);
  const grant = (overrides: Partial<GrantFacts> = {}): GrantFacts => ({
    status: 'active',
    hasRefreshToken: true,
    chainBeganAt: t0,
    tokenSince: t0,
    lastRefreshedAt: null,
    lastUsedAt: t0,
    ...overrides,
  });
  const policy = { maxAgeMs: 90 * D, idleMaxMs: 30 * D, rotateEveryMs: 7 * D };

  it('nothing before any threshold; rotate at rotate_every exactly', () => {
    expect(decide(grant(), policy, at(7 * D - 1))).to.equal(undefined);
    expect(decide(grant(), policy, at(7 * D))).to.deep.equal({ action: 'rotate' });
  });

  it('a rotation restarts the period: from the new token, or from the last refresh where the IdP handed the same token back', () => {
    expect(decide(grant({ tokenSince: at(7 * D), lastRefreshedAt: at(7 * D) }), policy, at(10 * D))).to.equal(undefined);
    expect(decide(grant({ tokenSince: t0, lastRefreshedAt: at(7 * D) }), policy, at(13 * D))).to.equal(undefined);
    expect(decide(grant({ tokenSince: t0, lastRefreshedAt: at(7 * D) }), policy, at(14 * D))).to.deep.equal({ action: 'rotate' });
  });

  it('idle_max expires a grant no login or caller refresh used, whatever the rotations', () => {
    const rotatedLately = grant({ tokenSince: at(29 * D), lastRefreshedAt: at(29 * D), lastUsedAt: t0 });
    expect(decide(rotatedLately, policy, at(30 * D))).to.deep.equal({ action: 'expire', reason: 'idle_max' });
    expect(decide({ ...rotatedLately, lastUsedAt: at(1 * D) }, policy, at(30 * D))).to.equal(undefined);
  });

  it('max_age counts from the login that began the chain and wins over idle_max', () => {
    const used = grant({ tokenSince: at(89 * D), lastRefreshedAt: at(89 * D), lastUsedAt: at(89 * D) });
    expect(decide(used, policy, at(90 * D - 1))).to.equal(undefined);
    expect(decide(used, policy, at(90 * D))).to.deep.equal({ action: 'expire', reason: 'max_age' });
    expect(decide({ ...used, lastUsedAt: t0 }, policy, at(90 * D))).to.deep.equal({ action: 'expire', reason: 'max_age' });
  });

  it('leaves revoked grants and grants without a refresh token alone, and does only what the policy names', () => {
    expect(decide(grant({ status: 'revoked' }), policy, at(365 * D))).to.equal(undefined);
    expect(decide(grant({ hasRefreshToken: false }), policy, at(365 * D))).to.equal(undefined);
    expect(decide(grant(), { rotateEveryMs: 7 * D }, at(365 * D))).to.deep.equal({ action: 'rotate' });
    expect(decide(grant(), { idleMaxMs: 30 * D }, at(365 * D))).to.deep.equal({ action: 'expire', reason: 'idle_max' });
    expect(decide(grant(), {}, at(365 * D))).to.equal(undefined);
  });

  it('rows from before migration 000013 count the chain and the use from their last capture, the token from its capture', () => {
    const old = factsOf({ status: 'active', refresh_token: Buffer.from('x'), captured_at: at(5 * D), refresh_token_observed_at: at(2 * D) });
    expect(old).to.deep.equal({
      status: 'active',
      hasRefreshToken: true,
      chainBeganAt: at(5 * D),
      tokenSince: at(2 * D),
      lastRefreshedAt: null,
      lastUsedAt: at(5 * D),
    });
    const beforeObservedAt = factsOf({ status: 'active', refresh_token: Buffer.from('x'), captured_at: at(5 * D), refresh_token_observed_at: null });
    expect(beforeObservedAt).to.deep.include({ chainBeganAt: at(5 * D), tokenSince: at(5 * D), lastUsedAt: at(5 * D) });
    expect(factsOf({ status: 'active', refresh_token: null, captured_at: t0, refresh_token_observed_at: null }).hasRefreshToken).to.equal(false);
    const current = factsOf({
      status: 'active',
      refresh_token: Buffer.from('x'),
      captured_at: at(9 * D),
      refresh_token_observed_at: at(9 * D),
      refresh_token_first_seen_at: at(3 * D),
      chain_began_at: at(1 * D),
      last_refreshed_at: at(9 * D),
      last_login_at: at(1 * D),
      last_used_at: at(4 * D),
    });
    expect(current).to.deep.equal({
      status: 'active',
      hasRefreshToken: true,
      chainBeganAt: at(1 * D),
      tokenSince: at(3 * D),
      lastRefreshedAt: at(9 * D),
      lastUsedAt: at(4 * D),
    });
  });
});

describe('refresh-token policy: a row an unknown writer updated (a sidecar of an earlier release)', () => {
  const t0 = new Date('2026-01-01T00:00:00Z');
  const at = (ms: number) => new Date(t0.getTime() + ms);
  // A login at day 1 by this release; at day 50 a sidecar of an earlier release stores the next
  // login's refresh token and captured_at, and leaves the facts of day 1 as they were.
  const row = {
    status: 'active' as const,
    refresh_token: Buffer.from('x'),
    captured_at: at(50 * D),
    refresh_token_observed_at: at(50 * D),
    refresh_token_first_seen_at: at(1 * D),
    chain_began_at: at(1 * D),
    last_refreshed_at: null,
    last_login_at: at(1 * D),
    last_used_at: at(1 * D),
  };

  it('is told by a refresh token captured after every login and refresh the facts record', () => {
    expect(writtenByUnknownWriter(row)).to.equal(true);
    expect(writtenByUnknownWriter({ ...row, last_login_at: at(50 * D) })).to.equal(false);
    expect(writtenByUnknownWriter({ ...row, last_login_at: null, last_refreshed_at: at(50 * D) })).to.equal(false);
    expect(writtenByUnknownWriter({ ...row, refresh_token_observed_at: null })).to.equal(false);
  });

  it('counts from its last capture: the old chain does not expire the new login', () => {
    const facts = factsOf(row);
    expect(facts).to.deep.equal({
      status: 'active',
      hasRefreshToken: true,
      chainBeganAt: at(50 * D),
      tokenSince: at(50 * D),
      lastRefreshedAt: null,
      lastUsedAt: at(50 * D),
    });
    const policy = { maxAgeMs: 30 * D, idleMaxMs: 20 * D, rotateEveryMs: 15 * D };
    expect(decide(facts, policy, at(60 * D))).to.equal(undefined);
    expect(decide(facts, policy, at(65 * D))).to.deep.equal({ action: 'rotate' });
    expect(decide(facts, policy, at(70 * D))).to.deep.equal({ action: 'expire', reason: 'idle_max' });
  });
});

describe('refresh-token report lines', () => {
  it('one line per IdP with grants, a policy or a client; figures, the policy as written and the actions of 24 h', () => {
    const figures = [
      {
        idp: 'acme',
        grants: 3,
        active: 2,
        withRefreshToken: 2,
        rotatesRefreshTokens: true,
        refreshTokenExpiryKnown: 0,
        oldestRefreshTokenAgeSeconds: 12.7,
        oldestChainAgeSeconds: 99.5,
        verified: 3,
        rotationsSeen: 4,
        lastCaptureAt: new Date('2026-01-01T00:00:00Z'),
      },
    ];
    const actions = [
      { idp: 'acme', action: 'rotate', outcome: 'ok', count: 4 },
      { idp: 'acme', action: 'expire', outcome: 'ok', count: 1 },
    ];
    const lines = buildReport(figures, actions, new Map([['beta', { maxAgeMs: 90 * D }]]), ['gamma']);
    expect(lines.map((line) => line.idp)).to.deep.equal(['acme', 'beta', 'gamma']);
    expect(lines[0]).to.deep.include({
      grants: 3,
      rotates_refresh_tokens: true,
      oldest_refresh_token_age_seconds: 12,
      oldest_chain_age_seconds: 99,
      policy: null,
      last_capture_at: '2026-01-01T00:00:00.000Z',
    });
    expect(lines[0]!.policy_actions_24h).to.deep.equal({ rotate: { ok: 4 }, expire: { ok: 1 } });
    expect(lines[1]).to.deep.include({
      grants: 0,
      rotates_refresh_tokens: null,
      oldest_refresh_token_age_seconds: null,
      oldest_chain_age_seconds: null,
      policy: { max_age: '90d' },
    });
    const text = formatReportText(lines);
    expect(text).to.include('acme grants=3 active=2 with_refresh_token=2 rotates_refresh_tokens=yes');
    expect(text).to.include('beta grants=0').and.to.include('rotates_refresh_tokens=unknown').and.to.include('policy=max_age:90d');
  });
});
