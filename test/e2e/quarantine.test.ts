// A capture that cannot be written must not stop the writer, through the real Envoy, sidecar and
// Postgres. A GitHub-style login (no id_token) is held in pending_grants by a sidecar whose key k1
// is X; the sidecar comes back with k1 = Y (same id, other material: a botched key change), and the
// GitHub profile call names the held grant's user. Opening the held grant fails; that profile
// capture is quarantined, and logins of two other IdPs land in Postgres within 10 s, before and after
// another restart.
import { randomBytes, randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { profileRoutePath, tokenRoutePath } from '../../src/contract.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { canned, sendRaw, startFixtureIdp, type FixtureIdp } from '../support/fixture-idp.js';
import { loginAsOkta } from '../support/okta-client.js';
import { waitFor } from '../support/ports.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { IDP_NAME, startStack, type Stack } from '../support/stack.js';

describe('a held grant under other key material is quarantined, and the writer goes on (real Envoy, sidecar, Postgres)', function () {
  this.timeout(120_000);
  const keysX = generateKeySpec('k1');
  const keysY = generateKeySpec('k1');
  let upstream: FixtureIdp;
  /** A second IdP with normal logins, beside the stack's own: two others must keep landing. */
  let alpha: TestIdp;
  let stack: Stack;

  before(async () => {
    upstream = await startFixtureIdp();
    alpha = await startTestIdp();
    stack = await startStack('observability', {
      label: 'e2e_quarantine',
      sidecarEnv: { TOKEN_TAP_KEYS: keysX, TOKEN_TAP_FINGERPRINT_KEY: randomBytes(32).toString('base64') },
      moreIdps: [
        { name: 'github', tokenUrl: new URL(upstream.url('/github/token')) },
        { name: 'alpha', tokenUrl: new URL(alpha.tokenUrl) },
      ],
      profiles: [{ name: 'github', profileUrl: new URL(upstream.url('/github/user')), subjectField: 'id' }],
    });
  });
  after(async () => {
    await stack?.stop();
    await upstream?.close();
    await alpha?.close();
  });

  const count = async (sql: string): Promise<number> => (await stack.db.pool.query<{ n: number }>(sql)).rows[0]!.n;

  /** Signs in at the two other IdPs through Envoy and waits at most 10 s for both logins in Postgres. */
  async function loginLandsWithin10s(what: string): Promise<void> {
    const events = (idp: string) => count(`SELECT count(*)::int AS n FROM capture_events WHERE idp = '${idp}'`);
    const before: Record<string, number> = { [IDP_NAME]: await events(IDP_NAME), alpha: await events('alpha') };
    const logins = [
      { idp: IDP_NAME, login: await loginAsOkta(stack.idp, stack.tokenUrl) },
      { idp: 'alpha', login: await loginAsOkta(alpha, `${stack.origin}${tokenRoutePath('alpha')}`) },
    ];
    const started = Date.now();
    for (const { idp, login } of logins) {
      await waitFor(
        `${what}: ${idp}'s login in Postgres`,
        async () => ((await events(idp)) > before[idp]! ? true : undefined),
        Math.max(0, 10_000 - (Date.now() - started)),
      ).catch((error: Error) => {
        throw new Error(
          `${error.message}\n${stack
            .sidecar!.logs()
            .split('\n')
            .filter((line) => /"level":(40|50)/.test(line))
            .join('\n')}`,
        );
      });
      const { rows } = await stack.db.pool.query('SELECT subject FROM grants WHERE idp = $1 AND subject = $2', [idp, login.claims.sub]);
      expect(rows, `${what}: ${idp}'s grant`).to.have.length(1);
    }
    console.log(`      ${what}: both IdPs' logins in Postgres ${Date.now() - started} ms after the logins`);
  }

  it('quarantines the profile capture, counts it, and writes normal logins within 10 s, before and after another restart', async () => {
    const accessToken = `gho_${randomUUID().replaceAll('-', '')}`;
    upstream.serve(
      '/github/token',
      canned(200, { 'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8' }, `access_token=${accessToken}&scope=read%3Auser&token_type=bearer`),
    );
    const tokenCall = await sendRaw(`${stack.origin}${tokenRoutePath('github')}`, {
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=authorization_code&code=abc',
    });
    expect(tokenCall.status).to.equal(200);
    await waitFor('the held grant', async () => ((await count('SELECT count(*)::int AS n FROM pending_grants')) === 1 ? true : undefined), 10_000);
    await loginLandsWithin10s('a login with k1 = X');

    stack.sidecarEnv.TOKEN_TAP_KEYS = keysY;
    await stack.restartSidecarSeenByEnvoy();
    upstream.serve(
      '/github/user',
      canned(200, { 'Content-Type': 'application/json; charset=utf-8' }, JSON.stringify({ login: 'octocat', id: 583231 })),
      accessToken,
    );
    const profileCall = await sendRaw(`${stack.origin}${profileRoutePath('github')}`, {
      method: 'GET',
      headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' },
    });
    expect(profileCall.status).to.equal(200);
    await loginLandsWithin10s('a login after the profile call, with k1 = Y');

    const { rows } = await stack.db.pool.query<{ idp: string; reason: string; attempts: number }>('SELECT idp, reason, attempts FROM quarantined_captures');
    expect(rows).to.deep.equal([{ idp: 'github', reason: 'cannot open a held grant (DecryptError)', attempts: 1 }]);
    expect(await count('SELECT count(*)::int AS n FROM pending_grants'), 'the held grant is left as it was').to.equal(1);
    const metrics = await (await fetch(`http://127.0.0.1:${stack.sidecar!.opsPort}/metrics`)).text();
    expect(metrics).to.match(/^token_tap_captures_quarantined_total\{idp="github",reason="unreadable"\} 1$/m);
    expect(metrics).to.match(/^token_tap_postgres_up 1$/m);
    const logs = stack.sidecar!.logs();
    expect(logs).to.contain('"msg":"capture quarantined');
    expect(logs).to.not.contain(accessToken);

    await stack.restartSidecarSeenByEnvoy();
    await loginLandsWithin10s('a login after another restart');
    expect(await count('SELECT count(*)::int AS n FROM quarantined_captures')).to.equal(1);
    expect(stack.sidecar!.logs()).to.not.contain(accessToken);
  });
});
