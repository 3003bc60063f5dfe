// Refresh-token hygiene end to end: two real oidc-provider IdPs, one rotating refresh tokens
// (reuse detection on: a token presented twice revokes the whole grant) and one handing the same
// refresh token back; logins captured through the real Envoy; two `token-tap serve` processes on one
// Postgres running the policy every second. Each IdP's token endpoint sits behind a loopback proxy
// that notes every refresh token presented, so the test sees what the IdP saw.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { tokenRoutePath } from '../../src/contract.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { migrate } from '../../src/store/migrate.js';
import { startEnvoyFront, type EnvoyFront } from '../support/envoy.js';
import { loginAsOkta } from '../support/okta-client.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { freePort, waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { runCli, startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';
import { startSlowTokenProxy, type SlowTokenProxy } from '../support/slow-token-proxy.js';
import { tempDir } from '../support/token-vault.js';

const ROTATING = 'rot';
const STILL = 'still';
const USERS = ['alice', 'bob'];
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Upstream {
  idp: TestIdp;
  proxy: SlowTokenProxy;
  /** Revocations the IdP carried out at its revocation endpoint (oidc-provider's grant.revoked from that route). */
  revocations: number;
  /** Grants the IdP revoked for a reused refresh token. */
  reuseRevocations: number;
}

interface AccessRow {
  at: Date;
  operation: string;
  outcome: string;
  idp: string;
  subject: string;
  detail: string;
}

