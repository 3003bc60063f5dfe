// Upgrades: what a previous release left on disk and in Postgres (test/fixtures/releases/<name>,
// written by scripts/release-fixtures.ts at that release's commit) is read by this one: the spool
// is replayed into the migrated database, a stored refresh token is spent at the IdP, and
// `keys rotate` moves every row to a new key.
import { cpSync, chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import pg from 'pg';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { freePort, waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { runCli, startSidecarProcess } from '../support/sidecar.js';

const RELEASES = fileURLToPath(new URL('../../../test/fixtures/releases/', import.meta.url));

interface Manifest {
  commit: string;
  schema: number;
  keys: string;
  fingerprintKey: string;
  spool: Array<[string, string, string]>;
}

/** A token endpoint that takes exactly one refresh token and rotates it. */
async function startRefreshingIdp(accepted: string): Promise<{ url: string; seen: string[]; close(): Promise<void> }> {
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      const form = new URLSearchParams(body);
      const token = form.get('refresh_token') ?? '';
      seen.push(token);
      res.setHeader('Content-Type', 'application/json');
      if (form.get('grant_type') !== 'refresh_token' || token !== accepted) {
        res.statusCode = 400;
        res.end(JSON.stringify({ error: 'invalid_grant' }));
        return;
      }
      res.end(JSON.stringify({ access_token: 'upgraded-at', refresh_token: 'upgraded-rt', token_type: 'Bearer', expires_in: 3600 }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return { url: `http://127.0.0.1:${port}/token`, seen, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** Runs a plain pg_dump (--inserts) in one session of its own: it resets search_path for that session. */
async function restoreDump(db: TestDatabase, file: string): Promise<void> {
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  try {
    await client.query(readFileSync(file, 'utf8'));
  } finally {
    await client.end();
  }
}

for (const release of readdirSync(RELEASES).sort()) {
  describe(`upgrading from release ${release}`, function () {
    this.timeout(60_000);
    const folder = path.join(RELEASES, release);
    const manifest = JSON.parse(readFileSync(path.join(folder, 'manifest.json'), 'utf8')) as Manifest;
    let db: TestDatabase;
    let spoolDir: string;
    let env: Record<string, string>;

    before(async () => {
      db = await createTestDatabase('previous_release');
      await restoreDump(db, path.join(folder, 'postgres.sql'));
      // The spool is changed by replaying it: a copy, owner-only as the sidecar keeps it.
      spoolDir = path.join(mkdtempSync(path.join(os.tmpdir(), 'token-tap-release-')), 'spool');
      cpSync(path.join(folder, 'spool'), spoolDir, { recursive: true });
      chmodSync(spoolDir, 0o700);
      env = { DATABASE_URL: db.url, TOKEN_TAP_KEYS: manifest.keys, TOKEN_TAP_FINGERPRINT_KEY: manifest.fingerprintKey, TOKEN_TAP_SPOOL_DIR: spoolDir };
    });
    after(async () => {
      if (spoolDir) rmSync(path.dirname(spoolDir), { recursive: true, force: true });
      await db?.drop();
    });

    it('migrates the database, replays the spool into it and reads every grant', async () => {
      const before = await db.pool.query<{ version: number }>('SELECT max(version) AS version FROM token_tap_migrations');
      expect(before.rows[0]!.version).to.equal(manifest.schema);
      const sidecar = await startSidecarProcess({ port: await freePort(), env });
      try {
        await waitFor(
          'the spooled captures in Postgres',
          async () => {
            const { rows } = await db.pool.query("SELECT 1 FROM grants WHERE idp = 'entra' AND subject = 'bob'");
            return rows.length > 0 ? true : undefined;
          },
          20_000,
        );
      } finally {
        expect(await sidecar.stop()).to.equal(0);
      }
      const after = await db.pool.query<{ version: number }>('SELECT max(version) AS version FROM token_tap_migrations');
      expect(after.rows[0]!.version).to.be.greaterThanOrEqual(manifest.schema);
      for (const [idp, subject, refreshToken] of manifest.spool) {
        const shown = await runCli(['grants', 'show', '--idp', idp, '--subject', subject], env);
        expect(shown.code, shown.stderr).to.equal(0);
        expect(JSON.parse(shown.stdout).refresh_token, `${idp}/${subject}`).to.equal(refreshToken);
      }
    });

    it('spends a refresh token the previous release stored, and stores the rotated one', async () => {
      const [idp, subject, refreshToken] = manifest.spool[0]!;
      const upstream = await startRefreshingIdp(refreshToken);
      try {
        const config = path.join(path.dirname(spoolDir), 'idps.yaml');
        writeFileSync(
          config,
          `idps:\n  ${idp}:\n    token_url: ${JSON.stringify(upstream.url)}\n    client_id: okta-client\n    client_secret_env: FIXTURE_IDP_SECRET\n`,
        );
        const refreshed = await runCli(['grants', 'refresh', '--idp', idp, '--subject', subject], {
          ...env,
          TOKEN_TAP_IDP_CONFIG: config,
          FIXTURE_IDP_SECRET: 'fixture-secret',
        });
        expect(refreshed.code, refreshed.stderr).to.equal(0);
        expect(upstream.seen).to.deep.equal([refreshToken]);
        expect(JSON.parse(refreshed.stdout).grant.refresh_token).to.equal('upgraded-rt');
      } finally {
        await upstream.close();
      }
    });

    it('keys rotate moves every row of the previous release to a new key', async () => {
      const next = generateKeySpec('k2');
      const rotated = await runCli(['keys', 'rotate'], { ...env, TOKEN_TAP_KEYS: `${next},${manifest.keys}` });
      expect(rotated.code, rotated.stderr).to.equal(0);
      // Only the new key now: every field of every grant must still open.
      const onlyNew = { ...env, TOKEN_TAP_KEYS: next };
      for (const [idp, subject] of manifest.spool) {
        const shown = await runCli(['grants', 'show', '--idp', idp, '--subject', subject], onlyNew);
        expect(shown.code, shown.stderr).to.equal(0);
        expect(JSON.parse(shown.stdout).access_token, `${idp}/${subject}`).to.be.a('string');
      }
      const alice = JSON.parse((await runCli(['grants', 'show', '--idp', 'entra', '--subject', 'alice'], onlyNew)).stdout);
      expect(alice.refresh_token).to.equal('upgraded-rt');
      expect(alice.claims?.email).to.equal('alice@example.com');
    });
  });
}
