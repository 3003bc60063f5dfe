// The pure checks of verification before storage (iss, aud, azp, exp, nbf, iat at the time the
// token was observed), the signature step against a local key set, and the IdP config that pins them.
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { createLocalJWKSet, exportJWK, SignJWT, type JWK } from 'jose';
import { loadIdpConfig } from '../../src/config/idp-file.js';
import { accessTokenMatchesAtHash, checkIdTokenClaims, CLOCK_TOLERANCE_SECONDS } from '../../src/idp/id-token-checks.js';
import { createHash } from 'node:crypto';
import { CaptureVerifier, verifySignature } from '../../src/idp/verify.js';
import { syntheticCapture } from '../support/captures.js';
import { tempDir } from '../support/token-vault.js';

const expected = { issuer: 'https://idp.example/tenant', clientId: 'okta-client' };
const observedAt = new Date('2026-12-01T08:00:00Z');
const at = Math.floor(observedAt.getTime() / 1000);
const good = { iss: expected.issuer, aud: expected.clientId, sub: 'alice', iat: at - 1, exp: at + 3600 };

describe('at_hash: the id_token binds the access token beside it (OIDC Core 3.3.2.11)', () => {
  const atHash = (token: string, hash: string) => {
    const digest = createHash(hash).update(token, 'ascii').digest();
    return digest.subarray(0, digest.length / 2).toString('base64url');
  };

  it('accepts the access token the id_token names, refuses another, and asks nothing of an id_token without at_hash', () => {
    expect(accessTokenMatchesAtHash({ at_hash: atHash('issued-with-it', 'sha256') }, 'RS256', 'issued-with-it')).to.equal(true);
    expect(accessTokenMatchesAtHash({ at_hash: atHash('issued-with-it', 'sha256') }, 'RS256', 'planted-beside-it')).to.equal(false);
    expect(accessTokenMatchesAtHash({ at_hash: atHash('t', 'sha384') }, 'ES384', 't')).to.equal(true);
    expect(accessTokenMatchesAtHash({ at_hash: atHash('t', 'sha256') }, 'PS512', 't')).to.equal(false);
    expect(accessTokenMatchesAtHash({ at_hash: atHash('t', 'sha256') }, 'RS256', undefined)).to.equal(false);
    expect(accessTokenMatchesAtHash({}, 'RS256', 'anything')).to.equal(true);
  });
});

describe('id_token claim checks', () => {
  it("accepts the pinned issuer and Okta's client, as a string or among audiences with azp", () => {
    expect(checkIdTokenClaims(good, expected, observedAt)).to.equal(undefined);
    expect(checkIdTokenClaims({ ...good, aud: [expected.clientId] }, expected, observedAt)).to.equal(undefined);
    expect(checkIdTokenClaims({ ...good, aud: ['api://other', expected.clientId], azp: expected.clientId }, expected, observedAt)).to.equal(undefined);
    expect(checkIdTokenClaims({ ...good, azp: expected.clientId }, expected, observedAt)).to.equal(undefined);
  });

  it('refuses another issuer, exactly compared (no trailing slash, no case folding)', () => {
    for (const iss of ['https://evil.example/tenant', `${expected.issuer}/`, expected.issuer.toUpperCase(), undefined, 42]) {
      expect(checkIdTokenClaims({ ...good, iss }, expected, observedAt), String(iss)).to.equal('issuer_mismatch');
    }
  });

  it('refuses tokens for another client: aud without it, azp naming another, or several audiences without azp', () => {
    expect(checkIdTokenClaims({ ...good, aud: 'other-client' }, expected, observedAt)).to.equal('audience_mismatch');
    expect(checkIdTokenClaims({ ...good, aud: ['other-client'] }, expected, observedAt)).to.equal('audience_mismatch');
    expect(checkIdTokenClaims({ ...good, aud: undefined }, expected, observedAt)).to.equal('audience_mismatch');
    expect(checkIdTokenClaims({ ...good, aud: [expected.clientId, 7] }, expected, observedAt)).to.equal('audience_mismatch');
    expect(checkIdTokenClaims({ ...good, azp: 'other-client' }, expected, observedAt)).to.equal('azp_mismatch');
    expect(checkIdTokenClaims({ ...good, aud: [expected.clientId, 'other-client'] }, expected, observedAt)).to.equal('azp_mismatch');
    expect(checkIdTokenClaims({ ...good, aud: [expected.clientId, 'other-client'], azp: 'other-client' }, expected, observedAt)).to.equal('azp_mismatch');
  });

  it('judges exp, nbf and iat at the time the response was observed, with a small tolerance', () => {
    const tolerance = CLOCK_TOLERANCE_SECONDS;
    expect(checkIdTokenClaims({ ...good, exp: at - tolerance }, expected, observedAt)).to.equal(undefined);
    expect(checkIdTokenClaims({ ...good, exp: at - tolerance - 1 }, expected, observedAt)).to.equal('expired');
    expect(checkIdTokenClaims({ ...good, exp: undefined }, expected, observedAt)).to.equal('no_expiry');
    expect(checkIdTokenClaims({ ...good, exp: '9999999999' }, expected, observedAt)).to.equal('no_expiry');
    expect(checkIdTokenClaims({ ...good, nbf: at + tolerance + 1 }, expected, observedAt)).to.equal('not_yet_valid');
    expect(checkIdTokenClaims({ ...good, iat: at + tolerance + 1 }, expected, observedAt)).to.equal('issued_in_future');
    // A capture verified an hour late (it waited in the spool through an outage) is judged as of then.
    expect(checkIdTokenClaims({ ...good, exp: at + 60 }, expected, observedAt)).to.equal(undefined);
  });

  it('needs a subject', () => {
    expect(checkIdTokenClaims({ ...good, sub: '' }, expected, observedAt)).to.equal('no_subject');
    expect(checkIdTokenClaims({ ...good, sub: undefined }, expected, observedAt)).to.equal('no_subject');
  });
});

