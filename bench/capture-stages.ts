// CPU per capture of each pure stage of the capture path, in this process: no gRPC, no Postgres,
// no spool I/O. What a profile of the sidecar spreads over many frames, one line per stage here.
//   node dist/bench/capture-stages.js [--format 2|3] [--captures N]
// Responses are the stub IdP's (~2 KB, JWT id_token); two rounds, the second after the JIT warmed.
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { captureFrom } from '../src/capture/capture.js';
import type { Capture, ObservedResponse } from '../src/capture/types.js';
import { decodeCapture, encodeCapture } from '../src/ingest/spool-codec.js';
import { fingerprint, generateKeySpec, open, parseKeyRing, seal } from '../src/keys/key-ring.js';
import { createLogger } from '../src/ops/log.js';

const { values: flags } = parseArgs({ options: { format: { type: 'string', default: '3' }, captures: { type: 'string', default: '20000' } } });
const count = Number(flags.captures);
const ring = parseKeyRing(generateKeySpec('k1'), undefined, flags.format);
const header = Buffer.from(JSON.stringify({ alg: 'RS256', kid: 'bench-key-1', typ: 'JWT' })).toString('base64url');
const signature = randomBytes(256).toString('base64url');

function observed(index: number): ObservedResponse {
  const claims = {
    iss: 'https://idp.bench.example',
    sub: `bench-${index}`,
    aud: 'okta-bench-client',
    exp: 2e9,
    iat: 1.7e9,
    email: `user${index}@bench.example`,
    email_verified: true,
    name: 'Bench User',
    nonce: randomBytes(8).toString('hex'),
  };
  const body = JSON.stringify({
    access_token: `at.${randomBytes(800).toString('base64url')}`,
    token_type: 'Bearer',
    expires_in: 3600,
    refresh_token: `rt.${randomBytes(48).toString('base64url')}`,
    scope: 'openid email profile offline_access',
    id_token: `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}`,
  });
  return {
    idp: 'bench',
    routeKind: 'token',
    subjectField: undefined,
    bearerToken: undefined,
    status: 200,
    headers: new Map([['content-type', 'application/json']]),
    body: Buffer.from(body),
    bodyTruncated: false,
    complete: true,
    startedAt: Date.now(),
  };
}

function stage<T>(name: string, work: () => T): T {
  const cpu = process.cpuUsage();
  const result = work();
  const used = process.cpuUsage(cpu);
  process.stdout.write(`${name.padEnd(34)} ${((used.user + used.system) / count).toFixed(1).padStart(7)} µs CPU per capture\n`);
  return result;
}

const responses = Array.from({ length: count }, (_, index) => observed(index));
const discard = new Writable({ write: (_chunk, _encoding, done) => done() });
const logger = createLogger('info', discard);
const unredacted = logger.child({}, { redact: { paths: [] } });
const spoolBinding = (capture: Capture) => ({ idp: 'spool', subject: capture.captureId, field: 'capture' });
const fieldsOf = (capture: Capture) => {
  const binding = (field: string) => ({ idp: capture.idp, subject: capture.subject!, field });
  const tokens = capture.tokens!;
  return [
    seal(ring, tokens.accessToken!, binding('access_token')),
    seal(ring, tokens.refreshToken!, binding('refresh_token')),
    seal(ring, tokens.idToken!, binding('id_token')),
    seal(ring, JSON.stringify({ response: tokens.extras }), binding('extras')),
  ];
};
const line = (capture: Capture) => ({
  idp: capture.idp,
  captureId: capture.captureId,
  subject: capture.subject,
  outcome: capture.outcome,
  verified: false,
  httpStatus: 200,
  durationMs: 5,
});

process.stdout.write(`${count} captures, seal format ${flags.format}, Node ${process.version}\n`);
for (const round of ['cold', 'warm']) {
  process.stdout.write(`-- ${round}\n`);
  const captures = stage('parse (captureFrom)', () => responses.map((response) => captureFrom({ ...response, idp: 'bench' }, { maxDecodedBytes: 1 << 20 })));
  const texts = stage('spool record: encode', () => captures.map((capture) => encodeCapture(capture)));
  const sealed = stage('spool record: seal', () => texts.map((text, index) => seal(ring, text, spoolBinding(captures[index]!))));
  const opened = stage('spool record: open', () => sealed.map((value, index) => open(ring, ring.activeKeyId, value, spoolBinding(captures[index]!))));
  stage('spool record: decode', () => opened.map((text) => decodeCapture(text)));
  stage('grant row: seal 4 fields', () => captures.map(fieldsOf));
  stage('grant row: access token fingerprint', () => captures.map((capture) => fingerprint(ring, capture.tokens!.accessToken!)));
  stage('log line, redacting logger', () =>
    captures.forEach((capture) => {
      logger.info(line(capture), 'capture recorded');
    }),
  );
  stage('log line, unredacted child', () =>
    captures.forEach((capture) => {
      unredacted.info(line(capture), 'capture recorded');
    }),
  );
}
