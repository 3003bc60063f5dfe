// The IdP client (idp/client.ts, on oauth4webapi) against a loopback token endpoint that answers
// the ways real IdPs do: the quirks capture/ accepts are accepted here too, refusals carry the
// OAuth error code, and no message ever quotes a token or the client secret.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { IdpCallError, IdpClient } from '../../src/idp/client.js';

const SECRET = 'client-secret-canary-7f3a';
const TOKEN = 'access-token-canary-91bd';

interface Answer {
  status: number;
  type?: string;
  body: string;
  delayMs?: number;
}

describe('IdP client (oauth4webapi) against a loopback token endpoint', () => {
  let server: http.Server;
  let next: Answer;
  let seen: { authorization?: string | undefined; form: URLSearchParams } | undefined;
  let client: IdpClient;

  before(async () => {
    server = http.createServer((request, response) => {
      let text = '';
      request.on('data', (chunk) => (text += chunk));
      request.on('end', () => {
        seen = { authorization: request.headers.authorization, form: new URLSearchParams(text) };
        setTimeout(() => {
          response.writeHead(next.status, { 'content-type': next.type ?? 'application/json' });
          response.end(next.body);
        }, next.delayMs ?? 0);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    client = new IdpClient(
      {
        idp: 'acme',
        tokenUrl: new URL(`${base}/token`),
        revocationUrl: new URL(`${base}/revoke`),
        clientId: 'okta-at-acme',
        authMethod: 'client_secret_basic',
        timeoutMs: 300,
      },
      SECRET,
    );
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const refreshError = async (): Promise<IdpCallError> => {
    try {
      await client.refresh('stored-refresh-token');
    } catch (error) {
      expect(error).to.be.instanceOf(IdpCallError);
      const message = `${(error as Error).message} ${JSON.stringify(error)}`;
      expect(message).not.to.contain(TOKEN).and.not.to.contain(SECRET).and.not.to.contain('stored-refresh-token');
      return error as IdpCallError;
    }
    throw new Error('the refresh was expected to fail');
  };

  it('sends grant_type=refresh_token with HTTP Basic client authentication, and reads the new tokens', async () => {
    next = {
      status: 200,
      body: JSON.stringify({ access_token: TOKEN, token_type: 'Bearer', expires_in: '3600', refresh_token: 'rotated', scope: 'openid offline_access' }),
    };
    const tokens = await client.refresh('stored-refresh-token');
    expect(seen!.form.get('grant_type')).to.equal('refresh_token');
    expect(seen!.form.get('refresh_token')).to.equal('stored-refresh-token');
    // RFC 6749 2.3.1: each part form-encoded, then joined and base64-encoded.
    const [id, secret] = Buffer.from(seen!.authorization!.replace(/^Basic /, ''), 'base64')
      .toString()
      .split(':')
      .map(decodeURIComponent);
    expect([id, secret]).to.deep.equal(['okta-at-acme', SECRET]);
    expect(tokens).to.include({ accessToken: TOKEN, refreshToken: 'rotated', expiresIn: 3600 });
  });

  it('accepts the quirks real IdPs have: no token_type, a form-encoded body', async () => {
    next = { status: 200, body: JSON.stringify({ access_token: TOKEN, expires_in: 60 }) };
    expect((await client.refresh('stored-refresh-token')).accessToken).to.equal(TOKEN);
    next = { status: 200, type: 'application/x-www-form-urlencoded', body: `access_token=${TOKEN}&token_type=bearer&refresh_token=r2` };
    expect((await client.refresh('stored-refresh-token')).refreshToken).to.equal('r2');
  });

  it('names the OAuth error code of a refusal, also when the IdP sends it with HTTP 200', async () => {
    next = { status: 400, body: JSON.stringify({ error: 'invalid_grant', error_description: `token ${TOKEN} expired` }) };
    expect(await refreshError()).to.include({ kind: 'refused', errorCode: 'invalid_grant' });
    next = { status: 200, body: JSON.stringify({ error: 'bad_refresh_token' }) };
    expect(await refreshError()).to.include({ kind: 'refused', errorCode: 'bad_refresh_token' });
  });

  it('calls 5xx, 429, a timeout and an unreadable answer unavailable (try again), never quoting the body', async () => {
    next = { status: 503, body: `{"access_token":"${TOKEN}"}` };
    expect((await refreshError()).kind).to.equal('unavailable');
    next = { status: 429, body: '' };
    expect((await refreshError()).kind).to.equal('unavailable');
    next = { status: 200, body: JSON.stringify({ access_token: TOKEN }), delayMs: 1_000 };
    const timedOut = await refreshError();
    expect(timedOut.kind).to.equal('unavailable');
    expect(timedOut.message).to.contain('no answer within 300 ms');
    next = { status: 200, body: JSON.stringify({ access_token: TOKEN, token_type: 'mac' }) };
    expect((await refreshError()).kind).to.equal('unavailable');
  });

  it('revokes with a token_type_hint and takes unsupported_token_type as "not revocable", not a failure', async () => {
    next = { status: 200, body: '' };
    expect(await client.revoke('some-token', 'refresh_token')).to.equal('revoked');
    expect(seen!.form.get('token_type_hint')).to.equal('refresh_token');
    next = { status: 400, body: JSON.stringify({ error: 'unsupported_token_type' }) };
    expect(await client.revoke('some-token', 'access_token')).to.equal('unsupported');
    next = { status: 401, body: JSON.stringify({ error: 'invalid_client' }) };
    const refused = await client.revoke('some-token', 'access_token').catch((error: unknown) => error);
    expect(refused).to.be.instanceOf(IdpCallError).and.include({ kind: 'refused', errorCode: 'invalid_client' });
  });
});