describe('id_token signature against a key set', () => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const sign = (key = privateKey, header: Record<string, unknown> = { alg: 'RS256', kid: 'k1' }) =>
    new SignJWT(good).setProtectedHeader(header as { alg: string }).sign(key);
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

  it('returns the claims of a token the set verifies, and why not otherwise', async () => {
    const jwk: JWK = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256' };
    const keys = createLocalJWKSet({ keys: [jwk] });
    expect(await verifySignature(await sign(), keys)).to.deep.include({ sub: 'alice', iss: expected.issuer });
    expect(await verifySignature(await sign(other.privateKey), keys)).to.equal('bad_signature');
    expect(await verifySignature(await sign(privateKey, { alg: 'RS256', kid: 'k9' }), keys)).to.equal('unknown_key');
    expect(await verifySignature(`${part({ alg: 'none' })}.${part(good)}.`, keys)).to.equal('alg_not_allowed');
    expect(await verifySignature(await new SignJWT(good).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).sign(Buffer.alloc(32, 1)), keys)).to.equal(
      'alg_not_allowed',
    );
    expect(await verifySignature('not.a.jwt', keys)).to.equal('malformed');
  });

  it('tries every key that fits a header without kid', async () => {
    const keys = createLocalJWKSet({ keys: [await exportJWK(other.publicKey), await exportJWK(publicKey)] });
    expect(await verifySignature(await sign(privateKey, { alg: 'RS256' }), keys)).to.deep.include({ sub: 'alice' });
    expect(await verifySignature(await sign(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, { alg: 'RS256' }), keys)).to.equal('bad_signature');
  });
});

