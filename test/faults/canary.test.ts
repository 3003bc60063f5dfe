// Canary secrets: recognisable tokens, authorization code and client secret go through every path
// (a stored login, an IdP error, a body that does not parse, a token response without a user and
// its profile call, a login while Postgres is down, a forged id_token that verification refuses),
// with the sidecar logging at trace level.
// Then the sidecar's logs (stdout and stderr), /metrics, the spool files and a pg_dump of the
// database are searched for each secret, as text, hex, base64 and base64url: no hit is allowed.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import pg from 'pg';
import { profileRoutePath, tokenRoutePath } from '../../src/contract.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { startEnvoyFront, type RunningEnvoy } from '../support/envoy.js';
import { scrapeMetrics, sidecarMetric, waitForSidecarHealth } from '../support/faults.js';
import { canned, sendRaw, startFixtureIdp, type FixtureIdp } from '../support/fixture-idp.js';
import { freePort, waitFor } from '../support/ports.js';
import { startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../support/throwaway-postgres.js';

const tag = randomBytes(6).toString('hex');
const canary = (what: string) => `CANARY${what}${tag}${randomBytes(9).toString('base64url')}`;

const SECRETS = {
  accessToken: canary('at'),
  refreshToken: canary('rt'),
  idTokenSignature: canary('sig'),
  clientSecret: canary('cs'),
  authorizationCode: canary('code'),
  brokenAccessToken: canary('badat'),
  brokenRefreshToken: canary('badrt'),
  downAccessToken: canary('downat'),
  downRefreshToken: canary('downrt'),
  githubAccessToken: canary('gh'),
  forgedAccessToken: canary('forgedat'),
  forgedRefreshToken: canary('forgedrt'),
};
const CLIENT_ID = 'okta-canary-client';
const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
const ID_TOKEN = `${part({ alg: 'RS256', kid: 'k' })}.${part({ iss: 'https://idp.canary.test', sub: 'canary-user', aud: CLIENT_ID, exp: 4102444800, email: 'canary@example.test' })}.${SECRETS.idTokenSignature}`;
const DOWN_ID_TOKEN = `${part({ alg: 'RS256', kid: 'k' })}.${part({ iss: 'https://idp.canary.test', sub: 'canary-down-user', aud: CLIENT_ID, exp: 4102444800 })}.${SECRETS.idTokenSignature}x`;

// Signed by nobody the IdP knows: the sidecar verifies it against the pinned issuer's JWKS and refuses it.
const FORGED_ID_TOKEN = `${part({ alg: 'RS256', kid: 'k' })}.${part({ iss: 'https://idp.canary.test', sub: 'canary-forged-user', aud: CLIENT_ID, exp: 4102444800 })}.${SECRETS.idTokenSignature}f`;
const IDP_KEY = { ...generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' }), kid: 'k', use: 'sig' };

/** Every form a secret could take in a text dump. */
function forms(secret: string): string[] {
  const bytes = Buffer.from(secret, 'utf8');
  return [secret, bytes.toString('hex'), bytes.toString('base64').replace(/=+$/, ''), bytes.toString('base64url')];
}

const JSON_HEADERS = { 'Content-Type': 'application/json;charset=UTF-8', 'Cache-Control': 'no-store', Pragma: 'no-cache' };

describe('canary secrets on every path leave no plaintext trace', function () {
  this.timeout(90_000);
  let cluster: ThrowawayPostgres;
  let fixture: FixtureIdp;
  let sidecar: SidecarProcess;
  let envoy: RunningEnvoy;
  let listenPort: number;
  let spoolDir: string;
  const keys = generateKeySpec('k1');

  before(async () => {
    cluster = await startThrowawayPostgres();
    cluster.createDatabase('tap');
    fixture = await startFixtureIdp();
    fixture.serve(
      '/success',
      canned(
        200,
        JSON_HEADERS,
        JSON.stringify({
          access_token: SECRETS.accessToken,
          token_type: 'Bearer',
          expires_in: 3600,
          refresh_token: SECRETS.refreshToken,
          id_token: ID_TOKEN,
          scope: 'openid email',
        }),
      ),
    );
    fixture.serve('/error', canned(400, JSON_HEADERS, JSON.stringify({ error: 'invalid_grant', error_description: 'The authorization code has expired.' })));
    fixture.serve(
      '/broken',
      canned(200, JSON_HEADERS, `{"access_token":"${SECRETS.brokenAccessToken}","refresh_token":"${SECRETS.brokenRefreshToken}","token_type":`),
    );
    fixture.serve(
      '/down',
      canned(
        200,
        JSON_HEADERS,
        JSON.stringify({ access_token: SECRETS.downAccessToken, token_type: 'Bearer', refresh_token: SECRETS.downRefreshToken, id_token: DOWN_ID_TOKEN }),
      ),
    );
    fixture.serve(
      '/github/token',
      canned(200, JSON_HEADERS, JSON.stringify({ access_token: SECRETS.githubAccessToken, token_type: 'bearer', scope: 'read:user' })),
    );
    fixture.serve(
      '/forged',
      canned(
        200,
        JSON_HEADERS,
        JSON.stringify({
          access_token: SECRETS.forgedAccessToken,
          token_type: 'Bearer',
          expires_in: 3600,
          refresh_token: SECRETS.forgedRefreshToken,
          id_token: FORGED_ID_TOKEN,
        }),
      ),
    );
    fixture.serve('/keys', canned(200, JSON_HEADERS, JSON.stringify({ keys: [IDP_KEY] })));
    fixture.serve('/github/user', canned(200, JSON_HEADERS, JSON.stringify({ id: 4242, login: 'canary-octocat', email: 'octocat@example.test' })));

    spoolDir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-'));
    const idpConfig = path.join(spoolDir, '..', `${path.basename(spoolDir)}-idps.yaml`);
    writeFileSync(idpConfig, `idps:\n  forged: { issuer: "https://idp.canary.test", jwks_uri: "${fixture.url('/keys')}", client_id: "${CLIENT_ID}" }\n`);
    const sidecarPort = await freePort();
    sidecar = await startSidecarProcess({
      port: sidecarPort,
      env: { DATABASE_URL: cluster.url('tap'), TOKEN_TAP_KEYS: keys, TOKEN_TAP_SPOOL_DIR: spoolDir, LOG_LEVEL: 'trace', TOKEN_TAP_IDP_CONFIG: idpConfig },
    });
    ({ envoy, listenPort } = await startEnvoyFront({
      idps: ['success', 'error', 'broken', 'down', 'forged']
        .map((name) => ({ name, tokenUrl: new URL(fixture.url(`/${name}`)) }))
        .concat([{ name: 'github', tokenUrl: new URL(fixture.url('/github/token')) }]),
      profiles: [{ name: 'github', profileUrl: new URL(fixture.url('/github/user')), subjectField: 'id' }],
      sidecarPort,
      mode: 'buffered',
    }));
    await waitForSidecarHealth(envoy, true);
  });
  after(async () => {
    await envoy?.stop();
    await sidecar?.stop();
    await fixture?.close();
    cluster?.destroy();
    rmSync(spoolDir, { recursive: true, force: true });
    rmSync(`${spoolDir}-idps.yaml`, { force: true });
  });

  const tokenCall = (idp: string) =>
    sendRaw(`http://127.0.0.1:${listenPort}${tokenRoutePath(idp)}`, {
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${CLIENT_ID}:${SECRETS.clientSecret}`).toString('base64')}`,
      },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: SECRETS.authorizationCode,
        redirect_uri: 'https://okta.example/callback',
        client_id: CLIENT_ID,
        client_secret: SECRETS.clientSecret,
      }).toString(),
    });

  async function outcomes(pool: pg.Pool): Promise<string[]> {
    const { rows } = await pool.query<{ idp: string; outcome: string }>('SELECT idp, outcome FROM capture_events');
    return rows.map((row) => `${row.idp}:${row.outcome}`);
  }

  const arrived = (pool: pg.Pool, wanted: string[]) => async () => {
    const seen = await outcomes(pool).catch((): string[] => []);
    return wanted.every((outcome) => seen.includes(outcome)) ? true : undefined;
  };

  it('finds 0 plaintext hits in logs, stderr, /metrics, spool files and pg_dump', async () => {
    const statuses: number[] = [];
    const received: string[] = [];
    for (const idp of ['success', 'error', 'broken', 'github', 'forged']) {
      const response = await tokenCall(idp);
      statuses.push(response.status);
      received.push(response.body.toString('latin1'));
    }
    const profile = await sendRaw(`http://127.0.0.1:${listenPort}${profileRoutePath('github')}`, {
      method: 'GET',
      headers: { authorization: `Bearer ${SECRETS.githubAccessToken}` },
    });
    statuses.push(profile.status);
    const before = new pg.Pool({ connectionString: cluster.url('tap'), max: 1 });
    try {
      await waitFor(
        'the first captures in Postgres',
        arrived(before, ['success:stored', 'error:idp_error', 'broken:unparseable', 'github:linked', 'forged:unverified']),
        15_000,
      );
    } finally {
      await before.end();
    }

    // Postgres down: the capture waits, sealed, in the spool; the spool files are read then.
    cluster.stop('fast');
    const spooledBefore = await sidecarMetric(sidecar.opsPort, 'token_tap_spool_captures_total');
    statuses.push((await tokenCall('down')).status);
    await waitFor('the capture in the spool', async () =>
      (await sidecarMetric(sidecar.opsPort, 'token_tap_spool_captures_total')) > spooledBefore ? true : undefined,
    );
    const spoolFiles = readdirSync(spoolDir).filter((name) => name.endsWith('.seg'));
    const spool = Buffer.concat(spoolFiles.map((name) => readFileSync(path.join(spoolDir, name))));
    const metricsWhileDown = (await scrapeMetrics(sidecar.opsPort)).text;
    cluster.start();

    const pool = new pg.Pool({ connectionString: cluster.url('tap'), max: 1 });
    try {
      await waitFor('the spooled capture in Postgres', arrived(pool, ['down:stored']), 20_000);
      const store = new GrantStore(pool, parseKeyRing(keys), sealQuarantined);
      const stored = await store.findGrant('success', 'canary-user');
      const linked = await store.findGrant('github', '4242');
      const fromSpool = await store.findGrant('down', 'canary-down-user');
      const seen = await outcomes(pool);

      const places: Record<string, string> = {
        'sidecar log and stderr': sidecar.logs(),
        '/metrics while Postgres was down': metricsWhileDown,
        '/metrics': (await scrapeMetrics(sidecar.opsPort)).text,
        'spool files': spool.toString('latin1'),
        pg_dump: cluster.dump('tap'),
        'Envoy output': envoy.output(),
      };
      const secrets = [
        ...Object.values(SECRETS),
        ID_TOKEN,
        DOWN_ID_TOKEN,
        FORGED_ID_TOKEN,
        Buffer.from(`${CLIENT_ID}:${SECRETS.clientSecret}`).toString('base64'),
      ];
      const hits: string[] = [];
      for (const [place, text] of Object.entries(places)) {
        for (const secret of secrets)
          for (const form of forms(secret))
            if (text.includes(form)) hits.push(`${place}: ${secret.slice(0, 12)}… as ${form === secret ? 'text' : 'an encoding'}`);
      }
      // The scanner must see a secret where one is: in what Okta received.
      const control = secrets.filter((secret) => forms(secret).some((form) => received.join('\n').includes(form))).length;
      const sizes = Object.entries(places)
        .map(([place, text]) => `${place} ${text.length}`)
        .join(', ');
      console.log(
        `      canaries: ${secrets.length} secrets x 4 forms; scanned ${sizes} (bytes, ${spoolFiles.length} spool files); leaks found ${hits.length}; control: ${control} of the secrets found in what Okta received`,
      );

      expect(statuses, 'every call went through').to.deep.equal([200, 400, 200, 200, 200, 200, 200]);
      expect(await store.findGrant('forged', 'canary-forged-user'), 'the forged login changed no grant').to.equal(undefined);
      expect(stored?.accessToken, 'the stored path carried the canary').to.equal(SECRETS.accessToken);
      expect(linked?.accessToken, 'the profile path linked the canary').to.equal(SECRETS.githubAccessToken);
      expect(fromSpool?.refreshToken, 'the Postgres-down path went through the spool').to.equal(SECRETS.downRefreshToken);
      expect(seen).to.include.members(['success:stored', 'error:idp_error', 'broken:unparseable', 'github:linked', 'down:stored', 'forged:unverified']);
      expect(spool.length, 'the spool held the capture while Postgres was down').to.be.greaterThan(64);
      expect(places['sidecar log and stderr']).to.contain('"level":10');
      expect(control).to.be.greaterThan(0);
      expect(hits).to.deep.equal([]);
    } finally {
      await pool.end();
    }
  });
});
