// What the token-exchange benchmarks share (bench/token-exchange.ts, bench/instructions.ts): stored
// verified grants, an API key allowed to exchange, one Okta-signed subject token per user, the
// exchange's configuration, and POST /oauth2/token load.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { stringify } from 'yaml';
import { ApiKeyRepository } from '../src/api/api-keys.js';
import type { Capture } from '../src/capture/types.js';
import { TOKEN_EXCHANGE_PATH } from '../src/contract.js';
import { sealQuarantined } from '../src/ingest/quarantine.js';
import { parseKeyRing } from '../src/keys/key-ring.js';
import { GrantStore } from '../src/store/grants.js';
import type { OktaAuthorizationServer } from '../test/support/okta-authorization-server.js';
import { fakeJwt, log } from './common.js';
import type { Outcome } from './open-loop.js';

/** A verified login of user-<index> (upstream sub), access token valid an hour: no exchange refreshes. */
export function login(index: number): Capture {
  const subject = `user-${index}`;
  const email = `${subject}@bench.example`;
  return {
    captureId: randomUUID(),
    idp: 'bench',
    observedAt: new Date(),
    httpStatus: 200,
    outcome: 'stored',
    subject,
    issuer: 'https://bench.example',
    clientId: 'okta-bench',
    email,
    verified: true,
    tokens: {
      accessToken: fakeJwt(600),
      refreshToken: randomUUID(),
      idToken: fakeJwt(500),
      tokenType: 'Bearer',
      expiresIn: 3600,
      refreshExpiresIn: undefined,
      scope: ['openid', 'email', 'profile'],
      extras: { ext_expires_in: 3600 },
      claims: { sub: subject, email, email_verified: true, name: 'Bench User', groups: ['a', 'b', 'c'], iat: 1_700_000_000, exp: 1_900_000_000 },
    },
    errorCode: undefined,
    detail: undefined,
  };
}

/** POST /oauth2/token over keep-alive HTTP/1.1, bodies encoded beforehand (one per user). */
export function exchangeLoad(port: number, apiKey: { id: string; token: string }, bodies: readonly Buffer[]) {
  // timeout: an idle connection is closed here before the exchange's server closes it (keepAliveTimeout,
  // 5 s), which would otherwise reset a request sent on it at that moment.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64, timeout: 4_000 });
  const authorization = `Basic ${Buffer.from(`${apiKey.id}:${apiKey.token}`).toString('base64')}`;
  const call = (): Promise<Outcome> =>
    new Promise((resolve) => {
      const body = bodies[Math.floor(Math.random() * bodies.length)]!;
      const request = http.request(
        {
          host: '127.0.0.1',
          port,
          path: TOKEN_EXCHANGE_PATH,
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': body.length, authorization },
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => {
            if (response.statusCode === 200) return resolve({ ok: true });
            const text = Buffer.concat(chunks).toString('utf8');
            const code = /"error":"([a-z_]+)"/.exec(text)?.[1] ?? `http_${response.statusCode}`;
            resolve({ ok: false, error: code, message: text.slice(0, 200) });
          });
        },
      );
      request.on('error', (error) => resolve({ ok: false, error: 'connection', message: error.message }));
      request.end(body);
    });
  return { call, close: () => agent.destroy() };
}

/**
 * Stores `grantCount` verified logins (user-0 ...) in a migrated database, creates an API key that may
 * get and exchange, signs a subject token per user with `okta` and writes the exchange's configuration.
 */
export async function prepareExchange(
  pool: pg.Pool,
  keys: string,
  okta: OktaAuthorizationServer,
  grantCount: number,
): Promise<{ apiKey: { id: string; token: string }; bodies: Buffer[]; exchangeFile: string }> {
  const store = new GrantStore(pool, parseKeyRing(keys), sealQuarantined);
  for (let first = 0; first < grantCount; first += 200) {
    await store.recordCaptures(Array.from({ length: Math.min(200, grantCount - first) }, (_, offset) => login(first + offset)));
  }
  const apiKey = await new ApiKeyRepository(pool).create('bench', ['bench'], ['get', 'exchange']);
  // One subject token per user, signed now: signing is Okta's work, not the caller's or ours.
  const bodies: Buffer[] = [];
  for (let index = 0; index < grantCount; index += 1) {
    const subjectToken = await okta.accessToken(
      { id: `00uBENCH${index}`, login: `user-${index}@bench.example` },
      { claims: { upstream_idp: '0oaBENCH1', upstream_sub: `user-${index}` } },
    );
    bodies.push(
      Buffer.from(
        new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: subjectToken,
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          audience: 'bench',
        }).toString(),
      ),
    );
  }
  log(`${grantCount} grants stored, ${bodies.length} subject tokens signed`);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-bench-exchange-'));
  const exchangeFile = path.join(dir, 'exchange.yaml');
  writeFileSync(
    exchangeFile,
    stringify({
      subject_issuers: [{ issuer: okta.issuer, audiences: [okta.audience] }],
      providers: [{ idp: 'bench', okta_idp_id: '0oaBENCH1', idp_claim: 'upstream_idp', match: 'claim:upstream_sub' }],
    }),
  );
  return { apiKey, bodies, exchangeFile };
}
