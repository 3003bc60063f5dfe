// An Okta custom authorization server as the token exchange sees it: a discovery document at
// <issuer>/.well-known/openid-configuration naming <issuer>/v1/keys, a JWKS there, and tokens
// shaped as Okta's (DESIGN §6a) signed RS256 with jose: access tokens with ver, jti, iss, aud, iat,
// exp, cid, uid, scp, sub (the login), auth_time; id_tokens with sub (the user id), aud (the app's
// client id), email and email_verified. Counts requests for its keys.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';

export interface OktaUser {
  /** Okta's user id (uid, and an id_token's sub). */
  id: string;
  /** The login, an email address (an access token's sub). */
  login: string;
  email?: string;
}

export interface OktaAuthorizationServer {
  /** http://127.0.0.1:<port>/oauth2/default */
  issuer: string;
  audience: string;
  /** The app's client id (cid of access tokens, aud of id_tokens). */
  clientId: string;
  /** GET requests for the key set so far. */
  keyFetches(): number;
  accessToken(user: OktaUser, overrides?: TokenOverrides): Promise<string>;
  idToken(user: OktaUser, overrides?: TokenOverrides): Promise<string>;
  /** A token signed by a key the server does not publish. */
  forged(user: OktaUser, overrides?: TokenOverrides): Promise<string>;
  close(): Promise<void>;
}

export interface TokenOverrides {
  claims?: Record<string, unknown>;
  /** Seconds from now; default iat now, exp in an hour. */
  iatIn?: number;
  expIn?: number;
  nbfIn?: number;
}

async function keyPair(kid: string): Promise<{ privateKey: CryptoKey; jwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  return { privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };
}

export async function startOktaAuthorizationServer(options: { audience?: string; clientId?: string } = {}): Promise<OktaAuthorizationServer> {
  const signing = await keyPair('okta-key-1');
  const forger = await keyPair('okta-key-1');
  let fetches = 0;
  let issuer = '';
  const server = http.createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://x').pathname;
    const send = (body: unknown) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(body));
    };
    if (path === '/oauth2/default/.well-known/openid-configuration') {
      return send({
        issuer,
        jwks_uri: `${issuer}/v1/keys`,
        token_endpoint: `${issuer}/v1/token`,
        authorization_endpoint: `${issuer}/v1/authorize`,
        id_token_signing_alg_values_supported: ['RS256'],
      });
    }
    if (path === '/oauth2/default/v1/keys') {
      fetches += 1;
      return send({ keys: [signing.jwk] });
    }
    response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}/oauth2/default`;
  const audience = options.audience ?? 'api://default';
  const clientId = options.clientId ?? '0oa1webappEXAMPLE';

  const sign = (key: CryptoKey, claims: Record<string, unknown>, overrides: TokenOverrides = {}) => {
    const now = Math.floor(Date.now() / 1000);
    const times = {
      iat: now + (overrides.iatIn ?? 0),
      exp: now + (overrides.expIn ?? 3600),
      ...(overrides.nbfIn === undefined ? {} : { nbf: now + overrides.nbfIn }),
    };
    return new SignJWT({ ...claims, ...times, ...overrides.claims }).setProtectedHeader({ alg: 'RS256', kid: 'okta-key-1' }).sign(key);
  };
  const accessClaims = (user: OktaUser) => ({
    ver: 1,
    jti: `AT.${randomUUID()}`,
    iss: issuer,
    aud: audience,
    cid: clientId,
    uid: user.id,
    scp: ['openid', 'email', 'profile'],
    auth_time: Math.floor(Date.now() / 1000),
    sub: user.login,
  });
  return {
    issuer,
    audience,
    clientId,
    keyFetches: () => fetches,
    accessToken: (user, overrides) => sign(signing.privateKey, accessClaims(user), overrides),
    idToken: (user, overrides) =>
      sign(
        signing.privateKey,
        {
          ver: 1,
          jti: `ID.${randomUUID()}`,
          iss: issuer,
          aud: clientId,
          sub: user.id,
          email: user.email ?? user.login,
          email_verified: true,
          amr: ['pwd'],
          idp: '00o1okta',
          auth_time: Math.floor(Date.now() / 1000),
        },
        overrides,
      ),
    forged: (user, overrides) => sign(forger.privateKey, accessClaims(user), overrides),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
