// Real IdP response shapes through the real Envoy, both modes: JSON, form encoding, gzip, errors
// inside HTTP 200, nested errors, and users named by the profile call. Every response reaches
// the caller byte for byte; the vault records what each one is.
import { gzipSync } from 'node:zlib';
import { expect } from 'chai';
import type { ProcessingMode } from '../../src/envoyconfig/render.js';
import { profileRoutePath, tokenRoutePath } from '../../src/contract.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { startEnvoyFront, type RunningEnvoy } from '../support/envoy.js';
import { endToEndHeaders } from '../support/faults.js';
import { canned, sendRaw, startFixtureIdp, type CannedResponse, type FixtureIdp, type RawReceived } from '../support/fixture-idp.js';
import { loadIdpFixtures, type FixtureCase } from '../support/fixtures.js';
import { freePort, waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { runCli, startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';

function expectUnchanged(sent: CannedResponse, received: RawReceived): void {
  expect(received.status).to.equal(sent.status);
  expect(received.body.equals(sent.body), 'body bytes').to.equal(true);
  expect(endToEndHeaders(received.headers)).to.deep.equal(endToEndHeaders(sent.headers));
}

const fixtures = new Map(loadIdpFixtures().map((fixture) => [fixture.idp, fixture]));
function fixtureCase(idp: string, name: string): FixtureCase {
  const found = fixtures.get(idp)?.cases.find((c) => c.name === name);
  if (!found) throw new Error(`no fixture ${idp}/${name}`);
  return found;
}
const asCanned = (c: FixtureCase, body: Buffer | string = c.body, extra: Record<string, string> = {}) => canned(c.status, { ...c.headers, ...extra }, body);

for (const mode of ['observability', 'buffered'] as ProcessingMode[]) {
  describe(`real IdP response shapes through Envoy (${mode} mode)`, function () {
    this.timeout(60_000);
    let upstream: FixtureIdp;
    let db: TestDatabase;
    let sidecar: SidecarProcess;
    let envoy: RunningEnvoy;
    let envoyBase: string;
    let env: Record<string, string>;

    const events = async (idp: string) =>
      (await db.pool.query('SELECT outcome, error_code, subject FROM capture_events WHERE idp = $1 ORDER BY id', [idp])).rows;
    // On a time-out, the sidecar's warnings say why the captures did not arrive.
    const eventsOnce = (idp: string, count: number) =>
      waitFor(`${count} capture events for ${idp}`, async () => ((await events(idp)).length >= count ? events(idp) : undefined)).catch((error: Error) => {
        const warnings = sidecar
          .logs()
          .split('\n')
          .filter((line) => /"level":(40|50)/.test(line));
        throw new Error(`${error.message}\n${warnings.join('\n')}`);
      });

    before(async () => {
      upstream = await startFixtureIdp();
      db = await createTestDatabase(`quirks_${mode}`);
      const sidecarPort = await freePort();
      env = { DATABASE_URL: db.url, TOKEN_TAP_KEYS: generateKeySpec('k1') };
      sidecar = await startSidecarProcess({ port: sidecarPort, env });
      const names = ['google', 'entra', 'github', 'facebook', 'okta'];
      ({ envoy, origin: envoyBase } = await startEnvoyFront({
        idps: names.map((name) => ({ name, tokenUrl: new URL(upstream.url(`/${name}/token`)) })),
        profiles: [{ name: 'github', profileUrl: new URL(upstream.url('/github/user')), subjectField: 'id' }],
        sidecarPort,
        mode,
      }));
    });
    after(async () => {
      await envoy?.stop();
      await sidecar?.stop();
      await upstream?.close();
      await db?.drop();
    });

    async function tokenCall(idp: string, response: CannedResponse): Promise<RawReceived> {
      upstream.serve(`/${idp}/token`, response);
      const received = await sendRaw(`${envoyBase}${tokenRoutePath(idp)}`, {
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: 'Basic b2t0YTpjbGllbnQtc2VjcmV0' },
        body: 'grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fexample.okta.com%2Foauth2%2Fv1%2Fauthorize%2Fcallback',
      });
      expectUnchanged(response, received);
      return received;
    }

    it('JSON (Google): stores the grant under the id_token sub', async () => {
      const c = fixtureCase('google', 'success-authorization-code-oidc');
      await tokenCall('google', asCanned(c));
      expect(await eventsOnce('google', 1)).to.deep.equal([{ outcome: 'stored', error_code: null, subject: c.expect.subject }]);
      const shown = await runCli(['grants', 'show', '--idp', 'google', '--subject', c.expect.subject!], env);
      expect(JSON.parse(shown.stdout)).to.include({ access_token: c.expect.accessToken, refresh_token: c.expect.refreshToken, id_token: c.expect.idToken });
    });

    it('gzip (Entra ID v2, content-encoding gzip): relays the compressed bytes and stores the decoded grant', async () => {
      const c = fixtureCase('entra-v2', 'success-authorization-code');
      await tokenCall('entra', asCanned(c, gzipSync(c.body), { 'Content-Encoding': 'gzip' }));
      expect(await eventsOnce('entra', 1)).to.deep.equal([{ outcome: 'stored', error_code: null, subject: c.expect.subject }]);
    });

    it('chunked transfer encoding (Okta, three chunks): reassembled for the vault, relayed as the same body', async () => {
      const c = fixtureCase('okta', 'success-authorization-code');
      const body = Buffer.from(c.body);
      const thirds = [body.subarray(0, 100), body.subarray(100, 700), body.subarray(700)];
      const wire = Buffer.concat([
        ...thirds.flatMap((part) => [Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n')]),
        Buffer.from('0\r\n\r\n'),
      ]);
      const response: CannedResponse = {
        status: 200,
        headers: [['Date', new Date().toUTCString()], ...Object.entries(c.headers), ['Transfer-Encoding', 'chunked']],
        body: wire,
      };
      upstream.serve('/okta/token', response);
      const received = await sendRaw(`${envoyBase}${tokenRoutePath('okta')}`, { body: 'grant_type=authorization_code&code=x' });
      expect(received.status).to.equal(200);
      expect(received.body.equals(body), 'de-chunked body bytes').to.equal(true);
      expect(endToEndHeaders(received.headers)).to.deep.equal(endToEndHeaders(response.headers));
      expect(await eventsOnce('okta', 1)).to.deep.equal([{ outcome: 'stored', error_code: null, subject: c.expect.subject }]);
    });

    it('error inside HTTP 200 (GitHub, form encoded) and a nested error (Facebook): idp_error, no grant', async () => {
      await tokenCall('github', asCanned(fixtureCase('github-oauth', 'error-in-http-200-form-encoded-bad-verification-code')));
      await tokenCall('facebook', asCanned(fixtureCase('facebook', 'error-code-expired')));
      expect(await eventsOnce('github', 1)).to.deep.equal([{ outcome: 'idp_error', error_code: 'bad_verification_code', subject: null }]);
      expect(await eventsOnce('facebook', 1)).to.deep.equal([{ outcome: 'idp_error', error_code: 'OAuthException', subject: null }]);
      const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM grants WHERE idp IN ('github', 'facebook')");
      expect(rows[0].n).to.equal(0);
    });

    it('form encoded without id_token (GitHub): held as no_subject, then linked to the user by the profile call', async () => {
      const c = fixtureCase('github-oauth', 'success-default-form-encoded');
      await tokenCall('github', asCanned(c));
      await eventsOnce('github', 2);
      const pending = JSON.parse((await runCli(['grants', 'show', '--idp', 'github', '--pending'], env)).stdout) as Array<Record<string, unknown>>;
      expect(pending.map((grant) => grant.access_token)).to.deep.equal([c.expect.accessToken]);

      // Okta's next call: the profile, with the new access token.
      const profile = canned(
        200,
        { 'Content-Type': 'application/json; charset=utf-8' },
        JSON.stringify({ login: 'octocat', id: 583231, email: 'octocat@github.example' }),
      );
      upstream.serve('/github/user', profile, c.expect.accessToken!);
      const received = await sendRaw(`${envoyBase}${profileRoutePath('github')}`, {
        method: 'GET',
        headers: { authorization: `Bearer ${c.expect.accessToken}`, accept: 'application/json' },
      });
      expectUnchanged(profile, received);

      const shown = await waitFor('the linked grant', async () => {
        const result = await runCli(['grants', 'show', '--idp', 'github', '--subject', '583231'], env);
        return result.code === 0 ? (JSON.parse(result.stdout) as Record<string, unknown>) : undefined;
      });
      expect(shown).to.include({ subject: '583231', access_token: c.expect.accessToken, email: 'octocat@github.example' });
      expect((await events('github')).map((event) => event.outcome)).to.deep.equal(['idp_error', 'linked', 'linked']);
      const after = JSON.parse((await runCli(['grants', 'show', '--idp', 'github', '--pending'], env)).stdout) as unknown[];
      expect(after).to.deep.equal([]);
    });

    it("never sends Okta's client credentials to the sidecar or into its logs", () => {
      expect(sidecar.logs()).to.not.contain('b2t0YTpjbGllbnQtc2VjcmV0');
      expect(sidecar.logs()).to.not.contain('code=abc');
    });
  });
}