describe('IdP config: issuer, jwks_uri and client_id (TOKEN_TAP_IDP_CONFIG)', () => {
  const configFile = (text: string) => {
    const file = path.join(tempDir('idp-config'), 'idps.yaml');
    writeFileSync(file, text);
    return file;
  };

  it('reads verification-only entries (no token_url or secret) next to refreshing ones', () => {
    const problems: string[] = [];
    const config = loadIdpConfig(
      {
        TOKEN_TAP_IDP_CONFIG: configFile(
          [
            'idps:',
            '  entra: { issuer: "https://login.microsoftonline.com/t1/v2.0", client_id: c1 }',
            '  acme: { issuer: "https://acme.example", jwks_uri: "https://acme.example/keys", client_id: c2, token_url: "https://acme.example/token", client_secret_env: ACME }',
            '  legacy: { token_url: "http://127.0.0.1:9/token", client_id: c3, client_secret_env: ACME }',
          ].join('\n'),
        ),
        ACME: 'secret',
      },
      problems,
    );
    expect(problems).to.deep.equal([]);
    expect([...config.clients.keys()]).to.deep.equal(['acme', 'legacy']);
    expect([...config.verification.keys()]).to.deep.equal(['entra', 'acme']);
    expect(config.verification.get('entra')).to.include({ issuer: 'https://login.microsoftonline.com/t1/v2.0', clientId: 'c1', jwksUri: undefined });
    expect(config.verification.get('acme')!.jwksUri!.href).to.equal('https://acme.example/keys');
  });

  it('reports every problem at once: plain http off loopback, jwks_uri without issuer, no client_id, half a refresh client, neither', () => {
    const problems: string[] = [];
    loadIdpConfig(
      {
        TOKEN_TAP_IDP_CONFIG: configFile(
          [
            'idps:',
            '  a: { issuer: "http://idp.example", client_id: c }',
            '  b: { jwks_uri: "https://b.example/keys", token_url: "https://b.example/token", client_id: c, client_secret_env: B }',
            '  c: { issuer: "https://c.example" }',
            '  d: { issuer: "https://d.example", client_id: c, token_url: "https://d.example/token" }',
            '  e: { issuer: "https://e.example?x=1", client_id: c }',
            '  f: { client_id: c }',
          ].join('\n'),
        ),
        B: 'secret',
      },
      problems,
    );
    const text = problems.join('\n');
    expect(text).to.contain('idps.a.issuer must be https');
    expect(text).to.contain('idps.b.jwks_uri needs issuer');
    expect(text).to.contain('idps.c.client_id must be a non-empty string');
    expect(text).to.contain('idps.d: give exactly one of client_secret_env');
    expect(text).to.contain('idps.e.issuer must have no query or fragment');
    expect(text).to.contain('idps.f: give issuer (verification of captured id_tokens) and/or token_url');
    expect(problems).to.have.length(6);
  });
});

describe('IdP keys: answers read with a byte limit', () => {
  it('stops reading a JWKS that streams 50 MiB at the 512 KiB limit, with a size message', async () => {
    const { createServer } = await import('node:http');
    const { IdpKeys, MAX_DOCUMENT_BYTES } = await import('../../src/idp/verify.js');
    let written = 0;
    let closed!: () => void;
    const done = new Promise<void>((resolve) => (closed = resolve));
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const server = createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.write('{"keys":[');
      const total = 50 * 1024 * 1024;
      // Paced (64 KiB per 2 ms), so what was written is about what the client read, not what the
      // kernel's socket buffers took in.
      const pump = () => {
        if (response.destroyed) return;
        if (written >= total) return void response.end();
        written += chunk.length;
        if (response.write(chunk)) setTimeout(pump, 2);
        else response.once('drain', () => setTimeout(pump, 2));
      };
      response.on('close', closed);
      pump();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const events: Array<{ ok: boolean; problem?: string }> = [];
      const keys = new IdpKeys(
        { idp: 'big', issuer: `http://127.0.0.1:${port}`, jwksUri: new URL(`http://127.0.0.1:${port}/jwks`), clientId: 'c', timeoutMs: 20_000 },
        { cooldownMs: 60_000, onFetch: (event) => events.push(event) },
      );
      await keys.refresh();
      expect(events).to.have.length(1);
      expect(events[0]).to.deep.include({ ok: false, problem: `jwks_uri: answer over ${MAX_DOCUMENT_BYTES} bytes` });
      await done;
      // The client hung up at the limit: it read about 512 KiB of the 50 MiB.
      expect(written, `${written} bytes written`).to.be.below(1024 * 1024);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('the verification step passes on no claim it did not check', () => {
  it("a login of an IdP without an issuer, and a profile or error of one with an issuer, claiming verified leave it verified: false; a refresh answer keeps its claim (the writer ANDs it with its grant's)", async () => {
    const pinned = { idp: 'pinned', issuer: 'https://pinned.example', jwksUri: undefined, clientId: 'okta', timeoutMs: 1_000 };
    const verifier = new CaptureVerifier({ idps: new Map([['pinned', pinned]]), cooldownMs: 0, maxWaitMs: 0 });
    const claims = [
      syntheticCapture('acme', 'alice', { verified: true }),
      syntheticCapture('pinned', undefined, { outcome: 'profile', tokens: undefined, verified: true }),
      syntheticCapture('pinned', undefined, { outcome: 'idp_error', tokens: undefined, verified: true }),
      syntheticCapture('acme', 'alice', { verified: true, obtainedByRefresh: true }),
    ];
    const { captures } = await verifier.verify(claims);
    expect(captures!.map((capture) => capture.verified)).to.deep.equal([false, false, false, true]);
  });
});
