// A key rollout in progress: two sidecars on one Postgres, as old and new pods side by side, with
// rings `k1` and `k2,k1` (k2 active). One user signs in again and again, through either pod's
// Envoy; the IdP sends a refresh token only when offline_access is asked for (as Google does).
// The stored refresh token must always be the latest one the IdP issued, readable by the new
// ring, and the two pods must agree on token fingerprints.
import { expect } from 'chai';
import { tokenRoutePath } from '../../src/contract.js';
import { fingerprint, generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { startEnvoyFront, type EnvoyFront } from '../support/envoy.js';
import { loginAsOkta } from '../support/okta-client.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { freePort, waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';

const IDP = 'rollout';

describe('key rollout: old (k1) and new (k2,k1) sidecars side by side on one Postgres, through real Envoy', function () {
  this.timeout(90_000);
  let idp: TestIdp;
  let db: TestDatabase;
  const pods: Array<{ name: string; sidecar: SidecarProcess; front: EnvoyFront }> = [];
  const k1 = generateKeySpec('k1');
  const k2 = generateKeySpec('k2');
  const fingerprintKey = Buffer.from(generateKeySpec('fp').slice(3), 'base64').toString('base64');
  const newRing = parseKeyRing(`${k2},${k1}`, fingerprintKey);
  const oldRing = parseKeyRing(k1, fingerprintKey);

  before(async () => {
    idp = await startTestIdp({ refreshTokenOnlyWithOfflineAccess: true });
    db = await createTestDatabase('key_rollout');
    for (const [name, keys] of [
      ['old', k1],
      ['new', `${k2},${k1}`],
    ] as const) {
      const port = await freePort();
      const sidecar = await startSidecarProcess({ port, env: { DATABASE_URL: db.url, TOKEN_TAP_KEYS: keys, TOKEN_TAP_FINGERPRINT_KEY: fingerprintKey } });
      const front = await startEnvoyFront({ idps: [{ name: IDP, tokenUrl: new URL(idp.tokenUrl) }], sidecarPort: port, mode: 'observability' });
      pods.push({ name, sidecar, front });
    }
  });
  after(async () => {
    for (const pod of pods) {
      await pod.front.envoy.stop();
      await pod.sidecar.stop();
    }
    await idp?.close();
    await db?.drop();
  });

  it('keeps the latest refresh token the IdP issued whichever pod stores the next login, and both pods agree on fingerprints', async () => {
    // Which pod's Envoy Okta reaches, and whether the login asks for offline_access (a refresh token).
    const plan: Array<['old' | 'new', boolean]> = [
      ['new', true],
      ['old', false],
      ['new', false],
      ['old', true],
      ['new', false],
      ['old', false],
      ['new', true],
      ['old', false],
    ];
    let latestRefreshToken: string | undefined;
    const seen: string[] = [];
    for (const [index, [podName, offline]] of plan.entries()) {
      const pod = pods.find((candidate) => candidate.name === podName)!;
      const login = await loginAsOkta(
        idp,
        `${pod.front.origin}${tokenRoutePath(IDP)}`,
        offline ? { scope: 'openid email profile offline_access', prompt: 'consent' } : {},
      );
      expect(Boolean(login.tokens.refresh_token), `login ${index + 1} carries a refresh token`).to.equal(offline);
      latestRefreshToken = login.tokens.refresh_token ?? latestRefreshToken;
      const accessToken = login.tokens.access_token;
      await waitFor(
        `login ${index + 1} (via ${podName}) in Postgres`,
        async () => {
          const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM capture_events WHERE idp = $1', [IDP]);
          return rows[0].n === index + 1 ? true : undefined;
        },
        15_000,
      );
      const grant = (await new GrantStore(db.pool, newRing, sealQuarantined).findGrant(IDP, String(login.claims.sub)))!;
      expect(grant.accessToken, `access token after login ${index + 1}`).to.equal(accessToken);
      expect(grant.refreshToken, `refresh token after login ${index + 1} (via ${podName}, offline_access ${offline})`).to.equal(latestRefreshToken);
      const { rows } = await db.pool.query('SELECT access_token_fp FROM capture_events WHERE idp = $1 ORDER BY id DESC LIMIT 1', [IDP]);
      expect(rows[0].access_token_fp, `fingerprint written by the ${podName} pod`)
        .to.equal(fingerprint(oldRing, accessToken))
        .and.equal(fingerprint(newRing, accessToken));
      seen.push(`${podName}${offline ? '+rt' : ''}`);
    }
    const { rows } = await db.pool.query('SELECT key_id, refresh_token_key_id, id_token_key_id FROM grants WHERE idp = $1', [IDP]);
    console.log(
      `      logins ${seen.join(', ')}: the stored refresh token was the latest issued after each; row now: ${JSON.stringify(rows[0])}; fingerprints agreed ${plan.length}/${plan.length}`,
    );
  });
});
