// The vault's operator commands as an operator runs them (child processes of bin/token-tap.js):
// API keys, key rotation, grants against a real IdP, and retention.
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Capture } from '../../src/capture/types.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { migrate } from '../../src/store/migrate.js';
import { rotateKeys } from '../../src/operations/key-rotation.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { CaptureSpool } from '../../src/ingest/spool.js';
import { createMetrics } from '../../src/ops/metrics.js';
import { memoryLogger } from '../support/memory-log.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { runCli } from '../support/sidecar.js';
import { idpConfigFile, loginIntoVault, startVaultSidecar, statusOf, userinfoStatus, vaultClient, type VaultSidecar } from '../support/token-vault.js';

/** As the rest of the file expects: no issuer or client, and one extra response field. */
function vaultCapture(idp: string, subject: string | undefined, overrides: Partial<Capture> = {}): Capture {
  return syntheticCapture(idp, subject, { issuer: undefined, clientId: undefined, tokens: syntheticTokens({ extras: { team: 'blue' } }), ...overrides });
}

describe('vault operator commands (token-tap api-keys, keys rotate, grants, purge)', function () {
  this.timeout(30_000);

  describe('api-keys', () => {
    let db: TestDatabase;
    let vault: VaultSidecar;
    before(async () => {
      db = await createTestDatabase('cli_keys');
      vault = await startVaultSidecar(db, { TOKEN_TAP_KEYS: generateKeySpec('k1') });
      await vault.sidecar.store.recordCaptures([vaultCapture('acme', 'alice')]);
    });
    after(async () => {
      await vault?.close();
      await db?.drop();
    });

    it('create prints a working key once, list never shows a secret, revoke makes the key UNAUTHENTICATED; each is audited', async () => {
      const env = { DATABASE_URL: db.url };
      const created = await runCli(['api-keys', 'create', '--name', 'billing', '--idp', 'acme', '--operation', 'get', '--operation', 'list'], env);
      expect(created.code, created.stderr).to.equal(0);
      const key = JSON.parse(created.stdout) as { id: string; api_key: string; idps: string[]; operations: string[] };
      expect(key).to.include({ name: 'billing' });
      expect(key.api_key).to.match(new RegExp(`^ttk_${key.id}_`));
      expect(key.operations).to.deep.equal(['get', 'list']);

      const client = vaultClient(vault.apiPort);
      try {
        expect(await statusOf(client.call('GetGrant', { idp: 'acme', subject: 'alice' }, key.api_key))).to.equal(grpc.status.OK);
        const listed = await runCli(['api-keys', 'list'], env);
        expect(listed.code).to.equal(0);
        expect(JSON.parse(listed.stdout)).to.deep.include.members([
          { id: key.id, name: 'billing', idps: ['acme'], operations: ['get', 'list'], created_at: JSON.parse(listed.stdout)[0].created_at, revoked_at: null },
        ]);
        expect(listed.stdout).to.not.contain(key.api_key.slice(-43));
        const revoked = await runCli(['api-keys', 'revoke', '--id', key.id], env);
        expect(revoked.code, revoked.stderr).to.equal(0);
        expect(await statusOf(client.call('GetGrant', { idp: 'acme', subject: 'alice' }, key.api_key))).to.equal(grpc.status.UNAUTHENTICATED);
      } finally {
        client.close();
      }
      const refused = await runCli(['api-keys', 'create', '--name', 'x', '--operation', 'fly'], env);
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.contain('at least one --idp').and.contain('"fly" is not one of');
      const { rows } = await db.pool.query("SELECT operation, outcome FROM access_events WHERE caller LIKE 'cli:%' ORDER BY id");
      expect(rows).to.deep.equal([
        { operation: 'CreateApiKey', outcome: 'ok' },
        { operation: 'RevokeApiKey', outcome: 'ok' },
        { operation: 'CreateApiKey', outcome: 'invalid_argument' },
      ]);
    });
  });

  describe('keys rotate', () => {
    let db: TestDatabase;
    const specA = generateKeySpec('A');
    const specB = generateKeySpec('B');
    const specC = generateKeySpec('C');
    before(async () => {
      db = await createTestDatabase('cli_rotate');
      await migrate(db.pool);
    });
    after(async () => db?.drop());

    it('moves fields kept under the old key in rows that are otherwise under the active one (a key rollout), so the old key can leave', async () => {
      const ringA = parseKeyRing(specA);
      const ringCA = parseKeyRing(`${specC},${specA}`);
      // alice: first consent under A, then a login without a refresh token under C; bob: the reverse.
      await new GrantStore(db.pool, ringA, sealQuarantined).recordCaptures([
        vaultCapture('acme', 'alice', { tokens: syntheticTokens({ refreshToken: 'alice-refresh' }) }),
      ]);
      await new GrantStore(db.pool, ringCA, sealQuarantined).recordCaptures([
        vaultCapture('acme', 'alice', { tokens: syntheticTokens({ refreshToken: undefined }) }),
      ]);
      await new GrantStore(db.pool, ringCA, sealQuarantined).recordCaptures([
        vaultCapture('acme', 'bob', { tokens: syntheticTokens({ refreshToken: 'bob-refresh' }) }),
      ]);
      await new GrantStore(db.pool, ringA, sealQuarantined).recordCaptures([
        vaultCapture('acme', 'bob', { tokens: syntheticTokens({ refreshToken: undefined }) }),
      ]);
      const result = await rotateKeys(db.pool, ringCA, new GrantStore(db.pool, ringCA, sealQuarantined));
      expect(result.grants).to.be.at.least(2);
      const storeC = new GrantStore(db.pool, parseKeyRing(specC), sealQuarantined);
      expect(await storeC.findGrant('acme', 'alice')).to.include({ refreshToken: 'alice-refresh', keyId: 'C' });
      expect(await storeC.findGrant('acme', 'bob')).to.include({ refreshToken: 'bob-refresh', keyId: 'C' });
      const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM grants WHERE 'A' IN (key_id, refresh_token_key_id, id_token_key_id)");
      expect(rows[0].n).to.equal(0);
      // The next tests count rows of this database by key.
      await db.pool.query("DELETE FROM grants WHERE subject IN ('alice', 'bob')");
    });

    it('rows written under key A are read after the ring becomes B,A; keys rotate (resumed after a stop) leaves 0 rows under A and held grants still link', async () => {
      const storeA = new GrantStore(db.pool, parseKeyRing(specA), sealQuarantined);
      const logins = ['r1', 'r2', 'r3', 'r4', 'r5'].map((subject) => vaultCapture('acme', subject));
      const held = vaultCapture('github', undefined);
      await storeA.recordCaptures([...logins, held]);

      const vault = await startVaultSidecar(db, { TOKEN_TAP_KEYS: `${specB},${specA}` });
      const client = vaultClient(vault.apiPort);
      try {
        const apiKey = (await runCli(['api-keys', 'create', '--name', 'rotation', '--idp', '*', '--operation', 'get'], { DATABASE_URL: db.url })).stdout;
        const { api_key } = JSON.parse(apiKey) as { api_key: string };
        const read = await client.call('GetGrant', { idp: 'acme', subject: 'r3' }, api_key);
        expect(read.grant.access_token).to.equal(logins[2]!.tokens!.accessToken);

        // A run that stops after its first batch leaves that batch rotated and the rest for later.
        const ringBA = parseKeyRing(`${specB},${specA}`);
        const stopped = await rotateKeys(db.pool, ringBA, new GrantStore(db.pool, ringBA, sealQuarantined), {
          batchSize: 2,
          onProgress: () => {
            throw new Error('stopped');
          },
        }).catch((error: Error) => error.message);
        expect(stopped).to.equal('stopped');
        const afterStop = await db.pool.query('SELECT key_id, count(*)::int AS n FROM grants GROUP BY key_id ORDER BY key_id');
        expect(afterStop.rows).to.deep.equal([
          { key_id: 'A', n: 3 },
          { key_id: 'B', n: 2 },
        ]);

        const noSpool = path.join(os.tmpdir(), `token-tap-no-spool-${process.pid}`);
        const rotated = await runCli(['keys', 'rotate', '--batch-size', '2'], {
          DATABASE_URL: db.url,
          TOKEN_TAP_KEYS: `${specB},${specA}`,
          TOKEN_TAP_SPOOL_DIR: noSpool,
        });
        expect(rotated.code, rotated.stderr).to.equal(0);
        expect(JSON.parse(rotated.stdout)).to.deep.equal({
          active_key_id: 'B',
          grants: 3,
          pending_grants: 1,
          quarantined_captures: 0,
          missing_keys: [],
          spool: {
            dir: noSpool,
            exists: false,
            records_by_key: {},
            held_by_key: {},
            held_unreadable: 0,
            held_damaged_segments: 0,
            damaged_by_key: {},
            unknown_files: { count: 0, names: [], records_by_key: {} },
            errors: [],
          },
        });
        expect(rotated.stderr).to.contain('grants: 2/3').and.contain('grants: 3/3').and.contain('pending_grants: 1/1');
        for (const table of ['grants', 'pending_grants']) {
          const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM ${table} WHERE key_id = 'A' OR access_token_fp LIKE 'A:%'`);
          expect(rows[0].n, table).to.equal(0);
        }

        // Key A can leave the ring: everything opens under B alone.
        const storeB = new GrantStore(db.pool, parseKeyRing(specB), sealQuarantined);
        for (const login of logins) {
          expect(await storeB.findGrant('acme', login.subject!)).to.include({ accessToken: login.tokens!.accessToken, keyId: 'B' });
        }
        expect((await storeB.findGrant('acme', 'r1'))!.extras).to.deep.equal({ team: 'blue' });
        // The held grant's fingerprint was re-keyed too, so the profile call still finds it.
        await storeB.recordCaptures([
          vaultCapture('github', undefined, {
            outcome: 'profile',
            tokens: undefined,
            profile: { accessToken: held.tokens!.accessToken!, subject: 'octocat', email: undefined },
          }),
        ]);
        expect(await storeB.findGrant('github', 'octocat')).to.include({ accessToken: held.tokens!.accessToken });
        expect(await statusOf(client.call('GetGrant', { idp: 'acme', subject: 'r5' }, api_key))).to.equal(grpc.status.OK);
      } finally {
        client.close();
        await vault.close();
      }
    });

    it("reports the spool's records per key id, held ones included, read while a sidecar holds the spool, so an operator knows when a key may leave", async () => {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-rotate-spool-'));
      const open = (spec: string) =>
        CaptureSpool.open({
          dir,
          maxBytes: 16 * 1024 * 1024,
          fsyncIntervalMs: 2,
          keyRing: parseKeyRing(spec),
          logger: memoryLogger('silent').logger,
          metrics: createMetrics(),
          graceMs: 60_000,
        });
      try {
        // Three records spooled under C; a sidecar whose ring lacks C moves them aside (held), and spools two under B.
        const before = await open(specC);
        for (const subject of ['s1', 's2', 's3']) before.append(vaultCapture('acme', subject));
        await before.close();
        const running = await open(`${specB},${specA}`);
        await running.commit((await running.read(100))!);
        for (const subject of ['s4', 's5']) running.append(vaultCapture('acme', subject));
        await running.flush();
        try {
          const rotated = await runCli(['keys', 'rotate'], { DATABASE_URL: db.url, TOKEN_TAP_KEYS: `${specB},${specA}`, TOKEN_TAP_SPOOL_DIR: dir });
          expect(rotated.code, rotated.stderr).to.equal(0);
          const { spool } = JSON.parse(rotated.stdout) as { spool: unknown };
          console.log(`      keys rotate with a sidecar running on the spool: ${JSON.stringify(spool)}`);
          // C's spooled segment is in Postgres' grace window (its records were read, none opened): still counted under C.
          expect(spool).to.deep.equal({
            dir,
            exists: true,
            records_by_key: { B: 2, C: 3 },
            held_by_key: { C: 3 },
            held_unreadable: 0,
            held_damaged_segments: 0,
            damaged_by_key: {},
            unknown_files: { count: 0, names: [], records_by_key: {} },
            errors: [],
          });
          expect(rotated.stderr).to.contain(`spool ${dir}: 3 records and 3 held records are sealed under key "C"`).and.not.contain('under key "B"');
        } finally {
          await running.close();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('names the key id of rows sealed under a key the ring lacks, and rotates the rest', async () => {
      await new GrantStore(db.pool, parseKeyRing(specC), sealQuarantined).recordCaptures([vaultCapture('acme', 'lost')]);
      await new GrantStore(db.pool, parseKeyRing(specA), sealQuarantined).recordCaptures([vaultCapture('acme', 'late')]);
      const result = await runCli(['keys', 'rotate'], { DATABASE_URL: db.url, TOKEN_TAP_KEYS: `${specB},${specA}` });
      expect(result.code).to.equal(1);
      expect(result.stderr).to.contain('key id "C" (1 grants, 0 held grants, 0 quarantined captures)').and.contain('TOKEN_TAP_KEYS lacks');
      expect(result.stderr).to.not.contain(specC.split(':')[1]);
      const { rows } = await db.pool.query("SELECT subject, key_id FROM grants WHERE subject IN ('lost', 'late') ORDER BY subject");
      expect(rows).to.deep.equal([
        { subject: 'late', key_id: 'B' },
        { subject: 'lost', key_id: 'C' },
      ]);
    });
  });

  describe('grants and purge', () => {
    let idp: TestIdp;
    let db: TestDatabase;
    let vault: VaultSidecar;
    let env: Record<string, string>;
    before(async () => {
      idp = await startTestIdp({ rotateRefreshToken: true });
      db = await createTestDatabase('cli_grants');
      env = {
        DATABASE_URL: db.url,
        TOKEN_TAP_KEYS: generateKeySpec('k1'),
        TOKEN_TAP_IDP_CONFIG: idpConfigFile(idp, 'acme', 'ACME_TEST_SECRET'),
        ACME_TEST_SECRET: idp.clientSecret,
      };
      vault = await startVaultSidecar(db, env);
    });
    after(async () => {
      await vault?.close();
      await idp?.close();
      await db?.drop();
    });

    it('grants list, refresh, revoke and delete work against the IdP and are audited as the operator', async () => {
      const { login } = await loginIntoVault(idp, vault.sidecar, 'acme');
      const listed = await runCli(['grants', 'list', '--idp', 'acme'], env);
      expect(listed.code, listed.stderr).to.equal(0);
      expect(JSON.parse(listed.stdout)).to.deep.include({ next: null });
      expect(JSON.parse(listed.stdout).grants.map((grant: { subject: string }) => grant.subject)).to.deep.equal(['alice']);
      expect(listed.stdout).to.not.contain(login.tokens.access_token);

      const refreshed = await runCli(['grants', 'refresh', '--idp', 'acme', '--subject', 'alice'], env);
      expect(refreshed.code, refreshed.stderr).to.equal(0);
      const { refreshed_by_this_call, grant } = JSON.parse(refreshed.stdout) as {
        refreshed_by_this_call: boolean;
        grant: { access_token: string; refresh_token: string };
      };
      expect(refreshed_by_this_call).to.equal(true);
      expect(grant.refresh_token).to.not.equal(login.tokens.refresh_token);
      expect(await userinfoStatus(idp, grant.access_token)).to.equal(200);

      const revoked = await runCli(['grants', 'revoke', '--idp', 'acme', '--subject', 'alice'], env);
      expect(revoked.code, revoked.stderr).to.equal(0);
      expect(JSON.parse(revoked.stdout)).to.include({ revoked_at_idp: true, status: 'revoked' });
      expect(await userinfoStatus(idp, grant.access_token)).to.equal(401);

      const deleted = await runCli(['grants', 'delete', '--idp', 'acme', '--subject', 'alice'], env);
      expect(deleted.code, deleted.stderr).to.equal(0);
      expect(JSON.parse(deleted.stdout)).to.deep.equal({
        deleted: [{ idp: 'acme', subject: 'alice' }],
        capture_events_deleted: 1,
        quarantined_captures_deleted: 0,
      });
      const { rows } = await db.pool.query("SELECT operation, outcome, idp, subject FROM access_events WHERE caller LIKE 'cli:%' ORDER BY id");
      expect(rows).to.deep.equal(
        ['ListGrants', 'RefreshGrant', 'RevokeGrant', 'DeleteSubject'].map((operation) => ({
          operation,
          outcome: 'ok',
          idp: 'acme',
          subject: operation === 'ListGrants' ? null : 'alice',
        })),
      );
    });

    it('purge deletes grants, events, quarantined captures and tombstones older than the given ages and keeps the rest', async () => {
      await vault.sidecar.store.recordCaptures([vaultCapture('acme', 'stale'), vaultCapture('acme', 'fresh')]);
      // Two captures set aside (their verification threw): one 400 days ago, one now.
      const quarantinedLongAgo = vaultCapture('acme', 'q-old');
      const quarantinedLately = vaultCapture('acme', 'q-new');
      await vault.sidecar.store.recordCaptures(
        [],
        [quarantinedLongAgo, quarantinedLately].map((capture) => ({
          capture,
          stage: 'verification' as const,
          label: 'failed' as const,
          reason: 'verifying it failed (TypeError)',
        })),
      );
      await db.pool.query("UPDATE quarantined_captures SET quarantined_at = now() - interval '400 days' WHERE capture_id = $1", [quarantinedLongAgo.captureId]);
      await db.pool.query("UPDATE grants SET updated_at = now() - interval '40 days' WHERE subject = 'stale'");
      await db.pool.query("UPDATE capture_events SET observed_at = now() - interval '400 days' WHERE subject = 'stale'");
      await db.pool.query("INSERT INTO access_events (at, operation, outcome) VALUES (now() - interval '400 days', 'GetGrant', 'ok')");
      await db.pool.query(
        "INSERT INTO tombstones (idp, subject, erased_at) VALUES ('acme', 'erased-long-ago', now() - interval '400 days'), ('acme', 'erased-lately', now() - interval '1 day')",
      );
      const refused = await runCli(['purge'], { DATABASE_URL: db.url });
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.contain('nothing to purge');
      const purged = await runCli(['purge', '--grants-older-than', '30d', '--events-older-than', '365d'], { DATABASE_URL: db.url });
      expect(purged.code, purged.stderr).to.equal(0);
      expect(JSON.parse(purged.stdout)).to.deep.equal({
        grants: 1,
        pending_grants: 0,
        capture_events: 1,
        access_events: 1,
        quarantined_captures: 1,
        tombstones: 1,
      });
      const { rows: quarantined } = await db.pool.query('SELECT capture_id FROM quarantined_captures');
      expect(quarantined).to.deep.equal([{ capture_id: quarantinedLately.captureId }]);
      const { rows } = await db.pool.query("SELECT subject FROM grants WHERE subject IN ('stale', 'fresh')");
      expect(rows).to.deep.equal([{ subject: 'fresh' }]);
      // Tombstones go with the event retention.
      const { rows: tombstones } = await db.pool.query("SELECT subject FROM tombstones WHERE subject LIKE 'erased-%'");
      expect(tombstones).to.deep.equal([{ subject: 'erased-lately' }]);
    });
  });
});
