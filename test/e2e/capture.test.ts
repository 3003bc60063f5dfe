// Okta's token call through the real Envoy to a real OpenID Provider, with the sidecar capturing.
import { expect } from 'chai';
import type { ProcessingMode } from '../../src/envoyconfig/render.js';
import { loginAsOkta, type ReceivedResponse } from '../support/okta-client.js';
import type { RawHttpResponse } from '../support/oidc-idp.js';
import { waitFor } from '../support/ports.js';
import { dumpAllRowsAsText, plaintextForms } from '../support/postgres.js';
import { runCli } from '../support/sidecar.js';
import { IDP_NAME, startStack, type Stack } from '../support/stack.js';

// Connection-level headers belong to each hop, not to the response (RFC 9110 7.6.1).
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection']);

function endToEndHeaders(headers: Array<[string, string]>): Array<[string, string]> {
  return headers
    .map(([name, value]): [string, string] => [name.toLowerCase(), value])
    .filter(([name]) => !HOP_BY_HOP.has(name))
    .sort();
}

function header(headers: Array<[string, string]>, name: string): string | undefined {
  return headers.find(([key]) => key.toLowerCase() === name)?.[1];
}

export function expectRelayedUnchanged(sent: RawHttpResponse, received: ReceivedResponse): void {
  expect(received.status, 'status').to.equal(sent.status);
  expect(received.body.equals(sent.body), 'body bytes').to.equal(true);
  expect(header(received.headers, 'content-length'), 'content-length').to.equal(header(sent.headers, 'content-length')).and.to.equal(String(sent.body.length));
  expect(endToEndHeaders(received.headers), 'end-to-end headers').to.deep.equal(endToEndHeaders(sent.headers));
}

async function grantShown(stack: Stack, subject: string): Promise<Record<string, unknown>> {
  return waitFor(`grants show to find ${subject}`, async () => {
    const result = await runCli(['grants', 'show', '--idp', IDP_NAME, '--subject', subject], stack.sidecarEnv);
    return result.code === 0 ? (JSON.parse(result.stdout) as Record<string, unknown>) : undefined;
  });
}

for (const mode of ['observability', 'buffered'] as ProcessingMode[]) {
  describe(`end to end through Envoy (${mode} mode)`, function () {
    this.timeout(60_000);
    let stack: Stack;

    before(async () => {
      stack = await startStack(mode, { label: `e2e_${mode}` });
    });
    after(async () => {
      await stack?.stop();
    });

    it('relays the token response byte for byte, and stores the three tokens encrypted', async () => {
      const login = await loginAsOkta(stack.idp, stack.tokenUrl);
      expect(login.claims.sub).to.equal('alice');
      expect(login.tokens.refresh_token).to.be.a('string');
      const sent = stack.idp.tokenResponses.at(-1)!;
      expectRelayedUnchanged(sent, login.received);

      const grant = await grantShown(stack, 'alice');
      expect(grant).to.include({
        idp: IDP_NAME,
        subject: 'alice',
        email: 'alice@example.test',
        issuer: stack.idp.issuer,
        client_id: stack.idp.clientId,
        access_token: login.tokens.access_token,
        refresh_token: login.tokens.refresh_token,
        id_token: login.tokens.id_token,
        status: 'active',
      });

      const { rows } = await stack.db.pool.query('SELECT idp, subject, outcome, http_status FROM capture_events');
      expect(rows).to.deep.equal([{ idp: IDP_NAME, subject: 'alice', outcome: 'stored', http_status: 200 }]);
    });

    it('keeps no plaintext token anywhere in Postgres', async () => {
      const login = await loginAsOkta(stack.idp, stack.tokenUrl);
      await waitFor('the second capture', async () => {
        const { rows } = await stack.db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM capture_events');
        return rows[0]!.n >= 2 ? true : undefined;
      });
      const dump = await dumpAllRowsAsText(stack.db.pool);
      expect(dump).to.contain('alice');
      const secrets = [login.tokens.access_token, login.tokens.refresh_token!, login.tokens.id_token!, stack.idp.clientSecret];
      const hits = secrets.flatMap(plaintextForms).filter((form) => dump.includes(form));
      expect(hits, 'plaintext secrets found in Postgres').to.deep.equal([]);
    });

    it('never writes a token or the client secret to the sidecar log, even at debug level', async () => {
      const login = await loginAsOkta(stack.idp, stack.tokenUrl);
      await grantShown(stack, 'alice');
      const logs = stack.sidecar!.logs();
      expect(logs).to.contain('capture recorded');
      for (const secret of [login.tokens.access_token, login.tokens.refresh_token!, login.tokens.id_token!, stack.idp.clientSecret]) {
        expect(logs.includes(secret), 'secret found in logs').to.equal(false);
      }
    });

    it('fails open: with the sidecar stopped, the login still succeeds through Envoy, unchanged', async () => {
      await stack.sidecar!.stop();
      try {
        const login = await loginAsOkta(stack.idp, stack.tokenUrl);
        expect(login.claims.sub).to.equal('alice');
        expectRelayedUnchanged(stack.idp.tokenResponses.at(-1)!, login.received);
        // The miss is counted on Envoy's side: a failed connect to the sidecar cluster, and in
        // buffered mode a stream that failed open.
        const stats = await stack.envoy.stats();
        const connectFailures = stats.get('cluster.token_tap_sidecar.upstream_cx_connect_fail') ?? 0;
        const failedOpen = stats.get('http.okta_ingress.ext_proc.token_tap.failure_mode_allowed') ?? 0;
        console.log(`      fail open (${mode}): login ok, sidecar connect failures ${connectFailures}, ext_proc failure_mode_allowed ${failedOpen}`);
        expect(connectFailures).to.be.greaterThan(0);
        if (mode === 'buffered') expect(failedOpen).to.be.greaterThan(0);
      } finally {
        await stack.restartSidecar();
      }
    });
  });
}
