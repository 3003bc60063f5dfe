// The rule that keeps tokens and secrets in a grant's extras from readers without read_refresh_token.
import { expect } from 'chai';
import { isSecretFieldName, withoutSecretFields } from '../../src/capture/secret-fields.js';
import { fromProtoStruct, grantMessage } from '../../src/api/wire.js';
import type { GrantRecord } from '../../src/store/grants.js';

describe('secret fields of extras (capture/secret-fields.ts)', () => {
  it("judges names whatever their case and separators, keeping a token's metadata", () => {
    for (const name of [
      'refresh_token',
      'refreshToken',
      'REFRESH-TOKEN',
      'xoxe.token',
      'bot_refresh_token',
      'client_secret',
      'signingSecret',
      'password',
      'db_passwd',
      'client_assertion',
      'credentials',
      'private_key',
      'privateKey',
      'api_key',
      'incoming_webhook',
      'Set-Cookie',
      'session_key',
    ]) {
      expect(isSecretFieldName(name), name).to.equal(true);
    }
    for (const name of [
      'token_type',
      'refresh_token_expires_in',
      'refreshTokenExpiresAt',
      'id',
      'team',
      'scope',
      'expires_in',
      'instance_url',
      'key_id',
      'ok',
    ]) {
      expect(isSecretFieldName(name), name).to.equal(false);
    }
  });

  it('removes them at any depth, in objects and arrays, and keeps everything else as it is', () => {
    const extras = {
      ok: true,
      authed_user: { id: 'U1', access_token: 'xoxp-1', refresh_token: 'xoxe-1', token_type: 'user', expires_in: 43200 },
      list: [{ refresh_token: 'deep-1', id: 1 }, ['plain', { Secret: 'deep-2' }], null, 3],
      nested: { a: { b: { c: { refreshToken: 'deep-3', d: 'kept' } } } },
      __proto__field: { password: 'p' },
    };
    const filtered = withoutSecretFields(extras);
    expect(filtered).to.deep.equal({
      ok: true,
      authed_user: { id: 'U1', token_type: 'user', expires_in: 43200 },
      list: [{ id: 1 }, ['plain', {}], null, 3],
      nested: { a: { b: { c: { d: 'kept' } } } },
      __proto__field: {},
    });
    expect(JSON.stringify(filtered)).to.not.match(/xox|deep-|"p"/);
    // The input is not changed.
    expect(extras.authed_user.refresh_token).to.equal('xoxe-1');
  });

  it('keeps a "__proto__" field a field, and shows nothing past 64 levels', () => {
    const parsed = JSON.parse('{"__proto__": {"refresh_token": "rt", "x": 1}}') as Record<string, unknown>;
    const filtered = withoutSecretFields(parsed);
    expect(Object.getPrototypeOf(filtered)).to.equal(Object.prototype);
    expect(JSON.stringify(filtered)).to.equal('{"__proto__":{"x":1}}');
    let deep: Record<string, unknown> = { refresh_token: 'too-deep' };
    for (let level = 0; level < 100; level += 1) deep = { next: deep };
    expect(JSON.stringify(withoutSecretFields(deep))).to.not.contain('too-deep');
  });

  it('grantMessage gives the extras whole only with the refresh token', () => {
    const grant = {
      idp: 'slack',
      subject: 'U1',
      status: 'active',
      issuer: null,
      clientId: null,
      email: null,
      scope: [],
      tokenType: 'user',
      keyId: 'k1',
      accessToken: 'xoxp-top',
      refreshToken: 'xoxe-top',
      idToken: null,
      claims: null,
      extras: { authed_user: { refresh_token: 'xoxe-nested' } },
      accessTokenExpiresAt: null,
      refreshTokenExpiresAt: null,
      idTokenExpiresAt: null,
      verified: false,
      capturedAt: new Date(),
      updatedAt: new Date(),
      lastRefreshedAt: null,
      version: 1,
    } satisfies GrantRecord;
    const restricted = grantMessage(grant, { tokens: true, refreshToken: false });
    expect(fromProtoStruct(restricted.extras)).to.deep.equal({ authed_user: {} });
    expect(JSON.stringify(restricted)).to.not.contain('xoxe');
    expect(fromProtoStruct(grantMessage(grant, { tokens: true, refreshToken: true }).extras)).to.deep.equal(grant.extras);
  });
});
