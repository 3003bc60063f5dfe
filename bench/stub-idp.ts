// A fast stand-in for an IdP token endpoint: every POST gets a realistic ~2 KB token response
// (JWT id_token with a fresh sub, opaque access and refresh tokens). Run as its own process:
//   node dist/bench/stub-idp.js PORT [DELAY_MS]
// DELAY_MS (default 0): each answer is sent that long after the request has arrived, as an IdP
// across the internet would (the bench's 80 ms scenario).
import { randomBytes } from 'node:crypto';
import http from 'node:http';

const port = Number(process.argv[2] ?? 0);
const delayMs = Number(process.argv[3] ?? 0);
const header = Buffer.from(JSON.stringify({ alg: 'RS256', kid: 'bench-key-1', typ: 'JWT' })).toString('base64url');
const signature = randomBytes(256).toString('base64url');
const prefix = randomBytes(4).toString('hex');
let counter = 0;

function tokenResponse(): string {
  counter += 1;
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: 'https://idp.bench.example',
    sub: `bench-${prefix}-${counter}`,
    aud: 'okta-bench-client',
    exp: now + 3600,
    iat: now,
    email: `user${counter}@bench.example`,
    email_verified: true,
    name: 'Bench User',
    nonce: randomBytes(8).toString('hex'),
  };
  const idToken = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}`;
  return JSON.stringify({
    access_token: `at.${randomBytes(800).toString('base64url')}`,
    token_type: 'Bearer',
    expires_in: 3600,
    refresh_token: `rt.${randomBytes(48).toString('base64url')}`,
    scope: 'openid email profile offline_access',
    id_token: idToken,
  });
}

const server = http.createServer((request, response) => {
  request.resume();
  request.on('end', () => {
    const answer = () => {
      const body = tokenResponse();
      response.writeHead(200, {
        'content-type': 'application/json;charset=UTF-8',
        'cache-control': 'no-store',
        pragma: 'no-cache',
        'content-length': Buffer.byteLength(body),
      });
      response.end(body);
    };
    if (delayMs > 0) setTimeout(answer, delayMs);
    else answer();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(
    `${JSON.stringify({ ready: true, port: (server.address() as { port: number }).port, delayMs, bodyBytes: Buffer.byteLength(tokenResponse()) })}\n`,
  );
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
