// Writes what a release leaves behind on disk and in Postgres, for the next release's upgrade test
// (test/integration/previous-release.test.ts): a spool holding captures Postgres has not seen yet,
// and a database dump at this release's schema with a grant, a held grant and events.
//
//   npm run build && node dist/scripts/release-fixtures.js test/fixtures/releases/<name>
//
// Run it at the release's own commit (a worktree of the tag), so the fixtures are what that
// release really wrote. The keys are test keys, fixed so the next release can open the values.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import type { Capture } from '../src/capture/types.js';
import { CaptureSpool } from '../src/ingest/spool.js';
import { parseKeyRing } from '../src/keys/key-ring.js';
import { createMetrics } from '../src/ops/metrics.js';
import { GrantStore } from '../src/store/grants.js';
import { sealQuarantined } from '../src/ingest/quarantine.js';
import { migrate } from '../src/store/migrate.js';

/** Test keys only: published with the fixtures on purpose. */
export const FIXTURE_KEYS = 'k1:' + Buffer.alloc(32, 0x11).toString('base64');
export const FIXTURE_FINGERPRINT_KEY = Buffer.alloc(32, 0x22).toString('base64');

const out = process.argv[2];
if (!out) {
  process.stderr.write('usage: node dist/scripts/release-fixtures.js <output folder>\n');
  process.exit(2);
}
const adminUrl = process.env.TOKEN_TAP_TEST_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const database = `tt_release_fixture_${process.pid}`;
const ring = parseKeyRing(FIXTURE_KEYS, FIXTURE_FINGERPRINT_KEY);
const logger = pino({ level: 'warn' });

/** A JWT-shaped id_token (claims are decoded, not verified, on the read path). */
function idToken(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'RS256', kid: 'fixture' })}.${part(claims)}.${Buffer.from('not-a-signature').toString('base64url')}`;
}

function login(idp: string, subject: string | undefined, index: number, outcome: Capture['outcome'] = subject ? 'stored' : 'no_subject'): Capture {
  const claims = subject
    ? { iss: `https://${idp}.example`, sub: subject, aud: 'okta-client', exp: 4_102_444_800, email: `${subject}@example.com`, email_verified: true }
    : undefined;
  return {
    captureId: `00000000-0000-4000-8000-${String(index).padStart(12, '0')}`,
    idp,
    observedAt: new Date(Date.UTC(2026, 11, 1, 12, 0, index)),
    httpStatus: 200,
    outcome,
    subject,
    issuer: claims?.iss,
    clientId: claims ? 'okta-client' : undefined,
    email: claims?.email,
    tokens: {
      accessToken: `fixture-at-${index}`,
      refreshToken: `fixture-rt-${index}`,
      idToken: claims ? idToken(claims) : undefined,
      tokenType: 'Bearer',
      expiresIn: 3600,
      refreshExpiresIn: undefined,
      scope: ['openid', 'email', 'offline_access'],
      extras: { ext_expires_in: 3600 },
      claims,
    },
    errorCode: undefined,
    detail: undefined,
    verified: subject !== undefined,
  };
}

const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
await admin.query(`CREATE DATABASE ${database}`);
const url = new URL(adminUrl);
url.pathname = `/${database}`;
const pool = new pg.Pool({ connectionString: url.toString(), max: 2 });
try {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  await migrate(pool);
  const store = new GrantStore(pool, ring, sealQuarantined);
  // In Postgres: a verified grant with every token, a held grant (no id_token) and an IdP error.
  await store.recordCaptures([
    login('entra', 'alice', 1),
    login('github', undefined, 2),
    { ...login('entra', undefined, 3), outcome: 'idp_error', tokens: undefined, errorCode: 'invalid_grant', httpStatus: 400 },
  ]);
  // In the spool, not yet in Postgres: a newer login of alice (a rotated refresh token) and bob's.
  const spoolDir = path.join(out, 'spool');
  const spool = await CaptureSpool.open({ dir: spoolDir, maxBytes: 16 * 1024 * 1024, fsyncIntervalMs: 5, keyRing: ring, logger, metrics: createMetrics() });
  for (const capture of [login('entra', 'alice', 4), login('entra', 'bob', 5)]) spool.append(capture);
  await spool.flush();
  await spool.close();
  const dump = execFileSync('pg_dump', ['--inserts', '--no-owner', '--no-privileges', '--no-comments', url.toString()], { encoding: 'utf8' });
  // psql meta-commands (\restrict of newer pg_dumps) are not SQL: the test runs the file through pg.
  writeFileSync(
    path.join(out, 'postgres.sql'),
    dump
      .split('\n')
      .filter((line) => !line.startsWith('\\'))
      .join('\n'),
  );
  const schema = (await pool.query<{ version: number }>('SELECT max(version) AS version FROM token_tap_migrations')).rows[0]!.version;
  writeFileSync(
    path.join(out, 'manifest.json'),
    `${JSON.stringify(
      {
        commit: execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim(),
        schema,
        keys: FIXTURE_KEYS,
        fingerprintKey: FIXTURE_FINGERPRINT_KEY,
        postgres: {
          grants: [
            ['entra', 'alice'],
            ['github', 'held', 'fixture-at-2'],
          ],
        },
        spool: [
          ['entra', 'alice', 'fixture-rt-4'],
          ['entra', 'bob', 'fixture-rt-5'],
        ],
      },
      null,
      2,
    )}\n`,
  );
  process.stdout.write(`release fixtures written to ${out} (schema ${schema})\n`);
} finally {
  await pool.end();
  await admin.query(`DROP DATABASE ${database}`);
  await admin.end();
}
