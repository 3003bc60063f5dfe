// Durable before the spool forgets. A Postgres tuned with synchronous_commit = off acknowledges a
// commit before its WAL is written; the sidecar then deletes its spooled copy, and a crash of
// Postgres loses the capture (or a refresh's rotated token) for good. The sidecar's transactions
// ask for synchronous_commit = on themselves (TOKEN_TAP_COMMIT_DURABILITY), so every acknowledged
// commit survives. A throwaway cluster with synchronous_commit = off and the WAL writer at its
// slowest (10 s), the real sidecar (spool, pump, GrantStore, TokenVault API, in process), a real
// oidc-provider that rotates refresh tokens, and SIGKILL of every Postgres process.
import { expect } from 'chai';
import pg from 'pg';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { syntheticCapture } from '../support/captures.js';
import { startInProcessSidecar, type InProcessSidecar } from '../support/in-process.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { refreshAsOkta } from '../support/okta-client.js';
import { waitFor } from '../support/ports.js';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../support/throwaway-postgres.js';
import { createApiKey, idpConfigFile, loginIntoVault, vaultClient } from '../support/token-vault.js';
import type { TestDatabase } from '../support/postgres.js';

const IDP = 'acme';
const SECRET_ENV = 'TOKEN_TAP_TEST_DURABILITY_SECRET';
const LOGINS = 20;

describe('durable commits on a Postgres with synchronous_commit = off, then SIGKILL of Postgres', function () {
  this.timeout(120_000);
  let cluster: ThrowawayPostgres;
  let idp: TestIdp;
  const keys = generateKeySpec('k1');

  before(async () => {
    cluster = await startThrowawayPostgres({ settings: { synchronous_commit: 'off', wal_writer_delay: '10s' } });
    idp = await startTestIdp({ rotateRefreshToken: true, accounts: { alice: { email: 'alice@example.test' } } });
  });
  after(async () => {
    await idp?.close();
    cluster?.destroy();
  });

  /** A sidecar on a database of its own; its schema is checkpointed, so only what comes after is at stake. */
  async function sidecarOn(database: string, env: Record<string, string> = {}): Promise<{ running: InProcessSidecar; pool: pg.Pool }> {
    cluster.createDatabase(database);
    const running = await startInProcessSidecar({ DATABASE_URL: cluster.url(database), TOKEN_TAP_KEYS: keys, TOKEN_TAP_API_LISTEN: '127.0.0.1:0', ...env });
    await waitFor('the schema', async () => (running.sidecar.storeState.condition === 'ready' ? true : undefined), 20_000);
    const pool = new pg.Pool({ connectionString: cluster.url(database), max: 2 });
    pool.on('error', () => undefined);
    await pool.query('CHECKPOINT');
    return { running, pool };
  }

  /** SIGKILL of every Postgres process, then a start with crash recovery; a fresh pool on it. */
  async function crashAndRestart(database: string): Promise<pg.Pool> {
    cluster.crash();
    cluster.start();
    const pool = new pg.Pool({ connectionString: cluster.url(database), max: 2 });
    pool.on('error', () => undefined);
    return pool;
  }

  it(`${LOGINS} logins, each written and deleted from the spool, then Postgres killed: all ${LOGINS} grants are there after its restart`, async () => {
    const { running, pool } = await sidecarOn('durable_captures');
    const { sidecar } = running;
    let after: pg.Pool | undefined;
    try {
      const logins = Array.from({ length: LOGINS }, (_, index) => syntheticCapture(IDP, `user-${index}`));
      // Logins arrive over a few hundred ms, so the writer commits them in several batches.
      for (const login of logins) {
        sidecar.pump.enqueue(login);
        await new Promise((resolve) => setTimeout(resolve, 15));
      }
      await waitFor('every login written and gone from the spool', async () => (sidecar.pump.depth === 0 ? true : undefined), 20_000, 5);
      const before = (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM grants')).rows[0]!.n;
      await pool.end();
      after = await crashAndRestart('durable_captures');
      const { rows } = await after.query<{ subject: string }>('SELECT subject FROM grants ORDER BY subject');
      const events = (await after.query<{ n: number }>('SELECT count(*)::int AS n FROM capture_events')).rows[0]!.n;
      console.log(
        `      ${LOGINS} logins acknowledged and deleted from the spool (queue depth ${sidecar.pump.depth}); grants before the kill ${before}, after the restart ${rows.length}, capture events ${events}`,
      );
      expect(before).to.equal(LOGINS);
      expect(rows.map((row) => row.subject).sort()).to.deep.equal(logins.map((login) => login.subject!).sort());
      expect(events).to.equal(LOGINS);
    } finally {
      await running.close();
      await pool.end().catch(() => undefined);
      await after?.end();
    }
  });

  it("a refresh's rotated token, applied and its spooled copy written (and deleted), survives a kill of Postgres", async () => {
    // Relaxed audit rows: a durable audit row's WAL flush would carry the refresh's commit along.
    const env = { TOKEN_TAP_IDP_CONFIG: idpConfigFile(idp, IDP, SECRET_ENV), [SECRET_ENV]: idp.clientSecret, TOKEN_TAP_AUDIT_RELAXED_COMMIT: 'true' };
    const { running, pool } = await sidecarOn('durable_refresh', env);
    const { sidecar } = running;
    let after: pg.Pool | undefined;
    let thaw: (() => void) | undefined;
    const client = vaultClient(sidecar.vault.address!.port);
    try {
      const { login } = await loginIntoVault(idp, sidecar, IDP, { loginHint: 'alice' });
      const key = (await createApiKey({ pool } as TestDatabase, 'refresher', [IDP], ['refresh'])).token;
      await pool.query('CHECKPOINT');
      // From here the WAL writer writes nothing: an asynchronous commit stays in Postgres' memory.
      thaw = cluster.freezeWalWriter();
      const upstreamBefore = idp.tokenResponses.length;
      const refreshed = await client.call('RefreshGrant', { idp: IDP, subject: 'alice' }, key);
      expect(refreshed.refreshed_by_this_call).to.equal(true);
      expect(idp.tokenResponses.length - upstreamBefore, 'refreshes at the IdP').to.equal(1);
      const rotated = (JSON.parse(idp.tokenResponses.at(-1)!.body.toString('utf8')) as { refresh_token: string }).refresh_token;
      expect(rotated).to.not.equal(login.tokens.refresh_token);
      // The pump writes the spooled copy of the answer and deletes it from the spool.
      await waitFor('the spooled refresh answer written', async () => (sidecar.pump.depth === 0 ? true : undefined), 20_000, 5);
      await pool.end();
      after = await crashAndRestart('durable_refresh');
      thaw = undefined;
      const stored = await new GrantStore(after, parseKeyRing(keys), sealQuarantined).findGrant(IDP, 'alice');
      const storedIs = stored?.refreshToken === rotated ? 'the rotated one' : stored?.refreshToken === login.tokens.refresh_token ? 'the spent one' : 'missing';
      console.log(`      refresh answered, applied, its spooled copy written; after the kill and restart the stored refresh token is ${storedIs}`);
      expect(storedIs).to.equal('the rotated one');
      const next = await refreshAsOkta(idp, idp.tokenUrl, stored!.refreshToken!);
      expect(next.received.status, 'the stored refresh token at the IdP').to.equal(200);
    } finally {
      thaw?.();
      client.close();
      await running.close();
      await pool.end().catch(() => undefined);
      await after?.end();
    }
  });
});
