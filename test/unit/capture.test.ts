import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import { expect } from 'chai';
import { captureFrom } from '../../src/capture/capture.js';
import { parseScope, parseSeconds, readTokenResponse } from '../../src/capture/token-response.js';
import type { ObservedResponse } from '../../src/capture/types.js';
import { fakeJwt } from '../support/jwt.js';

const idToken = fakeJwt({ iss: 'https://idp.example', sub: 'user-42', aud: 'okta-client', email: 'u@example.test', exp: 4102444800 });

function observed(
  body: string | Buffer,
  status = 200,
  headers: Record<string, string> = { 'content-type': 'application/json' },
): ObservedResponse & { idp: string } {
  return {
    idp: 'demo',
    routeKind: 'token',
    subjectField: undefined,
    bearerToken: undefined,
    status,
    headers: new Map(Object.entries(headers)),
    body: Buffer.isBuffer(body) ? body : Buffer.from(body),
    bodyTruncated: false,
    complete: true,
    startedAt: Date.parse('2026-01-01T00:00:00Z'),
  };
}

const options = { maxDecodedBytes: 1024 * 1024, newCaptureId: () => '00000000-0000-4000-8000-000000000001' };

describe('capture', () => {
  it('reads a JSON success response: tokens, expiry, scope, type, claims and every other field', () => {
    const body = JSON.stringify({
      access_token: 'at-1',
      id_token: idToken,
      refresh_token: 'rt-1',
      expires_in: 3600,
      scope: 'openid email offline_access',
      token_type: 'Bearer',
      ext_expires_in: 3600,
      nested: { a: [1, 2] },
    });
    const capture = captureFrom(observed(body), options);
    expect(capture.outcome).to.equal('stored');
    expect(capture.subject).to.equal('user-42');
    expect(capture.issuer).to.equal('https://idp.example');
    expect(capture.clientId).to.equal('okta-client');
    expect(capture.email).to.equal('u@example.test');
    expect(capture.tokens).to.deep.include({ accessToken: 'at-1', refreshToken: 'rt-1', idToken, tokenType: 'Bearer', expiresIn: 3600 });
    expect(capture.tokens!.scope).to.deep.equal(['openid', 'email', 'offline_access']);
    expect(capture.tokens!.extras).to.deep.equal({ ext_expires_in: 3600, nested: { a: [1, 2] } });
    expect(capture.tokens!.claims).to.include({ sub: 'user-42', exp: 4102444800 });
    expect(capture.captureId).to.equal('00000000-0000-4000-8000-000000000001');
  });

  it('records an OAuth error response as idp_error with its code, and keeps no tokens', () => {
    const capture = captureFrom(observed('{"error":"invalid_grant","error_description":"code expired"}', 400), options);
    expect(capture.outcome).to.equal('idp_error');
    expect(capture.errorCode).to.equal('invalid_grant');
    expect(capture.tokens).to.equal(undefined);
  });

  it('treats an error body inside HTTP 200 as an error', () => {
    expect(captureFrom(observed('{"error":"bad_verification_code"}', 200), options).outcome).to.equal('idp_error');
  });

  it('holds a success without an id_token as no_subject', () => {
    const capture = captureFrom(observed('{"access_token":"gho_x","token_type":"bearer","scope":"repo"}'), options);
    expect(capture.outcome).to.equal('no_subject');
    expect(capture.tokens!.accessToken).to.equal('gho_x');
    expect(capture.detail).to.contain('no id_token');
  });

  it('marks bodies that are not JSON or form encoded as unparseable, without echoing them', () => {
    const capture = captureFrom(observed('<html>secret-ish</html>'), options);
    expect(capture.outcome).to.equal('unparseable');
    expect(capture.detail).to.not.contain('secret-ish');
  });

  it('decodes a gzip body (a copy) and rejects a body that decodes past the cap as too_large', () => {
    const json = JSON.stringify({ access_token: 'at', id_token: idToken });
    const gzipped = captureFrom(observed(gzipSync(json), 200, { 'content-encoding': 'gzip' }), options);
    expect(gzipped.outcome).to.equal('stored');
    const bomb = gzipSync(Buffer.alloc(4 * 1024 * 1024, 0x20));
    expect(captureFrom(observed(bomb, 200, { 'content-encoding': 'gzip' }), options).outcome).to.equal('too_large');
  });

  it('records a body truncated by the collector as too_large', () => {
    expect(captureFrom({ ...observed('{"access_tok'), bodyTruncated: true }, options).outcome).to.equal('too_large');
  });

  it('reads expires_in given as a number, a numeric string, or not at all', () => {
    expect(parseSeconds(3600)).to.equal(3600);
    expect(parseSeconds('3599')).to.equal(3599);
    expect(parseSeconds(undefined)).to.equal(undefined);
    expect(parseSeconds('soon')).to.equal(undefined);
    expect(parseSeconds(-5)).to.equal(undefined);
  });

  it('splits scopes on spaces and commas', () => {
    expect(parseScope('a b  c')).to.deep.equal(['a', 'b', 'c']);
    expect(parseScope('repo,gist')).to.deep.equal(['repo', 'gist']);
    expect(parseScope('')).to.deep.equal([]);
    expect(parseScope(undefined)).to.deep.equal([]);
  });

  it('keeps a "__proto__" field as data without touching any prototype', () => {
    const result = readTokenResponse(200, Buffer.from('{"access_token":"a","__proto__":{"polluted":true}}'));
    expect(result.kind).to.equal('tokens');
    expect(({} as Record<string, unknown>).polluted).to.equal(undefined);
    if (result.kind === 'tokens') expect(Object.hasOwn(result.tokens.extras, '__proto__')).to.equal(true);
  });

  describe('bodies as real IdPs and hostile peers send them', () => {
    const success = JSON.stringify({ access_token: 'at', id_token: idToken, token_type: 'bearer' });

    it('decodes deflate (zlib or raw) and br, and gzip recognised by its magic bytes without a header', () => {
      expect(captureFrom(observed(deflateSync(success), 200, { 'content-encoding': 'deflate' }), options).outcome).to.equal('stored');
      expect(captureFrom(observed(deflateRawSync(success), 200, { 'content-encoding': 'deflate' }), options).outcome).to.equal('stored');
      expect(captureFrom(observed(brotliCompressSync(success), 200, { 'content-encoding': 'br' }), options).outcome).to.equal('stored');
      expect(captureFrom(observed(gzipSync(success), 200, {}), options).outcome).to.equal('stored');
    });

    it('records a corrupt or unknown encoding as unparseable', () => {
      expect(captureFrom(observed(Buffer.from('not gzip'), 200, { 'content-encoding': 'gzip' }), options).detail).to.match(/corrupt gzip/);
      expect(captureFrom(observed(Buffer.from(success), 200, { 'content-encoding': 'zstd' }), options).detail).to.match(/unsupported content-encoding/);
    });

    it('never quotes the content-encoding header in a detail: the IdP writes it, and the detail goes to Postgres, logs and the summary key', () => {
      // 10 KB of an unknown coding, applied before gzip: the gzip is undone, then the unknown one is met.
      const unknown = `x-${'q7'.repeat(5_000)}`;
      for (const [body, header] of [
        [gzipSync(success), `${unknown}, gzip`],
        [Buffer.from('not gzip'), `${unknown}, gzip`],
        [gzipSync(success), `gzip, ${unknown}`],
        [Buffer.from(success), 'ZSTD-from-the-idp'],
      ] as const) {
        const capture = captureFrom(observed(body, 200, { 'content-encoding': header }), options);
        expect(capture.outcome).to.equal('unparseable');
        expect(capture.detail).to.equal('unsupported content-encoding');
        expect(capture.detail!.length).to.be.at.most(200);
        expect(capture.detail!.toLowerCase()).to.not.contain('q7q7').and.not.contain('zstd');
      }
      // A coding we know that is corrupt is named as we name it, whatever the header said.
      expect(captureFrom(observed(Buffer.from('not gzip'), 200, { 'content-encoding': 'X-GZIP' }), options).detail).to.equal('corrupt gzip body');
      expect(captureFrom(observed(gzipSync('not deflate'), 200, { 'content-encoding': 'deflate, gzip' }), options).detail).to.equal('corrupt deflate body');
    });

    it('decodes at most 4 content-codings: each is a pass over the body, and the IdP picks how many', () => {
      const layered = (layers: number) => Array.from({ length: layers }).reduce<Buffer>((body) => gzipSync(body), Buffer.from(success));
      expect(captureFrom(observed(layered(4), 200, { 'content-encoding': 'gzip, gzip, gzip, gzip' }), options).outcome).to.equal('stored');
      const five = captureFrom(observed(layered(5), 200, { 'content-encoding': 'gzip, gzip, gzip, gzip, gzip' }), options);
      expect(five).to.include({ outcome: 'unparseable', detail: 'more than 4 content-codings' });
    });

    it('sniffs the format and ignores a lying content-type', () => {
      expect(captureFrom(observed(success, 200, { 'content-type': 'text/html' }), options).outcome).to.equal('stored');
      const form = captureFrom(observed('access_token=gho_1&scope=repo%2Cgist&token_type=bearer', 200, { 'content-type': 'application/json' }), options);
      expect(form.tokens).to.deep.include({ accessToken: 'gho_1', scope: ['repo', 'gist'] });
    });

    it('reads Microsoft error_codes, Slack ok:false and Facebook nested errors', () => {
      expect(readTokenResponse(400, Buffer.from('{"error":"invalid_grant","error_codes":[70008]}'))).to.deep.equal({
        kind: 'idp_error',
        errorCode: 'invalid_grant',
      });
      expect(readTokenResponse(400, Buffer.from('{"error_codes":[70008]}'))).to.deep.equal({ kind: 'idp_error', errorCode: 'error_codes:70008' });
      expect(readTokenResponse(200, Buffer.from('{"ok":false,"error":"invalid_code"}'))).to.deep.equal({ kind: 'idp_error', errorCode: 'invalid_code' });
      expect(readTokenResponse(200, Buffer.from('{"ok":false}'))).to.deep.equal({ kind: 'idp_error', errorCode: 'ok_false' });
      expect(readTokenResponse(400, Buffer.from('{"error":{"message":"x","type":"OAuthException","code":100}}'))).to.deep.equal({
        kind: 'idp_error',
        errorCode: 'OAuthException',
      });
      expect(readTokenResponse(400, Buffer.from('{"error":{"code":190}}'))).to.deep.equal({ kind: 'idp_error', errorCode: '190' });
      expect(readTokenResponse(502, Buffer.from('<html>bad gateway</html>'))).to.deep.equal({ kind: 'idp_error', errorCode: 'http_502' });
    });

    it('keeps tokens of 16 KB and more intact', () => {
      const big = 'x'.repeat(16 * 1024);
      const capture = captureFrom(observed(JSON.stringify({ access_token: big, refresh_token: `${big}r`, id_token: idToken })), options);
      expect(capture.tokens!.accessToken).to.equal(big);
      expect(capture.tokens!.refreshToken).to.have.length(16 * 1024 + 1);
    });

    it('survives duplicate keys (last wins), deep nesting and invalid UTF-8 without throwing', () => {
      expect(readTokenResponse(200, Buffer.from('{"access_token":"a","access_token":"b"}'))).to.have.nested.property('tokens.accessToken', 'b');
      const deep = Buffer.from(`{"access_token":"a","x":${'['.repeat(5000)}${']'.repeat(5000)}}`);
      expect(readTokenResponse(200, deep)).to.deep.equal({ kind: 'unparseable', detail: 'JSON body nested deeper than 32 levels' });
      expect(readTokenResponse(200, Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]))).to.deep.equal({
        kind: 'unparseable',
        detail: 'body is not valid UTF-8',
      });
    });

    it('keeps token_type as sent (bearer, Bearer, pop) for case-insensitive use', () => {
      for (const type of ['bearer', 'Bearer', 'pop', 'N_A']) {
        const result = readTokenResponse(200, Buffer.from(JSON.stringify({ access_token: 'a', token_type: type })));
        expect(result).to.have.nested.property('tokens.tokenType', type);
      }
    });
  });
});