describe('refresh-token policy: rotate, expire and report, two sidecars on one database', function () {
  this.timeout(120_000);
  const keys = generateKeySpec('k1');
  const upstream: Record<string, Upstream> = {};
  let db: TestDatabase;
  let front: EnvoyFront;
  let sidecarPort: number;
  let sidecars: SidecarProcess[] = [];
  let configFile: string;

  async function startUpstream(rotate: boolean): Promise<Upstream> {
    const idp = await startTestIdp({
      rotateRefreshToken: rotate,
      accounts: Object.fromEntries([...USERS, 'carol', 'dave'].map((user) => [user, { email: `${user}@example.test` }])),
    });
    const entry: Upstream = { idp, proxy: await startSlowTokenProxy(idp.tokenUrl), revocations: 0, reuseRevocations: 0 };
    idp.provider.on('grant.revoked', (ctx: { oidc?: { route?: string } }) => {
      if (ctx.oidc?.route === 'revocation') entry.revocations += 1;
      else entry.reuseRevocations += 1;
    });
    return entry;
  }

  /** The IdP file: both IdPs, their refresh through the counting proxy, and a policy each. */
  function writeConfig(policies: Record<string, Record<string, string>>): void {
    const lines = ['idps:'];
    for (const [name, { idp, proxy }] of Object.entries(upstream)) {
      lines.push(
        `  ${name}:`,
        `    token_url: ${JSON.stringify(proxy.url)}`,
        `    client_id: ${idp.clientId}`,
        `    client_secret_env: SECRET_${name.toUpperCase()}`,
      );
      lines.push(`    revocation_url: ${JSON.stringify(idp.revocationUrl)}`);
      const policy = policies[name];
      if (policy) lines.push('    refresh_token_policy:', ...Object.entries(policy).map(([key, value]) => `      ${key}: ${value}`));
    }
    writeFileSync(configFile, `${lines.join('\n')}\n`);
  }

  /** Sidecar A (behind Envoy) and sidecar B, both running the policy every second. */
  async function startSidecars(): Promise<void> {
    const env = {
      DATABASE_URL: db.url,
      TOKEN_TAP_KEYS: keys,
      TOKEN_TAP_FINGERPRINT_KEY: Buffer.alloc(32, 9).toString('base64'),
      TOKEN_TAP_IDP_CONFIG: configFile,
      SECRET_ROT: upstream[ROTATING]!.idp.clientSecret,
      SECRET_STILL: upstream[STILL]!.idp.clientSecret,
      TOKEN_TAP_API_LISTEN: 'off',
      TOKEN_TAP_POLICY_INTERVAL: '1s',
      LOG_LEVEL: 'info',
    };
    sidecars = [await startSidecarProcess({ port: sidecarPort, env }), await startSidecarProcess({ port: await freePort(), env })];
    await waitFor(
      'Envoy to see sidecar A healthy',
      async () => ((await front.envoy.stats()).get('cluster.token_tap_sidecar.membership_healthy') === 1 ? true : undefined),
      15_000,
      50,
    );
  }

  async function stopSidecars(): Promise<void> {
    for (const sidecar of sidecars.splice(0)) await sidecar.stop();
  }

  /** Logs `user` in at `name` as Okta does, through Envoy, and waits until the grant is stored. */
  async function loginThroughEnvoy(name: string, user: string): Promise<{ refreshToken: string; accessToken: string }> {
    const before = await db.pool.query<{ version: number }>('SELECT version FROM grants WHERE idp = $1 AND subject = $2', [name, user]);
    const login = await loginAsOkta(upstream[name]!.idp, `${front.origin}${tokenRoutePath(name)}`, { loginHint: user });
    expect(login.received.status).to.equal(200);
    await waitFor(
      `the login of ${user} at ${name} to be stored`,
      async () => {
        const { rows } = await db.pool.query<{ version: number; status: string }>('SELECT version, status FROM grants WHERE idp = $1 AND subject = $2', [
          name,
          user,
        ]);
        return rows[0] && rows[0].status === 'active' && rows[0].version !== before.rows[0]?.version ? true : undefined;
      },
      15_000,
      50,
    );
    return { refreshToken: login.tokens.refresh_token!, accessToken: login.tokens.access_token };
  }

  async function policyEvents(): Promise<AccessRow[]> {
    const { rows } = await db.pool.query<AccessRow>(
      "SELECT at, operation, outcome, idp, subject, detail FROM access_events WHERE caller = 'policy' ORDER BY id",
    );
    return rows;
  }

  /** A refresh at the IdP itself (not through the proxy), as Okta would spend its own copy. */
  async function refreshAtIdp(name: string, refreshToken: string): Promise<{ status: number; error?: string }> {
    const { idp } = upstream[name]!;
    const response = await fetch(idp.tokenUrl, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${idp.clientId}:${idp.clientSecret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }),
    });
    const body = (await response.json()) as { error?: string };
    return { status: response.status, ...(body.error ? { error: body.error } : {}) };
  }

  async function report(): Promise<Array<Record<string, any>>> {
    const result = await runCli(['report', '--json'], { DATABASE_URL: db.url, TOKEN_TAP_IDP_CONFIG: configFile, SECRET_ROT: 'x', SECRET_STILL: 'x' });
    expect(result.code, result.stderr).to.equal(0);
    return JSON.parse(result.stdout) as Array<Record<string, any>>;
  }

  async function scrape(sidecar: SidecarProcess): Promise<string> {
    return (await fetch(`http://127.0.0.1:${sidecar.opsPort}/metrics`)).text();
  }

  const sample = (text: string, name: string, labels: string) => {
    const line = text.split('\n').find((candidate) => candidate.startsWith(`${name}{${labels}}`));
    return line === undefined ? undefined : Number(line.split(' ').at(-1));
  };

  before(async () => {
    upstream[ROTATING] = await startUpstream(true);
    upstream[STILL] = await startUpstream(false);
    db = await createTestDatabase('refresh_token_policy');
    await migrate(db.pool);
    configFile = path.join(tempDir('policy-idps'), 'idps.yaml');
    sidecarPort = await freePort();
    front = await startEnvoyFront({
      idps: [ROTATING, STILL].map((name) => ({ name, tokenUrl: new URL(upstream[name]!.idp.tokenUrl) })),
      sidecarPort,
      mode: 'observability',
    });
  });

  afterEach(stopSidecars);

  after(async () => {
    await front?.envoy.stop();
    for (const { idp, proxy } of Object.values(upstream)) {
      await proxy.close();
      await idp.close();
    }
    await db?.drop();
  });

  it('rotate_every rotates each grant once per period, the IdP never sees a refresh token twice, and the report and gauges say what happened', async () => {
    writeConfig({ [ROTATING]: { rotate_every: '3s' }, [STILL]: { rotate_every: '3s' } });
    await startSidecars();
    for (const name of [ROTATING, STILL]) for (const user of USERS) await loginThroughEnvoy(name, user);
    await pause(11_000);
    await stopSidecars();

    const events = await policyEvents();
    for (const name of [ROTATING, STILL]) {
      for (const user of USERS) {
        const rotations = events.filter((event) => event.idp === name && event.subject === user && event.operation === 'rotate' && event.outcome === 'ok');
        expect(rotations.length, `rotations of ${user} at ${name}`).to.be.within(2, 4);
        for (let index = 1; index < rotations.length; index += 1) {
          const gap = rotations[index]!.at.getTime() - rotations[index - 1]!.at.getTime();
          expect(gap, `gap between rotations of ${user} at ${name}`).to.be.at.least(2_500);
        }
      }
    }
    expect(
      events.filter((event) => !['ok', 'skipped', 'started'].includes(event.outcome)),
      'failed policy actions',
    ).to.deep.equal([]);
    // Each rotation's intent row was written before it.
    const rotateRows = (outcome: (value: string) => boolean) => events.filter((event) => event.operation === 'rotate' && outcome(event.outcome)).length;
    expect(rotateRows((outcome) => outcome === 'started')).to.be.at.least(rotateRows((outcome) => outcome !== 'started'));
    // Every refresh the IdP that rotates saw presented a refresh token it had not seen before.
    const presented = upstream[ROTATING]!.proxy.forwarded;
    expect(presented.length).to.equal(events.filter((event) => event.idp === ROTATING && event.outcome === 'ok').length);
    expect(new Set(presented).size, 'refresh tokens the rotating IdP saw twice').to.equal(presented.length);
    expect(upstream[ROTATING]!.reuseRevocations).to.equal(0);
    const { rows: grants } = await db.pool.query<{ idp: string; status: string; refresh_rotates: boolean; rotations_seen: number }>(
      'SELECT idp, status, refresh_rotates, rotations_seen FROM grants ORDER BY idp, subject',
    );
    expect(grants.every((grant) => grant.status === 'active')).to.equal(true);

    const lines = await report();
    const line = (name: string) => lines.find((candidate) => candidate.idp === name)!;
    const okCount = (name: string) => events.filter((event) => event.idp === name && event.operation === 'rotate' && event.outcome === 'ok').length;
    expect(line(ROTATING)).to.deep.include({
      grants: 2,
      active: 2,
      with_refresh_token: 2,
      rotates_refresh_tokens: true,
      rotations_seen: okCount(ROTATING),
      refresh_token_expiry_known: 0,
      policy: { rotate_every: '3s' },
    });
    expect(line(STILL)).to.deep.include({
      grants: 2,
      active: 2,
      with_refresh_token: 2,
      rotates_refresh_tokens: false,
      rotations_seen: 0,
      policy: { rotate_every: '3s' },
    });
    expect(line(ROTATING).policy_actions_24h.rotate.ok).to.equal(okCount(ROTATING));
    expect(line(STILL).policy_actions_24h.rotate.ok).to.equal(okCount(STILL));
    // The refresh token the rotating IdP handed out last is younger than a period; the other IdP's is the login's.
    expect(line(ROTATING).oldest_refresh_token_age_seconds).to.be.below(line(STILL).oldest_refresh_token_age_seconds);

    // The same figures as gauges, read from Postgres at the scrape.
    await startSidecars();
    // The gauges are read from Postgres at a scrape; one that comes before the sidecar's vault pool
    // answers has none yet (the next one does): wait, bounded, for a scrape that has them.
    const metrics = await waitFor(
      'the report gauges on /metrics',
      async () => {
        const text = await scrape(sidecars[1]!);
        return sample(text, 'token_tap_report_rotates_refresh_tokens', `idp="${ROTATING}"`) === undefined ? undefined : text;
      },
      15_000,
      250,
    );
    expect(sample(metrics, 'token_tap_report_rotates_refresh_tokens', `idp="${ROTATING}"`)).to.equal(1);
    expect(sample(metrics, 'token_tap_report_rotates_refresh_tokens', `idp="${STILL}"`)).to.equal(0);
    expect(sample(metrics, 'token_tap_report_refresh_tokens', `idp="${STILL}"`)).to.equal(2);
    expect(sample(metrics, 'token_tap_report_rotations_seen', `idp="${ROTATING}"`)).to.equal(okCount(ROTATING));
  });

  it('max_age and idle_max revoke at the IdP and erase in the vault; rotations neither reset the chain nor count as use; a login makes the grant active again', async () => {
    writeConfig({ [ROTATING]: { max_age: '5s' }, [STILL]: { idle_max: '5s', rotate_every: '1s' } });
    const logins: Record<string, { refreshToken: string; accessToken: string }> = {};
    const { rows: old } = await db.pool.query<{ idp: string; subject: string }>("SELECT idp, subject FROM grants WHERE status = 'active'");
    expect(old.length).to.equal(4);
    const before = { [ROTATING]: upstream[ROTATING]!.revocations, [STILL]: upstream[STILL]!.revocations };
    const eventsBefore = (await policyEvents()).length;
    await startSidecars();
    for (const name of [ROTATING, STILL]) logins[name] = await loginThroughEnvoy(name, 'carol');
    await waitFor(
      'every grant to be expired',
      async () => {
        const { rows } = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM grants WHERE status = 'active'");
        return rows[0]!.n === 0 ? true : undefined;
      },
      20_000,
      100,
    );

    const events = (await policyEvents()).slice(eventsBefore);
    const expiries = events.filter((event) => event.operation === 'expire' && event.outcome === 'ok');
    expect(expiries.map((event) => `${event.idp}/${event.subject}`).sort()).to.deep.equal([
      'rot/alice',
      'rot/bob',
      'rot/carol',
      'still/alice',
      'still/bob',
      'still/carol',
    ]);
    for (const event of expiries)
      expect(event.detail)
        .to.include(event.idp === ROTATING ? 'max_age' : 'idle_max')
        .and.to.include('revoked at the IdP');
    // The policy's own rotations of carol at the other IdP did not count as use: idle_max expired her all the same.
    expect(
      events.filter((event) => event.idp === STILL && event.subject === 'carol' && event.operation === 'rotate' && event.outcome === 'ok').length,
    ).to.be.at.least(2);
    // The IdPs' revocation endpoints were called (a revocation per grant) and the refresh tokens are dead there.
    expect(upstream[ROTATING]!.revocations - before[ROTATING]!).to.be.at.least(3);
    expect(upstream[STILL]!.revocations - before[STILL]!).to.be.at.least(3);
    for (const name of [ROTATING, STILL])
      expect(await refreshAtIdp(name, logins[name]!.refreshToken), `carol's refresh token at ${name}`).to.deep.equal({ status: 400, error: 'invalid_grant' });
    // Erased in the vault, revoked until the next login.
    const { rows: erased } = await db.pool.query('SELECT status, refresh_token, access_token, id_token FROM grants');
    expect(erased.every((row) => row.status === 'revoked' && row.refresh_token === null && row.access_token === null && row.id_token === null)).to.equal(true);
    const lines = await report();
    for (const name of [ROTATING, STILL]) {
      expect(lines.find((line) => line.idp === name)).to.deep.include({ grants: 3, active: 0, with_refresh_token: 0, oldest_refresh_token_age_seconds: null });
      expect(lines.find((line) => line.idp === name)!.policy_actions_24h.expire.ok).to.equal(3);
    }

    await loginThroughEnvoy(STILL, 'dave');
    await loginThroughEnvoy(STILL, 'carol');
    const { rows: again } = await db.pool.query("SELECT status FROM grants WHERE idp = 'still' AND subject = 'carol' AND refresh_token IS NOT NULL");
    expect(again.map((row) => row.status)).to.deep.equal(['active']);
  });

  it('a refresh token Okta spent first: the scheduled rotation meets invalid_grant at an IdP seen rotating, counts it and warns of reuse detection', async () => {
    writeConfig({ [ROTATING]: { rotate_every: '3s' } });
    await startSidecars();
    const { refreshToken } = await loginThroughEnvoy(ROTATING, 'dave');
    // Okta refreshes with its own copy before the vault's rotation: the IdP rotates, the vault's copy is spent.
    expect((await refreshAtIdp(ROTATING, refreshToken)).status).to.equal(200);
    await waitFor(
      'the rotation to meet invalid_grant',
      async () => {
        const { rows } = await db.pool.query("SELECT status FROM grants WHERE idp = 'rot' AND subject = 'dave'");
        return rows[0]?.status === 'revoked' ? true : undefined;
      },
      15_000,
      100,
    );
    // The warning is logged after the revocation commits, and a sidecar's output reaches the test later still.
    const warned = await waitFor(
      'a sidecar to warn of reuse detection',
      async () => sidecars.find((sidecar) => sidecar.logs().includes('reuse detection may have revoked the whole family')),
      5_000,
      100,
    );
    expect(warned, 'a sidecar warned of reuse detection').not.to.equal(undefined);
    const counted = await Promise.all(
      sidecars.map(async (sidecar) => sample(await scrape(sidecar), 'token_tap_refresh_family_revoked_total', `idp="${ROTATING}"`) ?? 0),
    );
    expect(counted.reduce((sum, value) => sum + value, 0)).to.equal(1);
    expect(upstream[ROTATING]!.reuseRevocations, 'the IdP revoked the family').to.equal(1);
    const events = (await policyEvents()).filter((event) => event.subject === 'dave' && event.operation === 'rotate');
    expect(events.at(-1)).to.deep.include({ outcome: 'failed_precondition' });
    for (const sidecar of sidecars) expect(sidecar.logs()).not.to.include(refreshToken);
    expect(readFileSync(configFile, 'utf8')).to.include('rotate_every: 3s');
  });
});
